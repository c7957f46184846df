//! `sediment checkpoint`: write a checkpoint of the table's current version now.

use clap::Args;

use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct CheckpointArgs {
    /// Table location.
    uri: String,
}

pub(crate) async fn checkpoint(args: CheckpointArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let report = table.checkpoint().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checkpoint written at version {}: {} live files, {} ms",
            report.version, report.files, report.duration_ms
        );
    }
    Ok(())
}
