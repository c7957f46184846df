//! `sediment compact`: show the plan, run it with a progress bar, print what changed.

use clap::Args;

use super::args::parse_size;
use super::render::{human_bytes, partition_label, progress_bar};
use crate::table::log_files::LogView;
use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct CompactArgs {
    /// Table location.
    uri: String,
    /// Target file size (default: the table's delta.targetFileSize, else 128MiB).
    #[arg(long, value_parser = parse_size)]
    target_size: Option<u64>,
    /// Only partitions matching this predicate over partition columns.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: Option<String>,
    /// Fewest files worth rewriting together.
    #[arg(long, default_value_t = 2)]
    min_input_files: usize,
    /// Rewrite at most about this many bytes in this run.
    #[arg(long, value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Rewrite files whose deletion vectors delete more than this share of their rows
    /// (0 to 1; default 0.05).
    #[arg(long, value_name = "RATIO")]
    max_deleted_rows_ratio: Option<f64>,
    /// Sort rows in rewritten files by these columns.
    #[arg(long, value_delimiter = ',', conflicts_with = "zorder_by")]
    sort_by: Vec<String>,
    /// Z-order rows in rewritten files by these columns (two or more).
    #[arg(long, value_delimiter = ',')]
    zorder_by: Vec<String>,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
    /// Also rewrite files in infrequent-access and archive storage classes (left
    /// alone by default); their outputs go into the same class.
    #[arg(long)]
    include_cold: bool,
    /// Bins rewritten in parallel, at most (default: one more than twice the cores).
    #[arg(long)]
    max_concurrent_bins: Option<usize>,
    /// Memory the bins in flight may use.
    #[arg(long, value_parser = parse_size)]
    memory_budget: Option<u64>,
    /// Requests to storage in flight at once, at most (default 128).
    #[arg(long)]
    max_requests_in_flight: Option<usize>,
    /// Copy row groups undecoded when all of a bin's are at least this large (default 8MiB).
    #[arg(long, value_parser = parse_size, conflicts_with = "always_decode")]
    copy_row_groups_above: Option<u64>,
    /// Never copy row groups or splice pages undecoded: decode and encode every column of every bin.
    #[arg(long)]
    always_decode: bool,
}

#[derive(serde::Serialize)]
struct CompactOutput<'a> {
    plan: &'a crate::CompactionPlan,
    report: Option<&'a crate::CompactionReport>,
}

pub(crate) async fn compact(args: CompactArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let open = OpenOptions::new().storage_options(options);
    let mut compact_options = crate::CompactOptions {
        target_file_size: args.target_size,
        min_input_files: Some(args.min_input_files),
        max_bytes: args.max_bytes,
        max_deleted_rows_ratio: args.max_deleted_rows_ratio,
        filter: args.predicate.clone(),
        include_cold: args.include_cold,
        clustering: if !args.sort_by.is_empty() {
            Some(crate::Clustering::SortBy { columns: args.sort_by.clone() })
        } else if !args.zorder_by.is_empty() {
            Some(crate::Clustering::ZOrder { columns: args.zorder_by.clone() })
        } else {
            None
        },
        ..Default::default()
    };
    if let Some(n) = args.max_concurrent_bins {
        compact_options.executor.max_concurrent_bins = n;
    }
    if let Some(bytes) = args.memory_budget {
        compact_options.executor.memory_budget = bytes;
    }
    if let Some(n) = args.max_requests_in_flight {
        compact_options.executor.io.max_requests_in_flight = n;
    }
    if let Some(bytes) = args.copy_row_groups_above {
        compact_options.executor.copy_row_groups_above = Some(bytes);
    }
    if args.always_decode {
        compact_options.executor.copy_row_groups_above = None;
        compact_options.executor.splice_pages_above_rows = None;
    }
    if std::env::var("SEDIMENT_FAULT").as_deref() == Ok("crash-before-commit") {
        // Fault injection for tests: die the way a killed process does, after the
        // data files are written and before the commit.
        compact_options.before_commit = Some(std::sync::Arc::new(|| std::process::abort()));
    }
    // A dry run plans from the log alone (no snapshot of every file's statistics).
    let view = if args.dry_run { LogView::open(&args.uri, &open).await? } else { None };
    let (mut table, plan, before) = match view {
        Some(view) => (None, view.compaction_plan(&compact_options)?, view.info()),
        None => {
            let table = Table::open_with(&args.uri, open).await?;
            let plan = table.compaction_plan(&compact_options)?;
            let info = table.info()?;
            (Some(table), plan, info)
        }
    };
    if !json {
        print_plan(&plan, &before);
    }
    let Some(table) = table.as_mut().filter(|_| !plan.is_empty() && !args.dry_run) else {
        if json {
            println!("{}", serde_json::to_string_pretty(&CompactOutput { plan: &plan, report: None })?);
        }
        return Ok(());
    };
    let progress = progress_bar(plan.bins().count() as u64, "bins");
    let bar = progress.clone();
    compact_options.progress = Some(std::sync::Arc::new(move |done, _total, _bytes| bar.set_position(done as u64)));
    let report = table.execute_compaction(&plan, compact_options).await?;
    progress.finish_and_clear();
    let after = table.info()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&CompactOutput { plan: &plan, report: Some(&report) })?);
        return Ok(());
    }
    println!(
        "files        {} -> {} ({} -> {}), health {} -> {}",
        before.files,
        after.files,
        human_bytes(before.bytes),
        human_bytes(after.bytes),
        before.health.score,
        after.health.score
    );
    println!(
        "rewrote      {} files into {} in {} bins; read {}, wrote {}, write amplification {:.2}",
        report.files_removed,
        report.files_added,
        report.bins_committed,
        human_bytes(report.bytes_read),
        human_bytes(report.bytes_written),
        report.write_amplification()
    );
    if report.bins_copied > 0 {
        println!("copied       {} of the bins by copying their row groups undecoded", report.bins_copied);
    }
    println!(
        "commits      {:?} in {} ms; {} conflicts re-planned",
        report.versions, report.duration_ms, report.commit_conflicts
    );
    println!(
        "requests     {} to storage for data files, at most {} in flight, {} read",
        report.io.requests,
        report.io.peak_in_flight,
        human_bytes(report.io.bytes_read)
    );
    for abandoned in &report.abandoned {
        println!(
            "given up     {} ({} files): {}",
            partition_label(&abandoned.partition),
            abandoned.inputs,
            abandoned.reason
        );
    }
    Ok(())
}

fn print_plan(plan: &crate::CompactionPlan, info: &crate::TableInfo) {
    if plan.is_empty() {
        println!(
            "table {} at version {} is healthy: nothing to compact (health {}/100, {} files, target {})",
            info.uri,
            info.version,
            info.health.score,
            info.files,
            human_bytes(plan.target_file_size)
        );
        return;
    }
    println!("plan for {} at version {} (target {}):", info.uri, info.version, human_bytes(plan.target_file_size));
    for partition in &plan.partitions {
        let inputs: usize = partition.bins.iter().map(|b| b.inputs.len()).sum();
        let bytes: u64 = partition.bins.iter().map(|b| b.input_bytes).sum();
        let label =
            if partition.partition.is_empty() { "(table)".to_string() } else { partition_label(&partition.partition) };
        println!(
            "  {:<40} health {:>3}  {:>6} files -> {:<4} ({})",
            label,
            partition.score,
            inputs,
            partition.bins.len(),
            human_bytes(bytes)
        );
    }
    println!(
        "  total: {} files in {} partitions -> {} files ({})",
        plan.input_files(),
        plan.partitions.len(),
        plan.bins().count(),
        human_bytes(plan.input_bytes())
    );
    if plan.files_with_deletes > 0 {
        let deleted: u64 = plan.bins().flat_map(|b| &b.inputs).map(|f| f.deleted_rows).sum();
        println!(
            "  deletion vectors: {} of these files have them; their {} deleted rows are dropped",
            plan.files_with_deletes, deleted
        );
    }
    if plan.deferred_bins > 0 {
        println!("  deferred: {} bins beyond --max-bytes, for a later run", plan.deferred_bins);
    }
}
