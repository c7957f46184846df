//! Merge (upsert) of a source into a table by key, rewriting only what it must.
//!
//! A merge joins a *source* (record batches, held in memory: it is the small side)
//! to the table's rows on equal *keys*, then applies clauses in order, as in SQL
//! `MERGE`: `when matched [and c] update | delete | ignore`, `when not matched
//! [and c] insert`, `when not matched by source [and c] update | delete`.
//! [`Table::upsert`] is the common case; [`Table::scd2`] keeps history (SCD type 2).
//!
//! How it stays cheap:
//! 1. *Pruning, before any read*: for each key column, a file is kept only if some
//!    source key lies between the file's min and max for that column (partition
//!    values count as min = max). The check is a binary search in the sorted source
//!    keys, so it is exact per column, not just a range overlap.
//! 2. *Probing*: a kept file's key columns alone are read and looked up in the
//!    source's key index; a file without a matching key is left untouched.
//! 3. *Rewriting*: only files holding a matched key are read whole; their rows are
//!    streamed into new files with the clauses applied. Untouched rows are copied.
//!    A file whose matched rows come out identical is not rewritten, and a merge that
//!    changes nothing commits nothing.
//!
//! Memory holds the source and its key index plus a bounded number of target files
//! in flight ([`Merge::files_in_flight`]), never the table.
//!
//! One commit removes the rewritten files and adds the new ones. It declares what the
//! merge read (each key's source range) so delta-rs's conflict checker lets it land
//! over concurrent appends to other keys; when a concurrent writer removed a file it
//! read or added rows it should have read, the merge is planned again on the newest
//! version (bounded, reported), so the result is as if it ran after that writer.

mod clauses;
mod exec;
mod prune;
mod source;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::{Action as DeltaAction, Add, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, MergePredicate};
use futures::StreamExt;
use serde::Serialize;
use tracing::instrument;

use clauses::{BySourceClause, MatchedClause, NotMatchedClause, compile};
pub use clauses::{MatchedAction, NotMatchedAction, NotMatchedBySourceAction, SOURCE, TARGET};
use exec::{MergeJob, Outcome};
use prune::{candidates, candidates_with_bounds, read_predicate};
use source::MergeSource;

use crate::commit::{CommitRequest, commit};
use crate::error::{Error, ErrorKind, Result};
use crate::features;
use crate::sink::FileSink;
use crate::table::Table;

/// How many times a merge that lost a race is planned again.
const MAX_ATTEMPTS: usize = 10;

/// What a merge did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergeReport {
    /// The version committed (`None` when nothing changed or the batch was a replay).
    pub version: Option<u64>,
    /// The application transaction was already committed; nothing was done.
    pub replayed: bool,
    /// Source rows after deduplication.
    pub source_rows: u64,
    /// Source rows dropped by deduplication.
    pub source_duplicates_dropped: u64,
    /// Key ranges the source was merged in: more than 1 when it outgrew its memory
    /// limit and was spilled to a local file.
    pub key_ranges: usize,
    /// Live files in the snapshot.
    pub files_considered: usize,
    /// Files skipped by partition values and key statistics, never opened.
    pub files_pruned: usize,
    /// Files opened (key columns probed, or read whole).
    pub files_read: usize,
    /// Files replaced by new files holding their changed and copied rows.
    pub files_rewritten: usize,
    /// Files removed because every row was deleted.
    pub files_removed: usize,
    /// Files kept with a deletion vector marking their changed rows (tables with
    /// deletion vectors enabled); the rows' new versions are in new files.
    pub files_marked: usize,
    /// New files (rewrites and inserts).
    pub files_added: usize,
    /// Rows inserted.
    pub rows_inserted: u64,
    /// Rows updated to different values.
    pub rows_updated: u64,
    /// Matched rows an update left identical (not rewritten for their sake).
    pub rows_unchanged: u64,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Rows copied unchanged into rewritten files.
    pub rows_copied: u64,
    /// Bytes of new files.
    pub bytes_written: u64,
    /// Times the merge was planned again after losing a race.
    pub retries: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Where the time of the last attempt went.
    pub phases: MergePhases,
}

/// What a merge would touch, before anything is read: see [`Merge::plan`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergePlan {
    /// The version planned on.
    pub version: u64,
    /// Source rows after deduplication.
    pub source_rows: u64,
    /// Source rows deduplication would drop.
    pub source_duplicates_dropped: u64,
    /// Live files in the snapshot.
    pub files_considered: usize,
    /// Files that key statistics and partition values rule out.
    pub files_pruned: usize,
    /// The files that would be probed (and rewritten where a key matches).
    pub candidates: Vec<String>,
}

/// Milliseconds spent in each phase of a merge's last attempt.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergePhases {
    /// Checking, deduplicating and indexing the source; compiling the clauses.
    pub prepare_ms: u64,
    /// Pruning files by partition values and key statistics.
    pub prune_ms: u64,
    /// Probing and rewriting target files.
    pub rewrite_ms: u64,
    /// Writing inserted rows and closing the files of new rows.
    pub insert_ms: u64,
    /// Committing (including conflict checks) and loading the new version.
    pub commit_ms: u64,
}

/// Builds a merge of a source into a table; see the [module docs](self).
#[must_use = "a merge does nothing until executed"]
pub struct Merge<'a> {
    table: &'a mut Table,
    /// The source until it is read (once, by the first attempt or the plan).
    source: Option<BatchSource<'a>>,
    /// The source once read and indexed.
    prepared: Option<Arc<MergeSource>>,
    keys: Vec<String>,
    join_condition: Option<String>,
    matched: Vec<MatchedClause>,
    not_matched: Vec<NotMatchedClause>,
    by_source: Vec<BySourceClause>,
    dedupe_by: Option<String>,
    app_transaction: Option<(String, i64)>,
    files_in_flight: usize,
    source_memory_limit: Option<usize>,
    spill_directory: Option<std::path::PathBuf>,
    before_commit: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// Default of [`Merge::source_memory_limit`]: 1 GiB.
pub const DEFAULT_SOURCE_MEMORY_LIMIT: usize = 1024 * 1024 * 1024;

/// Source batches not read yet.
type BatchSource<'a> = Box<dyn Iterator<Item = Result<RecordBatch>> + Send + 'a>;

impl Table {
    /// Start a merge of `source` into this table. Add keys with [`Merge::on`] and
    /// clauses, then [`Merge::execute`].
    pub fn merge<'a, I>(&'a mut self, source: I) -> Merge<'a>
    where
        I: IntoIterator<Item = RecordBatch>,
        I::IntoIter: Send + 'a,
    {
        self.merge_from(source.into_iter().map(Ok))
    }

    /// A merge of a source that may fail while it is read, such as batches read from
    /// files ([`crate::source::open_source_file`]). The source is read once, batch by
    /// batch, before anything is written; an error from it stops the merge.
    pub fn merge_from<'a, I>(&'a mut self, source: I) -> Merge<'a>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
        I::IntoIter: Send + 'a,
    {
        Merge {
            table: self,
            source: Some(Box::new(source.into_iter())),
            prepared: None,
            keys: Vec::new(),
            join_condition: None,
            matched: Vec::new(),
            not_matched: Vec::new(),
            by_source: Vec::new(),
            dedupe_by: None,
            app_transaction: None,
            files_in_flight: std::thread::available_parallelism().map_or(2, |n| n.get() + 1),
            source_memory_limit: Some(DEFAULT_SOURCE_MEMORY_LIMIT),
            spill_directory: None,
            before_commit: None,
        }
    }

    /// Upsert: rows whose keys exist are updated (every column the source has), the
    /// others inserted.
    pub async fn upsert<S: Into<String>, I>(
        &mut self,
        source: I,
        keys: impl IntoIterator<Item = S>,
    ) -> Result<MergeReport>
    where
        I: IntoIterator<Item = RecordBatch>,
        I::IntoIter: Send,
    {
        self.merge(source).on(keys).when_matched(MatchedAction::UpdateAll).when_not_matched_insert_all().execute().await
    }

    /// Slowly changing dimension, type 2: for each source row whose tracked columns
    /// differ from the key's current row, close that row (`valid_to` = the source's
    /// effective time, current flag false) and insert the new version (`valid_from` =
    /// effective time, `valid_to` null, current). New keys are inserted as current;
    /// unchanged rows change nothing.
    pub fn scd2<'a, I>(&'a mut self, source: I, options: &Scd2Options) -> Result<Merge<'a>>
    where
        I: IntoIterator<Item = RecordBatch>,
        I::IntoIter: Send + 'a,
    {
        let schema = self.arrow_schema()?;
        for column in [&options.valid_from, &options.valid_to, &options.current] {
            if schema.field_with_name(column).is_err() {
                return Err(Error::invalid(format!("SCD2 column `{column}` is not in table {}", self.uri())));
            }
        }
        if options.tracked.is_empty() {
            return Err(Error::invalid("SCD2 needs at least one tracked column"));
        }
        let eff = format!("{SOURCE}.{}", options.effective_time);
        let changed =
            options.tracked.iter().map(|c| format!("{TARGET}.{c} IS DISTINCT FROM {SOURCE}.{c}")).collect::<Vec<_>>();
        let mut source = source.into_iter().peekable();
        let source_schema = source.peek().map(|b| b.schema());
        let mut insert: Vec<(String, String)> = schema
            .fields()
            .iter()
            .map(|f| f.name())
            .filter(|n| ![&options.valid_from, &options.valid_to, &options.current].contains(n))
            .filter(|n| source_schema.as_ref().is_some_and(|s| s.field_with_name(n).is_ok()))
            .map(|n| (n.clone(), format!("{SOURCE}.{n}")))
            .collect();
        insert.push((options.valid_from.clone(), eff.clone()));
        insert.push((options.valid_to.clone(), "NULL".into()));
        insert.push((options.current.clone(), "true".into()));
        let mut merge = self.merge(source).on(options.keys.clone());
        merge.join_condition = Some(format!("{TARGET}.{} = true", options.current));
        merge.matched.push(MatchedClause {
            condition: Some(changed.join(" OR ")),
            action: MatchedAction::Update(vec![
                (options.valid_to.clone(), eff),
                (options.current.clone(), "false".into()),
            ]),
            reinsert: true,
        });
        merge.not_matched.push(NotMatchedClause { condition: None, action: NotMatchedAction::Insert(insert) });
        Ok(merge)
    }
}

/// The columns of a type-2 slowly changing dimension.
#[derive(Debug, Clone)]
pub struct Scd2Options {
    /// Business key columns.
    pub keys: Vec<String>,
    /// Columns whose change opens a new version.
    pub tracked: Vec<String>,
    /// Source column holding when the change took effect.
    pub effective_time: String,
    /// Table column: start of a version's validity (default `valid_from`).
    pub valid_from: String,
    /// Table column: end of a version's validity, null while current (default `valid_to`).
    pub valid_to: String,
    /// Table column: whether the row is the key's current version (default `is_current`).
    pub current: String,
}

impl Scd2Options {
    /// Options with the default column names.
    pub fn new<S: Into<String>>(
        keys: impl IntoIterator<Item = S>,
        tracked: impl IntoIterator<Item = S>,
        effective_time: impl Into<String>,
    ) -> Self {
        Self {
            keys: keys.into_iter().map(Into::into).collect(),
            tracked: tracked.into_iter().map(Into::into).collect(),
            effective_time: effective_time.into(),
            valid_from: "valid_from".into(),
            valid_to: "valid_to".into(),
            current: "is_current".into(),
        }
    }
}

impl<'a> Merge<'a> {
    /// Join on equality of these columns (present in table and source).
    pub fn on<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// When matched, do `action`.
    pub fn when_matched(self, action: MatchedAction) -> Self {
        self.matched_clause(None, action)
    }

    /// When matched and `condition` (SQL over `target.*` and `source.*`) holds, do `action`.
    pub fn when_matched_if(self, condition: impl Into<String>, action: MatchedAction) -> Self {
        self.matched_clause(Some(condition.into()), action)
    }

    fn matched_clause(mut self, condition: Option<String>, action: MatchedAction) -> Self {
        self.matched.push(MatchedClause { condition, action, reinsert: false });
        self
    }

    /// When not matched, insert the source row.
    pub fn when_not_matched_insert_all(self) -> Self {
        self.when_not_matched(NotMatchedAction::InsertAll)
    }

    /// When not matched, do `action`.
    pub fn when_not_matched(mut self, action: NotMatchedAction) -> Self {
        self.not_matched.push(NotMatchedClause { condition: None, action });
        self
    }

    /// When not matched and `condition` (SQL over `source.*`) holds, do `action`.
    pub fn when_not_matched_if(mut self, condition: impl Into<String>, action: NotMatchedAction) -> Self {
        self.not_matched.push(NotMatchedClause { condition: Some(condition.into()), action });
        self
    }

    /// When a target row matches no source row, do `action`. Every file is read.
    pub fn when_not_matched_by_source(mut self, action: NotMatchedBySourceAction) -> Self {
        self.by_source.push(BySourceClause { condition: None, action });
        self
    }

    /// When a target row matches no source row and `condition` (SQL over `target.*`)
    /// holds, do `action`.
    pub fn when_not_matched_by_source_if(
        mut self,
        condition: impl Into<String>,
        action: NotMatchedBySourceAction,
    ) -> Self {
        self.by_source.push(BySourceClause { condition: Some(condition.into()), action });
        self
    }

    /// Keep, per key, only the source row with the largest value of `column` (the
    /// later one on ties). Without it a duplicated key is an error.
    pub fn dedupe_by(mut self, column: impl Into<String>) -> Self {
        self.dedupe_by = Some(column.into());
        self
    }

    /// Record application `app`'s batch `version` in the commit (Delta `txn`); a merge
    /// whose version is not above the last recorded one does nothing.
    pub fn app_transaction(mut self, app: impl Into<String>, version: i64) -> Self {
        self.app_transaction = Some((app.into(), version));
        self
    }

    /// Target files read and rewritten at once (at least 1; default: the number of
    /// cores plus one, so reading one file overlaps with encoding others).
    pub fn files_in_flight(mut self, files: usize) -> Self {
        self.files_in_flight = files.max(1);
        self
    }

    /// Source rows held in memory at most (default 1 GiB; `None`: no limit). A larger
    /// source is spilled to a local file (in the temporary directory, `TMPDIR`,
    /// deleted when the merge ends), its keys kept in memory, and merged in key
    /// ranges of about this size: each range's rows are loaded in turn and every
    /// candidate file is probed once per range; changed rows are marked and the
    /// unchanged ones copied once at the end (or kept, with a deletion vector, on
    /// tables that enable them). Not-matched-by-source clauses need the whole source
    /// at once and are refused past the limit.
    pub fn source_memory_limit(mut self, bytes: Option<usize>) -> Self {
        self.source_memory_limit = bytes.map(|b| b.max(1));
        self
    }

    /// Where a source past its memory limit is spilled (default: the temporary
    /// directory, `TMPDIR`). Containers often have a small `/tmp`; point this at a
    /// volume with room for the source (about its size in Arrow).
    pub fn spill_directory(mut self, directory: impl Into<std::path::PathBuf>) -> Self {
        self.spill_directory = Some(directory.into());
        self
    }

    /// Called right before each commit attempt (tests use it to land a concurrent
    /// commit at the worst moment).
    #[doc(hidden)]
    pub fn before_commit(mut self, hook: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.before_commit = Some(hook);
        self
    }

    /// The checked, indexed source (read on the first call) and the clauses compiled
    /// against it, for the table's current version.
    fn prepare(&mut self) -> Result<(Arc<MergeSource>, clauses::Compiled)> {
        let table_schema = self.table.arrow_schema()?;
        let source = match (&self.prepared, self.source.take()) {
            (Some(source), _) => source.clone(),
            (None, Some(batches)) => {
                let source = Arc::new(MergeSource::prepare(
                    batches,
                    &self.keys,
                    self.dedupe_by.as_deref(),
                    &table_schema,
                    self.source_memory_limit,
                    self.spill_directory.as_deref(),
                )?);
                self.prepared = Some(source.clone());
                source
            }
            (None, None) => return Err(Error::internal("the merge source was lost after a failed read")),
        };
        let compiled = self.compile_for(&table_schema, &source.rows.schema())?;
        Ok((source, compiled))
    }

    /// The clauses compiled for a source of `source_schema`.
    fn compile_for(
        &self,
        table_schema: &deltalake::arrow::datatypes::SchemaRef,
        source_schema: &deltalake::arrow::datatypes::SchemaRef,
    ) -> Result<clauses::Compiled> {
        // Source columns the merge uses besides its clauses: the keys, the dedupe column.
        let used: Vec<String> = self.keys.iter().chain(&self.dedupe_by).cloned().collect();
        compile(
            table_schema,
            source_schema,
            &used,
            self.join_condition.as_deref(),
            &self.matched,
            &self.not_matched,
            &self.by_source,
        )
    }

    /// Check the source and the clauses and plan the merge without reading or
    /// writing any data file: which files it would open.
    pub fn plan(mut self) -> Result<MergePlan> {
        if !self.table.exists() {
            return Err(Error::new(ErrorKind::NotFound, format!("no delta table at {}", self.table.uri())));
        }
        let (source, _) = self.prepare()?;
        let (candidates, total) = candidates(self.table, &source, &self.by_source)?;
        Ok(MergePlan {
            version: self.table.version().unwrap_or_default(),
            source_rows: source.index.len() as u64,
            source_duplicates_dropped: source.duplicates_dropped,
            files_considered: total,
            files_pruned: total - candidates.len(),
            candidates: candidates.into_iter().map(|a| a.path).collect(),
        })
    }

    /// Run the merge.
    #[instrument(skip_all, fields(table = %self.table.uri(), keys = ?self.keys))]
    pub async fn execute(mut self) -> Result<MergeReport> {
        let started = Instant::now();
        let mut report = MergeReport::default();
        if !self.table.exists() {
            return Err(Error::new(ErrorKind::NotFound, format!("no delta table at {}", self.table.uri())));
        }
        if self.matched.is_empty() && self.not_matched.is_empty() && self.by_source.is_empty() {
            return Err(Error::invalid("a merge needs at least one when-matched or when-not-matched clause"));
        }
        let mut retries = 0;
        loop {
            // Checked on every attempt: a racing loader may have committed the batch.
            if let Some((app, version)) = &self.app_transaction
                && let Some(done) = self.table.app_transaction_version(app).await?
                && done >= *version
            {
                tracing::info!(app, version, done, "merge batch already committed; nothing to do");
                report.replayed = true;
                report.retries = retries;
                return Ok(report);
            }
            let prepare_started = Instant::now();
            let (source, compiled) = self.prepare()?;
            let job = Arc::new(MergeJob {
                table: self.table.clone(),
                source,
                compiled,
                target_file_size: self.table.target_file_size()?,
                deletion_vectors: features::deletion_vectors_enabled(self.table.state()?),
                new_rows: Default::default(),
            });
            let prepare_ms = prepare_started.elapsed().as_millis() as u64;
            let attempt =
                if job.source.rows.is_spilled() { self.attempt_in_ranges(job).await } else { self.attempt(job).await };
            match attempt {
                Err(e) if e.kind() == ErrorKind::Conflict && retries + 1 < MAX_ATTEMPTS => {
                    retries += 1;
                    tracing::info!(retries, error = %e, "merge lost a race; planning again on the newest version");
                    self.table.refresh().await?;
                }
                Err(e) => return Err(e),
                Ok(mut report) => {
                    report.phases.prepare_ms = prepare_ms;
                    report.retries = retries;
                    report.duration_ms = started.elapsed().as_millis() as u64;
                    return Ok(report);
                }
            }
        }
    }

    /// Plan, execute and commit once on the table's current version.
    async fn attempt(&mut self, job: Arc<MergeJob>) -> Result<MergeReport> {
        let state = self.table.state()?;
        features::check_writable(self.table.uri(), state)?;
        let read_all = !self.by_source.is_empty();
        // Matched rows can change only through a matched or a by-source clause; an
        // insert-only merge still probes the candidates to learn which keys exist.
        let rewrite = self.matched.iter().any(|c| c.action != MatchedAction::Ignore) || read_all;
        if rewrite && features::is_append_only(state) {
            return Err(Error::invalid(format!(
                "table {} is append-only (delta.appendOnly = true); a merge may only insert",
                self.table.uri()
            )));
        }
        let mut report = MergeReport {
            source_rows: job.source.index.len() as u64,
            source_duplicates_dropped: job.source.duplicates_dropped,
            key_ranges: 1,
            ..Default::default()
        };
        let mut lap = stopwatch();
        let inserts = !self.not_matched.is_empty();
        let (candidates, total, bounds) = candidates_with_bounds(self.table, &job.source, &self.by_source, inserts)?;
        // Source rows whose key no candidate's range holds cannot match: they are
        // inserted while the files are read.
        let early: Vec<u32> = bounds.map(|b| prune::surely_unmatched(&job.source, &b)).unwrap_or_default();
        report.phases.prune_ms = lap();
        report.files_considered = total;
        report.files_pruned = total - candidates.len();
        report.files_read = candidates.len();
        let early_insert = (!early.is_empty()).then(|| {
            let (job, early) = (job.clone(), early.clone());
            tokio::spawn(async move { job.insert(&early, &[]).await })
        });
        // Files left per partition: once a partition's are all done, the sink of its
        // new rows is closed while other files are still being read.
        let candidates: Vec<(String, Add)> = candidates.into_iter().map(|a| (exec::partition_key(&a), a)).collect();
        let mut pending: HashMap<String, usize> = HashMap::new();
        for (partition, _) in &candidates {
            *pending.entry(partition.clone()).or_default() += 1;
        }
        let mut tasks = futures::stream::iter(candidates)
            .map(|(partition, add)| {
                let job = job.clone();
                async move {
                    let result = tokio::spawn(job.merge_file(add, !read_all, rewrite))
                        .await
                        .unwrap_or_else(|e| Err(Error::internal(format!("merge task failed: {e}"))));
                    (partition, result)
                }
            })
            .buffer_unordered(self.files_in_flight);
        let mut results: Vec<Result<exec::FileResult>> = Vec::new();
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
        report.phases.rewrite_ms = lap();
        let mut written: Vec<Add> = Vec::new();
        let mut removes: Vec<Remove> = Vec::new();
        let mut matched = vec![false; job.source.rows.num_rows()];
        let mut reinsert: Vec<u32> = Vec::new();
        let mut marked: Vec<(Add, Vec<u64>)> = Vec::new();
        let mut failure = None;
        for result in results {
            match result {
                Err(e) => failure = failure.or(Some(e)),
                Ok(file) => {
                    for i in &file.matched_sources {
                        matched[*i as usize] = true;
                    }
                    reinsert.extend(&file.reinsert);
                    report.rows_updated += file.rows_updated;
                    report.rows_unchanged += file.rows_unchanged;
                    report.rows_deleted += file.rows_deleted;
                    report.rows_copied += file.rows_copied;
                    match file.outcome {
                        Outcome::Untouched => {}
                        Outcome::Removed => {
                            report.files_removed += 1;
                            removes.push(crate::commit::remove_action(&file.add));
                        }
                        Outcome::Rewritten(adds) => {
                            report.files_rewritten += 1;
                            removes.push(crate::commit::remove_action(&file.add));
                            written.extend(adds);
                        }
                        Outcome::Marked { positions } => {
                            report.files_marked += 1;
                            marked.push((file.add, positions));
                        }
                    }
                }
            }
        }
        let mut early_inserted = 0;
        if let Some(task) = early_insert {
            match task.await.unwrap_or_else(|e| Err(Error::internal(format!("insert task failed: {e}")))) {
                Ok(rows) => early_inserted = rows,
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            FileSink::abort(self.table, &written).await;
            job.abandon_new_rows().await;
            return Err(e);
        }
        reinsert.sort_unstable();
        reinsert.dedup();
        for id in &early {
            if matched[*id as usize] {
                // Statistics said no file could hold this key; one did.
                FileSink::abort(self.table, &written).await;
                job.abandon_new_rows().await;
                return Err(Error::new(
                    ErrorKind::Data,
                    "a data file holds a key outside the range its statistics give; nothing was committed",
                ));
            }
            matched[*id as usize] = true;
        }
        let unmatched: Vec<u32> = job.source.row_ids().into_iter().filter(|i| !matched[*i as usize]).collect();
        let inserted = job.insert(&unmatched, &reinsert).await.map(|rows| rows + early_inserted);
        report.rows_inserted = self.take_new_rows(&job, inserted, &mut written).await?;
        report.phases.insert_ms = lap();
        self.commit_merge(&job.source, read_all, report, removes, written, marked, lap).await
    }

    /// [`Self::attempt`] for a source spilled to a local file: the source's kept rows
    /// are split into key ranges of about the memory limit; each range is loaded in
    /// turn and every candidate file of the range is marked (changed and deleted row
    /// positions recorded, new versions written). At the end each touched file keeps a
    /// deletion vector (tables that enable them) or has its unchanged rows copied once
    /// and is removed; unmatched source rows are inserted in one scan of the spill.
    async fn attempt_in_ranges(&mut self, job: Arc<MergeJob>) -> Result<MergeReport> {
        let state = self.table.state()?;
        features::check_writable(self.table.uri(), state)?;
        let limit = self.source_memory_limit.unwrap_or(usize::MAX).max(1);
        if !self.by_source.is_empty() {
            return Err(Error::invalid(format!(
                "the merge source holds {} bytes, above its memory limit of {limit}: not-matched-by-source \
                 clauses need the whole source at once; raise the limit or merge the source in parts",
                job.source.rows.bytes()
            )));
        }
        let rewrite = self.matched.iter().any(|c| c.action != MatchedAction::Ignore);
        if rewrite && features::is_append_only(state) {
            return Err(Error::invalid(format!(
                "table {} is append-only (delta.appendOnly = true); a merge may only insert",
                self.table.uri()
            )));
        }
        let source = job.source.clone();
        let table_schema = self.table.arrow_schema()?;
        let passes = source.rows.bytes().div_ceil(limit).max(1);
        let mut report = MergeReport {
            source_rows: source.index.len() as u64,
            source_duplicates_dropped: source.duplicates_dropped,
            key_ranges: passes,
            ..Default::default()
        };
        let mut lap = stopwatch();
        let range_of = source.key_ranges(passes);
        tracing::info!(passes, bytes = source.rows.bytes(), limit, "merging a spilled source in key ranges");
        let mut matched = vec![false; source.rows.num_rows()];
        let mut reinsert = vec![false; source.rows.num_rows()];
        // Touched files by path: the file, the positions marked so far, whether all went.
        let mut touched: HashMap<String, (Add, Vec<u64>, bool)> = HashMap::new();
        let mut written: Vec<Add> = Vec::new();
        let mut read: HashSet<String> = HashSet::new();
        let outcome: Result<()> = async {
            for range in 0..passes as u16 {
                let (batches, ids) = source.range_rows(&range_of, range)?;
                if ids.is_empty() {
                    continue;
                }
                let part = Arc::new(MergeSource::prepare(
                    batches.into_iter().map(Ok),
                    &self.keys,
                    None,
                    &table_schema,
                    None,
                    None,
                )?);
                let part_job = Arc::new(MergeJob {
                    table: self.table.clone(),
                    compiled: self.compile_for(&table_schema, &part.rows.schema())?,
                    source: part.clone(),
                    target_file_size: job.target_file_size,
                    deletion_vectors: job.deletion_vectors,
                    new_rows: job.new_rows.clone(),
                });
                let (candidates, total) = candidates(self.table, &part, &[])?;
                report.files_considered = total;
                read.extend(candidates.iter().map(|a| a.path.clone()));
                let results: Vec<Result<exec::FileResult>> = futures::stream::iter(candidates)
                    .map(|add| {
                        let job = part_job.clone();
                        async move {
                            let task = if rewrite {
                                tokio::spawn(job.mark_rows(add))
                            } else {
                                tokio::spawn(job.merge_file(add, true, false))
                            };
                            task.await.unwrap_or_else(|e| Err(Error::internal(format!("merge task failed: {e}"))))
                        }
                    })
                    .buffer_unordered(self.files_in_flight)
                    .collect()
                    .await;
                for result in results {
                    let file = result?;
                    for i in &file.matched_sources {
                        matched[ids[*i as usize] as usize] = true;
                    }
                    for i in &file.reinsert {
                        reinsert[ids[*i as usize] as usize] = true;
                    }
                    report.rows_updated += file.rows_updated;
                    report.rows_unchanged += file.rows_unchanged;
                    report.rows_deleted += file.rows_deleted;
                    if matches!(file.outcome, Outcome::Untouched) {
                        continue;
                    }
                    let (_, marked, all) =
                        touched.entry(file.add.path.clone()).or_insert_with(|| (file.add.clone(), Vec::new(), false));
                    match file.outcome {
                        Outcome::Untouched => {}
                        Outcome::Marked { positions } => {
                            *marked = crate::deletion_vectors::union(marked, &positions);
                        }
                        Outcome::Removed => *all = true,
                        Outcome::Rewritten(adds) => {
                            *all = true;
                            written.extend(adds);
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        report.files_read = read.len();
        report.files_pruned = report.files_considered.saturating_sub(read.len());
        report.phases.rewrite_ms = lap();
        if let Err(e) = outcome {
            FileSink::abort(self.table, &written).await;
            job.abandon_new_rows().await;
            return Err(e);
        }
        // Each touched file: removed, kept with a deletion vector, or its unchanged rows
        // copied once.
        let mut removes: Vec<Remove> = Vec::new();
        let mut marked: Vec<(Add, Vec<u64>)> = Vec::new();
        let mut copies = job.sink()?;
        let copied: Result<()> = async {
            for (add, positions, all) in touched.into_values() {
                let rows = crate::commit::stored_rows(&add);
                if all || rows.is_some_and(|rows| positions.len() as u64 >= rows) {
                    report.files_removed += 1;
                    removes.push(crate::commit::remove_action(&add));
                } else if job.deletion_vectors {
                    report.files_marked += 1;
                    marked.push((add, positions));
                } else {
                    report.rows_copied += job.copy_live_rows(&add, &positions, &mut copies).await?;
                    report.files_rewritten += 1;
                    removes.push(crate::commit::remove_action(&add));
                }
            }
            Ok(())
        }
        .await;
        match copies.close(self.table, copied).await {
            Ok(adds) => written.extend(adds),
            Err(e) => {
                FileSink::abort(self.table, &written).await;
                job.abandon_new_rows().await;
                return Err(e);
            }
        }
        let unmatched: Vec<bool> = {
            let mut live = vec![false; source.rows.num_rows()];
            for id in source.row_ids() {
                live[id as usize] = !matched[id as usize];
            }
            live
        };
        let inserted = job.insert_scanned(&unmatched, &reinsert).await;
        report.rows_inserted = self.take_new_rows(&job, inserted, &mut written).await?;
        report.phases.insert_ms = lap();
        self.commit_merge(&source, false, report, removes, written, marked, lap).await
    }

    /// Close the merge's new rows after the inserts (`inserted`: their rows, or how
    /// they failed), add their files to `written` and return the rows inserted; on a
    /// failure delete everything written so far and pass the error on.
    async fn take_new_rows(&self, job: &MergeJob, inserted: Result<u64>, written: &mut Vec<Add>) -> Result<u64> {
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
                Err(e)
            }
        }
    }

    /// Write the deletion vectors, commit removes and adds, and fill in the report;
    /// on failure delete what the merge wrote.
    #[allow(clippy::too_many_arguments)]
    async fn commit_merge(
        &mut self,
        source: &MergeSource,
        read_all: bool,
        mut report: MergeReport,
        removes: Vec<Remove>,
        written: Vec<Add>,
        marked: Vec<(Add, Vec<u64>)>,
        mut lap: impl FnMut() -> u64,
    ) -> Result<MergeReport> {
        report.files_added = written.len();
        report.bytes_written = written.iter().map(|a| a.size.max(0) as u64).sum();
        if removes.is_empty() && written.is_empty() && marked.is_empty() {
            return Ok(report);
        }
        // Marked files are removed and added again with their deletion vector.
        let marked = match crate::deletion_vectors::write(self.table, marked).await {
            Ok(marked) => marked,
            Err(e) => {
                FileSink::abort(self.table, &written).await;
                return Err(e);
            }
        };
        report.bytes_written += marked.bytes();
        let mut actions: Vec<DeltaAction> = removes.into_iter().map(DeltaAction::Remove).collect();
        actions.extend(marked.actions.iter().cloned());
        actions.extend(written.iter().cloned().map(DeltaAction::Add));
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
            app_transaction: self.app_transaction.as_ref().map(|(app, v)| Transaction::new(app.clone(), *v)),
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

/// Milliseconds since the previous call (or since it was made), for phase timings.
fn stopwatch() -> impl FnMut() -> u64 {
    let mut clock = Instant::now();
    move || {
        let ms = clock.elapsed().as_millis() as u64;
        clock = Instant::now();
        ms
    }
}
