//! Workers: `workers.concurrency` loops that claim a due job, run it while a heartbeat
//! renews its lease, and record how it ended, fenced on still holding the lease.
//!
//! - A cancel request (seen by the heartbeat) or a lost lease stops the job: its
//!   future is dropped, which leaves at most unreferenced files for vacuum.
//! - On shutdown the loops stop claiming; a running job gets `workers.shutdown_grace`
//!   to finish, then is given back (scheduled again, the attempt not counted).
//! - A failed attempt is retried after `retry_backoff × 2^(attempt-1)` while attempts
//!   remain, unless the error is one retrying cannot mend (bad input, not found,
//!   unsupported, a damaged table).
//! - Fairness: a table has at most one active job per kind, jobs are claimed oldest
//!   due first, and a compaction rewrites at most `max_bytes_per_run`, so a huge
//!   table's backlog goes in bounded turns between the other tables' jobs.

use std::sync::Arc;
use std::time::Duration;

use sediment_catalog::{Job, JobOutcome, JobState, Lease};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::execute::{self, LeaseFence};
use super::{Service, metrics};
use crate::error::ErrorKind;

/// What `run-once` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunOnceReport {
    /// Jobs the scheduling pass enqueued.
    pub enqueued: usize,
    /// Jobs that ran, with how they ended.
    pub jobs: Vec<JobSummary>,
}

impl RunOnceReport {
    /// Whether any job failed (its attempt, even if a retry is scheduled).
    pub fn any_failed(&self) -> bool {
        self.jobs.iter().any(|j| j.outcome == "failed")
    }
}

/// One job's outcome in a run.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: i64,
    pub table: String,
    pub kind: String,
    /// `succeeded`, `failed`, `cancelled`, `given_back` or `lease_lost`.
    pub outcome: String,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Start the worker loops.
pub fn spawn_pool(
    service: Service,
    shutdown: CancellationToken,
    stop_when_idle: bool,
) -> Vec<JoinHandle<Vec<JobSummary>>> {
    (0..service.inner().settings.workers.concurrency)
        .map(|_| tokio::spawn(worker_loop(service.clone(), shutdown.clone(), stop_when_idle)))
        .collect()
}

/// Run the pool until no due job is left.
pub async fn run_until_idle(service: Service) -> RunOnceReport {
    let mut report = RunOnceReport::default();
    for worker in spawn_pool(service, CancellationToken::new(), true) {
        if let Ok(jobs) = worker.await {
            report.jobs.extend(jobs);
        }
    }
    report.jobs.sort_by_key(|j| j.id);
    report
}

async fn worker_loop(service: Service, shutdown: CancellationToken, stop_when_idle: bool) -> Vec<JobSummary> {
    let inner = service.inner();
    let mut done = Vec::new();
    while !shutdown.is_cancelled() {
        let now = inner.clock.now();
        let lease_until = now + chrono::Duration::from_std(inner.settings.workers.lease).unwrap_or_default();
        match inner.catalog.claim(&inner.daemon_id, lease_until, now).await {
            Ok(Some(job)) => done.push(run_claimed(&service, job, lease_until, &shutdown).await),
            Ok(None) if stop_when_idle => break,
            Err(e) if stop_when_idle => {
                tracing::warn!(error = %e, "cannot claim a job");
                break;
            }
            idle => {
                if let Err(e) = idle {
                    tracing::warn!(error = %e, "cannot claim a job");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(inner.settings.workers.poll) => {}
                }
            }
        }
    }
    done
}

enum Ending {
    Finished(crate::Result<serde_json::Value>),
    Cancelled,
    LeaseLost,
    GivenBack,
}

#[tracing::instrument(skip_all, fields(job = job.id, table = %job.table, kind = %job.kind, attempt = job.attempt))]
async fn run_claimed(
    service: &Service,
    job: Job,
    lease_until: chrono::DateTime<chrono::Utc>,
    shutdown: &CancellationToken,
) -> JobSummary {
    let inner = service.inner();
    let workers = &inner.settings.workers;
    if job.taken_over {
        ::metrics::counter!(metrics::LEASE_TAKEOVERS).increment(1);
        tracing::warn!("took the job over: the daemon that held it stopped heartbeating");
    }
    tracing::info!(reason = %job.reason, "job started");
    let started = std::time::Instant::now();
    let margin = workers.heartbeat.min(workers.lease / 4);
    let fence = Arc::new(LeaseFence::new(job.id, lease_until, margin, inner.clock.clone()));
    let stop = CancellationToken::new();
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeat = tokio::spawn(heartbeat(service.clone(), job.id, fence.clone(), stop.clone(), cancelled.clone()));

    let exec = execute::run(service, &job, fence.clone());
    tokio::pin!(exec);
    let ending = tokio::select! {
        result = &mut exec => Ending::Finished(result),
        _ = stop.cancelled() => Ending::Cancelled,
        _ = shutdown.cancelled() => {
            tokio::select! {
                result = &mut exec => Ending::Finished(result),
                _ = stop.cancelled() => Ending::Cancelled,
                _ = tokio::time::sleep(workers.shutdown_grace) => Ending::GivenBack,
            }
        }
    };
    heartbeat.abort();
    let ending = match ending {
        Ending::Cancelled if !cancelled.load(std::sync::atomic::Ordering::SeqCst) => Ending::LeaseLost,
        other => other,
    };
    let now = inner.clock.now();
    let duration_ms = started.elapsed().as_millis() as u64;
    let (outcome, error) = match ending {
        Ending::Finished(Ok(report)) => (JobOutcome::Succeeded { report }, None),
        Ending::Finished(Err(err)) => {
            let retry_at = retryable(err.kind()).then(|| {
                let backoff = workers.retry_backoff.saturating_mul(1 << job.attempt.saturating_sub(1).min(16));
                now + chrono::Duration::from_std(backoff).unwrap_or_default()
            });
            let message = err.to_string();
            (JobOutcome::Failed { error: message.clone(), report: None, retry_at }, Some(message))
        }
        Ending::Cancelled => (JobOutcome::Cancelled { report: None }, None),
        Ending::GivenBack => (JobOutcome::GivenBack, None),
        Ending::LeaseLost => {
            tracing::warn!("stopped: the lease was lost (another daemon took the job over)");
            return summary(&job, "lease_lost", Some("the lease was lost".into()), duration_ms);
        }
    };
    let label = match &outcome {
        JobOutcome::Succeeded { .. } => "succeeded",
        JobOutcome::Failed { .. } => "failed",
        JobOutcome::Cancelled { .. } => "cancelled",
        JobOutcome::GivenBack => "given_back",
    };
    ::metrics::counter!(metrics::JOBS, "kind" => job.kind.as_str(), "outcome" => label).increment(1);
    ::metrics::histogram!(metrics::JOB_DURATION, "kind" => job.kind.as_str()).record(duration_ms as f64 / 1000.0);
    match inner.catalog.finish(job.id, &inner.daemon_id, outcome, now).await {
        Ok(ended) => {
            let retry = ended.state == JobState::Scheduled && label == "failed";
            tracing::info!(outcome = label, retry, duration_ms, error = error.as_deref().unwrap_or(""), "job ended");
        }
        Err(e) => tracing::warn!(error = %e, outcome = label, "cannot record the end of the job"),
    }
    summary(&job, label, error, duration_ms)
}

fn summary(job: &Job, outcome: &str, error: Option<String>, duration_ms: u64) -> JobSummary {
    JobSummary {
        id: job.id,
        table: job.table.clone(),
        kind: job.kind.as_str().into(),
        outcome: outcome.into(),
        error,
        duration_ms,
    }
}

/// Whether another attempt may succeed.
fn retryable(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Conflict | ErrorKind::Unavailable | ErrorKind::Internal)
}

/// Renew the lease every `workers.heartbeat`; stop the job on a cancel or a lost lease.
async fn heartbeat(
    service: Service,
    id: i64,
    fence: Arc<LeaseFence>,
    stop: CancellationToken,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
) {
    let inner = service.inner();
    let workers = &inner.settings.workers;
    loop {
        tokio::time::sleep(workers.heartbeat).await;
        let now = inner.clock.now();
        let until = now + chrono::Duration::from_std(workers.lease).unwrap_or_default();
        match inner.catalog.heartbeat(id, &inner.daemon_id, until, now).await {
            Ok(Lease::Held) => fence.renewed(until),
            Ok(Lease::CancelRequested) => {
                fence.renewed(until);
                cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
                stop.cancel();
                return;
            }
            Ok(Lease::Lost) => {
                fence.lose();
                stop.cancel();
                return;
            }
            // The fence refuses commits once the lease runs short; keep trying.
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Prune job history now and then.
pub async fn housekeeping(service: Service, shutdown: CancellationToken) {
    let inner = service.inner();
    loop {
        let horizon = inner.clock.now() - chrono::Duration::from_std(inner.settings.jobs.history).unwrap_or_default();
        match inner.catalog.prune_jobs(horizon).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "pruned job history"),
            Err(e) => tracing::warn!(error = %e, "cannot prune job history"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
