//! `sediment vacuum`: delete the files and log entries no kept version needs.

use clap::Args;

use super::args::parse_retention;
use crate::maintain::vacuum::{VacuumOptions, VacuumParts, VacuumReport};
use crate::{LogView, OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct VacuumArgs {
    /// Table location.
    uri: String,
    /// Keep what versions of this long ago need (e.g. 7d, 36h; default: the table's
    /// delta.deletedFileRetentionDuration, else 7 days).
    #[arg(long, value_parser = parse_retention)]
    retain: Option<chrono::Duration>,
    /// Also list the table's folder and delete files no version references.
    #[arg(long)]
    full: bool,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow a --retain shorter than the table's delta.deletedFileRetentionDuration.
    #[arg(long)]
    no_retention_check: bool,
    /// Only delete data files (no log cleanup).
    #[arg(long, conflicts_with = "log_only")]
    data_only: bool,
    /// Only clean up the log.
    #[arg(long)]
    log_only: bool,
}

pub(crate) async fn vacuum(args: VacuumArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let open = OpenOptions::new().storage_options(options);
    let parts = match (args.data_only, args.log_only) {
        (true, _) => VacuumParts::DataOnly,
        (_, true) => VacuumParts::LogOnly,
        _ => VacuumParts::All,
    };
    let mut vacuum = VacuumOptions::default()
        .full(args.full)
        .dry_run(args.dry_run)
        .retention_check(!args.no_retention_check)
        .parts(parts);
    if let Some(retain) = args.retain {
        vacuum = vacuum.retain(retain);
    }
    // A dry run plans from the log alone where it can (no snapshot of every file's
    // statistics); a vacuum that deletes goes through the table, which commits.
    let view = if args.dry_run { LogView::open(&args.uri, &open).await? } else { None };
    let report = match view {
        Some(mut view) => view.vacuum_plan(vacuum).await?,
        None => Table::open_with(&args.uri, open).await?.vacuum(vacuum).await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if !report.failed.is_empty() || report.log.as_ref().is_some_and(|l| !l.failed.is_empty()) {
        anyhow::bail!(crate::Error::new(
            crate::ErrorKind::Unavailable,
            "some deletes failed after retries (listed above): run vacuum again to finish"
        ));
    }
    Ok(())
}

fn render(report: &VacuumReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verb = if report.dry_run { "would delete" } else { "deleted" };
    let size = |b: u64| bytesize::ByteSize::b(b).display().si().to_string();
    if report.parts != VacuumParts::LogOnly {
        let total = report.deleted.total();
        let _ = writeln!(
            out,
            "vacuum ({}, retaining {:.0}h, horizon {}): {verb} {} files ({})",
            report.mode,
            report.retention_hours,
            report.horizon.format("%Y-%m-%d %H:%M:%S UTC"),
            total.files,
            size(total.bytes)
        );
        for (reason, count) in [
            ("tombstoned", report.deleted.tombstoned),
            ("orphan", report.deleted.orphan),
            ("expired tag", report.deleted.expired_tag),
        ] {
            if count.files > 0 {
                let _ = writeln!(out, "  {reason}: {} files ({})", count.files, size(count.bytes));
            }
        }
        if report.kept_for_tags.files > 0 {
            let _ = writeln!(
                out,
                "  kept for tags: {} files ({})",
                report.kept_for_tags.files,
                size(report.kept_for_tags.bytes)
            );
        }
        if report.dry_run {
            for file in report.files.iter().take(50) {
                let _ = writeln!(out, "  {} ({})", file.path, size(file.bytes));
            }
            if report.files.len() > 50 {
                let _ = writeln!(out, "  ... and {} more (--json lists them all)", report.files.len() - 50);
            }
        }
        if !report.tags_expired.is_empty() {
            let _ = writeln!(
                out,
                "  expired tags {}: {}",
                if report.dry_run { "to remove" } else { "removed" },
                report.tags_expired.join(", ")
            );
        }
    }
    if let Some(log) = &report.log {
        match &log.skipped {
            Some(why) => {
                let _ = writeln!(out, "log cleanup skipped: {why}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "log cleanup: {verb} {} commits, {} checkpoints, {} other files ({}); log kept from {}",
                    log.commits_deleted,
                    log.checkpoints_deleted,
                    log.other_deleted,
                    size(log.bytes_deleted),
                    log.kept_from.map_or("the first version".to_string(), |v| format!("checkpoint {v}"))
                );
                if let Some(v) = log.checkpoint_written {
                    let _ = writeln!(
                        out,
                        "  checkpoint {} at tagged version {v}",
                        if report.dry_run { "to write" } else { "written" }
                    );
                }
            }
        }
    }
    for failed in report.failed.iter().chain(report.log.iter().flat_map(|l| l.failed.iter())) {
        let _ = writeln!(out, "  failed: {}: {}", failed.path, failed.error);
    }
    out
}
