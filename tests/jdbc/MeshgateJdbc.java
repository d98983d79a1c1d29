// Drives meshgate through the Arrow Flight SQL JDBC driver, as BI tools (DBeaver,
// Tableau, Power BI through JDBC) do: a user name and a password (the JWT), optionally a
// catalog, a query, a prepared statement with a parameter, and ResultSetMetaData.
// Run as a single-file program:
//   java --add-opens=java.base/java.nio=ALL-UNNAMED -cp flight-sql-jdbc-driver.jar \
//        MeshgateJdbc.java <host:port> <token> <mode>
// Prints `key=value` lines for the test to check; exits non-zero with the error's
// message on a failure.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class MeshgateJdbc {
    public static void main(String[] args) throws Exception {
        String address = args[0];
        String token = args[1];
        String mode = args[2];
        String url = "jdbc:arrow-flight-sql://" + address + "?useEncryption=false";
        Properties props = new Properties();
        props.setProperty("user", "any-user-name");
        props.setProperty("password", token);
        if (mode.equals("catalog")) {
            props.setProperty("catalog", "clinical");
        }
        Connection conn = null;
        try {
            conn = DriverManager.getConnection(url, props);
            switch (mode) {
                case "query": query(conn); break;
                case "catalog": catalog(conn); break;
                case "keys": keys(conn); break;
                default: throw new IllegalArgumentException(mode);
            }
        } catch (SQLException e) {
            System.out.println("error=" + e.getMessage().replace('\n', ' '));
            System.exit(3);
        } finally {
            // The 18.x driver may report its own channel's shutdown while closing a
            // connection that set a catalog: reported, not a failure of the session.
            if (conn != null) {
                try {
                    conn.close();
                } catch (SQLException e) {
                    System.out.println("close_error=" + e.getMessage().replace('\n', ' '));
                }
            }
        }
    }

    static void query(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery(
                 "SELECT v.region, count(*) AS n FROM clinical.encounters.visits v "
                     + "GROUP BY v.region ORDER BY v.region")) {
            ResultSetMetaData md = rs.getMetaData();
            System.out.println("columns=" + md.getColumnCount());
            System.out.println("region.table=" + md.getTableName(1));
            System.out.println("region.schema=" + md.getSchemaName(1));
            System.out.println("region.catalog=" + md.getCatalogName(1));
            System.out.println("region.type=" + md.getColumnTypeName(1));
            System.out.println("n.type=" + md.getColumnTypeName(2));
            long total = 0;
            int rows = 0;
            while (rs.next()) {
                total += rs.getLong("n");
                rows++;
            }
            System.out.println("rows=" + rows);
            System.out.println("total=" + total);
        }
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT count(*) AS n FROM reference.regions.regions WHERE region = ?")) {
            ps.setString(1, "north");
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                System.out.println("prepared=" + rs.getLong(1));
            }
        }
    }

    static void catalog(Connection conn) throws SQLException {
        System.out.println("current.catalog=" + conn.getCatalog());
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*) AS n FROM encounters.visits")) {
            rs.next();
            System.out.println("short=" + rs.getLong(1));
        }
    }

    /** DatabaseMetaData's key calls, as a BI tool makes them to join tables itself. */
    static void keys(Connection conn) throws SQLException {
        DatabaseMetaData md = conn.getMetaData();
        try (ResultSet rs = md.getPrimaryKeys("clinical", "encounters", "visits")) {
            while (rs.next()) {
                System.out.println("pk." + rs.getString("COLUMN_NAME") + "=" + rs.getString("PK_NAME")
                    + "/" + rs.getShort("KEY_SEQ"));
            }
        }
        try (ResultSet rs = md.getImportedKeys("clinical", "encounters", "visits")) {
            while (rs.next()) {
                System.out.println("imported." + rs.getString("FKCOLUMN_NAME") + "="
                    + rs.getString("PKTABLE_CAT") + "." + rs.getString("PKTABLE_SCHEM") + "."
                    + rs.getString("PKTABLE_NAME") + "." + rs.getString("PKCOLUMN_NAME"));
            }
        }
        try (ResultSet rs = md.getExportedKeys("patients", "registry", "patients")) {
            while (rs.next()) {
                System.out.println("exported." + rs.getString("FKTABLE_CAT") + "." + rs.getString("FKTABLE_SCHEM")
                    + "." + rs.getString("FKTABLE_NAME") + "=" + rs.getString("FK_NAME"));
            }
        }
    }
}
