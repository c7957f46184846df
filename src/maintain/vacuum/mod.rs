//! Vacuum: deleting the files no version worth keeping needs, and the log entries no
//! such version needs (`sediment vacuum`).
//!
//! Words: the *horizon* is now less the retention (`--retain`, else the table's
//! `delta.deletedFileRetentionDuration`, 7 days by default); the *window* is every
//! version from the one that was current at the horizon to the newest. A *pinned*
//! version is one a live tag names.
//!
//! ```text
//! newest version ─┐
//! window commits ─┼─▶ kept ────┐
//! live tags ──────┴─▶ pinned ──┼─▶ planner (pure) ─▶ VACUUM START ─▶ deletes in batches ─▶ VACUUM END
//! tombstones < horizon ────────┤                                   ─▶ expired tag records deleted
//! (full) listing < horizon ────┘                                   ─▶ log cleanup (log_cleanup)
//! ```
//!
//! - *Lite* (the default) reads only the log: it deletes data files the log removed
//!   before the horizon. It cannot see old deletion-vector files (a `remove` in a
//!   checkpoint does not say which were replaced) nor files never committed: *full*
//!   mode lists the table's folder and also deletes every file older than the horizon
//!   that nothing kept references, never under `_delta_log/` or `_sediment/`.
//! - Kept: every file (data, deletion vector, change data) of the newest version,
//!   added or removed by a commit inside the window, or removed at or after the
//!   horizon; pinned: every file of a live tag's version. Versions older than the
//!   window lose files; opening one then fails with an error naming a missing file.
//! - A lite vacuum counts tombstones it deleted before as deleted again (the log
//!   keeps them until a checkpoint drops them; deleting a missing file is a no-op).
//! - Files go in batches through the store's bulk delete; a failed delete is retried
//!   and then reported, and a rerun finishes the job. A data vacuum that deletes
//!   anything is recorded in the history as `VACUUM START` / `VACUUM END` commits.

mod delete;
pub mod log_cleanup;
pub mod plan;
mod references;
mod source;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use deltalake::Path;
use deltalake::protocol::DeltaOperation;
use deltalake::table::config::TablePropertiesExt as _;
use serde::Serialize;
use tracing::instrument;

pub use delete::FailedDelete;
pub use log_cleanup::LogCleanupReport;
pub use plan::{DeleteReason, FileCount, VacuumFile};

use crate::LogView;
use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::clock::{self, Clock};
use crate::table::commit::{CommitRequest, commit};
use crate::table::features;
use source::Source;

/// Which halves of a vacuum run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VacuumParts {
    /// Data files, then the log.
    #[default]
    All,
    DataOnly,
    LogOnly,
}

/// How to vacuum. Built with methods; the clock is injected with [`VacuumOptions::with_clock`].
#[derive(Debug, Clone)]
pub struct VacuumOptions {
    /// Keep what versions of this long ago need; `None`: the table's
    /// `delta.deletedFileRetentionDuration`.
    pub retain: Option<Duration>,
    /// List storage and delete unreferenced files too.
    pub full: bool,
    pub dry_run: bool,
    /// Refuse a `retain` shorter than the table's property.
    pub retention_check: bool,
    pub parts: VacuumParts,
    /// Keep log entries this long; `None`: the table's `delta.logRetentionDuration`.
    pub log_retain: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl Default for VacuumOptions {
    fn default() -> Self {
        Self {
            retain: None,
            full: false,
            dry_run: false,
            retention_check: true,
            parts: VacuumParts::All,
            log_retain: None,
            clock: clock::system(),
        }
    }
}

impl VacuumOptions {
    pub fn retain(mut self, retain: Duration) -> Self {
        self.retain = Some(retain);
        self
    }
    pub fn full(mut self, full: bool) -> Self {
        self.full = full;
        self
    }
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
    pub fn retention_check(mut self, check: bool) -> Self {
        self.retention_check = check;
        self
    }
    /// Keep log entries `retain` long, whatever the table's `delta.logRetentionDuration`.
    pub fn log_retain(mut self, retain: Duration) -> Self {
        self.log_retain = Some(retain);
        self
    }
    pub fn parts(mut self, parts: VacuumParts) -> Self {
        self.parts = parts;
        self
    }
    /// Read "now" from `clock` (tests move a manual clock instead of sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Files and bytes deleted, by reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeletedFiles {
    pub tombstoned: FileCount,
    pub orphan: FileCount,
    pub expired_tag: FileCount,
}

impl DeletedFiles {
    pub fn total(&self) -> FileCount {
        FileCount {
            files: self.tombstoned.files + self.orphan.files + self.expired_tag.files,
            bytes: self.tombstoned.bytes + self.orphan.bytes + self.expired_tag.bytes,
        }
    }
}

/// What a vacuum did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    pub dry_run: bool,
    /// `lite` or `full`.
    pub mode: &'static str,
    pub parts: VacuumParts,
    /// Versions older than the one current at this time may lose files.
    pub horizon: DateTime<Utc>,
    pub retention_hours: f64,
    /// The oldest version inside the window.
    pub window_start: Option<u64>,
    /// Data files deleted (a dry run: would delete), by reason.
    pub deleted: DeletedFiles,
    /// Files that would have gone but a live tag's version needs.
    pub kept_for_tags: FileCount,
    /// Deletes that failed after retries (a rerun finishes them).
    pub failed: Vec<FailedDelete>,
    /// Every file deleted (or to delete), by path.
    pub files: Vec<VacuumFile>,
    /// Expired tags whose records were deleted (a dry run: would be).
    pub tags_expired: Vec<String>,
    /// The versions of the `VACUUM START` and `VACUUM END` commits.
    pub commits: Vec<u64>,
    /// The log half, when it ran.
    pub log: Option<LogCleanupReport>,
    pub duration_ms: u64,
}

impl Table {
    /// Vacuum the table: see the [module docs](crate::maintain::vacuum).
    #[instrument(skip_all, fields(table = %self.uri(), full = options.full, dry_run = options.dry_run))]
    pub async fn vacuum(&mut self, options: VacuumOptions) -> Result<VacuumReport> {
        self.refresh().await?;
        vacuum_in(self, options).await
    }

    /// Commit a `VACUUM START`/`END` entry (no actions), retried over concurrent commits.
    async fn record(&mut self, operation: DeltaOperation, metrics: Vec<(&'static str, u64)>) -> Result<u64> {
        let request = CommitRequest {
            operation,
            metrics,
            blind_append: false,
            max_retries: 15,
            app_transactions: Vec::new(),
            extra: Default::default(),
        };
        commit(self, Vec::new(), request).await
    }
}

impl LogView {
    /// What a vacuum of this version would delete (a dry run, whatever `options`
    /// says), planned from the log alone: the same report as [`Table::vacuum`]'s dry
    /// run, without delta-rs's snapshot of the files.
    #[instrument(skip_all, fields(table = %self.uri(), full = options.full))]
    pub async fn vacuum_plan(&mut self, options: VacuumOptions) -> Result<VacuumReport> {
        vacuum_in(self, options.dry_run(true)).await
    }
}

/// A vacuum of `table`'s newest version: planned from what [`Source`] reads, carried
/// out through its [`Source::writer`] unless a dry run.
async fn vacuum_in<S: Source>(table: &mut S, options: VacuumOptions) -> Result<VacuumReport> {
    let started = Instant::now();
    features::check_protocol_vacuumable(table.uri(), table.protocol()?)?;
    let now = options.clock.now();
    let default = std_duration(table.properties()?.deleted_file_retention_duration());
    let property = retention_property(&table.configuration()?, table.uri(), "delta.deletedFileRetentionDuration")?
        .unwrap_or(default);
    let retain = options.retain.unwrap_or(property);
    if retain < Duration::zero() {
        return Err(Error::invalid(format!("vacuum retention must not be negative, got {retain}")));
    }
    if options.retention_check && retain < property {
        return Err(Error::invalid(format!(
            "vacuum retention {} is shorter than table {}'s delta.deletedFileRetentionDuration ({}): readers and \
             writers of versions inside that window could lose files; pass --no-retention-check \
             (VacuumOptions::retention_check(false)) to vacuum anyway",
            human(retain),
            table.uri(),
            human(property)
        )));
    }
    let horizon = now - retain;
    let mut report = VacuumReport {
        dry_run: options.dry_run,
        mode: if options.full { "full" } else { "lite" },
        parts: options.parts,
        horizon,
        retention_hours: retain.num_seconds() as f64 / 3600.0,
        window_start: None,
        deleted: DeletedFiles::default(),
        kept_for_tags: FileCount::default(),
        failed: Vec::new(),
        files: Vec::new(),
        tags_expired: Vec::new(),
        commits: Vec::new(),
        log: None,
        duration_ms: 0,
    };
    let tags = table.tags().await?;
    let (expired, live): (Vec<_>, Vec<_>) = tags.iter().cloned().partition(|t| t.is_expired(now));
    if options.parts != VacuumParts::LogOnly {
        vacuum_data(table, &options, horizon, property, &live, &expired, &mut report).await?;
        report.tags_expired = expired.iter().map(|t| t.name.clone()).collect();
        if !options.dry_run {
            let writer = writer_of(table)?;
            for tag in &expired {
                writer.delete_tag(&tag.name).await?;
            }
        }
    }
    if options.parts != VacuumParts::DataOnly {
        report.log = Some(log_cleanup::clean(table, now, &live, options.dry_run, options.log_retain).await?);
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The table a vacuum that is not a dry run writes through.
fn writer_of<S: Source>(table: &mut S) -> Result<&mut Table> {
    let uri = table.uri().to_string();
    table.writer().ok_or_else(|| Error::internal(format!("a vacuum of {uri} read from its log alone can only plan")))
}

#[allow(clippy::too_many_arguments)]
async fn vacuum_data<S: Source>(
    table: &mut S,
    options: &VacuumOptions,
    horizon: DateTime<Utc>,
    property: Duration,
    live: &[crate::Tag],
    expired: &[crate::Tag],
    report: &mut VacuumReport,
) -> Result<()> {
    let horizon_ms = horizon.timestamp_millis();
    let collected = references::collect(table, horizon_ms, live, expired).await?;
    report.window_start = collected.window_start;
    let mut candidates = collected.expired_tombstones;
    if options.full {
        let listed = references::listed_candidates(table, horizon_ms).await?;
        // Tombstones whose files are gone already are not deleted again.
        let present: std::collections::HashSet<&Path> = listed.iter().map(|c| &c.path).collect();
        candidates.retain(|c| present.contains(&c.path));
        candidates.extend(listed);
    }
    let plan = plan::plan(&collected.references, candidates);
    report.kept_for_tags = plan.kept_for_tags;
    if options.dry_run || plan.delete.is_empty() {
        tally(report, plan.delete);
        return Ok(());
    }
    // A tag made while this planned pins files the plan did not protect.
    let known: Vec<crate::Tag> = live.iter().chain(expired).cloned().collect();
    references::check_tags_unchanged(&known, &table.tags().await?, table.uri())?;
    let writer = writer_of(table)?;
    let to_delete: u64 = plan.delete.iter().map(|f| f.bytes).sum();
    let start = DeltaOperation::VacuumStart {
        retention_check_enabled: options.retention_check,
        specified_retention_millis: options.retain.map(|r| r.num_milliseconds()),
        default_retention_millis: property.num_milliseconds(),
    };
    report.commits.push(
        writer
            .record(start, vec![("numFilesToDelete", plan.delete.len() as u64), ("sizeOfDataToDelete", to_delete)])
            .await?,
    );
    let paths: Vec<Path> = plan.delete.iter().map(|f| Path::from(f.path.as_str())).collect();
    let (deleted, failed) = delete::delete_all(writer.object_store(), paths).await;
    let done: Vec<VacuumFile> =
        plan.delete.into_iter().filter(|f| deleted.contains(&Path::from(f.path.as_str()))).collect();
    let status = if failed.is_empty() { "COMPLETED" } else { "FAILED" };
    let end = DeltaOperation::VacuumEnd { status: status.to_string() };
    let deleted_files = done.len() as u64;
    tally(report, done);
    report.failed = failed;
    report
        .commits
        .push(writer.record(end, vec![("numDeletedFiles", deleted_files), ("numVacuumedDirectories", 0)]).await?);
    Ok(())
}

fn tally(report: &mut VacuumReport, files: Vec<VacuumFile>) {
    for file in &files {
        match file.reason {
            DeleteReason::Tombstoned => report.deleted.tombstoned.add(file.bytes),
            DeleteReason::Orphan => report.deleted.orphan.add(file.bytes),
            DeleteReason::ExpiredTag => report.deleted.expired_tag.add(file.bytes),
        }
    }
    report.files = files;
}

/// A retention property of the table, when set: an error naming it when its value is
/// not Delta's `interval N unit` form.
pub(crate) fn retention_property(
    configuration: &std::collections::HashMap<String, String>,
    uri: &str,
    key: &str,
) -> Result<Option<Duration>> {
    let Some(value) = configuration.get(key) else {
        return Ok(None);
    };
    parse_interval(value).map(Some).ok_or_else(|| {
        Error::new(
            ErrorKind::Data,
            format!("table {uri} property {key} = {value:?} is not an interval such as \"interval 7 days\""),
        )
    })
}

/// Delta's `interval N unit` (units from nanoseconds to weeks, singular or plural).
pub(crate) fn parse_interval(value: &str) -> Option<Duration> {
    let mut words = value.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("interval") {
        return None;
    }
    let n: i64 = words.next()?.parse().ok()?;
    let unit = words.next()?.to_ascii_lowercase();
    if words.next().is_some() || n < 0 {
        return None;
    }
    let unit = unit.strip_suffix('s').unwrap_or(&unit);
    match unit {
        "nanosecond" => Some(Duration::nanoseconds(n)),
        "microsecond" => Some(Duration::microseconds(n)),
        "millisecond" => Some(Duration::milliseconds(n)),
        "second" => Duration::try_seconds(n),
        "minute" => Duration::try_minutes(n),
        "hour" => Duration::try_hours(n),
        "day" => Duration::try_days(n),
        "week" => Duration::try_weeks(n),
        _ => None,
    }
}

pub(crate) fn std_duration(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// `7d`, `36h`, `90m`, `45s`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s != 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s != 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_intervals_parse_and_bad_ones_do_not() {
        assert_eq!(parse_interval("interval 7 days"), Some(Duration::days(7)));
        assert_eq!(parse_interval("INTERVAL 1 week"), Some(Duration::weeks(1)));
        assert_eq!(parse_interval("interval 36 hours"), Some(Duration::hours(36)));
        assert_eq!(parse_interval("interval 0 seconds"), Some(Duration::zero()));
        for bad in ["7 days", "interval -1 days", "interval 7 fortnights", "interval seven days", "interval 7 days x"] {
            assert_eq!(parse_interval(bad), None, "{bad}");
        }
        assert_eq!(human(Duration::days(7)), "7d");
        assert_eq!(human(Duration::minutes(90)), "90m");
        assert_eq!(human(Duration::zero()), "0s");
    }
}
