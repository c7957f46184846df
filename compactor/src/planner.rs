//! The compaction planner: a pure function from file views to a plan.
//!
//! Sizes below are *live* sizes: a file's size in proportion to the rows its deletion
//! vector (if any) leaves, as the executor drops deleted rows while rewriting.
//!
//! Per partition (never across partitions):
//! 1. the *candidates* are the undersized files (below 3/4 of the target) and the
//!    files whose deletion vector deletes more than `max_deleted_rows_ratio` of their
//!    rows (*purged* files, whatever their size, as Delta's `OPTIMIZE` does); other
//!    files are left alone;
//! 2. candidates are bin-packed first-fit-decreasing into bins whose total size is at
//!    most the target (a purged file larger than that gets a bin of its own), so
//!    each bin is rewritten into one file;
//! 3. bins with fewer than `min_input_files` inputs and no purged file are dropped. A
//!    partition with no bin left is healthy and plans nothing.
//!
//! Partitions are taken worst health score first, and bins are added while they fit
//! in the `max_bytes` budget (the first bin is always taken, so every run progresses). The plan is independent of the order of its input.
//!
//! **Convergence**: first fit leaves every pair of bins with a combined size above
//! the target (the first file of the later bin did not fit in the earlier one, and
//! bins only grow). Executed, each bin becomes one file of its bins' size, so no two
//! undersized files of the result fit in one bin: planning again plans nothing.

use serde::{Deserialize, Serialize};

use crate::error::{CompactionError, Result};
use crate::health::{FileView, PartitionKey, by_partition, is_undersized, partition_health};

/// Default target file size: 128 MiB.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// How rows are ordered within each rewritten file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Clustering {
    /// Sort by these columns, in order.
    SortBy {
        /// Sort keys.
        columns: Vec<String>,
    },
    /// Interleave the ranks of these columns (Z-order), so that rows close in every
    /// column end up close in the file.
    ZOrder {
        /// Z-order columns (two or more).
        columns: Vec<String>,
    },
}

/// The planner's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerSettings {
    /// Target file size in bytes.
    pub target_file_size: u64,
    /// Fewest files a bin may have (at least 2).
    pub min_input_files: usize,
    /// Most bytes of input to rewrite in one run (`None`: no limit). The first bin
    /// is always taken, so a run rewrites at most `max(max_bytes, first bin)` bytes
    /// (a bin is at most the target, or one file purged of its deleted rows).
    pub max_bytes: Option<u64>,
    /// Row order within each rewritten file.
    pub clustering: Option<Clustering>,
    /// A file whose deletion vector deletes more than this share of its rows is
    /// rewritten without them, whatever its size (Delta's `OPTIMIZE` default, 0.05).
    pub max_deleted_rows_ratio: f64,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        Self {
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            min_input_files: 2,
            max_bytes: None,
            clustering: None,
            max_deleted_rows_ratio: DEFAULT_MAX_DELETED_ROWS_RATIO,
        }
    }
}

/// Default of [`PlannerSettings::max_deleted_rows_ratio`].
pub const DEFAULT_MAX_DELETED_ROWS_RATIO: f64 = 0.05;

impl PlannerSettings {
    /// Check the knobs.
    pub fn validate(&self) -> Result<()> {
        if self.target_file_size == 0 {
            return Err(CompactionError::Invalid("target file size must be positive".into()));
        }
        if !(0.0..=1.0).contains(&self.max_deleted_rows_ratio) {
            return Err(CompactionError::Invalid(format!(
                "max_deleted_rows_ratio must be between 0 and 1, got {}",
                self.max_deleted_rows_ratio
            )));
        }
        if self.min_input_files < 2 {
            return Err(CompactionError::Invalid(format!(
                "min_input_files must be at least 2, got {}",
                self.min_input_files
            )));
        }
        match &self.clustering {
            Some(Clustering::SortBy { columns }) if columns.is_empty() => {
                Err(CompactionError::Invalid("sort_by needs at least one column".into()))
            }
            Some(Clustering::ZOrder { columns }) if columns.len() < 2 => {
                Err(CompactionError::Invalid("zorder_by needs at least two columns".into()))
            }
            _ => Ok(()),
        }
    }
}

/// One input file of a bin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    /// Path relative to the table root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Rows, when known.
    pub rows: Option<u64>,
    /// Rows its deletion vector deletes, dropped by the rewrite.
    #[serde(default)]
    pub deleted_rows: u64,
}

/// Files of one partition rewritten into one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bin {
    /// The partition all inputs belong to.
    pub partition: PartitionKey,
    /// The inputs, by path.
    pub inputs: Vec<PlannedFile>,
    /// Total size of the inputs.
    pub input_bytes: u64,
    /// Total live size of the inputs: the expected size of the output.
    #[serde(default)]
    pub live_bytes: u64,
    /// The storage class its outputs go into (S3's name); `None`: the store's
    /// default. The planner leaves it unset; a caller that knows the inputs' classes
    /// sets it, and the executor's [`OutputClassFn`](crate::executor::OutputClassFn)
    /// moves the outputs there before they are committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// The bins of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    /// The partition.
    pub partition: PartitionKey,
    /// Its health score before compaction.
    pub score: u8,
    /// Its file count before compaction.
    pub files: usize,
    /// The bins to rewrite.
    pub bins: Vec<Bin>,
}

/// What to rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionPlan {
    /// The target file size planned for.
    pub target_file_size: u64,
    /// Row order within rewritten files.
    pub clustering: Option<Clustering>,
    /// Partitions with work, worst health first.
    pub partitions: Vec<PartitionPlan>,
    /// Planned inputs with a deletion vector, whose deleted rows the rewrite drops.
    pub files_with_deletes: usize,
    /// Bins that qualified but did not fit in the `max_bytes` budget.
    pub deferred_bins: usize,
}

impl CompactionPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Every bin, partition by partition.
    pub fn bins(&self) -> impl Iterator<Item = &Bin> {
        self.partitions.iter().flat_map(|p| p.bins.iter())
    }

    /// Files the plan rewrites.
    pub fn input_files(&self) -> usize {
        self.bins().map(|b| b.inputs.len()).sum()
    }

    /// Bytes the plan rewrites.
    pub fn input_bytes(&self) -> u64 {
        self.bins().map(|b| b.input_bytes).sum()
    }
}

/// Plan the compaction of `files` (the live files of one snapshot, possibly filtered
/// to some partitions by the caller).
pub fn plan(files: &[FileView], settings: &PlannerSettings) -> Result<CompactionPlan> {
    settings.validate()?;
    let target = settings.target_file_size;
    let mut partitions = Vec::new();
    let purged = |f: &FileView| f.has_deletion_vector() && f.deleted_ratio() > settings.max_deleted_rows_ratio;
    for (key, files) in by_partition(files) {
        let health = partition_health(&key, &files, target);
        let candidates: Vec<&FileView> =
            files.iter().copied().filter(|f| is_undersized(f.live_size(), target) || purged(f)).collect();
        let bins: Vec<Bin> = first_fit_decreasing(candidates, target)
            .into_iter()
            .filter(|bin| bin.len() >= settings.min_input_files || bin.iter().any(|f| purged(f)))
            .map(|mut inputs| {
                inputs.sort_by(|a, b| a.path.cmp(&b.path));
                Bin {
                    storage_class: None,
                    partition: key.clone(),
                    input_bytes: inputs.iter().map(|f| f.size).sum(),
                    live_bytes: inputs.iter().map(|f| f.live_size()).sum(),
                    inputs: inputs
                        .into_iter()
                        .map(|f| PlannedFile {
                            path: f.path.clone(),
                            size: f.size,
                            rows: f.rows,
                            deleted_rows: f.deleted_rows,
                        })
                        .collect(),
                }
            })
            .collect();
        if !bins.is_empty() {
            partitions.push(PartitionPlan { partition: key, score: health.score, files: health.files, bins });
        }
    }
    partitions.sort_by(|a, b| a.score.cmp(&b.score).then_with(|| a.partition.cmp(&b.partition)));

    let mut deferred_bins = 0;
    if let Some(budget) = settings.max_bytes {
        let mut used = 0u64;
        for partition in &mut partitions {
            partition.bins.retain(|bin| {
                // The first bin is always taken, so a small budget still makes progress.
                let fits = used == 0 || used + bin.input_bytes <= budget;
                if fits {
                    used += bin.input_bytes;
                } else {
                    deferred_bins += 1;
                }
                fits
            });
        }
        partitions.retain(|p| !p.bins.is_empty());
    }
    let files_with_deletes =
        partitions.iter().flat_map(|p| &p.bins).flat_map(|b| &b.inputs).filter(|f| f.deleted_rows > 0).count();
    Ok(CompactionPlan {
        target_file_size: target,
        clustering: settings.clustering.clone(),
        partitions,
        files_with_deletes,
        deferred_bins,
    })
}

/// First-fit decreasing into bins of capacity `target`. Ties in size are broken by
/// path, so the result does not depend on the input order.
fn first_fit_decreasing(mut files: Vec<&FileView>, target: u64) -> Vec<Vec<&FileView>> {
    files.sort_by(|a, b| b.live_size().cmp(&a.live_size()).then_with(|| a.path.cmp(&b.path)));
    let mut bins: Vec<(u64, Vec<&FileView>)> = Vec::new();
    for file in files {
        let size = file.live_size();
        match bins.iter_mut().find(|(total, _)| total + size <= target) {
            Some((total, members)) => {
                *total += size;
                members.push(file);
            }
            None => bins.push((size, vec![file])),
        }
    }
    bins.into_iter().map(|(_, members)| members).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const TARGET: u64 = 1_000;

    fn settings() -> PlannerSettings {
        PlannerSettings { target_file_size: TARGET, ..PlannerSettings::default() }
    }

    /// Execute a plan in the planner's model: each bin becomes one file of its size.
    fn apply(files: &[FileView], plan: &CompactionPlan, round: usize) -> Vec<FileView> {
        let rewritten: BTreeSet<&str> = plan.bins().flat_map(|b| b.inputs.iter().map(|f| f.path.as_str())).collect();
        let mut out: Vec<FileView> = files.iter().filter(|f| !rewritten.contains(f.path.as_str())).cloned().collect();
        for (i, bin) in plan.bins().enumerate() {
            out.push(FileView {
                path: format!("compacted-{round}-{i}"),
                size: bin.live_bytes,
                rows: bin.inputs.iter().map(|f| f.rows.map(|r| r - f.deleted_rows)).sum(),
                partition: bin.partition.clone(),
                deleted_rows: 0,
            });
        }
        out
    }

    fn layout() -> impl Strategy<Value = Vec<FileView>> {
        prop::collection::vec(
            (0u8..4, 1u64..(2 * TARGET), any::<bool>(), prop::option::of(1u64..10_000), 0u64..100),
            0..120,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (part, size, dv, rows, deleted_percent))| FileView {
                    path: format!("f{i:04}"),
                    size,
                    rows,
                    partition: vec![("p".to_string(), (part > 0).then(|| part.to_string()))],
                    // Some files have a deletion vector (of up to 99 % of their rows).
                    deleted_rows: if dv && i % 5 == 0 { rows.map_or(1, |r| r * deleted_percent / 100) } else { 0 },
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn no_file_is_lost_duplicated_or_moved_across_partitions(files in layout()) {
            let plan = plan(&files, &settings()).unwrap();
            let by_path: BTreeMap<&str, &FileView> = files.iter().map(|f| (f.path.as_str(), f)).collect();
            let mut seen = BTreeSet::new();
            let purged = |f: &FileView| f.has_deletion_vector() && f.deleted_ratio() > DEFAULT_MAX_DELETED_ROWS_RATIO;
            for bin in plan.bins() {
                let lone_purge = bin.inputs.len() == 1 && purged(by_path[bin.inputs[0].path.as_str()]);
                prop_assert!(bin.inputs.len() >= 2 || lone_purge);
                prop_assert!(bin.live_bytes <= TARGET || lone_purge);
                prop_assert_eq!(bin.input_bytes, bin.inputs.iter().map(|f| f.size).sum::<u64>());
                for input in &bin.inputs {
                    let file = by_path.get(input.path.as_str()).expect("inputs come from the snapshot");
                    prop_assert!(seen.insert(input.path.clone()), "{} planned twice", input.path);
                    prop_assert_eq!(&file.partition, &bin.partition, "partitions never mixed");
                    prop_assert!(is_undersized(file.live_size(), TARGET) || purged(file));
                    prop_assert_eq!(input.deleted_rows, file.deleted_rows);
                }
            }
            // Files with many deleted rows are all planned.
            for file in files.iter().filter(|f| purged(f)) {
                prop_assert!(seen.contains(&file.path), "{} has {} of {:?} rows deleted", file.path, file.deleted_rows, file.rows);
            }
            // Executed, the table keeps every live row.
            let after = apply(&files, &plan, 0);
            let rows = |fs: &[FileView]| fs.iter().map(|f| f.rows.map(|r| r - f.deleted_rows)).sum::<Option<u64>>();
            prop_assert_eq!(rows(&files), rows(&after));
            prop_assert_eq!(files.iter().map(|f| f.live_size()).sum::<u64>(), after.iter().map(|f| f.live_size()).sum::<u64>());
        }

        #[test]
        fn the_plan_does_not_depend_on_input_order(files in layout(), seed in any::<u64>()) {
            let mut shuffled = files.clone();
            // A deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(plan(&files, &settings()).unwrap(), plan(&shuffled, &settings()).unwrap());
        }

        #[test]
        fn planning_the_result_plans_nothing(files in layout()) {
            let first = plan(&files, &settings()).unwrap();
            let after = apply(&files, &first, 0);
            let second = plan(&after, &settings()).unwrap();
            prop_assert!(second.is_empty(), "second plan: {:?}", second);
        }

        #[test]
        fn a_budget_is_respected_and_repeated_runs_converge(files in layout(), budget in 1u64..5_000) {
            let settings = PlannerSettings { max_bytes: Some(budget), ..settings() };
            let mut current = files;
            for round in 0..1_000 {
                let plan = plan(&current, &settings).unwrap();
                prop_assert!(plan.input_bytes() <= budget || plan.bins().count() == 1, "over budget: {:?}", plan);
                if plan.is_empty() {
                    return Ok(());
                }
                current = apply(&current, &plan, round);
            }
            prop_assert!(false, "did not converge");
        }
    }

    #[test]
    fn a_healthy_table_plans_nothing() {
        let files: Vec<FileView> = (0..10)
            .map(|i| FileView {
                path: format!("f{i}"),
                size: TARGET * 3 / 4 + i,
                rows: None,
                partition: vec![],
                deleted_rows: 0,
            })
            .collect();
        assert!(plan(&files, &settings()).unwrap().is_empty());
    }

    #[test]
    fn worst_partitions_come_first_and_bad_knobs_are_refused() {
        let mut files = Vec::new();
        for i in 0..10 {
            files.push(FileView {
                path: format!("a{i}"),
                size: 10,
                rows: None,
                partition: vec![("p".into(), Some("a".into()))],
                deleted_rows: 0,
            });
        }
        for i in 0..3 {
            files.push(FileView {
                path: format!("b{i}"),
                size: 10,
                rows: None,
                partition: vec![("p".into(), Some("b".into()))],
                deleted_rows: 0,
            });
        }
        let plan = plan(&files, &settings()).unwrap();
        assert_eq!(plan.partitions[0].partition, vec![("p".to_string(), Some("a".to_string()))]);
        assert!(plan.partitions[0].score < plan.partitions[1].score);
        let bad = PlannerSettings { min_input_files: 1, ..settings() };
        assert!(super::plan(&files, &bad).is_err());
    }
}
