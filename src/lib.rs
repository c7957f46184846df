//! # Sediment
//!
//! A lakehouse table service for Delta Lake tables on object storage (S3 and
//! S3-compatible stores, local disk, memory), built on delta-rs.
//!
//! The words used throughout:
//! - a **table** is a Delta table at a location; a [`Table`] handle looks at one
//!   **version** (snapshot) of it;
//! - a **write** turns record batches into data files and a **commit** makes them
//!   visible atomically ([`Table::write`], [`TableWriter`] for streaming producers);
//! - a **scan** reads one version with projection, filter and limit, pruning files by
//!   partition values and statistics first ([`Table::scan`], [`ScanReport`]);
//! - **history** lists commits ([`Table::history`]); **info** describes a snapshot's
//!   file layout ([`Table::info`]).
//!
//! The library is in wings, by what a user does with a table; dependencies flow one
//! way, from the top of this list to the bottom:
//!
//! | wing | what it holds |
//! |---|---|
//! | [`cli`] | the `sediment` command line: one file per command (the binary parses and dispatches) |
//! | [`service`] | the daemon, `run-once`, the catalog operations and the HTTP API |
//! | [`pipeline`] | medallion pipelines: incremental, exactly-once upserts between layers, data-quality rules, quarantine, lineage |
//! | [`maintain`] | compaction, checkpoints, restore, vacuum and log cleanup, partition retention (and, next, tiering) |
//! | [`change`] | deletes, updates, merges and deletion vectors |
//! | [`write`] | appends and overwrites, the file sink, [`TableWriter`], input files |
//! | [`read`] | predicates, scan planning and scans |
//! | [`table`] | opening and time travel, storage URIs, protocol features, schema fitting, commits, history, info |
//!
//! [`error`] (the one error type, with a kind a caller can act on) and [`demo`]
//! (deterministic synthetic data) sit beside them and import none of them.
//!
//! ```no_run
//! # async fn example(batches: Vec<deltalake::arrow::array::RecordBatch>) -> sediment::Result<()> {
//! use sediment::{Table, WriteOptions};
//! let mut table = Table::open_or_new("memory://demo/events", Default::default()).await?;
//! table.write(batches, WriteOptions::append().partition_by(["date"])).await?;
//! let (rows, report) = table.scan().filter("date = '2024-05-01'").execute().await?.collect().await?;
//! println!("{} batches, {} of {} files read", rows.len(), report.files_after_stats_skipping, report.files_in_snapshot);
//! # Ok(()) }
//! ```

pub mod change;
pub mod cli;
pub mod demo;
pub mod error;
pub mod maintain;
pub mod pipeline;
pub mod read;
pub mod service;
pub mod table;
pub mod write;

pub use deltalake;
pub use deltalake::arrow;

pub use change::{
    ChangeOptions, ChangeReport, DEFAULT_SOURCE_MEMORY_LIMIT, DeleteReport, MatchedAction, Merge, MergeReport,
    NotMatchedAction, NotMatchedBySourceAction, Scd2Options, UpdateReport,
};
pub use error::{Error, ErrorKind, Result};
pub use maintain::{
    CheckpointReport, Clustering, CompactOptions, CompactionPlan, CompactionReport, ExpireOptions, ExpireReport,
    RestoreReport, RestoreTarget, TableHealth, VacuumOptions, VacuumParts, VacuumReport,
};
pub use read::{CHANGE_COLUMNS, Changes, Predicate, Scan, ScanBuilder, ScanPlan, ScanReport};
pub use table::clock::{Clock, ManualClock, SystemClock};
pub use table::conflict::{RetryBudget, RetrySettings};
pub use table::history::HistoryEntry;
pub use table::info::TableInfo;
pub use table::log_files::LogView;
pub use table::schema::SchemaMode;
pub use table::storage::{BoundedStore, IoLimiter, IoReport, IoSettings, StorageOptions};
pub use table::tags::Tag;
pub use table::{DataFile, OpenOptions, Table};
pub use write::{
    AddConstraintReport, Constraint, DEFAULT_TARGET_FILE_SIZE, TableWriter, TableWriterSettings, WriteMode,
    WriteOptions, WriteReport, writer_properties, writer_properties_for,
};
