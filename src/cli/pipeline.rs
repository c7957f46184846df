//! `sediment pipeline list|run|status|backfill` and `sediment lineage TABLE`: the
//! pipelines declared in the settings, run from the command line (a cron job, a
//! Kubernetes CronJob) as the daemon runs them.

use clap::{Args, Subcommand};

use super::serve::ServiceArgs;
use crate::pipeline::PipelineRunReport;
use crate::service::pipelines;

#[derive(Args)]
pub(crate) struct PipelineArgs {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// List the declared pipelines.
    List,
    /// Run a pipeline once: read what its sources committed since its last run, write its target.
    Run {
        /// The pipeline's name.
        name: String,
    },
    /// What a pipeline consumed of each source, how far behind it is, its last run.
    Status {
        /// The pipeline's name.
        name: String,
    },
    /// Reprocess a pipeline's source from a version (exactly once, as its own run).
    Backfill {
        /// The pipeline's name.
        name: String,
        /// The first source version to read again.
        #[arg(long = "from-version", value_name = "N")]
        from_version: u64,
    },
}

#[derive(Args)]
pub(crate) struct LineageArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The table's catalog name (namespace.table).
    table: String,
}

pub(crate) async fn pipeline(args: PipelineArgs, json: bool) -> anyhow::Result<()> {
    let service = args.service.service().await?;
    pipelines::check(&service).await?;
    match args.command {
        PipelineCommand::List => {
            let list = pipelines::list(&service);
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "items": list }))?);
            } else if list.is_empty() {
                println!("no pipelines declared (add [[pipelines]] to the settings)");
            } else {
                for p in &list {
                    let kind = serde_json::to_value(p.kind)?;
                    println!(
                        "{:<28} {:<7} {} -> {}  ({}, {} rules)",
                        p.name,
                        kind.as_str().unwrap_or(""),
                        p.sources.join(", "),
                        p.target,
                        p.trigger,
                        p.rules
                    );
                }
            }
        }
        PipelineCommand::Run { name } => print_run(&pipelines::run(&service, &name, None).await?, json)?,
        PipelineCommand::Backfill { name, from_version } => {
            print_run(&pipelines::run(&service, &name, Some(from_version)).await?, json)?
        }
        PipelineCommand::Status { name } => {
            let status = pipelines::status(&service, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!("pipeline   {} -> {} ({})", status.pipeline.name, status.pipeline.target, status.pipeline.trigger);
            match status.target_version {
                Some(v) => println!("target     version {v}"),
                None => println!("target     not created yet"),
            }
            for s in &status.sources {
                println!(
                    "source     {:<28} consumed {:>8}  latest {:>8}  behind {}",
                    s.table,
                    s.consumed_version.map_or("-".into(), |v| v.to_string()),
                    s.latest_version.map_or("-".into(), |v| v.to_string()),
                    s.versions_behind.map_or("-".into(), |v| v.to_string())
                );
            }
            match &status.last_run {
                Some(run) => println!("last run   {}", serde_json::to_string(run)?),
                None => println!("last run   none among the target's recent commits"),
            }
        }
    }
    Ok(())
}

fn print_run(report: &PipelineRunReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    if report.up_to_date {
        println!("pipeline {}: up to date, nothing committed", report.pipeline);
        return Ok(());
    }
    for s in &report.sources {
        let from = s.after_version.map_or("the snapshot at".to_string(), |v| format!("versions {}..", v + 1));
        let kind = serde_json::to_value(s.increment)?;
        println!(
            "source {}: {from}{} ({}), {} rows{}",
            s.table,
            s.to_version,
            kind.as_str().unwrap_or(""),
            s.rows,
            if s.more_pending { ", more pending" } else { "" }
        );
    }
    println!(
        "rows: {} read = {} inserted + {} updated + {} deleted + {} quarantined + {} duplicates + {} superseded",
        report.rows_read,
        report.rows_inserted,
        report.rows_updated,
        report.rows_deleted,
        report.rows_quarantined,
        report.rows_dropped_duplicates,
        report.rows_superseded
    );
    for r in &report.rules {
        println!(
            "rule {:<32} {:<10} {:>8} of {:>8} rows failed{}",
            r.rule,
            r.action,
            r.rows_failed,
            r.rows_checked,
            r.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    match (report.target_version, report.replayed) {
        (_, true) => println!("target {}: this run was already committed", report.target),
        (Some(v), _) => println!("target {}: committed version {v} in {} ms", report.target, report.duration_ms),
        (None, _) => println!("target {}: nothing to commit", report.target),
    }
    Ok(())
}

pub(crate) async fn lineage(args: LineageArgs, json: bool) -> anyhow::Result<()> {
    let service = args.service.service().await?;
    let lineage = pipelines::lineage(&service, &args.table).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&lineage)?);
        return Ok(());
    }
    println!("table {} (version {})", lineage.table, lineage.version.map_or("-".into(), |v| v.to_string()));
    let edges = lineage.upstream.iter().map(|e| ("<-", e)).chain(lineage.downstream.iter().map(|e| ("->", e)));
    for (arrow, e) in edges {
        let consumed = e.consumed_version.map_or("-".into(), |v| v.to_string());
        println!("  {arrow} {:<28} by {:<24} consumed to version {consumed}", e.table, e.pipeline);
    }
    if lineage.upstream.is_empty() && lineage.downstream.is_empty() {
        println!("  no pipeline reads or writes it");
    }
    Ok(())
}
