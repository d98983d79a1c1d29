//! Usage and budgets: who reads what, kept per day in the state directory and
//! queryable as `mesh.meta.usage` and `mesh.meta.column_usage`, and what each consumer
//! may still take today.
//!
//! Every execution of a query adds to its principal's tally of each table it read (see
//! [`UsageStore`]): counted from the metrics of its storage scans ([`QueryScans`]), so
//! accounting adds no operator to any plan. Owners (a role named in the product's
//! `owner.roles`, or the domain's owner role in `usage.domain_owners`) see the usage of
//! their products; everyone sees their own.

mod budget;
mod consumers;
mod meter;
mod store;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meshgate_catalog::{Principal, Product};
use serde::Deserialize;

pub use budget::BudgetsConfig;
pub(crate) use budget::QueryAllowance;
pub use consumers::{TableConsumer, table_consumers};
pub(crate) use meter::QueryScans;
pub use store::UsageStore;
pub(crate) use store::{QueryUse, Reader, Scope, TableUse, UsageRow};
pub(crate) use store::{day_of, product_of};
pub(crate) use watch::watched;

/// Usage accounting: where it is kept, for how long, who owns which domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Count usage and enforce budgets (on by default).
    pub enabled: bool,
    /// How long daily usage is kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often counted usage is written to the state directory (and at shutdown): a
    /// crash loses at most this much.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Each domain's owner roles: their holders see the usage of every product of the
    /// domain, and the owners' budgets do not apply to them.
    pub domain_owners: BTreeMap<String, Vec<String>>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention: Duration::from_secs(90 * 86_400),
            flush_interval: Duration::from_secs(5),
            domain_owners: BTreeMap::new(),
        }
    }
}

/// Usage accounting and budgets, as the engine applies them.
#[derive(Debug)]
pub struct Usage {
    store: Arc<UsageStore>,
    budgets: BudgetsConfig,
    domain_owners: BTreeMap<String, Vec<String>>,
}

impl Usage {
    /// Accounting into `store`, with the platform's `budgets`, and `config`'s owners.
    pub fn new(store: Arc<UsageStore>, budgets: BudgetsConfig, config: &UsageConfig) -> Self {
        Self {
            store,
            budgets,
            domain_owners: config.domain_owners.clone(),
        }
    }

    /// Where usage is kept.
    pub fn store(&self) -> &Arc<UsageStore> {
        &self.store
    }

    /// The platform's budgets.
    pub(crate) fn budgets(&self) -> &BudgetsConfig {
        &self.budgets
    }

    /// Each domain's owner roles.
    pub(crate) fn domain_owners(&self) -> &BTreeMap<String, Vec<String>> {
        &self.domain_owners
    }

    /// The limits on `principal` reading `products` (`domain.product`), which `served`
    /// describes.
    pub(crate) fn allowance(
        &self,
        principal: &Principal,
        products: &BTreeSet<String>,
        served: &[&Product],
    ) -> Option<QueryAllowance> {
        // A statement reading no product (the mesh's own tables, `SELECT 1`) takes
        // nothing from any budget: a caller whose budget is spent still reads its own.
        if products.is_empty() {
            return None;
        }
        QueryAllowance::for_query(
            principal,
            products,
            served,
            &self.budgets,
            &self.domain_owners,
            &self.store,
        )
    }
}

/// Whether `principal` owns `product`: holds one of its `owner.roles`, or one of its
/// domain's owner roles.
pub(crate) fn owns(
    principal: &Principal,
    product: &Product,
    domain_owners: &BTreeMap<String, Vec<String>>,
) -> bool {
    let domain_roles = domain_owners.get(&product.domain).into_iter().flatten();
    product
        .owner_roles
        .iter()
        .chain(domain_roles)
        .any(|role| principal.roles.contains(role))
}
