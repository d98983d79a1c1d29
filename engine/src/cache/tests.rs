use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use super::*;
use crate::policy::PolicyEngine;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
}

fn batch(rows: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from_iter_values(0..rows))],
    )
    .unwrap()
}

fn config(max_bytes: u64, max_entry_bytes: u64) -> ResultCacheConfig {
    ResultCacheConfig {
        enabled: true,
        max_bytes,
        max_entry_bytes,
    }
}

const ANSWERS: [u8; 32] = [7; 32];

fn asked<'a>(sql: &'a str, tables: &'a [String], answers: &'a [u8; 32]) -> AskedStatement<'a> {
    AskedStatement {
        sql,
        bound: None,
        resolution: String::new(),
        tables,
        answers,
    }
}

fn key(sql: &str, tables: &[&str]) -> StatementKey {
    let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    StatementKey::new(&asked(sql, &tables, &ANSWERS))
}

fn put(cache: &ResultCache, key: &StatementKey, rows: i64) -> ResultKey {
    let result = ResultKey::of(key, &[1; 32]);
    let batch = batch(rows);
    let bytes = batch.get_array_memory_size() as u64;
    cache.put(
        result,
        schema(),
        vec![batch],
        bytes,
        Arc::clone(key.products()),
    );
    result
}

#[tokio::test]
async fn an_answer_kept_is_served_whole_and_counted() {
    let cache = ResultCache::new(&config(1 << 20, 1 << 16));
    let statement = key("SELECT n FROM d.p.t", &["d.p.t"]);
    let result = ResultKey::of(&statement, &[1; 32]);
    assert!(cache.get(&result).is_none());
    put(&cache, &statement, 100);
    let kept = cache.get(&result).expect("kept");
    let batches: Vec<RecordBatch> = kept.stream().try_collect().await.unwrap();
    assert_eq!(batches, vec![batch(100)]);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stored), (1, 1, 1));
    assert_eq!(stats.entries, 1);
    assert!(stats.bytes >= 800, "{stats:?}");
}

#[test]
fn another_snapshot_another_view_or_other_values_is_another_key() {
    let statement = key("SELECT n FROM d.p.t WHERE n = $1", &["d.p.t"]);
    assert_ne!(
        ResultKey::of(&statement, &[1; 32]),
        ResultKey::of(&statement, &[2; 32])
    );
    let tables = vec!["d.p.t".to_string()];
    let sql = "SELECT n FROM d.p.t WHERE n = $1";
    let other_view = StatementKey::new(&asked(sql, &tables, &[8; 32]));
    let one = [ScalarValue::Int64(Some(1))];
    let two = [ScalarValue::Int64(Some(2))];
    let bound = |values| {
        StatementKey::new(&AskedStatement {
            bound: Some(values),
            ..asked(sql, &tables, &ANSWERS)
        })
    };
    let elsewhere = StatementKey::new(&AskedStatement {
        resolution: "catalog d".into(),
        ..asked(sql, &tables, &ANSWERS)
    });
    let keys: std::collections::HashSet<ResultKey> = [
        &statement,
        &other_view,
        &bound(&one),
        &bound(&two),
        &elsewhere,
    ]
    .into_iter()
    .map(|k| ResultKey::of(k, &[1; 32]))
    .collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(
        ResultKey::of(&bound(&one), &[1; 32]),
        ResultKey::of(&bound(&one), &[1; 32])
    );
}

#[test]
fn answers_beyond_the_budgets_are_not_kept() {
    let one = batch(1000).get_array_memory_size() as u64;
    let cache = ResultCache::new(&config(one * 8, one));
    put(&cache, &key("a", &["d.p.t"]), 2000);
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().too_large, 1);
    for i in 0..64 {
        put(&cache, &key(&format!("q{i}"), &["d.p.t"]), 1000);
    }
    let stats = cache.stats();
    assert!(stats.bytes <= one * 8, "{stats:?}");
    assert!(stats.entries >= 1 && stats.entries <= 8, "{stats:?}");
}

#[test]
fn a_cache_that_is_off_keeps_nothing() {
    let cache = ResultCache::new(&ResultCacheConfig {
        enabled: false,
        ..ResultCacheConfig::default()
    });
    let statement = key("a", &["d.p.t"]);
    let result = put(&cache, &statement, 10);
    assert!(!cache.enabled());
    assert!(cache.get(&result).is_none());
    assert_eq!(cache.stats(), ResultCacheStats::default());
}

#[test]
fn a_changed_product_drops_the_answers_that_read_it() {
    let cache = ResultCache::new(&config(1 << 20, 1 << 16));
    let reads_p = key("a", &["d.p.t", "e.q.u"]);
    let reads_q = key("b", &["e.q.u"]);
    let p = put(&cache, &reads_p, 10);
    let q = put(&cache, &reads_q, 10);
    let factory = || {
        crate::session::SessionFactory::new(
            SessionContext::new().state(),
            Vec::new(),
            PolicyEngine::new(Vec::new(), b"key"),
        )
    };
    let first = factory().with_changes(BTreeSet::from(["d.p".to_string()]));
    let older = factory().with_changes(BTreeSet::from(["e.q".to_string()]));
    let newer = factory().with_changes(BTreeSet::from(["d.p".to_string()]));
    cache.follow(&newer);
    assert!(cache.get(&p).is_none());
    assert!(cache.get(&q).is_some());
    // A factory older than one already followed changes nothing.
    cache.follow(&first);
    cache.follow(&older);
    assert!(cache.get(&q).is_some());
    assert_eq!(cache.stats().invalidated, 1);
}

#[test]
fn functions_that_may_change_keep_no_answer() {
    let ctx = SessionContext::new();
    let plan =
        |sql: &str| futures::executor::block_on(ctx.state().create_logical_plan(sql)).unwrap();
    for sql in [
        "SELECT now()",
        "SELECT random()",
        "SELECT 1 WHERE 2 > (SELECT random())",
        "SELECT $1",
    ] {
        assert!(calls_changing_functions(&plan(sql)), "{sql}");
    }
    for sql in [
        "SELECT abs(-1), upper('a')",
        "SELECT count(*) FROM (VALUES (1)) t(a)",
        "SELECT row_number() OVER () FROM (VALUES (1)) t(a)",
    ] {
        assert!(!calls_changing_functions(&plan(sql)), "{sql}");
    }
}

fn stream_of(
    items: Vec<datafusion::error::Result<RecordBatch>>,
) -> datafusion::execution::SendableRecordBatchStream {
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema(),
            futures::stream::iter(items),
        ),
    )
}

#[tokio::test]
async fn an_answer_is_kept_only_once_it_has_streamed_whole_without_error() {
    let cache = Arc::new(ResultCache::new(&config(1 << 20, 1 << 16)));
    let statement = key("s", &["d.p.t"]);
    let fill = |snapshot: u8| {
        let result = ResultKey::of(&statement, &[snapshot; 32]);
        let filling = Filling::new(Arc::clone(&cache), result, Arc::clone(statement.products()));
        (result, filling)
    };

    let (whole, filling) = fill(1);
    let sent: Vec<RecordBatch> = filling
        .around(stream_of(vec![Ok(batch(3)), Ok(batch(4))]))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(sent, vec![batch(3), batch(4)]);
    let kept: Vec<RecordBatch> = cache
        .get(&whole)
        .unwrap()
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(kept, sent);

    let (failed, filling) = fill(2);
    let error = datafusion::error::DataFusionError::Execution("storage went away".into());
    let outcome: datafusion::error::Result<Vec<RecordBatch>> = filling
        .around(stream_of(vec![Ok(batch(3)), Err(error)]))
        .try_collect()
        .await;
    assert!(outcome.is_err());
    assert!(cache.get(&failed).is_none());

    let (left, filling) = fill(3);
    let mut stream = filling.around(stream_of(vec![Ok(batch(3)), Ok(batch(4))]));
    futures::StreamExt::next(&mut stream)
        .await
        .unwrap()
        .unwrap();
    assert!(cache.stats().filling > 0, "the first batch is kept aside");
    drop(stream);
    assert!(cache.get(&left).is_none());
    assert_eq!(
        cache.stats().filling,
        0,
        "a stream dropped early holds nothing"
    );
}

#[tokio::test]
async fn answers_kept_aside_while_streaming_stay_within_the_budget() {
    let one = batch(1000).get_array_memory_size() as u64;
    let cache = Arc::new(ResultCache::new(&config(one * 2, one * 2)));
    let streams: Vec<_> = (0..3u8)
        .map(|i| {
            let statement = key(&format!("s{i}"), &["d.p.t"]);
            let result = ResultKey::of(&statement, &[i; 32]);
            Filling::new(Arc::clone(&cache), result, Arc::clone(statement.products()))
                .around(stream_of(vec![Ok(batch(1000))]))
        })
        .collect();
    let mut streams: Vec<_> = streams;
    for stream in &mut streams {
        futures::StreamExt::next(stream).await.unwrap().unwrap();
    }
    assert!(cache.stats().filling <= one * 2, "{:?}", cache.stats());
    drop(streams);
    assert_eq!(cache.stats().filling, 0);
}
