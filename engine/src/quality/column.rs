//! One column's measurement and the verdicts of its declared checks, from what the
//! scan or sample saw and what the table's statistics say exactly.

use datafusion::common::ScalarValue;
use meshgate_catalog::Column;

use super::measure::{
    ColumnFacts, Frequencies, display, duj1_estimate, exact_scalar, exact_u64, outcome, range_text,
    within,
};
use super::model::{CheckOutcome, ColumnMeasurement};

/// What one column is measured from: the table's statistics for it, what the scan or
/// sample saw, and its value frequencies when sampled.
pub(super) struct ColumnBasis<'a> {
    pub(super) stat: Option<&'a datafusion::common::ColumnStatistics>,
    pub(super) seen: &'a ColumnFacts,
    pub(super) frequencies: Option<&'a Frequencies>,
    /// Whether the facts come from a sample rather than a full scan.
    pub(super) sample: bool,
    /// Rows scanned or sampled.
    pub(super) rows_read: u64,
    /// Rows in the table (known, or as read).
    pub(super) total: u64,
}

/// A column's measurement, and the exact facts its checks still need.
pub(super) struct MeasuredColumn {
    pub(super) measurement: ColumnMeasurement,
    null_count: Option<u64>,
    nulls_exact: bool,
    exact_min: Option<ScalarValue>,
    exact_max: Option<ScalarValue>,
}

impl ColumnBasis<'_> {
    /// Nulls, distinct values and bounds of `column`: exact from statistics or a full
    /// scan, estimated from the sample otherwise.
    pub(super) fn measure(&self, column: &Column) -> MeasuredColumn {
        let (seen, sample, rows) = (self.seen, self.sample, self.rows_read);
        let exact_nulls = self.stat.and_then(|s| exact_u64(&s.null_count));
        // In the declared type: a column read as a view has bounds of the view's type,
        // which do not compare with the declared literals of its checks.
        let declared = |v: ScalarValue| v.cast_to(&column.data_type).ok();
        let exact_min = self
            .stat
            .and_then(|s| exact_scalar(&s.min_value))
            .and_then(declared);
        let exact_max = self
            .stat
            .and_then(|s| exact_scalar(&s.max_value))
            .and_then(declared);
        let (null_count, nulls_exact) = match (sample, exact_nulls) {
            (false, _) => (Some(rows - seen.non_null), true),
            (true, Some(n)) => (Some(n), true),
            (true, None) => (Some(rows - seen.non_null), false),
        };
        let null_fraction = null_count.map(|n| {
            let of = if nulls_exact { self.total } else { rows };
            if of == 0 { 0.0 } else { n as f64 / of as f64 }
        });
        let distinct_estimate = match (self.frequencies, seen.approx_distinct) {
            (Some(f), _) => Some(duj1_estimate(f, seen.non_null, self.total, null_fraction)),
            // HyperLogLog may overshoot by a little; never more than the values counted.
            (None, d) => d.map(|d| d.min(seen.non_null)),
        };
        let bounds_exact = !sample || (exact_min.is_some() && exact_max.is_some());
        let (min_value, max_value) = if sample && bounds_exact {
            (exact_min.clone(), exact_max.clone())
        } else {
            (seen.min.clone(), seen.max.clone())
        };
        MeasuredColumn {
            measurement: ColumnMeasurement {
                name: column.name.clone(),
                null_count,
                null_fraction,
                distinct_estimate,
                min: min_value.as_ref().and_then(display),
                max: max_value.as_ref().and_then(display),
                exact: nulls_exact && bounds_exact,
            },
            null_count,
            nulls_exact,
            exact_min,
            exact_max,
        }
    }

    /// What backs a check's verdict: the scan, the statistics, or the sample.
    fn evidence(&self, exact: bool) -> String {
        if !self.sample {
            "scan".to_string()
        } else if exact {
            "statistics".to_string()
        } else {
            format!("sample of {} rows", self.rows_read)
        }
    }

    /// The outcomes of the checks `column` declares, added to `checks`.
    pub(super) fn check(
        &self,
        column: &Column,
        measured: &MeasuredColumn,
        checks: &mut Vec<CheckOutcome>,
    ) {
        let seen = self.seen;
        let declared = &column.checks;
        if declared.not_null {
            let nulls = measured.null_count.unwrap_or_default();
            checks.push(outcome(
                column,
                "not_null",
                "no nulls".into(),
                nulls == 0,
                Some(nulls),
                self.evidence(measured.nulls_exact),
            ));
        }
        if declared.unique {
            checks.push(self.uniqueness(column));
        }
        if !declared.accepted_values.is_empty() {
            let failing = seen.not_accepted.unwrap_or_default();
            checks.push(outcome(
                column,
                "accepted_values",
                format!("in ({})", declared.accepted_values.join(", ")),
                failing == 0,
                Some(failing),
                self.evidence(false),
            ));
        }
        if let Some((lo, hi)) = &declared.range {
            let expectation = range_text(lo.as_deref(), hi.as_deref());
            let by_statistics = self
                .sample
                .then(|| {
                    within(
                        &column.data_type,
                        lo,
                        hi,
                        measured.exact_min.as_ref(),
                        measured.exact_max.as_ref(),
                    )
                })
                .flatten();
            checks.push(match by_statistics {
                Some(ok) => outcome(column, "range", expectation, ok, None, self.evidence(true)),
                None => {
                    let failing = seen.out_of_range.unwrap_or_default();
                    outcome(
                        column,
                        "range",
                        expectation,
                        failing == 0,
                        Some(failing),
                        self.evidence(false),
                    )
                }
            });
        }
    }

    /// The `unique` check: exact from a distinct count, estimated from the sample's
    /// frequencies, or unknown (a sampled nested type).
    fn uniqueness(&self, column: &Column) -> CheckOutcome {
        let seen = self.seen;
        let (duplicates, exact) = match (self.frequencies, seen.count_distinct) {
            (_, Some(d)) => (Some(seen.non_null.saturating_sub(d)), true),
            (Some(f), None) => (
                Some(seen.non_null.saturating_sub(f.singletons + f.repeated)),
                false,
            ),
            (None, None) => (None, false),
        };
        let mut check = outcome(
            column,
            "unique",
            "no duplicate values".into(),
            duplicates == Some(0),
            duplicates,
            self.evidence(exact),
        );
        if duplicates.is_none() {
            check.passed = None;
        }
        check
    }
}
