//! The daemon's Prometheus metrics: their names (one place), and the recorder that
//! `GET /metrics` renders. The library emits through the `metrics` facade; only the
//! daemon installs a recorder, once per process.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sediment_jobs_total` | counter | `kind`, `outcome` (succeeded, failed, cancelled, given_back) |
//! | `sediment_jobs_scheduled_total` | counter | `kind` |
//! | `sediment_job_duration_seconds` | histogram | `kind` |
//! | `sediment_bytes_read_total`, `sediment_bytes_written_total` | counter | `kind` |
//! | `sediment_write_amplification` | histogram | |
//! | `sediment_commit_conflicts_total` | counter | |
//! | `sediment_lease_takeovers_total` | counter | |
//! | `sediment_queue_depth` | gauge | `state` (scheduled, running) |
//! | `sediment_table_files`, `sediment_table_health_score` | gauge | `table` |
//! | `sediment_table_bytes` | gauge | `table`, `storage_class` (from the log's class tags) |
//! | `sediment_bytes_tiered_total` | counter | `storage_class` (bytes moved into it) |
//! | `sediment_scheduler_errors_total` | counter | |
//! | `sediment_pipeline_runs_total` | counter | `pipeline`, `outcome` (committed, up_to_date, failed) |
//! | `sediment_pipeline_rows_total` | counter | `pipeline`, `outcome` (read, written, quarantined, dropped) |
//! | `sediment_pipeline_rule_failures_total` | counter | `pipeline`, `rule`, `action` (rows that broke it) |
//! | `sediment_pipeline_versions_behind` | gauge | `pipeline`, `source` (after its last run) |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const JOBS: &str = "sediment_jobs_total";
pub const JOBS_SCHEDULED: &str = "sediment_jobs_scheduled_total";
pub const JOB_DURATION: &str = "sediment_job_duration_seconds";
pub const BYTES_READ: &str = "sediment_bytes_read_total";
pub const BYTES_WRITTEN: &str = "sediment_bytes_written_total";
pub const WRITE_AMPLIFICATION: &str = "sediment_write_amplification";
pub const COMMIT_CONFLICTS: &str = "sediment_commit_conflicts_total";
pub const LEASE_TAKEOVERS: &str = "sediment_lease_takeovers_total";
pub const QUEUE_DEPTH: &str = "sediment_queue_depth";
pub const TABLE_FILES: &str = "sediment_table_files";
pub const TABLE_HEALTH: &str = "sediment_table_health_score";
pub const TABLE_BYTES: &str = "sediment_table_bytes";
pub const BYTES_TIERED: &str = "sediment_bytes_tiered_total";
pub const SCHEDULER_ERRORS: &str = "sediment_scheduler_errors_total";
pub const PIPELINE_RUNS: &str = "sediment_pipeline_runs_total";
pub const PIPELINE_ROWS: &str = "sediment_pipeline_rows_total";
pub const PIPELINE_RULE_FAILURES: &str = "sediment_pipeline_rule_failures_total";
pub const PIPELINE_BEHIND: &str = "sediment_pipeline_versions_behind";

/// Install the Prometheus recorder (once per process) and return its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (a host program's); then ours
            // renders what it alone records, which is nothing, rather than failing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(JOBS, "jobs ended, by kind and outcome");
    metrics::describe_counter!(JOBS_SCHEDULED, "jobs scheduled by the scheduler, by kind");
    metrics::describe_histogram!(JOB_DURATION, metrics::Unit::Seconds, "job duration, by kind");
    metrics::describe_counter!(BYTES_READ, metrics::Unit::Bytes, "bytes of data files read by jobs");
    metrics::describe_counter!(BYTES_WRITTEN, metrics::Unit::Bytes, "bytes of data files written by jobs");
    metrics::describe_histogram!(WRITE_AMPLIFICATION, "bytes written per byte of committed output");
    metrics::describe_counter!(COMMIT_CONFLICTS, "commits that lost a race with another writer and were re-planned");
    metrics::describe_counter!(LEASE_TAKEOVERS, "jobs taken over after their daemon's lease expired");
    metrics::describe_gauge!(QUEUE_DEPTH, "active jobs, by state");
    metrics::describe_gauge!(TABLE_FILES, "live data files per table");
    metrics::describe_gauge!(TABLE_HEALTH, "table health score (100: as few files as its bytes allow)");
    metrics::describe_gauge!(TABLE_BYTES, metrics::Unit::Bytes, "live data bytes per table and storage class");
    metrics::describe_counter!(BYTES_TIERED, metrics::Unit::Bytes, "bytes moved to a colder storage class by tiering");
    metrics::describe_counter!(SCHEDULER_ERRORS, "tables the scheduler could not evaluate");
    metrics::describe_counter!(PIPELINE_RUNS, "pipeline runs, by pipeline and outcome");
    metrics::describe_counter!(PIPELINE_ROWS, "rows pipeline runs read, wrote, quarantined or dropped");
    metrics::describe_counter!(PIPELINE_RULE_FAILURES, "rows that broke a pipeline's data-quality rule");
    metrics::describe_gauge!(PIPELINE_BEHIND, "source versions a pipeline has not consumed, after its last run");
}
