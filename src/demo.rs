//! Synthetic data for the demo and examples: bronze events as a streaming source
//! would produce them.
//!
//! Rows are a pure function of `(seed, start_id, rows)`, so every run of the demo and
//! of the tests writes the same data.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Days the events are spread over (one partition each).
pub const EVENT_DAYS: i64 = 5;
/// 2024-05-01 as days since the epoch.
const FIRST_DAY: i32 = 19844;
const EVENT_TYPES: &[&str] = &["view", "click", "add_to_cart", "purchase", "refund"];

/// The schema of the demo's bronze `events` table, partitioned by `event_date`.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("amount", DataType::Float64, true),
        Field::new("payload", DataType::Utf8, true),
        Field::new("event_date", DataType::Date32, false),
    ]))
}

/// `rows` events with ids `start_id..start_id + rows`, spread over [`EVENT_DAYS`] days.
pub fn events_batch(start_id: i64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (start_id..start_id + rows as i64).collect();
    let mix = |id: i64, salt: u64| splitmix64((id as u64) ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let day = |id: i64| (mix(id, 7) % EVENT_DAYS as u64) as i32;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|id| (mix(*id, 1) % 10_000) as i64))),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|id| EVENT_TYPES[(mix(*id, 2) % EVENT_TYPES.len() as u64) as usize]),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(ids.iter().map(|id| {
                let seconds = (FIRST_DAY + day(*id)) as i64 * 86_400 + (mix(*id, 3) % 86_400) as i64;
                seconds * 1_000_000
            }))
            .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter(ids.iter().map(|id| {
            let cents = mix(*id, 4) % 100_000;
            (cents % 3 != 0).then_some(cents as f64 / 100.0)
        }))),
        Arc::new(StringArray::from_iter(
            ids.iter().map(|id| (mix(*id, 5) % 4 != 0).then(|| format!("{{\"session\":{}}}", mix(*id, 6) % 100_000))),
        )),
        Arc::new(Date32Array::from_iter_values(ids.iter().map(|id| FIRST_DAY + day(*id)))),
    ];
    RecordBatch::try_new(events_schema(), columns).expect("columns match the schema")
}

/// SplitMix64: a fast, well-mixed hash of a 64-bit value.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
