//! `sediment info`: what a version holds, its health, and the orphan files beside it.

use clap::Args;

use super::args::{TimeTravel, open_options};
use super::render::{human_bytes, print_info};
use crate::maintain::tiering::{ClassMismatch, CostReport, TierSteps, has_storage_classes};
use crate::{LogView, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// Table location.
    uri: String,
    #[command(flatten)]
    at: TimeTravel,
    /// With the storage cost (S3 tables), what tiering by these steps would save,
    /// e.g. 30d:STANDARD_IA,180d:GLACIER_IR.
    #[arg(long, value_name = "STEPS")]
    tier_policy: Option<String>,
    /// The partition column partitions age by (default: the first date-like one).
    #[arg(long)]
    column: Option<String>,
    /// Compare each file's class in the store (one HeadObject per file) with the one
    /// the log records, and list the files where they differ.
    #[arg(long)]
    check_storage_classes: bool,
    /// The settings file whose `[storage_prices]` the cost uses (default: us-east-1 list prices).
    #[arg(long, env = "SEDIMENT_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct InfoOutput {
    #[serde(flatten)]
    info: crate::TableInfo,
    orphan_files: Vec<crate::table::info::OrphanFile>,
    tags: Vec<crate::Tag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<CostReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_class_mismatches: Option<Vec<ClassMismatch>>,
}

/// The version `info` describes: read from the log alone where it can be (no snapshot
/// of every file's statistics; the latest version), else loaded by delta-rs.
enum Described {
    Log(LogView),
    Table(Table),
}

pub(crate) async fn info(args: InfoArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let open = open_options(options, &args.at);
    // Comparing classes with the store reads the snapshot's files as delta-rs has them.
    let view = if args.check_storage_classes { None } else { LogView::open(&args.uri, &open).await? };
    let described = match view {
        Some(view) => Described::Log(view),
        None => Described::Table(Table::open_with(&args.uri, open).await?),
    };
    let (info, orphan_files, tags) = match &described {
        Described::Log(v) => (v.info(), v.orphan_files().await?, v.tags().await?),
        Described::Table(t) => (t.info()?, t.orphan_files().await?, t.tags().await?),
    };
    let storage = if has_storage_classes(&args.uri)? {
        let prices = match &args.config {
            Some(path) => crate::service::Settings::load(Some(path))?.storage_prices,
            None => Default::default(),
        };
        let steps = args
            .tier_policy
            .as_deref()
            .map(TierSteps::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--tier-policy: {e}"))?;
        let (steps, column, now) = (steps.as_ref(), args.column.as_deref(), chrono::Utc::now());
        Some(match &described {
            Described::Log(v) => v.storage_cost(&prices, steps, column, now)?,
            Described::Table(t) => t.storage_cost(&prices, steps, column, now)?,
        })
    } else {
        None
    };
    let storage_class_mismatches = match &described {
        Described::Table(t) if args.check_storage_classes => t.check_storage_classes().await?,
        _ => None,
    };
    if json {
        let output = InfoOutput { info, orphan_files, tags, storage, storage_class_mismatches };
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print_info(&info);
        if let Some(storage) = &storage {
            print_storage(storage);
        }
        match &storage_class_mismatches {
            Some(m) if m.is_empty() => println!("classes      the store agrees with the log for every file"),
            Some(m) => {
                println!(
                    "classes      {} files are not in the class the log records (`sediment tier` records a class it finds):",
                    m.len()
                );
                for m in m.iter().take(20) {
                    println!("               {}: log {}, store {}", m.path, m.log, m.store);
                }
            }
            None if args.check_storage_classes => {
                println!("classes      a local or memory table has no storage classes")
            }
            None => {}
        }
        if !tags.is_empty() {
            let now = chrono::Utc::now();
            let named: Vec<String> = tags
                .iter()
                .map(|t| format!("{} (v{}{})", t.name, t.version, if t.is_expired(now) { ", expired" } else { "" }))
                .collect();
            println!("tags         {}", named.join(", "));
        }
        if !orphan_files.is_empty() {
            let bytes: u64 = orphan_files.iter().map(|o| o.size).sum();
            println!(
                "orphans      {} data files ({}) referenced by no version: left by writers that died before committing, or still being written",
                orphan_files.len(),
                human_bytes(bytes)
            );
        }
    }
    Ok(())
}

/// The storage section of `sediment info`: by class, by range, and the policy's savings.
fn print_storage(storage: &CostReport) {
    let usd = |v: f64| if v < 100.0 { format!("${v:.2}") } else { format!("${v:.0}") };
    let classes: Vec<String> = storage
        .classes
        .iter()
        .map(|c| format!("{} {} files {} {}", c.storage_class, c.files, human_bytes(c.bytes), usd(c.monthly_usd)))
        .collect();
    println!("storage      {} a month (estimate): {}", usd(storage.monthly_usd), classes.join("; "));
    for range in storage.ranges.iter().take(36) {
        let classes: Vec<String> =
            range.classes.iter().map(|c| format!("{} {}", c.storage_class, human_bytes(c.bytes))).collect();
        println!(
            "  {:<10} {:>5} partitions {:>9}/month  {}",
            range.range,
            range.partitions,
            usd(range.monthly_usd),
            classes.join(", ")
        );
    }
    if storage.ranges.len() > 36 {
        println!("  ... and {} more ranges (--json lists them all)", storage.ranges.len() - 36);
    }
    if let Some(p) = &storage.policy {
        println!(
            "tiering      {} would move {} files ({}): {} a month, saving {}",
            p.policy,
            p.files_to_move,
            human_bytes(p.bytes_to_move),
            usd(p.monthly_usd_after),
            usd(p.monthly_savings_usd)
        );
    }
}
