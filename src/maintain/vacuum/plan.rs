//! The vacuum planner: a pure function from what the table references to the files
//! to delete, each with its reason. No I/O, no clock.
//!
//! Inputs, all store paths relative to the table root:
//! - *kept*: files the newest version or a version inside the retention window needs
//!   (data, deletion-vector and change-data files);
//! - *pinned*: files a version named by a live tag needs;
//! - *expired pins*: files only a version named by an expired tag needed;
//! - *candidates*: files that may go: tombstones older than the horizon, and (full
//!   mode) listed files older than the horizon.
//!
//! A candidate that is kept is not deleted; one that is pinned is counted as kept
//! for a tag; the others are deleted as `expired_tag`, `tombstoned` or `orphan`.

use std::collections::{BTreeMap, HashSet};

use deltalake::Path;
use serde::Serialize;

/// Why a file is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// The log removed it before the retention horizon.
    Tombstoned,
    /// No version references it (an uncommitted write, an old deletion-vector or
    /// change-data file) and it is older than the horizon.
    Orphan,
    /// Only the version of an expired tag still needed it.
    ExpiredTag,
}

/// A file vacuum may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: Path,
    pub bytes: u64,
    /// The log tombstoned it (else it was found by listing).
    pub tombstoned: bool,
}

/// A file vacuum deletes (or, in a dry run, would delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VacuumFile {
    pub path: String,
    pub bytes: u64,
    pub reason: DeleteReason,
}

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FileCount {
    pub files: usize,
    pub bytes: u64,
}

impl FileCount {
    pub(crate) fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// What to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumPlan {
    /// By path.
    pub delete: Vec<VacuumFile>,
    /// Candidates kept because a live tag's version needs them.
    pub kept_for_tags: FileCount,
}

/// What the table references, as the planner sees it.
#[derive(Debug, Default)]
pub struct References {
    pub kept: HashSet<Path>,
    pub pinned: HashSet<Path>,
    pub expired_pins: HashSet<Path>,
}

/// Plan the deletes: independent of the candidates' order; a path listed twice is one
/// file (tombstoned if either says so).
pub fn plan(references: &References, candidates: impl IntoIterator<Item = Candidate>) -> VacuumPlan {
    let mut by_path: BTreeMap<Path, Candidate> = BTreeMap::new();
    for candidate in candidates {
        by_path
            .entry(candidate.path.clone())
            .and_modify(|c| {
                c.tombstoned |= candidate.tombstoned;
                c.bytes = c.bytes.max(candidate.bytes);
            })
            .or_insert(candidate);
    }
    let mut plan = VacuumPlan::default();
    for (path, candidate) in by_path {
        if references.kept.contains(&path) {
            continue;
        }
        if references.pinned.contains(&path) {
            plan.kept_for_tags.add(candidate.bytes);
            continue;
        }
        let reason = if references.expired_pins.contains(&path) {
            DeleteReason::ExpiredTag
        } else if candidate.tombstoned {
            DeleteReason::Tombstoned
        } else {
            DeleteReason::Orphan
        };
        plan.delete.push(VacuumFile { path: path.to_string(), bytes: candidate.bytes, reason });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(path: &str, tombstoned: bool) -> Candidate {
        Candidate { path: Path::from(path), bytes: 10, tombstoned }
    }

    fn set(paths: &[&str]) -> HashSet<Path> {
        paths.iter().map(|p| Path::from(*p)).collect()
    }

    #[test]
    fn kept_and_pinned_files_are_never_deleted_and_reasons_are_given() {
        let references = References {
            kept: set(&["live.parquet", "window.parquet"]),
            pinned: set(&["tagged.parquet"]),
            expired_pins: set(&["old-tag.parquet"]),
        };
        let candidates = vec![
            candidate("live.parquet", true),
            candidate("window.parquet", false),
            candidate("tagged.parquet", true),
            candidate("old-tag.parquet", true),
            candidate("gone.parquet", true),
            candidate("stray.parquet", false),
            candidate("stray.parquet", true),
        ];
        let plan = plan(&references, candidates.clone());
        let got: Vec<(&str, DeleteReason)> = plan.delete.iter().map(|f| (f.path.as_str(), f.reason)).collect();
        assert_eq!(
            got,
            vec![
                ("gone.parquet", DeleteReason::Tombstoned),
                ("old-tag.parquet", DeleteReason::ExpiredTag),
                ("stray.parquet", DeleteReason::Tombstoned),
            ]
        );
        assert_eq!(plan.kept_for_tags, FileCount { files: 1, bytes: 10 });
        let mut reversed = candidates;
        reversed.reverse();
        assert_eq!(super::plan(&references, reversed), plan, "independent of the input order");
    }

    #[test]
    fn a_plan_over_random_inputs_keeps_every_referenced_file() {
        // A small deterministic generator: many shapes of overlap between the sets.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut references = References::default();
            let mut candidates = Vec::new();
            for i in 0..40 {
                let path = Path::from(format!("f{i}.parquet"));
                match next() % 4 {
                    0 => references.kept.insert(path.clone()),
                    1 => references.pinned.insert(path.clone()),
                    2 => references.expired_pins.insert(path.clone()),
                    _ => false,
                };
                if next() % 3 != 0 {
                    candidates.push(Candidate { path, bytes: next() % 100, tombstoned: next() % 2 == 0 });
                }
            }
            let plan = plan(&references, candidates.clone());
            for file in &plan.delete {
                let path = Path::from(file.path.as_str());
                assert!(!references.kept.contains(&path) && !references.pinned.contains(&path));
                assert!(candidates.iter().any(|c| c.path == path), "only candidates are deleted");
            }
            let second = super::plan(
                &references,
                candidates.into_iter().filter(|c| !plan.delete.iter().any(|f| f.path == c.path.as_ref())),
            );
            assert!(second.delete.is_empty(), "a second plan on the result deletes nothing");
        }
    }
}
