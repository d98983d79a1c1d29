//! How large a statement's plan becomes once its common table expressions are
//! expanded, worked out from the parsed statement before it is planned.
//!
//! DataFusion's SQL planner inlines a common table expression at every reference to
//! it, and its work grows with the expanded plan: a 1 KB chain of expressions, each
//! referencing the previous one twice, doubles at every link (16 links: a second of
//! planning; 24: minutes and gigabytes), and no deadline can interrupt the planner,
//! which never yields. So the expansion is counted on the syntax tree first, in time
//! linear in the statement: each expression weighs one plus the weights of the
//! relations it references, and the statement weighs the sum over all its references.
//! The count is an upper bound of the plan's relations (references in nested scopes
//! count as if they all resolved to the expression), never an underestimate.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{ObjectName, ObjectNamePart, Query, Visit, Visitor};

use super::budget::PlanTooLarge;

/// References to single-part names (candidates for a common table expression), by
/// lowercased name, in a part of the statement.
fn references(part: &impl Visit) -> HashMap<String, u64> {
    struct Count(HashMap<String, u64>);
    impl Visitor for Count {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            if let [ObjectNamePart::Identifier(name)] = relation.0.as_slice() {
                *self.0.entry(name.value.to_lowercase()).or_default() += 1;
            }
            ControlFlow::Continue(())
        }
    }
    let mut count = Count(HashMap::new());
    let _ = part.visit(&mut count);
    count.0
}

/// Every common table expression of a statement, in the order they are defined, with
/// the references in its body.
fn definitions(statement: &impl Visit) -> Vec<(String, HashMap<String, u64>)> {
    struct Collect(Vec<(String, HashMap<String, u64>)>);
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            for cte in query.with.iter().flat_map(|with| &with.cte_tables) {
                self.0.push((
                    cte.alias.name.value.to_lowercase(),
                    references(cte.query.as_ref()),
                ));
            }
            ControlFlow::Continue(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = statement.visit(&mut collect);
    collect.0
}

/// The weight of `refs`: one per reference, or the weight of the expression it names.
fn weigh(refs: &HashMap<String, u64>, weights: &HashMap<String, u64>) -> u64 {
    refs.iter().fold(0u64, |total, (name, count)| {
        let each = weights.get(name).copied().unwrap_or(1);
        total.saturating_add(count.saturating_mul(each))
    })
}

/// Refuses `statement` when its expansion passes `max` relations.
pub(super) fn ensure_bounded_expansion(
    statement: &impl Visit,
    max: usize,
) -> Result<(), PlanTooLarge> {
    let mut weights: HashMap<String, u64> = HashMap::new();
    for (name, refs) in definitions(statement) {
        // A reference to itself (`WITH RECURSIVE`) or to a later expression is not yet
        // weighed, and counts one.
        let weight = weigh(&refs, &weights).saturating_add(1);
        weights.insert(name, weight);
    }
    let total = weigh(&references(statement), &weights).saturating_add(1);
    if total > max as u64 {
        Err(PlanTooLarge { max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn weighs_within(sql: &str, max: usize) -> bool {
        let statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        ensure_bounded_expansion(&statements[0], max).is_ok()
    }

    fn doubling(levels: usize) -> String {
        let mut sql = String::from("WITH t0 AS (SELECT 1 AS x)");
        for i in 1..=levels {
            sql.push_str(&format!(
                ", t{i} AS (SELECT x FROM t{p} UNION ALL SELECT x FROM T{p})",
                p = i - 1
            ));
        }
        sql.push_str(&format!(" SELECT count(*) FROM t{levels}"));
        sql
    }

    #[test]
    fn doubling_chains_are_weighed_before_planning() {
        assert!(weighs_within(&doubling(8), 10_000));
        assert!(!weighs_within(&doubling(14), 10_000));
        let started = std::time::Instant::now();
        assert!(
            !weighs_within(&doubling(200), 10_000),
            "saturates, never overflows"
        );
        assert!(started.elapsed().as_secs() < 2);
    }

    #[test]
    fn ordinary_statements_weigh_little() {
        for sql in [
            "SELECT 1",
            "SELECT * FROM a.b.c JOIN a.b.d ON c.id = d.id",
            "WITH x AS (SELECT * FROM a.b.c), y AS (SELECT * FROM x JOIN x x2 ON true) \
             SELECT * FROM y, y y2",
            "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) \
             SELECT * FROM r",
            "SELECT * FROM (WITH i AS (SELECT 1) SELECT * FROM i) s",
        ] {
            assert!(weighs_within(sql, 100), "{sql}");
        }
    }
}
