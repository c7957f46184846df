//! `sediment demo`: a bronze events table written the way a streaming writer would,
//! inspected, time travelled, compacted and scanned.

use std::path::PathBuf;

use clap::Args;

use super::render::{human_bytes, print_info, progress_bar};
use crate::arrow::array::RecordBatch;
use crate::{OpenOptions, StorageOptions, Table, WriteOptions};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where to put the demo tables.
    #[arg(long, default_value = "sediment-demo")]
    dir: PathBuf,
    /// How many small appends to make.
    #[arg(long, default_value_t = 40)]
    appends: usize,
    /// Rows per append.
    #[arg(long, default_value_t = 2_500)]
    rows_per_append: usize,
}

pub(crate) async fn demo(args: DemoArgs, json: bool) -> anyhow::Result<()> {
    let DemoArgs { dir, appends, rows_per_append } = args;
    let events_path = dir.join("bronze").join("events");
    let uri = events_path.to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, StorageOptions::new()).await?;
    let first_id = match table.info() {
        Ok(info) => info.rows.unwrap_or(0) as i64,
        Err(_) => 0,
    };
    if !json {
        println!("== 1. a streaming writer appends {appends} small batches of {rows_per_append} events to {uri}");
    }
    let progress = progress_bar(appends as u64, "appends");
    let mut first_version = None;
    for i in 0..appends {
        let batch = crate::demo::events_batch(first_id + (i * rows_per_append) as i64, rows_per_append);
        let report = table.write([batch], WriteOptions::append().partition_by(["event_date"])).await?;
        first_version = first_version.or(report.version);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let info = table.info()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("\n== 2. the table now: many commits, many small files");
    print_info(&info);
    let old_version = first_version.unwrap_or(0);
    let old = Table::open_with(&uri, OpenOptions::new().version(old_version)).await?;
    let old_info = old.info()?;
    println!("\n== 3. time travel: version {old_version} (after the first append of this run)");
    println!("rows then    {}", old_info.rows.unwrap_or(0));
    println!("rows now     {}", info.rows.unwrap_or(0));
    let before_compaction = table.version().unwrap_or_default();
    let report = table.compact(crate::CompactOptions::default()).await?;
    let compacted = table.info()?;
    println!("\n== 4. compaction: small files rewritten into files near the target, partition by partition");
    println!(
        "files        {} -> {} in {} commit(s), health {} -> {}; version {before_compaction} still reads the old files",
        info.files,
        compacted.files,
        report.versions.len(),
        info.health.score,
        compacted.health.score
    );
    let (batches, scan) =
        table.scan().filter("event_date = '2024-05-03' AND event_type = 'purchase'").execute().await?.collect().await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    println!(
        "\n== 5. a pruned scan: {rows} purchases on 2024-05-03, reading {} of {} files ({})",
        scan.files_after_stats_skipping,
        scan.files_in_snapshot,
        human_bytes(scan.bytes_read)
    );
    let bin = "sediment";
    println!("\n== next");
    println!("  {bin} info {uri}");
    println!("  {bin} history {uri} --limit 5");
    println!("  {bin} compact {uri} --dry-run");
    println!("  {bin} scan {uri} --where \"event_type = 'refund'\" --columns event_id,user_id,amount --limit 10");
    println!("  {bin} scan {uri} --version {old_version} --format csv --limit 5");
    Ok(())
}
