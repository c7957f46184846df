//! `sediment changes`: the change data feed of a table over a range of versions, as
//! a table, CSV, NDJSON or Parquet.

use std::path::PathBuf;

use clap::Args;

use super::output::{OutputFormat, write_batches};
use crate::arrow::array::RecordBatch;
use crate::arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use crate::arrow::datatypes::SchemaRef;
use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct ChangesArgs {
    /// Table location.
    uri: String,
    /// The first version whose changes to return.
    #[arg(long)]
    from_version: u64,
    /// The last version whose changes to return (default: the newest).
    #[arg(long)]
    to_version: Option<u64>,
    /// Output format (default: table, or ndjson with --json).
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long)]
    output: Option<PathBuf>,
}

pub(crate) async fn changes(args: ChangesArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let format = OutputFormat::or_default(args.format, json);
    format.check(&args.output)?;
    let table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let mut changes = table.changes(args.from_version, args.to_version).await?;
    let (from, to) = changes.versions();
    let schema = changes.schema();
    let rows = if format == OutputFormat::Table {
        // For people: in commit order (the other formats stream as read).
        let batches = changes.collect().await?;
        let sorted = by_version(&schema, &batches)?;
        write_batches(futures::stream::iter([Ok(sorted)]), schema, format, args.output.as_ref()).await?
    } else {
        write_batches(&mut changes, schema, format, args.output.as_ref()).await?
    };
    if json {
        eprintln!("{}", serde_json::json!({"from_version": from, "to_version": to, "rows": rows}));
    } else {
        eprintln!("versions {from} to {to}: {rows} change rows");
    }
    Ok(())
}

/// `batches` as one batch ordered by `_commit_version`.
fn by_version(schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<RecordBatch> {
    let all = concat_batches(schema, batches)?;
    let version = all.column(schema.index_of("_commit_version")?);
    let order = sort_to_indices(version, Some(SortOptions { descending: false, nulls_first: false }), None)?;
    Ok(take_record_batch(&all, &order)?)
}
