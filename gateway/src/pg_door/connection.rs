//! One Postgres connection's state: who it is, its settings, and the query it runs
//! now (which a cancel request stops). Cancel requests arrive on a connection of
//! their own, carrying the process id and secret key the door gave at startup.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use meshgate_catalog::Principal;
use meshgate_engine::{NameDefaults, PartsRequest, QueryOptions, SqlDialect, VersionPins};
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
    /// `meshgate.max_staleness`: the oldest data the session accepts.
    pub(crate) max_staleness: Option<Duration>,
    /// `meshgate.versions`: tables read at a pinned version.
    pub(crate) versions: VersionPins,
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
    /// The names of the statements and portals the client keeps (extended protocol).
    named: Mutex<Named>,
    /// Notices for the client, sent before the answer of the statement that raised
    /// them (a deprecated product read).
    notices: Mutex<Vec<String>>,
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
    /// Keeps `notice` for the client, to be sent before the statement's answer.
    pub(crate) fn notice(&self, notice: String) {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(notice);
    }

    /// The notices kept since the last call.
    pub(crate) fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The options of a statement run now, in the dialect of the door.
    pub(crate) fn options(&self, dialect: &Arc<dyn SqlDialect>) -> QueryOptions {
        let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        QueryOptions {
            timeout: settings.timeout,
            max_staleness: settings.max_staleness,
            names: settings.names.clone(),
            versions: settings.versions.clone(),
            dialect: Some(Arc::clone(dialect)),
            parts: PartsRequest::default(),
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

    /// A fresh token for the statement starting now; a cancel request cancels it.
    pub(crate) fn start_statement(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }
}

/// Named statements and portals one connection may keep at once (drivers cache a few
/// hundred prepared statements at most).
pub(crate) const MAX_NAMED: usize = 1024;

/// The names a client gave its statements and portals.
#[derive(Debug, Default)]
struct Named {
    statements: BTreeSet<String>,
    portals: BTreeSet<String>,
}

/// Which kind of named object of the extended protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamedKind {
    Statement,
    Portal,
}

impl Connection {
    /// Notes a statement or portal named `name` (replacing one of that name is free),
    /// within [`MAX_NAMED`] of each kind.
    pub(crate) fn keep_named(&self, kind: NamedKind, name: &str) -> Result<(), PgWireError> {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let set = match kind {
            NamedKind::Statement => &mut named.statements,
            NamedKind::Portal => &mut named.portals,
        };
        if !set.contains(name) && set.len() >= MAX_NAMED {
            return Err(user_error(
                INSUFFICIENT_RESOURCES,
                format!(
                    "a connection may keep {MAX_NAMED} named statements and {MAX_NAMED} named \
                     portals; close some first"
                ),
            ));
        }
        set.insert(name.to_string());
        Ok(())
    }

    /// Forgets every named statement, returning their names.
    pub(crate) fn forget_statements(&self) -> Vec<String> {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut named.statements).into_iter().collect()
    }

    /// Forgets the statement or portal named `name`.
    pub(crate) fn forget_named(&self, kind: NamedKind, name: &str) {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            NamedKind::Statement => named.statements.remove(name),
            NamedKind::Portal => named.portals.remove(name),
        };
    }
}

/// Running connections by process id, for cancel requests.
#[derive(Default)]
pub(crate) struct Cancels {
    next_pid: AtomicI32,
    by_pid: Mutex<HashMap<i32, Registration>>,
}

impl std::fmt::Debug for Cancels {
    /// Never the keys: they let whoever holds one cancel a connection's queries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connections = self.by_pid.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Cancels")
            .field("connections", &connections)
            .finish_non_exhaustive()
    }
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
            named: Mutex::new(Named::default()),
            notices: Mutex::new(Vec::new()),
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
