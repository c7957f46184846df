//! Keeping a table healthy: compaction, checkpoints, restore, vacuum and log cleanup,
//! partition retention, storage tiering.
//!
//! ```text
//! snapshot ─▶ file views ─▶ health ─▶ planner (pure, in sediment-compactor) ─▶ plan (--dry-run shows it)
//!          ─▶ executor: bins rewritten under a memory budget ─▶ commits with dataChange = false
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`checkpoint`] | [`Table::checkpoint`](crate::Table::checkpoint): a checkpoint of the current version, now |
//! | [`restore`] | [`Table::restore`](crate::Table::restore): an older version's files and metadata made current in one RESTORE commit |
//! | [`vacuum`] | [`Table::vacuum`](crate::Table::vacuum): deleting files and log entries no kept version needs (lite, full, tags, retention) |
//! | [`expire`] | [`Table::expire`](crate::Table::expire): partition retention, rows older than a horizon removed |
//! | [`tiering`] | [`Table::tier`](crate::Table::tier): old partitions moved to colder S3 storage classes, each file's class recorded in the log |
//! | [`compaction`] | [`Table::compact`](crate::Table::compact) and [`Table::compaction_plan`](crate::Table::compaction_plan): the glue around `sediment-compactor` |
//!
//! Words: a *plan* says what to do, a *job* is one running attempt of a plan, a
//! *commit* is the log entry it produces. Maintenance never changes what a reader
//! sees (`dataChange = false`), and gives way to the writers it races. Builds on
//! every wing below it.

pub mod checkpoint;
pub mod compaction;
pub mod expire;
pub mod restore;
pub mod tiering;
pub mod vacuum;

pub use checkpoint::CheckpointReport;
pub use compaction::{Clustering, CompactOptions, CompactionPlan, CompactionReport, TableHealth};
pub use expire::{ExpireOptions, ExpireReport};
pub use restore::{RestoreReport, RestoreTarget};
pub use tiering::{TierOptions, TierReport};
pub use vacuum::{VacuumOptions, VacuumParts, VacuumReport};
