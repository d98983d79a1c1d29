//! [`ScannedFiles`]: the data files the scans of one query were planned to read, as a
//! session extension its table scans fill in, so that the engine can sum up what a plan
//! reads even where the optimizer later answers from statistics without a scan.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;

/// One data file a scan reads: its path in its store, size and modification time
/// (micros). The store's URL is left out: Delta tables get a store URL of the process's
/// own making, so it would differ between replicas reading the same files.
pub type ScannedFile = (String, u64, i64);

/// The data files a query's scans read; one per query session (a session config
/// extension), filled in as its tables are scanned.
#[derive(Debug, Default)]
pub struct ScannedFiles(Mutex<BTreeSet<ScannedFile>>);

impl ScannedFiles {
    /// Records the files of every file scan in `plan`.
    pub fn record(&self, plan: &Arc<dyn ExecutionPlan>) {
        let mut files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<DataSourceExec>()
                && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
            {
                for file in config.file_groups.iter().flat_map(|group| group.iter()) {
                    let meta = &file.object_meta;
                    files.insert((
                        meta.location.to_string(),
                        meta.size,
                        meta.last_modified.timestamp_micros(),
                    ));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }

    /// The files recorded, in order.
    pub fn files(&self) -> Vec<ScannedFile> {
        let files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        files.iter().cloned().collect()
    }
}
