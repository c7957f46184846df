//! `sediment append`: Parquet, CSV or NDJSON files into a table in one commit,
//! creating the table when it is missing.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::args::{parse_key_value, parse_size};
use super::render::{human_bytes, progress_bar};
use crate::{SchemaMode, StorageOptions, Table, WriteMode, WriteOptions};

#[derive(Args)]
pub(crate) struct AppendArgs {
    /// Table location.
    uri: String,
    /// Input files (.parquet, .csv, .ndjson/.jsonl/.json).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Partition columns of a new table, comma separated.
    #[arg(long, value_delimiter = ',')]
    partition_by: Vec<String>,
    /// append adds rows; overwrite replaces them (all, or those matching --where).
    #[arg(long, value_enum, default_value = "append")]
    mode: ModeArg,
    /// With --mode overwrite: replace only partitions matching this predicate.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: Option<String>,
    /// strict refuses columns the table lacks; merge adds them.
    #[arg(long, value_enum, default_value = "strict")]
    schema_mode: SchemaModeArg,
    /// Cut data files at about this size.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    target_size: u64,
    /// A property of a new table, KEY=VALUE (repeatable), e.g.
    /// delta.enableDeletionVectors=true or delta.appendOnly=true.
    #[arg(long = "table-property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    table_properties: Vec<(String, String)>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Append,
    Overwrite,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaModeArg {
    Strict,
    Merge,
}

pub(crate) async fn append(args: AppendArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let mut table = Table::open_or_new(&args.uri, options).await?;
    // Open every file first: a missing or malformed file fails before anything is
    // written. Text files are read in the types of the table's columns.
    let hint = if table.exists() { Some(table.arrow_schema()?) } else { None };
    let mut sources = Vec::new();
    for path in &args.files {
        sources.push(crate::write::input::open_source_file(path, hint.as_ref())?);
    }
    let write_options = WriteOptions {
        mode: match args.mode {
            ModeArg::Append => WriteMode::Append,
            ModeArg::Overwrite => WriteMode::Overwrite,
        },
        partition_by: args.partition_by,
        replace_where: args.predicate,
        schema_mode: match args.schema_mode {
            SchemaModeArg::Strict => SchemaMode::Strict,
            SchemaModeArg::Merge => SchemaMode::Merge,
        },
        target_file_size: args.target_size,
        table_properties: args.table_properties,
        ..WriteOptions::default()
    };
    let progress = progress_bar(args.files.len() as u64, "files");
    let bar = progress.clone();
    let batches = futures::stream::iter(sources.into_iter().flat_map(move |source| {
        let bar = bar.clone();
        source.batches.chain(std::iter::from_fn(move || {
            bar.inc(1);
            None
        }))
    }));
    let report = table.write_stream(batches, write_options).await?;
    progress.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match report.version {
            Some(v) => println!(
                "{} version {v}: {} rows in {} files ({}), {} files removed, {} ms",
                if report.created { "created table at" } else { "committed" },
                report.rows_written,
                report.files_added,
                human_bytes(report.bytes_written),
                report.files_removed,
                report.duration_ms
            ),
            None => println!("nothing to commit: the input had no rows"),
        }
    }
    Ok(())
}
