//! Unit tests of policy enforcement: masks, row filter binding, the boundary's
//! properties, and what a principal's view holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};
use datafusion::prelude::SessionContext;
use meshgate_catalog::{MaskKind, Principal, product_from_text};

use super::PolicyEngine;
use super::boundary::PolicyBoundaryExec;
use super::mask::{MaskHash, mask_expr, masked_type, reads_value};
use crate::product::{CompiledProduct, ProductHealth, RowFilterError, RowFilterTemplate};

fn people() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
            Arc::new(StringArray::from(vec![
                Some("Ada Lovelace"),
                None,
                Some("Bo"),
            ])),
            Arc::new(StringArray::from(vec!["north", "south", "north"])),
        ],
    )
    .expect("a valid batch")
}

/// `expr` evaluated over [`people`], as strings.
async fn evaluate(expr: Expr) -> Vec<Option<String>> {
    let ctx = SessionContext::new();
    let batches = ctx
        .read_batch(people())
        .and_then(|frame| frame.select(vec![expr]))
        .expect("the expression plans")
        .collect()
        .await
        .expect("the expression runs");
    batches
        .iter()
        .flat_map(|batch| {
            let column = arrow::compute::cast(batch.column(0), &DataType::Utf8).expect("cast");
            let strings = column
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("strings")
                .clone();
            (0..strings.len())
                .map(|i| (!strings.is_null(i)).then(|| strings.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn hash_udf(key: &[u8]) -> Arc<datafusion::logical_expr::ScalarUDF> {
    MaskHash::udf(key)
}

#[tokio::test]
async fn masks_replace_values_and_keep_nulls() {
    let hash = hash_udf(b"key-one");
    let utf8 = DataType::Utf8;
    let redact = mask_expr(MaskKind::Redact, "name", &utf8, &hash).unwrap();
    assert_eq!(
        evaluate(redact).await,
        vec![Some("REDACTED".into()), None, Some("REDACTED".into())]
    );
    let partial = mask_expr(MaskKind::Partial, "name", &utf8, &hash).unwrap();
    assert_eq!(
        evaluate(partial).await,
        vec![Some("***lace".into()), None, Some("***Bo".into())]
    );
    let null = mask_expr(MaskKind::Null, "name", &utf8, &hash).unwrap();
    assert_eq!(evaluate(null).await, vec![None, None, None]);
    // A non-string column under `redact` becomes null, and keeps its type.
    let redacted_id = mask_expr(MaskKind::Redact, "id", &DataType::Int64, &hash).unwrap();
    assert_eq!(evaluate(redacted_id).await, vec![None, None, None]);
    assert_eq!(
        masked_type(MaskKind::Redact, &DataType::Int64),
        DataType::Int64
    );
    assert_eq!(
        masked_type(MaskKind::Hash, &DataType::Int64),
        DataType::Utf8
    );
    assert_eq!(
        masked_type(MaskKind::Partial, &DataType::Utf8View),
        DataType::Utf8
    );
}

#[test]
fn masks_that_do_not_depend_on_the_value_do_not_read_it() {
    assert!(!reads_value(MaskKind::Null, &DataType::Utf8));
    assert!(!reads_value(MaskKind::Redact, &DataType::Int64));
    assert!(!reads_value(MaskKind::Partial, &DataType::Date32));
    assert!(reads_value(MaskKind::Redact, &DataType::Utf8));
    assert!(reads_value(MaskKind::Hash, &DataType::Int64));
}

#[tokio::test]
async fn hashes_are_keyed_stable_and_keep_the_key_out_of_the_plan() {
    let one = hash_udf(b"key-one");
    let two = hash_udf(b"key-two");
    let first = evaluate(mask_expr(MaskKind::Hash, "region", &DataType::Utf8, &one).unwrap()).await;
    let again = evaluate(mask_expr(MaskKind::Hash, "region", &DataType::Utf8, &one).unwrap()).await;
    let other = evaluate(mask_expr(MaskKind::Hash, "region", &DataType::Utf8, &two).unwrap()).await;
    assert_eq!(first, again, "one key, one hash per value");
    assert_eq!(
        first[0], first[2],
        "equal values hash alike (joins still work)"
    );
    assert_ne!(first[0], first[1]);
    assert_ne!(first, other, "another key, other hashes");
    let hex = first[0].as_deref().unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    let shown = format!(
        "{}",
        mask_expr(MaskKind::Hash, "region", &DataType::Utf8, &one).unwrap()
    );
    assert!(!shown.contains("key-one"), "{shown}");
}

fn contract() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("clearance", DataType::Int64, false),
    ])
}

fn compile(sql: &str) -> Result<RowFilterTemplate, RowFilterError> {
    RowFilterTemplate::compile(sql, &contract(), &SessionContext::new().state())
}

fn literals(expr: &Expr) -> Vec<ScalarValue> {
    let mut found = Vec::new();
    let _ = expr.apply(|e| {
        if let Expr::Literal(value, _) = e {
            found.push(value.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

use datafusion::common::tree_node::TreeNode;

#[test]
fn row_filters_bind_the_principals_attributes_as_typed_literals() {
    let filter = compile("region = principal.region AND clearance <= principal.level").unwrap();
    let mut nora = Principal::new("iss", "nora", ["clinician"]);
    nora.attributes.insert("region".into(), "north".into());
    nora.attributes.insert("level".into(), "3".into());
    let bound = literals(&filter.bind(&nora));
    assert!(
        bound.contains(&ScalarValue::Utf8(Some("north".into()))),
        "{bound:?}"
    );
    assert!(bound.contains(&ScalarValue::Int64(Some(3))), "{bound:?}");
    // Without the attribute, the comparison is with NULL: no row passes.
    let nobody = Principal::new("iss", "nobody", ["clinician"]);
    let unbound = literals(&filter.bind(&nobody));
    assert!(unbound.iter().all(ScalarValue::is_null), "{unbound:?}");
    // A value that does not read as the column's type binds as NULL too.
    let mut odd = nora.clone();
    odd.attributes.insert("level".into(), "high".into());
    assert!(literals(&filter.bind(&odd)).contains(&ScalarValue::Int64(None)));
}

#[test]
fn row_filters_that_cannot_apply_are_refused_with_the_reason() {
    assert!(matches!(
        compile("region = "),
        Err(RowFilterError::Parse { .. })
    ));
    assert!(matches!(
        compile("region = principal.\"a-b\""),
        Err(RowFilterError::BadAttribute { .. })
    ));
    assert!(matches!(
        compile("nope = 1"),
        Err(RowFilterError::Plan { .. })
    ));
    let not_boolean = compile("clearance + 1").unwrap_err();
    assert!(matches!(not_boolean, RowFilterError::NotBoolean { .. }));
    assert!(not_boolean.to_string().contains("not a boolean predicate"));
}

#[test]
fn the_boundary_is_an_opaque_leaf_without_statistics() {
    let schema = Arc::new(contract());
    let inner: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::clone(&schema)));
    let boundary: Arc<dyn ExecutionPlan> = Arc::new(PolicyBoundaryExec::new("d.p.t".into(), inner));
    assert!(
        boundary.children().is_empty(),
        "nothing can be pushed across it"
    );
    let statistics = StatisticsContext::new()
        .compute(boundary.as_ref(), &StatisticsArgs::new())
        .unwrap();
    assert!(statistics.num_rows.get_value().is_none(), "{statistics:?}");
    assert!(statistics.total_byte_size.get_value().is_none());
    let shown = datafusion::physical_plan::displayable(boundary.as_ref())
        .indent(true)
        .to_string();
    assert_eq!(shown.trim(), "PolicyBoundaryExec: table=d.p.t");
}

const PRODUCT: &str = r#"domain: d
product: p
version: 1.0.0
description: A product to test views.
owner: { team: t, contact: t@example.org }
tables:
  - name: people
    format: parquet
    location: file:///nowhere/people/
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: name, type: Utf8, nullable: true }
      - { name: region, type: Utf8, nullable: false }
policy:
  read: { any_role: [clinician, admin] }
  rows:
    - { filter: "region = principal.region", unless_role: [admin] }
  columns:
    name: { mask: redact, unless_role: [admin] }
"#;

fn compiled() -> CompiledProduct {
    let product = product_from_text(Path::new("/mesh"), Path::new("/mesh/d/p.yaml"), PRODUCT)
        .expect("a valid descriptor");
    let table: Arc<dyn TableProvider> =
        Arc::new(MemTable::try_new(people().schema(), vec![vec![people()]]).unwrap());
    let health = ProductHealth {
        fault: None,
        descriptor_error: None,
        descriptor_modified: None,
        checked_at: SystemTime::now(),
        tables: BTreeMap::new(),
    };
    CompiledProduct::compile(
        Arc::new(product),
        Arc::new(health),
        BTreeMap::from([("people".to_string(), table)]),
        &SessionContext::new().state(),
    )
    .expect("the policy compiles")
}

#[tokio::test]
async fn a_view_holds_what_the_principal_may_read_and_nothing_else() {
    let engine = PolicyEngine::new(Vec::new(), b"key");
    let products = [compiled()];
    let outsider = Principal::new("iss", "eve", ["analyst"]);
    assert!(
        engine.view(&outsider, products.iter()).is_empty(),
        "denied = absent"
    );

    let admin = Principal::new("iss", "root", ["admin"]);
    let views = engine.view(&admin, products.iter());
    let unrestricted = &views[0].tables["people"];
    assert!(
        unrestricted.downcast_ref::<MemTable>().is_some(),
        "an unrestricted table is the storage itself (pushdown reaches it)"
    );

    let mut nora = Principal::new("iss", "nora", ["clinician"]);
    nora.attributes.insert("region".into(), "north".into());
    let views = engine.view(&nora, products.iter());
    let secured = Arc::clone(&views[0].tables["people"]);
    assert!(secured.downcast_ref::<MemTable>().is_none());
    assert!(!views[0].access["people"].applied.is_empty());
    let ctx = SessionContext::new();
    ctx.register_table("people", secured).unwrap();
    let rows = ctx
        .sql("SELECT id, name FROM people ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(ids.values(), &[1, 3], "only the principal's region");
    let names = arrow::compute::cast(batch.column(1), &DataType::Utf8).unwrap();
    let names = names.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(names.value(0), "REDACTED");
}

#[test]
fn row_filters_that_call_changing_functions_say_so() {
    for sql in [
        "region = principal.region",
        "abs(clearance) < 3 AND upper(region) = 'N'",
    ] {
        assert!(compile(sql).unwrap().is_immutable(), "{sql}");
    }
    for sql in [
        "clearance < extract(year FROM now())",
        "random() < 0.5",
        "id > 0 AND to_unixtime(current_date) > 0",
    ] {
        assert!(!compile(sql).unwrap().is_immutable(), "{sql}");
    }
}
