//! `sediment explain`: which files a predicate selects, step by step.

use clap::Args;

use super::args::{TimeTravel, open_options};
use super::render::human_bytes;
use crate::{StorageOptions, Table};

#[derive(Args)]
pub(crate) struct ExplainArgs {
    /// Table location.
    uri: String,
    /// A SQL boolean expression.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: String,
    #[command(flatten)]
    at: TimeTravel,
}

pub(crate) async fn explain(args: ExplainArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let ExplainArgs { uri, predicate, at } = args;
    let table = Table::open_with(&uri, open_options(options, &at)).await?;
    let plan = table.plan_scan(Some(&predicate))?;
    if json {
        let files: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"report": plan.report, "files": files}))?);
        return Ok(());
    }
    let r = &plan.report;
    println!("table {} at version {}, where {predicate}", table.uri(), r.version);
    println!("  files in snapshot            {:>8}", r.files_in_snapshot);
    println!("  after partition pruning      {:>8}", r.files_after_partition_pruning);
    println!(
        "  after statistics skipping    {:>8}  ({})",
        r.files_after_stats_skipping,
        human_bytes(r.bytes_in_selected_files)
    );
    Ok(())
}
