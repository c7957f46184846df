//! `sediment restore`: make an older version current again, in one RESTORE commit.

use clap::{ArgGroup, Args};

use super::args::parse_timestamp;
use crate::{OpenOptions, RestoreTarget, StorageOptions, Table};

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["version", "as_of", "tag"])))]
pub(crate) struct RestoreArgs {
    /// Table location.
    uri: String,
    /// The version to restore.
    #[arg(long)]
    version: Option<u64>,
    /// The newest version committed at or before this time (RFC 3339, or YYYY-MM-DD[ HH:MM:SS] in UTC).
    #[arg(long, value_parser = parse_timestamp)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// The version this tag names.
    #[arg(long)]
    tag: Option<String>,
    /// Say what would change; commit nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn restore(args: RestoreArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let mut table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let target = match (args.version, args.as_of, args.tag) {
        (Some(v), _, _) => RestoreTarget::Version(v),
        (_, Some(ts), _) => RestoreTarget::AsOf(ts),
        (_, _, Some(tag)) => RestoreTarget::Tag(tag),
        _ => anyhow::bail!(crate::Error::invalid("restore needs --version, --as-of or --tag")),
    };
    let report = table.restore(target, args.dry_run).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let what = format!(
        "{} files ({} rows) added back, {} files ({} rows) removed{}",
        report.files_added,
        report.rows_added,
        report.files_removed,
        report.rows_removed,
        if report.metadata_restored { ", metadata restored" } else { "" }
    );
    match report.version {
        Some(v) => println!("committed version {v}, restoring version {}: {what}", report.restored_version),
        None if args.dry_run => println!("dry run, restoring version {} would commit: {what}", report.restored_version),
        None => println!("version {} is already the table's content: nothing to do", report.restored_version),
    }
    Ok(())
}
