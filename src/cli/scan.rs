//! `sediment scan`: read a table (at any version) as a table, CSV, NDJSON or Parquet,
//! with the scan report on standard error.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use futures::StreamExt;

use super::args::{TimeTravel, open_options};
use super::render::human_bytes;
use crate::StorageOptions;
use crate::Table;
use crate::arrow::array::RecordBatch;
use crate::arrow::util::pretty::pretty_format_batches;

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
    /// Output format (default: table, or ndjson with --json).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum FormatArg {
    Table,
    Csv,
    Ndjson,
    Parquet,
}

pub(crate) async fn scan(args: ScanArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(if json { FormatArg::Ndjson } else { FormatArg::Table });
    if format == FormatArg::Parquet && args.output.is_none() {
        anyhow::bail!(crate::Error::invalid("--format parquet needs --output PATH"));
    }
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
    let mut scan = builder.execute().await?;
    let schema = scan.schema();
    let mut out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    match format {
        FormatArg::Table => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = scan.next().await {
                batches.push(batch?);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema.clone()));
            }
            writeln!(out, "{}", pretty_format_batches(&batches)?)?;
        }
        FormatArg::Csv => {
            let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(&mut out);
            let mut wrote = false;
            while let Some(batch) = scan.next().await {
                writer.write(&batch?)?;
                wrote = true;
            }
            if !wrote {
                writer.write(&RecordBatch::new_empty(schema.clone()))?;
            }
        }
        FormatArg::Ndjson => {
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
            while let Some(batch) = scan.next().await {
                writer.write(&batch?)?;
            }
            writer.finish()?;
        }
        FormatArg::Parquet => {
            let mut writer = crate::deltalake::parquet::arrow::ArrowWriter::try_new(
                &mut out,
                schema.clone(),
                Some(crate::writer_properties(crate::DEFAULT_TARGET_FILE_SIZE)),
            )?;
            while let Some(batch) = scan.next().await {
                writer.write(&batch?)?;
            }
            writer.close()?;
        }
    }
    out.flush()?;
    drop(out);
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
    }
    Ok(())
}
