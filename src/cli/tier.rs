//! `sediment tier`: storage tiering by the table's partitions. In this build it plans
//! (`--dry-run`): which files of which due partitions would move to which class, from
//! the log alone. Moving them (server-side copies, each file's class recorded in the
//! log) is not built yet and is refused, saying so.

use clap::Args;

use crate::maintain::tiering::{TierSteps, has_storage_classes};
use crate::{OpenOptions, StorageOptions, Table};

#[derive(Args)]
pub(crate) struct TierArgs {
    /// Table location.
    uri: String,
    /// Steps, older and colder as they go: AGE:CLASS,... e.g. 30d:STANDARD_IA,180d:GLACIER_IR.
    #[arg(long, value_name = "STEPS")]
    policy: String,
    /// The partition column to age by (default: the first date, timestamp or ISO-date one).
    #[arg(long)]
    column: Option<String>,
    /// Say what would move; change nothing (required in this build).
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn tier(args: TierArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let steps = TierSteps::parse(&args.policy).map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
    if !args.dry_run {
        anyhow::bail!(
            "tier: moving files is not built yet; run with --dry-run to see the plan (server-side copies and \
             the classes recorded in the log come next)"
        );
    }
    let has_classes = has_storage_classes(&args.uri)?;
    let table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let plan = table.tier_plan(&steps, args.column.as_deref(), chrono::Utc::now())?;
    if json {
        let mut value = serde_json::to_value(&plan)?;
        value["storage_classes"] = has_classes.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if !has_classes {
        println!("{}: a local or memory table has no storage classes; tiering has nothing to do", args.uri);
        return Ok(());
    }
    let by = match &plan.age_by {
        crate::maintain::tiering::AgeBy::Partition(column) => format!("partition column `{column}`"),
        crate::maintain::tiering::AgeBy::AddTime => "the time each file was added".to_string(),
    };
    println!(
        "tier plan by {by}: {} files, {} in {} moves; {} files in place, {} not due",
        plan.files(),
        bytesize::ByteSize::b(plan.bytes()),
        plan.moves.len(),
        plan.files_in_place,
        plan.files_not_due
    );
    for m in &plan.moves {
        let partition: Vec<String> =
            m.partition.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null"))).collect();
        let partition = if partition.is_empty() { "(unpartitioned)".to_string() } else { partition.join("/") };
        println!(
            "  {partition}: {} days old -> {}: {} files, {}",
            m.age_days,
            m.storage_class,
            m.files.len(),
            bytesize::ByteSize::b(m.bytes)
        );
    }
    Ok(())
}
