//! # sediment-compactor
//!
//! Small-file compaction for Delta tables, planned from table health.
//!
//! The words, fixed:
//! - **file view**: what the planner knows of a data file: path, size, rows, partition,
//!   whether it has a deletion vector ([`FileView`]);
//! - **health**: per partition and per table, how far the file layout is from the
//!   target file size, with a score from 0 to 100 ([`health`]);
//! - **plan**: the bins to rewrite, partition by partition ([`CompactionPlan`]); a
//!   **bin** is a set of small files of one partition rewritten into one file;
//! - **job**: one running attempt of a plan by the [`executor`];
//! - **copy**: a bin whose inputs' row groups are all large is written by copying
//!   them undecoded (`copy` module), the others are decoded and encoded again;
//! - **splice**: a bin of small files keeps the pages of its columns written without
//!   a dictionary, copied undecoded into its output's column chunks; only the other
//!   columns are decoded and encoded again (`splice` module);
//! - **request**: one call to the object store; a job's requests are bounded in
//!   number and bytes and counted ([`io`]);
//! - **conflict**: a commit that lost to another writer; every writer of Sediment
//!   plans again under one [`retry`] policy;
//! - **commit**: the log entry a job produces: `remove` (dataChange = false) of a bin's
//!   inputs and `add` of its output, for one or more bins at a time.
//!
//! Data flow: snapshot → `Vec<FileView>` → [`planner::plan`] (pure: no I/O, no clock)
//! → [`CompactionPlan`] (serializable: shown by `--dry-run`, logged) →
//! [`executor::CompactionExecutor`] (reads, writes, commits, handles conflicts) →
//! [`executor::CompactionReport`].
//!
//! This crate knows nothing of the rest of Sediment; callers check the table's
//! protocol features before executing a plan.

pub mod commit;
mod copy;
pub mod encoding;
pub mod error;
pub mod executor;
pub mod health;
pub mod io;
pub mod planner;
pub mod reader;
pub mod retry;
mod splice;

pub use error::{CompactionError, Result};
pub use executor::{CompactionExecutor, CompactionReport, ExecutorSettings};
pub use health::{FileView, PartitionHealth, PartitionKey, TableHealth};
pub use io::{BoundedStore, IoLimiter, IoReport, IoSettings};
pub use planner::{Bin, Clustering, CompactionPlan, PartitionPlan, PlannedFile, PlannerSettings};
pub use retry::{RetryBudget, RetrySettings};
