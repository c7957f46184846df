//! `sediment constraint add|drop|list`: a table's CHECK constraints, checked on every write.

use clap::{Args, Subcommand};

use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct ConstraintArgs {
    #[command(subcommand)]
    command: ConstraintCommand,
}

#[derive(Subcommand)]
enum ConstraintCommand {
    /// Add a CHECK constraint: every row already there is read and must satisfy it, then
    /// every later write (by any Delta writer) must.
    Add {
        /// Table location.
        uri: String,
        /// The constraint's name: letters, digits and '_'.
        name: String,
        /// The SQL condition every row must make true (false or NULL refuses the row),
        /// such as "amount >= 0" or "status IN ('new', 'paid')".
        expression: String,
    },
    /// Drop a CHECK constraint.
    Drop {
        /// Table location.
        uri: String,
        /// The constraint's name.
        name: String,
        /// Succeed when the table has no such constraint.
        #[arg(long)]
        if_exists: bool,
    },
    /// List the table's CHECK constraints.
    List {
        /// Table location.
        uri: String,
    },
}

pub(crate) async fn constraint(args: ConstraintArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let open = |uri: String| {
        let options = OpenOptions::new().storage_options(options.clone());
        async move { Table::open_with(&uri, options).await }
    };
    match args.command {
        ConstraintCommand::Add { uri, name, expression } => {
            let mut table = open(uri.clone()).await?;
            let report = table.add_constraint(&name, &expression).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.already_present {
                println!("table {uri} has constraint {name} already; nothing committed");
            } else {
                println!(
                    "added constraint {name} ({}) to {uri} at version {}: {} rows in {} files checked",
                    expression.trim(),
                    report.version.unwrap_or_default(),
                    report.rows_checked,
                    report.files_checked
                );
            }
        }
        ConstraintCommand::Drop { uri, name, if_exists } => {
            let version = open(uri.clone()).await?.drop_constraint(&name, if_exists).await?;
            if json {
                println!("{}", serde_json::json!({ "name": name, "version": version }));
            } else {
                match version {
                    Some(v) => println!("dropped constraint {name} of {uri} at version {v}"),
                    None => println!("table {uri} has no constraint {name}; nothing committed"),
                }
            }
        }
        ConstraintCommand::List { uri } => {
            let constraints = open(uri).await?.constraints()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&constraints)?);
                return Ok(());
            }
            println!("{:<24}  condition", "constraint");
            for c in constraints {
                println!("{:<24}  {}", c.name, c.expression);
            }
        }
    }
    Ok(())
}
