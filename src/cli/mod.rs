//! The `sediment` command line: one file per command, each a thin layer that parses
//! its arguments, makes one library call and renders the result (a table for people,
//! JSON with `--json`). `src/bin/sediment.rs` parses [`Cli`], installs logging and
//! runs [`run`]; errors carry a [`crate::ErrorKind`] that [`exit_code`] maps to the
//! process's exit code.

mod append;
mod args;
mod changes;
mod checkpoint;
mod compact;
mod constraint;
mod demo;
mod dml;
mod expire;
mod explain;
mod history;
mod info;
mod merge;
mod output;
mod pipeline;
mod render;
mod restore;
mod scan;
mod serve;
mod tables;
mod tag;
mod tier;
mod vacuum;

use clap::{Parser, Subcommand};

use crate::StorageOptions;

/// Everything the command line accepts.
#[derive(Parser)]
#[command(name = "sediment", version, about = "Keep Delta Lake tables healthy: write, scan, time travel, inspect.")]
pub struct Cli {
    /// Print results as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// A storage option such as aws_endpoint=http://127.0.0.1:9000 (repeatable).
    #[arg(long = "storage-option", value_name = "KEY=VALUE", global = true, value_parser = args::parse_key_value)]
    storage_options: Vec<(String, String)>,
    /// Log more (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// How much to log: 0 (warnings), 1 (`-v`), 2 or more (`-vv`).
    pub fn verbosity(&self) -> u8 {
        self.verbose
    }
}

#[derive(Subcommand)]
enum Command {
    /// Append (or overwrite) Parquet, CSV or NDJSON files into a table, creating it when missing.
    Append(append::AppendArgs),
    /// Read a table, optionally at an older version.
    Scan(scan::ScanArgs),
    /// List the table's commits, newest first.
    History(history::HistoryArgs),
    /// Describe a table: version, files, bytes, rows, partitions, file sizes.
    Info(info::InfoArgs),
    /// Delete the rows matching a predicate, rewriting only the files that hold them.
    Delete(dml::DeleteArgs),
    /// Set columns of the rows matching a predicate, rewriting only the files that hold them.
    Update(dml::UpdateArgs),
    /// Merge (upsert) Parquet, CSV or NDJSON files into a table by key: update the rows
    /// whose keys exist, insert the others. Only files holding a matched key are rewritten.
    Merge(merge::MergeArgs),
    /// Make an older version (by --version, --as-of or --tag) current again, in one commit.
    Restore(restore::RestoreArgs),
    /// Delete data files and log entries that no version inside the retention, and no
    /// tagged version, needs (lite: tombstones only; --full: also unreferenced files).
    Vacuum(vacuum::VacuumArgs),
    /// Remove rows older than a horizon: whole partitions of a date partition column in
    /// one metadata-only commit, else a delete by predicate.
    Expire(expire::ExpireArgs),
    /// Move old partitions to colder S3 storage classes by their age (server-side copies
    /// in place, each file's class recorded in the log); --dry-run shows the plan.
    Tier(tier::TierArgs),
    /// Write a checkpoint of the table's current version now.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Name versions of a table (tags, kept with it under _sediment/tags/): create, list, delete.
    Tag(tag::TagArgs),
    /// A table's CHECK constraints (Delta `delta.constraints.*`), checked on every write: add, drop, list.
    Constraint(constraint::ConstraintArgs),
    /// Print the change data feed: the rows each commit inserted, deleted or updated,
    /// with `_change_type`, `_commit_version` and `_commit_timestamp`.
    Changes(changes::ChangesArgs),
    /// Show which files a predicate selects: in the snapshot, after partition pruning,
    /// after statistics skipping.
    Explain(explain::ExplainArgs),
    /// Compact small files into files near the target size, partition by partition.
    Compact(compact::CompactArgs),
    /// Write a bronze events table the way a streaming writer would, then inspect it.
    Demo(demo::DemoArgs),
    /// Run the daemon: scheduler, workers and the HTTP API over a catalog of tables.
    Serve(serve::ServeArgs),
    /// Schedule what is due, run it, exit (for cron and Kubernetes CronJobs): exit code
    /// 0 when nothing failed, 10 when a job failed.
    RunOnce(serve::ServiceArgs),
    /// The catalog's tables: list, register, describe, unregister, discover.
    Tables(tables::TablesArgs),
    /// The pipelines declared in the settings: list, run NAME, status NAME, backfill NAME --from-version N.
    Pipeline(pipeline::PipelineArgs),
    /// The pipelines that write a table and those that read it, with the versions consumed.
    Lineage(pipeline::LineageArgs),
}

/// Run one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let options: StorageOptions = cli.storage_options.iter().cloned().collect();
    let json = cli.json;
    match cli.command {
        Command::Append(args) => append::append(args, options, json).await,
        Command::Scan(args) => scan::scan(args, options, json).await,
        Command::History(args) => history::history(args, options, json).await,
        Command::Info(args) => info::info(args, options, json).await,
        Command::Delete(args) => dml::delete(args, options, json).await,
        Command::Update(args) => dml::update(args, options, json).await,
        Command::Merge(args) => merge::merge(args, options, json).await,
        Command::Restore(args) => restore::restore(args, options, json).await,
        Command::Vacuum(args) => vacuum::vacuum(args, options, json).await,
        Command::Expire(args) => expire::expire(args, options, json).await,
        Command::Tier(args) => tier::tier(args, options, json).await,
        Command::Checkpoint(args) => checkpoint::checkpoint(args, options, json).await,
        Command::Tag(args) => tag::tag(args, options, json).await,
        Command::Constraint(args) => constraint::constraint(args, options, json).await,
        Command::Changes(args) => changes::changes(args, options, json).await,
        Command::Explain(args) => explain::explain(args, options, json).await,
        Command::Compact(args) => compact::compact(args, options, json).await,
        Command::Demo(args) => demo::demo(args, json).await,
        Command::Serve(args) => serve::serve(args, json).await,
        Command::RunOnce(args) => serve::run_once(args, json).await,
        Command::Tables(args) => tables::tables(args, json).await,
        Command::Pipeline(args) => pipeline::pipeline(args, json).await,
        Command::Lineage(args) => pipeline::lineage(args, json).await,
    }
}

/// The exit code for an error: the kind of the first [`crate::Error`] in its chain
/// (see [`crate::ErrorKind::exit_code`]), else 1; `run-once` whose jobs failed: 10.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<serve::JobsFailed>().is_some() {
        return serve::JOBS_FAILED_EXIT_CODE;
    }
    err.chain().find_map(|e| e.downcast_ref::<crate::Error>()).map(|e| e.kind().exit_code() as u8).unwrap_or(1)
}
