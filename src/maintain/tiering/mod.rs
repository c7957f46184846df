//! Storage tiering by the table's own partitions: old partitions of a Delta table moved
//! to cheaper S3 storage classes, file by file with server-side copies in place, and
//! each file's class recorded in the log.
//!
//! Built so far: the policy data ([`TierSteps`], [`StorageClass`], from
//! `sediment-catalog`, so the daemon's policies and the CLI share them), the pure
//! [`planner`], and the S3 calls ([`s3::ObjectClasses`]: a file's class, a change of
//! class in place, restores). The executor (the moves, each file's class recorded in
//! the log), the `tier` command and tier-aware compaction come next (issue 15).
//!
//! ```text
//! snapshot ─▶ live files + the class the log records for each ─▶ planner (pure)
//!          ─▶ plan: per due partition, the files to move and their class
//! ```

pub mod planner;
pub mod s3;

pub use planner::{AgeBy, PartitionColumn, TierFile, TierMove, TierPlan};
pub use s3::{ObjectClasses, RestoreState};
pub use sediment_catalog::tiering::{StorageClass, TierStep, TierSteps};
