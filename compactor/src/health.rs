//! Table and partition health: how far a file layout is from the target file size.
//!
//! For a target size `T` (the table's `delta.targetFileSize`, else 128 MiB):
//! - a **fragment** is a file below `T / 8`;
//! - an **undersized** file is below `3/4 × T`; only undersized files are compaction
//!   candidates, files at or above `3/4 × T` are left alone;
//! - the **ideal file count** of a partition is `max(1, ceil(bytes / T))`;
//! - the **health score** of a partition is `floor(100 × ideal / files)` (100 when it
//!   has no files): 100 means as few files as its bytes allow, 50 twice as many, and
//!   a partition of 200 fragments that fit in one file scores 0. The table's score
//!   is the same ratio over all partitions: `100 × Σ ideal / Σ files`.
//!
//! A partition is **unhealthy**, and so a candidate for compaction, when the planner
//! can form at least one bin of `min_input_files` undersized files in it (see
//! [`crate::planner`]); the score orders unhealthy partitions, worst first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A partition's values, in partition-column order (`None` is a null value). The
/// unpartitioned table has one partition with an empty key.
pub type PartitionKey = Vec<(String, Option<String>)>;

/// What the planner knows of one data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// Path relative to the table root, as in the log.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Row count from statistics, when recorded.
    pub rows: Option<u64>,
    /// Partition values.
    pub partition: PartitionKey,
    /// Rows its deletion vector deletes (0 without one).
    #[serde(default)]
    pub deleted_rows: u64,
}

impl FileView {
    /// Whether a deletion vector deletes some of its rows.
    pub fn has_deletion_vector(&self) -> bool {
        self.deleted_rows > 0
    }

    /// The bytes its live rows take, estimated in proportion to its rows (its size
    /// when it has no deletion vector or no row count).
    pub fn live_size(&self) -> u64 {
        match self.rows {
            Some(rows) if rows > 0 && self.deleted_rows > 0 => {
                (self.size as u128 * rows.saturating_sub(self.deleted_rows) as u128 / rows as u128) as u64
            }
            _ => self.size,
        }
    }

    /// The share of its rows a deletion vector deletes (0 when unknown).
    pub fn deleted_ratio(&self) -> f64 {
        match self.rows {
            Some(rows) if rows > 0 => self.deleted_rows as f64 / rows as f64,
            _ => 0.0,
        }
    }
}

/// Files below `target / FRAGMENT_DIVISOR` are fragments.
pub const FRAGMENT_DIVISOR: u64 = 8;

/// Whether `size` is below 3/4 of `target` (a compaction candidate).
pub fn is_undersized(size: u64, target: u64) -> bool {
    size.saturating_mul(4) < target.saturating_mul(3)
}

/// One bucket of a file-size histogram: files with `min_bytes <= size < max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeBucket {
    /// Lower bound, inclusive.
    pub min_bytes: u64,
    /// Upper bound, exclusive (`u64::MAX` for the last bucket).
    pub max_bytes: u64,
    /// Files in the bucket.
    pub files: usize,
    /// Bytes in the bucket.
    pub bytes: u64,
}

const MIB: u64 = 1024 * 1024;
/// Bucket edges of [`size_histogram`].
pub const BUCKET_EDGES: &[u64] = &[0, MIB, 8 * MIB, 32 * MIB, 64 * MIB, 128 * MIB, 256 * MIB, u64::MAX];

/// A file-size histogram with fixed buckets (<1 MiB, 1-8, 8-32, 32-64, 64-128, 128-256, >=256 MiB).
pub fn size_histogram(sizes: impl IntoIterator<Item = u64>) -> Vec<SizeBucket> {
    let mut buckets: Vec<SizeBucket> =
        BUCKET_EDGES.windows(2).map(|w| SizeBucket { min_bytes: w[0], max_bytes: w[1], files: 0, bytes: 0 }).collect();
    for size in sizes {
        if let Some(b) = buckets.iter_mut().find(|b| size >= b.min_bytes && size < b.max_bytes) {
            b.files += 1;
            b.bytes += size;
        }
    }
    buckets
}

/// The health of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHealth {
    /// The partition.
    pub partition: PartitionKey,
    /// Data files.
    pub files: usize,
    /// Bytes in them.
    pub bytes: u64,
    /// Rows, when every file has a count.
    pub rows: Option<u64>,
    /// Files below `target / 8`.
    pub fragments: usize,
    /// Files below `3/4 × target`.
    pub undersized: usize,
    /// Files with a deletion vector.
    pub with_deletion_vectors: usize,
    /// Rows their deletion vectors delete (still stored, skipped by readers).
    pub deleted_rows: u64,
    /// Mean file size.
    pub average_file_size: u64,
    /// `max(1, ceil(bytes / target))`.
    pub ideal_files: usize,
    /// `floor(100 × ideal / files)`.
    pub score: u8,
}

/// The health of a table: totals, a score and every partition's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableHealth {
    /// The target file size used.
    pub target_file_size: u64,
    /// Data files.
    pub files: usize,
    /// Bytes in them.
    pub bytes: u64,
    /// Rows, when every file has a count.
    pub rows: Option<u64>,
    /// Files below `target / 8`.
    pub fragments: usize,
    /// Files below `3/4 × target`.
    pub undersized: usize,
    /// Mean file size.
    pub average_file_size: u64,
    /// `100 × Σ ideal / Σ files`.
    pub score: u8,
    /// File-size histogram.
    pub histogram: Vec<SizeBucket>,
    /// Every partition, worst score first.
    pub partitions: Vec<PartitionHealth>,
}

fn score(ideal: usize, files: usize) -> u8 {
    (100 * ideal.min(files)).checked_div(files).map_or(100, |s| s as u8)
}

fn ideal_files(bytes: u64, target: u64) -> usize {
    bytes.div_ceil(target.max(1)).max(1) as usize
}

/// The health of one partition's files.
pub fn partition_health(partition: &PartitionKey, files: &[&FileView], target: u64) -> PartitionHealth {
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let ideal = ideal_files(bytes, target);
    PartitionHealth {
        partition: partition.clone(),
        files: files.len(),
        bytes,
        rows: files.iter().map(|f| f.rows).sum(),
        fragments: files.iter().filter(|f| f.size < target / FRAGMENT_DIVISOR).count(),
        undersized: files.iter().filter(|f| is_undersized(f.size, target)).count(),
        with_deletion_vectors: files.iter().filter(|f| f.has_deletion_vector()).count(),
        deleted_rows: files.iter().map(|f| f.deleted_rows).sum(),
        average_file_size: bytes.checked_div(files.len() as u64).unwrap_or(0),
        ideal_files: if files.is_empty() { 0 } else { ideal },
        score: score(ideal, files.len()),
    }
}

/// Group files by partition (in key order).
pub fn by_partition(files: &[FileView]) -> BTreeMap<PartitionKey, Vec<&FileView>> {
    let mut groups: BTreeMap<PartitionKey, Vec<&FileView>> = BTreeMap::new();
    for f in files {
        groups.entry(f.partition.clone()).or_default().push(f);
    }
    groups
}

/// The health of a table's files.
pub fn table_health(files: &[FileView], target: u64) -> TableHealth {
    let mut partitions: Vec<PartitionHealth> =
        by_partition(files).iter().map(|(key, files)| partition_health(key, files, target)).collect();
    partitions.sort_by(|a, b| a.score.cmp(&b.score).then_with(|| a.partition.cmp(&b.partition)));
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let ideal: usize = partitions.iter().map(|p| p.ideal_files).sum();
    TableHealth {
        target_file_size: target,
        files: files.len(),
        bytes,
        rows: files.iter().map(|f| f.rows).sum(),
        fragments: partitions.iter().map(|p| p.fragments).sum(),
        undersized: partitions.iter().map(|p| p.undersized).sum(),
        average_file_size: bytes.checked_div(files.len() as u64).unwrap_or(0),
        score: score(ideal, files.len()),
        histogram: size_histogram(files.iter().map(|f| f.size)),
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, day: &str) -> FileView {
        FileView {
            path: path.into(),
            size,
            rows: Some(size / 10),
            partition: vec![("day".into(), Some(day.into()))],
            deleted_rows: 0,
        }
    }

    #[test]
    fn scores_follow_the_documented_formula() {
        let target = 100;
        let files =
            vec![file("a", 10, "1"), file("b", 10, "1"), file("c", 10, "1"), file("d", 10, "1"), file("e", 100, "2")];
        let health = table_health(&files, target);
        // Partition 1: 40 bytes, ideal 1 file, 4 files -> 25. Partition 2: 1 of 1 -> 100.
        assert_eq!(health.partitions[0].score, 25);
        assert_eq!(health.partitions[0].fragments, 4);
        assert_eq!(health.partitions[0].undersized, 4);
        assert_eq!(health.partitions[1].score, 100);
        // Table: 2 ideal of 5 files -> 40.
        assert_eq!(health.score, 40);
        assert_eq!(health.rows, Some(14));
        assert_eq!(table_health(&[], target).score, 100);
    }

    #[test]
    fn live_size_is_in_proportion_to_live_rows() {
        let mut f = file("a", 1000, "1");
        assert_eq!((f.live_size(), f.deleted_ratio()), (1000, 0.0));
        f.deleted_rows = 25;
        assert_eq!((f.live_size(), f.deleted_ratio()), (750, 0.25));
        f.rows = None;
        assert_eq!((f.live_size(), f.deleted_ratio()), (1000, 0.0));
    }

    #[test]
    fn undersized_is_below_three_quarters_of_the_target() {
        assert!(is_undersized(74, 100));
        assert!(!is_undersized(75, 100));
    }
}
