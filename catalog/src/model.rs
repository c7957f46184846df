//! What the catalog holds: tables (with their layer and policy overrides), jobs (with
//! their lease and report) and the mirror of each table's tags.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CatalogError, Result};

/// A table's layer in the medallion architecture.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Raw, append-heavy.
    Bronze,
    /// Cleaned, deduplicated, upserted by key.
    Silver,
    /// Aggregated, read by dashboards.
    Gold,
}

impl Layer {
    /// Its name in the catalog and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
        }
    }
}

impl std::str::FromStr for Layer {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bronze" => Ok(Layer::Bronze),
            "silver" => Ok(Layer::Silver),
            "gold" => Ok(Layer::Gold),
            other => Err(CatalogError::invalid(format!("layer: expected bronze, silver or gold, found {other:?}"))),
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Check a table name: `namespace.table`, each part of ASCII letters, digits and `_`
/// (starting with a letter or `_`), at most 128 characters in all.
pub fn validate_table_name(name: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit())
    };
    match name.split_once('.') {
        Some((ns, table)) if name.len() <= 128 && part_ok(ns) && part_ok(table) => Ok(()),
        _ => Err(CatalogError::invalid(format!(
            "name: expected namespace.table (letters, digits and _, not starting with a digit), found {name:?}"
        ))),
    }
}

/// A table to register.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTable {
    /// `namespace.table`.
    pub name: String,
    pub layer: Layer,
    /// Where the Delta table is (`s3://bucket/prefix`, `file:///path`, a local path).
    pub location: String,
    /// The name of a storage profile of the daemon's settings whose options (endpoint,
    /// region, credentials from the environment) open this location; never the secrets
    /// themselves. `None`: the process's environment (`AWS_*`).
    #[serde(default)]
    pub storage_options: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Policy fields that differ from the layer's default (a JSON object).
    #[serde(default)]
    pub policy: Option<Value>,
    /// CHECK constraints the table must have, by name (SQL conditions every row must
    /// make true). They live in the Delta table (`delta.constraints.<name>`), not in
    /// the catalog: registering adds the missing ones, a table a pipeline creates gets
    /// them in its first commit.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub constraints: std::collections::BTreeMap<String, String>,
}

impl NewTable {
    /// A table of `layer` at `location`, with the defaults for the rest.
    pub fn new(name: impl Into<String>, layer: Layer, location: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            layer,
            location: location.into(),
            storage_options: None,
            owner: None,
            description: None,
            policy: None,
            constraints: Default::default(),
        }
    }
}

/// A registered table.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub layer: Layer,
    pub location: String,
    pub storage_options: Option<String>,
    pub owner: Option<String>,
    pub description: Option<String>,
    /// Its policy overrides (an object; empty when it follows its layer).
    pub policy: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a job does.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Compact,
    Vacuum,
    Checkpoint,
    Expire,
    Tier,
    /// A pipeline run (its table: the pipeline's target, registered or not yet).
    Pipeline,
}

impl JobKind {
    /// Every kind, in the order the scheduler considers them.
    pub const ALL: [JobKind; 6] =
        [JobKind::Compact, JobKind::Checkpoint, JobKind::Vacuum, JobKind::Expire, JobKind::Tier, JobKind::Pipeline];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Compact => "compact",
            JobKind::Vacuum => "vacuum",
            JobKind::Checkpoint => "checkpoint",
            JobKind::Expire => "expire",
            JobKind::Tier => "tier",
            JobKind::Pipeline => "pipeline",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            CatalogError::invalid(format!(
                "kind: expected compact, vacuum, checkpoint, expire, tier or pipeline, found {s:?}"
            ))
        })
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to be claimed (new, or retried after a failed attempt, or given back).
    Scheduled,
    /// Claimed by a worker holding its lease.
    Running,
    Succeeded,
    /// Failed its last attempt; `error` says why.
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] =
        [JobState::Scheduled, JobState::Running, JobState::Succeeded, JobState::Failed, JobState::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is over.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl std::str::FromStr for JobState {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            CatalogError::invalid(format!(
                "state: expected scheduled, running, succeeded, failed or cancelled, found {s:?}"
            ))
        })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub table: String,
    pub kind: JobKind,
    /// Why: `request`, `schedule`, or the health trigger that fired.
    pub reason: String,
    /// Options of the operation (a JSON object; the service reads them).
    pub options: Value,
    /// Not before this time (jitter, backoff).
    pub run_after: DateTime<Utc>,
    /// Attempts before it fails for good.
    pub max_attempts: u32,
    /// Skip it when a job of the same table and kind succeeded after this time (the
    /// scheduler's snapshot predates that job, so its trigger may be stale).
    pub unless_succeeded_after: Option<DateTime<Utc>>,
}

/// A job: one plan for one table, and the attempts at running it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub table: String,
    pub kind: JobKind,
    pub state: JobState,
    pub reason: String,
    pub options: Value,
    /// Attempts started so far (1 while the first runs).
    pub attempt: u32,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    /// The daemon holding (or that last held) its lease.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether the current attempt took the job over from a daemon whose lease expired.
    pub taken_over: bool,
    pub cancel_requested: bool,
    /// The last attempt's error.
    pub error: Option<String>,
    /// The operation's report (files, bytes, rows, duration, write amplification).
    pub report: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFilter {
    pub table: Option<String>,
    pub kind: Option<JobKind>,
    pub state: Option<JobState>,
    /// Only jobs with an id below this (the next page).
    pub before_id: Option<i64>,
    /// At most this many (newest first); the store caps it.
    pub limit: Option<u32>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Succeeded {
        report: Value,
    },
    /// Failed; retried at `retry_at` when attempts remain, else (or with `None`: an
    /// error retrying cannot mend) failed for good.
    Failed {
        error: String,
        report: Option<Value>,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Stopped on a cancel request.
    Cancelled {
        report: Option<Value>,
    },
    /// Handed back unstarted or unfinished (a daemon shutting down): scheduled again at
    /// once, the attempt not counted.
    GivenBack,
}

/// What a heartbeat learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Still ours, renewed.
    Held,
    /// Still ours, but a cancel was requested: stop.
    CancelRequested,
    /// Not ours any more (expired and taken over, or finished by someone else).
    Lost,
}

/// A tag as mirrored from a table's `_sediment/tags` (which stays the truth).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagEntry {
    pub table: String,
    pub name: String,
    pub version: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["sales.orders", "_x.y1", "a.b_c"] {
            validate_table_name(ok).unwrap();
        }
        for bad in ["orders", "a.b.c", ".b", "a.", "1a.b", "a.b-c", "a b.c", ""] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>().unwrap(), k);
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("optimize".parse::<JobKind>().unwrap_err().to_string().contains("optimize"));
    }
}
