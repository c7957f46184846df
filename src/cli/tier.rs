//! `sediment tier`: storage tiering by the table's partitions. Plans from the log
//! which files of which due partitions move to which class, then moves them with
//! server-side copies in place and records each file's class in the log
//! ([`Table::tier`](crate::Table::tier)); `--dry-run` shows the plan only.
//!
//! With `--policy STEPS` the table is a location, opened with the global storage
//! options; without it, the table (a name or a location) is looked up in the catalog
//! (`--config`, `--catalog`) and tiered by its policy's `tiering` section.
//!
//! `sediment tier restore URI --where EXPR [--days N] [--wait]` asks S3 for readable
//! copies of the archived files (GLACIER, DEEP_ARCHIVE) of the selected partitions and
//! reports how far the restores are ([`Table::restore_archived`](crate::Table::restore_archived)).

use clap::{Args, Subcommand};

use super::serve::ServiceArgs;
use crate::maintain::tiering::{AgeBy, TierOptions, TierReport, TierSteps, has_storage_classes};
use crate::service::ops;
use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct TierArgs {
    #[command(subcommand)]
    command: Option<TierCommand>,
    #[command(flatten)]
    run: TierRunArgs,
}

#[derive(Subcommand)]
enum TierCommand {
    /// Ask S3 to restore the archived files (GLACIER, DEEP_ARCHIVE) of the partitions
    /// an expression selects, and report how far the restores are.
    Restore(TierRestoreArgs),
}

#[derive(Args)]
struct TierRestoreArgs {
    /// Table location.
    uri: String,
    /// The partitions (or rows) whose archived files to restore: a SQL boolean expression.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: String,
    /// How long the restored copies stay readable.
    #[arg(long, default_value_t = 7)]
    days: i32,
    /// Ask again for files restored already (extending their copies to --days).
    #[arg(long)]
    extend: bool,
    /// Wait until every selected file is readable, reporting progress.
    #[arg(long)]
    wait: bool,
    /// How often to look while waiting.
    #[arg(long, value_parser = super::args::parse_duration, default_value = "60s")]
    poll: chrono::Duration,
}

#[derive(Args)]
struct TierRunArgs {
    /// Table location (with --policy), or a catalog table's name or location.
    #[arg(required = true)]
    table: Option<String>,
    /// Steps, older and colder as they go: AGE:CLASS,... e.g. 30d:STANDARD_IA,180d:GLACIER_IR
    /// (default: the table's policy in the catalog).
    #[arg(long, value_name = "STEPS")]
    policy: Option<String>,
    /// The partition column to age by (default: the policy's, else the first date,
    /// timestamp or ISO-date one; an unpartitioned table ages by add time).
    #[arg(long)]
    column: Option<String>,
    /// Say what would move; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    service: ServiceArgs,
}

pub(crate) async fn tier(args: TierArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    match args.command {
        Some(TierCommand::Restore(restore)) => restore_archived(restore, options, json).await,
        None => run(args.run, options, json).await,
    }
}

async fn restore_archived(args: TierRestoreArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let mut report = table.restore_archived(&args.predicate, args.days, args.extend).await?;
    loop {
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{}: {} files selected, {} archived in {} partitions: {} restores asked for now, {} restoring, {} readable",
                args.uri,
                report.files_selected,
                report.files_archived,
                report.partitions.len(),
                report.requested,
                report.in_progress,
                report.restored
            );
        }
        if !args.wait || report.restored == report.files_archived {
            return Ok(());
        }
        tokio::time::sleep(args.poll.to_std().unwrap_or(std::time::Duration::from_secs(60))).await;
        // Looks again; asks only for what is neither restoring nor restored.
        report = table.restore_archived(&args.predicate, args.days, false).await?;
    }
}

async fn run(args: TierRunArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let name = args.table.clone().unwrap_or_default();
    let report = match &args.policy {
        Some(spec) => {
            let steps = TierSteps::parse(spec).map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
            if !has_storage_classes(&name)? {
                return no_classes(&name, json);
            }
            let mut table = Table::open_with(&name, OpenOptions::new().storage_options(options)).await?;
            table.tier(TierOptions::new(steps).column(args.column.clone()).dry_run(args.dry_run)).await?
        }
        None => {
            let service = args.service.service().await?;
            let entry = ops::find_table(&service, &name).await?;
            if !has_storage_classes(&entry.location)? {
                return no_classes(&entry.location, json);
            }
            ops::tier_table(&service, &entry, None, args.column.clone(), args.dry_run).await?
        }
    };
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["storage_classes"] = true.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    print_report(&name, &report);
    Ok(())
}

fn no_classes(location: &str, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::json!({ "storage_classes": false, "table": location }));
    } else {
        println!("{location}: a local or memory table has no storage classes; tiering has nothing to do");
    }
    Ok(())
}

fn print_report(table: &str, r: &TierReport) {
    let by = match &r.age_by {
        AgeBy::Partition(column) => format!("partition column `{column}`"),
        AgeBy::AddTime => "the time each file was added".to_string(),
    };
    let size = |b: u64| bytesize::ByteSize::b(b).to_string();
    println!(
        "{table}: aged by {by}: {} files ({}) due in {} partitions; {} in place, {} not due{}",
        r.files_planned,
        size(r.bytes_planned),
        r.moves_planned,
        r.files_in_place,
        r.files_not_due,
        if r.files_archived > 0 { format!(", {} archived (a restore first)", r.files_archived) } else { String::new() }
    );
    if r.dry_run {
        for m in &r.planned {
            let partition: Vec<String> =
                m.partition.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null"))).collect();
            let partition = if partition.is_empty() { "(unpartitioned)".to_string() } else { partition.join("/") };
            println!(
                "  {partition}: {} days old -> {}: {} files, {}",
                m.age_days,
                m.storage_class,
                m.files.len(),
                size(m.bytes)
            );
        }
        println!("dry run: nothing moved");
        return;
    }
    for (class, moved) in &r.moved {
        println!("  moved to {class}: {} files, {}", moved.files, size(moved.bytes));
    }
    if r.files_already_there > 0 {
        println!("  {} files were in their class already (recorded)", r.files_already_there);
    }
    if r.files_gone > 0 {
        println!("  {} files were removed by another writer first (their copies left for vacuum)", r.files_gone);
    }
    println!(
        "{} commits {:?}, {} conflicts, {} requests, {:.1} s",
        r.versions.len(),
        r.versions,
        r.commit_conflicts,
        r.requests,
        r.duration_ms as f64 / 1000.0
    );
}
