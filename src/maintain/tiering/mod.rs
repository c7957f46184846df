//! Storage tiering by the table's own partitions: old partitions of a Delta table moved
//! to cheaper S3 storage classes, file by file with server-side copies in place, and
//! each file's class recorded in the log.
//!
//! Built so far: the policy data ([`TierSteps`], [`StorageClass`], from
//! `sediment-catalog`, so the daemon's policies and the CLI share them) and the pure
//! [`planner`]. The executor (CopyObject through `aws-sdk-s3`, the log record, restores)
//! and tier-aware compaction come next (issue 15).
//!
//! ```text
//! snapshot ─▶ live files + the class the log records for each ─▶ planner (pure)
//!          ─▶ plan: per due partition, the files to move and their class
//! ```

pub mod planner;

pub use planner::{AgeBy, PartitionColumn, TierFile, TierMove, TierPlan};
pub use sediment_catalog::tiering::{StorageClass, TierStep, TierSteps};
