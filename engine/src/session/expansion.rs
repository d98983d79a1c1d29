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

/// Every common table expression of a statement with the references in its body;
/// those defined inside a body come before the expression whose body holds them.
fn definitions(statement: &impl Visit) -> Vec<(String, HashMap<String, u64>)> {
    struct Collect(Vec<(String, HashMap<String, u64>)>);
    impl Visitor for Collect {
        type Break = ();
        fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            for cte in query.with.iter().flat_map(|with| &with.cte_tables) {
                let name = cte.alias.name.value.to_lowercase();
                let mut refs = references(cte.query.as_ref());
                // A recursive expression's reference to itself is its working table.
                refs.remove(&name);
                self.0.push((name, refs));
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

/// Most rounds of weighing (each round follows references one more level; ordinary
/// statements settle in two).
const MAX_ROUNDS: usize = 64;

/// Refuses `statement` when its expansion passes `max` relations.
///
/// Names are compared without case and without regard to scope, and a name defined
/// more than once weighs as much as its heaviest definition: an overestimate for
/// statements that reuse names, never an underestimate. Weights are propagated until
/// they settle, so a reference to an expression weighed later (an outer one, from a
/// nested scope) still carries its weight.
pub(super) fn ensure_bounded_expansion(
    statement: &impl Visit,
    max: usize,
) -> Result<(), PlanTooLarge> {
    let too_large = Err(PlanTooLarge { max });
    let definitions = definitions(statement);
    let mut weights: HashMap<String, u64> = HashMap::new();
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        for (name, refs) in &definitions {
            let weight = weigh(refs, &weights).saturating_add(1);
            let heaviest = weights.entry(name.clone()).or_insert(0);
            if weight > *heaviest {
                *heaviest = weight;
                changed = true;
            }
        }
        if weights.values().any(|w| *w > max as u64) {
            return too_large;
        }
        if !changed {
            break;
        }
    }
    // Weights still growing after every round, yet all within the limit, come from a
    // cycle of reused names, which grows by a reference per round: an expansion that
    // doubles passes the limit within a few rounds of its depth.
    let total = weigh(&references(statement), &weights).saturating_add(1);
    if total > max as u64 {
        too_large
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

    /// A chain of `levels` doubling expressions named `name0..`, as written by `quote`.
    fn chain(quote: &str, name: &str, levels: usize) -> String {
        let q = |i: usize| format!("{quote}{name}{i}{quote}");
        let mut ctes = vec![format!("{} AS (SELECT 1 AS x)", q(0))];
        for i in 1..=levels {
            ctes.push(format!(
                "{} AS (SELECT x FROM {p} UNION ALL SELECT x FROM {p})",
                q(i),
                p = q(i - 1)
            ));
        }
        ctes.join(", ")
    }

    #[test]
    fn reused_names_and_nested_scopes_do_not_hide_an_expansion() {
        // Quoted upper-case names, then the same names lower-case and light.
        let light: Vec<String> = (0..=30)
            .map(|i| format!("a{i} AS (SELECT 1 AS x)"))
            .collect();
        let shadowed = format!(
            "WITH {}, {} SELECT count(*) FROM \"A30\"",
            chain("\"", "A", 30),
            light.join(", ")
        );
        assert!(!weighs_within(&shadowed, 10_000));
        // The heavy chain in a subquery's scope, a light one of the same names outside.
        let nested = format!(
            "WITH {} SELECT * FROM (WITH {} SELECT count(*) FROM t30) s",
            light.join(", ").replace('a', "t"),
            chain("", "t", 30)
        );
        assert!(!weighs_within(&nested, 10_000));
        // Defined inside another expression's body.
        let inner = format!(
            "WITH outer_cte AS (WITH {} SELECT x FROM t30) SELECT count(*) FROM outer_cte",
            chain("", "t", 30)
        );
        assert!(!weighs_within(&inner, 10_000));
        // An outer expression referenced from a nested scope.
        let outer = format!(
            "WITH {} SELECT * FROM (WITH y AS (SELECT * FROM t10 UNION ALL SELECT * FROM t10) \
             SELECT * FROM y) s",
            chain("", "t", 10)
        );
        assert!(!weighs_within(&outer, 10_000));
        let without_y = format!("WITH {} SELECT count(*) FROM t10", chain("", "t", 10));
        assert!(
            weighs_within(&without_y, 10_000),
            "the same chain alone is allowed"
        );
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
        // A name reused in another scope: the merged weights form a cycle, which grows
        // by one reference per round only.
        assert!(weighs_within(
            "WITH a AS (SELECT 1), b AS (SELECT * FROM a) \
             SELECT * FROM (WITH a AS (SELECT * FROM b) SELECT * FROM a) s",
            10_000
        ));
    }
}
