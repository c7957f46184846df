//! Medallion pipelines: bronze to silver to gold, incremental and exactly once.
//!
//! A pipeline ([`PipelineSpec`], declared in the settings by name) reads what changed
//! in its sources since the versions its last run consumed ([`increment`]), checks
//! the rows against its rules ([`rules`]), and writes its target: an **upsert**
//! pipeline merges change events by key ([`upsert`]); a **sql** pipeline runs a query
//! over its sources.
//!
//! Exactly once: the target commit carries, in the same commit as the data, a Delta
//! `txn` per source (application id `sediment-pipeline:<pipeline>:<source>`, version
//! = the last source version consumed). A run killed before its commit left nothing;
//! the next run starts from the recorded versions. The quarantine table (rows that
//! break a `quarantine` rule) is committed first, with the same `txn`: a run killed
//! between the two commits is redone over the same source range, its quarantine write
//! recognised as done, so no quarantined row is lost or written twice.
//!
//! Lineage: every commit a run makes carries `commitInfo.sedimentPipeline` (the
//! pipeline, the run, each source's table and version range, the row counts);
//! [`crate::service::pipelines`] turns those and the `txn`s into status and lineage.
//!
//! Accounting: each run checks that the rows it read equal the rows written
//! (inserted, updated, deleted), plus the rows quarantined, plus the rows dropped
//! (duplicates within the run, events superseded by newer rows of the target, deletes
//! of keys the target does not have).

pub(crate) mod increment;
mod quality;
pub mod rules;
mod scd2;
pub mod spec;
mod sql;
mod upsert;

use std::time::Instant;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use tracing::instrument;

pub use increment::{IncrementKind, Limits, SourceIncrement};
pub use quality::QUARANTINE_COLUMNS;
pub use rules::{RuleAction, RuleCheck, RuleResult, RuleSpec};
pub use spec::{PipelineSpec, PipelineType, Scd2Spec, SqlWriteMode, validate_pipelines};

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::schema::SchemaMode;
use crate::write::WriteOptions;

/// The `commitInfo` key of a pipeline run's commits.
pub const LINEAGE_KEY: &str = "sedimentPipeline";

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineRunReport {
    pub pipeline: String,
    /// `pipeline:source@first..last`: the same for a run redone after a kill.
    pub run_id: String,
    pub target: String,
    /// What was read of each source.
    pub sources: Vec<SourceIncrement>,
    /// No source had anything new: nothing was read or committed.
    pub up_to_date: bool,
    /// A target commit was made.
    pub committed: bool,
    /// The run's target commit was already in the log (a racing run made it).
    pub replayed: bool,
    pub target_version: Option<u64>,
    /// The quarantine commit, when rows were quarantined (`None` also when a killed
    /// earlier attempt of this run had committed them).
    pub quarantine_version: Option<u64>,
    pub rows_read: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_deleted: u64,
    pub rows_quarantined: u64,
    /// Older events of a key within the run.
    pub rows_dropped_duplicates: u64,
    /// Events older than the target's row, and deletes of keys the target lacks.
    pub rows_superseded: u64,
    /// Target rows a sql pipeline's merge deleted (rows of recomputed partitions the
    /// query no longer produces); not rows read.
    pub rows_replaced: u64,
    /// Per rule: rows checked and failed.
    pub rules: Vec<RuleResult>,
    pub duration_ms: u64,
    /// Where the time went.
    pub phases: RunPhases,
}

/// A run's time by step, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunPhases {
    /// Reading the sources' logs and increments (a sql run: the query too).
    pub read_ms: u64,
    /// Projection, rules and deduplication (a sql run: the rules).
    pub check_ms: u64,
    /// The quarantine and tombstone commits and the target's write and commit.
    pub write_ms: u64,
}

impl PipelineRunReport {
    /// Rows written: inserted, updated and deleted.
    pub fn rows_written(&self) -> u64 {
        self.rows_inserted + self.rows_updated + self.rows_deleted
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Reprocess the source from this version (a backfill) instead of continuing from
    /// the last consumed one; recorded under its own `txn` application id, so a
    /// backfill is exactly once too.
    pub backfill_from: Option<u64>,
    /// The time rules (freshness) and the quarantine see.
    pub now: DateTime<Utc>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { backfill_from: None, now: Utc::now() }
    }
}

/// A source of a run: its catalog name and the table at its latest version.
pub struct SourceTable<'a> {
    pub name: &'a str,
    pub table: &'a Table,
}

/// What the upsert step hands to the commit step.
pub(crate) struct Written {
    batches: Vec<RecordBatch>,
    quarantined: Vec<RecordBatch>,
    /// The target's columns (the projection's), for a run with no rows to write.
    schema: deltalake::arrow::datatypes::SchemaRef,
}

/// What a run step needs besides the spec.
pub(crate) struct RunInputs<'a> {
    pub source_name: &'a str,
    pub now: DateTime<Utc>,
    /// Rows read by the pipeline's previous runs, newest first (for `row_count`).
    pub trailing_rows: Vec<u64>,
}

/// The tables a run writes: the target (created by the first run when it does not
/// exist), the quarantine beside it (needed when a rule quarantines), and the
/// tombstones of an upsert pipeline with `sequence_by` (the newest delete per key,
/// so an older event arriving later does not bring a deleted key back; a Delta table
/// under the target's `_sediment/`, which readers and vacuum leave alone).
pub struct Outputs<'a> {
    pub target: &'a mut Table,
    pub quarantine: Option<&'a mut Table>,
    pub tombstones: Option<&'a mut Table>,
}

/// Run `spec` once: read each source's increment, check, write the outputs. Nothing
/// new: nothing committed.
#[instrument(skip_all, fields(pipeline = %spec.name))]
pub async fn run(
    spec: &PipelineSpec,
    sources: &[SourceTable<'_>],
    outputs: Outputs<'_>,
    options: &RunOptions,
) -> Result<PipelineRunReport> {
    let started = Instant::now();
    let Outputs { target, quarantine, tombstones } = outputs;
    let mut report = match spec.kind {
        PipelineType::Upsert => run_upsert(spec, sources, target, quarantine, tombstones, options).await?,
        PipelineType::Sql => run_sql(spec, sources, target, quarantine, options).await?,
    };
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn run_upsert(
    spec: &PipelineSpec,
    sources: &[SourceTable<'_>],
    target: &mut Table,
    quarantine: Option<&mut Table>,
    tombstones: Option<&mut Table>,
    options: &RunOptions,
) -> Result<PipelineRunReport> {
    let [source] = sources else {
        return Err(Error::invalid(format!("pipeline {}: an upsert pipeline reads one source", spec.name)));
    };
    let mut report =
        PipelineRunReport { pipeline: spec.name.clone(), target: spec.target.clone(), ..Default::default() };
    let app = spec.app_id(source.name);
    let regular_after = txn_version(target, &app).await?;
    let (run_app, after) = match options.backfill_from {
        None => (app.clone(), regular_after),
        Some(from) => {
            let backfill_app = format!("{app}:backfill-from-{from}");
            let after = match txn_version(target, &backfill_app).await? {
                Some(done) => Some(done),
                None => from.checked_sub(1),
            };
            (backfill_app, after)
        }
    };
    // A quarantine or tombstone commit ahead of the target: the last run was killed
    // between its commits; this run redoes exactly its range.
    let mut pinned = None;
    for side in [quarantine.as_deref(), tombstones.as_deref()].into_iter().flatten() {
        if side.exists()
            && let Some(v) = txn_version(side, &run_app).await?
            && after.is_none_or(|a| v > a)
        {
            pinned = pinned.max(Some(v));
        }
    }
    if spec.keeps_tombstones() && tombstones.is_none() {
        return Err(Error::internal(format!("pipeline {}: sequence_by needs the tombstone table", spec.name)));
    }
    let limits =
        Limits { max_source_versions: spec.max_source_versions, max_bytes: spec.max_bytes.map(|b| b.as_u64()) };
    let Some(mut plan) = increment::plan(source.name, source.table, after, pinned, limits).await? else {
        report.up_to_date = true;
        return Ok(report);
    };
    let to = plan.increment.to_version;
    report.run_id = format!("{}:{}@{}..{}", spec.name, source.name, after.map_or(0, |a| a + 1), to);
    let mut lap = laps();
    let rows = plan.read(source.table).await?;
    report.rows_read = plan.increment.rows;
    report.sources.push(plan.increment.clone());
    let rows: Vec<RecordBatch> = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
    if rows.is_empty() {
        report.up_to_date = plan.increment.increment == IncrementKind::NoDataChange;
        return Ok(report);
    }
    let trailing_rows = if spec.rules.iter().any(|r| r.check == RuleCheck::RowCount) {
        trailing_rows(target, &spec.name).await?
    } else {
        Vec::new()
    };
    let inputs = RunInputs { source_name: source.name, now: options.now, trailing_rows };
    report.phases.read_ms = lap();
    let Written { batches, quarantined, schema } = upsert::apply(spec, rows, &inputs, &mut report).await?;
    check_target_constraints(spec, target, &batches, &schema)?;
    report.phases.check_ms = lap();
    let mut txns = vec![(run_app.clone(), to as i64)];
    if run_app != app && regular_after.is_none_or(|r| r < to) {
        txns.push((app.clone(), to as i64));
    }
    let lineage = lineage(spec, &report);
    if spec.scd2.is_some() {
        write_quarantine(spec, quarantine, quarantined, &txns, &lineage, &mut report).await?;
        scd2::commit(spec, batches, schema, target, tombstones, &txns, lineage, &mut report).await?;
        report.phases.write_ms = lap();
        check_accounting(&report)?;
        return Ok(report);
    }
    // Events older than a delete of their key that an earlier run applied.
    let (batches, blocked) = match tombstones.as_deref() {
        Some(t) => upsert::drop_tombstoned(spec, batches, t).await?,
        None => (batches, 0),
    };
    write_quarantine(spec, quarantine, quarantined, &txns, &lineage, &mut report).await?;
    if let Some(t) = tombstones {
        upsert::write_tombstones(spec, &batches, t, &txns, &lineage).await?;
    }
    upsert::commit(spec, batches, schema, target, &txns, lineage, &mut report).await?;
    report.phases.write_ms = lap();
    report.rows_superseded += blocked;
    check_accounting(&report)?;
    Ok(report)
}

/// The run's rows against the target's CHECK constraints, before anything (the
/// quarantine, tombstones) is committed: a run that would break one fails naming it.
/// A constraint on a column the run does not give (one the merge computes) is left to
/// the target's write, which checks every constraint again.
fn check_target_constraints(
    spec: &PipelineSpec,
    target: &Table,
    batches: &[RecordBatch],
    schema: &deltalake::arrow::datatypes::SchemaRef,
) -> Result<()> {
    use crate::write::constraints::ConstraintChecker;
    let constraints = target.constraints()?;
    if constraints.is_empty() {
        return Ok(());
    }
    // Delete events write no row: filtered once, then checked against each constraint.
    let rows: Vec<RecordBatch> =
        batches.iter().map(|b| upsert::without_deletes(b).map(|(rows, _)| rows)).collect::<Result<_>>()?;
    for constraint in constraints {
        let Ok(Some(checker)) = ConstraintChecker::compile(target.uri(), std::slice::from_ref(&constraint), schema)
        else {
            continue;
        };
        for batch in &rows {
            if let Some((_, broken, sample)) = checker.violation(batch)? {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "pipeline {}: {broken} rows of this run break CHECK constraint {} ({}) of target {}; \
                         nothing was committed. Violating rows:\n  {sample}",
                        spec.name, constraint.name, constraint.expression, spec.target
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Commit the quarantined rows (first, before the target) with the run's `txn`s; a
/// commit a killed earlier attempt made already is recognised and not repeated.
async fn write_quarantine(
    spec: &PipelineSpec,
    quarantine: Option<&mut Table>,
    rows: Vec<RecordBatch>,
    txns: &[(String, i64)],
    lineage: &serde_json::Value,
    report: &mut PipelineRunReport,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let Some(quarantine) = quarantine else {
        return Err(Error::internal(format!("pipeline {}: rows to quarantine and no quarantine table", spec.name)));
    };
    let mut options = WriteOptions::append().schema_mode(SchemaMode::Merge);
    for (app, version) in txns {
        options = options.app_transaction(app.clone(), *version);
    }
    options.commit_info.push((LINEAGE_KEY.to_string(), lineage.clone()));
    let written = quarantine
        .write(rows, options)
        .await
        .map_err(|e| e.context(format!("pipeline {}: writing the quarantine {}", spec.name, quarantine.uri())))?;
    report.quarantine_version = written.version;
    Ok(())
}

async fn run_sql(
    spec: &PipelineSpec,
    sources: &[SourceTable<'_>],
    target: &mut Table,
    quarantine: Option<&mut Table>,
    options: &RunOptions,
) -> Result<PipelineRunReport> {
    let mut report =
        PipelineRunReport { pipeline: spec.name.clone(), target: spec.target.clone(), ..Default::default() };
    if options.backfill_from.is_some() {
        return Err(Error::invalid(format!(
            "pipeline {}: a sql pipeline recomputes from its sources' snapshots; backfill its upstream pipeline instead",
            spec.name
        )));
    }
    let limits =
        Limits { max_source_versions: spec.max_source_versions, max_bytes: spec.max_bytes.map(|b| b.as_u64()) };
    let mut plans = Vec::new();
    let mut first = !target.exists();
    for source in sources {
        let app = spec.app_id(source.name);
        let after = txn_version(target, &app).await?;
        first |= after.is_none();
        let pinned = match quarantine.as_deref() {
            Some(q) if q.exists() => txn_version(q, &app).await?.filter(|q| after.is_none_or(|a| *q > a)),
            _ => None,
        };
        let plan = increment::plan(source.name, source.table, after, pinned, limits).await?;
        plans.push((app, after, plan));
    }
    if plans.iter().all(|(_, _, plan)| plan.is_none()) {
        report.up_to_date = true;
        return Ok(report);
    }
    // Each source at the version the run consumes.
    let mut at_versions = Vec::new();
    for (source, (_, after, plan)) in sources.iter().zip(&plans) {
        let to = plan.as_ref().map(|p| p.increment.to_version).or(*after);
        let table = match to {
            Some(to) if source.table.version() != Some(to) => {
                Table::open_with(
                    source.table.uri(),
                    crate::OpenOptions::new().storage_options(source.table.storage_options().clone()).version(to),
                )
                .await?
            }
            _ => source.table.clone(),
        };
        at_versions.push(table);
    }
    // The partitions to recompute (`None`: all of them).
    let mut partitions: Option<std::collections::BTreeSet<sql::PartitionKey>> =
        (!first && !spec.partition_by.is_empty()).then(Default::default);
    for ((_, _, plan), source) in plans.iter_mut().zip(sources) {
        let (Some(plan), Some(set)) = (plan.as_mut(), partitions.as_mut()) else { continue };
        match sql::affected(spec, plan, source.table).await {
            Ok(keys) => set.extend(keys),
            Err(e) if e.kind() == ErrorKind::InvalidInput => partitions = None,
            Err(e) => return Err(e),
        }
    }
    for (_, _, plan) in &plans {
        if let Some(plan) = plan {
            report.sources.push(plan.increment.clone());
        }
    }
    let changed =
        plans.iter().any(|(_, _, p)| p.as_ref().is_some_and(|p| p.increment.increment != IncrementKind::NoDataChange));
    if !first && (!changed || partitions.as_ref().is_some_and(|p| p.is_empty())) {
        report.up_to_date = true;
        return Ok(report);
    }
    report.run_id = format!(
        "{}:{}",
        spec.name,
        report
            .sources
            .iter()
            .map(|s| format!("{}@{}..{}", s.table, s.after_version.map_or(0, |a| a + 1), s.to_version))
            .collect::<Vec<_>>()
            .join(",")
    );
    let consumed: Vec<SourceTable<'_>> =
        sources.iter().zip(&at_versions).map(|(s, table)| SourceTable { name: s.name, table }).collect();
    let filter = partitions.as_ref().map(|p| sql::partition_predicate(&spec.partition_by, p, ""));
    let mut lap = laps();
    let (rows, schema) = sql::query(spec, &consumed, filter.as_deref()).await?;
    report.phases.read_ms = lap();
    let trailing = if spec.rules.iter().any(|r| r.check == RuleCheck::RowCount) {
        trailing_rows(target, &spec.name).await?
    } else {
        Vec::new()
    };
    let run_id = report.run_id.clone();
    let who = quality::RunIdentity {
        pipeline: &spec.name,
        run_id: &run_id,
        source_table: sources.first().map(|s| s.name).unwrap_or_default(),
        now: options.now,
    };
    let (kept, quarantined) = sql::check(spec, rows, &who, &trailing, &mut report).await?;
    report.phases.check_ms = lap();
    let txns: Vec<(String, i64)> = plans
        .iter()
        .filter_map(|(app, after, plan)| {
            plan.as_ref().map(|p| p.increment.to_version).or(*after).map(|v| (app.clone(), v as i64))
        })
        .collect();
    let lineage = lineage(spec, &report);
    write_quarantine(spec, quarantine, quarantined, &txns, &lineage, &mut report).await?;
    sql::commit(spec, (kept, schema), target, partitions.as_ref(), &txns, lineage, &mut report).await?;
    report.phases.write_ms = lap();
    check_accounting(&report)?;
    Ok(report)
}

/// A stopwatch: each call returns the milliseconds since the previous one.
fn laps() -> impl FnMut() -> u64 {
    let mut last = Instant::now();
    move || {
        let now = Instant::now();
        let ms = (now - last).as_millis() as u64;
        last = now;
        ms
    }
}

/// The version application `app` last recorded in `table` (`None`: none, or no table).
async fn txn_version(table: &Table, app: &str) -> Result<Option<u64>> {
    Ok(table.app_transaction_version(app).await?.and_then(|v| u64::try_from(v).ok()))
}

/// Rows read by the pipeline's last runs that read any, newest first (from the target's
/// recent commits).
async fn trailing_rows(target: &Table, pipeline: &str) -> Result<Vec<u64>> {
    if !target.exists() {
        return Ok(Vec::new());
    }
    let history = target.history(Some(50)).await?;
    Ok(history
        .iter()
        .filter_map(|h| h.pipeline.as_ref())
        .filter(|p| p.get("pipeline").and_then(|v| v.as_str()) == Some(pipeline))
        .filter_map(|p| p.get("rowsRead").and_then(|v| v.as_u64()))
        .filter(|rows| *rows > 0)
        .collect())
}

/// The `commitInfo.sedimentPipeline` of a run's commits.
fn lineage(spec: &PipelineSpec, report: &PipelineRunReport) -> serde_json::Value {
    serde_json::json!({
        "pipeline": spec.name,
        "type": spec.kind,
        "runId": report.run_id,
        "sources": report.sources.iter().map(|s| serde_json::json!({
            "table": s.table,
            "afterVersion": s.after_version,
            "toVersion": s.to_version,
            "increment": s.increment,
        })).collect::<Vec<_>>(),
        "rowsRead": report.rows_read,
        "rowsQuarantined": report.rows_quarantined,
        "rowsDroppedDuplicates": report.rows_dropped_duplicates,
        "rules": report.rules.iter().map(|r| serde_json::json!({
            "rule": r.rule, "action": r.action, "rowsFailed": r.rows_failed,
        })).collect::<Vec<_>>(),
    })
}

/// Rows read = written + quarantined + dropped, or the run is an error (nothing is
/// lost silently).
fn check_accounting(report: &PipelineRunReport) -> Result<()> {
    if report.replayed {
        return Ok(());
    }
    let accounted =
        report.rows_written() + report.rows_quarantined + report.rows_dropped_duplicates + report.rows_superseded;
    if accounted != report.rows_read {
        return Err(Error::internal(format!(
            "pipeline {}: run {} read {} rows but accounts for {accounted} (written {}, quarantined {}, duplicates {}, superseded {})",
            report.pipeline,
            report.run_id,
            report.rows_read,
            report.rows_written(),
            report.rows_quarantined,
            report.rows_dropped_duplicates,
            report.rows_superseded
        )));
    }
    Ok(())
}
