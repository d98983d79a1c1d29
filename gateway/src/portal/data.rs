//! The pages' data: statements over `mesh.meta.*` run as the viewer through the engine,
//! with every value from the request bound as a parameter (no SQL is assembled from
//! what a browser sent), and their rows taken as display text, up to a bound.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use futures::StreamExt;
use meshgate_catalog::Principal;
use meshgate_engine::{PreparedStatement, QueryOptions, Statement};

use super::Portal;
use crate::error::Error;
use crate::http_door::failure::Failure;

/// How the audit names the portal's page queries.
pub(super) const PAGE_RPCS: (&str, &str) = ("PORTAL/page", "PORTAL/page (results)");
/// The longest text kept of one value by default (a longer one is cut, with an
/// ellipsis).
const MAX_VALUE_CHARS: usize = 2000;

/// The most characters a page takes of one result, all values together.
const MAX_TOTAL_CHARS: usize = 4 * 1024 * 1024;

/// How much of a result a page takes: rows, and characters of each value. A result
/// stops being read once it holds [`MAX_TOTAL_CHARS`], whatever its rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Take {
    pub(super) rows: usize,
    pub(super) value_chars: usize,
}

impl Take {
    /// The first `rows` rows, each value cut at the default length.
    pub(super) fn rows(rows: usize) -> Self {
        Self {
            rows,
            value_chars: MAX_VALUE_CHARS,
        }
    }
}

/// A `fmt::Write` keeping the first `limit` characters and refusing the rest, so that
/// formatting a huge value stops early rather than copying it whole.
struct Bounded {
    text: String,
    chars: usize,
    limit: usize,
    cut: bool,
}

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if self.chars == self.limit {
                self.cut = true;
                return Err(std::fmt::Error);
            }
            self.text.push(c);
            self.chars += 1;
        }
        Ok(())
    }
}

/// `value` as text, cut to `limit` characters (with an ellipsis when cut).
fn bounded_text(value: impl std::fmt::Display, limit: usize) -> String {
    use std::fmt::Write as _;
    let mut out = Bounded {
        text: String::new(),
        chars: 0,
        limit,
        cut: false,
    };
    if write!(out, "{value}").is_err() && out.cut {
        out.text.push('…');
    }
    out.text
}

/// Rows as text: one value per column, `None` for null.
#[derive(Debug, Default)]
pub(super) struct Rows {
    names: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    /// Whether more rows were there than taken.
    pub(super) truncated: bool,
    /// Characters taken so far.
    chars: usize,
}

/// One row of [`Rows`].
#[derive(Clone, Copy)]
pub(super) struct Row<'a> {
    names: &'a [String],
    values: &'a [Option<String>],
}

impl Row<'_> {
    /// The value of column `name`, if not null.
    pub(super) fn opt(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i)?.as_deref()
    }

    /// The value of column `name`, or "" when null.
    pub(super) fn text(&self, name: &str) -> String {
        self.opt(name).unwrap_or_default().to_string()
    }

    /// Column `name`, a `", "`-joined list, as its items.
    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.opt(name)
            .map(|text| {
                text.split(", ")
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Column `name` as a number, if it is one.
    pub(super) fn number(&self, name: &str) -> Option<f64> {
        self.opt(name)?.parse().ok()
    }

    /// The values in column order.
    pub(super) fn values(&self) -> impl Iterator<Item = String> + '_ {
        self.values
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
    }
}

impl Rows {
    /// The rows, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|values| Row {
            names: &self.names,
            values,
        })
    }

    /// The first row, if any.
    pub(super) fn first(&self) -> Option<Row<'_>> {
        self.iter().next()
    }

    /// The column names.
    pub(super) fn names(&self) -> &[String] {
        &self.names
    }

    /// How many rows were taken.
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    fn push_batch(&mut self, batch: &RecordBatch, take: Take) -> Result<(), Error> {
        if self.names.is_empty() {
            self.names = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        let options = FormatOptions::default().with_display_error(true);
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if self.rows.len() >= take.rows || self.chars >= MAX_TOTAL_CHARS {
                self.truncated = true;
                return Ok(());
            }
            let values: Vec<Option<String>> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, format)| {
                    column
                        .is_valid(row)
                        .then(|| bounded_text(format.value(row), take.value_chars))
                })
                .collect();
            self.chars += values.iter().flatten().map(String::len).sum::<usize>();
            self.rows.push(values);
        }
        Ok(())
    }
}

impl Portal {
    /// What `take` says of `sql` with `params` bound to `$1..`, read as `principal`
    /// (the rest is not read: the query stops).
    pub(super) async fn rows(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
        params: Vec<ScalarValue>,
        take: Take,
    ) -> Result<Rows, Failure> {
        let statement = if params.is_empty() {
            Statement::Sql(sql.into())
        } else {
            Statement::Prepared(PreparedStatement::with_parameters(sql, params))
        };
        self.statement_rows(principal, statement, PAGE_RPCS, take)
            .await
    }

    /// The rows of each of `statements`, run one after the other as `principal` with
    /// the same `params`: a page's sections.
    pub(super) async fn sections<const N: usize>(
        self: &Arc<Self>,
        principal: &Principal,
        statements: [&str; N],
        params: &[ScalarValue],
        take: Take,
    ) -> Result<[Rows; N], Failure> {
        let mut sections: [Rows; N] = std::array::from_fn(|_| Rows::default());
        for (section, sql) in sections.iter_mut().zip(statements) {
            *section = self.rows(principal, sql, params.to_vec(), take).await?;
        }
        Ok(sections)
    }

    /// What `take` says of `statement` as `principal`, audited under `rpcs`.
    pub(super) async fn statement_rows(
        self: &Arc<Self>,
        principal: &Principal,
        statement: Statement,
        rpcs: (&'static str, &'static str),
        take: Take,
    ) -> Result<Rows, Failure> {
        let started = self
            .door
            .start(principal.clone(), statement, QueryOptions::default(), rpcs)
            .await?;
        let query_id = started.query_id.clone();
        let fail = |e: Error| Failure::of(e, Some(&query_id));
        let mut rows = Rows::default();
        if let Some(first) = &started.first {
            started.sent.add(first.get_array_memory_size() as u64);
            rows.push_batch(first, take).map_err(fail)?;
        }
        let mut batches = started.batches;
        if rows.names.is_empty() {
            rows.names = batches
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        while !rows.truncated {
            match batches.next().await {
                Some(Ok(batch)) => {
                    started.sent.add(batch.get_array_memory_size() as u64);
                    rows.push_batch(&batch, take).map_err(fail)?;
                }
                Some(Err(e)) => return Err(fail(e.into())),
                None => break,
            }
        }
        Ok(rows)
    }
}

/// A string parameter.
pub(super) fn text(value: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_VALUE_CHARS + 5);
        let cut = bounded_text(long, MAX_VALUE_CHARS);
        assert_eq!(cut.chars().count(), MAX_VALUE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded_text("short", 3), "sho…");
        assert_eq!(bounded_text("short", 5), "short");
        assert_eq!(bounded_text(12345, 2), "12…");
    }
}
