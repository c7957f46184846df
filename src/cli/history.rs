//! `sediment history`: the table's commits, newest first.

use clap::Args;

use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct HistoryArgs {
    /// Table location: a path, file://, memory:// or s3://bucket/prefix.
    uri: String,
    /// At most this many commits.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

pub(crate) async fn history(args: HistoryArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let entries = table.history(Some(args.limit)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let mut tagged: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for tag in table.tags().await? {
        tagged.entry(tag.version).or_default().push(tag.name);
    }
    println!("{:>8}  {:<24}  {:<18}  {:<22}  metrics", "version", "time (UTC)", "operation", "engine");
    for e in entries {
        let time = e
            .timestamp
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let metrics = match &e.metrics {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let tags = tagged.get(&e.version).map(|t| format!("  [tags: {}]", t.join(", "))).unwrap_or_default();
        println!(
            "{:>8}  {:<24}  {:<18}  {:<22}  {}{}",
            e.version,
            time,
            e.operation.unwrap_or_default(),
            e.engine.unwrap_or_default(),
            metrics,
            tags
        );
    }
    Ok(())
}
