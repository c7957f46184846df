//! Keeping a silver table by upserts: a loader merges each batch of changed and new
//! orders by key, exactly once, and reports what it rewrote.
//!
//! Run: `cargo run --example silver_upsert -- /tmp/sediment-example/orders`

use std::sync::Arc;

use sediment::arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::{MatchedAction, Table, WriteOptions};

/// Orders `ids` with `status`, placed on day `19_844 + id / 1_000` (2024-05-01 onwards).
/// With `change`, the rows carry what happened (`op`) and a feed sequence number.
fn orders(ids: std::ops::Range<i64>, status: &str, change: Option<(&str, i64)>) -> RecordBatch {
    let mut fields = vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("order_date", DataType::Date32, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone())),
        Arc::new(StringArray::from_iter_values(ids.clone().map(|_| status))),
        Arc::new(Float64Array::from_iter_values(ids.clone().map(|id| id as f64 / 10.0))),
        Arc::new(Date32Array::from_iter_values(ids.clone().map(|id| 19_844 + (id / 1_000) as i32))),
    ];
    // Change feeds often say what happened to a row; the merge can act on it.
    if let Some((op, seq)) = change {
        fields.push(Field::new("op", DataType::Utf8, false));
        fields.push(Field::new("seq", DataType::Int64, false));
        columns.push(Arc::new(StringArray::from_iter_values(ids.clone().map(|_| op))));
        columns.push(Arc::new(Int64Array::from_iter_values(ids.map(|_| seq))));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the schema")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let uri = std::env::args().nth(1).unwrap_or_else(|| "/tmp/sediment-example/orders".to_string());
    let mut table = Table::open_or_new(&uri, Default::default()).await?;
    if !table.exists() {
        // Five days of orders, one file per day.
        table.write([orders(0..5_000, "placed", None)], WriteOptions::append().partition_by(["order_date"])).await?;
    }

    // The common case: update the orders that exist, insert the others. Only the
    // files holding ids 4_500..4_999 are read and rewritten.
    let report = table.upsert([orders(4_500..5_200, "paid", None)], ["order_id"]).await?;
    println!(
        "upsert: {} updated, {} inserted; files {} considered, {} pruned, {} rewritten",
        report.rows_updated, report.rows_inserted, report.files_considered, report.files_pruned, report.files_rewritten
    );

    // A change feed with deletes, loaded exactly once: batch 1 of loader "orders-cdc".
    // Running this program again skips it (the version is recorded in the table).
    let feed = vec![
        orders(10..20, "cancelled", Some(("D", 1))),
        orders(20..30, "shipped", Some(("U", 2))),
        orders(20..25, "delivered", Some(("U", 3))),
    ];
    let report = table
        .merge(feed)
        .on(["order_id"])
        // Ids 20..25 appear twice in the feed: keep the latest row per key.
        .dedupe_by("seq")
        .when_matched_if("source.op = 'D'", MatchedAction::Delete)
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_if("source.op <> 'D'", sediment::NotMatchedAction::InsertAll)
        .app_transaction("orders-cdc", 1)
        .execute()
        .await?;
    if report.replayed {
        println!("change feed batch 1 was already loaded");
    } else {
        println!(
            "change feed: {} deleted, {} updated, {} duplicates dropped; {} rows copied",
            report.rows_deleted, report.rows_updated, report.source_duplicates_dropped, report.rows_copied
        );
    }
    let info = table.info()?;
    println!("{uri}: version {:?}, {} rows in {} files", table.version(), info.rows.unwrap_or(0), info.files);
    Ok(())
}
