//! # sediment-catalog
//!
//! The registry of a lake's tables and the queue of the service that maintains them.
//!
//! Words:
//! - a **table** is a registered Delta table: a `namespace.table` name, a [`Layer`]
//!   (bronze, silver, gold), a location, a storage profile *by name* (never secrets),
//!   and its policy overrides;
//! - a **policy** ([`Policy`]) says what maintenance a table gets and when: per-layer
//!   defaults that a table overrides field by field;
//! - a **job** ([`Job`]) is one plan for one table (compact, vacuum, checkpoint,
//!   expire) and its attempts; at most one job per table and kind is *active*
//!   (scheduled or running) at a time, which the store enforces with a unique index;
//! - a **lease** is a job's claim by one daemon until an expiry that its heartbeats
//!   push forward; a job whose lease expired is claimable again (taken over), so a
//!   killed daemon's work is redone by another and never lost; every change of a
//!   running job is fenced on still holding its lease.
//!
//! [`Catalog`] is the store's trait; [`SqlCatalog`] implements it on SQLite (embedded,
//! the default) and PostgreSQL (several daemons share one; jobs are claimed with
//! `FOR UPDATE SKIP LOCKED`). Both run the same conformance suite (in the
//! integration tests). Time is always passed in, never read from a clock here.
//!
//! ```no_run
//! # async fn example() -> sediment_catalog::Result<()> {
//! use sediment_catalog::{Catalog, Layer, NewTable, SqlCatalog};
//! let catalog = SqlCatalog::connect("sqlite://./sediment-catalog.db").await?;
//! catalog.register_table(NewTable::new("sales.orders", Layer::Silver, "s3://lake/silver/orders"), chrono::Utc::now()).await?;
//! for table in catalog.list_tables().await? {
//!     println!("{} ({}) at {}", table.name, table.layer, table.location);
//! }
//! # Ok(()) }
//! ```

pub mod error;
mod migrations;
pub mod model;
pub mod policy;
mod sql;
pub mod tiering;

use chrono::{DateTime, Utc};

pub use error::{CatalogError, CatalogErrorKind, Result};
pub use model::{
    Job, JobFilter, JobKind, JobOutcome, JobState, Layer, Lease, NewJob, NewTable, TableEntry, TagEntry,
    validate_table_name,
};
pub use policy::{CheckpointPolicy, CompactionPolicy, ExpirePolicy, LayerPolicies, Policy, Schedule, VacuumPolicy};
pub use sql::{SqlCatalog, redact_url};

/// The most jobs one list call returns.
pub const MAX_PAGE: u32 = 500;

/// A catalog store. Every method is one short transaction; none holds a lock across
/// calls, so any number of daemons can share one store.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Whether the store answers (for readiness probes).
    async fn ping(&self) -> Result<()>;

    /// Register a table; a conflict when the name or the location is taken.
    async fn register_table(&self, table: NewTable, now: DateTime<Utc>) -> Result<TableEntry>;
    /// A table by name; not found when it is not registered.
    async fn table(&self, name: &str) -> Result<TableEntry>;
    /// Every table, by name.
    async fn list_tables(&self) -> Result<Vec<TableEntry>>;
    /// Unregister a table (the data stays) and cancel its scheduled jobs.
    async fn unregister_table(&self, name: &str, now: DateTime<Utc>) -> Result<TableEntry>;

    /// Schedule a job; `None` when one of that table and kind is already active (or, with
    /// `unless_succeeded_after`, succeeded since). The table must be registered, but for
    /// a pipeline job (recorded under its target, which its first run creates).
    async fn enqueue(&self, job: NewJob, now: DateTime<Utc>) -> Result<Option<Job>>;
    /// Claim the next due job for `owner` until `lease_until`: a scheduled job whose
    /// time has come, or a running one whose lease expired (taken over). Jobs whose
    /// lease expired on their last attempt fail first, as do cancelled ones.
    async fn claim(&self, owner: &str, lease_until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<Job>>;
    /// Renew a lease `owner` holds.
    async fn heartbeat(&self, id: i64, owner: &str, lease_until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Lease>;
    /// End an attempt `owner` holds; a conflict when the lease is not held any more.
    async fn finish(&self, id: i64, owner: &str, outcome: JobOutcome, now: DateTime<Utc>) -> Result<Job>;
    /// Cancel a job: at once when scheduled, on its next heartbeat when running.
    async fn cancel(&self, id: i64, now: DateTime<Utc>) -> Result<Job>;
    /// A job by id.
    async fn job(&self, id: i64) -> Result<Job>;
    /// Jobs matching a filter, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// The latest finished job of a table and kind in `state` (for schedules).
    async fn last_finished(&self, table: &str, kind: JobKind, state: Option<JobState>) -> Result<Option<Job>>;
    /// Active jobs (scheduled or running), for the queue-depth metric.
    async fn count_active(&self) -> Result<(u64, u64)>;
    /// Delete finished jobs that finished before `before`; how many.
    async fn prune_jobs(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Replace the mirror of a table's tags.
    async fn replace_tags(&self, table: &str, tags: Vec<TagEntry>) -> Result<()>;
    /// The mirrored tags of a table, by name.
    async fn tags(&self, table: &str) -> Result<Vec<TagEntry>>;
}
