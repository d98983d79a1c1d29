//! What an answer is kept under, and which statements' answers may be kept at all.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use meshgate_catalog::{DerivedMode, TableFormat};

use crate::product::{CompiledProduct, calls_changing_function};

/// The digest an answer is kept under: the [`StatementKey`] and the plan's snapshot of
/// the data it reads (see the module documentation of `crate::cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ResultKey([u8; 32]);

impl ResultKey {
    /// The key of `statement` answered from the data `snapshot` digests.
    pub(crate) fn of(statement: &StatementKey, snapshot: &[u8]) -> Self {
        Self(digest(&[&statement.digest, snapshot]))
    }
}

/// What decides a statement's answer beyond the data: the statement as sent, how its
/// names resolve, and the caller's answer fingerprint; with the products it reads.
#[derive(Debug, Clone)]
pub(crate) struct StatementKey {
    digest: [u8; 32],
    products: Arc<[String]>,
}

/// How a statement was asked, for its [`StatementKey`].
#[derive(Debug)]
pub(crate) struct AskedStatement<'a> {
    /// The SQL text as the caller sent it.
    pub(crate) sql: &'a str,
    /// The values bound to its placeholders, if prepared.
    pub(crate) bound: Option<&'a [ScalarValue]>,
    /// Where its partly qualified names resolve, and the versions it pins, as text
    /// that tells any two settings apart.
    pub(crate) resolution: String,
    /// `domain.product.table` (`@vN`) of every table it reads, resolved.
    pub(crate) tables: &'a [String],
    /// The caller's answer fingerprint.
    pub(crate) answers: &'a [u8; 32],
}

impl StatementKey {
    /// The key of `asked`.
    pub(crate) fn new(asked: &AskedStatement<'_>) -> Self {
        let bound = asked
            .bound
            .map(|values| format!("{values:?}"))
            .unwrap_or_default();
        let tables = asked.tables.join("\n");
        let digest = digest(&[
            asked.sql.as_bytes(),
            if asked.bound.is_some() {
                b"bound"
            } else {
                b"text"
            },
            bound.as_bytes(),
            asked.resolution.as_bytes(),
            tables.as_bytes(),
            asked.answers,
        ]);
        let mut products: Vec<String> = asked
            .tables
            .iter()
            .filter_map(|t| {
                let mut parts = t.splitn(3, '.');
                Some(format!("{}.{}", parts.next()?, parts.next()?))
            })
            .collect();
        products.sort();
        products.dedup();
        Self {
            digest,
            products: products.into(),
        }
    }

    /// `domain.product` of every product the statement reads.
    pub(crate) fn products(&self) -> &Arc<[String]> {
        &self.products
    }
}

/// Whether a statement's answer may be kept, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cacheability {
    /// Its answer depends only on its key.
    Cacheable,
    /// It calls a function whose result may differ between executions.
    NotImmutable,
    /// It reads a table that is not a product's stored table (the `mesh` catalog, a
    /// domain node's table, a virtual derived table), or none.
    NotStored,
    /// It reads a product whose descriptor says `serving: {result_cache: false}`.
    OptedOut,
}

impl Cacheability {
    /// Whether `plan`, reading `tables` of `products`, may have its answer kept.
    pub(crate) fn of(plan: &LogicalPlan, tables: &[String], products: &[CompiledProduct]) -> Self {
        if tables.is_empty() {
            return Self::NotStored;
        }
        for name in tables {
            let base = name.split_once('@').map_or(name.as_str(), |(base, _)| base);
            let mut parts = base.splitn(3, '.');
            let (Some(domain), Some(product), Some(table)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Self::NotStored;
            };
            let Some(compiled) = products
                .iter()
                .find(|c| c.product.domain == domain && c.product.name == product)
            else {
                return Self::NotStored;
            };
            let Some(table) = compiled.product.table(table) else {
                return Self::NotStored;
            };
            let stored = matches!(table.format, TableFormat::Parquet | TableFormat::Delta)
                && table.remote.is_none()
                && table
                    .derived
                    .as_ref()
                    .is_none_or(|d| d.mode == DerivedMode::Materialized);
            if !stored {
                return Self::NotStored;
            }
            if !compiled.product.result_cache {
                return Self::OptedOut;
            }
        }
        if calls_changing_functions(plan) {
            return Self::NotImmutable;
        }
        Self::Cacheable
    }
}

/// Whether `plan` (its subqueries included) holds a function that is not immutable, or
/// a placeholder left unbound.
pub(super) fn calls_changing_functions(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|expr| {
            found = calls_changing_function(expr)
                || expr.exists(|e| Ok(matches!(e, Expr::Placeholder(_))))?;
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// SHA-256 of `parts`, each prefixed by its length.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        digest.update(&(part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.finish().as_ref());
    bytes
}
