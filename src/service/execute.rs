//! One job, one library call: a job's kind and options (a [`JobRequest`]) with the
//! table's policy become the options of [`Table::compact`], [`Table::vacuum`],
//! [`Table::checkpoint`], [`Table::expire`] or [`Table::tier`], run under the job's lease fence; the
//! operation's report (plus `table_version` and `duration_ms`) is the job's report.
//!
//! Fencing: compaction asks the fence right before each of its commits and commits
//! only while the lease is held with time to spare, and so does tiering before each
//! commit that records its moves; vacuum, checkpoint and expire ask
//! it before they start (each is safe to run twice: a second vacuum finds nothing, a
//! checkpoint of a version is the same file, an expiry removes nothing more).
//!
//! Each compaction commit names its job in `commitInfo.sediment` (`job`, `attempt`,
//! `daemon`, `reason`; `sediment history` shows it), so the log says which job of which
//! daemon rewrote what.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use bytesize::ByteSize;
use sediment_catalog::{Job, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Service;
use crate::error::{Error, Result};
use crate::maintain::tiering::TierSteps;
use crate::maintain::{CompactOptions, ExpireOptions, TierOptions, VacuumOptions};
use crate::table::clock::Clock;

/// What a job request may say (`POST /api/v1/tables/{name}/jobs`); every field is
/// optional and defaults to the table's policy.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobRequest {
    /// Small-file compaction.
    Compact {
        /// Only partitions matching this predicate over partition columns.
        #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
        /// Target file size, e.g. "256MiB".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        target_file_size: Option<ByteSize>,
        /// Rewrite at most about this much, e.g. "10GiB".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        max_bytes: Option<ByteSize>,
    },
    /// Delete files and log entries no kept version needs.
    Vacuum {
        /// Retention, e.g. "7d".
        #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        retention: Option<Duration>,
        /// Also delete files no version references.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        full: Option<bool>,
        #[serde(default)]
        dry_run: bool,
    },
    /// Write a checkpoint of the current version.
    Checkpoint {},
    /// Remove rows older than a horizon.
    Expire {
        /// The horizon, e.g. "400d".
        #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        older_than: Option<Duration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<String>,
        #[serde(default)]
        dry_run: bool,
    },
    /// Run a pipeline (declared in the settings) once.
    Pipeline {
        /// The pipeline's name.
        pipeline: String,
        /// Reprocess its source from this version (a backfill).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_version: Option<u64>,
    },
    /// Move old partitions to colder storage classes.
    Tier {
        /// Steps, e.g. "30d:STANDARD_IA,180d:GLACIER_IR" (default: the policy's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
        /// The partition column to age by (default: the policy's, else the first date-like one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<String>,
        #[serde(default)]
        dry_run: bool,
    },
}

impl JobRequest {
    /// Parse a job's stored options.
    pub fn from_options(options: &Value) -> Result<Self> {
        serde_json::from_value(options.clone()).map_err(|e| Error::invalid(format!("job options {options}: {e}")))
    }

    /// Its kind.
    pub fn kind(&self) -> sediment_catalog::JobKind {
        use sediment_catalog::JobKind as K;
        match self {
            JobRequest::Compact { .. } => K::Compact,
            JobRequest::Vacuum { .. } => K::Vacuum,
            JobRequest::Checkpoint {} => K::Checkpoint,
            JobRequest::Expire { .. } => K::Expire,
            JobRequest::Tier { .. } => K::Tier,
            JobRequest::Pipeline { .. } => K::Pipeline,
        }
    }
}

/// Overrides of a compaction request over the policy.
#[derive(Debug, Clone, Default)]
pub struct CompactOverrides {
    pub filter: Option<String>,
    pub target_file_size: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// The compaction options a policy (and a request's overrides) asks for.
pub fn compact_options(policy: &Policy, overrides: &CompactOverrides) -> CompactOptions {
    let c = &policy.compaction;
    CompactOptions {
        target_file_size: Some(overrides.target_file_size.unwrap_or(c.target_file_size.as_u64())),
        min_input_files: Some(2),
        max_bytes: Some(overrides.max_bytes.unwrap_or(c.max_bytes_per_run.as_u64())),
        max_deleted_rows_ratio: Some(c.max_deleted_rows_ratio),
        filter: overrides.filter.clone(),
        ..Default::default()
    }
}

/// The tiering options a policy (and a request's steps and column) asks for; an
/// invalid-input error naming `table` when neither gives steps.
pub fn tier_options(policy: &Policy, table: &str, steps: Option<&str>, column: Option<String>) -> Result<TierOptions> {
    let steps = match steps {
        Some(spec) => TierSteps::parse(spec).map_err(|e| Error::invalid(format!("tiering policy: {e}")))?,
        None => policy.tiering.steps.clone(),
    };
    if steps.is_empty() {
        return Err(Error::invalid(format!(
            "table {table}: tiering needs steps (a policy such as 30d:STANDARD_IA, or the table policy's tiering.steps)"
        )));
    }
    let mut options = TierOptions::new(steps).column(column.or_else(|| policy.tiering.column.clone()));
    // Partitions leaving the hot tier are compacted as the table's policy compacts.
    options.compact_first = Some(compact_options(policy, &CompactOverrides::default()));
    Ok(options)
}

/// A worker's proof that it still holds a job's lease, kept up to date by the heartbeat.
#[derive(Debug)]
pub struct LeaseFence {
    job: i64,
    expires_ms: AtomicI64,
    lost: AtomicBool,
    margin_ms: i64,
    clock: Arc<dyn Clock>,
}

impl LeaseFence {
    /// A fence for a lease until `expires`, refusing commits within `margin` of it.
    pub fn new(job: i64, expires: chrono::DateTime<chrono::Utc>, margin: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            job,
            expires_ms: AtomicI64::new(expires.timestamp_millis()),
            lost: AtomicBool::new(false),
            margin_ms: margin.as_millis() as i64,
            clock,
        }
    }

    /// The lease was renewed until `expires`.
    pub fn renewed(&self, expires: chrono::DateTime<chrono::Utc>) {
        self.expires_ms.store(expires.timestamp_millis(), Ordering::SeqCst);
    }

    /// The lease is gone (taken over or finished elsewhere).
    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the lease is held with time to spare.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(format!("job {} lost its lease to another daemon", self.job));
        }
        let now = self.clock.now().timestamp_millis();
        let expires = self.expires_ms.load(Ordering::SeqCst);
        if now + self.margin_ms >= expires {
            return Err(format!(
                "the lease of job {} runs out in {} ms (its heartbeats are not getting through)",
                self.job,
                expires - now
            ));
        }
        Ok(())
    }
}

/// A policy's duration as the maintenance options take it.
fn span(duration: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(duration).map_err(|e| Error::invalid(format!("duration {duration:?}: {e}")))
}

/// Run `job`; its report on success.
pub async fn run(service: &Service, job: &Job, fence: Arc<LeaseFence>) -> Result<Value> {
    let inner = service.inner();
    let started = std::time::Instant::now();
    let request = JobRequest::from_options(&job.options)?;
    if let JobRequest::Pipeline { pipeline, from_version } = &request {
        // Exactly once by the run's txn, whichever daemon runs it: the fence is asked
        // before it starts, as for vacuum.
        fence.check().map_err(Error::conflict)?;
        let report = super::pipelines::run(service, pipeline, *from_version).await?;
        let mut value = serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?;
        value["table_version"] = json!(report.target_version);
        value["duration_ms"] = json!(started.elapsed().as_millis() as u64);
        return Ok(value);
    }
    let entry = inner.catalog.table(&job.table).await?;
    let policy = inner.policies.get(entry.layer).with_overrides(&entry.policy)?;
    let mut table = super::ops::latest_table(service, &entry).await?;
    let mut report = match request {
        JobRequest::Compact { filter, target_file_size, max_bytes } => {
            let overrides = CompactOverrides {
                filter,
                target_file_size: target_file_size.map(|s| s.as_u64()),
                max_bytes: max_bytes.map(|s| s.as_u64()),
            };
            let mut options = compact_options(&policy, &overrides);
            let workers = &inner.settings.workers;
            options.executor.memory_budget = workers.memory_budget.as_u64() / workers.concurrency as u64;
            options.executor.commit_info.insert(
                "sediment".into(),
                json!({ "job": job.id, "attempt": job.attempt, "daemon": inner.daemon_id, "reason": job.reason }),
            );
            let guard = fence.clone();
            options.before_commit = Some(Arc::new(move || guard.check()));
            let report = table.compact(options).await?;
            let amplification = report.write_amplification();
            ::metrics::counter!(super::metrics::BYTES_READ, "kind" => "compact").increment(report.bytes_read);
            ::metrics::counter!(super::metrics::BYTES_WRITTEN, "kind" => "compact").increment(report.bytes_written);
            ::metrics::counter!(super::metrics::COMMIT_CONFLICTS).increment(report.commit_conflicts as u64);
            if report.bytes_written > 0 {
                ::metrics::histogram!(super::metrics::WRITE_AMPLIFICATION).record(amplification);
            }
            let mut value = serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?;
            value["write_amplification"] = json!(amplification);
            value["files"] = json!({ "removed": report.files_removed, "added": report.files_added });
            value
        }
        JobRequest::Vacuum { retention, full, dry_run } => {
            fence.check().map_err(Error::conflict)?;
            let v = &policy.vacuum;
            let retain = retention.unwrap_or(v.retention);
            let options = VacuumOptions::default()
                .retain(span(retain)?)
                .log_retain(span(v.log_retention)?)
                .full(full.unwrap_or(v.full))
                .dry_run(dry_run)
                .with_clock(inner.clock.clone());
            let report = table.vacuum(options).await?;
            let mut value = serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?;
            // Counts stay; the list of every deleted path does not belong in a job record.
            if let Some(map) = value.as_object_mut() {
                map.remove("files");
            }
            value
        }
        JobRequest::Checkpoint {} => {
            fence.check().map_err(Error::conflict)?;
            serde_json::to_value(table.checkpoint().await?).map_err(|e| Error::internal(e.to_string()))?
        }
        JobRequest::Expire { older_than, column, dry_run } => {
            fence.check().map_err(Error::conflict)?;
            let horizon = older_than.or(policy.expire.older_than).ok_or_else(|| {
                Error::invalid(format!(
                    "table {}: expire needs older_than (in the request or the policy's expire.older_than)",
                    entry.name
                ))
            })?;
            let mut options = ExpireOptions::older_than(
                chrono::Duration::from_std(horizon).map_err(|e| Error::invalid(e.to_string()))?,
            )
            .dry_run(dry_run)
            .with_clock(inner.clock.clone());
            if let Some(column) = column.or(policy.expire.column.clone()) {
                options = options.column(column);
            }
            serde_json::to_value(table.expire(options).await?).map_err(|e| Error::internal(e.to_string()))?
        }
        JobRequest::Pipeline { .. } => return Err(Error::internal("a pipeline job runs above")),
        JobRequest::Tier { policy: steps, column, dry_run } => {
            let mut options = tier_options(&policy, &entry.name, steps.as_deref(), column)?
                .dry_run(dry_run)
                .with_clock(inner.clock.clone());
            options.commit_info = vec![(
                "sediment".into(),
                json!({ "job": job.id, "attempt": job.attempt, "daemon": inner.daemon_id, "reason": job.reason }),
            )];
            let guard = fence.clone();
            options.before_commit = Some(Arc::new(move || guard.check()));
            if let Some(compact) = &mut options.compact_first {
                let workers = &inner.settings.workers;
                compact.executor.memory_budget = workers.memory_budget.as_u64() / workers.concurrency as u64;
            }
            let report = table.tier(options).await?;
            for (class, moved) in &report.moved {
                ::metrics::counter!(super::metrics::BYTES_TIERED, "storage_class" => class.as_str())
                    .increment(moved.bytes);
            }
            serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?
        }
    };
    table.refresh().await?;
    super::ops::remember_table(service, &entry, &table);
    report["table_version"] = json!(table.version());
    report["duration_ms"] = json!(started.elapsed().as_millis() as u64);
    super::ops::mirror_tags(service, &entry.name, &table).await;
    Ok(report)
}
