//! An attempt with the source in memory: prune, insert the surely unmatched rows
//! meanwhile, run a task per candidate file, gather what they did, insert the rest,
//! commit.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::kernel::{Add, Remove};
use futures::StreamExt;

use super::attempt::stopwatch;
use super::exec::{self, FileResult, MergeJob, Outcome};
use super::prune::{self, candidates_with_bounds};
use super::{MatchedAction, Merge, MergeReport};
use crate::change::tasks::file_tasks;
use crate::error::{Error, ErrorKind, Result};
use crate::table::commit::remove_action;

/// What pruning left: candidate files with their partition keys, and the source
/// rows no candidate can match.
struct Pruned {
    candidates: Vec<(String, Add)>,
    early: Vec<u32>,
}

/// What the file tasks of an attempt did, gathered.
struct Gathered {
    /// Data files written (rewrites; later the new rows' files).
    written: Vec<Add>,
    removes: Vec<Remove>,
    /// Files kept with these row positions deleted.
    marked: Vec<(Add, Vec<u64>)>,
    /// By source row id: whether a target row matched it.
    matched: Vec<bool>,
    /// Source rows to insert because a matched clause said so (SCD type 2).
    reinsert: Vec<u32>,
    /// The first task's error, if any failed.
    failure: Option<Error>,
}

impl Gathered {
    /// Gather `results` of a merge whose source has `source_rows` rows, counting
    /// rows and files in `report`.
    fn new(results: Vec<Result<FileResult>>, source_rows: usize, report: &mut MergeReport) -> Self {
        let mut gathered = Self {
            written: Vec::new(),
            removes: Vec::new(),
            marked: Vec::new(),
            matched: vec![false; source_rows],
            reinsert: Vec::new(),
            failure: None,
        };
        for result in results {
            match result {
                Err(e) => gathered.failure = gathered.failure.take().or(Some(e)),
                Ok(file) => gathered.absorb(file, report),
            }
        }
        gathered.reinsert.sort_unstable();
        gathered.reinsert.dedup();
        gathered
    }

    fn absorb(&mut self, file: FileResult, report: &mut MergeReport) {
        for i in &file.matched_sources {
            self.matched[*i as usize] = true;
        }
        self.reinsert.extend(&file.reinsert);
        report.count_rows(&file);
        report.rows_copied += file.rows_copied;
        match file.outcome {
            Outcome::Untouched => {}
            Outcome::Removed => {
                report.files_removed += 1;
                self.removes.push(remove_action(&file.add));
            }
            Outcome::Rewritten(adds) => {
                report.files_rewritten += 1;
                self.removes.push(remove_action(&file.add));
                self.written.extend(adds);
            }
            Outcome::Marked { positions } => {
                report.files_marked += 1;
                self.marked.push((file.add, positions));
            }
        }
    }

    /// Count the rows inserted early as matched; one that a file did match means that
    /// file holds a key outside the range its statistics give.
    fn claim_early(&mut self, early: &[u32]) -> Result<()> {
        for id in early {
            if self.matched[*id as usize] {
                return Err(Error::new(
                    ErrorKind::Data,
                    "a data file holds a key outside the range its statistics give; nothing was committed",
                ));
            }
            self.matched[*id as usize] = true;
        }
        Ok(())
    }
}

impl Merge<'_> {
    /// Plan, execute and commit once on the table's current version.
    pub(super) async fn attempt(&mut self, job: Arc<MergeJob>) -> Result<MergeReport> {
        let read_all = !self.by_source.is_empty();
        // Matched rows can change only through a matched or a by-source clause; an
        // insert-only merge still probes the candidates to learn which keys exist.
        let rewrite = self.matched.iter().any(|c| c.action != MatchedAction::Ignore) || read_all;
        self.check_writable(rewrite)?;
        let mut report = MergeReport::for_source(&job.source, 1);
        let mut lap = stopwatch();
        let Pruned { candidates, early } = self.prune(&job, &mut report)?;
        crate::maintain::tiering::archive::ensure_readable(self.table, "merge into", candidates.iter().map(|(_, a)| a))
            .await?;
        report.phases.prune_ms = lap();
        let early_insert = (!early.is_empty()).then(|| {
            let (job, early) = (job.clone(), early.clone());
            tokio::spawn(async move { job.insert(&early, &[]).await })
        });
        let results = self.merge_files(&job, candidates, read_all, rewrite).await;
        report.phases.rewrite_ms = lap();
        let mut gathered = Gathered::new(results, job.source.rows.num_rows(), &mut report);
        let mut early_inserted = 0;
        if let Some(task) = early_insert {
            match task.await.unwrap_or_else(|e| Err(Error::internal(format!("insert task failed: {e}")))) {
                Ok(rows) => early_inserted = rows,
                Err(e) => gathered.failure = gathered.failure.take().or(Some(e)),
            }
        }
        let failure = match gathered.failure.take() {
            Some(e) => Some(e),
            None => gathered.claim_early(&early).err(),
        };
        if let Some(e) = failure {
            return Err(self.abandon(&job, &gathered.written, e).await);
        }
        let unmatched: Vec<u32> = job.source.row_ids().into_iter().filter(|i| !gathered.matched[*i as usize]).collect();
        let inserted = job.insert(&unmatched, &gathered.reinsert).await.map(|rows| rows + early_inserted);
        report.rows_inserted = self.take_new_rows(&job, inserted, &mut gathered.written).await?;
        report.phases.insert_ms = lap();
        let Gathered { removes, written, marked, .. } = gathered;
        self.commit_merge(&job.source, job.feed.as_deref(), read_all, report, removes, written, marked, lap).await
    }

    /// The candidate files, each with its partition key, and the source rows whose
    /// key no candidate's range holds: they cannot match, and are inserted while the
    /// files are read.
    fn prune(&self, job: &MergeJob, report: &mut MergeReport) -> Result<Pruned> {
        let inserts = !self.not_matched.is_empty();
        let (candidates, total, bounds) = candidates_with_bounds(self.table, &job.source, &self.by_source, inserts)?;
        let early: Vec<u32> = bounds.map(|b| prune::surely_unmatched(&job.source, &b)).unwrap_or_default();
        report.files_considered = total;
        report.files_pruned = total - candidates.len();
        report.files_read = candidates.len();
        let candidates = candidates.into_iter().map(|a| (exec::partition_key(&a), a)).collect();
        Ok(Pruned { candidates, early })
    }

    /// Run a task per candidate, `files_in_flight` at a time. Once every file of a
    /// partition is done, the sink of that partition's new rows is closed while other
    /// files are still being read.
    async fn merge_files(
        &self,
        job: &Arc<MergeJob>,
        candidates: Vec<(String, Add)>,
        read_all: bool,
        rewrite: bool,
    ) -> Vec<Result<FileResult>> {
        let mut pending: HashMap<String, usize> = HashMap::new();
        for (partition, _) in &candidates {
            *pending.entry(partition.clone()).or_default() += 1;
        }
        let task = |add| job.clone().merge_file(add, !read_all, rewrite);
        let mut tasks = std::pin::pin!(file_tasks(candidates, self.files_in_flight, task));
        let mut results = Vec::new();
        while let Some((partition, result)) = tasks.next().await {
            // `""` is the inserts' sink on an unpartitioned table: written later.
            if let Some(left) = pending.get_mut(&partition)
                && result.is_ok()
                && !partition.is_empty()
            {
                *left -= 1;
                if *left == 0 {
                    job.close_partition(&partition);
                }
            }
            results.push(result);
        }
        results
    }
}
