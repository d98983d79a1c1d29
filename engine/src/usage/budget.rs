//! Budgets: what a query may still take today, before it runs and while it runs.
//!
//! The limits that apply to a query are the platform's (`budgets` in the gateway
//! configuration: per principal across the mesh, per product, per principal on each
//! product) and those of the owners of the products it reads (`serving.budget` in the
//! descriptor: per consumer, and for all consumers together; a product's owners are not
//! its consumers). Each limit counts what its scope spent today (UTC), as the usage
//! store holds it.
//!
//! Before a query runs it is refused when a limit is already spent, or when the bytes
//! of the files its scans are given (what is left after partition and file pruning: an
//! upper bound, since columns and row groups not needed are not read) pass what the
//! limit leaves. While it runs, the bytes its scans read and the rows it returned are
//! counted against the same limits, and it stops when one is passed. Queries running at
//! the same time each see what the others spent once they end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshgate_catalog::{Allowance, ByteCount, Principal, Product};
use serde::Deserialize;

use super::store::{Reader, Scope, Spent, UsageStore, day_of};
use crate::error::BudgetSpent;

/// The platform's budgets, per day (UTC).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// What each principal may take from the whole mesh.
    pub per_principal: Option<Allowance>,
    /// What all principals together may take from each product.
    pub per_product: Option<Allowance>,
    /// What each principal may take from each product.
    pub per_product_principal: Option<Allowance>,
}

/// One limit a query runs under.
#[derive(Debug, Clone)]
struct Limit {
    /// What the caller is told it is.
    name: String,
    /// The product whose reads it counts; all reads when `None`.
    product: Option<String>,
    allowance: Allowance,
    /// What its scope had spent when the query started.
    spent: Spent,
    /// Whether the caller may be told what its scope spent: not for a product's
    /// total, which counts every consumer's reads.
    shows_spending: bool,
}

impl Limit {
    fn counts(&self, bytes_by_product: &BTreeMap<String, u64>) -> u64 {
        match &self.product {
            Some(product) => bytes_by_product.get(product.as_str()).copied().unwrap_or(0),
            None => bytes_by_product.values().sum(),
        }
    }
}

/// The limits one query runs under, and what their scopes had spent when it started.
#[derive(Debug, Clone)]
pub(crate) struct QueryAllowance {
    limits: Vec<Limit>,
    resets_at: SystemTime,
}

impl QueryAllowance {
    /// The limits on `principal` reading `products` (`domain.product`), which `served`
    /// describes (owners' budgets, owner roles), under the platform's `config` and
    /// `domain_owners`, with what each scope spent today in `store`. `None` when no
    /// limit applies.
    pub(crate) fn for_query(
        principal: &Principal,
        products: &BTreeSet<String>,
        served: &[&Product],
        config: &BudgetsConfig,
        domain_owners: &BTreeMap<String, Vec<String>>,
        store: &UsageStore,
    ) -> Option<Self> {
        let reader = Reader {
            issuer: principal.issuer.clone(),
            subject: principal.subject.clone(),
        };
        let mut limits = Vec::new();
        let mut add =
            |name: String, product: Option<&str>, allowance: &Option<Allowance>, scope| {
                if let Some(allowance) = allowance.filter(|a| !a.is_unlimited()) {
                    limits.push(Limit {
                        name,
                        product: product.map(str::to_string),
                        allowance,
                        spent: store.spent_today(&scope),
                        shows_spending: !matches!(scope, Scope::Product(_)),
                    });
                }
            };
        add(
            "the platform's budget per principal (budgets.per_principal)".into(),
            None,
            &config.per_principal,
            Scope::Principal(reader.clone()),
        );
        for product in products {
            add(
                format!("the platform's budget per product for {product} (budgets.per_product)"),
                Some(product),
                &config.per_product,
                Scope::Product(product.clone()),
            );
            add(
                format!(
                    "the platform's budget per principal on {product} \
                     (budgets.per_product_principal)"
                ),
                Some(product),
                &config.per_product_principal,
                Scope::ProductPrincipal(product.clone(), reader.clone()),
            );
            let Some(described) = served.iter().find(|p| &p.qualified_name() == product) else {
                continue;
            };
            let Some(budget) = described.budget else {
                continue;
            };
            if super::owns(principal, described, domain_owners) {
                continue;
            }
            add(
                format!("{product}'s budget per consumer (serving.budget.per_consumer)"),
                Some(product),
                &budget.per_consumer,
                Scope::ProductPrincipal(product.clone(), reader.clone()),
            );
            add(
                format!("{product}'s budget for all consumers (serving.budget.total)"),
                Some(product),
                &budget.total,
                Scope::Product(product.clone()),
            );
        }
        if limits.is_empty() {
            return None;
        }
        let tomorrow = u64::from(day_of(SystemTime::now())) + 1;
        Some(Self {
            limits,
            resets_at: UNIX_EPOCH + Duration::from_secs(tomorrow * 86_400),
        })
    }

    /// Refuses a query whose limits are spent already; with `planned` (per product,
    /// the bytes of the files its scans are given), also one that would pass what a
    /// limit on bytes leaves.
    pub(crate) fn check_start(
        &self,
        planned: Option<&BTreeMap<String, u64>>,
    ) -> Result<(), BudgetSpent> {
        for limit in &self.limits {
            if let Some(max) = limit.allowance.bytes_scanned {
                let spent = limit.spent.bytes_scanned;
                if spent >= max.0 {
                    return Err(self.spent(limit, "bytes scanned", &bytes(max.0), &bytes(spent)));
                }
                let estimate = planned.map_or(0, |p| limit.counts(p));
                if spent + estimate > max.0 {
                    if !limit.shows_spending {
                        return Err(self.spent_with(format!(
                            "{} does not leave enough for this query today; it resets at {}",
                            limit.name,
                            self.resets()
                        )));
                    }
                    return Err(self.spent_with(format!(
                        "{} allows {} scanned per day; {} were scanned today and this query \
                         would scan up to {}; it resets at {}",
                        limit.name,
                        bytes(max.0),
                        bytes(spent),
                        bytes(estimate),
                        self.resets()
                    )));
                }
            }
            if let Some(max) = limit.allowance.rows_returned
                && limit.spent.rows_returned >= max
            {
                return Err(self.spent(
                    limit,
                    "rows returned",
                    &max.to_string(),
                    &limit.spent.rows_returned.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Stops a running query once its scans have read (`bytes_by_product`, what is not
    /// yet counted in the store) or it has returned (`rows`) more than a limit leaves.
    pub(crate) fn check_running(
        &self,
        bytes_by_product: &BTreeMap<String, u64>,
        rows: u64,
    ) -> Result<(), BudgetSpent> {
        for limit in &self.limits {
            if let Some(max) = limit.allowance.bytes_scanned {
                let total = limit.spent.bytes_scanned + limit.counts(bytes_by_product);
                if total > max.0 {
                    return Err(self.passed(limit, "scanned", &bytes(max.0), &bytes(total)));
                }
            }
            if let Some(max) = limit.allowance.rows_returned {
                let total = limit.spent.rows_returned + rows;
                if total > max {
                    return Err(self.passed(
                        limit,
                        "rows returned",
                        &max.to_string(),
                        &total.to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a limit counts bytes (the running query's scans are then watched).
    pub(crate) fn limits_bytes(&self) -> bool {
        self.limits
            .iter()
            .any(|l| l.allowance.bytes_scanned.is_some())
    }

    fn spent(&self, limit: &Limit, what: &str, max: &str, used: &str) -> BudgetSpent {
        if !limit.shows_spending {
            return self.spent_with(format!(
                "{} is spent for today; it resets at {}",
                limit.name,
                self.resets()
            ));
        }
        self.spent_with(format!(
            "{} is spent: it allows {max} {what} per day, and {used} were counted today; \
             it resets at {}",
            limit.name,
            self.resets()
        ))
    }

    fn passed(&self, limit: &Limit, what: &str, max: &str, total: &str) -> BudgetSpent {
        if !limit.shows_spending {
            return self.spent(limit, what, max, total);
        }
        self.spent_with(format!(
            "{} allows {max} {what} per day, and this query brought today's count to {total}; \
             it resets at {}",
            limit.name,
            self.resets()
        ))
    }

    fn spent_with(&self, message: String) -> BudgetSpent {
        BudgetSpent(message, self.resets_at)
    }

    fn resets(&self) -> String {
        humantime::format_rfc3339_seconds(self.resets_at).to_string()
    }
}

fn bytes(n: u64) -> String {
    ByteCount(n).to_string()
}
