//! Compaction from a Rust program: look at a table's health, print the plan, run it.
//!
//! Run: `cargo run --example compact_table -- /tmp/sediment-example/events`
//! (a table written by `cargo run --example streaming_writer`, or any Delta table).

use sediment::{CompactOptions, Table};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let uri = std::env::args().nth(1).unwrap_or_else(|| "/tmp/sediment-example/events".to_string());
    let mut table = Table::open(&uri).await?;
    let health = table.info()?.health;
    println!("{uri}: {} files, health {}/100, {} fragments", health.files, health.score, health.fragments);

    // Plan first (no I/O): the plan is plain data that can be shown, logged or stored.
    let options = CompactOptions::default();
    let plan = table.compaction_plan(&options)?;
    if plan.is_empty() {
        println!("healthy: nothing to compact");
        return Ok(());
    }
    for partition in &plan.partitions {
        let files: usize = partition.bins.iter().map(|b| b.inputs.len()).sum();
        println!("  {:?}: {files} files -> {}", partition.partition, partition.bins.len());
    }

    let report = table.execute_compaction(&plan, options).await?;
    println!(
        "rewrote {} files into {} (versions {:?}); {} bins given up",
        report.files_removed,
        report.files_added,
        report.versions,
        report.abandoned.len()
    );
    Ok(())
}
