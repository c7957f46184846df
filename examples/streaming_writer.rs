//! A streaming producer: small batches arrive continuously; `TableWriter` buffers them
//! and commits by size or age, so the table gets a few good files instead of one tiny
//! file per batch.
//!
//! Run: `cargo run --example streaming_writer -- /tmp/sediment-example/events`
//! (or an `s3://bucket/prefix` with the usual `AWS_*` variables set).

use std::time::Duration;

use sediment::{Table, TableWriter, TableWriterSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let uri = std::env::args().nth(1).unwrap_or_else(|| "/tmp/sediment-example/events".to_string());
    let table = Table::open_or_new(&uri, Default::default()).await?;
    let settings = TableWriterSettings::default()
        .partition_by(["event_date"])
        .max_buffer_bytes(8 * 1024 * 1024)
        .max_age(Duration::from_secs(2));
    let mut writer = TableWriter::new(table, settings);

    // A source that yields a batch of 500 events every 20 ms, for a few seconds.
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut quiet = tokio::time::interval(Duration::from_millis(500));
    let mut next_id = 0;
    for _ in 0..200 {
        tokio::select! {
            _ = ticker.tick() => {
                let batch = sediment::demo::events_batch(next_id, 500);
                next_id += 500;
                if let Some(report) = writer.write(batch).await? {
                    println!("committed version {:?}: {} rows in {} files", report.version, report.rows_written, report.files_added);
                }
            }
            // When input goes quiet, age still triggers a commit.
            _ = quiet.tick() => {
                writer.flush_if_due().await?;
            }
        }
    }
    let table = writer.close().await?;
    let info = table.info()?;
    println!("{uri}: version {}, {} rows in {} files", info.version, info.rows.unwrap_or(0), info.files);
    Ok(())
}
