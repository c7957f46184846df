//! An attempt with the source spilled to a local file: the source's kept rows are
//! split into key ranges of about the memory limit; each range is loaded in turn and
//! every candidate file of the range is *marked* (changed and deleted row positions
//! recorded, new versions written). Then each touched file keeps a deletion vector
//! (tables that enable them) or has its unchanged rows copied once and is removed, and
//! the unmatched source rows are inserted in one scan of the spill.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::kernel::{Add, Remove};
use futures::StreamExt;

use super::attempt::stopwatch;
use super::exec::{MergeJob, Outcome};
use super::prune::candidates;
use super::source::MergeSource;
use super::{MatchedAction, Merge, MergeReport};
use crate::change::deletion_vectors;
use crate::change::tasks::file_tasks;
use crate::error::{Error, Result};
use crate::table::commit::{remove_action, stored_rows};

/// What the key ranges did so far.
struct Touched {
    /// Touched files by path: the file, the positions marked so far, whether all went.
    files: HashMap<String, (Add, Vec<u64>, bool)>,
    /// Data files written (new versions of rows).
    written: Vec<Add>,
    /// Paths of every candidate read, in any range.
    read: HashSet<String>,
    /// By source row id: whether a target row matched it; whether to insert it again
    /// (SCD type 2).
    matched: Vec<bool>,
    reinsert: Vec<bool>,
}

impl Merge<'_> {
    /// Plan, execute and commit once on the table's current version, range by range.
    pub(super) async fn attempt_in_ranges(&mut self, job: Arc<MergeJob>) -> Result<MergeReport> {
        let limit = self.source_memory_limit.unwrap_or(usize::MAX).max(1);
        if !self.by_source.is_empty() {
            return Err(Error::invalid(format!(
                "the merge source holds {} bytes, above its memory limit of {limit}: not-matched-by-source \
                 clauses need the whole source at once; raise the limit or merge the source in parts",
                job.source.rows.bytes()
            )));
        }
        let rewrite = self.matched.iter().any(|c| c.action != MatchedAction::Ignore);
        self.check_writable(rewrite)?;
        let source = job.source.clone();
        let passes = source.rows.bytes().div_ceil(limit).max(1);
        let mut report = MergeReport::for_source(&source, passes);
        let mut lap = stopwatch();
        tracing::info!(passes, bytes = source.rows.bytes(), limit, "merging a spilled source in key ranges");
        let mut touched = Touched {
            files: HashMap::new(),
            written: Vec::new(),
            read: HashSet::new(),
            matched: vec![false; source.rows.num_rows()],
            reinsert: vec![false; source.rows.num_rows()],
        };
        let range_of = source.key_ranges(passes);
        let mut outcome = Ok(());
        for range in 0..passes as u16 {
            outcome = self.mark_range(&job, &range_of, range, rewrite, &mut touched, &mut report).await;
            if outcome.is_err() {
                break;
            }
        }
        report.files_read = touched.read.len();
        report.files_pruned = report.files_considered.saturating_sub(touched.read.len());
        report.phases.rewrite_ms = lap();
        if let Err(e) = outcome {
            return Err(self.abandon(&job, &touched.written, e).await);
        }
        let (removes, marked) = self.settle(&job, touched.files, &mut touched.written, &mut report).await?;
        let unmatched: Vec<bool> = {
            let mut live = vec![false; source.rows.num_rows()];
            for id in source.row_ids() {
                live[id as usize] = !touched.matched[id as usize];
            }
            live
        };
        let inserted = job.insert_scanned(&unmatched, &touched.reinsert).await;
        report.rows_inserted = self.take_new_rows(&job, inserted, &mut touched.written).await?;
        report.phases.insert_ms = lap();
        self.commit_merge(&source, job.feed.as_deref(), false, report, removes, touched.written, marked, lap).await
    }

    /// Load key range `range` of the spilled source into a small in-memory source and
    /// mark (or, for an insert-only merge, probe) every candidate file of the range.
    async fn mark_range(
        &self,
        job: &MergeJob,
        range_of: &[u16],
        range: u16,
        rewrite: bool,
        touched: &mut Touched,
        report: &mut MergeReport,
    ) -> Result<()> {
        let (batches, ids) = job.source.range_rows(range_of, range)?;
        if ids.is_empty() {
            return Ok(());
        }
        let table_schema = self.table.arrow_schema()?;
        let part =
            Arc::new(MergeSource::prepare(batches.into_iter().map(Ok), &self.keys, None, &table_schema, None, None)?);
        let part_job = Arc::new(MergeJob {
            table: self.table.clone(),
            store: job.store.clone(),
            io: job.io.clone(),
            compiled: self.compile_for(&table_schema, &part.rows.schema())?,
            source: part.clone(),
            target_file_size: job.target_file_size,
            deletion_vectors: job.deletion_vectors,
            new_rows: job.new_rows.clone(),
            feed: job.feed.clone(),
        });
        let (candidates, total) = candidates(self.table, &part, &[])?;
        crate::maintain::tiering::archive::ensure_readable(self.table, "merge into", &candidates).await?;
        report.files_considered = total;
        touched.read.extend(candidates.iter().map(|a| a.path.clone()));
        let files = candidates.into_iter().map(|add| ((), add)).collect();
        let task = |add| {
            let job = part_job.clone();
            async move { if rewrite { job.mark_rows(add).await } else { job.merge_file(add, true, false).await } }
        };
        let results: Vec<_> = file_tasks(files, self.files_in_flight, task).collect().await;
        for (_, result) in results {
            let file = result?;
            for i in &file.matched_sources {
                touched.matched[ids[*i as usize] as usize] = true;
            }
            for i in &file.reinsert {
                touched.reinsert[ids[*i as usize] as usize] = true;
            }
            report.count_rows(&file);
            if matches!(file.outcome, Outcome::Untouched) {
                continue;
            }
            let (_, marked, all) =
                touched.files.entry(file.add.path.clone()).or_insert_with(|| (file.add.clone(), Vec::new(), false));
            match file.outcome {
                Outcome::Untouched => {}
                Outcome::Marked { positions } => *marked = deletion_vectors::union(marked, &positions),
                Outcome::Removed => *all = true,
                Outcome::Rewritten(adds) => {
                    *all = true;
                    touched.written.extend(adds);
                }
            }
        }
        Ok(())
    }

    /// Each touched file, after the last range: removed (every row went), kept with a
    /// deletion vector, or its unchanged rows copied once (into files added to
    /// `written`) and removed. On failure everything written is deleted.
    async fn settle(
        &self,
        job: &MergeJob,
        files: HashMap<String, (Add, Vec<u64>, bool)>,
        written: &mut Vec<Add>,
        report: &mut MergeReport,
    ) -> Result<(Vec<Remove>, Vec<(Add, Vec<u64>)>)> {
        let mut removes: Vec<Remove> = Vec::new();
        let mut marked: Vec<(Add, Vec<u64>)> = Vec::new();
        let mut copies = job.sink()?;
        let copied: Result<()> = async {
            for (add, positions, all) in files.into_values() {
                let rows = stored_rows(&add);
                if all || rows.is_some_and(|rows| positions.len() as u64 >= rows) {
                    report.files_removed += 1;
                    removes.push(remove_action(&add));
                } else if job.deletion_vectors {
                    report.files_marked += 1;
                    marked.push((add, positions));
                } else {
                    report.rows_copied += job.copy_live_rows(&add, &positions, &mut copies).await?;
                    report.files_rewritten += 1;
                    removes.push(remove_action(&add));
                }
            }
            Ok(())
        }
        .await;
        match copies.close(self.table, copied).await {
            Ok(adds) => {
                written.extend(adds);
                Ok((removes, marked))
            }
            Err(e) => Err(self.abandon(job, written, e).await),
        }
    }
}
