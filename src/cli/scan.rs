//! `sediment scan`: read a table (at any version) as a table, CSV, NDJSON or Parquet,
//! with the scan report on standard error.

use std::path::PathBuf;

use clap::Args;

use super::args::{TimeTravel, open_options};
use super::output::{OutputFormat, write_batches};
use super::render::human_bytes;
use crate::StorageOptions;
use crate::Table;

#[derive(Args)]
pub(crate) struct ScanArgs {
    /// Table location.
    uri: String,
    #[command(flatten)]
    at: TimeTravel,
    /// Columns to return, comma separated.
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Rows to return: a SQL boolean expression.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<usize>,
    /// Leave out files that are archived (GLACIER, DEEP_ARCHIVE) and not restored,
    /// saying how many, instead of failing.
    #[arg(long)]
    skip_archived: bool,
    /// Output format (default: table, or ndjson with --json).
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long)]
    output: Option<PathBuf>,
}

pub(crate) async fn scan(args: ScanArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let format = OutputFormat::or_default(args.format, json);
    format.check(&args.output)?;
    let table = Table::open_with(&args.uri, open_options(options, &args.at)).await?;
    let mut builder = table.scan();
    if !args.columns.is_empty() {
        builder = builder.columns(args.columns.clone());
    }
    if let Some(p) = &args.predicate {
        builder = builder.filter(p.clone());
    }
    if let Some(n) = args.limit {
        builder = builder.limit(n);
    }
    let mut scan = builder.skip_archived(args.skip_archived).execute().await?;
    let schema = scan.schema();
    write_batches(&mut scan, schema, format, args.output.as_ref()).await?;
    let report = scan.report();
    if json {
        eprintln!("{}", serde_json::to_string(&report)?);
    } else {
        eprintln!(
            "version {}: {} rows; files {} in snapshot, {} after partition pruning, {} after stats skipping; {} read in {} requests (at most {} in flight)",
            report.version,
            report.rows_returned,
            report.files_in_snapshot,
            report.files_after_partition_pruning,
            report.files_after_stats_skipping,
            human_bytes(report.bytes_read),
            report.requests,
            report.peak_in_flight
        );
        if report.files_skipped_archived > 0 {
            eprintln!(
                "{} archived files skipped (not restored; `sediment tier restore` makes them readable)",
                report.files_skipped_archived
            );
        }
    }
    Ok(())
}
