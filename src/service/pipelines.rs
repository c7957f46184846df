//! Pipeline operations, one library call each, that `sediment pipeline ...`,
//! `sediment lineage` and the HTTP API share: list, run (and backfill), status,
//! lineage, and the checks of the declared pipelines against the tables.
//!
//! Tables are found by catalog name; a pipeline's target that does not exist yet is
//! declared in `[[tables]]` (its location and layer), created by the first run and
//! registered then. Its quarantine is the Delta table at the target's location with
//! `_quarantine` appended, registered as `<target>_quarantine` in the target's layer;
//! an upsert pipeline with `sequence_by` keeps its tombstones (the newest delete per
//! key) in a Delta table under the target's `_sediment/pipelines/<name>/tombstones`.

use std::collections::BTreeMap;

use sediment_catalog::{CatalogErrorKind, Layer, NewTable, TableEntry};
use serde::Serialize;

use super::Service;
use super::ops;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{PipelineRunReport, PipelineSpec, PipelineType, RuleAction, RunOptions, SourceTable};
use crate::table::Table;

/// A pipeline as `pipeline list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: PipelineType,
    pub sources: Vec<String>,
    pub target: String,
    /// When the daemon runs it: a schedule, on source commits, or only when asked.
    pub trigger: String,
    pub rules: usize,
}

/// What one source of a pipeline has been consumed to.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub table: String,
    /// The last source version the target records as consumed (`None`: never ran).
    pub consumed_version: Option<u64>,
    /// The source's newest version (`None`: unreadable or no table yet).
    pub latest_version: Option<u64>,
    /// Source versions not consumed yet.
    pub versions_behind: Option<u64>,
}

/// `pipeline status`: what each source was consumed to, and the last run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub pipeline: PipelineSummary,
    pub target_version: Option<u64>,
    pub sources: Vec<SourceStatus>,
    /// The newest target commit a run of the pipeline made (`commitInfo.sedimentPipeline`
    /// with its version and time), among the target's last 50 commits.
    pub last_run: Option<serde_json::Value>,
}

/// One edge of the lineage graph.
#[derive(Debug, Clone, Serialize)]
pub struct LineageEdge {
    pub pipeline: String,
    /// The other table: a source (upstream) or a target (downstream).
    pub table: String,
    /// The last version of the source table the target records as consumed.
    pub consumed_version: Option<u64>,
}

/// `lineage TABLE`: the pipelines that write it and those that read it.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub table: String,
    pub version: Option<u64>,
    pub upstream: Vec<LineageEdge>,
    pub downstream: Vec<LineageEdge>,
}

/// The declared pipelines.
pub fn list(service: &Service) -> Vec<PipelineSummary> {
    service.settings().pipelines.iter().map(summary).collect()
}

fn summary(spec: &PipelineSpec) -> PipelineSummary {
    let trigger = match (&spec.schedule, spec.on_commit) {
        (Some(schedule), true) => format!("{} and on source commits", schedule_text(schedule)),
        (Some(schedule), false) => schedule_text(schedule),
        (None, true) => "on source commits".into(),
        (None, false) => "when run".into(),
    };
    PipelineSummary {
        name: spec.name.clone(),
        kind: spec.kind,
        sources: spec.source_tables().into_iter().map(String::from).collect(),
        target: spec.target.clone(),
        trigger,
        rules: spec.rules.len(),
    }
}

fn schedule_text(schedule: &sediment_catalog::Schedule) -> String {
    match schedule {
        sediment_catalog::Schedule::Every(d) => {
            format!("every {}", humantime_serde::re::humantime::format_duration(*d))
        }
        sediment_catalog::Schedule::Cron(c) => format!("cron {c}"),
    }
}

/// A declared pipeline by name.
pub fn spec<'a>(service: &'a Service, name: &str) -> Result<&'a PipelineSpec> {
    service.settings().pipelines.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<&str> = service.settings().pipelines.iter().map(|p| p.name.as_str()).collect();
        Error::new(ErrorKind::NotFound, format!("no pipeline named {name:?} (declared: {})", names(&known)))
    })
}

fn names(list: &[&str]) -> String {
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

/// Where a table is: its catalog entry, else its `[[tables]]` entry (a target not
/// created yet).
async fn locate(service: &Service, name: &str) -> Result<Located> {
    match service.catalog().table(name).await {
        Ok(entry) => return Ok(Located::Registered(entry)),
        Err(e) if e.kind() != CatalogErrorKind::NotFound => return Err(e.into()),
        Err(_) => {}
    }
    match service.settings().tables.iter().find(|t| t.name == name) {
        Some(table) => Ok(Located::Declared(table.clone())),
        None => Err(Error::new(
            ErrorKind::NotFound,
            format!("table {name} is neither in the catalog nor declared in [[tables]]"),
        )),
    }
}

enum Located {
    Registered(TableEntry),
    Declared(NewTable),
}

impl Located {
    fn location(&self) -> &str {
        match self {
            Located::Registered(e) => &e.location,
            Located::Declared(t) => &t.location,
        }
    }
    fn profile(&self) -> Option<&str> {
        match self {
            Located::Registered(e) => e.storage_options.as_deref(),
            Located::Declared(t) => t.storage_options.as_deref(),
        }
    }
    fn layer(&self) -> Layer {
        match self {
            Located::Registered(e) => e.layer,
            Located::Declared(t) => t.layer,
        }
    }
}

/// Open `located` for writing (a handle with no version when there is no table yet).
async fn open_for_writing(service: &Service, located: &Located, name: &str) -> Result<Table> {
    let mut options = ops::open_options(service, located.location(), located.profile())?;
    // A table the run creates gets its declared CHECK constraints in its first commit.
    if let Some(declared) = service.settings().tables.iter().find(|t| t.name == name) {
        for (constraint, expression) in &declared.constraints {
            options = options.new_table_property(
                format!("{}{constraint}", crate::write::constraints::CONSTRAINT_PREFIX),
                expression,
            );
        }
    }
    Table::open_or_new_with(located.location(), options).await
}

/// The quarantine's catalog name and location for a target.
pub fn quarantine_of(target: &str, location: &str) -> (String, String) {
    (format!("{target}_quarantine"), format!("{}_quarantine", location.trim_end_matches('/')))
}

/// Where an upsert pipeline keeps its tombstones: under the target's `_sediment/`
/// (which readers, vacuum and compaction of the target leave alone).
pub fn tombstones_of(target_location: &str, pipeline: &str) -> String {
    format!("{}/_sediment/pipelines/{pipeline}/tombstones", target_location.trim_end_matches('/'))
}

/// Run pipeline `name` once (from `backfill_from` when given).
pub async fn run(service: &Service, name: &str, backfill_from: Option<u64>) -> Result<PipelineRunReport> {
    let spec = spec(service, name)?.clone();
    let mut opened = Vec::new();
    for source in spec.source_tables() {
        let entry = match locate(service, source).await.map_err(|e| e.context(format!("pipeline {name}")))? {
            Located::Registered(entry) => entry,
            Located::Declared(_) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "pipeline {name}: source {source} is not registered in the catalog (is it a Delta table yet?)"
                    ),
                ));
            }
        };
        let table = ops::latest_table(service, &entry).await?;
        opened.push((source.to_string(), table));
    }
    let sources: Vec<SourceTable<'_>> =
        opened.iter().map(|(name, table)| SourceTable { name: name.as_str(), table }).collect();
    let target_at = locate(service, &spec.target).await.map_err(|e| e.context(format!("pipeline {name}")))?;
    let mut target = open_for_writing(service, &target_at, &spec.target).await?;
    let target_existed = target.exists();
    let quarantines = spec.rules.iter().any(|r| r.action == RuleAction::Quarantine);
    let (quarantine_name, quarantine_location) = quarantine_of(&spec.target, target_at.location());
    let quarantine_at = Located::Declared(NewTable {
        storage_options: target_at.profile().map(String::from),
        description: Some(format!("rows that broke the rules of pipeline {name}, writing {}", spec.target)),
        ..NewTable::new(quarantine_name.clone(), target_at.layer(), quarantine_location)
    });
    let mut quarantine =
        if quarantines { Some(open_for_writing(service, &quarantine_at, &quarantine_name).await?) } else { None };
    let quarantine_existed = quarantine.as_ref().is_some_and(Table::exists);
    let mut tombstones = if spec.keeps_tombstones() {
        let location = tombstones_of(target_at.location(), &spec.name);
        let options = ops::open_options(service, &location, target_at.profile())?;
        Some(Table::open_or_new_with(&location, options).await?)
    } else {
        None
    };
    let options = RunOptions { backfill_from, now: service.inner().clock.now() };
    let outputs = crate::pipeline::Outputs {
        target: &mut target,
        quarantine: quarantine.as_mut(),
        tombstones: tombstones.as_mut(),
    };
    let result = crate::pipeline::run(&spec, &sources, outputs, &options).await;
    record_metrics(name, &result);
    let report = result?;
    if !target_existed && target.exists() {
        register_created(service, &target_at, &spec.target).await;
    }
    if let Some(q) = &quarantine
        && !quarantine_existed
        && q.exists()
    {
        register_created(service, &quarantine_at, &quarantine_name).await;
    }
    if let Located::Registered(entry) = &target_at {
        ops::remember_table(service, entry, &target);
    }
    Ok(report)
}

/// The run's counters (a no-op outside the daemon, which alone installs a recorder).
fn record_metrics(name: &str, result: &Result<PipelineRunReport>) {
    use super::metrics as m;
    let pipeline = name.to_string();
    let report = match result {
        Ok(report) => report,
        Err(_) => {
            ::metrics::counter!(m::PIPELINE_RUNS, "pipeline" => pipeline, "outcome" => "failed").increment(1);
            return;
        }
    };
    let outcome = if report.committed { "committed" } else { "up_to_date" };
    ::metrics::counter!(m::PIPELINE_RUNS, "pipeline" => pipeline.clone(), "outcome" => outcome).increment(1);
    for (outcome, rows) in [
        ("read", report.rows_read),
        ("written", report.rows_written()),
        ("quarantined", report.rows_quarantined),
        ("dropped", report.rows_dropped_duplicates + report.rows_superseded),
    ] {
        ::metrics::counter!(m::PIPELINE_ROWS, "pipeline" => pipeline.clone(), "outcome" => outcome).increment(rows);
    }
    for rule in &report.rules {
        ::metrics::counter!(m::PIPELINE_RULE_FAILURES, "pipeline" => pipeline.clone(), "rule" => rule.rule.clone(), "action" => rule.action.clone())
            .increment(rule.rows_failed);
    }
    for source in &report.sources {
        let behind = source.latest_version.saturating_sub(source.to_version) as f64;
        ::metrics::gauge!(m::PIPELINE_BEHIND, "pipeline" => pipeline.clone(), "source" => source.table.clone())
            .set(behind);
    }
}

/// Register a table a pipeline run created (logged when it cannot be).
async fn register_created(service: &Service, located: &Located, name: &str) {
    let new = match located {
        Located::Declared(t) => t.clone(),
        Located::Registered(_) => return,
    };
    match ops::register_table(service, new).await {
        Ok(_) => tracing::info!(table = name, "registered the table a pipeline created"),
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        Err(e) => tracing::warn!(table = name, error = %e, "cannot register the table a pipeline created"),
    }
}

/// The table name a pipeline's jobs are recorded under: its target's (registered or
/// not yet), so one run of each pipeline is active at a time.
pub fn job_table(spec: &PipelineSpec) -> &str {
    &spec.target
}

/// What the target records as consumed of each source, and each source's latest
/// version, through the daemon's shared handles (a log listing from the version they
/// were at, not a fresh open).
pub async fn consumption(service: &Service, spec: &PipelineSpec) -> Result<Vec<SourceStatus>> {
    Ok(consumption_and_target(service, spec).await?.0)
}

/// [`consumption`], and the target's handle (`None`: not registered yet).
async fn consumption_and_target(service: &Service, spec: &PipelineSpec) -> Result<(Vec<SourceStatus>, Option<Table>)> {
    let target = match service.catalog().table(&spec.target).await {
        Ok(entry) => Some(ops::latest_table(service, &entry).await?),
        Err(e) if e.kind() == CatalogErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut sources = Vec::new();
    for source in spec.source_tables() {
        let consumed = consumed(target.as_ref(), spec, source).await?;
        let latest = match service.catalog().table(source).await {
            Ok(entry) => ops::latest_table(service, &entry).await?.version(),
            Err(e) if e.kind() == CatalogErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let behind = latest.map(|l| match consumed {
            Some(c) => l.saturating_sub(c),
            None => l + 1,
        });
        sources.push(SourceStatus {
            table: source.to_string(),
            consumed_version: consumed,
            latest_version: latest,
            versions_behind: behind,
        });
    }
    Ok((sources, target))
}

/// The last version of `source` that `target` records as consumed by `spec`.
async fn consumed(target: Option<&Table>, spec: &PipelineSpec, source: &str) -> Result<Option<u64>> {
    match target {
        Some(t) => Ok(t.app_transaction_version(&spec.app_id(source)).await?.and_then(|v| u64::try_from(v).ok())),
        None => Ok(None),
    }
}

/// Enqueue a run of pipeline `name` (from `from_version`: a backfill) for the workers.
pub async fn start(service: &Service, name: &str, from_version: Option<u64>) -> Result<sediment_catalog::Job> {
    let spec = spec(service, name)?;
    let table = job_table(spec).to_string();
    let now = service.inner().clock.now();
    let mut options = serde_json::json!({ "kind": "pipeline", "pipeline": name });
    if let Some(v) = from_version {
        options["from_version"] = v.into();
    }
    let job = sediment_catalog::NewJob {
        table,
        kind: sediment_catalog::JobKind::Pipeline,
        reason: format!("pipeline {name}: request"),
        options,
        run_after: now,
        max_attempts: service.settings().workers.max_attempts,
        unless_succeeded_after: None,
    };
    service.catalog().enqueue(job, now).await?.ok_or_else(|| {
        Error::new(ErrorKind::Conflict, format!("pipeline {name}: a run is scheduled or running already"))
    })
}

/// What `name` has consumed of its sources, and its last run.
pub async fn status(service: &Service, name: &str) -> Result<PipelineStatus> {
    let spec = spec(service, name)?.clone();
    let (sources, target) = consumption_and_target(service, &spec).await?;
    let target = target.filter(Table::exists);
    let mut last_run = None;
    if let Some(t) = &target {
        for entry in t.history(Some(50)).await? {
            if let Some(p) = &entry.pipeline
                && p.get("pipeline").and_then(|v| v.as_str()) == Some(name)
            {
                let mut run = p.clone();
                if let Some(obj) = run.as_object_mut() {
                    obj.insert("version".into(), entry.version.into());
                    obj.insert("timestamp".into(), entry.timestamp.into());
                    obj.insert("metrics".into(), entry.metrics.clone());
                }
                last_run = Some(run);
                break;
            }
        }
    }
    Ok(PipelineStatus {
        pipeline: summary(&spec),
        target_version: target.as_ref().and_then(Table::version),
        sources,
        last_run,
    })
}

/// The pipelines that write `table` (with their sources) and those that read it.
pub async fn lineage(service: &Service, table: &str) -> Result<Lineage> {
    let pipelines = &service.settings().pipelines;
    let known = pipelines.iter().any(|p| p.target == table || p.source_tables().contains(&table));
    let own = match locate(service, table).await {
        Ok(at) => Some(open_for_writing(service, &at, table).await?).filter(Table::exists),
        Err(e) if e.kind() == ErrorKind::NotFound && known => None,
        Err(e) => return Err(e),
    };
    let mut upstream = Vec::new();
    let mut downstream = Vec::new();
    let mut targets: BTreeMap<String, Option<Table>> = BTreeMap::new();
    for p in pipelines {
        if p.target == table {
            for source in p.source_tables() {
                let consumed = consumed(own.as_ref(), p, source).await?;
                upstream.push(LineageEdge {
                    pipeline: p.name.clone(),
                    table: source.to_string(),
                    consumed_version: consumed,
                });
            }
        }
        if p.source_tables().contains(&table) {
            if !targets.contains_key(&p.target) {
                let opened = match locate(service, &p.target).await {
                    Ok(at) => open_for_writing(service, &at, &p.target).await.ok().filter(Table::exists),
                    Err(_) => None,
                };
                targets.insert(p.target.clone(), opened);
            }
            let consumed = consumed(targets.get(&p.target).and_then(Option::as_ref), p, table).await?;
            downstream.push(LineageEdge {
                pipeline: p.name.clone(),
                table: p.target.clone(),
                consumed_version: consumed,
            });
        }
    }
    Ok(Lineage { table: table.to_string(), version: own.as_ref().and_then(Table::version), upstream, downstream })
}

/// Check every declared pipeline against the tables: each table known (catalog or
/// `[[tables]]`), and, for sources that exist, the keys, sequence and rule columns
/// present among what the source gives the target. The first problem is an error
/// naming the pipeline.
pub async fn check(service: &Service) -> Result<()> {
    for spec in &service.settings().pipelines {
        let named = |e: Error| e.context(format!("pipeline {}", spec.name));
        for table in spec.source_tables().into_iter().chain([spec.target.as_str()]) {
            locate(service, table).await.map_err(named)?;
        }
        if spec.kind != PipelineType::Upsert {
            continue;
        }
        let Some(source) = &spec.source else { continue };
        let Ok(entry) = service.catalog().table(source).await else { continue };
        let table = match ops::latest_table(service, &entry).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(pipeline = %spec.name, source, error = %e, "cannot open the source to check the pipeline");
                continue;
            }
        };
        let schema = table.arrow_schema()?;
        let mut columns: Vec<String> =
            schema.fields().iter().filter_map(|f| spec.target_column(f.name()).map(String::from)).collect();
        columns.extend(spec.derived.keys().cloned());
        let mut wanted: Vec<(&str, &str)> = spec.keys.iter().map(|k| ("key", k.as_str())).collect();
        wanted.extend(spec.sequence_by.iter().map(|s| ("sequence_by", s.as_str())));
        wanted.extend(spec.dedupe_by.iter().map(|s| ("dedupe_by", s.as_str())));
        if let Some(scd2) = &spec.scd2 {
            wanted.extend(spec.effective_at().map(|c| ("scd2.effective_at", c)));
            wanted.extend(scd2.track_columns.iter().map(|c| ("scd2.track_columns", c.as_str())));
            for own in [&scd2.valid_from, &scd2.valid_to, &scd2.current] {
                if columns.iter().any(|c| c == own) {
                    return Err(Error::invalid(format!(
                        "pipeline {}: the SCD type 2 column {own} is also a column the source {source} gives the target",
                        spec.name
                    )));
                }
            }
        }
        for rule in &spec.rules {
            wanted.extend(rule.columns().into_iter().map(|c| ("rule column", c)));
        }
        for (what, column) in wanted {
            if !columns.iter().any(|c| c == column) {
                return Err(Error::invalid(format!(
                    "pipeline {}: {what} {column} is not a column the source {source} gives the target (columns: {})",
                    spec.name,
                    columns.join(", ")
                )));
            }
        }
    }
    Ok(())
}
