//! `sediment merge`: upsert files into a table by key (or spell out the matched and
//! not-matched actions), rewriting or marking only the files that hold a matched key.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::args::parse_size;
use super::render::{human_bytes, io_line};
use crate::{MatchedAction, OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// Table location.
    uri: String,
    /// Source files (.parquet, .csv, .ndjson/.jsonl/.json), read into memory.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Key columns, comma separated: a source row matches the target rows with equal keys.
    #[arg(long, value_delimiter = ',', required = true)]
    key: Vec<String>,
    /// Keep, per key, only the source row with the largest value of this column;
    /// without it a duplicated key is an error.
    #[arg(long)]
    dedupe_by: Option<String>,
    /// What to do with target rows that have a matching source row.
    #[arg(long, value_enum, default_value = "update")]
    when_matched: WhenMatchedArg,
    /// Delete matched rows where this SQL condition holds (over source.* and target.*),
    /// before --when-matched applies.
    #[arg(long, value_name = "EXPR")]
    delete_when: Option<String>,
    /// Do not insert source rows that match no target row.
    #[arg(long)]
    no_insert: bool,
    /// Exactly-once loading: an application id, recorded with --batch-version.
    #[arg(long, requires = "batch_version")]
    app_id: Option<String>,
    /// The batch's version for --app-id; a batch at or below the recorded version is skipped.
    #[arg(long, requires = "app_id")]
    batch_version: Option<i64>,
    /// Check the source and show which files the merge would open; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Source rows held in memory at most; a larger source is spilled to a local file
    /// and merged in key ranges of this size.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    source_memory_limit: u64,
    /// Directory for the spill file of a source past its memory limit (default: the
    /// temporary directory, TMPDIR).
    #[arg(long, env = "SEDIMENT_SPILL_DIR")]
    spill_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum WhenMatchedArg {
    Update,
    Delete,
    Ignore,
}

pub(crate) async fn merge(args: MergeArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    // The files are read once, batch by batch, while the merge indexes its source and
    // before it writes anything: a missing or malformed file fails it with nothing written.
    let mut table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let batches = crate::write::input::read_files(&args.files, Some(table.arrow_schema()?))?;
    let mut merge = table.merge_from(batches).on(args.key);
    if let Some(column) = args.dedupe_by {
        merge = merge.dedupe_by(column);
    }
    if let Some(condition) = args.delete_when {
        merge = merge.when_matched_if(condition, MatchedAction::Delete);
    }
    merge = merge.when_matched(match args.when_matched {
        WhenMatchedArg::Update => MatchedAction::UpdateAll,
        WhenMatchedArg::Delete => MatchedAction::Delete,
        WhenMatchedArg::Ignore => MatchedAction::Ignore,
    });
    if !args.no_insert {
        merge = merge.when_not_matched_insert_all();
    }
    merge = merge.source_memory_limit(Some(args.source_memory_limit as usize));
    if let Some(directory) = args.spill_dir {
        merge = merge.spill_directory(directory);
    }
    if let (Some(app), Some(version)) = (args.app_id, args.batch_version) {
        merge = merge.app_transaction(app, version);
    }
    if args.dry_run {
        let plan = merge.plan()?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!(
                "version {}: {} source rows ({} duplicates dropped); files: {} considered, {} pruned by key statistics and partitions, {} to probe",
                plan.version,
                plan.source_rows,
                plan.source_duplicates_dropped,
                plan.files_considered,
                plan.files_pruned,
                plan.candidates.len()
            );
            for path in &plan.candidates {
                println!("  {path}");
            }
        }
        return Ok(());
    }
    let report = merge.execute().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let files = format!(
        "files: {} considered, {} pruned, {} read, {} rewritten, {} marked with deletion vectors, {} removed, {} added ({})",
        report.files_considered,
        report.files_pruned,
        report.files_read,
        report.files_rewritten,
        report.files_marked,
        report.files_removed,
        report.files_added,
        human_bytes(report.bytes_written)
    );
    let rows = format!(
        "rows: {} inserted, {} updated, {} deleted, {} copied, {} matched but unchanged",
        report.rows_inserted, report.rows_updated, report.rows_deleted, report.rows_copied, report.rows_unchanged
    );
    match report.version {
        _ if report.replayed => println!("batch already committed for this application: nothing to do"),
        Some(v) => println!(
            "committed version {v}\n  {rows}\n  {files}\n  {} retries, {} ms",
            report.retries, report.duration_ms
        ),
        None => println!("nothing changed: nothing committed\n  {rows}\n  {files}"),
    }
    if !report.replayed {
        println!("  {}", io_line(&report.io));
    }
    if report.change_data_files > 0 {
        println!("  change data feed: {} files", report.change_data_files);
    }
    if report.source_duplicates_dropped > 0 {
        println!("  {} duplicate source rows dropped (kept the latest per key)", report.source_duplicates_dropped);
    }
    if report.key_ranges > 1 {
        println!(
            "  the source outgrew --source-memory-limit: spilled to a local file, merged in {} key ranges",
            report.key_ranges
        );
    }
    Ok(())
}
