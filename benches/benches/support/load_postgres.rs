//! The load tool's client of the Postgres door: one `tokio-postgres` connection per load
//! client, logged in with its JWT as the password (loopback, plaintext, as the demo allows).
//!
//! Each action returns `Err` with a description when its outcome was not the expected one.

use std::net::SocketAddr;

use futures::StreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// What a Postgres-door action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PgAction {
    /// A small query through the extended protocol (Parse, Bind, Execute; a named
    /// statement closed afterwards).
    Small,
    /// The large table read whole through the simple protocol (text rows), counted.
    Large,
    /// The large table through the extended protocol, cancelled with a cancel request
    /// after its first row: the statement must end with SQLSTATE 57014 (or complete, if
    /// it already had).
    Cancelled,
    /// A login with a password that is not a token: SQLSTATE 28P01.
    BadToken,
    /// A statement that does not parse: SQLSTATE 42601, and the connection still serves.
    BadSql,
}

/// One load client's connection to the Postgres door.
pub(crate) struct PgDoor {
    addr: SocketAddr,
    user: String,
    client: Client,
}

impl PgDoor {
    /// Logs `user` in with `token` as the password.
    pub(crate) async fn connect(addr: SocketAddr, user: &str, token: &str) -> Result<Self, String> {
        let client = login(addr, user, token)
            .await
            .map_err(|e| format!("login: {e}"))?;
        Ok(Self {
            addr,
            user: user.to_string(),
            client,
        })
    }

    /// One action; `small_sql` is the small query to run for [`PgAction::Small`], `large`
    /// the large statement whose rows must number `large_rows`.
    pub(crate) async fn act(
        &self,
        action: PgAction,
        small_sql: &str,
        large: &str,
        large_rows: u64,
    ) -> Result<(), String> {
        match action {
            PgAction::Small => {
                let rows = self
                    .client
                    .query_raw(small_sql, std::iter::empty::<i64>())
                    .await
                    .map_err(|e| e.to_string())?;
                rows.count().await;
                Ok(())
            }
            PgAction::Large => {
                let mut stream = Box::pin(
                    self.client
                        .simple_query_raw(large)
                        .await
                        .map_err(|e| e.to_string())?,
                );
                let mut rows = 0;
                while let Some(message) = stream.next().await {
                    if let SimpleQueryMessage::Row(_) = message.map_err(|e| e.to_string())? {
                        rows += 1;
                    }
                }
                if rows == large_rows {
                    Ok(())
                } else {
                    Err(format!("{rows} rows instead of {large_rows}"))
                }
            }
            PgAction::Cancelled => {
                let mut stream = Box::pin(
                    self.client
                        .query_raw(large, std::iter::empty::<i64>())
                        .await
                        .map_err(|e| e.to_string())?,
                );
                stream
                    .next()
                    .await
                    .ok_or("no row")?
                    .map_err(|e| e.to_string())?;
                self.client
                    .cancel_token()
                    .cancel_query(NoTls)
                    .await
                    .map_err(|e| format!("cancel request: {e}"))?;
                while let Some(row) = stream.next().await {
                    if let Err(e) = row {
                        if e.code() != Some(&SqlState::QUERY_CANCELED) {
                            return Err(format!("after cancel: {e}"));
                        }
                        break;
                    }
                }
                Ok(())
            }
            PgAction::BadToken => match login(self.addr, &self.user, "not.a.token").await {
                Err(e) if e.code() == Some(&SqlState::INVALID_PASSWORD) => Ok(()),
                Err(e) => Err(format!("bad token: {e}")),
                Ok(_) => Err("bad token: logged in".into()),
            },
            PgAction::BadSql => match self.client.simple_query("SELEKT nothing").await {
                Err(e) if e.code() == Some(&SqlState::SYNTAX_ERROR) => Ok(()),
                other => Err(format!("bad SQL: {other:?}")),
            },
        }
    }
}

/// A logged-in client, its connection driven by a task of its own.
async fn login(addr: SocketAddr, user: &str, token: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(token)
        .dbname("mesh")
        .application_name("meshgate-load")
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        // Ends with the client (or with the server's FATAL for a bad login).
        let _ = connection.await;
    });
    Ok(client)
}
