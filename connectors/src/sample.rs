//! Row-group sampling: bound the rows a scan reads while spreading them over the table.
//!
//! [`sample_row_groups`] rewrites the Parquet scans of a physical plan (Parquet tables and
//! the files of a Delta version alike) so that they read a few row groups picked at even
//! intervals across every file, instead of everything. Only the chosen row groups' column
//! chunks and the (cached) footers are fetched, so measuring a large table costs a small
//! fraction of its bytes, and unlike `LIMIT`, which reads the first files only, the
//! sample sees old and new data alike.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};

/// How many footers are fetched at once (they are usually in the cache already).
const FOOTER_CONCURRENCY: usize = 16;

/// A plan rewritten to read a sample, and how much of the table the sample covers.
#[derive(Debug)]
pub struct SampledPlan {
    /// The plan, reading only the sampled row groups.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Rows in the row groups the plan reads.
    pub sampled_rows: u64,
    /// Rows in every row group the original plan would read.
    pub total_rows: u64,
}

impl SampledPlan {
    /// Whether the plan reads every row (the table fits in the sample).
    pub fn is_complete(&self) -> bool {
        self.sampled_rows >= self.total_rows
    }
}

/// One Parquet file of a scan, and the rows of each of its row groups.
struct FileRowGroups {
    rows: Vec<u64>,
}

/// Rewrites every Parquet scan in `plan` to read about `target_rows` rows, taken as whole
/// row groups at even intervals over all files of the scan.
///
/// Footers come through the runtime's file-metadata cache. Scans already split into
/// byte ranges are left whole (sampling them would double-count); a plan without
/// Parquet scans is returned unchanged, with row counts of zero.
pub async fn sample_row_groups(
    plan: Arc<dyn ExecutionPlan>,
    runtime: &RuntimeEnv,
    target_rows: u64,
) -> Result<SampledPlan> {
    let mut scans: Vec<FileScanConfig> = Vec::new();
    plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>()
            && let Some((config, _)) = exec.downcast_to_file_source::<ParquetSource>()
        {
            scans.push(config.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;

    let mut sampled_rows = 0;
    let mut total_rows = 0;
    let mut rewritten: Vec<FileScanConfig> = Vec::with_capacity(scans.len());
    for config in scans {
        let layout = row_groups_of(&config, runtime).await?;
        let rows: u64 = layout.iter().flat_map(|f| &f.rows).sum();
        total_rows += rows;
        let has_ranges = config
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .any(|f| f.range.is_some());
        if rows <= target_rows || has_ranges {
            sampled_rows += rows;
            rewritten.push(config);
            continue;
        }
        let chosen = choose_row_groups(&layout, target_rows);
        let (config, rows) = restrict(config, &layout, &chosen);
        sampled_rows += rows;
        rewritten.push(config);
    }

    let mut replacements = rewritten.into_iter();
    let plan = plan
        .transform_down(|node| {
            let is_parquet_scan = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|e| e.downcast_to_file_source::<ParquetSource>())
                .is_some();
            if !is_parquet_scan {
                return Ok(Transformed::no(node));
            }
            let config = replacements.next().ok_or_else(|| {
                DataFusionError::Internal("sampled scans out of step with the plan".into())
            })?;
            let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            Ok(Transformed::yes(exec))
        })?
        .data;
    Ok(SampledPlan {
        plan,
        sampled_rows,
        total_rows,
    })
}

/// The row counts of every row group of every file of `config`, in file-group order.
async fn row_groups_of(
    config: &FileScanConfig,
    runtime: &RuntimeEnv,
) -> Result<Vec<FileRowGroups>> {
    let store = runtime.object_store(&config.object_store_url)?;
    let cache = runtime.cache_manager.get_file_metadata_cache();
    let metas: Vec<_> = config
        .file_groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|f| f.object_meta.clone())
        .collect();
    futures::stream::iter(metas)
        .map(|meta| {
            let (store, cache) = (Arc::clone(&store), Arc::clone(&cache));
            async move {
                let metadata = DFParquetMetadata::new(store.as_ref(), &meta)
                    .with_file_metadata_cache(Some(cache))
                    .fetch_metadata()
                    .await?;
                Ok(FileRowGroups {
                    rows: metadata
                        .row_groups()
                        .iter()
                        .map(|rg| rg.num_rows().max(0) as u64)
                        .collect(),
                })
            }
        })
        .buffered(FOOTER_CONCURRENCY)
        .try_collect()
        .await
}

/// Picks row groups (file index, row-group index) at even intervals over all row groups,
/// enough to hold about `target_rows` rows (at least one).
fn choose_row_groups(layout: &[FileRowGroups], target_rows: u64) -> Vec<(usize, usize)> {
    let all: Vec<(usize, usize, u64)> = layout
        .iter()
        .enumerate()
        .flat_map(|(f, file)| file.rows.iter().enumerate().map(move |(g, &n)| (f, g, n)))
        .collect();
    let total: u64 = all.iter().map(|(.., n)| n).sum();
    if all.is_empty() || total == 0 {
        return Vec::new();
    }
    let average = (total / all.len() as u64).max(1);
    let wanted = target_rows.div_ceil(average).clamp(1, all.len() as u64) as usize;
    (0..wanted)
        .map(|j| {
            // The middle of the j-th of `wanted` equal slices.
            let index = (2 * j + 1) * all.len() / (2 * wanted);
            let (f, g, _) = all[index.min(all.len() - 1)];
            (f, g)
        })
        .collect()
}

/// `config` reading only the `chosen` row groups (files with none chosen read nothing).
/// Returns the new config and the rows it reads.
fn restrict(
    config: FileScanConfig,
    layout: &[FileRowGroups],
    chosen: &[(usize, usize)],
) -> (FileScanConfig, u64) {
    let mut rows = 0;
    let mut file_index = 0;
    let mut groups = Vec::with_capacity(config.file_groups.len());
    for group in &config.file_groups {
        let mut files: Vec<PartitionedFile> = Vec::new();
        for file in group.iter() {
            let row_groups = &layout[file_index].rows;
            let picked: Vec<usize> = chosen
                .iter()
                .filter(|(f, _)| *f == file_index)
                .map(|(_, g)| *g)
                .collect();
            file_index += 1;
            // A file with no chosen row group stays in the scan, reading nothing: some
            // scans (Delta with deletion vectors) require every file they listed.
            let mut access = ParquetAccessPlan::new_none(row_groups.len());
            for &g in &picked {
                access.scan(g);
                rows += row_groups[g];
            }
            let mut file = file.clone();
            file.extensions.insert(access);
            // The file's statistics describe all of it, not the sample.
            file.statistics = None;
            files.push(file);
        }
        groups.push(FileGroup::new(files));
    }
    let config = FileScanConfigBuilder::from(config)
        .with_file_groups(groups)
        .build();
    (config, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(files: &[&[u64]]) -> Vec<FileRowGroups> {
        files
            .iter()
            .map(|rows| FileRowGroups {
                rows: rows.to_vec(),
            })
            .collect()
    }

    #[test]
    fn picks_spread_row_groups_enough_for_the_target() {
        // Ten files of four row groups of 100 rows: 4000 rows, 40 groups.
        let files: Vec<&[u64]> = vec![&[100, 100, 100, 100]; 10];
        let chosen = choose_row_groups(&layout(&files), 400);
        assert_eq!(chosen.len(), 4);
        let distinct_files: std::collections::BTreeSet<_> = chosen.iter().map(|(f, _)| f).collect();
        assert_eq!(distinct_files.len(), 4, "spread over files: {chosen:?}");
        assert!(
            chosen.iter().any(|(f, _)| *f >= 7),
            "reaches the last files: {chosen:?}"
        );
    }

    #[test]
    fn always_picks_at_least_one_group() {
        let chosen = choose_row_groups(&layout(&[&[1_000_000]]), 10);
        assert_eq!(chosen, vec![(0, 0)]);
        assert!(choose_row_groups(&layout(&[]), 10).is_empty());
    }
}
