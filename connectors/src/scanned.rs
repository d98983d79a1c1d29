//! [`ScannedFiles`]: the data files the scans of one query were planned to read, as a
//! session extension its table scans fill in, so that the engine can sum up what a plan
//! reads even where the optimizer later answers from statistics without a scan.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;

/// One data file a scan reads: its path in its store, size, modification time (micros),
/// and the store's entity tag and object version where it gives them (a file rewritten
/// within the same second, at the same size, still differs). The store's URL is left
/// out: Delta tables get a store URL of the process's own making, so it would differ
/// between replicas reading the same files. A table read at a version (Delta) is
/// recorded too, as a path of its own (`<table>@v<version>`): a version may change rows
/// without changing files (deletion vectors).
pub type ScannedFile = (String, u64, i64, Option<String>, Option<String>);

/// The data files a query's scans read; one per query session (a session config
/// extension), filled in as its tables are scanned.
#[derive(Debug, Default)]
pub struct ScannedFiles {
    files: Mutex<BTreeSet<ScannedFile>>,
    /// The table each file is read for, by its path.
    tables: Mutex<HashMap<String, Arc<str>>>,
}

impl ScannedFiles {
    /// Records the files of every file scan in `plan`, a scan of `table`
    /// (`domain.product.table`).
    pub fn record(&self, plan: &Arc<dyn ExecutionPlan>, table: &str) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let name: Arc<str> = Arc::from(table);
        let _ = plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<DataSourceExec>()
                && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
            {
                for file in config.file_groups.iter().flat_map(|group| group.iter()) {
                    let meta = &file.object_meta;
                    tables.insert(meta.location.to_string(), Arc::clone(&name));
                    files.insert((
                        meta.location.to_string(),
                        meta.size,
                        meta.last_modified.timestamp_micros(),
                        meta.e_tag.clone(),
                        meta.version.clone(),
                    ));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }

    /// Records that `table` was read at `version`.
    pub fn record_version(&self, table: &str, version: i64) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert((format!("{table}@v{version}"), 0, 0, None, None));
    }

    /// The files recorded, in order.
    pub fn files(&self) -> Vec<ScannedFile> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.iter().cloned().collect()
    }

    /// The table whose scan reads the file at `path` (as its store names it), if one
    /// was recorded.
    pub fn table_of(&self, path: &str) -> Option<String> {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.get(path).map(|t| t.to_string())
    }

    /// The bytes of the files recorded, summed.
    pub fn total_bytes(&self) -> u64 {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.iter().map(|(_, size, ..)| *size).sum()
    }
}
