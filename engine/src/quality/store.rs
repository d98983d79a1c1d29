//! [`QualityStore`]: every measurement the quality agent made, kept across restarts.
//!
//! Persistence is a [redb](https://docs.rs/redb) database, `quality.redb` in the state
//! directory: an embedded, crash-safe (ACID, copy-on-write) key-value store in pure Rust.
//! Keys are `(measured_at in µs, domain.product.table)`, values the measurement as JSON,
//! so history reads in time order and retention deletes a key range. The whole history
//! within the retention window is also held in memory, which is what the system tables
//! read; without a state directory the store is memory-only and history ends with the
//! process.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::model::TableMeasurement;

const MEASUREMENTS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("measurements");

/// File name of the database inside the state directory.
pub(crate) const QUALITY_DB_FILE: &str = "quality.redb";

/// Measurements, latest per table and the history within the retention window.
#[derive(Debug)]
pub struct QualityStore {
    db: Option<Database>,
    retention: Duration,
    history: RwLock<Vec<Arc<TableMeasurement>>>,
}

/// The quality store cannot open or write its history.
#[derive(Debug, thiserror::Error)]
pub enum QualityStoreError {
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
    #[error("quality store {}: {source}", path.display())]
    Database {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: redb::Error,
    },
    /// A measurement does not encode.
    #[error("a quality measurement does not encode: {0}")]
    Encode(#[source] serde_json::Error),
    /// Writing to the database failed.
    #[error("the quality store cannot be written: {0}")]
    Write(#[source] redb::Error),
}

impl QualityStoreError {
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

impl QualityStore {
    /// A store that keeps measurements in memory only.
    pub fn in_memory(retention: Duration) -> Self {
        Self {
            db: None,
            retention,
            history: RwLock::default(),
        }
    }

    /// Opens (or creates) the store in `state_dir` and loads the history it holds,
    /// dropping measurements older than `retention`.
    ///
    /// Fails when the directory or database cannot be created or opened (held by
    /// another process, not a redb file). A record that no longer decodes is skipped
    /// with a warning rather than failing the start.
    pub fn open(state_dir: &Path, retention: Duration) -> Result<Self, QualityStoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| QualityStoreError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let file = state_dir.join(QUALITY_DB_FILE);
        let database = |source: redb::Error| QualityStoreError::Database {
            path: file.clone(),
            source,
        };
        let db = Database::create(&file).map_err(|e| database(e.into()))?;
        let store = Self {
            db: Some(db),
            retention,
            history: RwLock::default(),
        };
        store.prune().map_err(database)?;
        let loaded = store.load().map_err(database)?;
        *store.history.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(store)
    }

    fn load(&self) -> Result<Vec<Arc<TableMeasurement>>, redb::Error> {
        let Some(db) = &self.db else {
            return Ok(Vec::new());
        };
        let read = db.begin_read()?;
        let table = match read.open_table(MEASUREMENTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut history = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            match serde_json::from_slice::<TableMeasurement>(value.value()) {
                Ok(m) => history.push(Arc::new(m)),
                Err(e) => tracing::warn!(table = key.value().1, error = %e,
                    "skipping a quality measurement that does not decode"),
            }
        }
        Ok(history)
    }

    /// Records `measurement` (durably, when the store has a database) and drops what
    /// fell out of the retention window.
    pub fn record(&self, measurement: TableMeasurement) -> Result<(), QualityStoreError> {
        if let Some(db) = &self.db {
            let value = serde_json::to_vec(&measurement).map_err(QualityStoreError::Encode)?;
            let key = (micros(measurement.measured_at), measurement.key());
            let write = || -> Result<(), redb::Error> {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(MEASUREMENTS)?;
                    table.insert((key.0, key.1.as_str()), value.as_slice())?;
                }
                txn.commit()?;
                Ok(())
            };
            write().map_err(QualityStoreError::Write)?;
        }
        let mut history = self.history.write().unwrap_or_else(|e| e.into_inner());
        let at = history.partition_point(|m| m.measured_at <= measurement.measured_at);
        history.insert(at, Arc::new(measurement));
        let cutoff = SystemTime::now().checked_sub(self.retention);
        // History is in time order: only when its oldest record has expired is there
        // anything to drop, in memory and on disk.
        let expired = cutoff.is_some_and(|c| history.first().is_some_and(|m| m.measured_at < c));
        if !expired {
            return Ok(());
        }
        if let Some(cutoff) = cutoff {
            history.retain(|m| m.measured_at >= cutoff);
        }
        drop(history);
        self.prune().map_err(QualityStoreError::Write)
    }

    /// Deletes stored measurements older than the retention window.
    fn prune(&self) -> Result<(), redb::Error> {
        let (Some(db), Some(cutoff)) = (&self.db, SystemTime::now().checked_sub(self.retention))
        else {
            return Ok(());
        };
        let cutoff = micros(cutoff);
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(MEASUREMENTS)?;
            // Keys sort by time first: everything before (cutoff, "") has expired.
            table.retain_in::<(u64, &str), _>(..(cutoff, ""), |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every measurement within the retention window, oldest first.
    pub fn history(&self) -> Vec<Arc<TableMeasurement>> {
        self.history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest measurement of each table, failed or not, by `domain.product.table`:
    /// what the agent schedules from.
    pub fn latest(&self) -> BTreeMap<String, Arc<TableMeasurement>> {
        self.latest_where(|_| true)
    }

    /// The latest successful measurement of each table: what `mesh.meta.quality` shows
    /// (a failed measurement, in the history, does not hide the last good one).
    pub fn latest_successful(&self) -> BTreeMap<String, Arc<TableMeasurement>> {
        self.latest_where(|m| m.error.is_none())
    }

    fn latest_where(
        &self,
        keep: impl Fn(&TableMeasurement) -> bool,
    ) -> BTreeMap<String, Arc<TableMeasurement>> {
        let history = self.history.read().unwrap_or_else(|e| e.into_inner());
        let mut latest = BTreeMap::new();
        for m in history.iter().filter(|m| keep(m)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(table: &str, at: SystemTime, rows: u64) -> TableMeasurement {
        TableMeasurement::counted(table, at, rows)
    }

    #[test]
    fn history_survives_reopening_and_retention_drops_old_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        {
            let store = QualityStore::open(dir.path(), 30 * day).expect("open");
            store
                .record(measurement("t", now - 2 * day, 10))
                .expect("record");
            store
                .record(measurement("t", now - day, 20))
                .expect("record");
            store.record(measurement("u", now, 5)).expect("record");
        }
        let store = QualityStore::open(dir.path(), 30 * day).expect("reopen");
        let rows: Vec<_> = store.history().iter().map(|m| m.row_count).collect();
        assert_eq!(rows, vec![Some(10), Some(20), Some(5)]);
        assert_eq!(store.latest()["d.p.t"].row_count, Some(20));
        drop(store);

        let store = QualityStore::open(dir.path(), day + Duration::from_secs(3600))
            .expect("reopen with a shorter retention");
        let rows: Vec<_> = store.history().iter().map(|m| m.row_count).collect();
        assert_eq!(rows, vec![Some(20), Some(5)]);
    }
}
