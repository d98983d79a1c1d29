//! [`QualityStore`]: every measurement the quality agent made, kept across restarts in
//! `quality.redb` in the state directory (see [`History`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::model::TableMeasurement;
use crate::history::{History, HistoryError, Recorded};

/// File name of the database inside the state directory.
pub(crate) const QUALITY_DB_FILE: &str = "quality.redb";

/// Measurements, latest per table and the history within the retention window.
pub type QualityStore = History<TableMeasurement>;

/// The quality store cannot open or write its history.
pub type QualityStoreError = HistoryError;

impl Recorded for TableMeasurement {
    fn recorded_at(&self) -> SystemTime {
        self.measured_at
    }

    fn key(&self) -> String {
        TableMeasurement::key(self)
    }
}

impl History<TableMeasurement> {
    /// Opens (or creates) the store in `state_dir` and loads the history it holds,
    /// dropping measurements older than `retention` (see [`History::open_file`]).
    pub fn open(state_dir: &Path, retention: Duration) -> Result<Self, HistoryError> {
        Self::open_file(state_dir, QUALITY_DB_FILE, retention)
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
