//! Change impact: how a mesh's products changed between two versions of their
//! descriptors, each change classified by what it does to the product's consumers.
//!
//! A change is **breaking** when a query or a consumer that worked against the old
//! contract may fail or silently get less against the new one: a product, table or
//! column removed; a type narrowed or changed; nullability changed (tightened, data that
//! held NULLs breaks the contract; relaxed, consumers may meet NULLs they never
//! handled); a policy tightened (fewer readers, a new row filter, a stricter column rule
//! or aggregation threshold, fewer exempt roles); past versions no longer kept, or for
//! less long; a weaker freshness promise; a tag added (platform rules select by tag).
//! It is **compatible** when every such query and consumer keeps working: something
//! added, a type widened as the gateway casts on read ([`widens`]: `Int32` to `Int64`,
//! more decimal digits at the same scale, another string encoding), a policy loosened,
//! a stronger promise, a tag removed. Descriptions, storage locations, quality checks,
//! keys and derived transforms are not compared.
//!
//! A product with breaking changes must raise its major version (`2.1.0` to `3.0.0`),
//! which [`ProductChanges::needs_major_version`] checks.

use std::collections::{BTreeMap, BTreeSet};

use arrow_schema::DataType;

use crate::mesh::Mesh;
use crate::policy::{ColumnEffect, ColumnRule, PolicyDescriptor, ReadRule};
use crate::product::{Column, Product, Table};

/// What a change does to a product's consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Impact {
    /// A consumer of the old contract may fail or get less.
    Breaking,
    /// Every consumer of the old contract keeps working.
    Compatible,
}

impl Impact {
    /// `breaking` or `compatible`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Breaking => "breaking",
            Self::Compatible => "compatible",
        }
    }
}

/// One change of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed: `visits.diagnosis_code`, `visits`, `policy`, or empty for the
    /// product itself.
    pub subject: String,
    /// Breaking or compatible.
    pub impact: Impact,
    /// The change in words: `column removed`, `type Int32 -> Int64 (widened)`.
    pub what: String,
}

/// The changes of one product (`domain.product`) between two meshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductChanges {
    /// `domain.product`.
    pub product: String,
    /// Its version before (`None`: new product).
    pub old_version: Option<String>,
    /// Its version after (`None`: removed product).
    pub new_version: Option<String>,
    /// Its changes, breaking ones first.
    pub changes: Vec<Change>,
}

impl ProductChanges {
    /// Whether any change is breaking.
    pub fn is_breaking(&self) -> bool {
        self.changes.iter().any(|c| c.impact == Impact::Breaking)
    }

    /// Whether the product has breaking changes but kept its major version.
    pub fn needs_major_version(&self) -> bool {
        match (&self.old_version, &self.new_version) {
            (Some(old), Some(new)) => self.is_breaking() && major(new) <= major(old),
            _ => false,
        }
    }
}

/// The major number of a `MAJOR.MINOR.PATCH` version (0 if unreadable: validated at
/// load).
fn major(version: &str) -> u64 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Every product that changed from `old` to `new`, in name order.
pub fn compare(old: &Mesh, new: &Mesh) -> Vec<ProductChanges> {
    let names: BTreeSet<(String, String)> = old
        .products()
        .chain(new.products())
        .map(|p| (p.domain.clone(), p.name.clone()))
        .collect();
    names
        .into_iter()
        .filter_map(|(domain, name)| {
            let before = old.product(&domain, &name);
            let after = new.product(&domain, &name);
            let mut changes = Vec::new();
            match (before, after) {
                (Some(before), Some(after)) => product_changes(before, after, &mut changes),
                (Some(_), None) => changes.push(change("", Impact::Breaking, "product removed")),
                (None, Some(_)) => changes.push(change("", Impact::Compatible, "product added")),
                (None, None) => {}
            }
            changes.sort_by(|a, b| (a.impact, &a.subject).cmp(&(b.impact, &b.subject)));
            (!changes.is_empty()).then(|| ProductChanges {
                product: format!("{domain}.{name}"),
                old_version: before.map(|p| p.version.clone()),
                new_version: after.map(|p| p.version.clone()),
                changes,
            })
        })
        .collect()
}

/// A duration as descriptors write it (`1day`, `6h`).
fn human(duration: std::time::Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn change(subject: &str, impact: Impact, what: impl Into<String>) -> Change {
    Change {
        subject: subject.to_string(),
        impact,
        what: what.into(),
    }
}

fn product_changes(old: &Product, new: &Product, out: &mut Vec<Change>) {
    tag_changes("tags", &old.tags, &new.tags, out);
    for table in &old.tables {
        match new.table(&table.name) {
            Some(after) => table_changes(table, after, out),
            None => out.push(change(&table.name, Impact::Breaking, "table removed")),
        }
    }
    for table in new.tables.iter().filter(|t| old.table(&t.name).is_none()) {
        out.push(change(&table.name, Impact::Compatible, "table added"));
    }
    match (old.sla.freshness, new.sla.freshness) {
        (Some(a), Some(b)) if b > a => out.push(change(
            "sla",
            Impact::Breaking,
            format!("freshness promise weakened ({} -> {})", human(a), human(b)),
        )),
        (Some(a), Some(b)) if b < a => out.push(change(
            "sla",
            Impact::Compatible,
            format!(
                "freshness promise strengthened ({} -> {})",
                human(a),
                human(b)
            ),
        )),
        (Some(_), None) => out.push(change("sla", Impact::Breaking, "freshness promise removed")),
        (None, Some(_)) => out.push(change("sla", Impact::Compatible, "freshness promise added")),
        _ => {}
    }
    policy_changes(old.policy.as_ref(), new.policy.as_ref(), out);
}

fn table_changes(old: &Table, new: &Table, out: &mut Vec<Change>) {
    let at = |column: &str| format!("{}.{column}", old.name);
    for column in &old.columns {
        match new.columns.iter().find(|c| c.name == column.name) {
            Some(after) => column_changes(&at(&column.name), column, after, out),
            None => out.push(change(
                &at(&column.name),
                Impact::Breaking,
                "column removed",
            )),
        }
    }
    for column in &new.columns {
        if !old.columns.iter().any(|c| c.name == column.name) {
            out.push(change(
                &at(&column.name),
                Impact::Compatible,
                "column added",
            ));
        }
    }
    match (&old.time_travel, &new.time_travel) {
        (Some(_), None) => out.push(change(
            &old.name,
            Impact::Breaking,
            "past versions no longer readable (time_travel removed)",
        )),
        (None, Some(_)) => out.push(change(
            &old.name,
            Impact::Compatible,
            "past versions readable (time_travel added)",
        )),
        (Some(a), Some(b)) => match (a.max_age, b.max_age) {
            (None, Some(age)) => out.push(change(
                &old.name,
                Impact::Breaking,
                format!("past versions kept for {} only", human(age)),
            )),
            (Some(x), Some(y)) if y < x => out.push(change(
                &old.name,
                Impact::Breaking,
                format!(
                    "past versions kept for less long ({} -> {})",
                    human(x),
                    human(y)
                ),
            )),
            (Some(x), Some(y)) if y > x => out.push(change(
                &old.name,
                Impact::Compatible,
                format!("past versions kept longer ({} -> {})", human(x), human(y)),
            )),
            (Some(_), None) => out.push(change(
                &old.name,
                Impact::Compatible,
                "past versions kept without a time limit",
            )),
            _ => {}
        },
        (None, None) => {}
    }
}

/// Tags added or removed: platform rules select products and columns by tag, so a tag
/// added may restrict who reads the product or mask the column (breaking); one removed
/// only lifts such rules.
fn tag_changes(at: &str, old: &[String], new: &[String], out: &mut Vec<Change>) {
    for tag in new.iter().filter(|t| !old.contains(t)) {
        out.push(change(
            at,
            Impact::Breaking,
            format!("tag {tag} added (platform rules on it may restrict readers or values)"),
        ));
    }
    for tag in old.iter().filter(|t| !new.contains(t)) {
        out.push(change(at, Impact::Compatible, format!("tag {tag} removed")));
    }
}

fn column_changes(at: &str, old: &Column, new: &Column, out: &mut Vec<Change>) {
    tag_changes(at, &old.tags, &new.tags, out);
    if old.data_type != new.data_type {
        let widened = widens(&old.data_type, &new.data_type);
        out.push(change(
            at,
            if widened {
                Impact::Compatible
            } else {
                Impact::Breaking
            },
            format!(
                "type {} -> {} ({})",
                old.data_type,
                new.data_type,
                if widened { "widened" } else { "changed" }
            ),
        ));
    }
    match (old.nullable, new.nullable) {
        (true, false) => out.push(change(
            at,
            Impact::Breaking,
            "nullability tightened (stored NULLs now break the contract)",
        )),
        (false, true) => out.push(change(
            at,
            Impact::Breaking,
            "nullability relaxed (consumers may now get NULLs)",
        )),
        _ => {}
    }
}

/// Whether values stored as `from` can be served as `to` without loss of information:
/// the casts the gateway makes when it reads data under a contract, so a type changed
/// this way is served from data written under the old one.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to {
        return true;
    }
    match (from, to) {
        (Utf8View | LargeUtf8, Utf8) | (Utf8 | Utf8View, LargeUtf8) => true,
        (BinaryView | LargeBinary, Binary) | (Binary | BinaryView, LargeBinary) => true,
        (Dictionary(_, value), _) => widens(value, to),
        (Int8, Int16 | Int32 | Int64)
        | (Int16, Int32 | Int64)
        | (Int32, Int64)
        | (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64)
        | (UInt16, UInt32 | UInt64 | Int32 | Int64)
        | (UInt32, UInt64 | Int64)
        | (Float16, Float32 | Float64)
        | (Float32, Float64) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => s1 == s2 && p1 <= p2,
        (Timestamp(u1, tz1), Timestamp(u2, tz2)) => u1 == u2 && same_zone(tz1, tz2),
        _ => false,
    }
}

fn same_zone(a: &Option<std::sync::Arc<str>>, b: &Option<std::sync::Arc<str>>) -> bool {
    let utc = |z: &str| matches!(z, "UTC" | "+00:00" | "Z" | "Etc/UTC");
    match (a.as_deref(), b.as_deref()) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y || (utc(x) && utc(y)),
        _ => false,
    }
}

fn policy_changes(
    old: Option<&PolicyDescriptor>,
    new: Option<&PolicyDescriptor>,
    out: &mut Vec<Change>,
) {
    let (old, new) = match (old, new) {
        (Some(old), Some(new)) => (old, new),
        (Some(_), None) => {
            out.push(change(
                "policy",
                Impact::Breaking,
                "policy removed: no one may read the product",
            ));
            return;
        }
        (None, Some(_)) => {
            out.push(change(
                "policy",
                Impact::Compatible,
                "policy added: the product becomes readable",
            ));
            return;
        }
        (None, None) => return,
    };
    if old.read != new.read {
        let loosened = admits_at_least(&new.read, &old.read);
        out.push(change(
            "policy.read",
            if loosened {
                Impact::Compatible
            } else {
                Impact::Breaking
            },
            if loosened {
                "read rule admits more principals"
            } else {
                "read rule changed: some principals may no longer read the product"
            },
        ));
    }
    let rows = |p: &PolicyDescriptor| -> BTreeMap<(String, Vec<String>), BTreeSet<String>> {
        p.rows
            .iter()
            .map(|r| {
                (
                    (r.filter.clone(), r.tables.clone()),
                    r.unless_role.iter().cloned().collect(),
                )
            })
            .collect()
    };
    let (old_rows, new_rows) = (rows(old), rows(new));
    for (key, exempt) in &new_rows {
        let filter = &key.0;
        match old_rows.get(key) {
            None => out.push(change(
                "policy.rows",
                Impact::Breaking,
                format!("row filter added: {filter}"),
            )),
            Some(before) if !exempt.is_superset(before) => out.push(change(
                "policy.rows",
                Impact::Breaking,
                format!("row filter {filter} exempts fewer roles"),
            )),
            Some(before) if exempt != before => out.push(change(
                "policy.rows",
                Impact::Compatible,
                format!("row filter {filter} exempts more roles"),
            )),
            Some(_) => {}
        }
    }
    for (filter, _) in old_rows.keys().filter(|k| !new_rows.contains_key(*k)) {
        out.push(change(
            "policy.rows",
            Impact::Compatible,
            format!("row filter removed: {filter}"),
        ));
    }
    let keys: BTreeSet<&String> = old.columns.keys().chain(new.columns.keys()).collect();
    for key in keys {
        let at = format!("policy.columns.{key}");
        let (before, after) = (old.columns.get(key), new.columns.get(key));
        let strictness = |rule: Option<&ColumnRule>| rule.map_or(ColumnEffect::Clear, effect);
        let exempt = |rule: Option<&ColumnRule>| -> BTreeSet<String> {
            rule.map(|r| r.unless_role.iter().cloned().collect())
                .unwrap_or_default()
        };
        let (was, is) = (strictness(before), strictness(after));
        if before == after {
            continue;
        }
        // Loosened only when the rule goes, or keeps its effect for more roles: any
        // other change of mask changes what (and which type) some callers get.
        let loosened =
            is == ColumnEffect::Clear || (is == was && exempt(after).is_superset(&exempt(before)));
        if loosened {
            out.push(change(&at, Impact::Compatible, "column rule loosened"));
        } else {
            out.push(change(
                &at,
                Impact::Breaking,
                format!(
                    "column rule changed ({} -> {})",
                    describe(was),
                    describe(is)
                ),
            ));
        }
    }
    match (&old.aggregate_only, &new.aggregate_only) {
        (None, Some(_)) => out.push(change(
            "policy.aggregate_only",
            Impact::Breaking,
            "aggregation threshold added: rows are no longer readable",
        )),
        (Some(_), None) => out.push(change(
            "policy.aggregate_only",
            Impact::Compatible,
            "aggregation threshold removed",
        )),
        (Some(a), Some(b)) if a != b => {
            let a_exempt: BTreeSet<&String> = a.unless_role.iter().collect();
            let b_exempt: BTreeSet<&String> = b.unless_role.iter().collect();
            let wider_tables = (a.tables.is_empty() && !b.tables.is_empty())
                || (!b.tables.is_empty() && b.tables.iter().all(|t| a.tables.contains(t)));
            let looser = b.min_group_size <= a.min_group_size
                && b.privacy_unit == a.privacy_unit
                && b_exempt.is_superset(&a_exempt)
                && (b.tables == a.tables || wider_tables);
            out.push(change(
                "policy.aggregate_only",
                if looser {
                    Impact::Compatible
                } else {
                    Impact::Breaking
                },
                format!(
                    "aggregation threshold {} (groups of {} -> {})",
                    if looser { "loosened" } else { "changed" },
                    a.min_group_size,
                    b.min_group_size
                ),
            ));
        }
        _ => {}
    }
}

fn describe(effect: ColumnEffect) -> String {
    match effect {
        ColumnEffect::Clear => "clear".into(),
        ColumnEffect::Hidden => "hidden".into(),
        ColumnEffect::Masked(kind) => format!("mask {}", crate::policy::mask_name(kind)),
    }
}

fn effect(rule: &ColumnRule) -> ColumnEffect {
    if rule.hide {
        ColumnEffect::Hidden
    } else {
        rule.mask.map_or(ColumnEffect::Clear, ColumnEffect::Masked)
    }
}

/// Whether every principal `old` admits, `new` admits too.
fn admits_at_least(new: &ReadRule, old: &ReadRule) -> bool {
    if new.any_authenticated {
        return true;
    }
    if old.any_authenticated {
        return false;
    }
    let any_role = new.any_role.is_empty()
        || (!old.any_role.is_empty() && old.any_role.iter().all(|r| new.any_role.contains(r)));
    let all_roles = new.all_roles.iter().all(|r| old.all_roles.contains(r));
    let attributes = new.attributes.iter().all(|(name, allowed)| {
        old.attributes
            .get(name)
            .is_some_and(|before| before.iter().all(|v| allowed.contains(v)))
    });
    any_role && all_roles && attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_what_the_gateway_casts_on_read() {
        use DataType::*;
        for (from, to) in [
            (Int32, Int64),
            (UInt16, Int32),
            (UInt8, UInt64),
            (Float32, Float64),
            (Utf8, LargeUtf8),
            (Utf8View, Utf8),
            (Decimal128(10, 2), Decimal128(12, 2)),
        ] {
            assert!(widens(&from, &to), "{from} -> {to}");
        }
        for (from, to) in [
            (Int64, Int32),
            (Int32, UInt64),
            (Int32, Float64),
            (Float64, Float32),
            (Utf8, Int64),
            (Utf8, Utf8View),
            (Date32, Date64),
            (Decimal128(10, 2), Decimal128(11, 3)),
            (Decimal128(10, 2), Decimal128(8, 2)),
            (Int64, Utf8),
        ] {
            assert!(!widens(&from, &to), "{from} -> {to}");
        }
    }

    #[test]
    fn major_versions_are_read_from_the_first_number() {
        assert_eq!(major("2.10.3"), 2);
        assert_eq!(major("10.0.0"), 10);
    }
}
