//! Deletes and updates that rewrite only what they must.
//!
//! `DELETE WHERE p` and `UPDATE SET c = e, ... WHERE p` are planned like a scan:
//! partition pruning and statistics skipping pick the *candidate* files before
//! anything is read. Then:
//! - a delete whose predicate mentions only partition columns removes the candidates
//!   whole, without reading them (partition matching is exact);
//! - otherwise each candidate is read alone (deletion vectors applied) and streamed
//!   into a new file without its matching rows (delete) or with the assignments
//!   applied to them (update), and the old file is removed. A candidate with no
//!   matching row is left untouched; one whose rows all match a delete is removed
//!   without a new file. An update of a partition column moves rows to their new
//!   partition.
//!
//! On tables that enable deletion vectors, a candidate without a vector is not
//! rewritten: its matching rows' positions are marked deleted (and, for an update,
//! their new versions written to a new file).
//!
//! Candidates are read several at once, each in a task of its own, through a
//! bounded store; memory holds their batches in flight, never the table. One commit
//! removes and adds everything, with the predicate as what it read: delta-rs rebases
//! it over commits that touched none of its files (appends, other partitions). If
//! another writer removed or changed a file it read, the change is planned again on
//! the newest version under the shared retry policy
//! ([`RetrySettings`](crate::RetrySettings)); the files it already rewrote or marked
//! that nobody touched keep their outcome (on tables without an active change data
//! feed), only the others are read again, and the result is as if it ran after that
//! writer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::ArrayRef;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::kernels::zip::zip;
use deltalake::arrow::compute::{cast, filter_record_batch, not};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use sediment_compactor::reader::StoreFileReader;
use serde::Serialize;
use tracing::instrument;

use crate::change::feed::{ChangeFeed, ChangeType, FeedFiles};
use crate::change::tasks::{default_files_in_flight, file_tasks};
use crate::error::{Error, ErrorKind, Result};
use crate::maintain::tiering::{StorageClass, archive, placement};
use crate::read::predicate::Predicate;
use crate::table::Table;
use crate::table::commit::{CommitRequest, commit, remove_action};
use crate::table::conflict::{RetryBudget, RetrySettings};
use crate::table::features;
use crate::table::schema::SchemaMode;
use crate::table::storage::{BoundedStore, IoLimiter, IoReport, IoSettings};
use crate::write::sink::FileSink;

/// Commits delta-rs rebases a change over (commits that touched none of its files)
/// before it gives the race back to Sediment's loop.
const REBASES: usize = 15;

/// What a delete did.
pub type DeleteReport = ChangeReport;
/// What an update did.
pub type UpdateReport = ChangeReport;

/// What a delete or an update did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangeReport {
    /// The version committed (`None` when no row matched).
    pub version: Option<u64>,
    /// Live files in the snapshot.
    pub files_considered: usize,
    /// Files skipped by partition pruning and statistics, never read.
    pub files_pruned: usize,
    /// Files read to find matching rows.
    pub files_read: usize,
    /// Files removed whole (a delete matched every row, or a partition-only predicate).
    pub files_removed: usize,
    /// Files rewritten without their matching rows, or with them updated.
    pub files_rewritten: usize,
    /// Files kept with a deletion vector marking their matching rows (tables with
    /// deletion vectors enabled).
    pub files_marked: usize,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Rows updated.
    pub rows_updated: u64,
    /// Rows copied unchanged into rewritten files.
    pub rows_copied: u64,
    /// Bytes of new files.
    pub bytes_written: u64,
    /// Times the change was planned again after losing a race.
    pub retries: usize,
    /// Files whose outcome an earlier attempt had already written and that nobody
    /// touched since: kept, not read again.
    pub files_reused: usize,
    /// Change-data files written (tables with the change data feed on).
    pub change_data_files: usize,
    /// Requests, bytes read and peak in flight of the candidate files' reads (the
    /// last attempt's).
    pub io: IoReport,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// One candidate file's fate.
#[derive(Clone)]
enum FileOutcome {
    Untouched,
    Removed {
        rows: u64,
    },
    Rewritten {
        adds: Vec<Add>,
        changed: u64,
        copied: u64,
    },
    /// The file stays with these positions marked deleted; `adds` hold the updated
    /// rows' new versions.
    Marked {
        /// Every deleted position: the earlier vector's and the `changed` new ones.
        positions: Vec<u64>,
        changed: u64,
        adds: Vec<Add>,
    },
}

/// The row-level change to apply.
enum RowChange {
    Delete,
    /// Columns and the expressions (over the old row) they are set to.
    Update(Vec<(String, Expr)>),
}

impl Table {
    /// Delete the rows matching `predicate` (a SQL boolean expression).
    #[instrument(skip_all, fields(table = %self.uri(), predicate))]
    pub async fn delete(&mut self, predicate: &str) -> Result<DeleteReport> {
        self.change_rows(predicate, &[], &ChangeOptions::default()).await
    }

    /// [`Self::delete`] with options (how often to plan again after lost races).
    #[instrument(skip_all, fields(table = %self.uri(), predicate))]
    pub async fn delete_with(&mut self, predicate: &str, options: &ChangeOptions) -> Result<DeleteReport> {
        self.change_rows(predicate, &[], options).await
    }

    /// Set columns of the rows matching `predicate`: each assignment is a column and
    /// a SQL expression over the row's old values (`("amount", "amount * 2")`).
    #[instrument(skip_all, fields(table = %self.uri(), predicate))]
    pub async fn update(&mut self, predicate: &str, assignments: &[(&str, &str)]) -> Result<UpdateReport> {
        self.update_with(predicate, assignments, &ChangeOptions::default()).await
    }

    /// [`Self::update`] with options (how often to plan again after lost races).
    #[instrument(skip_all, fields(table = %self.uri(), predicate))]
    pub async fn update_with(
        &mut self,
        predicate: &str,
        assignments: &[(&str, &str)],
        options: &ChangeOptions,
    ) -> Result<UpdateReport> {
        if assignments.is_empty() {
            return Err(Error::invalid("an update needs at least one assignment (column = expression)"));
        }
        self.change_rows(predicate, assignments, options).await
    }

    /// A delete (no assignments) or an update, planned again after lost races. A
    /// race lost to a commit that touched none of its files is rebased by delta-rs's
    /// conflict checker (its predicate says what it read); one lost to a commit that
    /// removed or changed a file it read plans again on the newest version, reading
    /// again only the files that changed (on tables without an active change data
    /// feed, whose change rows are per operation).
    async fn change_rows(
        &mut self,
        predicate: &str,
        assignments: &[(&str, &str)],
        options: &ChangeOptions,
    ) -> Result<ChangeReport> {
        options.retry.validate().map_err(Error::invalid)?;
        let started = Instant::now();
        let mut budget = RetryBudget::new(&options.retry);
        let mut reuse = Reuse::default();
        let operation = if assignments.is_empty() { "delete" } else { "update" };
        loop {
            let read_version = self.version();
            let attempt = match self.parse_change(assignments) {
                Ok(change) => self.change_once(predicate, &change, &mut reuse).await,
                Err(e) => Err(e),
            };
            let mut attempt = match attempt {
                Ok(attempt) => attempt,
                Err(e) => {
                    reuse.abort(self).await;
                    return Err(e);
                }
            };
            attempt.report.retries = budget.retries();
            attempt.report.duration_ms = started.elapsed().as_millis() as u64;
            match attempt.version {
                Some(Err(e)) if e.kind() == ErrorKind::Conflict => {
                    if budget.retry().await {
                        let retries = budget.retries();
                        tracing::info!(retries, error = %e, "{operation} lost a race; planning again on the newest version");
                        let schema = self.arrow_schema().ok();
                        if let Err(e) = self.refresh().await {
                            reuse.abort(self).await;
                            return Err(e);
                        }
                        if self.arrow_schema().ok() != schema {
                            // Files written for the old schema are not reused.
                            reuse.abort(self).await;
                        }
                        continue;
                    }
                    // Refreshed to name the commit that won.
                    let _ = self.refresh().await;
                    let err =
                        crate::table::conflict::gave_up(self, operation, &budget, read_version, &attempt.needed, &e)
                            .await;
                    reuse.abort(self).await;
                    return Err(err);
                }
                Some(Err(e)) => {
                    reuse.abort(self).await;
                    return Err(e);
                }
                Some(Ok(version)) => {
                    reuse.abort(self).await;
                    attempt.report.version = Some(version);
                    return Ok(attempt.report);
                }
                None => {
                    reuse.abort(self).await;
                    return Ok(attempt.report);
                }
            }
        }
    }

    fn parse_change(&self, assignments: &[(&str, &str)]) -> Result<RowChange> {
        if assignments.is_empty() {
            return Ok(RowChange::Delete);
        }
        let schema = self.arrow_schema()?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let ctx = SessionContext::new();
        let mut parsed = Vec::new();
        for (column, sql) in assignments {
            if schema.field_with_name(column).is_err() {
                return Err(Error::invalid(format!("cannot set `{column}`: no such column in table {}", self.uri())));
            }
            let expr = ctx
                .parse_sql_expr(sql, &df_schema)
                .map_err(|e| Error::invalid(format!("invalid expression {sql:?} for `{column}`: {e}")))?;
            ctx.create_physical_expr(expr.clone(), &df_schema)
                .map_err(|e| Error::invalid(format!("invalid expression {sql:?} for `{column}`: {e}")))?;
            parsed.push((column.to_string(), expr));
        }
        Ok(RowChange::Update(parsed))
    }

    async fn change_once(&mut self, sql: &str, change: &RowChange, reuse: &mut Reuse) -> Result<ChangeAttempt> {
        let state = self.state()?;
        features::check_writable(self.uri(), state)?;
        if features::is_append_only(state) && matches!(change, RowChange::Delete) {
            return Err(Error::invalid(format!(
                "table {} is append-only (delta.appendOnly = true); rows cannot be deleted",
                self.uri()
            )));
        }
        let plan = self.plan_scan(Some(sql))?;
        let predicate = plan.predicate.clone().ok_or_else(|| Error::internal("a delete plan has a predicate"))?;
        let partition_columns = self.partition_columns()?;
        let mut report = DeleteReport {
            files_considered: plan.report.files_in_snapshot,
            files_pruned: plan.report.files_in_snapshot - plan.files.len(),
            ..Default::default()
        };
        // Whole files removed need no change data (readers take their rows from the
        // removes); rows changed inside files do, on tables whose feed is active. A
        // file with a deletion vector is read even then on such tables: readers differ
        // on whether they apply a removed file's vector (delta-rs 1.x does not), so
        // its live rows go in the change data as deletes.
        let feed = ChangeFeed::for_table(self)?;
        let whole_files = matches!(change, RowChange::Delete)
            && predicate.only_mentions(&partition_columns)
            && (feed.is_none() || plan.files.iter().all(|f| f.deletion_vector.is_none()));
        let feed = if whole_files { None } else { feed };
        let outcomes: Vec<Result<FileOutcome>> = if whole_files {
            plan.files.iter().map(|add| Ok(FileOutcome::Removed { rows: add_rows(add) })).collect()
        } else {
            // Files an earlier attempt already changed and nobody touched since keep
            // that outcome (unless the table's constraints changed since: its rows were
            // checked against the old ones); the others are read.
            let constraints = crate::write::constraints::constraints_of(self.state()?);
            if reuse.constraints != constraints {
                reuse.abort(self).await;
                reuse.constraints = constraints;
            }
            let mut outcomes: Vec<Option<Result<FileOutcome>>> =
                plan.files.iter().map(|add| reuse.take(add).map(Ok)).collect();
            report.files_reused = outcomes.iter().filter(|o| o.is_some()).count();
            reuse.abort(self).await;
            let to_read: Vec<Add> =
                plan.files.iter().zip(&outcomes).filter(|(_, o)| o.is_none()).map(|(a, _)| a.clone()).collect();
            report.files_read = to_read.len();
            let operation = if matches!(change, RowChange::Delete) { "delete from" } else { "update" };
            crate::maintain::tiering::archive::ensure_readable(self, operation, &to_read).await?;
            let mark = features::deletion_vectors_enabled(state);
            let mut read =
                self.change_files(&to_read, &predicate, change, mark, feed.clone(), &mut report).await?.into_iter();
            for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                *outcome = read.next();
            }
            outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Err(Error::internal("a candidate without an outcome"))))
                .collect()
        };
        // Kept for the next attempt if this one loses a race (not with a feed: its
        // change rows belong to the attempt).
        let keep: Vec<(Add, FileOutcome)> = if feed.is_none() && !whole_files {
            plan.files.iter().zip(&outcomes).filter_map(|(a, o)| Some((a.clone(), o.as_ref().ok()?.clone()))).collect()
        } else {
            Vec::new()
        };
        let mut needed: HashSet<String> = HashSet::new();
        let mut actions: Vec<Action> = Vec::new();
        let mut written: Vec<Add> = Vec::new();
        // The class each of `written` goes into: its source file's, when that is cold.
        let mut classes: Vec<Option<StorageClass>> = Vec::new();
        let mut marked: Vec<(Add, Vec<u64>)> = Vec::new();
        let mut failure = None;
        for (add, outcome) in plan.files.iter().zip(outcomes) {
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            match outcome {
                FileOutcome::Untouched => {}
                FileOutcome::Removed { rows } => {
                    needed.insert(add.path.clone());
                    report.files_removed += 1;
                    report.rows_deleted += rows;
                    actions.push(Action::Remove(remove_action(add)));
                }
                FileOutcome::Rewritten { adds, changed, copied } => {
                    needed.insert(add.path.clone());
                    report.files_rewritten += 1;
                    match change {
                        RowChange::Delete => report.rows_deleted += changed,
                        RowChange::Update(_) => report.rows_updated += changed,
                    }
                    report.rows_copied += copied;
                    report.bytes_written += adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
                    actions.push(Action::Remove(remove_action(add)));
                    let class = Some(archive::class_of(add)).filter(|c| c.is_cold());
                    classes.extend(std::iter::repeat_n(class, adds.len()));
                    written.extend(adds);
                }
                FileOutcome::Marked { positions, changed, adds } => {
                    needed.insert(add.path.clone());
                    report.files_marked += 1;
                    match change {
                        RowChange::Delete => report.rows_deleted += changed,
                        RowChange::Update(_) => report.rows_updated += changed,
                    }
                    report.bytes_written += adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
                    let class = Some(archive::class_of(add)).filter(|c| c.is_cold());
                    classes.extend(std::iter::repeat_n(class, adds.len()));
                    written.extend(adds);
                    marked.push((add.clone(), positions));
                }
            }
        }
        // New versions of cold files go into their class (nothing to do without cold files).
        if failure.is_none()
            && let Err(e) = placement::place(self, &mut written, &classes).await
        {
            failure = Some(e);
        }
        // A file that could not be read fails the change; what the others wrote is
        // deleted (every task has finished, so nothing is still writing).
        let give_up = async |e: Error| {
            FileSink::abort(self, &written).await;
            if let Some(feed) = &feed {
                feed.abort().await;
            }
            e
        };
        if let Some(e) = failure {
            return Err(give_up(e).await);
        }
        if actions.is_empty() && marked.is_empty() {
            if let Some(feed) = &feed {
                feed.abort().await;
            }
            return Ok(ChangeAttempt { report, version: None, needed });
        }
        let marked = match crate::change::deletion_vectors::write(self, marked).await {
            Ok(marked) => marked,
            Err(e) => return Err(give_up(e).await),
        };
        let changes = match &feed {
            Some(feed) => match feed.finish().await {
                Ok(changes) => changes,
                Err(e) => {
                    marked.discard(self).await;
                    return Err(give_up(e).await);
                }
            },
            None => FeedFiles::default(),
        };
        report.change_data_files = changes.actions.len();
        report.bytes_written += marked.bytes() + changes.bytes();
        actions.extend(marked.actions.iter().cloned());
        actions.extend(written.iter().cloned().map(Action::Add));
        actions.extend(changes.actions.iter().cloned().map(Action::Cdc));
        let operation = match change {
            RowChange::Delete => DeltaOperation::Delete { predicate: Some(sql.to_string()) },
            RowChange::Update(_) => DeltaOperation::Update { predicate: Some(sql.to_string()) },
        };
        let request = CommitRequest {
            operation,
            metrics: vec![
                ("numRemovedFiles", (report.files_removed + report.files_rewritten) as u64),
                ("numAddedFiles", written.len() as u64),
                ("numDeletedRows", report.rows_deleted),
                ("numUpdatedRows", report.rows_updated),
                ("numCopiedRows", report.rows_copied),
            ],
            blind_append: false,
            // delta-rs rebases over commits that touched none of the files this one
            // read (its predicate says which): concurrent appends, other partitions.
            max_retries: REBASES,
            app_transactions: Vec::new(),
            extra: Default::default(),
        };
        let result = commit(self, actions, request).await;
        if let Err(e) = &result {
            if e.kind() == ErrorKind::Conflict && !keep.is_empty() {
                reuse.keep(keep);
            } else {
                FileSink::abort(self, &written).await;
            }
            marked.discard(self).await;
            changes.discard(self).await;
        }
        Ok(ChangeAttempt { report, version: Some(result), needed })
    }

    /// Apply the change to every candidate, several files at once through a bounded
    /// store; the outcomes in the candidates' order. Every task has finished when
    /// this returns, failed ones included.
    async fn change_files(
        &self,
        files: &[Add],
        predicate: &Predicate,
        change: &RowChange,
        mark: bool,
        feed: Option<Arc<ChangeFeed>>,
        report: &mut ChangeReport,
    ) -> Result<Vec<Result<FileOutcome>>> {
        let io = IoSettings::default();
        let limiter = IoLimiter::new(&io);
        let plain = crate::read::scan::plain_schema(&self.arrow_schema()?);
        let job = Arc::new(FileChange {
            table: self.clone(),
            store: Arc::new(BoundedStore::new(self.object_store(), limiter.clone())),
            io,
            predicate: Predicate::physical(predicate.expr(), &plain)?,
            assignments: change.compile(&plain)?,
            plain,
            mark,
            feed,
            target_file_size: self.target_file_size()?,
        });
        let labelled: Vec<(usize, Add)> = files.iter().cloned().enumerate().collect();
        let mut outcomes: Vec<(usize, Result<FileOutcome>)> =
            file_tasks(labelled, default_files_in_flight(), |add| job.clone().apply(add)).collect().await;
        outcomes.sort_by_key(|(i, _)| *i);
        report.io = limiter.report();
        Ok(outcomes.into_iter().map(|(_, outcome)| outcome).collect())
    }
}

/// What every file task of one delete or update shares: the table, the bounded store
/// the files are read through, and the predicate and assignments compiled once.
struct FileChange {
    table: Table,
    store: Arc<dyn deltalake::ObjectStore>,
    io: IoSettings,
    /// The table's schema, dictionaries decoded (the types rows are matched in).
    plain: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
    /// Columns and their compiled expressions (empty for a delete).
    assignments: Vec<(String, Arc<dyn PhysicalExpr>)>,
    /// Mark matching rows in a deletion vector instead of rewriting the file.
    mark: bool,
    /// Where the changed rows go, on tables whose change data feed is active.
    feed: Option<Arc<ChangeFeed>>,
    target_file_size: u64,
}

impl FileChange {
    fn is_delete(&self) -> bool {
        self.assignments.is_empty()
    }

    /// Read one candidate (rows an earlier vector deleted skipped) and either write
    /// it again with the change applied to its matching rows (copy-on-write), or mark
    /// their positions and write only updated rows' new versions (`mark`).
    async fn apply(self: Arc<Self>, add: Add) -> Result<FileOutcome> {
        self.apply_to(&add)
            .await
            .map_err(|e| e.context(format!("{} rows of {}", if self.mark { "marking" } else { "rewriting" }, add.path)))
    }

    async fn apply_to(&self, add: &Add) -> Result<FileOutcome> {
        use deltalake::parquet::arrow::ParquetRecordBatchStreamBuilder;
        use futures::TryStreamExt;
        let path = deltalake::Path::from_url_path(&add.path)
            .map_err(|e| Error::new(ErrorKind::Data, format!("bad data file path {}: {e}", add.path)))?;
        let schema = self.table.arrow_schema()?;
        let mut sink = FileSink::new(
            &self.table,
            schema,
            self.table.partition_columns()?,
            SchemaMode::Strict,
            self.target_file_size,
        )?;
        sink.expect_rows(add.stats.as_deref().and_then(crate::table::log_files::num_records));
        // Rows an earlier vector deleted are skipped; a new vector keeps them deleted.
        let deleted = crate::change::deletion_vectors::deleted_positions(&self.table, add).await?;
        let (mut positions, mut rows, mut changed, mut copied) = (Vec::new(), 0u64, 0u64, 0u64);
        let result: Result<()> = async {
            let reader = StoreFileReader::open(self.store.clone(), path, add.size.max(0) as u64, &self.io).await?;
            let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
            let (builder, live) = sediment_compactor::reader::skip_rows(builder, &deleted);
            let mut stream = builder.with_batch_size(8192).build()?;
            while let Some(batch) = stream.try_next().await? {
                let batch = crate::change::deletion_vectors::with_partition_values(&batch, add, &self.plain)?;
                let matches = Predicate::mask(&self.predicate, &batch)?;
                let hits = matches.true_count() as u64;
                if self.mark {
                    let physical = |i: usize| {
                        let logical = rows + i as u64;
                        live.as_ref().map_or(logical, |live| live[logical as usize])
                    };
                    positions.extend((0..matches.len()).filter(|i| matches.value(*i)).map(physical));
                }
                rows += batch.num_rows() as u64;
                changed += hits;
                copied += batch.num_rows() as u64 - hits;
                let updated = match self.is_delete() {
                    true => None,
                    false => Some(apply_assignments(&batch, &matches, &self.assignments)?),
                };
                if let Some(feed) = &self.feed
                    && hits > 0
                {
                    let before = filter_record_batch(&batch, &matches)?;
                    match &updated {
                        None => feed.write(&before, ChangeType::Delete).await?,
                        Some(updated) => {
                            feed.write(&before, ChangeType::UpdatePreimage).await?;
                            feed.write(&filter_record_batch(updated, &matches)?, ChangeType::UpdatePostimage).await?;
                        }
                    }
                }
                let out = match (updated, self.mark) {
                    (None, true) => continue,
                    (Some(updated), true) => filter_record_batch(&updated, &matches)?,
                    (None, false) => filter_record_batch(&batch, &not(&matches)?)?,
                    (Some(updated), false) => updated,
                };
                if out.num_rows() > 0 {
                    sink.write(&out).await?;
                }
            }
            Ok(())
        }
        .await;
        let adds = sink.close(&self.table, result).await?;
        if changed == 0 {
            FileSink::abort(&self.table, &adds).await;
            Ok(FileOutcome::Untouched)
        } else if copied == 0 && self.is_delete() {
            FileSink::abort(&self.table, &adds).await;
            Ok(FileOutcome::Removed { rows: changed })
        } else if self.mark {
            let positions = crate::change::deletion_vectors::union(&deleted, &positions);
            Ok(FileOutcome::Marked { positions, changed, adds })
        } else {
            Ok(FileOutcome::Rewritten { adds, changed, copied })
        }
    }
}

impl RowChange {
    /// The assignments compiled over `schema` (none for a delete).
    fn compile(&self, schema: &deltalake::arrow::datatypes::SchemaRef) -> Result<Vec<(String, Arc<dyn PhysicalExpr>)>> {
        match self {
            RowChange::Delete => Ok(Vec::new()),
            RowChange::Update(assignments) => assignments
                .iter()
                .map(|(column, expr)| Ok((column.clone(), Predicate::physical(expr, schema)?)))
                .collect(),
        }
    }
}

/// `batch` with each assigned column set to its expression where `matches` holds.
fn apply_assignments(
    batch: &RecordBatch,
    matches: &deltalake::arrow::array::BooleanArray,
    assignments: &[(String, Arc<dyn PhysicalExpr>)],
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (column, physical) in assignments {
        let index = schema.index_of(column)?;
        let field = schema.field(index);
        let value = physical.evaluate(batch)?.into_array(batch.num_rows())?;
        let value = cast(&value, field.data_type()).map_err(|e| {
            Error::invalid(format!(
                "cannot set `{column}` ({}) to a value of type {}: {e}",
                field.data_type(),
                value.data_type()
            ))
        })?;
        columns[index] = zip(matches, &value, &batch.column(index))?;
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Rows of a file removed whole: from its statistics, less its deletion vector.
fn add_rows(add: &Add) -> u64 {
    let rows = crate::table::commit::stored_rows(add).unwrap_or(0);
    let deleted = add.deletion_vector.as_ref().map_or(0, |dv| dv.cardinality.max(0) as u64);
    rows.saturating_sub(deleted)
}

struct ChangeAttempt {
    report: DeleteReport,
    /// `None`: nothing matched; else the commit's outcome.
    version: Option<Result<u64>>,
    /// The files the attempt removes or marks (named when it loses for good).
    needed: HashSet<String>,
}

/// Outcomes of files an attempt changed, kept across a lost race: a file still live
/// with the same deletion vector needs no second read. Their new files stay written
/// until they are committed or given up.
#[derive(Default)]
struct Reuse {
    outcomes: HashMap<String, (Option<deltalake::kernel::DeletionVectorDescriptor>, FileOutcome)>,
    /// The CHECK constraints the kept outcomes' rows were checked against.
    constraints: Vec<crate::write::Constraint>,
}

impl Reuse {
    /// The kept outcome of `add`, when it is the same file as then.
    fn take(&mut self, add: &Add) -> Option<FileOutcome> {
        match self.outcomes.remove(&add.path) {
            Some((vector, outcome)) if vector == add.deletion_vector => Some(outcome),
            Some((vector, outcome)) => {
                // Changed since: put back, to be deleted with the rest.
                self.outcomes.insert(add.path.clone(), (vector, outcome));
                None
            }
            None => None,
        }
    }

    fn keep(&mut self, outcomes: Vec<(Add, FileOutcome)>) {
        self.outcomes = outcomes.into_iter().map(|(add, o)| (add.path, (add.deletion_vector, o))).collect();
    }

    /// Delete the new files of every outcome not taken.
    async fn abort(&mut self, table: &Table) {
        let adds: Vec<Add> = self
            .outcomes
            .drain()
            .flat_map(|(_, (_, outcome))| match outcome {
                FileOutcome::Rewritten { adds, .. } | FileOutcome::Marked { adds, .. } => adds,
                _ => Vec::new(),
            })
            .collect();
        FileSink::abort(table, &adds).await;
    }
}

/// What a delete or update may change, besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct ChangeOptions {
    /// How often, and for how long, a change that lost a race plans again.
    pub retry: RetrySettings,
}
