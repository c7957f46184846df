//! What both kinds of attempt share: the checks on the current version, the report's
//! start, the counting of their rows and the cleanup after a failure.
//!
//! An *attempt* plans, executes and commits a merge once on the table's current
//! version; [`Merge::execute`] makes another on the newest version when one loses a
//! race. The source decides which kind runs: in memory ([`super::in_memory`]) or, past
//! its memory limit, in key ranges ([`super::in_ranges`]).

use std::time::Instant;

use deltalake::kernel::Add;

use super::exec::{FileResult, MergeJob};
use super::source::MergeSource;
use super::{Merge, MergeReport};
use crate::error::{Error, Result};
use crate::table::features;
use crate::write::sink::FileSink;

impl Merge<'_> {
    /// The table can be written and, when the merge changes matched rows (`rewrite`),
    /// is not append-only.
    pub(super) fn check_writable(&self, rewrite: bool) -> Result<()> {
        let state = self.table.state()?;
        features::check_writable(self.table.uri(), state)?;
        if rewrite && features::is_append_only(state) {
            return Err(Error::invalid(format!(
                "table {} is append-only (delta.appendOnly = true); a merge may only insert",
                self.table.uri()
            )));
        }
        Ok(())
    }

    /// Delete what a failed attempt wrote (the data files in `written` and the merge's
    /// sinks of new rows) and give back `error`.
    pub(super) async fn abandon(&self, job: &MergeJob, written: &[Add], error: Error) -> Error {
        FileSink::abort(self.table, written).await;
        job.abandon_new_rows().await;
        if let Some(feed) = &job.feed {
            feed.abort().await;
        }
        error
    }
}

impl MergeReport {
    /// A report of a merge of `source` in `key_ranges` ranges, nothing done yet.
    pub(super) fn for_source(source: &MergeSource, key_ranges: usize) -> Self {
        Self {
            source_rows: source.index.len() as u64,
            source_duplicates_dropped: source.duplicates_dropped,
            key_ranges,
            ..Default::default()
        }
    }

    /// Count the rows one file task updated, left unchanged and deleted.
    pub(super) fn count_rows(&mut self, file: &FileResult) {
        self.rows_updated += file.rows_updated;
        self.rows_unchanged += file.rows_unchanged;
        self.rows_deleted += file.rows_deleted;
    }
}

/// Milliseconds since the previous call (or since it was made), for phase timings.
pub(super) fn stopwatch() -> impl FnMut() -> u64 {
    let mut clock = Instant::now();
    move || {
        let ms = clock.elapsed().as_millis() as u64;
        clock = Instant::now();
        ms
    }
}
