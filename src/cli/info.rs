//! `sediment info`: what a version holds, its health, and the orphan files beside it.

use clap::Args;

use super::args::{TimeTravel, open_options};
use super::render::{human_bytes, print_info};
use crate::{StorageOptions, Table};

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// Table location.
    uri: String,
    #[command(flatten)]
    at: TimeTravel,
}

#[derive(serde::Serialize)]
struct InfoOutput {
    #[serde(flatten)]
    info: crate::TableInfo,
    orphan_files: Vec<crate::table::info::OrphanFile>,
    tags: Vec<crate::Tag>,
}

pub(crate) async fn info(args: InfoArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let table = Table::open_with(&args.uri, open_options(options, &args.at)).await?;
    let info = table.info()?;
    let orphan_files = table.orphan_files().await?;
    let tags = table.tags().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&InfoOutput { info, orphan_files, tags })?);
    } else {
        print_info(&info);
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
