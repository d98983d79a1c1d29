//! The SQL a scan of a remote table sends its node, produced from a plan by
//! DataFusion's unparser in the node's dialect (never by pasting text together).

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ScalarValue, TableReference};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, LogicalTableSource, Operator};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{
    CustomDialectBuilder, DefaultDialect, Dialect, DuckDBDialect, PostgreSqlDialect,
};

use super::config::SqlDialect;

/// The unparser dialect of `dialect`.
pub(crate) fn unparser_dialect(dialect: SqlDialect) -> Box<dyn Dialect> {
    match dialect {
        SqlDialect::Datafusion => Box::new(DefaultDialect {}),
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
        SqlDialect::Duckdb => Box::new(DuckDBDialect::new()),
        SqlDialect::Spark => Box::new(
            CustomDialectBuilder::new()
                .with_identifier_quote_style('`')
                .build(),
        ),
    }
}

/// The remote name `parts` (`[catalog.][schema.]table`) as a table reference.
pub(crate) fn remote_reference(parts: &[String]) -> TableReference {
    match parts {
        [catalog, schema, table] => {
            TableReference::full(catalog.as_str(), schema.as_str(), table.as_str())
        }
        [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
        [table, ..] => TableReference::bare(table.as_str()),
        [] => TableReference::bare(""),
    }
}

/// `SELECT <columns of projection> FROM <remote> WHERE <filters> LIMIT <limit>` over a
/// table of `schema` (the node's), in `dialect`.
pub(crate) fn scan_statement(
    remote: &TableReference,
    schema: &SchemaRef,
    projection: &[usize],
    filters: &[Expr],
    limit: Option<usize>,
    dialect: &dyn Dialect,
) -> Result<String> {
    let source = Arc::new(LogicalTableSource::new(Arc::clone(schema)));
    let mut builder = LogicalPlanBuilder::scan_with_filters(
        remote.clone(),
        source,
        Some(projection.to_vec()),
        filters.to_vec(),
    )?;
    if limit.is_some() {
        builder = builder.limit(0, limit)?;
    }
    let plan = builder.build()?;
    Ok(Unparser::new(dialect).plan_to_sql(&plan)?.to_string())
}

/// Whether `sql` (made by the unparser) is exactly one statement that reads back as
/// itself in the node's `dialect`: no comment anywhere, and parsing it then printing it
/// gives the same text. An identifier or a literal whose text escaped its quotes shows
/// here (as a comment, another statement, or another tree), so no such statement is ever
/// sent: the last check before a node, whatever let the text through.
pub(crate) fn sound_statement(sql: &str, dialect: SqlDialect) -> bool {
    use datafusion::sql::sqlparser::dialect::{
        Dialect as ParserDialect, DuckDbDialect, GenericDialect, HiveDialect, PostgreSqlDialect,
    };
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

    let parser: Box<dyn ParserDialect> = match dialect {
        SqlDialect::Datafusion => Box::new(GenericDialect {}),
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
        SqlDialect::Duckdb => Box::new(DuckDbDialect {}),
        SqlDialect::Spark => Box::new(HiveDialect {}),
    };
    let Ok(tokens) = Tokenizer::new(parser.as_ref(), sql).tokenize() else {
        return false;
    };
    let commented = tokens.iter().any(|t| {
        matches!(
            t,
            Token::Whitespace(
                Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)
            )
        )
    });
    if commented {
        return false;
    }
    match Parser::parse_sql(parser.as_ref(), sql) {
        Ok(statements) => statements.len() == 1 && statements[0].to_string() == sql,
        Err(_) => false,
    }
}

/// `SELECT * FROM <remote> LIMIT 0`: asks a node for a table's schema when it does not
/// list it.
pub(crate) fn probe_statement(remote: &[String], dialect: &dyn Dialect) -> String {
    let name: Vec<String> = remote
        .iter()
        .map(|part| match dialect.identifier_quote_style(part) {
            Some(quote) => {
                let doubled = part.replace(quote, &format!("{quote}{quote}"));
                format!("{quote}{doubled}{quote}")
            }
            None => part.clone(),
        })
        .collect();
    format!("SELECT * FROM {} LIMIT 0", name.join("."))
}

/// Whether `filter` means the same on a node speaking `dialect` as here, so the node
/// may apply it in our place: columns, literals whose text cannot change their value,
/// comparisons, boolean logic, null tests, `IN` lists, `BETWEEN` and `LIKE`. Functions,
/// casts and everything else are applied here. On a node that is not DataFusion, text is
/// only compared for equality (ordering and `LIKE` follow the node's collation and
/// escapes). A text literal holding a quote or a backslash is never sent: its SQL text
/// could end the literal early (and run the rest as SQL on the node).
pub(crate) fn portable_filter(filter: &Expr, dialect: SqlDialect) -> bool {
    let portable = |e: &Expr| portable_filter(e, dialect);
    let native = dialect == SqlDialect::Datafusion;
    match filter {
        Expr::Column(_) => true,
        Expr::Literal(value, _) => portable_literal(value),
        Expr::BinaryExpr(binary) => {
            let ordering = matches!(
                binary.op,
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            );
            portable_operator(binary.op)
                && (native || !ordering || orders_by_value(&binary.left, &binary.right))
                && portable(&binary.left)
                && portable(&binary.right)
        }
        Expr::Not(inner)
        | Expr::IsNull(inner)
        | Expr::IsNotNull(inner)
        | Expr::IsTrue(inner)
        | Expr::IsFalse(inner)
        | Expr::IsNotTrue(inner)
        | Expr::IsNotFalse(inner) => portable(inner),
        Expr::Between(between) => {
            (native || orders_by_value(&between.low, &between.high))
                && portable(&between.expr)
                && portable(&between.low)
                && portable(&between.high)
        }
        Expr::InList(list) => {
            list.list.len() <= 1000 && portable(&list.expr) && list.list.iter().all(portable)
        }
        Expr::Like(like) => {
            native
                && !like.case_insensitive
                && like.escape_char.is_none()
                && portable(&like.expr)
                && portable(&like.pattern)
        }
        _ => false,
    }
}

/// Whether an ordering between `a` and `b` compares values every engine orders alike:
/// one side is a number or a date literal (so the other is not text either).
fn orders_by_value(a: &Expr, b: &Expr) -> bool {
    let by_value = |e: &Expr| match e {
        Expr::Literal(value, _) => !matches!(
            value.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        _ => false,
    };
    by_value(a) || by_value(b)
}

fn portable_operator(op: Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom
    )
}

/// Literals whose SQL text reads back as the same value everywhere: a decimal prints as
/// a bare number that other engines read as a float, and a timestamp's zone does not
/// survive, so neither is sent; nor is text holding a quote or a backslash.
fn portable_literal(value: &ScalarValue) -> bool {
    match value {
        // sqlparser writes a quote that follows a backslash, and a doubled quote, as they
        // are (it cannot tell them from escapes already made): such text could end the
        // literal early, or reach the node as another value.
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => portable_text(text),
        ScalarValue::Boolean(Some(_))
        | ScalarValue::Int8(Some(_))
        | ScalarValue::Int16(Some(_))
        | ScalarValue::Int32(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::UInt8(Some(_))
        | ScalarValue::UInt16(Some(_))
        | ScalarValue::UInt32(Some(_))
        | ScalarValue::Date32(Some(_)) => true,
        _ => false,
    }
}

/// Text whose literal cannot end early or hide a line: no quote, no backslash, no
/// control character (a newline would end a `--` comment, were one ever written).
pub(crate) fn portable_text(text: &str) -> bool {
    !text.contains(['\\', '\'']) && !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{col, ident, lit};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("patient_id", DataType::Int64, false),
            Field::new("Region", DataType::Utf8, true),
            Field::new("select", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn a_scan_is_one_statement_with_its_projection_filters_and_limit() {
        let remote = remote_reference(&["clinical".into(), "encounters".into(), "visits".into()]);
        let sql = scan_statement(
            &remote,
            &schema(),
            &[0, 1, 2],
            &[
                col("patient_id").gt(lit(7_i64)),
                ident("Region").eq(lit("north")),
            ],
            Some(10),
            &DefaultDialect {},
        )
        .unwrap();
        assert_eq!(
            sql,
            // Columns are qualified by the table's own name only (no four-part names,
            // which engines other than DataFusion refuse).
            "SELECT visits.patient_id, visits.\"Region\", visits.\"select\" \
             FROM clinical.encounters.visits \
             WHERE ((visits.patient_id > 7) AND (visits.\"Region\" = 'north')) LIMIT 10"
        );
    }

    #[test]
    fn spark_nodes_get_back_quoted_names() {
        let dialect = unparser_dialect(SqlDialect::Spark);
        let sql = scan_statement(
            &remote_reference(&["t".into()]),
            &schema(),
            &[2],
            &[],
            None,
            dialect.as_ref(),
        )
        .unwrap();
        assert_eq!(sql, "SELECT `t`.`select` FROM `t`");
        assert_eq!(
            probe_statement(&["a`b".into()], dialect.as_ref()),
            "SELECT * FROM `a``b` LIMIT 0"
        );
    }

    #[test]
    fn only_filters_that_read_the_same_on_the_node_are_sent() {
        let dialects = [
            SqlDialect::Datafusion,
            SqlDialect::Postgres,
            SqlDialect::Duckdb,
            SqlDialect::Spark,
        ];
        let everywhere = |f: &Expr| dialects.iter().all(|d| portable_filter(f, *d));
        assert!(everywhere(&col("a").gt(lit(1_i64)).and(col("b").is_null())));
        assert!(everywhere(
            &col("a").in_list(vec![lit("x"), lit("y")], false)
        ));
        let decimal = Expr::Literal(ScalarValue::Decimal128(Some(150), 5, 2), None);
        let native = |f: &Expr| portable_filter(f, SqlDialect::Datafusion);
        assert!(!native(&col("a").gt(decimal)));
        assert!(!native(&col("a").gt(lit(1.5_f64))));
        assert!(!native(
            &datafusion::functions::expr_fn::upper(col("a")).eq(lit("X"))
        ));
        assert!(!native(&(col("a") + lit(1_i64)).gt(lit(2_i64))));
        assert!(!native(
            &col("a").eq(Expr::Literal(ScalarValue::Utf8(None), None))
        ));
    }

    #[test]
    fn text_is_only_compared_for_equality_beyond_datafusion() {
        let spark = |f: &Expr| portable_filter(f, SqlDialect::Spark);
        let ordered = col("name").gt(lit("m"));
        assert!(portable_filter(&ordered, SqlDialect::Datafusion));
        assert!(!spark(&ordered));
        assert!(!portable_filter(
            &col("name").like(lit("a%")),
            SqlDialect::Postgres
        ));
        assert!(spark(&col("n").between(lit(1_i64), lit(9_i64))));
        assert!(!spark(&col("a").lt(col("b"))));
    }

    #[test]
    fn text_that_could_end_its_literal_never_reaches_a_node() {
        let dialects = [
            SqlDialect::Datafusion,
            SqlDialect::Postgres,
            SqlDialect::Duckdb,
            SqlDialect::Spark,
        ];
        for text in [
            "x\\') UNION ALL SELECT secret FROM t --",
            "x'' OR ''a''=''a",
            "it's",
        ] {
            let filter = col("name").eq(lit(text));
            for dialect in dialects {
                assert!(!portable_filter(&filter, dialect), "{text} to {dialect:?}");
            }
        }
        assert!(portable_filter(
            &col("name").eq(lit("north")),
            SqlDialect::Spark
        ));
    }
}
