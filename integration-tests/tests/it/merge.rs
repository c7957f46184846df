//! Merges on the S3 server: upserts, clauses, SCD type 2, replays, bad sources,
//! and a merge racing a compactor and appenders.

use std::collections::BTreeMap;
use std::sync::Arc;

use sediment::arrow::array::{ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sediment::{
    CompactOptions, ErrorKind, MatchedAction, NotMatchedAction, NotMatchedBySourceAction, OpenOptions, Scd2Options,
    Table, WriteOptions,
};

use crate::common::{canonical_rows, s3_uri, table_rows};

/// An order: id, customer, status, amount; partitioned by order date.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: i64,
    pub customer: i64,
    pub status: String,
    pub amount: f64,
    pub day: i32,
}

pub fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("order_date", DataType::Date32, true),
    ]))
}

pub fn orders_batch(orders: &[Order]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.id))),
        Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.customer))),
        Arc::new(StringArray::from_iter_values(orders.iter().map(|o| o.status.as_str()))),
        Arc::new(Float64Array::from_iter_values(orders.iter().map(|o| o.amount))),
        Arc::new(Date32Array::from_iter_values(orders.iter().map(|o| o.day))),
    ];
    RecordBatch::try_new(orders_schema(), columns).unwrap()
}

/// Orders `ids`, 100 per day starting at day 19_000 (2022-01-08).
pub fn orders(ids: std::ops::Range<i64>, status: &str) -> Vec<Order> {
    ids.map(|id| Order {
        id,
        customer: id % 7,
        status: status.to_string(),
        amount: id as f64 * 1.5,
        day: 19_000 + (id / 100) as i32,
    })
    .collect()
}

/// The model's rows, canonicalized like a table's.
pub fn model_rows(model: &BTreeMap<i64, Order>) -> Vec<String> {
    let all: Vec<Order> = model.values().cloned().collect();
    canonical_rows(&[orders_batch(&all)])
}

async fn orders_table(uri: &str, days: i64) -> (Table, BTreeMap<i64, Order>) {
    orders_in_parts(uri, (0..days).map(|day| day * 100..(day + 1) * 100), false).await
}

/// A table of "new" orders partitioned by day, one append per part of ids (with
/// deletion vectors enabled if asked), and its model.
pub async fn orders_in_parts(
    uri: &str,
    parts: impl IntoIterator<Item = std::ops::Range<i64>>,
    deletion_vectors: bool,
) -> (Table, BTreeMap<i64, Order>) {
    let mut table = Table::open_or_new(uri, Default::default()).await.unwrap();
    let mut model = BTreeMap::new();
    for part in parts {
        let batch = orders(part, "new");
        for o in &batch {
            model.insert(o.id, o.clone());
        }
        let mut options = WriteOptions::append().partition_by(["order_date"]);
        if deletion_vectors {
            options = options.table_property("delta.enableDeletionVectors", "true");
        }
        table.write([orders_batch(&batch)], options).await.unwrap();
    }
    (table, model)
}

#[tokio::test]
async fn upsert_rewrites_only_files_holding_matched_keys() {
    let uri = s3_uri("merge-upsert");
    let (mut table, mut model) = orders_table(&uri, 3).await;
    let before_version = table.version().unwrap();

    // 10 updates to day 2 (ids 250..260) and 5 new orders.
    let mut source = orders(250..260, "shipped");
    source.extend(orders(300..305, "new"));
    let report = table.upsert([orders_batch(&source)], ["order_id"]).await.unwrap();
    for o in &source {
        model.insert(o.id, o.clone());
    }
    assert_eq!(report.files_considered, 3);
    assert_eq!(report.files_pruned, 2, "the files of ids 0..200 hold no source key: {report:?}");
    assert_eq!(report.files_read, 1);
    assert_eq!(report.files_rewritten, 1);
    assert_eq!(report.rows_updated, 10);
    assert_eq!(report.rows_inserted, 5);
    assert_eq!(report.rows_copied, 90);
    assert_eq!(report.rows_deleted, 0);
    assert!(report.bytes_written > 0);
    assert_eq!(table_rows(&table).await, model_rows(&model));
    let history = table.history(Some(1)).await.unwrap();
    assert_eq!(history[0].operation.as_deref(), Some("MERGE"));

    // The same source again: every matched row is identical, nothing is committed.
    let version = table.version();
    let report = table.upsert([orders_batch(&source)], ["order_id"]).await.unwrap();
    assert_eq!(report.version, None, "{report:?}");
    assert_eq!(report.rows_unchanged, 15);
    assert_eq!(report.files_rewritten, 0);
    assert_eq!(table.version(), version);

    // A key set between two files' ranges prunes by the exact keys, not the range:
    // ids 50 and 150 span files 0 and 1 but a source of {99, 250} skips file 1.
    let source = vec![
        Order { status: "x".into(), ..orders(99..100, "")[0].clone() },
        Order { status: "y".into(), ..orders(250..251, "")[0].clone() },
    ];
    let report = table.upsert([orders_batch(&source)], ["order_id"]).await.unwrap();
    for o in &source {
        model.insert(o.id, o.clone());
    }
    assert_eq!(report.files_read, 2, "{report:?}");
    assert_eq!(table_rows(&table).await, model_rows(&model));

    // Time travel still returns the rows before the merges.
    let old = Table::open_with(&uri, OpenOptions::new().version(before_version)).await.unwrap();
    let original: BTreeMap<i64, Order> = orders(0..300, "new").into_iter().map(|o| (o.id, o)).collect();
    assert_eq!(table_rows(&old).await, model_rows(&original));
}

async fn replay_merge(table: &mut Table, source: &[Order]) -> sediment::MergeReport {
    table
        .merge([orders_batch(source)])
        .on(["order_id"])
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_insert_all()
        .app_transaction("orders-loader", 7)
        .execute()
        .await
        .unwrap()
}

#[tokio::test]
async fn replayed_batches_commit_nothing() {
    let uri = s3_uri("merge-replay");
    let (mut table, mut model) = orders_table(&uri, 2).await;
    let source = orders(150..160, "paid");
    let first = replay_merge(&mut table, &source).await;
    assert!(first.version.is_some() && !first.replayed);
    for o in &source {
        model.insert(o.id, o.clone());
    }
    // The loader crashed after committing and sends batch 7 again (even changed).
    let version = table.version();
    let again = replay_merge(&mut table, &orders(150..160, "changed")).await;
    assert!(again.replayed, "{again:?}");
    assert_eq!(table.version(), version);
    assert_eq!(table.app_transaction_version("orders-loader").await.unwrap(), Some(7));
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

#[tokio::test]
async fn clauses_apply_in_order_with_conditions() {
    let uri = s3_uri("merge-clauses");
    let (mut table, mut model) = orders_table(&uri, 2).await;
    // Source rows carry an `op` column the table does not have: 'D' deletes.
    let changes = orders(90..110, "shipped");
    let ops: Vec<&str> = (90..110).map(|id| if id % 5 == 0 { "D" } else { "U" }).collect();
    let mut new = orders(200..203, "new");
    new[1].status = "skip".into();
    let all: Vec<Order> = changes.iter().chain(&new).cloned().collect();
    let op_column: Vec<&str> = ops.iter().copied().chain(["I", "I", "I"]).collect();
    let batch = orders_batch(&all);
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(op_column)));
    let mut fields: Vec<Field> = orders_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("op", DataType::Utf8, false));
    let source = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();

    let report = table
        .merge([source])
        .on(["order_id"])
        .when_matched_if("source.op = 'D'", MatchedAction::Delete)
        // Only raise amounts; `ignore` stops later clauses for id 91.
        .when_matched_if("target.order_id = 91", MatchedAction::Ignore)
        .when_matched(MatchedAction::Update(vec![
            ("status".into(), "source.status".into()),
            ("amount".into(), "target.amount + 1".into()),
        ]))
        .when_not_matched_if("source.status <> 'skip'", NotMatchedAction::InsertAll)
        // Orders of day 0 below id 10 that the source does not mention are cancelled.
        .when_not_matched_by_source_if(
            "target.order_id < 10",
            NotMatchedBySourceAction::Update(vec![("status".into(), "'cancelled'".into())]),
        )
        .execute()
        .await
        .unwrap();
    for (o, op) in changes.iter().zip(&ops) {
        if *op == "D" {
            model.remove(&o.id);
        } else if o.id != 91 {
            let row = model.get_mut(&o.id).unwrap();
            row.status = o.status.clone();
            row.amount += 1.0;
        }
    }
    for o in new.iter().filter(|o| o.status != "skip") {
        model.insert(o.id, o.clone());
    }
    for id in 0..10 {
        model.get_mut(&id).unwrap().status = "cancelled".into();
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
    assert_eq!(report.rows_deleted, 4);
    assert_eq!(report.rows_updated, 15 + 10);
    assert_eq!(report.rows_inserted, 2);
    assert_eq!(report.files_pruned, 0, "not-matched-by-source reads every file");
}

#[tokio::test]
async fn bad_sources_are_refused_naming_the_problem() {
    let uri = s3_uri("merge-bad");
    let (mut table, model) = orders_table(&uri, 1).await;
    let version = table.version();
    let check = |err: sediment::Error, needle: &str| {
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(needle), "expected {needle:?} in: {err}");
    };

    // Duplicate keys name the key; with a dedupe column the latest row wins.
    let mut dup = orders(5..7, "a");
    dup.push(Order { status: "b".into(), amount: 99.0, ..dup[0].clone() });
    let err = table.upsert([orders_batch(&dup)], ["order_id"]).await.unwrap_err();
    check(err, "order_id = 5");
    let report = table
        .merge([orders_batch(&dup)])
        .on(["order_id"])
        .dedupe_by("amount")
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_insert_all()
        .execute()
        .await
        .unwrap();
    assert_eq!(report.source_duplicates_dropped, 1);
    let (batches, _) = crate::common::ScanRun::run(table.scan().filter("order_id = 5")).await;
    assert!(canonical_rows(&batches)[0].contains("status=b"), "{:?}", canonical_rows(&batches));
    let version_after_dedupe = table.version();
    assert!(version_after_dedupe > version);

    // Null keys.
    let nulls = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("order_id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
    )
    .unwrap();
    check(table.upsert([nulls], ["order_id"]).await.unwrap_err(), "null key `order_id`");
    // A column of the wrong type.
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, false),
            Field::new("amount", DataType::Utf8, true),
        ])),
        vec![Arc::new(Int64Array::from(vec![1])), Arc::new(StringArray::from(vec!["lots"]))],
    )
    .unwrap();
    check(table.upsert([wrong], ["order_id"]).await.unwrap_err(), "`amount`");
    // A source column the table lacks and no clause uses.
    let extra = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, false),
            Field::new("colour", DataType::Utf8, true),
        ])),
        vec![Arc::new(Int64Array::from(vec![1])), Arc::new(StringArray::from(vec!["red"]))],
    )
    .unwrap();
    check(table.upsert([extra], ["order_id"]).await.unwrap_err(), "`colour`");
    // Malformed expressions, unknown key columns, a missing non-null column on insert.
    let good = orders_batch(&orders(1..2, "z"));
    let err = table
        .merge([good.clone()])
        .on(["order_id"])
        .when_matched_if("source.amount >>> 2", MatchedAction::Delete)
        .execute()
        .await
        .unwrap_err();
    check(err, "invalid condition");
    let err = table.upsert([good.clone()], ["nope"]).await.unwrap_err();
    check(err, "`nope`");
    let err = table
        .merge([good.clone()])
        .on(["order_id"])
        .when_matched(MatchedAction::Update(vec![("amount".into(), "source.status".into())]))
        .execute()
        .await
        .unwrap_err();
    check(err, "`amount`");
    let no_id = good.project(&[1, 2]).unwrap();
    check(table.upsert([no_id], ["customer_id"]).await.unwrap_err(), "`order_id`");

    assert_eq!(table.version(), version_after_dedupe, "nothing committed by the refused merges");
    let fresh = Table::open(&uri).await.unwrap();
    assert_eq!(fresh.version(), version_after_dedupe);
    assert_eq!(fresh.orphan_files().await.unwrap().len(), 0, "refused merges leave no files");
    drop(model);
}

/// A dimension table for SCD2: customer, city, tier, valid_from, valid_to, is_current.
/// customer, city, tier, valid_from (s), valid_to (s), is_current.
pub(crate) type DimensionRow<'a> = (i64, &'a str, &'a str, i64, Option<i64>, bool);

pub(crate) fn dimension(rows: &[DimensionRow]) -> RecordBatch {
    let ts = |v: i64| v * 1_000_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("tier", DataType::Utf8, true),
        Field::new(
            "valid_from",
            DataType::Timestamp(sediment::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "valid_to",
            DataType::Timestamp(sediment::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("is_current", DataType::Boolean, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(
            sediment::arrow::array::TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| ts(r.3)))
                .with_timezone("UTC"),
        ),
        Arc::new(
            sediment::arrow::array::TimestampMicrosecondArray::from(
                rows.iter().map(|r| r.4.map(ts)).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(BooleanArray::from(rows.iter().map(|r| r.5).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// SCD2 changes: customer, city, tier, effective time (seconds).
pub(crate) fn changes(rows: &[(i64, &str, &str, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
            Field::new("tier", DataType::Utf8, true),
            Field::new(
                "changed_at",
                DataType::Timestamp(sediment::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(
                sediment::arrow::array::TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.3 * 1_000_000),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn scd2_closes_changed_rows_and_opens_new_versions() {
    // In memory, and with a source spilled and merged in key ranges of a row or two.
    for limit in [Some(sediment::DEFAULT_SOURCE_MEMORY_LIMIT), Some(64)] {
        let uri = s3_uri("merge-scd2");
        let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
        let initial = [(1, "Oslo", "gold", 100, None, true), (2, "Rome", "silver", 100, None, true)];
        table.write([dimension(&initial)], WriteOptions::append()).await.unwrap();
        let options = Scd2Options::new(["customer_id"], ["city"], "changed_at");

        // Customer 1 moves (tracked: new version), 2's tier changes (not tracked: no
        // change), 3 is new.
        let batch = changes(&[(1, "Bergen", "gold", 200), (2, "Rome", "bronze", 200), (3, "Lima", "silver", 200)]);
        let report = table.scd2([batch], &options).unwrap().source_memory_limit(limit).execute().await.unwrap();
        assert_eq!(report.rows_updated, 1, "{report:?}");
        assert_eq!(report.rows_inserted, 2, "{report:?}");
        assert_eq!(report.key_ranges > 1, limit == Some(64), "{report:?}");
        let expected = dimension(&[
            (1, "Oslo", "gold", 100, Some(200), false),
            (1, "Bergen", "gold", 200, None, true),
            (2, "Rome", "silver", 100, None, true),
            (3, "Lima", "silver", 200, None, true),
        ]);
        assert_eq!(table_rows(&table).await, canonical_rows(&[expected]));

        // Applying the same changes again changes nothing.
        let batch = changes(&[(1, "Bergen", "gold", 200), (3, "Lima", "silver", 200)]);
        let report = table.scd2([batch], &options).unwrap().source_memory_limit(limit).execute().await.unwrap();
        assert_eq!(report.version, None, "{report:?}");

        // Customer 1 moves again: only the current row is closed.
        let batch = changes(&[(1, "Tromsø", "gold", 300)]);
        table.scd2([batch], &options).unwrap().source_memory_limit(limit).execute().await.unwrap();
        let expected = dimension(&[
            (1, "Oslo", "gold", 100, Some(200), false),
            (1, "Bergen", "gold", 200, Some(300), false),
            (1, "Tromsø", "gold", 300, None, true),
            (2, "Rome", "silver", 100, None, true),
            (3, "Lima", "silver", 200, None, true),
        ]);
        assert_eq!(table_rows(&table).await, canonical_rows(&[expected]));
    }
    let options = Scd2Options::new(["customer_id"], ["city"], "changed_at");

    // A table without the SCD2 columns is refused.
    let (mut orders, _) = orders_table(&s3_uri("merge-scd2-bad"), 1).await;
    let err = orders.scd2([changes(&[])], &options).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("valid_from"), "{err}");
}

/// A merge against a compactor and appenders on the same table: every merge lands
/// (re-planned when it loses a race), nothing is lost or duplicated.
#[tokio::test]
async fn merges_race_compaction_and_appends_without_losing_rows() {
    let uri = s3_uri("merge-race");
    let (table, mut model) = orders_table(&uri, 4).await;
    drop(table);
    let appender = {
        let uri = uri.clone();
        tokio::spawn(async move {
            let mut table = Table::open(&uri).await.unwrap();
            let mut written = Vec::new();
            for i in 0..6 {
                let batch = orders(10_000 + i * 10..10_000 + (i + 1) * 10, "appended");
                written.extend(batch.clone());
                table.write([orders_batch(&batch)], WriteOptions::append()).await.unwrap();
            }
            written
        })
    };
    let compactor = {
        let uri = uri.clone();
        tokio::spawn(async move {
            let mut table = Table::open(&uri).await.unwrap();
            let mut runs = 0;
            for _ in 0..4 {
                table.refresh().await.unwrap();
                let options = CompactOptions { min_input_files: Some(2), ..Default::default() };
                let report = table.compact(options).await.unwrap();
                runs += report.files_removed;
            }
            runs
        })
    };
    let mut table = Table::open(&uri).await.unwrap();
    let mut retries = 0;
    for round in 0..4i64 {
        let source = orders(round * 100 + 10..round * 100 + 20, &format!("round-{round}"));
        let report = table.upsert([orders_batch(&source)], ["order_id"]).await.unwrap();
        retries += report.retries;
        for o in source {
            model.insert(o.id, o);
        }
        table.refresh().await.unwrap();
    }
    for o in appender.await.unwrap() {
        model.insert(o.id, o);
    }
    let _ = compactor.await.unwrap();
    let table = Table::open(&uri).await.unwrap();
    assert_eq!(table_rows(&table).await, model_rows(&model), "retries: {retries}");
}

/// A hook that runs `f` (async, on a fresh handle of `uri`) the first time it is called.
pub fn once_before_commit<F, Fut>(uri: &str, f: F) -> Arc<dyn Fn() + Send + Sync>
where
    F: Fn(Table) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let uri = uri.to_string();
    Arc::new(move || {
        if fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async { f(Table::open(&uri).await.unwrap()).await })
        });
    })
}

/// Right before the merge commits, a compaction rewrites the file it rewrote: the
/// merge is planned again and lands as if it ran after the compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merge_whose_file_a_compaction_replaced_is_planned_again() {
    // In memory, and with a source spilled and merged in key ranges.
    for limit in [Some(sediment::DEFAULT_SOURCE_MEMORY_LIMIT), Some(64)] {
        let uri = s3_uri("merge-vs-compaction");
        // Day 0 in four small files.
        let (mut table, mut model) = orders_in_parts(&uri, (0..4).map(|part| part * 25..(part + 1) * 25), false).await;
        let source = orders(30..40, "paid");
        let hook = once_before_commit(&uri, |mut t: Table| async move {
            let report = t.compact(CompactOptions::default()).await.unwrap();
            assert_eq!(report.files_removed, 4);
        });
        let report = table
            .merge([orders_batch(&source)])
            .on(["order_id"])
            .when_matched(MatchedAction::UpdateAll)
            .when_not_matched_insert_all()
            .before_commit(hook)
            .source_memory_limit(limit)
            .execute()
            .await
            .unwrap();
        for o in source {
            model.insert(o.id, o);
        }
        assert_eq!(report.retries, 1, "{report:?}");
        assert_eq!(report.rows_updated, 10);
        assert_eq!(report.files_considered, 1, "planned again on the compacted table: {report:?}");
        assert_eq!(table_rows(&table).await, model_rows(&model));
        let ops: Vec<_> = table.history(Some(2)).await.unwrap().into_iter().map(|h| h.operation.unwrap()).collect();
        assert_eq!(ops, ["MERGE", "OPTIMIZE"]);
    }
}

/// Right before the merge commits, another writer appends orders with other keys:
/// the merge lands on top without being planned again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_of_other_keys_do_not_stop_a_merge() {
    let uri = s3_uri("merge-vs-append");
    let (mut table, mut model) = orders_table(&uri, 2).await;
    let appended = orders(5_000..5_010, "appended");
    let batch = orders_batch(&appended);
    let hook = once_before_commit(&uri, move |mut t: Table| {
        let batch = batch.clone();
        async move {
            t.write([batch], WriteOptions::append()).await.unwrap();
        }
    });
    let source = orders(10..20, "paid");
    let version = table.version().unwrap();
    let report = table
        .merge([orders_batch(&source)])
        .on(["order_id"])
        .when_matched(MatchedAction::UpdateAll)
        .before_commit(hook)
        .execute()
        .await
        .unwrap();
    for o in source.into_iter().chain(appended) {
        model.insert(o.id, o);
    }
    assert_eq!(report.retries, 0, "{report:?}");
    assert_eq!(report.version, Some(version + 2), "committed on top of the append");
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// A dedupe column only the source has (a feed sequence number) is allowed.
#[tokio::test]
async fn dedupe_by_a_source_only_column() {
    let uri = s3_uri("merge-dedupe-seq");
    let (mut table, mut model) = orders_table(&uri, 1).await;
    let rows = [orders(3..4, "first"), orders(3..4, "second"), orders(4..5, "only")].concat();
    let batch = orders_batch(&rows);
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(vec![2, 1, 5])));
    let mut fields: Vec<Field> = orders_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("seq", DataType::Int64, false));
    let source = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let report = table
        .merge([source])
        .on(["order_id"])
        .dedupe_by("seq")
        .when_matched(MatchedAction::UpdateAll)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.source_duplicates_dropped, 1);
    // seq 2 beats seq 1: "first" wins although it came first.
    model.insert(3, rows[0].clone());
    model.insert(4, rows[2].clone());
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// With the partition column among the keys, files of partitions the source does not
/// touch are pruned even when their key ranges overlap the source's.
#[tokio::test]
async fn partition_keys_prune_other_partitions() {
    let uri = s3_uri("merge-partition-key");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let mut model = BTreeMap::new();
    // Ids interleaved over three days: every file spans ids 0..300.
    let all: Vec<Order> =
        (0..300).map(|id| Order { day: 19_000 + (id % 3) as i32, ..orders(id..id + 1, "new")[0].clone() }).collect();
    for o in &all {
        model.insert(o.id, o.clone());
    }
    table.write([orders_batch(&all)], WriteOptions::append().partition_by(["order_date"])).await.unwrap();
    assert_eq!(table.files().unwrap().len(), 3);

    let source: Vec<Order> =
        all.iter().filter(|o| o.day == 19_001).take(10).map(|o| Order { status: "paid".into(), ..o.clone() }).collect();
    let by_id = table.upsert([orders_batch(&source)], ["order_id"]).await.unwrap();
    assert_eq!(by_id.files_pruned, 0, "id ranges overlap in every file: {by_id:?}");
    let source: Vec<Order> = source.into_iter().map(|o| Order { status: "shipped".into(), ..o }).collect();
    let by_id_and_date = table.upsert([orders_batch(&source)], ["order_id", "order_date"]).await.unwrap();
    assert_eq!(by_id_and_date.files_pruned, 2, "{by_id_and_date:?}");
    assert_eq!(by_id_and_date.files_rewritten, 1);
    assert_eq!(by_id_and_date.rows_updated, 10);
    for o in source {
        model.insert(o.id, o);
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// A file read in several batches whose last batch is deleted whole: the unchanged
/// rows held back from the first batch are still written.
#[tokio::test]
async fn deleting_a_files_last_batch_keeps_its_other_rows() {
    let uri = s3_uri("merge-last-batch");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    // One unpartitioned file of 10,000 rows: read as batches of 8,192 and 1,808.
    let all: Vec<Order> = orders(0..10_000, "new").into_iter().map(|o| Order { day: 19_000, ..o }).collect();
    table.write([orders_batch(&all)], WriteOptions::append()).await.unwrap();
    assert_eq!(table.files().unwrap().len(), 1);
    let doomed = &all[8_192..];
    let report = table
        .merge([orders_batch(doomed)])
        .on(["order_id"])
        .when_matched(MatchedAction::Delete)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.rows_deleted, 1_808, "{report:?}");
    assert_eq!(report.files_rewritten, 1, "{report:?}");
    let model: BTreeMap<i64, Order> = all[..8_192].iter().map(|o| (o.id, o.clone())).collect();
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// Two loaders merge the same batch at once: one commits it, the other finds it
/// committed when it plans again and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_loaders_commit_a_batch_once() {
    let uri = s3_uri("merge-racing-loaders");
    let (mut table, mut model) = orders_table(&uri, 1).await;
    let source = orders(50..60, "paid");
    let batch = orders_batch(&source);
    let other = batch.clone();
    let hook = once_before_commit(&uri, move |mut t: Table| {
        let batch = other.clone();
        async move {
            let report = t
                .merge([batch])
                .on(["order_id"])
                .when_matched(MatchedAction::UpdateAll)
                .app_transaction("loader", 3)
                .execute()
                .await
                .unwrap();
            assert!(report.version.is_some());
        }
    });
    let version = table.version().unwrap();
    let report = table
        .merge([batch])
        .on(["order_id"])
        .when_matched(MatchedAction::UpdateAll)
        .app_transaction("loader", 3)
        .before_commit(hook)
        .execute()
        .await
        .unwrap();
    assert!(report.replayed, "{report:?}");
    assert_eq!(report.retries, 1, "{report:?}");
    table.refresh().await.unwrap();
    assert_eq!(table.version(), Some(version + 1), "the batch is committed once");
    for o in source {
        model.insert(o.id, o);
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// Syncing one partition: a not-matched-by-source delete whose condition names only
/// partition columns reads that partition's files, not the whole table.
#[tokio::test]
async fn syncing_one_partition_reads_only_its_files() {
    let uri = s3_uri("merge-sync-partition");
    let (mut table, mut model) = orders_table(&uri, 3).await;
    let source = orders(10..20, "synced");
    let report = table
        .merge([orders_batch(&source)])
        .on(["order_id"])
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_insert_all()
        .when_not_matched_by_source_if("target.order_date = '2022-01-08'", NotMatchedBySourceAction::Delete)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.files_pruned, 2, "{report:?}");
    assert_eq!(report.rows_deleted, 90, "{report:?}");
    assert_eq!(report.rows_updated, 10, "{report:?}");
    model.retain(|id, o| o.day != 19_000 || (10..20).contains(id));
    for o in source {
        model.insert(o.id, o);
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// `(order_id, status)` of every row, as the independent Python reader sees them.
pub fn python_orders(uri: &str) -> Vec<(i64, String)> {
    let script = r#"
import json, os, sys
from deltalake import DeltaTable
opts = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
import pyarrow as pa
from deltalake import QueryBuilder
# The wheel's pyarrow path refuses deletion vectors; its DataFusion path applies them.
t = QueryBuilder().register("t", DeltaTable(sys.argv[1], storage_options=opts)).execute("select order_id, status from t")
rows = pa.table(t.read_all()).to_pylist()
print(json.dumps(sorted([r["order_id"], r["status"]] for r in rows)), flush=True)
os._exit(0)  # the wheel can abort in its native teardown after a correct read
"#;
    let python = std::env::var("SEDIMENT_TEST_PYTHON").expect("run the tests with scripts/test.sh");
    let out = std::process::Command::new(python).arg("-c").arg(script).arg(uri).output().unwrap();
    assert!(out.status.success(), "python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// On a table with deletion vectors enabled, a merge keeps the files it touches and
/// marks their changed rows deleted; readers (ours and Python's) see the same rows.
#[tokio::test]
async fn merges_write_deletion_vectors_where_the_table_enables_them() {
    let uri = s3_uri("merge-dv");
    let (mut table, mut model) = orders_in_parts(&uri, (0..3).map(|day| day * 100..(day + 1) * 100), true).await;
    let files_before: Vec<String> = table.files().unwrap().into_iter().map(|f| f.path).collect();

    // Updates to day 1, deletes from day 2 ('D'), one new order.
    let mut source = orders(110..120, "paid");
    source.extend(orders(250..255, "gone"));
    source.extend(orders(300..301, "new"));
    let report = table
        .merge([orders_batch(&source)])
        .on(["order_id"])
        .when_matched_if("source.status = 'gone'", MatchedAction::Delete)
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_insert_all()
        .execute()
        .await
        .unwrap();
    assert_eq!(report.files_marked, 2, "{report:?}");
    assert_eq!(report.files_rewritten, 0, "{report:?}");
    assert_eq!((report.rows_updated, report.rows_deleted, report.rows_inserted), (10, 5, 1), "{report:?}");
    assert_eq!(report.rows_copied, 0, "no row is copied: {report:?}");
    for o in &source {
        if o.status == "gone" {
            model.remove(&o.id);
        } else {
            model.insert(o.id, o.clone());
        }
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
    let files = table.files().unwrap();
    let marked: Vec<_> = files.iter().filter(|f| f.has_deletion_vector).collect();
    assert_eq!(marked.len(), 2);
    assert!(marked.iter().all(|f| files_before.contains(&f.path)), "the marked files are the old ones");
    assert_eq!(marked.iter().map(|f| f.deleted_rows).sum::<u64>(), 15);
    let python: Vec<(i64, String)> = python_orders(&uri);
    let expected: Vec<(i64, String)> = model.values().map(|o| (o.id, o.status.clone())).collect();
    assert_eq!(python, expected, "the Python reader applies our deletion vectors");

    // A second merge: ids 150-151 live in the day-1 file, which already has a deletion
    // vector: its new vector holds the old positions and the two new ones. Id 111's
    // new version lives in a file without one, which is marked too. Id 115's old
    // version, deleted by the first vector, must not match again.
    let day1 = marked.iter().find(|f| f.deleted_rows == 10).unwrap().path.clone();
    let source = [orders(111..112, "shipped"), orders(150..152, "shipped")].concat();
    let report = table.upsert([orders_batch(&source)], ["order_id"]).await.unwrap();
    assert_eq!((report.files_rewritten, report.files_marked), (0, 2), "{report:?}");
    assert_eq!((report.rows_updated, report.rows_inserted), (3, 0), "{report:?}");
    for o in source {
        model.insert(o.id, o);
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
    let files = table.files().unwrap();
    let day1 = files.iter().find(|f| f.path == day1).expect("the day-1 file stays");
    assert_eq!(day1.deleted_rows, 12, "old and new positions in one vector");
    assert_eq!(python_orders(&uri), model.values().map(|o| (o.id, o.status.clone())).collect::<Vec<_>>());
    // Compaction with a zero threshold folds every deletion vector away (by default a
    // file whose vector deletes at most 5 % of its rows, like day 2's, is left alone).
    let default_plan = table.compaction_plan(&CompactOptions::default()).unwrap();
    // Day 1's bin holds its original file and the first merge's file of new versions
    // (both marked since); day 2's file (5 of 100 rows deleted) is not planned.
    assert_eq!((default_plan.bins().count(), default_plan.files_with_deletes), (1, 2), "{default_plan:?}");
    table.compact(CompactOptions { max_deleted_rows_ratio: Some(0.0), ..Default::default() }).await.unwrap();
    assert!(table.files().unwrap().iter().all(|f| !f.has_deletion_vector));
    assert_eq!(table_rows(&table).await, model_rows(&model));
    assert_eq!(python_orders(&uri), model.values().map(|o| (o.id, o.status.clone())).collect::<Vec<_>>());
}

/// Deletes and updates on a table with deletion vectors enabled mark rows too.
#[tokio::test]
async fn deletes_and_updates_write_deletion_vectors_where_the_table_enables_them() {
    let uri = s3_uri("dml-dv");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let all = orders(0..200, "new");
    let options =
        WriteOptions::append().partition_by(["order_date"]).table_property("delta.enableDeletionVectors", "true");
    table.write([orders_batch(&all)], options).await.unwrap();
    let mut model: BTreeMap<i64, Order> = all.into_iter().map(|o| (o.id, o)).collect();

    let report = table.delete("order_id >= 10 AND order_id < 20").await.unwrap();
    assert_eq!((report.files_marked, report.files_rewritten, report.rows_deleted), (1, 0, 10), "{report:?}");
    model.retain(|id, _| !(10..20).contains(id));
    let report = table.update("order_id >= 150 AND order_id < 160", &[("status", "'late'")]).await.unwrap();
    assert_eq!((report.files_marked, report.rows_updated), (1, 10), "{report:?}");
    for id in 150..160 {
        model.get_mut(&id).unwrap().status = "late".into();
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
    assert_eq!(python_orders(&uri), model.values().map(|o| (o.id, o.status.clone())).collect::<Vec<_>>());
    // A second delete and update in a marked file extend its vector; rows the first
    // vector deleted no longer match (12 is gone already).
    let report = table.delete("order_id = 30 OR order_id = 12").await.unwrap();
    assert_eq!((report.files_marked, report.files_rewritten, report.rows_deleted), (1, 0, 1), "{report:?}");
    model.remove(&30);
    let report = table.update("order_id >= 155 AND order_id < 165", &[("status", "'later'")]).await.unwrap();
    assert_eq!((report.files_marked, report.rows_updated), (2, 10), "{report:?}");
    for id in 155..165 {
        model.get_mut(&id).unwrap().status = "later".into();
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
    let deleted: u64 = table.files().unwrap().iter().map(|f| f.deleted_rows).sum();
    assert_eq!(deleted, 10 + 1 + 10 + 10, "every change so far marked, none rewritten");
    assert_eq!(python_orders(&uri), model.values().map(|o| (o.id, o.status.clone())).collect::<Vec<_>>());
    // Deleting every live row of a marked file removes it.
    let report = table.delete("order_id < 100").await.unwrap();
    assert_eq!((report.files_removed, report.rows_deleted), (1, 89), "{report:?}");
    model.retain(|id, _| *id >= 100);
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// A source larger than its memory limit is spilled to a local file and merged in
/// key ranges: the same rows result, each touched file is rewritten once (its
/// unchanged rows copied once) or, with deletion vectors, marked once; a
/// not-matched-by-source clause is refused with the limit named.
#[tokio::test]
async fn a_source_past_its_memory_limit_is_merged_in_key_ranges() {
    for deletion_vectors in [false, true] {
        let uri = s3_uri(if deletion_vectors { "merge-spill-dv" } else { "merge-spill" });
        let days = (0..3).map(|day| day * 100..(day + 1) * 100);
        let (mut table, mut model) = orders_in_parts(&uri, days, deletion_vectors).await;
        // Ten updates in each day, five new orders, in three source batches.
        let mut parts: Vec<Vec<Order>> = (0..3).map(|day| orders(day * 100 + 40..day * 100 + 50, "paid")).collect();
        parts.push(orders(300..305, "new"));
        let version = table.version();
        let err = table
            .merge(parts.iter().map(|p| orders_batch(p)))
            .on(["order_id"])
            .when_matched(MatchedAction::UpdateAll)
            .when_not_matched_by_source(NotMatchedBySourceAction::Delete)
            .source_memory_limit(Some(256))
            .execute()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("memory limit"), "{err}");
        assert_eq!(table.version(), version, "nothing committed");
        // A spill directory that is not there: refused by name, nothing committed.
        let spill = tempfile::tempdir().unwrap();
        let missing = spill.path().join("missing");
        let err = table
            .merge(parts.iter().map(|p| orders_batch(p)))
            .on(["order_id"])
            .when_matched(MatchedAction::UpdateAll)
            .source_memory_limit(Some(256))
            .spill_directory(&missing)
            .execute()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
        assert_eq!(table.version(), version, "nothing committed");

        // The spill file lives in the given directory while the merge runs, and is
        // gone after it.
        let spilled_files = Arc::new(std::sync::Mutex::new(0));
        let (seen, directory) = (spilled_files.clone(), spill.path().to_path_buf());
        let report = table
            .merge(parts.iter().map(|p| orders_batch(p)))
            .on(["order_id"])
            .when_matched(MatchedAction::UpdateAll)
            .when_not_matched_insert_all()
            .source_memory_limit(Some(256))
            .spill_directory(spill.path())
            .before_commit(Arc::new(move || *seen.lock().unwrap() = std::fs::read_dir(&directory).unwrap().count()))
            .execute()
            .await
            .unwrap();
        assert_eq!(*spilled_files.lock().unwrap(), 1, "one spill file while the merge ran");
        assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0, "and none after it");
        assert!(report.key_ranges >= 3, "{report:?}");
        assert_eq!((report.rows_updated, report.rows_inserted), (30, 5), "{report:?}");
        if deletion_vectors {
            assert_eq!((report.files_marked, report.files_rewritten, report.rows_copied), (3, 0, 0), "{report:?}");
            // New versions from every key range: one file per day, and one of inserts.
            assert_eq!(report.files_added, 4, "{report:?}");
        } else {
            assert_eq!((report.files_rewritten, report.rows_copied), (3, 270), "{report:?}");
        }
        for o in parts.into_iter().flatten() {
            model.insert(o.id, o);
        }
        assert_eq!(table_rows(&table).await, model_rows(&model), "deletion vectors: {deletion_vectors}");
        assert_eq!(table.files().unwrap().iter().map(|f| f.rows.unwrap() - f.deleted_rows).sum::<u64>(), 305);
    }
}
