//! `sediment expire`: remove the rows older than a horizon (partition retention).

use clap::Args;

use super::args::parse_duration;
use crate::maintain::expire::ExpireOptions;
use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct ExpireArgs {
    /// Table location.
    uri: String,
    /// Remove rows older than this (e.g. 400d, 36h).
    #[arg(long, value_parser = parse_duration)]
    older_than: chrono::Duration,
    /// The column to age rows by (default: the first date, timestamp or ISO-date partition column).
    #[arg(long)]
    column: Option<String>,
    /// Say what would be removed; commit nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn expire(args: ExpireArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let mut table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let mut expire = ExpireOptions::older_than(args.older_than).dry_run(args.dry_run);
    if let Some(column) = args.column {
        expire = expire.column(column);
    }
    let report = table.expire(expire).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = if report.dry_run { "would remove" } else { "removed" };
    let how = if report.partition_column { "whole partitions, metadata only" } else { "a delete by predicate" };
    println!(
        "expire by `{}` before {} ({how}): {verb} {} rows in {} files",
        report.column,
        report.horizon.format("%Y-%m-%d %H:%M:%S UTC"),
        report.rows,
        report.files
    );
    if !report.partitions.is_empty() {
        let shown: Vec<&str> = report.partitions.iter().take(10).map(String::as_str).collect();
        let more = report.partitions.len().saturating_sub(10);
        println!(
            "  partitions: {}{}",
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
    }
    if let Some(version) = report.delete.as_ref().and_then(|d| d.version) {
        println!("  committed version {version}; vacuum reclaims the files after the retention");
    }
    Ok(())
}
