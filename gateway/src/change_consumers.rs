//! Who a breaking change affects: the consumers a gateway's usage records
//! ([`meshgate_engine::table_consumers`]) show reading what the change touches
//! (`meshgate lint --against <previous> --usage <state dir>`).
//!
//! A change of a column (its type, nullability, tags, its column rule) affects those
//! who read that column; a change of a table (removed, its time travel) those who read
//! the table; any other (the product removed, its read rule, row filters, its SLA) every
//! consumer of the product. Derived tables reading what a change touches pass it on:
//! their consumers are affected too (usage names the derived table, never its inputs).

use std::io::Write;
use std::time::SystemTime;

use meshgate_catalog::{Change, Mesh, Product};
use meshgate_engine::TableConsumer;

/// What a change touches of its product.
#[derive(Debug, PartialEq, Eq)]
enum Touched<'a> {
    /// Every table.
    Product,
    /// One table.
    Table(&'a str),
    /// One column of one table (`None`: of every table that has it).
    Column(Option<&'a str>, &'a str),
}

/// What `change` of `product` (as it was before, if it existed) touches.
fn touched<'a>(change: &'a Change, product: Option<&Product>) -> Touched<'a> {
    let subject = change.subject.as_str();
    let is_table = |name: &str| product.is_some_and(|p| p.table(name).is_some());
    // `policy.columns.<column>` or `policy.columns.<table>.<column>`: a column rule.
    if let Some(key) = subject.strip_prefix("policy.columns.") {
        return match key.split_once('.') {
            Some((table, column)) if is_table(table) => Touched::Column(Some(table), column),
            _ => Touched::Column(None, key),
        };
    }
    match subject.split_once('.') {
        Some((table, column)) if is_table(table) => Touched::Column(Some(table), column),
        None if is_table(subject) => Touched::Table(subject),
        _ => Touched::Product,
    }
}

/// The derived tables of `mesh` (`domain.product.table`) that read what `touched`
/// names of `product_name`.
fn dependents(mesh: &Mesh, product_name: &str, touched: &Touched) -> Vec<String> {
    let mut dependents = Vec::new();
    for product in mesh.products() {
        for table in &product.tables {
            let Some(derivation) = &table.derived else {
                continue;
            };
            let reads = derivation.inputs.iter().any(|input| {
                let input_product = format!("{}.{}", input.table.domain, input.table.product);
                input_product == product_name
                    && match touched {
                        Touched::Product | Touched::Column(None, _) => true,
                        Touched::Table(name) | Touched::Column(Some(name), _) => {
                            input.table.table == *name
                        }
                    }
            });
            if reads {
                dependents.push(format!("{}.{}", product.qualified_name(), table.name));
            }
        }
    }
    dependents
}

/// The consumers of `product_name` (`domain.product`, as `mesh` had it) whom `change`
/// affects, directly or through the derived tables of `mesh` that read it.
pub(crate) fn affected<'a>(
    product_name: &str,
    mesh: &Mesh,
    change: &Change,
    consumers: &'a [TableConsumer],
) -> Vec<&'a TableConsumer> {
    let product = product_name
        .split_once('.')
        .and_then(|(domain, name)| mesh.product(domain, name))
        .map(|p| &**p);
    let touched = touched(change, product);
    let dependents = dependents(mesh, product_name, &touched);
    consumers
        .iter()
        .filter(|c| {
            if dependents.contains(&c.table) {
                return true;
            }
            let Some(table) = c
                .table
                .strip_prefix(product_name)
                .and_then(|rest| rest.strip_prefix('.'))
            else {
                return false;
            };
            match touched {
                Touched::Product => true,
                Touched::Table(name) => table == name,
                Touched::Column(name, column) => {
                    name.is_none_or(|name| table == name) && c.columns.contains(column)
                }
            }
        })
        .collect()
}

/// Writes one indented line per consumer in `affected` (or one saying there is none).
pub(crate) fn write_affected(
    affected: &[&TableConsumer],
    out: &mut impl Write,
) -> std::io::Result<()> {
    if affected.is_empty() {
        return writeln!(out, "    no consumer on record reads what it changes");
    }
    for consumer in affected {
        writeln!(
            out,
            "    consumer {}|{} reads {} ({} quer{}, last read {})",
            consumer.issuer,
            consumer.subject,
            consumer.table,
            consumer.queries,
            if consumer.queries == 1 { "y" } else { "ies" },
            timestamp(consumer.last_read),
        )?;
    }
    Ok(())
}

/// `at` in RFC 3339, to the second (UTC).
fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_catalog::Impact;
    use std::collections::BTreeSet;

    fn consumer(table: &str, subject: &str, columns: &[&str]) -> TableConsumer {
        TableConsumer {
            table: table.into(),
            issuer: "idp".into(),
            subject: subject.into(),
            queries: 3,
            last_read: SystemTime::UNIX_EPOCH,
            columns: columns
                .iter()
                .map(|c| c.to_string())
                .collect::<BTreeSet<_>>(),
        }
    }

    fn change(subject: &str) -> Change {
        Change {
            subject: subject.into(),
            impact: Impact::Breaking,
            what: "changed".into(),
        }
    }

    fn subjects(affected: Vec<&TableConsumer>) -> Vec<&str> {
        affected.iter().map(|c| c.subject.as_str()).collect()
    }

    #[test]
    fn a_change_affects_the_readers_of_what_it_touches() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("d")).unwrap();
        std::fs::write(
            dir.path().join("d/p.yaml"),
            "domain: d\nproduct: p\nversion: 1.0.0\ndescription: P.\nowner: { team: t, contact: t@example.org }\ntables:\n  \
             - name: t\n    format: parquet\n    location: file:///data/d/p/t\n    columns:\n      \
             - { name: a, type: Int64 }\n      - { name: b, type: Int64 }\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("e")).unwrap();
        std::fs::write(
            dir.path().join("e/q.yaml"),
            "domain: e\nproduct: q\nversion: 1.0.0\ndescription: Q.\n\
             owner: { team: t, contact: t@example.org }\ntables:\n  - name: agg\n    \
             derived: { mode: virtual, inputs: [d.p.t], transform: \"SELECT count(*) AS n FROM d.p.t\" }\n    \
             columns: [{ name: n, type: Int64 }]\n",
        )
        .unwrap();
        let load = meshgate_catalog::Mesh::load(dir.path()).unwrap();
        assert!(load.errors.is_empty(), "{:?}", load.errors);
        let mesh = load.mesh;
        let consumers = [
            consumer("d.p.t", "ana", &["a"]),
            consumer("d.p.t", "ben", &["b"]),
            consumer("d.p.u", "cy", &["a"]),
            consumer("d.px.t", "dan", &["a"]),
            consumer("e.p.t", "eve", &["a"]),
            consumer("e.q.agg", "fay", &["n"]),
            consumer("x.y.t", "gil", &["a"]),
        ];
        let of = |product: &str, subject: &str| {
            subjects(affected(product, &mesh, &change(subject), &consumers))
        };
        assert_eq!(of("d.p", "t.a"), ["ana", "fay"]);
        assert_eq!(of("d.p", "t"), ["ana", "ben", "fay"]);
        assert_eq!(of("d.p", "policy.columns.t.b"), ["ben", "fay"]);
        assert_eq!(of("d.p", "policy.columns.a"), ["ana", "cy", "fay"]);
        assert_eq!(of("d.p", "policy.read"), ["ana", "ben", "cy", "fay"]);
        assert_eq!(of("d.p", ""), ["ana", "ben", "cy", "fay"]);
        // A product the previous mesh did not have: every consumer of the name.
        assert_eq!(of("x.y", "t"), ["gil"]);
    }
}
