//! Storage tiering by the table's own partitions: old partitions of a Delta table moved
//! to cheaper S3 storage classes, file by file with server-side copies in place, and
//! each file's class recorded in the log.
//!
//! Built so far: the policy data ([`TierSteps`], [`StorageClass`], from
//! `sediment-catalog`, so the daemon's policies and the CLI share them), the pure
//! [`planner`], and the S3 calls ([`s3::ObjectClasses`]: a file's class, a change of
//! class in place, restores), and the plan from the log ([`Table::tier_plan`], what
//! `sediment tier --dry-run` shows). The executor (the moves, each file's class
//! recorded in the log) and tier-aware compaction come next (issue 15).
//!
//! ```text
//! snapshot ─▶ live files + the class the log records for each ─▶ planner (pure)
//!          ─▶ plan: per due partition, the files to move and their class
//! ```

pub mod archive;
pub mod cost;
pub mod executor;
pub mod placement;
pub mod planner;
pub mod s3;

pub use archive::{ArchivedFile, RestoreArchivedReport};
pub use cost::{CostReport, StoragePrices};
pub use executor::{FilesBytes, TierOptions, TierReport};
pub use planner::{AgeBy, PartitionColumn, TierFile, TierMove, TierPlan};
pub use s3::{CopyOutcome, ObjectClasses, RestoreState, has_storage_classes};
pub use sediment_catalog::tiering::{StorageClass, TierStep, TierSteps};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deltalake::arrow::datatypes::DataType;

use crate::error::Result;
use crate::table::Table;

pub use crate::table::log_files::CLASS_TAG;

/// [`Table::age_by`] over a schema, partition columns and files.
fn age_by_in(
    uri: &str,
    schema: &deltalake::arrow::datatypes::SchemaRef,
    partition_columns: Vec<String>,
    column: Option<&str>,
    files: &[TierFile],
) -> Result<AgeBy> {
    let columns: Vec<PartitionColumn> = partition_columns
        .into_iter()
        .map(|name| {
            let temporal = schema
                .field_with_name(&name)
                .is_ok_and(|f| matches!(f.data_type(), DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)));
            PartitionColumn { name, temporal }
        })
        .collect();
    planner::age_by(&columns, column, files).map_err(|e| e.context(format!("table {uri}")))
}

/// [`Table::storage_cost`] of `files` aging `by` (a table whose partitions have no age
/// still has a cost, by partition value).
fn cost_of(
    files: &[TierFile],
    by: Option<AgeBy>,
    prices: &StoragePrices,
    steps: Option<&TierSteps>,
    now: DateTime<Utc>,
) -> Result<CostReport> {
    let plan = match (steps, &by) {
        (Some(steps), Some(by)) if !steps.is_empty() => {
            Some((planner::plan(files, by, steps, now)?, steps.to_string()))
        }
        _ => None,
    };
    Ok(cost::cost_report(files, by.as_ref(), prices, plan.as_ref().map(|(p, s)| (p, s.clone()))))
}

impl crate::table::log_files::LogView {
    /// The live files as the tiering planner sees them (see [`Table::tier_files`]).
    pub fn tier_files(&self) -> Vec<TierFile> {
        self.files()
            .iter()
            .zip(self.class_tags())
            .map(|(f, class)| TierFile {
                path: f.path.clone(),
                size: f.size,
                partition: f.partition_values.clone(),
                added_ms: f.modification_time,
                storage_class: archive::class_from_tag(class.as_deref()),
            })
            .collect()
    }

    /// What this version's storage costs a month, as [`Table::storage_cost`] says.
    pub fn storage_cost(
        &self,
        prices: &StoragePrices,
        steps: Option<&TierSteps>,
        column: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CostReport> {
        let files = self.tier_files();
        let partition_columns = self.metadata().partition_columns().to_vec();
        let by = age_by_in(self.uri(), &self.arrow_schema(), partition_columns, column, &files).ok();
        cost_of(&files, by, prices, steps, now)
    }
}

impl Table {
    /// The live files of this version as the tiering planner sees them, each with the
    /// class the log records for it (its `add`'s [`CLASS_TAG`]).
    pub fn tier_files(&self) -> Result<Vec<TierFile>> {
        let state = self.state()?;
        Ok(state
            .log_data()
            .iter()
            .map(|f| {
                // The tags are only reachable through the whole `add` in deltalake 1.1.
                #[allow(deprecated)]
                let add = f.add_action();
                let storage_class = archive::class_of(&add);
                TierFile {
                    path: add.path,
                    size: add.size.max(0) as u64,
                    partition: f.partition_values_map().into_iter().collect::<BTreeMap<_, _>>(),
                    added_ms: add.modification_time,
                    storage_class,
                }
            })
            .collect())
    }

    /// Live files and bytes per storage class, from the log's class tags (every class,
    /// empty ones included, hot to cold).
    pub fn class_totals(&self) -> Result<BTreeMap<StorageClass, FilesBytes>> {
        let mut totals: BTreeMap<StorageClass, FilesBytes> =
            StorageClass::ALL.into_iter().map(|c| (c, FilesBytes::default())).collect();
        for file in self.tier_files()? {
            let entry = totals.entry(file.storage_class).or_default();
            entry.files += 1;
            entry.bytes += file.size;
        }
        Ok(totals)
    }

    /// What tiering by `steps` would move at `now` (`column`: the partition column to
    /// age by; default the first date-like one, add time when unpartitioned). Plans
    /// from the log alone: no request per file.
    pub fn tier_plan(&self, steps: &TierSteps, column: Option<&str>, now: DateTime<Utc>) -> Result<TierPlan> {
        let files = self.tier_files()?;
        let by = self.age_by(column, &files)?;
        planner::plan(&files, &by, steps, now)
    }

    /// How this table's partitions age (see [`planner::age_by`]): the one rule for
    /// tiering and partition expiry (a date or timestamp partition column first, else
    /// the first string one whose every value is a date).
    pub(crate) fn age_by(&self, column: Option<&str>, files: &[TierFile]) -> Result<AgeBy> {
        age_by_in(self.uri(), &self.arrow_schema()?, self.partition_columns()?, column, files)
    }

    /// What this version's storage costs a month at `prices`, by class and by
    /// partition range, from the log's classes; with `steps`, what tiering by them at
    /// `now` would save (see [`cost`]).
    pub fn storage_cost(
        &self,
        prices: &StoragePrices,
        steps: Option<&TierSteps>,
        column: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CostReport> {
        let files = self.tier_files()?;
        let by = self.age_by(column, &files).ok();
        cost_of(&files, by, prices, steps, now)
    }

    /// Live files whose class in the store (HeadObject, 16 in flight) is not the one
    /// the log records; `None` for a table that is not on S3.
    pub async fn check_storage_classes(&self) -> Result<Option<Vec<ClassMismatch>>> {
        let Some(classes) = ObjectClasses::for_table(self.uri(), self.storage_options()).await? else {
            return Ok(None);
        };
        let heads: Vec<_> = self
            .tier_files()?
            .into_iter()
            .map(|f| {
                let classes = classes.clone();
                async move {
                    let stored = classes.class_of(&f.path).await?;
                    Ok::<_, crate::Error>((f.storage_class != stored).then_some(ClassMismatch {
                        path: f.path,
                        log: f.storage_class,
                        store: stored,
                    }))
                }
            })
            .collect();
        let results: Vec<Result<Option<ClassMismatch>>> =
            futures::StreamExt::collect(futures::StreamExt::buffer_unordered(futures::stream::iter(heads), 16)).await;
        let mut mismatches: Vec<ClassMismatch> =
            results.into_iter().filter_map(|r| r.transpose()).collect::<Result<_>>()?;
        mismatches.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(mismatches))
    }
}

/// A file whose class in the store is not the one the log records (moved by a
/// bucket lifecycle rule, or by a tiering run killed before its commit: the next run
/// records it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClassMismatch {
    pub path: String,
    pub log: StorageClass,
    pub store: StorageClass,
}
