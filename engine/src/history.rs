//! [`History`]: records in time order, kept across restarts within a retention window.
//!
//! Persistence is a [redb](https://docs.rs/redb) database in the state directory: an
//! embedded, crash-safe (ACID, copy-on-write) key-value store in pure Rust. Keys are
//! `(recorded_at in µs, key)`, values the record as JSON, so history reads in time order
//! and retention deletes a key range. The whole history within the window is also held
//! in memory, which is what the system tables read; without a state directory a history
//! is memory-only and ends with the process. redb holds its file exclusively: a second
//! process on the same state directory cannot open it (see
//! [`HistoryError::is_held_elsewhere`]).
//!
//! The quality agent's measurements and the runs of materialized tables are kept here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A record a [`History`] keeps.
pub trait Recorded: Serialize + DeserializeOwned + Send + Sync {
    /// When it happened: its place in the history.
    fn recorded_at(&self) -> SystemTime;
    /// What it is about (`domain.product.table`): its latest record is found by it.
    fn key(&self) -> String;
}

/// A history cannot open or write its records.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The state directory cannot be created.
    #[error("state directory {}: {source}", path.display())]
    StateDir {
        /// The directory configured.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database cannot be opened or read (held by another process, not a redb
    /// file).
    #[error("state database {}: {source}", path.display())]
    Database {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: redb::Error,
    },
    /// A record does not encode.
    #[error("a record does not encode: {0}")]
    Encode(#[source] serde_json::Error),
    /// Writing to the database failed.
    #[error("the history cannot be written: {0}")]
    Write(#[source] redb::Error),
}

impl HistoryError {
    /// Whether the database is held by another process (another replica on the same
    /// state directory).
    pub fn is_held_elsewhere(&self) -> bool {
        matches!(
            self,
            Self::Database {
                source: redb::Error::DatabaseAlreadyOpen,
                ..
            }
        )
    }
}

/// The one table of every history database (named for the first history kept, the
/// quality measurements, whose files it must keep reading).
const RECORDS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("measurements");

/// Records of type `T`, oldest first, within a retention window.
#[derive(Debug)]
pub struct History<T> {
    db: Option<Database>,
    retention: Duration,
    records: RwLock<Vec<Arc<T>>>,
}

impl<T: Recorded> History<T> {
    /// A history kept in memory only.
    pub fn in_memory(retention: Duration) -> Self {
        Self {
            db: None,
            retention,
            records: RwLock::default(),
        }
    }

    /// Opens (or creates) the database `file` in `state_dir` and loads the records it
    /// holds, dropping those older than `retention`.
    ///
    /// Fails when the directory or database cannot be created or opened (held by
    /// another process, not a redb file). A record that no longer decodes is skipped
    /// with a warning rather than failing the start.
    pub fn open_file(
        state_dir: &Path,
        file: &str,
        retention: Duration,
    ) -> Result<Self, HistoryError> {
        std::fs::create_dir_all(state_dir).map_err(|source| HistoryError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let file = state_dir.join(file);
        let database = |source: redb::Error| HistoryError::Database {
            path: file.clone(),
            source,
        };
        let db = Database::create(&file).map_err(|e| database(e.into()))?;
        let history = Self {
            db: Some(db),
            retention,
            records: RwLock::default(),
        };
        history.prune().map_err(database)?;
        let loaded = history.load().map_err(database)?;
        *history.records.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(history)
    }

    fn load(&self) -> Result<Vec<Arc<T>>, redb::Error> {
        let Some(db) = &self.db else {
            return Ok(Vec::new());
        };
        let read = db.begin_read()?;
        let table = match read.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut records = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            match serde_json::from_slice::<T>(value.value()) {
                Ok(m) => records.push(Arc::new(m)),
                Err(e) => tracing::warn!(key = key.value().1, error = %e,
                    "skipping a record that does not decode"),
            }
        }
        Ok(records)
    }

    /// Records `record` (durably, when the history has a database) and drops what fell
    /// out of the retention window.
    pub fn record(&self, record: T) -> Result<(), HistoryError> {
        let at = record.recorded_at();
        if let Some(db) = &self.db {
            let value = serde_json::to_vec(&record).map_err(HistoryError::Encode)?;
            let key = record.key();
            let write = || -> Result<(), redb::Error> {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(RECORDS)?;
                    table.insert((micros(at), key.as_str()), value.as_slice())?;
                }
                txn.commit()?;
                Ok(())
            };
            write().map_err(HistoryError::Write)?;
        }
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        let index = records.partition_point(|m| m.recorded_at() <= at);
        records.insert(index, Arc::new(record));
        let cutoff = SystemTime::now().checked_sub(self.retention);
        // Records are in time order: only when the oldest has expired is there anything
        // to drop, in memory and on disk.
        let expired = cutoff.is_some_and(|c| records.first().is_some_and(|m| m.recorded_at() < c));
        if !expired {
            return Ok(());
        }
        if let Some(cutoff) = cutoff {
            records.retain(|m| m.recorded_at() >= cutoff);
        }
        drop(records);
        self.prune().map_err(HistoryError::Write)
    }

    /// Deletes stored records older than the retention window.
    fn prune(&self) -> Result<(), redb::Error> {
        let (Some(db), Some(cutoff)) = (&self.db, SystemTime::now().checked_sub(self.retention))
        else {
            return Ok(());
        };
        let cutoff = micros(cutoff);
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            // Keys sort by time first: everything before (cutoff, "") has expired.
            table.retain_in::<(u64, &str), _>(..(cutoff, ""), |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every record within the retention window, oldest first.
    pub fn history(&self) -> Vec<Arc<T>> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest record of each key for which `keep` holds.
    pub fn latest_where(&self, keep: impl Fn(&T) -> bool) -> BTreeMap<String, Arc<T>> {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        let mut latest = BTreeMap::new();
        for m in records.iter().filter(|m| keep(m)) {
            latest.insert(m.key(), Arc::clone(m));
        }
        latest
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
