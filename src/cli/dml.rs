//! `sediment delete` and `sediment update`: rows matching a predicate, rewriting
//! (or marking) only the files that hold them.

use clap::Args;

use super::args::parse_key_value;
use super::render::{human_bytes, io_line};
use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// Table location.
    uri: String,
    /// Rows to delete: a SQL boolean expression.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: String,
}

#[derive(Args)]
pub(crate) struct UpdateArgs {
    /// Table location.
    uri: String,
    /// An assignment COLUMN=EXPR (repeatable); EXPR is SQL over the row's old values.
    #[arg(long = "set", value_name = "COLUMN=EXPR", required = true, value_parser = parse_key_value)]
    assignments: Vec<(String, String)>,
    /// Rows to update: a SQL boolean expression.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: String,
}

pub(crate) async fn delete(args: DeleteArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    change(&args.uri, &args.predicate, &[], options, json).await
}

pub(crate) async fn update(args: UpdateArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let assignments: Vec<(&str, &str)> = args.assignments.iter().map(|(c, e)| (c.as_str(), e.as_str())).collect();
    change(&args.uri, &args.predicate, &assignments, options, json).await
}

/// `delete` (no assignments) and `update`.
async fn change(
    uri: &str,
    predicate: &str,
    assignments: &[(&str, &str)],
    options: StorageOptions,
    json: bool,
) -> anyhow::Result<()> {
    let mut table = Table::open_with(uri, OpenOptions::new().storage_options(options)).await?;
    let report = if assignments.is_empty() {
        table.delete(predicate).await?
    } else {
        table.update(predicate, assignments).await?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match report.version {
        Some(v) => println!(
            "committed version {v}: {} rows deleted, {} updated; files: {} considered, {} pruned, {} read, {} removed, {} rewritten, {} marked with deletion vectors ({} rows copied, {} written); {} retries, {} ms",
            report.rows_deleted,
            report.rows_updated,
            report.files_considered,
            report.files_pruned,
            report.files_read,
            report.files_removed,
            report.files_rewritten,
            report.files_marked,
            report.rows_copied,
            human_bytes(report.bytes_written),
            report.retries,
            report.duration_ms
        ),
        None => println!(
            "no row matches: nothing committed ({} files considered, {} pruned, {} read)",
            report.files_considered, report.files_pruned, report.files_read
        ),
    }
    if report.files_reused > 0 {
        println!("  {} files kept from an earlier attempt (not read again)", report.files_reused);
    }
    if report.change_data_files > 0 {
        println!("  change data feed: {} files", report.change_data_files);
    }
    if report.files_read > 0 {
        println!("  {}", io_line(&report.io));
    }
    Ok(())
}
