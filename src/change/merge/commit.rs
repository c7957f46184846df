//! The merge's commit: its new rows closed, its deletion vectors written, one commit
//! of removes and adds whose operation declares what the merge read; on any failure
//! everything the attempt wrote is deleted.

use deltalake::kernel::{Action as DeltaAction, Add, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, MergePredicate};

use super::clauses::{MatchedAction, NotMatchedBySourceAction, SOURCE, TARGET};
use super::exec::MergeJob;
use super::prune::read_predicate;
use super::source::MergeSource;
use super::{Merge, MergeReport};
use crate::change::feed::{ChangeFeed, FeedFiles};
use crate::error::Result;
use crate::table::commit::{CommitExtra, CommitRequest, commit};
use crate::write::sink::FileSink;

impl Merge<'_> {
    /// Close the merge's new rows after the inserts (`inserted`: their rows, or how
    /// they failed), add their files to `written` and return the rows inserted; on a
    /// failure delete everything written so far and pass the error on.
    pub(super) async fn take_new_rows(
        &self,
        job: &MergeJob,
        inserted: Result<u64>,
        written: &mut Vec<Add>,
    ) -> Result<u64> {
        let (outcome, rows) = match inserted {
            Ok(rows) => (Ok(()), rows),
            Err(e) => (Err(e), 0),
        };
        match job.close_new_rows(outcome).await {
            Ok(adds) => {
                written.extend(adds);
                Ok(rows)
            }
            Err(e) => {
                FileSink::abort(self.table, written).await;
                if let Some(feed) = &job.feed {
                    feed.abort().await;
                }
                Err(e)
            }
        }
    }

    /// Write the deletion vectors, commit removes and adds, and fill in the report;
    /// on failure delete what the merge wrote.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit_merge(
        &mut self,
        source: &MergeSource,
        feed: Option<&ChangeFeed>,
        read_all: bool,
        mut report: MergeReport,
        removes: Vec<Remove>,
        mut written: Vec<Add>,
        marked: Vec<(Add, Vec<u64>)>,
        mut lap: impl FnMut() -> u64,
    ) -> Result<MergeReport> {
        // New versions of cold files go into their class (nothing to do without cold files).
        let marked_adds: Vec<&Add> = marked.iter().map(|(a, _)| a).collect();
        let classes = crate::maintain::tiering::placement::classes_by_partition(&removes, &marked_adds, &written);
        if let Err(e) = crate::maintain::tiering::placement::place(self.table, &mut written, &classes).await {
            FileSink::abort(self.table, &written).await;
            return Err(e);
        }
        report.files_added = written.len();
        report.bytes_written = written.iter().map(|a| a.size.max(0) as u64).sum();
        let give_up = async |e: crate::Error| {
            FileSink::abort(self.table, &written).await;
            if let Some(feed) = feed {
                feed.abort().await;
            }
            e
        };
        if removes.is_empty() && written.is_empty() && marked.is_empty() {
            if let Some(feed) = feed {
                feed.abort().await;
            }
            return Ok(report);
        }
        // Marked files are removed and added again with their deletion vector.
        let marked = match crate::change::deletion_vectors::write(self.table, marked).await {
            Ok(marked) => marked,
            Err(e) => return Err(give_up(e).await),
        };
        // Change data, unless the merge only inserted (its adds say as much).
        let changes = match feed {
            Some(feed) => match feed.finish().await {
                Ok(changes) => changes,
                Err(e) => {
                    marked.discard(self.table).await;
                    return Err(give_up(e).await);
                }
            },
            None => FeedFiles::default(),
        };
        report.change_data_files = changes.actions.len();
        report.bytes_written += marked.bytes() + changes.bytes();
        let mut actions: Vec<DeltaAction> = removes.into_iter().map(DeltaAction::Remove).collect();
        actions.extend(marked.actions.iter().cloned());
        actions.extend(written.iter().cloned().map(DeltaAction::Add));
        actions.extend(changes.actions.iter().cloned().map(DeltaAction::Cdc));
        let request = CommitRequest {
            operation: self.operation(source, read_all),
            metrics: vec![
                ("numTargetFilesRemoved", (report.files_removed + report.files_rewritten) as u64),
                ("numTargetFilesAdded", written.len() as u64),
                ("numTargetRowsInserted", report.rows_inserted),
                ("numTargetRowsUpdated", report.rows_updated),
                ("numTargetRowsDeleted", report.rows_deleted),
                ("numTargetRowsCopied", report.rows_copied),
                ("numSourceRows", report.source_rows),
            ],
            blind_append: false,
            // delta-rs's conflict checker rebases over commits that touch other keys.
            max_retries: 15,
            app_transactions: self.app_transactions.iter().map(|(app, v)| Transaction::new(app.clone(), *v)).collect(),
            extra: CommitExtra { info: self.commit_info.clone(), ..Default::default() },
        };
        if let Some(hook) = &self.before_commit {
            hook();
        }
        let committed = commit(self.table, actions, request).await;
        report.phases.commit_ms = lap();
        match committed {
            Ok(version) => {
                report.version = Some(version);
                Ok(report)
            }
            Err(e) => {
                FileSink::abort(self.table, &written).await;
                marked.discard(self.table).await;
                changes.discard(self.table).await;
                Err(e)
            }
        }
    }

    /// The commit's operation, with what the merge read for conflict checks: each
    /// key's source range (or the whole table).
    fn operation(&self, source: &MergeSource, read_all: bool) -> DeltaOperation {
        let read_predicate = if read_all { None } else { read_predicate(source) };
        let mut join: Vec<String> = self.keys.iter().map(|k| format!("{TARGET}.{k} = {SOURCE}.{k}")).collect();
        join.extend(self.join_condition.clone());
        let describe = |action: &str, condition: &Option<String>| MergePredicate {
            action_type: action.to_string(),
            predicate: condition.clone(),
        };
        DeltaOperation::Merge {
            predicate: read_predicate,
            merge_predicate: Some(join.join(" AND ")),
            matched_predicates: self
                .matched
                .iter()
                .filter_map(|c| match c.action {
                    MatchedAction::UpdateAll | MatchedAction::Update(_) => Some(describe("update", &c.condition)),
                    MatchedAction::Delete => Some(describe("delete", &c.condition)),
                    MatchedAction::Ignore => None,
                })
                .collect(),
            not_matched_predicates: self.not_matched.iter().map(|c| describe("insert", &c.condition)).collect(),
            not_matched_by_source_predicates: self
                .by_source
                .iter()
                .map(|c| match c.action {
                    NotMatchedBySourceAction::Update(_) => describe("update", &c.condition),
                    NotMatchedBySourceAction::Delete => describe("delete", &c.condition),
                })
                .collect(),
        }
    }
}
