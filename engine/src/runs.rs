//! [`RunStore`]: every materialization run, kept across restarts in `runs.redb` in the
//! state directory (see [`History`]), and served as `mesh.meta.runs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, Recorded};
use crate::quality::DataFingerprint;

/// File name of the database inside the state directory.
pub(crate) const RUNS_DB_FILE: &str = "runs.redb";

/// The runs of materialized tables within the retention window.
pub type RunStore = History<Run>;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// The table has never been written with this transform, contract and rights (what
    /// its domain may see of the inputs).
    First,
    /// An input's data changed since the last successful run.
    InputChanged,
    /// The refresh interval passed.
    Schedule,
    /// The last run failed; this one tries again.
    Retry,
}

impl RunTrigger {
    /// The name shown in `mesh.meta.runs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::InputChanged => "input_changed",
            Self::Schedule => "schedule",
            Self::Retry => "retry",
        }
    }
}

/// What an input held when a run read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputState {
    /// `domain.product.table`.
    pub table: String,
    /// Its files, bytes, newest data and (Delta) version.
    pub data: DataFingerprint,
}

/// One run of one materialized table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `domain.product.table` written.
    pub table: String,
    /// Why it ran.
    pub trigger: RunTrigger,
    /// When it started.
    pub started_at: SystemTime,
    /// When it ended (committed or failed).
    pub ended_at: SystemTime,
    /// Digest of the transform and the contract it was shaped to.
    pub transform: String,
    /// Each input as the run found it.
    pub inputs: Vec<InputState>,
    /// Rows written (a successful run).
    pub rows: Option<u64>,
    /// The Delta version committed (a successful run).
    pub version: Option<i64>,
    /// Why it failed (for operators: it may name inputs); `None` when it succeeded.
    pub error: Option<String>,
    /// What kind of failure, for readers of `mesh.meta.runs`.
    pub failure: Option<String>,
}

impl Run {
    /// Whether it committed.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// The newest data of its stalest input: how fresh what it wrote is.
    pub fn oldest_input(&self) -> Option<SystemTime> {
        self.inputs.iter().filter_map(|i| i.data.modified).min()
    }
}

impl Recorded for Run {
    fn recorded_at(&self) -> SystemTime {
        self.ended_at
    }

    fn key(&self) -> String {
        self.table.clone()
    }
}

impl History<Run> {
    /// Opens (or creates) the run history in `state_dir`, dropping runs older than
    /// `retention` (see [`History::open_file`]).
    pub fn open(state_dir: &Path, retention: Duration) -> Result<Self, HistoryError> {
        Self::open_file(state_dir, RUNS_DB_FILE, retention)
    }

    /// What the materializer needs of each table's runs, by `domain.product.table`, from
    /// one pass over the history.
    pub(crate) fn summaries(&self) -> BTreeMap<String, RunSummary> {
        let mut summaries: BTreeMap<String, RunSummary> = BTreeMap::new();
        for run in self.history() {
            let summary = summaries.entry(run.table.clone()).or_default();
            if run.succeeded() {
                summary.succeeded = Some(Arc::clone(&run));
                summary.failures_in_a_row = 0;
            } else {
                summary.failures_in_a_row += 1;
            }
            summary.latest = Some(run);
        }
        summaries
    }
}

/// A table's runs, summed up.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunSummary {
    /// Its latest run.
    pub(crate) latest: Option<Arc<Run>>,
    /// Its latest successful run.
    pub(crate) succeeded: Option<Arc<Run>>,
    /// Failed runs since the latest successful one.
    pub(crate) failures_in_a_row: u32,
}
