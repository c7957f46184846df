//! What a vacuum must keep, read from the table: the files of the newest version,
//! of the retention window's commits and of every tagged version, the tombstones
//! older than the horizon and (full mode) the files in storage.

use std::collections::HashSet;

use deltalake::Path;
use deltalake::kernel::Add;
use futures::TryStreamExt;

use super::plan::{Candidate, References};
use super::source::{Source, store_path};
use crate::Tag;
use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::paths::vector_file;

/// The folders at the top of a table that hold no data and are never vacuumed.
const NEVER_VACUUMED: &[&str] = &["_delta_log", "_sediment"];

/// What the references say and how far the window reached.
pub(super) struct Collected {
    pub references: References,
    /// The oldest version inside the retention window (the one current at the horizon).
    pub window_start: Option<u64>,
    /// Tombstones older than the horizon.
    pub expired_tombstones: Vec<Candidate>,
}

/// Collect what `table` (at its newest version) references relative to `horizon_ms`.
pub(super) async fn collect<S: Source>(table: &S, horizon_ms: i64, live: &[Tag], expired: &[Tag]) -> Result<Collected> {
    let root = table.root().clone();
    let mut references = References { kept: table.live()?, ..References::default() };
    let commits = table.commits_since(horizon_ms).await?;
    let window_start = commits.last().map(|c| c.version);
    // The oldest commit read is the version current at the horizon (or the oldest left):
    // its own actions happened before the window, but what it left live is kept above.
    let in_window = commits.iter().filter(|c| c.timestamp.is_none_or(|t| t >= horizon_ms));
    for commit in in_window {
        references.kept.extend(commit.data.iter().cloned());
        references.kept.extend(commit.vectors.iter().cloned());
        references.kept.extend(commit.change_data.iter().cloned());
    }
    let mut expired_tombstones = Vec::new();
    for tombstone in table.tombstones().await? {
        let path = store_path(&tombstone.decoded);
        if tombstone.deletion_timestamp.unwrap_or(0) >= horizon_ms {
            // Removed inside the window: an older version of the window needs it.
            references.kept.insert(path);
        } else if !tombstone.decoded.contains("://") {
            let bytes = tombstone.size.unwrap_or(0).max(0) as u64;
            expired_tombstones.push(Candidate { path, bytes, tombstoned: true });
        }
    }
    for tag in live {
        if let Some(files) = tagged_files(table, tag).await? {
            add_files(&mut references.pinned, &files, &root);
        }
    }
    for tag in expired {
        // An expired tag only explains why a file goes; one that no longer opens explains nothing.
        if let Ok(Some(files)) = tagged_files(table, tag).await {
            add_files(&mut references.expired_pins, &files, &root);
        }
    }
    Ok(Collected { references, window_start, expired_tombstones })
}

/// The live files of `tag`'s version; `None` when the log no longer has the version
/// (nothing can read it, so it needs no files). Any other failure stops the vacuum:
/// a file the version needs might be deleted otherwise.
async fn tagged_files<S: Source>(table: &S, tag: &Tag) -> Result<Option<Vec<Add>>> {
    let options = table.open_options().version(tag.version);
    match Table::open_with(table.uri(), options).await {
        Ok(version) => Ok(Some(version.plan_scan(None)?.files)),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!(tag = %tag.name, version = tag.version, error = %e, "a tagged version is no longer readable");
            Ok(None)
        }
        Err(e) => Err(e.context(format!("reading version {} of tag {:?}", tag.version, tag.name))),
    }
}

fn add_files(set: &mut HashSet<Path>, files: &[Add], root: &url::Url) {
    // Paths from delta-rs's snapshot are URL-decoded already (see `Source::live`).
    for add in files {
        if !add.path.contains("://") {
            set.insert(super::source::store_path(&add.path));
        }
        if let Some(dv) = &add.deletion_vector {
            set.extend(vector_file(root, dv));
        }
    }
}

/// Every file in the table's folder older than the horizon that vacuum may look at:
/// not under `_delta_log/` or `_sediment/`, nor under another `_`- or `.`-prefixed
/// folder other than `_change_data`, `_delta_index` and partition folders.
pub(super) async fn listed_candidates<S: Source>(table: &S, horizon_ms: i64) -> Result<Vec<Candidate>> {
    let partition_columns = table.partition_columns()?;
    let store = table.store();
    store
        .list(None)
        .map_err(|e| {
            Error::delta(deltalake::DeltaTableError::from(e)).context(format!("listing table {}", table.uri()))
        })
        .try_filter_map(|meta| {
            let keep = vacuumable(meta.location.as_ref(), &partition_columns)
                && meta.last_modified.timestamp_millis() < horizon_ms;
            futures::future::ready(Ok(keep.then_some(Candidate {
                path: meta.location,
                bytes: meta.size,
                tombstoned: false,
            })))
        })
        .try_collect()
        .await
}

/// Whether a listed path is one vacuum may delete.
fn vacuumable(path: &str, partition_columns: &[String]) -> bool {
    let top = path.split('/').next().unwrap_or(path);
    if NEVER_VACUUMED.contains(&top) {
        return false;
    }
    let hidden = top.starts_with('_') || top.starts_with('.');
    let partition_folder =
        partition_columns.iter().any(|c| top.strip_prefix(c.as_str()).is_some_and(|r| r.starts_with('=')));
    !hidden || top == "_change_data" || top == "_delta_index" || (partition_folder && path.contains('/'))
}

/// Refuse when a tag made after planning pins a version the plan did not read.
pub(super) fn check_tags_unchanged(before: &[Tag], now: &[Tag], uri: &str) -> Result<()> {
    let known: HashSet<(&str, u64)> = before.iter().map(|t| (t.name.as_str(), t.version)).collect();
    if let Some(new) = now.iter().find(|t| !known.contains(&(t.name.as_str(), t.version))) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "tag {:?} (version {}) was created on table {uri} while vacuum planned; nothing was deleted: run vacuum again",
                new.name, new.version
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::vacuumable;

    #[test]
    fn the_log_tags_and_hidden_folders_are_never_vacuumed() {
        let partitions = vec!["date".to_string(), "_p".to_string()];
        for path in ["_delta_log/00000000000000000000.json", "_sediment/tags/v1.json", ".hidden/x", "_tmp/x"] {
            assert!(!vacuumable(path, &partitions), "{path}");
        }
        for path in [
            "part-0.parquet",
            "date=2024-01-01/part-0.parquet",
            "_change_data/cdc.parquet",
            "_p=1/x.parquet",
            "ab/deletion_vector_x.bin",
        ] {
            assert!(vacuumable(path, &partitions), "{path}");
        }
    }
}
