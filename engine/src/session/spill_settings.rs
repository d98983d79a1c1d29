//! How a query's sorts set aside memory for merging what they spilled, and how many
//! spilled runs one merge reads at once, from the query's memory limit.

/// What each partition's sort sets aside to merge its spilled runs, for a query that
/// may hold `limit` bytes over `partitions` partitions: DataFusion's default (10 MiB),
/// but no more than an eighth of the limit over all partitions (the default alone could
/// pass a small limit; a sort-merge join has two sorts per partition).
pub(super) fn sort_spill_reservation(limit: usize, partitions: usize) -> usize {
    const DATAFUSION_DEFAULT: usize = 10 * 1024 * 1024;
    DATAFUSION_DEFAULT.min(limit / 8 / partitions.max(1))
}

/// The most spilled runs one merge reads at once, for a query that may hold `limit`
/// bytes over `partitions` partitions of `batch_size` rows.
///
/// A sort that spilled merges its runs holding a batch (reserved twice over) of each run
/// it reads, and DataFusion reads as many at once as the memory it can reserve allows:
/// the first partition's merge took all but a sliver of a query's limit, and the sort or
/// merge of another partition, refused a batch or its own first reservation, failed the
/// query. Bounded so that the merges of two sorts per partition (a sort-merge join's)
/// hold at most half of the limit together, at a nominal 64 bytes a row; a merge of more
/// runs reads them in several passes (DataFusion's multi-level merge), at least two at
/// a time.
pub(super) fn spill_merge_fan_in(limit: usize, partitions: usize, batch_size: usize) -> usize {
    const NOMINAL_ROW_BYTES: usize = 64;
    let per_run = 2 * batch_size.max(1) * NOMINAL_ROW_BYTES;
    (limit / 4 / partitions.max(1) / per_run).max(2)
}

#[cfg(test)]
mod tests {
    use super::spill_merge_fan_in;

    #[test]
    fn merges_read_more_runs_at_once_the_more_memory_a_query_has() {
        // 16 MiB (the spill tests' limit) over two partitions: two runs at a time.
        assert_eq!(spill_merge_fan_in(16 << 20, 2, 8192), 2);
        // The default 1 GiB: 128 runs of a megabyte, 256 MiB per merge at most.
        assert_eq!(spill_merge_fan_in(1 << 30, 2, 8192), 128);
        assert_eq!(spill_merge_fan_in(1 << 30, 4, 8192), 64);
        assert_eq!(spill_merge_fan_in(1 << 20, 8, 8192), 2);
    }
}
