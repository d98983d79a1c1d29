//! Measured completeness: how many rows a product gained over its SLA's period, read
//! from the quality history.

use std::time::{Duration, SystemTime};

use meshgate_catalog::{Completeness, Product};

use super::store::QualityStore;

/// Rows `product` gained per `target.period`, summed over its tables that `counted`
/// accepts (those the reader may see).
///
/// Each table's latest row count is compared with the newest measurement at least one
/// period older; lacking one, with its oldest measurement if that is at least 1/24 of
/// the period older (the growth then scaled to the period). `None` until every table
/// has such a pair.
pub(crate) fn measured_completeness(
    store: &QualityStore,
    product: &Product,
    target: Completeness,
    counted: &dyn Fn(&str) -> bool,
) -> Option<u64> {
    let history = store.history();
    let period = target.period.as_secs_f64();
    let shortest = target.period / 24;
    let mut growth = 0.0;
    for table in product.tables.iter().filter(|t| counted(&t.name)) {
        let rows: Vec<(SystemTime, u64)> = history
            .iter()
            .filter(|m| {
                m.domain == product.domain && m.product == product.name && m.table == table.name
            })
            .filter_map(|m| m.row_count.map(|n| (m.measured_at, n)))
            .collect();
        let &(latest_at, latest_rows) = rows.last()?;
        let cutoff = latest_at.checked_sub(target.period)?;
        let baseline = rows
            .iter()
            .rev()
            .find(|(at, _)| *at <= cutoff)
            .or_else(|| rows.first())?;
        let span = latest_at
            .duration_since(baseline.0)
            .unwrap_or(Duration::ZERO);
        if span < shortest || span.is_zero() {
            return None;
        }
        let gained = latest_rows as f64 - baseline.1 as f64;
        growth += gained * period / span.as_secs_f64();
    }
    Some(growth.max(0.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::quality::model::TableMeasurement;
    use meshgate_catalog::parse_completeness;

    fn product() -> Product {
        let yaml = r#"
domain: d
product: p
version: 1.0.0
description: test
owner: { team: t, contact: t@example.org }
sla: { completeness: ">= 100 rows per day" }
tables:
  - { name: t, format: parquet, location: "file:///tmp/t/", columns: [{ name: a, type: Int64 }] }
"#;
        meshgate_catalog::product_from_text(
            &PathBuf::from("/mesh"),
            &PathBuf::from("/mesh/d/p.yaml"),
            yaml,
        )
        .expect("valid descriptor")
    }

    fn at(hours_ago: u64, rows: u64) -> TableMeasurement {
        let at = SystemTime::now() - Duration::from_secs(hours_ago * 3600);
        TableMeasurement::counted("t", at, rows)
    }

    #[test]
    fn growth_over_the_period_from_history() {
        let product = product();
        let target = parse_completeness(">= 100 rows per day").expect("parses");
        let store = QualityStore::in_memory(Duration::from_secs(30 * 86_400));
        assert_eq!(
            measured_completeness(&store, &product, target, &|_| true),
            None
        );
        store.record(at(0, 1000)).expect("record");
        assert_eq!(
            measured_completeness(&store, &product, target, &|_| true),
            None
        );
        store.record(at(30, 700)).expect("record");
        store.record(at(25, 800)).expect("record");
        // The newest measurement a day or more before the latest: 25 h ago, 200 rows less.
        assert_eq!(
            measured_completeness(&store, &product, target, &|_| true),
            Some((200.0 * 24.0 / 25.0_f64).round() as u64)
        );
    }

    #[test]
    fn a_short_history_is_scaled_to_the_period() {
        let product = product();
        let target = parse_completeness(">= 100 rows per day").expect("parses");
        let store = QualityStore::in_memory(Duration::from_secs(30 * 86_400));
        store.record(at(6, 100)).expect("record");
        store.record(at(0, 150)).expect("record");
        assert_eq!(
            measured_completeness(&store, &product, target, &|_| true),
            Some(200)
        );
    }
}
