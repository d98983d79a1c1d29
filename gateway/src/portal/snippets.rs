//! Copy-paste snippets reading a table through each door (ADBC, pyarrow over HTTP,
//! JDBC, psql), with the table's real name quoted for SQL and then for the language
//! around it. The token is read from `$MESHGATE_TOKEN`: a snippet never holds one.

use crate::config::AdvertisedDoors;

use super::BoundDoors;

/// How clients reach each door.
#[derive(Debug, Clone)]
pub(super) struct Doors {
    /// The Flight SQL URI.
    flight: String,
    /// The HTTP door's base URL.
    http: Option<String>,
    /// The Postgres door's `host:port`.
    postgres: Option<String>,
}

/// A snippet: what it is for, and its code.
pub(super) struct Snippet {
    pub(super) label: &'static str,
    pub(super) code: String,
}

/// `name` as a SQL identifier: always quoted, inner quotes doubled.
fn sql_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` between `quote`s, as C-like languages read a string literal: backslash,
/// the quote and newline escaped, other control characters as `\uXXXX`.
fn escaped_literal(text: &str, quote: char) -> String {
    let mut out = String::from(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `text` as a Python string literal.
fn python_string(text: &str) -> String {
    escaped_literal(text, '\'')
}

/// `text` as one shell word (single-quoted).
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `text` as a Java string literal.
fn java_string(text: &str) -> String {
    escaped_literal(text, '"')
}

impl Doors {
    /// The advertised addresses, else the bound ones.
    pub(super) fn new(advertise: &AdvertisedDoors, bound: &BoundDoors) -> Self {
        let (addr, tls) = bound.flight;
        let scheme = if tls { "grpc+tls" } else { "grpc" };
        Self {
            flight: advertise
                .flight
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{addr}")),
            http: advertise.http.clone().or_else(|| bound.http.clone()),
            postgres: advertise
                .postgres
                .clone()
                .or_else(|| bound.postgres.map(|a| a.to_string())),
        }
    }

    /// The snippets reading `domain.product.table` (and, with `version`, that table
    /// at a past Delta version).
    pub(super) fn snippets(
        &self,
        domain: &str,
        product: &str,
        table: &str,
        version: Option<&str>,
    ) -> Vec<Snippet> {
        let name = format!(
            "{}.{}.{}",
            sql_identifier(domain),
            sql_identifier(product),
            sql_identifier(table)
        );
        let sql = format!("SELECT * FROM {name} LIMIT 100");
        let mut snippets = vec![Snippet {
            label: "Python, ADBC",
            code: format!(
                "import os\nimport adbc_driver_flightsql.dbapi as flight_sql\n\n\
                 conn = flight_sql.connect({uri}, db_kwargs={{\n    \
                 \"adbc.flight.sql.authorization_header\": \"Bearer \" + os.environ[\"MESHGATE_TOKEN\"],\n}})\n\
                 with conn.cursor() as cur:\n    cur.execute({sql})\n    table = cur.fetch_arrow_table()\n",
                uri = python_string(&self.flight),
                sql = python_string(&sql),
            ),
        }];
        if let Some(http) = &self.http {
            snippets.push(Snippet {
                label: "Python, pyarrow over HTTP",
                code: format!(
                    "import os, urllib.request\nimport pyarrow.ipc as ipc\n\n\
                     request = urllib.request.Request({url}, data={sql}.encode(), headers={{\n    \
                     \"Authorization\": \"Bearer \" + os.environ[\"MESHGATE_TOKEN\"],\n}})\n\
                     table = ipc.open_stream(urllib.request.urlopen(request)).read_all()\n",
                    url = python_string(&format!("{}/v1/query", http.trim_end_matches('/'))),
                    sql = python_string(&sql),
                ),
            });
        }
        let (host_port, tls) = match self.flight.split_once("://") {
            Some((scheme, rest)) => (rest.to_string(), scheme.ends_with("tls")),
            None => (self.flight.clone(), false),
        };
        snippets.push(Snippet {
            label: "JDBC (Arrow Flight SQL driver)",
            code: format!(
                "String url = {url};\nProperties props = new Properties();\n\
                 props.setProperty(\"user\", \"token\");\n\
                 props.setProperty(\"password\", System.getenv(\"MESHGATE_TOKEN\"));\n\
                 try (Connection conn = DriverManager.getConnection(url, props);\n     \
                 ResultSet rs = conn.createStatement().executeQuery({sql})) {{ /* ... */ }}\n",
                url = java_string(&format!(
                    "jdbc:arrow-flight-sql://{host_port}?useEncryption={tls}"
                )),
                sql = java_string(&sql),
            ),
        });
        if let Some(pg) = &self.postgres {
            let (host, port) = pg.rsplit_once(':').unwrap_or((pg.as_str(), "5432"));
            let ssl = if tls { "require" } else { "disable" };
            snippets.push(Snippet {
                label: "psql",
                code: format!(
                    "PGPASSWORD=\"$MESHGATE_TOKEN\" psql {conn} -c {sql}\n",
                    conn = shell_word(&format!(
                        "host={host} port={port} dbname=mesh user=token sslmode={ssl}"
                    )),
                    sql = shell_word(&sql),
                ),
            });
        }
        if let Some(version) = version {
            let past = format!(
                "SELECT * FROM {}.{}.{} LIMIT 100",
                sql_identifier(domain),
                sql_identifier(product),
                sql_identifier(&format!("{table}@v{version}"))
            );
            snippets.push(Snippet {
                label: "SQL, a past Delta version",
                code: format!("{past};\n"),
            });
        }
        snippets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doors() -> Doors {
        Doors {
            flight: "grpc://127.0.0.1:50051".into(),
            http: Some("http://127.0.0.1:8080".into()),
            postgres: Some("127.0.0.1:55432".into()),
        }
    }

    #[test]
    fn names_are_quoted_for_sql_then_for_the_language() {
        let snippets = doors().snippets("clinical", "it's", "a\"b", None);
        let adbc = &snippets[0].code;
        assert!(
            adbc.contains(r#"cur.execute('SELECT * FROM "clinical"."it\'s"."a""b" LIMIT 100')"#),
            "{adbc}"
        );
        let psql = &snippets[3].code;
        assert!(
            psql.contains(r#"-c 'SELECT * FROM "clinical"."it'\''s"."a""b" LIMIT 100'"#),
            "{psql}"
        );
        let jdbc = &snippets[2].code;
        assert!(
            jdbc.contains(
                r#"executeQuery("SELECT * FROM \"clinical\".\"it's\".\"a\"\"b\" LIMIT 100")"#
            ),
            "{jdbc}"
        );
        assert!(jdbc.contains("jdbc:arrow-flight-sql://127.0.0.1:50051?useEncryption=false"));
    }

    #[test]
    fn no_snippet_holds_a_token() {
        for s in doors().snippets("d", "p", "t", Some("3")) {
            assert!(s.code.contains("MESHGATE_TOKEN") || s.label.starts_with("SQL"));
        }
        let past = doors().snippets("d", "p", "t", Some("3"));
        assert!(past.last().unwrap().code.contains(r#""d"."p"."t@v3""#));
    }

    #[test]
    fn control_characters_do_not_end_a_literal() {
        assert_eq!(python_string("a\nb\u{7}"), r"'a\nb\u0007'");
        assert_eq!(java_string("x\"\n"), r#""x\"\n""#);
    }
}
