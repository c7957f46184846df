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
//! ```no_run
//! # async fn example(batches: Vec<deltalake::arrow::array::RecordBatch>) -> sediment::Result<()> {
//! use sediment::{Table, WriteOptions};
//! let mut table = Table::open_or_new("memory://demo/events", Default::default()).await?;
//! table.write(batches, WriteOptions::append().partition_by(["date"])).await?;
//! let (rows, report) = table.scan().filter("date = '2024-05-01'").execute().await?.collect().await?;
//! println!("{} batches, {} of {} files read", rows.len(), report.files_after_stats_skipping, report.files_in_snapshot);
//! # Ok(()) }
//! ```

pub mod commit;
pub mod compaction;
pub mod deletion_vectors;
pub mod demo;
pub mod dml;
pub mod error;
pub mod features;
pub mod history;
pub mod info;
pub mod merge;
pub mod metered_store;
pub mod predicate;
pub mod scan;
pub mod schema;
mod sink;
pub mod source;
pub mod storage;
pub mod table;
pub mod table_writer;
pub mod write;

pub use deltalake;
pub use deltalake::arrow;

pub use compaction::{Clustering, CompactOptions, CompactionPlan, CompactionReport, TableHealth};
pub use dml::{ChangeReport, DeleteReport, UpdateReport};
pub use error::{Error, ErrorKind, Result};
pub use history::HistoryEntry;
pub use info::TableInfo;
pub use merge::{
    DEFAULT_SOURCE_MEMORY_LIMIT, MatchedAction, Merge, MergeReport, NotMatchedAction, NotMatchedBySourceAction,
    Scd2Options,
};
pub use scan::{Scan, ScanBuilder, ScanPlan, ScanReport};
pub use schema::SchemaMode;
pub use sink::{DEFAULT_TARGET_FILE_SIZE, writer_properties, writer_properties_for};
pub use storage::StorageOptions;
pub use table::{DataFile, OpenOptions, Table};
pub use table_writer::{TableWriter, TableWriterSettings};
pub use write::{WriteMode, WriteOptions, WriteReport};
