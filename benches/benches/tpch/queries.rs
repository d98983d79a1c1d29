//! The queries: TPC-H 1-22 (validation parameters of the specification, date arithmetic
//! folded into literals so every engine reads the same text, Q15's view as a CTE) and a
//! micro set of the shapes that stress a gateway rather than an engine.
//!
//! Tables are written `{lineitem}` and resolved to their qualified mesh names, which every
//! path (gateway, in-process DataFusion, DuckDB) serves under the same three-part names.

use crate::data::TABLES;

/// One benchmark query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// Short name (`q01`, `select_1`, ...).
    pub(crate) name: String,
    /// The SQL every path runs.
    pub(crate) sql: String,
    /// TPC-H (false: the micro set).
    pub(crate) tpch: bool,
    /// Whether its answer is checked against DuckDB's (off only for results too large
    /// to compare row by row in Python; their row counts are still compared).
    pub(crate) check: bool,
}

/// TPC-H 1-22 and the micro set at scale factor `sf`.
pub(crate) fn all(sf: f64) -> Vec<Query> {
    let mut out = Vec::new();
    for (i, text) in TPCH.iter().enumerate() {
        let text = text.replace("{fraction}", &format!("{}", 0.0001 / sf));
        out.push(Query {
            name: format!("q{:02}", i + 1),
            sql: resolve(&text),
            tpch: true,
            check: true,
        });
    }
    // Keys in the middle of the tables, present at every scale (order keys use the first
    // 8 of every 32).
    let customer = ((75_000.0 * sf) as u64).max(1);
    let order = ((750_000.0 * sf / 8.0) as u64) * 32 + 1;
    for (name, text, check) in MICRO {
        let text = text
            .replace("{customer_key}", &customer.to_string())
            .replace("{order_key}", &order.to_string());
        out.push(Query {
            name: name.to_string(),
            sql: resolve(&text),
            tpch: false,
            check: *check,
        });
    }
    out
}

/// The small query of the concurrency runs: a point lookup of customer `key`.
pub(crate) fn small(key: u64) -> String {
    resolve(&format!(
        "SELECT c_custkey, c_name, c_acctbal FROM {{customer}} WHERE c_custkey = {key}"
    ))
}

fn resolve(text: &str) -> String {
    let mut sql = text.to_string();
    for table in TABLES {
        sql = sql.replace(&format!("{{{}}}", table.name), &table.qualified());
    }
    assert!(!sql.contains('{'), "unresolved table in {sql}");
    sql
}

const MICRO: &[(&str, &str, bool)] = &[
    ("select_1", "SELECT 1 AS one", true),
    (
        "point_lookup",
        "SELECT * FROM {customer} WHERE c_custkey = {customer_key}",
        true,
    ),
    (
        "point_lookup_delta",
        "SELECT * FROM {orders} WHERE o_orderkey = {order_key}",
        true,
    ),
    ("limit_1_wide", "SELECT * FROM {lineitem} LIMIT 1", false),
    ("count_star", "SELECT count(*) AS n FROM {lineitem}", true),
    (
        "one_column_scan",
        "SELECT sum(l_extendedprice) AS s FROM {lineitem}",
        true,
    ),
    ("select_star_lineitem", "SELECT * FROM {lineitem}", false),
    (
        "group_by_1m",
        "SELECT l_orderkey, sum(l_quantity) AS qty FROM {lineitem} GROUP BY l_orderkey",
        false,
    ),
    (
        "string_projection",
        "SELECT upper(c_name) AS name, concat(c_address, ', ', c_phone) AS contact, \
         substr(c_comment, 1, 40) AS note FROM {customer}",
        false,
    ),
];

/// TPC-H 1-22, one file each in `benches/queries/tpch/`, which the Python suite's
/// distributed-vs-local test reads too.
const TPCH: [&str; 22] = [
    include_str!("../../queries/tpch/q01.sql"),
    include_str!("../../queries/tpch/q02.sql"),
    include_str!("../../queries/tpch/q03.sql"),
    include_str!("../../queries/tpch/q04.sql"),
    include_str!("../../queries/tpch/q05.sql"),
    include_str!("../../queries/tpch/q06.sql"),
    include_str!("../../queries/tpch/q07.sql"),
    include_str!("../../queries/tpch/q08.sql"),
    include_str!("../../queries/tpch/q09.sql"),
    include_str!("../../queries/tpch/q10.sql"),
    include_str!("../../queries/tpch/q11.sql"),
    include_str!("../../queries/tpch/q12.sql"),
    include_str!("../../queries/tpch/q13.sql"),
    include_str!("../../queries/tpch/q14.sql"),
    include_str!("../../queries/tpch/q15.sql"),
    include_str!("../../queries/tpch/q16.sql"),
    include_str!("../../queries/tpch/q17.sql"),
    include_str!("../../queries/tpch/q18.sql"),
    include_str!("../../queries/tpch/q19.sql"),
    include_str!("../../queries/tpch/q20.sql"),
    include_str!("../../queries/tpch/q21.sql"),
    include_str!("../../queries/tpch/q22.sql"),
];
