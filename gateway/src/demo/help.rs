//! What `meshgate demo` prints once it serves: each persona's token and how to connect
//! with each kind of client.

use std::net::SocketAddr;

use super::DemoError;

/// The doors the demo serves, for its help text.
#[derive(Debug)]
pub struct DemoDoors<'a> {
    /// The Flight SQL door.
    pub flight: SocketAddr,
    /// The HTTP door's URL.
    pub http: Option<&'a str>,
    /// The Postgres door, and whether it takes TLS.
    pub pg: Option<(SocketAddr, bool)>,
    /// The portal's URL.
    pub portal: Option<&'a str>,
}

/// `addr` as a client connects to it (a wildcard address as loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Prints how to reach the demo: each persona's token and a line per client.
pub fn print_demo_help(
    doors: &DemoDoors<'_>,
    dir: &std::path::Path,
    secret: &std::path::Path,
) -> Result<(), DemoError> {
    let host = reachable(doors.flight).to_string();
    let http = doors.http;
    println!(
        "\nDemo personas (tokens valid for 24 hours; mint more with `meshgate token --demo-dir {}`):",
        dir.display()
    );
    for persona in &super::PERSONAS {
        let token = super::persona_token(secret, persona, std::time::Duration::from_secs(86_400))?;
        println!(
            "\n  {} ({}{}): {}\n  export MESHGATE_TOKEN_{}={token}",
            persona.subject,
            persona.roles.join(", "),
            persona
                .region
                .map(|r| format!("; region {r}"))
                .unwrap_or_default(),
            persona.sees,
            persona.subject.to_uppercase()
        );
        let variable = format!("$MESHGATE_TOKEN_{}", persona.subject.to_uppercase());
        if let Some((pg, tls)) = doors.pg {
            let pg = reachable(pg);
            let sslmode = if tls { "require" } else { "disable" };
            println!(
                "  psql:    PGPASSWORD={variable} psql \"host={} port={} dbname=mesh user={} sslmode={sslmode}\"",
                pg.ip(),
                pg.port(),
                persona.subject
            );
            println!(
                "  psycopg: psycopg.connect(\"host={} port={} dbname=mesh user={} sslmode={sslmode}\", password=os.environ[\"MESHGATE_TOKEN_{}\"])",
                pg.ip(),
                pg.port(),
                persona.subject,
                persona.subject.to_uppercase()
            );
        }
        if let Some(http) = http {
            println!(
                "  curl:    curl -s {http}/v1/products -H \"Authorization: Bearer {variable}\""
            );
        }
    }
    println!(
        r#"
Connect from Python (pip install adbc-driver-flightsql pyarrow):

    import os, adbc_driver_flightsql.dbapi as flightsql
    conn = flightsql.connect("grpc://{host}", db_kwargs={{
        "adbc.flight.sql.authorization_header": "Bearer " + os.environ["MESHGATE_TOKEN_BEN"]}})
    cur = conn.cursor()
    cur.execute("""
        SELECT v.region, count(*) AS visits, sum(c.amount) AS billed
        FROM clinical.encounters.visits v
        JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id
        WHERE v.admit_month = '2024-03'
        GROUP BY v.region ORDER BY billed DESC""")
    print(cur.fetch_arrow_table())

BI tools (Flight SQL JDBC): jdbc:arrow-flight-sql://{host}?useEncryption=false&token=$MESHGATE_TOKEN_BEN
BI tools speaking Postgres (Metabase, Grafana, DBeaver's PostgreSQL driver): the Postgres door,
database `mesh`, any user name, the token as the password; products are schemas `domain.product`.
Discover products: SELECT * FROM mesh.meta.products
"#
    );
    if let Some(portal) = doors.portal {
        println!("In a browser: {portal} (sign in with one of the tokens above)\n");
    }
    if let Some(http) = http {
        println!(
            r#"From a shell (HTTP door):

    curl -s {http}/v1/products -H "Authorization: Bearer $MESHGATE_TOKEN_BEN"
    curl -s {http}/v1/query -H "Authorization: Bearer $MESHGATE_TOKEN_BEN" \
        -H 'Accept: text/csv' --data 'SELECT * FROM billing.claims.claims LIMIT 5'
"#
        );
    }
    Ok(())
}
