//! Results in parts: a query whose output partitions each depend on the data alone can
//! be served as several streams (Flight endpoints), read in parallel, each redeemable on
//! its own and on any replica, and together exactly the whole result.
//!
//! A plan qualifies when it is a scan pipeline: files read in fixed groups (one group per
//! partition, sorted by path, split by byte ranges as the target partition count says),
//! filtered, projected and masked, with nothing shuffled, merged, sorted, aggregated or
//! limited. Such a plan's partition `i`, executed anywhere from the same files with the
//! same target partition count, yields the same rows. DataFusion's file streams steal
//! work from sibling partitions at run time; a plan served in parts is executed with that
//! turned off, so each partition reads only its own group. The layout (every group's
//! files and byte ranges) is digested, so a plan made again elsewhere is served only if
//! its partitions are the same.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use crate::policy::PolicyBoundaryExec;

/// Length of a [`ResultParts`] layout digest in bytes.
pub const PARTS_LAYOUT_LEN: usize = 32;

/// What a door asks about serving a result in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartsRequest {
    /// The most parts (streams) the result may be served as; 1 serves it whole.
    pub max_parts: usize,
    /// Served in parts only when the files the plan reads total at least this many
    /// bytes (small results are cheaper as one stream).
    pub min_scan_bytes: u64,
    /// Plan with this many target partitions instead of the engine's own: a statement
    /// planned again on another replica keeps its issuer's, so its partitions agree.
    pub target_partitions: Option<usize>,
}

impl Default for PartsRequest {
    fn default() -> Self {
        Self {
            max_parts: 1,
            min_scan_bytes: 0,
            target_partitions: None,
        }
    }
}

/// How a planned query is served in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultParts {
    /// Streams it is served as (at least 2); part `k` is the output partitions `k`,
    /// `k + parts`, `k + 2 * parts` and so on, one after the other.
    pub parts: usize,
    /// The plan's output partitions.
    pub partitions: usize,
    /// The target partition count it was planned with.
    pub target_partitions: usize,
    /// A digest of the files and byte ranges each partition reads.
    pub layout: [u8; PARTS_LAYOUT_LEN],
}

impl ResultParts {
    /// The output partitions part `part` serves, in order (none for a part it does not
    /// have).
    pub(crate) fn partitions_of(&self, part: usize) -> impl Iterator<Item = usize> + use<> {
        let end = if part < self.parts {
            self.partitions
        } else {
            0
        };
        (part..end).step_by(self.parts.max(1))
    }
}

/// How `plan` (planned with `target_partitions`, reading `scan_bytes` of files) is served
/// under `request`: in parts, or `None` for whole.
pub(crate) fn result_parts(
    plan: &Arc<dyn ExecutionPlan>,
    request: &PartsRequest,
    target_partitions: usize,
    scan_bytes: u64,
) -> Option<ResultParts> {
    let partitions = plan.output_partitioning().partition_count();
    if request.max_parts < 2 || partitions < 2 || scan_bytes < request.min_scan_bytes {
        return None;
    }
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    if !digest_layout(plan, &mut |bytes: &[u8]| {
        digest.update(&(bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    }) {
        return None;
    }
    let mut layout = [0u8; PARTS_LAYOUT_LEN];
    layout.copy_from_slice(digest.finish().as_ref());
    Some(ResultParts {
        parts: partitions.min(request.max_parts),
        partitions,
        target_partitions,
        layout,
    })
}

/// Feeds the partition layout of `plan` to `part` and returns whether every node of it
/// keeps its partitions independent.
fn digest_layout(plan: &Arc<dyn ExecutionPlan>, part: &mut dyn FnMut(&[u8])) -> bool {
    if let Some(boundary) = plan.downcast_ref::<PolicyBoundaryExec>() {
        return digest_layout(boundary.secured(), part);
    }
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let Some(files) = source.data_source().downcast_ref::<FileScanConfig>() else {
            return false;
        };
        part(b"files");
        part(&(files.file_groups.len() as u64).to_le_bytes());
        for group in &files.file_groups {
            part(&(group.len() as u64).to_le_bytes());
            for file in group.iter() {
                part(file.object_meta.location.as_ref().as_bytes());
                part(&file.object_meta.size.to_le_bytes());
                let (start, end) = file.range.as_ref().map_or((0, -1), |r| (r.start, r.end));
                part(&start.to_le_bytes());
                part(&end.to_le_bytes());
            }
        }
        return true;
    }
    // Nodes that map each input partition to the same output partition, row by row.
    let independent = matches!(
        plan.name(),
        "FilterExec" | "ProjectionExec" | "CoalesceBatchesExec" | "CooperativeExec" | "DeltaScan"
    );
    independent
        && plan.children().iter().all(|child| {
            part(child.name().as_bytes());
            child.output_partitioning().partition_count()
                == plan.output_partitioning().partition_count()
                && digest_layout(child, part)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_take_every_nth_partition_and_cover_each_once() {
        let parts = ResultParts {
            parts: 2,
            partitions: 5,
            target_partitions: 5,
            layout: [0; PARTS_LAYOUT_LEN],
        };
        assert_eq!(parts.partitions_of(0).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert_eq!(parts.partitions_of(1).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(parts.partitions_of(2).count(), 0);
    }
}
