//! `sediment tag create|list|delete`: named versions kept with the table.

use clap::{Args, Subcommand};

use super::args::{parse_duration, parse_timestamp};
use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct TagArgs {
    #[command(subcommand)]
    command: TagCommand,
}

#[derive(Subcommand)]
enum TagCommand {
    /// Name a version of the table (the newest unless --version or --as-of says).
    Create {
        /// Table location.
        uri: String,
        /// The tag's name: letters, digits, '.', '_' and '-'.
        name: String,
        /// The version to name.
        #[arg(long, conflicts_with = "as_of")]
        version: Option<u64>,
        /// The newest version committed at or before this time (RFC 3339, or YYYY-MM-DD[ HH:MM:SS] in UTC).
        #[arg(long, value_parser = parse_timestamp)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Stop pinning the version after this long (90d, 12h, 30m, 45s); never by default.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<chrono::Duration>,
        /// Why the version is kept.
        #[arg(long)]
        note: Option<String>,
    },
    /// List the table's tags.
    List {
        /// Table location.
        uri: String,
    },
    /// Delete a tag (the version stays until vacuum reclaims it).
    Delete {
        /// Table location.
        uri: String,
        /// The tag's name.
        name: String,
    },
}

pub(crate) async fn tag(args: TagArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let open = |uri: String| {
        let options = OpenOptions::new().storage_options(options.clone());
        async move { Table::open_with(&uri, options).await }
    };
    match args.command {
        TagCommand::Create { uri, name, version, as_of, expires_in, note } => {
            let table = open(uri.clone()).await?;
            let version = match (version, as_of) {
                (Some(v), _) => v,
                (None, Some(ts)) => {
                    let at =
                        Table::open_with(&uri, OpenOptions::new().storage_options(options.clone()).as_of(ts)).await?;
                    at.version().unwrap_or_default()
                }
                (None, None) => table.version().unwrap_or_default(),
            };
            let expires_at = expires_in.map(|d| chrono::Utc::now() + d);
            let tag = table.create_tag(&name, version, expires_at, note).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tag)?);
            } else {
                let until = tag.expires_at.map(|t| format!(" until {t}")).unwrap_or_default();
                println!("tag {} names version {} of {uri}{until}", tag.name, tag.version);
            }
        }
        TagCommand::List { uri } => {
            let tags = open(uri).await?.tags().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tags)?);
                return Ok(());
            }
            let now = chrono::Utc::now();
            println!("{:<24}  {:>8}  {:<20}  {:<28}  note", "tag", "version", "created (UTC)", "expires (UTC)");
            for t in tags {
                let expires = match t.expires_at {
                    Some(at) if t.is_expired(now) => format!("{} (expired)", at.format("%Y-%m-%d %H:%M:%S")),
                    Some(at) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    None => "never".into(),
                };
                println!(
                    "{:<24}  {:>8}  {:<20}  {:<28}  {}",
                    t.name,
                    t.version,
                    t.created_at.format("%Y-%m-%d %H:%M:%S"),
                    expires,
                    t.note.unwrap_or_default()
                );
            }
        }
        TagCommand::Delete { uri, name } => {
            let tag = open(uri).await?.delete_tag(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tag)?);
            } else {
                println!("deleted tag {} (it named version {})", tag.name, tag.version);
            }
        }
    }
    Ok(())
}
