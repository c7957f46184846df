//! `sediment tables list|register|describe|unregister|discover`: the catalog, without curl.

use clap::{Args, Subcommand};
use sediment_catalog::{Layer, NewTable};

use super::render::human_bytes;
use super::serve::ServiceArgs;
use crate::service::ops;

#[derive(Args)]
pub(crate) struct TablesArgs {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(subcommand)]
    command: TablesCommand,
}

#[derive(Subcommand)]
enum TablesCommand {
    /// List the registered tables.
    List,
    /// Register an existing Delta table.
    Register {
        /// namespace.table
        name: String,
        /// bronze, silver or gold.
        #[arg(long)]
        layer: Layer,
        /// Where the table is (s3://bucket/prefix, a local path).
        #[arg(long)]
        location: String,
        /// A storage profile of the settings ([storage.NAME]) to open it with.
        #[arg(long = "storage-profile", value_name = "NAME")]
        storage_profile: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Policy overrides as JSON, e.g. '{"vacuum": {"retention": "3d"}}'.
        #[arg(long, value_name = "JSON")]
        policy: Option<String>,
        /// A CHECK constraint the table must have, NAME=EXPR (repeatable); added when
        /// missing, after every row is checked.
        #[arg(long = "constraint", value_name = "NAME=EXPR", value_parser = super::args::parse_key_value)]
        constraints: Vec<(String, String)>,
    },
    /// Show a table: its policy in force, health, last jobs, tags.
    Describe {
        /// namespace.table
        name: String,
    },
    /// Unregister a table (the data stays).
    Unregister {
        /// namespace.table
        name: String,
    },
    /// Register every Delta table under a prefix as NAMESPACE.<folder>.
    Discover {
        /// Where to look (s3://bucket/prefix, a local path).
        prefix: String,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        layer: Layer,
        #[arg(long = "storage-profile", value_name = "NAME")]
        storage_profile: Option<String>,
        /// How many folders down to look.
        #[arg(long, default_value_t = 3)]
        max_depth: usize,
    },
}

pub(crate) async fn tables(args: TablesArgs, json: bool) -> anyhow::Result<()> {
    let service = args.service.service().await?;
    match args.command {
        TablesCommand::List => {
            let tables = service.catalog().list_tables().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "items": tables }))?);
            } else {
                for t in &tables {
                    println!("{:<32} {:<7} {}", t.name, t.layer, t.location);
                }
                if tables.is_empty() {
                    println!("no tables registered (sediment tables register NAME --layer L --location URI)");
                }
            }
        }
        TablesCommand::Register { name, layer, location, storage_profile, owner, description, policy, constraints } => {
            let policy = match policy {
                Some(text) => Some(
                    serde_json::from_str(&text)
                        .map_err(|e| crate::Error::invalid(format!("--policy: not JSON: {e}")))?,
                ),
                None => None,
            };
            let new = NewTable {
                name,
                layer,
                location,
                storage_options: storage_profile,
                owner,
                description,
                policy,
                constraints: constraints.into_iter().collect(),
            };
            let entry = ops::register_table(&service, new).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entry)?);
            } else {
                println!("registered {} ({}) at {}", entry.name, entry.layer, entry.location);
            }
        }
        TablesCommand::Describe { name } => {
            let d = ops::describe_table(&service, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
                return Ok(());
            }
            println!("table        {} ({})", d.table.name, d.table.layer);
            println!("location     {}", d.table.location);
            if let Some(owner) = &d.table.owner {
                println!("owner        {owner}");
            }
            match (&d.health, d.version) {
                (Some(h), Some(v)) => println!(
                    "version      {v}: {} files, {}, health {} ({} below 3/4 of {})",
                    h.files,
                    human_bytes(h.bytes),
                    h.score,
                    h.undersized,
                    human_bytes(h.target_file_size)
                ),
                _ => println!("version      unreadable: {}", d.error.as_deref().unwrap_or("?")),
            }
            println!("policy       {}", serde_json::to_string(&d.policy)?);
            for tag in &d.tags {
                println!("tag          {} = version {}", tag.name, tag.version);
            }
            for job in &d.last_jobs {
                println!(
                    "job {:>6}   {:<10} {:<9} attempt {} {}",
                    job.id,
                    job.kind,
                    job.state,
                    job.attempt,
                    job.error.as_deref().unwrap_or(&job.reason)
                );
            }
        }
        TablesCommand::Unregister { name } => {
            let entry = ops::unregister_table(&service, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entry)?);
            } else {
                println!("unregistered {} (its data at {} stays)", entry.name, entry.location);
            }
        }
        TablesCommand::Discover { prefix, namespace, layer, storage_profile, max_depth } => {
            let found = ops::discover(&service, &prefix, &namespace, layer, storage_profile, max_depth).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "items": found }))?);
            } else {
                for d in &found {
                    println!("{:<32} {:<48} {}", d.name, d.location, d.status);
                }
                println!("{} Delta tables under {prefix}", found.len());
            }
        }
    }
    Ok(())
}
