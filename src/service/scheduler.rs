//! The scheduler: every `scheduler.tick`, each catalog table (`scheduler.parallelism`
//! at a time) is refreshed (one log listing from the version the daemon's shared
//! handle was at, [`super::ops::latest_table`]), its triggers evaluated
//! ([`super::triggers`]), and what is due enqueued, spread by a jitter. The catalog
//! refuses a second active job of one table and kind, and a trigger read from a
//! snapshot older than a job that has since succeeded (`unless_succeeded_after`), so
//! several daemons scheduling the same tables enqueue each piece of work once.
//!
//! Pipelines are looked at in the same tick: a run is enqueued when its schedule
//! comes round or, with `on_commit`, when a source has versions the target has not
//! consumed (one pipeline job per job table is active at a time).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sediment_catalog::{Job, JobKind, JobState, NewJob, TableEntry};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::triggers::{self, History, TableView};
use super::{Service, metrics};
use crate::error::Result;

/// When each table's compaction triggers were last checked (the tables themselves are
/// the daemon's shared handles, [`super::ops::latest_table`]).
#[derive(Default)]
pub struct TableCache {
    tables: HashMap<String, Cached>,
    /// Per pipeline, the source versions its last on-commit run was enqueued for: a
    /// run that found only compaction commits consumes nothing, and is not enqueued
    /// again until a source moves.
    pipelines: HashMap<String, Vec<Option<u64>>>,
}

#[derive(Default)]
struct Cached {
    compaction_checked: Option<DateTime<Utc>>,
    /// The table version `last_checkpoint` was read at, and what it said: the
    /// `_last_checkpoint` GET is repeated only when the table moved.
    checkpoint_read: Option<(u64, Option<u64>)>,
}

/// Tick until `shutdown`.
pub async fn run(service: Service, shutdown: CancellationToken) {
    let mut cache = TableCache::default();
    let tick = service.inner().settings.scheduler.tick;
    loop {
        if let Err(e) = self::tick(&service, &mut cache, true).await {
            tracing::warn!(error = %e, "scheduler tick failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// One pass over every table; returns the jobs enqueued. `jitter`: spread start times.
pub async fn tick(service: &Service, cache: &mut TableCache, jitter: bool) -> Result<usize> {
    let inner = service.inner();
    let tables = inner.catalog.list_tables().await?;
    super::ops::retain_tables(service, &tables.iter().map(|t| t.name.as_str()).collect());
    // This tick's tables take their state out; unregistered tables' state is dropped.
    let mut previous = std::mem::take(&mut cache.tables);
    let states: Vec<(TableEntry, Cached)> = tables
        .into_iter()
        .map(|e| {
            let cached = previous.remove(&e.name).unwrap_or_default();
            (e, cached)
        })
        .collect();
    let looked: Vec<(TableEntry, Cached, Result<usize>)> = futures::stream::iter(states)
        .map(|(entry, mut cached)| async move {
            let result = schedule_table(service, &mut cached, &entry, jitter).await;
            (entry, cached, result)
        })
        .buffer_unordered(inner.settings.scheduler.parallelism.max(1))
        .collect()
        .await;
    let mut enqueued = 0;
    for (entry, cached, result) in looked {
        cache.tables.insert(entry.name.clone(), cached);
        match result {
            Ok(n) => enqueued += n,
            Err(e) => {
                ::metrics::counter!(metrics::SCHEDULER_ERRORS).increment(1);
                tracing::warn!(table = %entry.name, error = %e, "cannot evaluate table");
            }
        }
    }
    enqueued += schedule_pipelines(service, cache).await;
    if let Ok((scheduled, running)) = inner.catalog.count_active().await {
        ::metrics::gauge!(metrics::QUEUE_DEPTH, "state" => "scheduled").set(scheduled as f64);
        ::metrics::gauge!(metrics::QUEUE_DEPTH, "state" => "running").set(running as f64);
    }
    Ok(enqueued)
}

async fn schedule_table(service: &Service, cached: &mut Cached, entry: &TableEntry, jitter: bool) -> Result<usize> {
    let inner = service.inner();
    let policy = inner.policies.get(entry.layer).with_overrides(&entry.policy)?;
    // Read before the snapshot: a job that succeeds after this may have changed the table.
    let snapshot_time = inner.clock.now();
    let table = &super::ops::latest_table(service, entry).await?;
    let version = table.version().unwrap_or(0);
    let files = table.files()?;
    let views = table.views_of(&files)?;
    let health = sediment_compactor::health::table_health(&views, policy.compaction.target_file_size.as_u64());
    let max_deleted_ratio = views.iter().map(|v| v.deleted_ratio()).fold(0.0, f64::max);
    ::metrics::gauge!(metrics::TABLE_FILES, "table" => entry.name.clone()).set(files.len() as f64);
    ::metrics::gauge!(metrics::TABLE_HEALTH, "table" => entry.name.clone()).set(health.score as f64);
    for (class, totals) in table.class_totals()? {
        ::metrics::gauge!(metrics::TABLE_BYTES, "table" => entry.name.clone(), "storage_class" => class.as_str())
            .set(totals.bytes as f64);
    }

    let last_compaction = inner.catalog.last_finished(&entry.name, JobKind::Compact, Some(JobState::Succeeded)).await?;
    let compacted_at_version =
        last_compaction.as_ref().and_then(|j| j.report.as_ref()).and_then(|r| r["table_version"].as_u64());
    let commits_since_compaction = match compacted_at_version {
        Some(v) => version.saturating_sub(v),
        None => version + 1,
    };
    let last_checkpoint = match cached.checkpoint_read {
        _ if !policy.checkpoint.enabled => None,
        Some((read_at, last)) if read_at == version => last,
        _ => {
            let last = crate::maintain::vacuum::log_cleanup::last_checkpoint_version(table).await?;
            cached.checkpoint_read = Some((version, last));
            last
        }
    };
    let history = History {
        compaction_checked: cached.compaction_checked,
        vacuum_finished: match policy.vacuum.enabled {
            true => finished_at(service, &entry.name, JobKind::Vacuum).await?,
            false => None,
        },
        expire_finished: match policy.expire.enabled {
            true => finished_at(service, &entry.name, JobKind::Expire).await?,
            false => None,
        },
        tier_finished: match policy.tiering.enabled {
            true => finished_at(service, &entry.name, JobKind::Tier).await?,
            false => None,
        },
    };
    let view = TableView {
        policy: &policy,
        health: &health,
        max_deleted_ratio,
        version,
        last_checkpoint,
        commits_since_compaction,
    };
    let now = inner.clock.now();
    if policy.compaction.schedule.next_after(cached.compaction_checked, now) <= now {
        cached.compaction_checked = Some(now);
    }
    let mut enqueued = 0;
    for due in triggers::due(&view, &history, now) {
        if due.kind == JobKind::Compact {
            // Only when the planner finds work at the policy's settings.
            let options = super::execute::compact_options(&policy, &Default::default());
            if table.compaction_plan(&options)?.is_empty() {
                continue;
            }
        }
        let delay = if jitter { spread(&entry.name, due.kind, now, inner.settings.scheduler.jitter) } else { 0 };
        let job = NewJob {
            table: entry.name.clone(),
            kind: due.kind,
            reason: due.reason.clone(),
            options: json!({ "kind": due.kind.as_str() }),
            run_after: now + chrono::Duration::milliseconds(delay),
            max_attempts: inner.settings.workers.max_attempts,
            unless_succeeded_after: Some(snapshot_time),
        };
        if let Some(job) = inner.catalog.enqueue(job, now).await? {
            enqueued += 1;
            ::metrics::counter!(metrics::JOBS_SCHEDULED, "kind" => due.kind.as_str()).increment(1);
            tracing::info!(table = %entry.name, kind = %due.kind, job = job.id, reason = %due.reason, "job scheduled");
        }
    }
    Ok(enqueued)
}

/// Enqueue the pipeline runs that are due: their schedule came round, or (with
/// `on_commit`) a source has versions the target has not consumed (read from the
/// sources' logs through the shared handles, never by listing buckets).
async fn schedule_pipelines(service: &Service, cache: &mut TableCache) -> usize {
    let inner = service.inner();
    let mut enqueued = 0;
    for spec in &inner.settings.pipelines {
        if spec.schedule.is_none() && !spec.on_commit {
            continue;
        }
        let result: Result<Option<Job>> = async {
            let table = super::pipelines::job_table(spec).to_string();
            let now = inner.clock.now();
            let mut reason = None;
            if let Some(schedule) = &spec.schedule {
                let last =
                    inner.catalog.last_finished(&table, JobKind::Pipeline, None).await?.and_then(|j| j.finished_at);
                if schedule.next_after(last, now) <= now {
                    reason = Some("schedule");
                }
            }
            let mut latest = Vec::new();
            if reason.is_none() && spec.on_commit {
                let behind = super::pipelines::consumption(service, spec).await?;
                latest = behind.iter().map(|s| s.latest_version).collect();
                let moved = cache.pipelines.get(&spec.name) != Some(&latest);
                if moved && behind.iter().any(|s| s.versions_behind.unwrap_or(0) > 0) {
                    reason = Some("source commit");
                }
            }
            let Some(reason) = reason else { return Ok(None) };
            let job = NewJob {
                table,
                kind: JobKind::Pipeline,
                reason: format!("pipeline {}: {reason}", spec.name),
                options: json!({ "kind": "pipeline", "pipeline": spec.name }),
                run_after: now,
                max_attempts: inner.settings.workers.max_attempts,
                unless_succeeded_after: None,
            };
            let job = inner.catalog.enqueue(job, now).await?;
            if !latest.is_empty() {
                cache.pipelines.insert(spec.name.clone(), latest);
            }
            Ok(job)
        }
        .await;
        match result {
            Ok(Some(job)) => {
                enqueued += 1;
                ::metrics::counter!(metrics::JOBS_SCHEDULED, "kind" => "pipeline").increment(1);
                tracing::info!(pipeline = %spec.name, job = job.id, reason = %job.reason, "pipeline run scheduled");
            }
            Ok(None) => {}
            Err(e) => {
                ::metrics::counter!(metrics::SCHEDULER_ERRORS).increment(1);
                tracing::warn!(pipeline = %spec.name, error = %e, "cannot evaluate pipeline");
            }
        }
    }
    enqueued
}

async fn finished_at(service: &Service, table: &str, kind: JobKind) -> Result<Option<DateTime<Utc>>> {
    Ok(service.inner().catalog.last_finished(table, kind, None).await?.and_then(|j| j.finished_at))
}

/// A delay in `[0, jitter)` ms, the same for one table, kind and minute on every daemon.
fn spread(table: &str, kind: JobKind, now: DateTime<Utc>, jitter: std::time::Duration) -> i64 {
    let jitter = jitter.as_millis() as u64;
    if jitter == 0 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (table, kind.as_str(), now.timestamp() / 60).hash(&mut hasher);
    (hasher.finish() % jitter) as i64
}
