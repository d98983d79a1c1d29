//! One Postgres connection's state: who it is, its settings, and the query it runs
//! now (which a cancel request stops). Cancel requests arrive on a connection of
//! their own, carrying the process id and secret key the door gave at startup.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use meshgate_catalog::Principal;
use meshgate_engine::{NameDefaults, QueryOptions, SqlDialect};
use pgwire::error::PgWireError;
use pgwire::messages::startup::SecretKey;
use tokio_util::sync::CancellationToken;

use super::sqlstate::{DUPLICATE_CURSOR, INSUFFICIENT_RESOURCES, user_error};

/// A connection's settings, as `SET` changed them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// Where partly qualified names resolve (`search_path`).
    pub(crate) names: NameDefaults,
    /// `statement_timeout`, when set.
    pub(crate) timeout: Option<Duration>,
    /// Other settings accepted and shown by `SHOW` (lower-case names).
    pub(crate) others: HashMap<String, String>,
}

/// The state of one authenticated connection, kept in its session extensions.
pub(crate) struct Connection {
    pub(crate) principal: Principal,
    /// The JWT the client logged in with, verified again before every statement (so
    /// that an expired token or a retired key ends the connection's access).
    pub(crate) token: String,
    pub(crate) settings: Mutex<Settings>,
    /// The running query's token: cancelled by a cancel request.
    running: Arc<Mutex<CancellationToken>>,
    /// The names of the cursors open now.
    cursors: Mutex<BTreeSet<String>>,
    /// Unregisters the connection from cancel requests when it closes.
    _registered: Registered,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("principal", &self.principal.subject)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The options of a statement run now, in the dialect of the door.
    pub(crate) fn options(&self, dialect: &Arc<dyn SqlDialect>) -> QueryOptions {
        let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        QueryOptions {
            timeout: settings.timeout,
            names: settings.names.clone(),
            dialect: Some(Arc::clone(dialect)),
            ..QueryOptions::default()
        }
    }

    /// Notes cursor `name` as open, within `max` cursors per connection.
    pub(crate) fn open_cursor(&self, name: &str, max: usize) -> Result<(), PgWireError> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        if cursors.contains(name) {
            return Err(user_error(
                DUPLICATE_CURSOR,
                format!("cursor \"{name}\" already exists"),
            ));
        }
        if cursors.len() >= max {
            return Err(user_error(
                INSUFFICIENT_RESOURCES,
                format!(
                    "a connection may hold {max} cursors open at once (postgres.max_cursors); close one first"
                ),
            ));
        }
        cursors.insert(name.to_string());
        Ok(())
    }

    /// Whether cursor `name` is open.
    pub(crate) fn has_cursor(&self, name: &str) -> bool {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Closes cursor `name` (all with `None`); returns the names closed.
    pub(crate) fn close_cursors(&self, name: Option<&str>) -> Vec<String> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        match name {
            Some(name) => cursors.take(name).into_iter().collect(),
            None => std::mem::take(&mut *cursors).into_iter().collect(),
        }
    }

    /// The token of a cursor's query: its rows are fetched by later statements, which
    /// a cancel request stops on their own.
    pub(crate) fn cursor_token(&self) -> CancellationToken {
        CancellationToken::new()
    }

    /// A fresh token for the statement starting now; a cancel request cancels it.
    pub(crate) fn start_statement(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }
}

/// Running connections by process id, for cancel requests.
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    next_pid: AtomicI32,
    by_pid: Mutex<HashMap<i32, Registration>>,
}

/// What a cancel request must match (the key), and the token it cancels.
type Registration = (SecretKey, Weak<Mutex<CancellationToken>>);

/// A connection's place among [`Cancels`], removed when dropped.
#[derive(Debug)]
struct Registered {
    pid: i32,
    cancels: Arc<Cancels>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.cancels
            .by_pid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.pid);
    }
}

impl Cancels {
    /// Registers a connection of `principal`; returns it, with the process id and
    /// secret key its client sends to cancel its queries (`protocol_3_2`: a long key).
    pub(crate) fn register(
        self: &Arc<Self>,
        principal: Principal,
        token: String,
        long_key: bool,
    ) -> (Connection, i32, SecretKey) {
        let pid = 1 + self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .rem_euclid(i32::MAX - 1);
        let secret = if long_key {
            let mut bytes = vec![0u8; 32];
            rand::fill(&mut bytes[..]);
            SecretKey::Bytes(bytes.into())
        } else {
            SecretKey::I32(rand::random::<i32>())
        };
        let running = Arc::new(Mutex::new(CancellationToken::new()));
        self.by_pid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, (secret.clone(), Arc::downgrade(&running)));
        let connection = Connection {
            principal,
            token,
            settings: Mutex::new(Settings::default()),
            running,
            cursors: Mutex::new(BTreeSet::new()),
            _registered: Registered {
                pid,
                cancels: Arc::clone(self),
            },
        };
        (connection, pid, secret)
    }

    /// Cancels the running query of connection `pid` when `secret` is its key; an
    /// unknown pid or a wrong key does nothing (as in Postgres, nothing is answered).
    pub(crate) fn cancel(&self, pid: i32, secret: &SecretKey) -> bool {
        let running = {
            let by_pid = self.by_pid.lock().unwrap_or_else(|e| e.into_inner());
            match by_pid.get(&pid) {
                Some((key, running))
                    if aws_lc_rs::constant_time::verify_slices_are_equal(
                        &key.to_bytes(),
                        &secret.to_bytes(),
                    )
                    .is_ok() =>
                {
                    running.upgrade()
                }
                _ => None,
            }
        };
        match running {
            Some(running) => {
                running.lock().unwrap_or_else(|e| e.into_inner()).cancel();
                true
            }
            None => false,
        }
    }
}
