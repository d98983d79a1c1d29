//! Governance as data: who may read a product, which rows, which columns.
//!
//! A domain declares its product's policy in the descriptor (`policy:`); the platform
//! declares mesh-wide rules by tag ([`PlatformPolicy`]). [`decide`] combines both for one
//! principal into an [`Access`]: denied, or granted with, per table, the columns that
//! remain visible, the mask on each, and the row filters to apply. Combination always
//! takes the stricter rule, so a domain can tighten a platform rule but never loosen it.
//! The default is closed: a product without a policy, or a principal without a
//! matching rule, is denied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::principal::Principal;
use crate::product::Product;

/// The `policy:` block of a descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDescriptor {
    /// Who may read the product at all.
    pub read: ReadRule,
    /// Row filters; each applies unless the principal holds one of its `unless_role`.
    #[serde(default)]
    pub rows: Vec<RowRule>,
    /// Column rules, keyed by `column` (every table with that column) or `table.column`.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnRule>,
    /// Small-cell suppression: principals without one of its `unless_role` read the
    /// product (or the tables listed) only in aggregate, in groups of enough rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_only: Option<AggregateOnlyRule>,
}

/// `policy.aggregate_only`: the product's tables may be read only through aggregates
/// whose every group has at least `min_group_size` contributors; smaller groups are
/// left out of the answer, and rows are never returned as they are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateOnlyRule {
    /// Fewest contributors a group of an answer may have (at least 2).
    pub min_group_size: u64,
    /// The column that identifies a contributor (a patient, a customer): a group counts
    /// its distinct values, so that joins which repeat rows do not inflate it. Without
    /// one, a group counts the table's rows, and joins with the table are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_unit: Option<String>,
    /// Roles that read the tables without the rule.
    #[serde(default)]
    pub unless_role: Vec<String>,
    /// Tables the rule applies to; all tables of the product when empty.
    #[serde(default)]
    pub tables: Vec<String>,
}

/// The aggregation threshold a principal reads one table under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateThreshold {
    /// Fewest contributors per group.
    pub min_group_size: u64,
    /// The column whose distinct values count as contributors (rows when `None`).
    pub privacy_unit: Option<String>,
}

impl AggregateThreshold {
    /// The rule in words, for errors and the audit: `groups of at least 11 distinct
    /// patient_id`.
    pub fn describe(&self) -> String {
        match &self.privacy_unit {
            Some(unit) => format!("groups of at least {} distinct {unit}", self.min_group_size),
            None => format!("groups of at least {} rows", self.min_group_size),
        }
    }
}

/// A condition on a principal. Every listed condition must hold; at least one must be
/// listed (an empty rule is rejected, never read as "everyone").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRule {
    /// The principal holds at least one of these roles.
    #[serde(default)]
    pub any_role: Vec<String>,
    /// The principal holds all of these roles.
    #[serde(default)]
    pub all_roles: Vec<String>,
    /// For each attribute, the principal's value is one of those listed.
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Any authenticated principal (must be the only condition).
    #[serde(default)]
    pub any_authenticated: bool,
}

impl ReadRule {
    /// Whether the rule lists no condition at all.
    pub fn is_empty(&self) -> bool {
        self.any_role.is_empty()
            && self.all_roles.is_empty()
            && self.attributes.is_empty()
            && !self.any_authenticated
    }

    /// Whether `principal` satisfies the rule. An empty rule matches nobody.
    pub fn allows(&self, principal: &Principal) -> bool {
        if self.is_empty() {
            return false;
        }
        (self.any_role.is_empty() || principal.has_any_role(&self.any_role))
            && self.all_roles.iter().all(|r| principal.has_role(r))
            && self.attributes.iter().all(|(name, allowed)| {
                principal
                    .attribute(name)
                    .is_some_and(|v| allowed.iter().any(|a| a == v))
            })
    }
}

/// A row filter: a SQL predicate over the table's columns, where `principal.<name>`
/// stands for the caller's attribute `<name>` (bound as a value, never pasted as text;
/// a missing attribute binds NULL, which keeps no row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowRule {
    /// The predicate, e.g. `region = principal.region`.
    pub filter: String,
    /// Roles exempt from this filter.
    #[serde(default)]
    pub unless_role: Vec<String>,
    /// Tables the filter applies to; all tables of the product when empty.
    #[serde(default)]
    pub tables: Vec<String>,
}

/// What happens to a column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    /// Remove the column from the table the principal sees.
    #[serde(default)]
    pub hide: bool,
    /// Replace the column's values.
    #[serde(default)]
    pub mask: Option<MaskKind>,
    /// Roles exempt from this rule.
    #[serde(default)]
    pub unless_role: Vec<String>,
}

/// How a masked column's values are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// Keep the last four characters of strings (`***1234`); other types become null.
    Partial,
    /// A keyed hash of the value (hex): equal values stay equal, so joins still work.
    Hash,
    /// Strings become `REDACTED`; other types become null.
    Redact,
    /// Null of the column's type.
    Null,
}

/// The effect of column rules on one column, ordered from least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnEffect {
    /// Values are shown as stored.
    Clear,
    /// Values are replaced.
    Masked(MaskKind),
    /// The column does not exist for the principal.
    Hidden,
}

impl ColumnRule {
    fn effect(&self) -> ColumnEffect {
        if self.hide {
            ColumnEffect::Hidden
        } else {
            self.mask.map_or(ColumnEffect::Clear, ColumnEffect::Masked)
        }
    }
}

/// A mesh-wide rule declared by the platform, applied by tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformPolicy {
    /// A human-readable name for audits (`pii-masking`).
    pub name: String,
    /// The classification tag the rule applies to.
    pub tag: String,
    /// On columns tagged `tag`: hide or mask them.
    #[serde(default)]
    pub column: Option<ColumnRule>,
    /// On products tagged `tag`: who may read them (in addition to the domain's rule).
    #[serde(default)]
    pub read: Option<ReadRule>,
}

/// The outcome of a policy decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The principal may not read the product. Callers must make it indistinguishable
    /// from a product that does not exist.
    Denied,
    /// The principal may read the product under these restrictions.
    Granted(ProductAccess),
}

/// What a principal may see of each table of a product.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductAccess {
    /// Per table name.
    pub tables: BTreeMap<String, TableAccess>,
}

/// What a principal may see of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableAccess {
    /// Every contract column with its effect, in contract order (hidden ones included,
    /// marked [`ColumnEffect::Hidden`]).
    pub columns: Vec<(String, ColumnEffect)>,
    /// Row filters to apply, all of them (conjunction).
    pub row_filters: Vec<String>,
    /// Human-readable list of the rules that restricted this table (for the audit).
    pub applied: Vec<String>,
    /// The aggregation threshold, when the principal reads the table only in aggregate.
    pub aggregate_only: Option<AggregateThreshold>,
}

impl TableAccess {
    /// Whether the principal sees the table exactly as stored.
    pub fn is_unrestricted(&self) -> bool {
        self.row_filters.is_empty()
            && self.aggregate_only.is_none()
            && self.columns.iter().all(|(_, e)| *e == ColumnEffect::Clear)
    }
}

/// Decides what `principal` may see of `product` under `platform` rules.
pub fn decide(principal: &Principal, product: &Product, platform: &[PlatformPolicy]) -> Access {
    let Some(policy) = &product.policy else {
        return Access::Denied;
    };
    if !policy.read.allows(principal) {
        return Access::Denied;
    }
    for rule in platform {
        if let Some(read) = &rule.read
            && product.tags.contains(&rule.tag)
            && !read.allows(principal)
        {
            return Access::Denied;
        }
    }

    let mut access = ProductAccess::default();
    for table in &product.tables {
        let mut table_access = TableAccess::default();
        for column in &table.columns {
            let mut effect = ColumnEffect::Clear;
            let qualified = format!("{}.{}", table.name, column.name);
            for key in [&column.name, &qualified] {
                if let Some(rule) = policy.columns.get(key)
                    && !principal.has_any_role(&rule.unless_role)
                    && rule.effect() > ColumnEffect::Clear
                {
                    table_access.applied.push(format!(
                        "column {}: {}",
                        column.name,
                        describe(rule.effect())
                    ));
                    effect = effect.max(rule.effect());
                }
            }
            for rule in platform {
                if let Some(column_rule) = &rule.column
                    && column.tags.contains(&rule.tag)
                    && !principal.has_any_role(&column_rule.unless_role)
                    && column_rule.effect() > ColumnEffect::Clear
                {
                    table_access.applied.push(format!(
                        "column {}: {} (platform rule {})",
                        column.name,
                        describe(column_rule.effect()),
                        rule.name
                    ));
                    effect = effect.max(column_rule.effect());
                }
            }
            table_access.columns.push((column.name.clone(), effect));
        }
        for rule in &policy.rows {
            let applies_to_table = rule.tables.is_empty() || rule.tables.contains(&table.name);
            if applies_to_table && !principal.has_any_role(&rule.unless_role) {
                table_access.row_filters.push(rule.filter.clone());
                table_access.applied.push(format!("rows: {}", rule.filter));
            }
        }
        if let Some(rule) = &policy.aggregate_only
            && (rule.tables.is_empty() || rule.tables.contains(&table.name))
            && !principal.has_any_role(&rule.unless_role)
        {
            let threshold = AggregateThreshold {
                min_group_size: rule.min_group_size,
                privacy_unit: rule.privacy_unit.clone(),
            };
            table_access
                .applied
                .push(format!("aggregate only: {}", threshold.describe()));
            table_access.aggregate_only = Some(threshold);
        }
        access.tables.insert(table.name.clone(), table_access);
    }
    Access::Granted(access)
}

fn describe(effect: ColumnEffect) -> String {
    match effect {
        ColumnEffect::Clear => "clear".into(),
        ColumnEffect::Hidden => "hidden".into(),
        ColumnEffect::Masked(kind) => format!("masked ({})", mask_name(kind)),
    }
}

/// The descriptor name of a mask kind.
pub fn mask_name(kind: MaskKind) -> &'static str {
    match kind {
        MaskKind::Partial => "partial",
        MaskKind::Hash => "hash",
        MaskKind::Redact => "redact",
        MaskKind::Null => "null",
    }
}
