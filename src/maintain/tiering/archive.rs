//! Archived files: the ones a plain GET cannot read (GLACIER, DEEP_ARCHIVE) until a
//! restore completes. Every path that reads data files (scans, merges, deletes and
//! updates, compaction) asks [`unreadable`] about the files it is about to open and
//! fails fast with [`archived_error`] (naming the partitions and the command that
//! restores them) instead of hanging on, timing out on, or silently skipping them;
//! scans can skip them explicitly (`--skip-archived`).
//!
//! The log says which files are archived (the class tag tiering records), so a table
//! without archived files costs nothing here; for the archived ones among the files to
//! read, one HeadObject each tells whether a restore has made them readable.
//! [`Table::restore_archived`] asks for those restores (`sediment tier restore`).

use std::collections::BTreeMap;

use deltalake::kernel::Add;
use futures::StreamExt;
use serde::Serialize;

use super::{CLASS_TAG, ObjectClasses, RestoreState, StorageClass};
use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;

/// Requests in flight when looking at or restoring archived files.
const IN_FLIGHT: usize = 16;

/// An archived file and where its restore stands.
#[derive(Debug, Clone, Serialize)]
pub struct ArchivedFile {
    pub path: String,
    pub partition: BTreeMap<String, Option<String>>,
    pub storage_class: StorageClass,
    pub state: RestoreState,
}

/// The class `add`'s tag records (STANDARD when none).
pub fn class_of(add: &Add) -> StorageClass {
    class_in_tags(add.tags.as_ref())
}

/// The class a file action's tags record (STANDARD when none): an `add`'s or a
/// `remove`'s.
pub(crate) fn class_in_tags(tags: Option<&std::collections::HashMap<String, Option<String>>>) -> StorageClass {
    class_from_tag(tags.and_then(|t| t.get(CLASS_TAG)).and_then(Option::as_deref))
}

/// The class a value of the class tag names (STANDARD when there is none or it names
/// no class Sediment knows).
pub(crate) fn class_from_tag(tag: Option<&str>) -> StorageClass {
    tag.and_then(|c| c.parse().ok()).unwrap_or(StorageClass::Standard)
}

/// The files among `files` the log says are archived, as the store reports them now.
async fn archived<'a>(table: &Table, files: impl IntoIterator<Item = &'a Add>) -> Result<Vec<ArchivedFile>> {
    let archived: Vec<&Add> = files.into_iter().filter(|a| class_of(a).needs_restore()).collect();
    if archived.is_empty() {
        return Ok(Vec::new());
    }
    let Some(classes) = ObjectClasses::for_table(table.uri(), table.storage_options()).await? else {
        return Ok(Vec::new());
    };
    let heads: Vec<_> = archived
        .into_iter()
        .map(|add| {
            let (classes, add) = (classes.clone(), add.clone());
            async move {
                let (storage_class, state) = classes.head(&add.path).await?;
                let partition = add.partition_values.clone().into_iter().collect();
                Ok::<_, Error>(ArchivedFile { path: add.path, partition, storage_class, state })
            }
        })
        .collect();
    futures::stream::iter(heads).buffer_unordered(IN_FLIGHT).collect::<Vec<_>>().await.into_iter().collect()
}

/// The files among `files` that cannot be read now: archived and not restored (or
/// still restoring).
pub async fn unreadable<'a>(table: &Table, files: impl IntoIterator<Item = &'a Add>) -> Result<Vec<ArchivedFile>> {
    Ok(archived(table, files)
        .await?
        .into_iter()
        .filter(|f| matches!(f.state, RestoreState::Archived | RestoreState::InProgress))
        .collect())
}

/// Fail when any of `files` cannot be read now, for `operation` ("scan", "merge
/// into", ...).
pub async fn ensure_readable<'a>(
    table: &Table,
    operation: &str,
    files: impl IntoIterator<Item = &'a Add>,
) -> Result<()> {
    let unreadable = unreadable(table, files).await?;
    if unreadable.is_empty() { Ok(()) } else { Err(archived_error(table, operation, &unreadable)) }
}

/// `a=1/b=2`, or `(unpartitioned)`.
fn partition_name(partition: &BTreeMap<String, Option<String>>) -> String {
    if partition.is_empty() {
        return "(unpartitioned)".into();
    }
    partition.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null"))).collect::<Vec<_>>().join("/")
}

/// A SQL predicate selecting `partition`.
fn partition_predicate(partition: &BTreeMap<String, Option<String>>) -> String {
    partition
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k} = '{}'", v.replace('\'', "''")),
            None => format!("{k} IS NULL"),
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The error of `operation` that would read `files` (archived, not readable): the
/// partitions, their class and state, and the command that restores them.
pub fn archived_error(table: &Table, operation: &str, files: &[ArchivedFile]) -> Error {
    let mut partitions: BTreeMap<String, (StorageClass, usize, usize, String)> = BTreeMap::new();
    for f in files {
        let entry = partitions
            .entry(partition_name(&f.partition))
            .or_insert_with(|| (f.storage_class, 0, 0, partition_predicate(&f.partition)));
        entry.1 += 1;
        if f.state == RestoreState::InProgress {
            entry.2 += 1;
        }
    }
    const SHOWN: usize = 5;
    let mut named: Vec<String> = partitions
        .iter()
        .take(SHOWN)
        .map(|(name, (class, n, restoring, _))| {
            let restoring = if *restoring > 0 { format!(", {restoring} restoring") } else { String::new() };
            format!("{name} ({n} {class} files{restoring})")
        })
        .collect();
    if partitions.len() > SHOWN {
        named.push(format!("and {} more partitions", partitions.len() - SHOWN));
    }
    let example = partitions.values().next().map(|p| p.3.clone()).unwrap_or_default();
    let hint = if example.is_empty() {
        format!("sediment tier restore {} --where 'true'", table.uri())
    } else {
        format!("sediment tier restore {} --where \"{example}\"", table.uri())
    };
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "cannot {operation} table {}: {} files are archived and not restored: {}; restore them with `{hint}` \
             and run again once the restore completes (hours for GLACIER and DEEP_ARCHIVE){}",
            table.uri(),
            files.len(),
            named.join(", "),
            if operation == "scan" { ", or skip them with --skip-archived" } else { "" }
        ),
    )
}

/// What a restore request did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreArchivedReport {
    /// Live files the predicate selects.
    pub files_selected: usize,
    /// Of those, archived (by the log).
    pub files_archived: usize,
    /// Restores asked for now (or extended, for files restored already).
    pub requested: usize,
    /// Restores still running.
    pub in_progress: usize,
    /// Files readable now (restored).
    pub restored: usize,
    /// Partitions of the archived files.
    pub partitions: Vec<String>,
}

impl Table {
    /// Ask S3 for readable copies of the archived live files in the partitions
    /// `predicate` (SQL over partition columns, or any filter) selects, for `days`
    /// days: RestoreObject for each one that is neither restoring nor (unless
    /// `extend`) restored already. Then a scan of those partitions reads once the
    /// restores complete; run again to see how far they are.
    pub async fn restore_archived(&self, predicate: &str, days: i32, extend: bool) -> Result<RestoreArchivedReport> {
        if days < 1 {
            return Err(Error::invalid(format!("a restore lasts at least one day, got {days}")));
        }
        if !super::has_storage_classes(self.uri())? {
            return Err(Error::invalid(format!(
                "table {} is not on S3: local and memory stores have no archived files",
                self.uri()
            )));
        }
        let plan = self.plan_scan(Some(predicate))?;
        let files = archived(self, &plan.files).await?;
        let mut report = RestoreArchivedReport {
            files_selected: plan.files.len(),
            files_archived: files.len(),
            ..Default::default()
        };
        let mut partitions: Vec<String> = files.iter().map(|f| partition_name(&f.partition)).collect();
        partitions.sort();
        partitions.dedup();
        report.partitions = partitions;
        let Some(classes) = ObjectClasses::for_table(self.uri(), self.storage_options()).await? else {
            return Ok(report);
        };
        let mut to_request = Vec::new();
        for f in files {
            match f.state {
                RestoreState::InProgress => report.in_progress += 1,
                RestoreState::Restored { .. } if !extend => report.restored += 1,
                RestoreState::NotArchived => report.restored += 1,
                _ => to_request.push(f.path),
            }
        }
        let requests: Vec<_> = to_request
            .into_iter()
            .map(|path| {
                let classes = classes.clone();
                async move { classes.restore(&path, days).await }
            })
            .collect();
        let results: Vec<Result<()>> = futures::stream::iter(requests).buffer_unordered(IN_FLIGHT).collect().await;
        for result in results {
            match result {
                Ok(()) => report.requested += 1,
                // S3: RestoreAlreadyInProgress (a restore asked for between the HEAD and now).
                Err(e) if e.message().contains("RestoreAlreadyInProgress") => report.in_progress += 1,
                Err(e) => return Err(e.context(format!("restoring archived files of table {}", self.uri()))),
            }
        }
        Ok(report)
    }
}
