//! Log cleanup: deleting commits and checkpoints older than the table's
//! `delta.logRetentionDuration` (30 days by default) that no version worth keeping
//! needs. Part of every vacuum (`--log-only` runs it alone, `--data-only` skips it);
//! commits on the write path never list or clean the log.
//!
//! The log keeps one unbroken run: from a checkpoint at or before the oldest *anchor*
//! to the newest commit. Anchors are the version that was current at the log horizon
//! (so time travel inside the log retention keeps working), every live tag's version
//! and the version `_last_checkpoint` names. Unbroken, because Delta Spark only time
//! travels to a version from which every later commit is present; delta-rs, the
//! kernel and Sediment would read a version from its checkpoint and the commits up to
//! it alone. When the oldest anchor is a tag at least [`CHECKPOINT_GAP`] commits after
//! the checkpoint before it (or there is none), a checkpoint is written at the tag's
//! version first, so those commits can go. Nothing newer than the horizon is deleted,
//! whatever its version; `_last_checkpoint` and `_sidecars/` are never touched.
//! `delta.enableExpiredLogCleanup = false` turns the half off.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deltalake::Path;
use deltalake::table::config::TablePropertiesExt as _;
use futures::TryStreamExt;
use serde::Serialize;

use super::delete::{FailedDelete, delete_all};
use super::source::Source;
use super::{retention_property, std_duration};
use crate::Tag;
use crate::error::{Error, Result};
use crate::table::Table;

/// A checkpoint is written at a pinned version when it lets at least this many
/// commits go.
pub const CHECKPOINT_GAP: u64 = 10;

/// What the log half of a vacuum did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogCleanupReport {
    /// Why nothing was looked at (the property turned it off).
    pub skipped: Option<String>,
    pub horizon: Option<DateTime<Utc>>,
    /// The checkpoint the kept run of the log starts from (`None`: everything is kept).
    pub kept_from: Option<u64>,
    /// The version a checkpoint was written at (a dry run: would be).
    pub checkpoint_written: Option<u64>,
    pub commits_deleted: usize,
    pub checkpoints_deleted: usize,
    /// Checksum (`.crc`) and compacted-log files deleted.
    pub other_deleted: usize,
    pub bytes_deleted: u64,
    pub files: Vec<String>,
    pub failed: Vec<FailedDelete>,
}

/// What a file of `_delta_log/` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFileKind {
    Commit,
    /// A classic or v2 checkpoint, or part `part` of `parts` of a multi-part one.
    Checkpoint {
        part: u32,
        parts: u32,
    },
    Checksum,
    /// A compacted log of the commits up to `end`.
    Compacted {
        end: u64,
    },
}

/// One file of `_delta_log/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: Path,
    pub version: u64,
    pub kind: LogFileKind,
    pub bytes: u64,
    pub modified_ms: i64,
}

/// Recognise a file name in `_delta_log/`; `None` for anything else (`_last_checkpoint`,
/// temporary files, folders).
pub fn parse_log_name(name: &str) -> Option<(u64, LogFileKind)> {
    let (digits, rest) = name.split_at_checked(20)?;
    let version: u64 = digits.parse().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))?;
    let kind = match rest {
        ".json" => LogFileKind::Commit,
        ".crc" => LogFileKind::Checksum,
        ".checkpoint.parquet" => LogFileKind::Checkpoint { part: 1, parts: 1 },
        _ => {
            let rest = rest.strip_prefix('.')?;
            if let Some(end) = rest.strip_suffix(".compacted.json") {
                let end: u64 = end.parse().ok()?;
                LogFileKind::Compacted { end }
            } else {
                let body = rest.strip_prefix("checkpoint.")?;
                let body = body.strip_suffix(".parquet").or_else(|| body.strip_suffix(".json"))?;
                match body.split_once('.') {
                    Some((part, parts)) => {
                        LogFileKind::Checkpoint { part: part.parse().ok()?, parts: parts.parse().ok()? }
                    }
                    // A v2 checkpoint: `N.checkpoint.<uuid>.parquet|json`.
                    None if !body.is_empty() => LogFileKind::Checkpoint { part: 1, parts: 1 },
                    None => return None,
                }
            }
        }
    };
    Some((version, kind))
}

/// What to delete from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPlan {
    pub kept_from: Option<u64>,
    pub checkpoint_at: Option<u64>,
    pub delete: Vec<LogFile>,
}

/// Plan a log cleanup (pure). `pins` are live tags' versions, `hint` the version of
/// `_last_checkpoint`; `may_checkpoint`: whether the plan may ask for a checkpoint.
pub fn plan_log(files: &[LogFile], pins: &[u64], hint: Option<u64>, horizon_ms: i64, may_checkpoint: bool) -> LogPlan {
    let commits = files.iter().filter(|f| f.kind == LogFileKind::Commit);
    // The version current at the horizon: the newest commit made before it.
    let Some(at_horizon) = commits.filter(|f| f.modified_ms < horizon_ms).map(|f| f.version).max() else {
        return LogPlan::default();
    };
    let oldest = files.iter().map(|f| f.version).min().unwrap_or(0);
    // Pins the log can no longer reconstruct protect nothing.
    let pin = pins.iter().copied().filter(|p| *p >= oldest).min();
    let anchor = [Some(at_horizon), pin, hint].into_iter().flatten().min().unwrap_or(at_horizon);
    let mut parts: HashMap<u64, (u32, std::collections::HashSet<u32>)> = HashMap::new();
    for file in files {
        if let LogFileKind::Checkpoint { part, parts: total } = file.kind {
            let entry = parts.entry(file.version).or_insert((total, Default::default()));
            entry.1.insert(part);
        }
    }
    let complete = |v: &u64| parts.get(v).is_some_and(|(total, seen)| seen.len() as u32 == *total);
    let mut checkpoint = parts.keys().filter(|v| **v <= anchor && complete(v)).copied().max();
    let mut checkpoint_at = None;
    let anchor_is_pin = pin == Some(anchor) && anchor < at_horizon && hint != Some(anchor);
    if may_checkpoint
        && anchor_is_pin
        && checkpoint.is_none_or(|c| anchor - c >= CHECKPOINT_GAP)
        && checkpoint != Some(anchor)
    {
        checkpoint_at = Some(anchor);
        checkpoint = Some(anchor);
    }
    let Some(kept_from) = checkpoint else {
        return LogPlan::default();
    };
    let mut delete: Vec<LogFile> = files
        .iter()
        .filter(|f| f.modified_ms < horizon_ms)
        .filter(|f| match f.kind {
            LogFileKind::Compacted { end } => end < kept_from,
            _ => f.version < kept_from,
        })
        .cloned()
        .collect();
    if delete.is_empty() {
        // A checkpoint that lets nothing go is not worth writing.
        checkpoint_at = None;
    }
    delete.sort_by_key(|f| (f.version, f.path.clone()));
    LogPlan { kept_from: Some(kept_from), checkpoint_at, delete }
}

/// Run the log half of a vacuum at `now`, keeping the versions of `live` tags.
/// `retain`: keep log entries this long (`None`: the table's `delta.logRetentionDuration`).
pub(super) async fn clean<S: Source>(
    table: &mut S,
    now: DateTime<Utc>,
    live: &[Tag],
    dry_run: bool,
    retain: Option<chrono::Duration>,
) -> Result<LogCleanupReport> {
    let mut report = LogCleanupReport::default();
    let properties = table.properties()?;
    if !properties.enable_expired_log_cleanup() {
        report.skipped = Some("the table sets delta.enableExpiredLogCleanup = false".into());
        return Ok(report);
    }
    let retention = match retain {
        Some(retain) => retain,
        None => retention_property(&table.configuration()?, table.uri(), "delta.logRetentionDuration")?
            .unwrap_or_else(|| std_duration(properties.log_retention_duration())),
    };
    let horizon = now - retention;
    report.horizon = Some(horizon);
    let files = list_log(table.store().as_ref(), table.uri()).await?;
    let hint = last_checkpoint_in(table.store().as_ref()).await?;
    let pins: Vec<u64> = live.iter().map(|t| t.version).collect();
    let mut plan = plan_log(&files, &pins, hint, horizon.timestamp_millis(), true);
    if !dry_run {
        let uri = table.uri().to_string();
        let writer = table
            .writer()
            .ok_or_else(|| Error::internal(format!("a log cleanup of {uri} read from its log alone can only plan")))?;
        if let Some(version) = plan.checkpoint_at {
            write_checkpoint_at(writer, version).await?;
        }
        // A tag made since the vacuum read the tags: plan again with it (no new checkpoint).
        let now_pins: Vec<u64> =
            writer.tags().await?.iter().filter(|t| !t.is_expired(now)).map(|t| t.version).collect();
        if now_pins.iter().any(|p| !pins.contains(p)) {
            let files = list_log(writer.object_store().as_ref(), writer.uri()).await?;
            let written = plan.checkpoint_at;
            plan = plan_log(&files, &now_pins, hint, horizon.timestamp_millis(), false);
            plan.checkpoint_at = written;
        }
    }
    report.kept_from = plan.kept_from;
    report.checkpoint_written = plan.checkpoint_at;
    let (deleted, failed) = if dry_run || plan.delete.is_empty() {
        (plan.delete.iter().map(|f| f.path.clone()).collect(), Vec::new())
    } else {
        delete_all(table.store(), plan.delete.iter().map(|f| f.path.clone()).collect()).await
    };
    for file in plan.delete.iter().filter(|f| deleted.contains(&f.path)) {
        match file.kind {
            LogFileKind::Commit => report.commits_deleted += 1,
            LogFileKind::Checkpoint { .. } => report.checkpoints_deleted += 1,
            _ => report.other_deleted += 1,
        }
        report.bytes_deleted += file.bytes;
        report.files.push(file.path.to_string());
    }
    report.failed = failed;
    Ok(report)
}

/// The files of `_delta_log/` (not of its subfolders) Sediment recognises.
async fn list_log(store: &dyn object_store::ObjectStore, uri: &str) -> Result<Vec<LogFile>> {
    let prefix = Path::from("_delta_log");
    let listed: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.map_err(|e| {
        Error::delta(deltalake::DeltaTableError::from(e)).context(format!("listing the log of table {uri}"))
    })?;
    Ok(listed
        .into_iter()
        .filter(|meta| meta.location.prefix_match(&prefix).is_some_and(|mut rest| rest.nth(1).is_none()))
        .filter_map(|meta| {
            let (version, kind) = parse_log_name(meta.location.filename()?)?;
            Some(LogFile {
                version,
                kind,
                bytes: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
                path: meta.location,
            })
        })
        .collect())
}

/// The version `_delta_log/_last_checkpoint` names, if it exists and parses (one GET).
pub async fn last_checkpoint_version(table: &Table) -> Result<Option<u64>> {
    last_checkpoint_in(table.object_store().as_ref()).await
}

/// [`last_checkpoint_version`] of the table rooted at `store`.
async fn last_checkpoint_in(store: &dyn object_store::ObjectStore) -> Result<Option<u64>> {
    use object_store::ObjectStoreExt as _;
    let path = Path::from("_delta_log/_last_checkpoint");
    match store.get(&path).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| Error::delta(deltalake::DeltaTableError::from(e)))?;
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            Ok(value.get("version").and_then(serde_json::Value::as_u64))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::delta(deltalake::DeltaTableError::from(e))),
    }
}

/// Write a checkpoint of `version` (not the newest); `_last_checkpoint` keeps
/// naming the newest checkpoint (the kernel does not move it backwards).
pub(crate) async fn write_checkpoint_at(table: &Table, version: u64) -> Result<()> {
    let log_store = table.delta().log_store();
    let url = log_store.transaction_url(None).map_err(Error::delta)?;
    let engine = log_store.engine(None);
    let uri = table.uri().to_string();
    tokio::task::spawn_blocking(move || -> std::result::Result<(), delta_kernel::Error> {
        let snapshot = delta_kernel::snapshot::Snapshot::builder_for(url).at_version(version).build(engine.as_ref())?;
        snapshot.checkpoint(engine.as_ref(), None)?;
        Ok(())
    })
    .await
    .map_err(|e| Error::internal(format!("the checkpoint task failed: {e}")))?
    .map_err(|e| {
        Error::from(deltalake::DeltaTableError::from(e))
            .context(format!("writing a checkpoint of table {uri} at version {version}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, modified_ms: i64) -> LogFile {
        let (version, kind) = parse_log_name(name).unwrap();
        LogFile { path: Path::from(format!("_delta_log/{name}")), version, kind, bytes: 1, modified_ms }
    }

    fn commit(v: u64, at: i64) -> LogFile {
        file(&format!("{v:020}.json"), at)
    }

    fn checkpoint(v: u64, at: i64) -> LogFile {
        file(&format!("{v:020}.checkpoint.parquet"), at)
    }

    #[test]
    fn log_names_are_recognised() {
        assert_eq!(parse_log_name("00000000000000000010.json"), Some((10, LogFileKind::Commit)));
        assert_eq!(parse_log_name("00000000000000000010.crc"), Some((10, LogFileKind::Checksum)));
        assert_eq!(
            parse_log_name("00000000000000000010.checkpoint.0000000002.0000000003.parquet"),
            Some((10, LogFileKind::Checkpoint { part: 2, parts: 3 }))
        );
        assert_eq!(
            parse_log_name("00000000000000000010.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json"),
            Some((10, LogFileKind::Checkpoint { part: 1, parts: 1 }))
        );
        assert_eq!(
            parse_log_name("00000000000000000004.00000000000000000009.compacted.json"),
            Some((4, LogFileKind::Compacted { end: 9 }))
        );
        for other in
            ["_last_checkpoint", "00000000000000000010.json.tmp", "0000000010.json", ".00000000000000000010.json.crc"]
        {
            assert_eq!(parse_log_name(other), None, "{other}");
        }
    }

    #[test]
    fn the_log_keeps_an_unbroken_run_from_a_checkpoint_before_the_oldest_anchor() {
        // Commits 0..=30 made at time v, checkpoints at 9, 19 and 29; horizon at 25.
        let mut files: Vec<LogFile> = (0..=30).map(|v| commit(v, v as i64)).collect();
        files.extend([checkpoint(9, 9), checkpoint(19, 19), checkpoint(29, 29)]);
        let plan = plan_log(&files, &[], Some(29), 25, true);
        assert_eq!(plan.kept_from, Some(19), "the checkpoint before version 24, current at the horizon");
        assert!(plan.delete.iter().all(|f| f.version < 19));
        assert_eq!(plan.delete.len(), 19 + 1, "commits 0..=18 and checkpoint 9");
        assert_eq!(plan.checkpoint_at, None);

        // A tag at 5 keeps everything from the newest checkpoint at or before it: none,
        // and 5 is fewer than CHECKPOINT_GAP commits in: a checkpoint is written at 5 anyway.
        let plan = plan_log(&files, &[5], Some(29), 25, true);
        assert_eq!((plan.kept_from, plan.checkpoint_at), (Some(5), Some(5)));
        assert_eq!(plan.delete.iter().map(|f| f.version).max(), Some(4));

        // A tag 2 commits after a checkpoint: no new checkpoint, the run starts at 9.
        let plan = plan_log(&files, &[11], Some(29), 25, true);
        assert_eq!((plan.kept_from, plan.checkpoint_at), (Some(9), None));
        // A tag fewer than CHECKPOINT_GAP commits after a checkpoint keeps the run from it.
        let plan = plan_log(&files, &[23], Some(29), 25, true);
        assert_eq!((plan.kept_from, plan.checkpoint_at), (Some(19), None), "23 - 19 < gap");
        let plan = plan_log(&files, &[17], Some(29), 25, true);
        assert_eq!((plan.kept_from, plan.checkpoint_at), (Some(9), None), "17 - 9 < gap");
        // Without the checkpoint at 19, a tag at 21 is 12 commits after the one at 9.
        files.retain(|f| !(f.version == 19 && f.kind != LogFileKind::Commit));
        let plan = plan_log(&files, &[21], Some(29), 25, true);
        assert_eq!((plan.kept_from, plan.checkpoint_at), (Some(21), Some(21)));
        let plan = plan_log(&files, &[21], Some(29), 25, false);
        assert_eq!((plan.kept_from, plan.checkpoint_at), (Some(9), None), "no checkpoint may be written");
    }

    #[test]
    fn nothing_newer_than_the_horizon_goes_and_incomplete_checkpoints_do_not_count() {
        let mut files: Vec<LogFile> = (0..=20).map(|v| commit(v, 100)).collect();
        files.push(checkpoint(10, 100));
        assert_eq!(
            plan_log(&files, &[], None, 50, true),
            LogPlan::default(),
            "every commit is younger than the horizon"
        );
        let mut files: Vec<LogFile> = (0..=20).map(|v| commit(v, v as i64)).collect();
        files.push(file("00000000000000000010.checkpoint.0000000001.0000000002.parquet", 10));
        let plan = plan_log(&files, &[], None, 100, true);
        assert_eq!(plan.kept_from, None, "half a multi-part checkpoint is no checkpoint");
        assert!(plan.delete.is_empty());
    }
}
