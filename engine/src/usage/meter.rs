//! [`QueryScans`]: the storage scans of one planned query, by table, and what they
//! have read so far.
//!
//! Counting adds nothing to the plan: the scans are found in the physical plan once it
//! is made (inside policy boundaries too), each attributed to its table by the files it
//! reads (every file table's scan records its files, see
//! [`meshgate_connectors::ScannedFiles`]), and read through the metrics DataFusion
//! keeps anyway: `output_rows` (rows read from storage) and Parquet's `bytes_scanned`.
//! A table served by a domain node reads no storage here: its node counts its own.
//!
//! What a scan reads depends on pruning by the statistics of every row in its files,
//! the rows a row filter removes too. So for a table the reader sees through a row filter
//! or only in aggregate, and for a derived table (whose scans read its inputs), nothing
//! counted is reported: such a table is charged its stored size (what `mesh.meta.tables`
//! shows), and no rows read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use meshgate_connectors::ScannedFiles;

use super::store::product_of;
use crate::policy::PolicyBoundaryExec;

/// One file scan of a query, and the table it reads.
#[derive(Debug)]
struct FileScan {
    table: String,
    plan: Arc<dyn ExecutionPlan>,
    /// The bytes of the files (or parts of files) it is given.
    planned_bytes: u64,
}

impl FileScan {
    fn rows_and_bytes(&self) -> (u64, u64) {
        let Some(metrics) = self.plan.metrics() else {
            return (0, 0);
        };
        let rows = metrics.output_rows().unwrap_or(0) as u64;
        let bytes = metrics
            .sum_by_name("bytes_scanned")
            .map_or(0, |v| v.as_usize() as u64);
        (rows, bytes)
    }
}

/// The storage scans of one planned query (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct QueryScans {
    scans: Vec<FileScan>,
    /// Tables whose scans' counts the reader may not learn (read through a row filter,
    /// only in aggregate, or a derived table's inputs), with the bytes charged for them:
    /// their stored size, as `mesh.meta.tables` shows it.
    hidden: BTreeMap<String, u64>,
    /// The scans of the query planned again after it failed for want of memory (see
    /// `crate::query::merge_joins`): what they read was read too.
    rerun: Mutex<Vec<FileScan>>,
    reported: Mutex<Reported>,
}

/// What [`QueryScans::take`] has reported.
#[derive(Debug, Default)]
struct Reported {
    /// Per table, the rows and bytes reported.
    tables: BTreeMap<String, (u64, u64)>,
    /// Whether anything was (the query itself is counted once).
    any: bool,
}

/// What a query took from each table since the last report, and whether this report is
/// its first.
pub(crate) struct Taken {
    /// Per table, rows read and bytes scanned (or charged).
    pub(crate) tables: BTreeMap<String, (u64, u64)>,
    /// Whether it is the query's first report.
    pub(crate) first: bool,
}

impl QueryScans {
    /// The file scans of `plan`, attributed to tables by the files `scanned` recorded;
    /// `stored` gives a table's stored size (for the tables whose counts are hidden).
    pub(crate) fn of(
        plan: &Arc<dyn ExecutionPlan>,
        scanned: Option<&ScannedFiles>,
        stored: &(dyn Fn(&str) -> u64 + Sync),
    ) -> Self {
        let mut found = Found::default();
        if let Some(scanned) = scanned {
            collect(plan, scanned, stored, &mut found);
        }
        Self {
            scans: found.scans,
            hidden: found.hidden,
            rerun: Mutex::default(),
            reported: Mutex::default(),
        }
    }

    /// Counts the file scans of `plan`, the query planned again, besides its own.
    pub(crate) fn also_read_by(&self, plan: &Arc<dyn ExecutionPlan>, scanned: &ScannedFiles) {
        let mut found = Found::default();
        collect(plan, scanned, &|_| 0, &mut found);
        self.rerun
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(found.scans);
    }

    /// Whether the query reads any storage.
    pub(crate) fn is_empty(&self) -> bool {
        self.scans.is_empty() && self.hidden.is_empty()
    }

    /// Per product (`domain.product`), the bytes of the files its scans are given (what
    /// they read at most), or charged.
    pub(crate) fn planned_bytes(&self) -> BTreeMap<String, u64> {
        let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
        for scan in &self.scans {
            *bytes
                .entry(product_of(&scan.table).to_string())
                .or_default() += scan.planned_bytes;
        }
        for (table, charged) in &self.hidden {
            *bytes.entry(product_of(table).to_string()).or_default() += charged;
        }
        bytes
    }

    /// Per product, what [`QueryScans::planned_bytes`] gives less what was reported
    /// already (the parts of a result served in parts that ended).
    pub(crate) fn planned_unreported(&self) -> BTreeMap<String, u64> {
        let mut bytes = self.planned_bytes();
        let reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for (table, (_, done)) in &reported.tables {
            if let Some(left) = bytes.get_mut(product_of(table)) {
                *left = left.saturating_sub(*done);
            }
        }
        bytes
    }

    /// Per product, the bytes read (or charged) and not yet reported.
    pub(crate) fn unreported_bytes(&self) -> BTreeMap<String, u64> {
        let reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
        for (table, (_, now)) in self.now() {
            let before = reported.tables.get(&table).map_or(0, |r| r.1);
            *bytes.entry(product_of(&table).to_string()).or_default() += now.saturating_sub(before);
        }
        bytes
    }

    /// Per table, the rows and bytes read now (for hidden tables: no rows, and the
    /// bytes charged).
    fn now(&self) -> BTreeMap<String, (u64, u64)> {
        let mut now: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let rerun = self.rerun.lock().unwrap_or_else(|e| e.into_inner());
        for scan in self.scans.iter().chain(rerun.iter()) {
            let (rows, bytes) = scan.rows_and_bytes();
            let total = now.entry(scan.table.clone()).or_default();
            total.0 += rows;
            total.1 += bytes;
        }
        for (table, charged) in &self.hidden {
            now.entry(table.clone()).or_default().1 += charged;
        }
        now
    }

    /// Per table, the rows and bytes read since the last call (a result served in parts
    /// reports each part's share once); `planned` reports the bytes the scans are given
    /// instead (a query run on the cluster, whose scans are counted there).
    pub(crate) fn take(&self, planned: bool) -> Taken {
        let now = if planned {
            let mut bytes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for scan in &self.scans {
                bytes.entry(scan.table.clone()).or_default().1 += scan.planned_bytes;
            }
            for (table, charged) in &self.hidden {
                bytes.entry(table.clone()).or_default().1 += charged;
            }
            bytes
        } else {
            self.now()
        };
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let first = !std::mem::replace(&mut reported.any, true);
        let tables = now
            .into_iter()
            .map(|(table, (rows, bytes))| {
                let before = reported
                    .tables
                    .insert(table.clone(), (rows, bytes))
                    .unwrap_or((0, 0));
                (
                    table,
                    (
                        rows.saturating_sub(before.0),
                        bytes.saturating_sub(before.1),
                    ),
                )
            })
            .collect();
        Taken { tables, first }
    }
}

#[derive(Default)]
struct Found {
    scans: Vec<FileScan>,
    hidden: BTreeMap<String, u64>,
}

fn collect(
    plan: &Arc<dyn ExecutionPlan>,
    scanned: &ScannedFiles,
    stored: &(dyn Fn(&str) -> u64 + Sync),
    found: &mut Found,
) {
    if let Some(boundary) = plan.downcast_ref::<PolicyBoundaryExec>()
        && !boundary.is_opened()
    {
        if boundary.hides_use() {
            let table = boundary.table().to_string();
            let charged = stored(&table);
            found.hidden.insert(table, charged);
        } else {
            // A leaf to the optimizer; its scans are inside.
            collect(boundary.secured(), scanned, stored, found);
        }
        return;
    }
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
    {
        let files: Vec<_> = config
            .file_groups
            .iter()
            .flat_map(|group| group.iter())
            .collect();
        let table = files
            .iter()
            .find_map(|file| scanned.table_of(file.object_meta.location.as_ref()));
        if let Some(table) = table {
            let planned_bytes = files
                .iter()
                .map(|file| match &file.range {
                    Some(range) => u64::try_from(range.end - range.start).unwrap_or(0),
                    None => file.object_meta.size,
                })
                .sum();
            found.scans.push(FileScan {
                table,
                plan: Arc::clone(plan),
                planned_bytes,
            });
        }
        return;
    }
    for child in plan.children() {
        collect(child, scanned, stored, found);
    }
}
