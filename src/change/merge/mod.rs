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

mod attempt;
mod clauses;
mod commit;
mod exec;
mod in_memory;
mod in_ranges;
mod prune;
mod source;

use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use serde::Serialize;
use tracing::instrument;

use clauses::{BySourceClause, MatchedClause, NotMatchedClause, compile};
pub use clauses::{MatchedAction, NotMatchedAction, NotMatchedBySourceAction, SOURCE, TARGET};
use exec::MergeJob;
use prune::candidates;
use source::MergeSource;

use crate::change::feed::ChangeFeed;
use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::conflict::{self, RetryBudget, RetrySettings};
use crate::table::features;
use crate::table::storage::{BoundedStore, IoLimiter, IoReport, IoSettings};

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
    /// Bytes of new files (data, deletion vectors and change data).
    pub bytes_written: u64,
    /// Change-data files written (tables with the change data feed on; none when the
    /// merge only inserted).
    pub change_data_files: usize,
    /// Times the merge was planned again after losing a race.
    pub retries: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Where the time of the last attempt went.
    pub phases: MergePhases,
    /// The requests of the merge's data-file reads (every attempt): how many, the
    /// bytes read, the most in flight at once.
    pub io: IoReport,
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
    /// (Behind a mutex only so a merge is `Sync`, and a future holding a reference to
    /// it `Send`; it is taken once, through `&mut self`, never locked concurrently.)
    source: std::sync::Mutex<Option<BatchSource<'a>>>,
    /// The source once read and indexed.
    prepared: Option<Arc<MergeSource>>,
    keys: Vec<String>,
    join_condition: Option<String>,
    matched: Vec<MatchedClause>,
    not_matched: Vec<NotMatchedClause>,
    by_source: Vec<BySourceClause>,
    dedupe_by: Option<String>,
    app_transactions: Vec<(String, i64)>,
    commit_info: Vec<(String, serde_json::Value)>,
    files_in_flight: usize,
    retry: RetrySettings,
    source_memory_limit: Option<usize>,
    spill_directory: Option<std::path::PathBuf>,
    before_commit: Option<Arc<dyn Fn() + Send + Sync>>,
    io: IoSettings,
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
    /// files ([`crate::write::input::open_source_file`]). The source is read once, batch by
    /// batch, before anything is written; an error from it stops the merge.
    pub fn merge_from<'a, I>(&'a mut self, source: I) -> Merge<'a>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
        I::IntoIter: Send + 'a,
    {
        Merge {
            table: self,
            source: std::sync::Mutex::new(Some(Box::new(source.into_iter()))),
            prepared: None,
            keys: Vec::new(),
            join_condition: None,
            matched: Vec::new(),
            not_matched: Vec::new(),
            by_source: Vec::new(),
            dedupe_by: None,
            app_transactions: Vec::new(),
            commit_info: Vec::new(),
            files_in_flight: crate::change::tasks::default_files_in_flight(),
            retry: RetrySettings::default(),
            source_memory_limit: Some(DEFAULT_SOURCE_MEMORY_LIMIT),
            spill_directory: None,
            before_commit: None,
            io: IoSettings::default(),
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
    /// whose version is not above the last recorded one does nothing. Several
    /// applications may be given (a pipeline records one per source): the merge does
    /// nothing when every one of them is recorded already.
    pub fn app_transaction(mut self, app: impl Into<String>, version: i64) -> Self {
        self.app_transactions.push((app.into(), version));
        self
    }

    /// Add a top-level key to the commit's `commitInfo` (a pipeline's lineage).
    pub fn commit_info(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.commit_info.push((key.into(), value));
        self
    }

    /// How data files are read: requests in flight, the byte budget, whole-file reads
    /// of small files ([`IoSettings`]; the defaults suit S3).
    pub fn io(mut self, settings: IoSettings) -> Self {
        self.io = settings;
        self
    }

    /// How often, and for how long, a merge that lost a race plans again (default
    /// [`RetrySettings::default`]).
    pub fn retry(mut self, settings: RetrySettings) -> Self {
        self.retry = settings;
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
        let unread = self.source.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let source = match (&self.prepared, unread) {
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
        self.io.validate().map_err(Error::invalid)?;
        self.retry.validate().map_err(Error::invalid)?;
        // One limiter for every attempt: the report counts all of the merge's reads.
        let limiter = IoLimiter::new(&self.io);
        let mut budget = RetryBudget::new(&self.retry);
        loop {
            let retries = budget.retries();
            let read_version = self.table.version();
            // Checked on every attempt: a racing loader may have committed the batch.
            if self.table.app_transactions_done(&self.app_transactions).await? {
                tracing::info!(apps = ?self.app_transactions, "merge batch already committed; nothing to do");
                report.replayed = true;
                report.retries = retries;
                return Ok(report);
            }
            let prepare_started = Instant::now();
            let (source, compiled) = self.prepare()?;
            let job = Arc::new(MergeJob {
                table: self.table.clone(),
                store: Arc::new(BoundedStore::new(self.table.object_store(), limiter.clone())),
                io: self.io.clone(),
                source,
                compiled,
                target_file_size: self.table.target_file_size()?,
                deletion_vectors: features::deletion_vectors_enabled(self.table.state()?),
                new_rows: Default::default(),
                feed: ChangeFeed::for_table(self.table)?,
            });
            let prepare_ms = prepare_started.elapsed().as_millis() as u64;
            let attempt =
                if job.source.rows.is_spilled() { self.attempt_in_ranges(job).await } else { self.attempt(job).await };
            match attempt {
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    if !budget.retry().await {
                        let _ = self.table.refresh().await;
                        let needed = Default::default();
                        return Err(conflict::gave_up(self.table, "merge", &budget, read_version, &needed, &e).await);
                    }
                    let retries = budget.retries();
                    tracing::info!(retries, error = %e, "merge lost a race; planning again on the newest version");
                    self.table.refresh().await?;
                }
                Err(e) => return Err(e),
                Ok(mut report) => {
                    report.phases.prepare_ms = prepare_ms;
                    report.retries = retries;
                    report.io = limiter.report();
                    report.duration_ms = started.elapsed().as_millis() as u64;
                    return Ok(report);
                }
            }
        }
    }
}
