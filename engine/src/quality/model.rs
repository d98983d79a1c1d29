//! What one measurement of a table records: the facts the quality agent found, the
//! outcome of each declared check, and what it cost. Stored as JSON in the quality store.

use std::time::{Duration, SystemTime};

use meshgate_catalog::Product;
use meshgate_connectors::DataSnapshot;
use serde::{Deserialize, Serialize};

/// Why a table was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Never measured before.
    Initial,
    /// Its data changed (new or changed files, a new Delta version).
    DataChange,
    /// Its schedule came due.
    Schedule,
}

impl Trigger {
    /// The name shown in `mesh.meta.quality_history`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::DataChange => "data_change",
            Self::Schedule => "schedule",
        }
    }
}

/// How much of the table the value measurements saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every row was read (the table is within the full-scan budget).
    Scan,
    /// A sample of row groups spread over the table was read; statistics from the
    /// footers answer what they can exactly.
    Sample,
}

impl Method {
    /// The name shown in `mesh.meta.quality`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scan => "scan",
            Self::Sample => "sample",
        }
    }
}

/// What the storage held when the table was measured; a change means new data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// Data files.
    pub files: u64,
    /// Bytes of the data files.
    pub bytes: u64,
    /// Newest data (newest file, or the Delta version's commit time).
    pub modified: Option<SystemTime>,
    /// Delta version.
    pub version: Option<i64>,
}

impl From<&DataSnapshot> for DataFingerprint {
    fn from(s: &DataSnapshot) -> Self {
        Self {
            files: s.files,
            bytes: s.bytes,
            modified: s.last_modified,
            version: s.version,
        }
    }
}

/// Measurements of one column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnMeasurement {
    /// Column name.
    pub name: String,
    /// Nulls counted (the whole table) or found in the sample.
    pub null_count: Option<u64>,
    /// Share of null values, 0 to 1.
    pub null_fraction: Option<f64>,
    /// Estimated number of distinct non-null values.
    pub distinct_estimate: Option<u64>,
    /// Smallest value, as text (ordered types only).
    pub min: Option<String>,
    /// Largest value, as text.
    pub max: Option<String>,
    /// Whether null count, min and max are exact (from statistics or a full scan)
    /// rather than seen in a sample.
    pub exact: bool,
}

/// The outcome of one declared check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// The column checked; `None` for table checks (`min_rows`).
    pub column: Option<String>,
    /// `not_null`, `unique`, `accepted_values`, `range`, `min_rows` or `references`.
    pub check: String,
    /// What is expected, in words (`>= 1000 rows`, `in (F, M, X)`).
    pub expectation: String,
    /// Whether the data meets it; `None` when it could not be evaluated.
    pub passed: Option<bool>,
    /// Rows found breaking it (in the sample when not exact).
    pub failing_rows: Option<u64>,
    /// What the outcome rests on: `statistics`, `scan` or `sample of N rows`.
    pub evidence: String,
    /// The other columns the check reads (a composite key's, a reference's), besides
    /// `column`: a caller sees the outcome only when it sees them all.
    #[serde(default)]
    pub also_reads: Vec<String>,
    /// The referenced table and its columns, for a `references` check: a caller sees
    /// the outcome only when it sees them too.
    #[serde(default)]
    pub referenced: Option<(String, Vec<String>)>,
    /// The share of the rows checked that break it, 0 to 1, when known.
    #[serde(default)]
    pub failing_fraction: Option<f64>,
}

/// One measurement of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeasurement {
    /// Owning domain.
    pub domain: String,
    /// Product.
    pub product: String,
    /// Table.
    pub table: String,
    /// When the measurement finished.
    pub measured_at: SystemTime,
    /// Why it ran.
    pub trigger: Trigger,
    /// How much of the table it read.
    pub method: Method,
    /// Rows in the table (from footers or the Delta log when they say, else counted).
    pub row_count: Option<u64>,
    /// Rows the value measurements saw.
    pub rows_read: u64,
    /// What the storage held.
    pub data: DataFingerprint,
    /// Per declared column, in contract order.
    pub columns: Vec<ColumnMeasurement>,
    /// Per declared check.
    pub checks: Vec<CheckOutcome>,
    /// Bytes fetched from storage by this measurement (footers found in the cache cost
    /// nothing).
    pub bytes_read: u64,
    /// How long it took.
    pub duration: Duration,
    /// Why the measurement failed, if it did (then only the data facts are filled in).
    pub error: Option<String>,
}

impl TableMeasurement {
    /// A measurement of `table` of `product` begun now, with only the data facts known.
    pub fn begin(product: &Product, table: &str, data: &DataSnapshot, trigger: Trigger) -> Self {
        Self {
            domain: product.domain.clone(),
            product: product.name.clone(),
            table: table.to_string(),
            measured_at: SystemTime::now(),
            trigger,
            method: Method::Scan,
            row_count: None,
            rows_read: 0,
            data: DataFingerprint::from(data),
            columns: Vec::new(),
            checks: Vec::new(),
            bytes_read: 0,
            duration: Duration::ZERO,
            error: None,
        }
    }

    /// A successful measurement of table `d.p.<table>` at `at` counting `rows` (tests).
    #[cfg(test)]
    pub(crate) fn counted(table: &str, at: SystemTime, rows: u64) -> Self {
        Self {
            domain: "d".into(),
            product: "p".into(),
            table: table.into(),
            measured_at: at,
            trigger: Trigger::Schedule,
            method: Method::Scan,
            row_count: Some(rows),
            rows_read: rows,
            data: DataFingerprint::default(),
            columns: Vec::new(),
            checks: Vec::new(),
            bytes_read: 0,
            duration: Duration::ZERO,
            error: None,
        }
    }

    /// `domain.product.table`.
    pub fn key(&self) -> String {
        format!("{}.{}.{}", self.domain, self.product, self.table)
    }

    /// Checks that passed and that failed.
    pub fn check_counts(&self) -> (usize, usize) {
        let passed = self
            .checks
            .iter()
            .filter(|c| c.passed == Some(true))
            .count();
        let failed = self
            .checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .count();
        (passed, failed)
    }
}
