//! Time travel: read a table as it was at an older version and at a point in time,
//! and list its history.
//!
//! Run: `cargo run --example time_travel -- /tmp/sediment-example/tt`

use sediment::{OpenOptions, Table, WriteOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let uri = std::env::args().nth(1).unwrap_or_else(|| "/tmp/sediment-example/tt".to_string());
    let mut table = Table::open_or_new(&uri, Default::default()).await?;
    for i in 0..3 {
        table.write([sediment::demo::events_batch(i * 1_000, 1_000)], WriteOptions::append()).await?;
    }
    let latest = table.version().unwrap_or_default();

    // By version.
    let first = Table::open_with(&uri, OpenOptions::new().version(latest - 2)).await?;
    let (batches, report) = first.scan().columns(["event_id"]).execute().await?.collect().await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("version {}: {rows} rows ({} files read)", report.version, report.files_after_stats_skipping);

    // By timestamp: the newest version committed at or before it.
    let history = table.history(Some(10)).await?;
    for entry in &history {
        println!("  v{} {:?} {:?} {}", entry.version, entry.operation, entry.engine, entry.metrics);
    }
    if let Some(ts) = history.last().and_then(|e| e.timestamp).and_then(chrono::DateTime::from_timestamp_millis) {
        let then = Table::open_with(&uri, OpenOptions::new().as_of(ts)).await?;
        println!("as of {ts}: version {:?}, {} rows", then.version(), then.info()?.rows.unwrap_or(0));
    }
    Ok(())
}
