//! Declared quality: the checks a domain team states about its data, and how often the
//! gateway measures it.
//!
//! In a descriptor:
//!
//! ```yaml
//! quality: { schedule: 6h }          # product: measure at least this often
//! tables:
//!   - name: visits
//!     quality: { min_rows: 1000 }     # table: a row-count floor
//!     columns:
//!       - { name: visit_id, type: Utf8, nullable: false, checks: { unique: true } }
//!       - { name: kind, type: Utf8, checks: { accepted_values: [inpatient, outpatient] } }
//!       - { name: cost, type: Float64, checks: { range: { min: 0, max: 100000 } } }
//! ```
//!
//! A column declared `nullable: false` is checked for nulls without saying so again.
//! Literals stay text here (this crate knows no engine); the gateway parses them as the
//! column's type when it loads the product, and a literal that does not parse is a
//! descriptor error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problem;

/// `quality:` of a product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductQualityDescriptor {
    /// Measure every table at least this often (e.g. `1h`), besides whenever its data
    /// changes; the gateway's default when absent.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// `quality:` of a table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableQualityDescriptor {
    /// The table must hold at least this many rows.
    #[serde(default)]
    pub min_rows: Option<u64>,
}

/// `checks:` of a column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnChecksDescriptor {
    /// No value may be null (implied by `nullable: false`).
    #[serde(default)]
    pub not_null: bool,
    /// No two non-null values may be equal.
    #[serde(default)]
    pub unique: bool,
    /// Every non-null value must be one of these.
    #[serde(default)]
    pub accepted_values: Option<Vec<Literal>>,
    /// Every non-null value must lie within these bounds (inclusive).
    #[serde(default)]
    pub range: Option<RangeDescriptor>,
}

/// Inclusive bounds of a `range` check; at least one is given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeDescriptor {
    /// Smallest accepted value.
    #[serde(default)]
    pub min: Option<Literal>,
    /// Largest accepted value.
    #[serde(default)]
    pub max: Option<Literal>,
}

/// A literal as YAML writes it: a number, a boolean or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A decimal number.
    Float(f64),
    /// Anything else, as written.
    Text(String),
}

impl Literal {
    /// The literal's text, to be parsed as the column's type.
    pub fn text(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// Validated checks of one column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnChecks {
    /// No value may be null.
    pub not_null: bool,
    /// No two non-null values may be equal.
    pub unique: bool,
    /// Every non-null value must be one of these (as text); empty means no such check.
    pub accepted_values: Vec<String>,
    /// Inclusive bounds (as text), when a range is declared.
    pub range: Option<(Option<String>, Option<String>)>,
}

impl ColumnChecks {
    /// Whether any check is declared.
    pub fn is_empty(&self) -> bool {
        !self.not_null && !self.unique && self.accepted_values.is_empty() && self.range.is_none()
    }
}

/// A completeness objective that can be measured: at least `rows` new rows per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completeness {
    /// Rows expected per period.
    pub rows: u64,
    /// The period (an hour, a day or a week).
    pub period: Duration,
}

/// Reads a completeness statement such as `>= 1000 rows per day` or
/// `>= 100 new patients / hour`: the first integer is the row count, the last word is
/// the period (`hour`, `day` or `week`).
pub fn parse_completeness(text: &str) -> Option<Completeness> {
    let rows = text
        .split(|c: char| !c.is_ascii_digit() && c != '_' && c != ',')
        .find(|w| w.chars().any(|c| c.is_ascii_digit()))?
        .replace(['_', ','], "")
        .parse()
        .ok()?;
    let last = text
        .trim()
        .rsplit(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())?
        .to_ascii_lowercase();
    let hours = match last.as_str() {
        "hour" | "h" => 1,
        "day" | "d" => 24,
        "week" | "w" => 24 * 7,
        _ => return None,
    };
    Some(Completeness {
        rows,
        period: Duration::from_secs(hours * 3600),
    })
}

pub(crate) fn validate_schedule(
    quality: Option<&ProductQualityDescriptor>,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    let text = quality?.schedule.as_deref()?;
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) && d <= crate::validate::MAX_DURATION => Some(d),
        _ => {
            problems.push(Problem::new(
                "quality.schedule",
                format!(
                    "'{text}' is not a duration from a second to 100 years; write e.g. '1h' or '15m'"
                ),
            ));
            None
        }
    }
}

pub(crate) fn validate_checks(
    at: &str,
    nullable: bool,
    checks: Option<&ColumnChecksDescriptor>,
    problems: &mut Vec<Problem>,
) -> ColumnChecks {
    let declared = checks.cloned().unwrap_or_default();
    let accepted_values: Vec<String> = declared
        .accepted_values
        .map(|values| {
            if values.is_empty() {
                problems.push(Problem::new(
                    format!("{at}.checks.accepted_values"),
                    "lists no value; list the values the column may hold",
                ));
            }
            values.iter().map(Literal::text).collect()
        })
        .unwrap_or_default();
    let range = declared.range.map(|r| {
        if r.min.is_none() && r.max.is_none() {
            problems.push(Problem::new(
                format!("{at}.checks.range"),
                "gives neither min nor max",
            ));
        }
        (r.min.map(|v| v.text()), r.max.map(|v| v.text()))
    });
    ColumnChecks {
        not_null: declared.not_null || !nullable,
        unique: declared.unique,
        accepted_values,
        range,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness_statements_read_rows_and_period() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            parse_completeness(">= 1000 rows per day"),
            Some(Completeness {
                rows: 1000,
                period: day
            })
        );
        assert_eq!(
            parse_completeness(">= 100 new patients per day").map(|c| c.rows),
            Some(100)
        );
        assert_eq!(
            parse_completeness(">= 1,500 rows / hour").map(|c| (c.rows, c.period.as_secs())),
            Some((1500, 3600))
        );
        assert_eq!(parse_completeness("lots of rows"), None);
        assert_eq!(parse_completeness(">= 10 rows per fortnight"), None);
    }
}
