//! Appends and overwrites.
//!
//! A *write* turns a stream of record batches into data files ([`crate::write::sink`]) and
//! commits them in one Delta commit: `add` actions for the new files, `remove`
//! actions for the files an overwrite replaces, and a `metaData` action when the
//! table is created or its schema grows. Readers see all of it or none of it.
//!
//! - **Append** adds files. Concurrent appends never conflict with each other.
//! - **Overwrite** replaces every file, or with `replace_where` only the files whose
//!   partition values match the predicate; every written row must match it too. If
//!   another writer commits first, the overwrite is re-planned on the new version
//!   (the files to remove are recomputed) and retried, a bounded number of times.
//!
//! ```no_run
//! # async fn example(batches: Vec<deltalake::arrow::array::RecordBatch>) -> sediment::Result<()> {
//! use sediment::{Table, WriteOptions};
//! let mut table = Table::open_or_new("/data/bronze/events", Default::default()).await?;
//! let report = table.write(batches, WriteOptions::append().partition_by(["date"])).await?;
//! println!("committed version {:?} with {} files", report.version, report.files_added);
//! # Ok(()) }
//! ```

use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{Action, Add, MetadataExt, StructType, Transaction, new_metadata};
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::{Stream, StreamExt, stream};
use tracing::instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::read::predicate::Predicate;
use crate::table::Table;
use crate::table::commit::{CommitExtra, CommitRequest, commit};
use crate::table::conflict::{self, RetryBudget, RetrySettings};
use crate::table::features;
use crate::table::schema::SchemaMode;
use crate::write::sink::{DEFAULT_TARGET_FILE_SIZE, FileSink};

/// Append to or overwrite a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Add the rows to the table.
    #[default]
    Append,
    /// Replace the table's rows (or those of the partitions matching `replace_where`).
    Overwrite,
}

/// How to write: mode, partitioning of a new table, schema evolution, file size.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Append or overwrite.
    pub mode: WriteMode,
    /// Partition columns of a new table; for an existing table, if given, must match.
    pub partition_by: Vec<String>,
    /// With [`WriteMode::Overwrite`]: replace only files whose partition values match.
    pub replace_where: Option<String>,
    /// Refuse (strict) or add (merge) columns the table does not have.
    pub schema_mode: SchemaMode,
    /// Files are cut at about this many bytes (default 128 MiB).
    pub target_file_size: u64,
    /// Commits delta-rs rebases an append over (other writers' appends) before the
    /// race counts as lost.
    pub max_retries: usize,
    /// How often, and for how long, a write that lost a race (an overwrite whose
    /// files changed, a table created concurrently) plans again.
    pub retry: RetrySettings,
    /// Exactly-once: application ids and the version of the batch being written for
    /// each (a write whose every one is recorded already does nothing).
    pub app_transactions: Vec<(String, i64)>,
    /// More top-level `commitInfo` keys (a pipeline's lineage).
    pub commit_info: Vec<(String, serde_json::Value)>,
    /// Commit even an append that wrote no file (creating the table from the batches'
    /// schema when it does not exist): how a pipeline run that has nothing to add
    /// still records the source versions it consumed (`app_transactions`).
    pub commit_empty: bool,
    /// Table properties of a new table (`delta.targetFileSize`, `delta.appendOnly`,
    /// `delta.enableDeletionVectors`, user keys); ignored for an existing table.
    /// `delta.enableDeletionVectors = true` creates the table on protocol 3/7 with the
    /// `deletionVectors` feature, which merges then use instead of rewriting files;
    /// `delta.enableChangeDataFeed = true` on writer version 4 (or with the
    /// `changeDataFeed` feature on 7), so changes write the change data feed.
    pub table_properties: Vec<(String, String)>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            mode: WriteMode::Append,
            partition_by: Vec::new(),
            replace_where: None,
            schema_mode: SchemaMode::Strict,
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            max_retries: 15,
            retry: RetrySettings::default(),
            app_transactions: Vec::new(),
            commit_info: Vec::new(),
            commit_empty: false,
            table_properties: Vec::new(),
        }
    }
}

impl WriteOptions {
    /// Options for an append.
    pub fn append() -> Self {
        Self::default()
    }

    /// Set a table property of a new table (see [`WriteOptions::table_properties`]).
    pub fn table_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.table_properties.push((key.into(), value.into()));
        self
    }

    /// Options for a full overwrite.
    pub fn overwrite() -> Self {
        Self { mode: WriteMode::Overwrite, ..Self::default() }
    }

    /// Overwrite only the partitions matching `predicate` (a SQL boolean expression
    /// over partition columns).
    pub fn replace_where(mut self, predicate: impl Into<String>) -> Self {
        self.mode = WriteMode::Overwrite;
        self.replace_where = Some(predicate.into());
        self
    }

    /// Partition a new table by these columns.
    pub fn partition_by<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.partition_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Set the schema mode.
    pub fn schema_mode(mut self, mode: SchemaMode) -> Self {
        self.schema_mode = mode;
        self
    }

    /// Set the target file size in bytes.
    pub fn target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = bytes;
        self
    }

    /// Record application `app`'s batch `version` in the commit (see
    /// [`WriteOptions::app_transactions`]).
    pub fn app_transaction(mut self, app: impl Into<String>, version: i64) -> Self {
        self.app_transactions.push((app.into(), version));
        self
    }
}

/// What a write did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    /// The version committed (`None` when there was nothing to commit).
    pub version: Option<u64>,
    /// Whether this write created the table.
    pub created: bool,
    /// Data files added.
    pub files_added: usize,
    /// Data files removed (overwrite).
    pub files_removed: usize,
    /// Rows written.
    pub rows_written: u64,
    /// Bytes of the files added.
    pub bytes_written: u64,
    /// Whether the schema grew.
    pub schema_evolved: bool,
    /// Times the commit was re-planned after another writer committed first.
    pub retries: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl Table {
    /// Write `batches` to the table (creating it when it does not exist).
    pub async fn write(
        &mut self,
        batches: impl IntoIterator<Item = RecordBatch>,
        options: WriteOptions,
    ) -> Result<WriteReport> {
        let batches: Vec<Result<RecordBatch>> = batches.into_iter().map(Ok).collect();
        self.write_stream(stream::iter(batches), options).await
    }

    /// Write a stream of batches; files are written as the stream is read, so memory
    /// stays bounded by the open files' buffers, not by the stream.
    ///
    /// If the stream yields an error, nothing is committed and the files written so
    /// far are deleted.
    #[instrument(skip_all, fields(table = %self.uri(), mode = ?options.mode))]
    pub async fn write_stream(
        &mut self,
        batches: impl Stream<Item = Result<RecordBatch>> + Unpin,
        options: WriteOptions,
    ) -> Result<WriteReport> {
        let started = Instant::now();
        if self.already_committed(&options).await? {
            return Ok(WriteReport { duration_ms: started.elapsed().as_millis() as u64, ..Default::default() });
        }
        let mut batches = batches.peekable();
        let first_schema = match std::pin::Pin::new(&mut batches).peek().await {
            Some(Ok(batch)) => Some(batch.schema()),
            Some(Err(_)) => {
                return Err(batches
                    .next()
                    .await
                    .and_then(Result::err)
                    .unwrap_or_else(|| Error::internal("stream error vanished")));
            }
            None => None,
        };
        let mut job = self.begin_write(first_schema, options)?;
        while let Some(batch) = batches.next().await {
            let written = match batch {
                Ok(batch) => job.write(&batch).await.map_err(Error::from),
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                job.abort(self).await;
                return Err(e);
            }
        }
        let mut report = self.commit_job(job).await?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Whether `options` names an application transaction already committed.
    pub(crate) async fn already_committed(&self, options: &WriteOptions) -> Result<bool> {
        let done = self.app_transactions_done(&options.app_transactions).await?;
        if done {
            tracing::info!(apps = ?options.app_transactions, "batch already committed; nothing to do");
        }
        Ok(done)
    }

    /// Check the table and options and open a sink. `first_schema` is the schema of the
    /// first batch, needed when the table does not exist yet.
    pub(crate) fn begin_write(&self, first_schema: Option<SchemaRef>, mut options: WriteOptions) -> Result<WriteJob> {
        let created = !self.exists();
        if created {
            for (key, value) in self.new_table_properties() {
                if !options.table_properties.iter().any(|(k, _)| k == key) {
                    options.table_properties.push((key.clone(), value.clone()));
                }
            }
        }
        let (schema, partition_columns) = if created {
            let Some(first) = first_schema else {
                return Err(Error::invalid(format!(
                    "cannot create table {} from no data: no batch to take the schema from",
                    self.uri()
                )));
            };
            (normalize_new_schema(&first), options.partition_by.clone())
        } else {
            let state = self.state()?;
            features::check_writable(self.uri(), state)?;
            if options.mode == WriteMode::Overwrite && features::is_append_only(state) {
                return Err(Error::invalid(format!(
                    "table {} is append-only (delta.appendOnly = true); it cannot be overwritten",
                    self.uri()
                )));
            }
            let existing = self.partition_columns()?;
            if !options.partition_by.is_empty() && options.partition_by != existing {
                return Err(Error::invalid(format!(
                    "table {} is partitioned by [{}], not [{}]",
                    self.uri(),
                    existing.join(", "),
                    options.partition_by.join(", ")
                )));
            }
            (self.arrow_schema()?, existing)
        };
        let replace = match (&options.replace_where, options.mode) {
            (Some(_), WriteMode::Append) => return Err(Error::invalid("replace_where needs overwrite mode")),
            (Some(sql), WriteMode::Overwrite) => {
                let predicate = Predicate::parse(sql, &schema)?;
                if !predicate.only_mentions(&partition_columns) {
                    return Err(Error::invalid(format!(
                        "replace_where {sql:?} may only mention partition columns ({})",
                        partition_columns.join(", ")
                    )));
                }
                Some(predicate)
            }
            _ => None,
        };
        let mut sink =
            FileSink::new(self, schema, partition_columns.clone(), options.schema_mode, options.target_file_size)?;
        if created {
            // A new table's constraints come with its first commit: its rows are checked too.
            let constraints =
                crate::write::constraints::from_properties(options.table_properties.iter().map(|(k, v)| (k, v)));
            sink.check_constraints(self.uri(), &constraints)?;
        }
        Ok(WriteJob { sink, options, partition_columns, replace, created })
    }

    /// Close the job's files and commit them.
    pub(crate) async fn commit_job(&mut self, mut job: WriteJob) -> Result<WriteReport> {
        let adds = match job.sink.finish().await {
            Ok(adds) => adds,
            Err(e) => {
                job.abort(self).await;
                return Err(e);
            }
        };
        let mut report = WriteReport {
            created: job.created,
            files_added: adds.len(),
            rows_written: job.sink.rows(),
            bytes_written: adds.iter().map(|a| a.size.max(0) as u64).sum(),
            schema_evolved: job.sink.schema_evolved(),
            ..Default::default()
        };
        if adds.is_empty() && job.options.mode == WriteMode::Append && !job.options.commit_empty {
            report.created = false;
            return Ok(report);
        }
        let plan = CommitPlan {
            schema: job.sink.schema().clone(),
            partition_columns: &job.partition_columns,
            options: &job.options,
            replace: job.replace.as_ref(),
            constraints_checked: job.sink.constraints_checked(),
        };
        let result = self.commit_write(&adds, &plan, &mut report).await;
        match result {
            Ok(version) => {
                report.version = Some(version);
                Ok(report)
            }
            Err(e) => {
                FileSink::abort(self, &adds).await;
                Err(e)
            }
        }
    }

    async fn commit_write(&mut self, adds: &[Add], plan: &CommitPlan<'_>, report: &mut WriteReport) -> Result<u64> {
        let CommitPlan { schema, partition_columns, options, replace, constraints_checked } = plan;
        let (partition_columns, replace) = (*partition_columns, *replace);
        options.retry.validate().map_err(Error::invalid)?;
        let mut budget = RetryBudget::new(&options.retry);
        loop {
            let read_version = self.version();
            if self.exists() {
                // The rows were checked against the constraints the sink saw; a constraint
                // added since (to the version this commit is built on) was not.
                crate::write::constraints::still_checked(self.uri(), constraints_checked, self.state()?)?;
            }
            let mut actions: Vec<Action> = Vec::new();
            let mut removed = 0;
            if !self.exists() {
                let kernel_schema: StructType = schema.as_ref().try_into_kernel()?;
                let protocol = features::protocol_for_new_table(&options.table_properties);
                let protocol: deltalake::kernel::Protocol = serde_json::from_value(protocol)
                    .map_err(|e| Error::internal(format!("building protocol action: {e}")))?;
                actions.push(Action::Protocol(protocol));
                actions.push(Action::Metadata(new_metadata(
                    &kernel_schema,
                    partition_columns,
                    options.table_properties.clone(),
                )?));
            } else {
                if report.schema_evolved {
                    let kernel_schema: StructType = schema.as_ref().try_into_kernel()?;
                    let metadata = self.state()?.metadata().clone().with_schema(&kernel_schema)?;
                    actions.push(Action::Metadata(metadata));
                }
                if options.mode == WriteMode::Overwrite {
                    let state = self.state()?;
                    let matching = match replace {
                        Some(predicate) => {
                            let files = self.files()?;
                            Predicate::match_partitions(
                                predicate.expr(),
                                &files,
                                &self.arrow_schema()?,
                                partition_columns,
                            )?
                        }
                        None => vec![true; state.log_data().num_files()],
                    };
                    for (file, matches) in state.log_data().iter().zip(matching) {
                        if matches {
                            actions.push(Action::Remove(file.remove_action(true)));
                            removed += 1;
                        }
                    }
                }
            }
            actions.extend(adds.iter().cloned().map(Action::Add));
            let operation = DeltaOperation::Write {
                mode: match options.mode {
                    WriteMode::Append => SaveMode::Append,
                    WriteMode::Overwrite => SaveMode::Overwrite,
                },
                partition_by: (!partition_columns.is_empty()).then(|| partition_columns.to_vec()),
                predicate: replace.map(|p| p.sql().to_string()),
            };
            let request = CommitRequest {
                operation,
                metrics: vec![
                    ("numFiles", adds.len() as u64),
                    ("numOutputRows", report.rows_written),
                    ("numOutputBytes", report.bytes_written),
                    ("numRemovedFiles", removed as u64),
                ],
                blind_append: options.mode == WriteMode::Append && !report.schema_evolved && self.exists(),
                max_retries: if options.mode == WriteMode::Append { options.max_retries } else { 0 },
                app_transactions: options
                    .app_transactions
                    .iter()
                    .map(|(app, v)| Transaction::new(app.clone(), *v))
                    .collect(),
                extra: CommitExtra { info: options.commit_info.clone(), ..Default::default() },
            };
            match commit(self, actions, request).await {
                Ok(version) => {
                    report.files_removed = removed;
                    return Ok(version);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    // Another writer won the race (to create the table, or to change the
                    // files an overwrite replaces): re-plan on the newest version.
                    if !budget.retry().await {
                        let _ = self.refresh().await;
                        let needed = Default::default();
                        return Err(conflict::gave_up(self, "write", &budget, read_version, &needed, &e).await);
                    }
                    report.retries = budget.retries();
                    let attempt = budget.attempts();
                    tracing::info!(attempt, error = %e, "commit conflict; re-planning on the latest version");
                    self.refresh().await?;
                    if self.exists() {
                        features::check_writable(self.uri(), self.state()?)?;
                        let current = self.arrow_schema()?;
                        if current.fields() != schema.fields() && !report.schema_evolved {
                            return Err(Error::new(
                                ErrorKind::Conflict,
                                format!(
                                    "table {} changed its schema while this write ran; nothing was committed",
                                    self.uri()
                                ),
                            ));
                        }
                        if self.partition_columns()? != partition_columns {
                            return Err(Error::new(
                                ErrorKind::Conflict,
                                format!(
                                    "table {} was created concurrently with other partition columns; nothing was committed",
                                    self.uri()
                                ),
                            ));
                        }
                    }
                }
                Err(e) => return Err(e.context(format!("table {}", self.uri()))),
            }
        }
    }

    /// The last batch version committed by application `app` (Delta `txn` action).
    pub async fn app_transaction_version(&self, app: &str) -> Result<Option<i64>> {
        if !self.exists() {
            return Ok(None);
        }
        Ok(self.state()?.transaction_version(&self.delta().log_store(), app).await?)
    }

    /// Whether every one of `apps` (application, batch version) is recorded at that
    /// version or later; `false` for none.
    pub async fn app_transactions_done(&self, apps: &[(String, i64)]) -> Result<bool> {
        if apps.is_empty() {
            return Ok(false);
        }
        for (app, version) in apps {
            match self.app_transaction_version(app).await? {
                Some(done) if done >= *version => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Why a batch could not be added to a [`WriteJob`].
#[derive(Debug)]
pub(crate) enum BatchError {
    /// The batch does not fit (schema, `replace_where`); the job is unchanged.
    Refused(Error),
    /// Storage failed while writing; the job's open files are lost.
    Failed(Error),
}

impl From<BatchError> for Error {
    fn from(err: BatchError) -> Self {
        match err {
            BatchError::Refused(e) | BatchError::Failed(e) => e,
        }
    }
}

/// What a write's commit needs of its job (not the sink, which is not `Sync`).
struct CommitPlan<'a> {
    schema: SchemaRef,
    partition_columns: &'a [String],
    options: &'a WriteOptions,
    replace: Option<&'a Predicate>,
    /// The CHECK constraints the sink checked every row against.
    constraints_checked: Vec<crate::write::Constraint>,
}

/// One write in progress: an open sink and what its commit needs.
pub(crate) struct WriteJob {
    sink: FileSink,
    options: WriteOptions,
    partition_columns: Vec<String>,
    replace: Option<Predicate>,
    created: bool,
}

impl WriteJob {
    /// Write one batch (checked against `replace_where` for partition overwrites).
    ///
    /// A batch that does not fit is [`BatchError::Refused`] and leaves the job as it
    /// was; a failure while writing is [`BatchError::Failed`] and ruins the job.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> std::result::Result<(), BatchError> {
        if let Some(predicate) = &self.replace {
            check_rows_match(predicate, batch).map_err(BatchError::Refused)?;
        }
        let fitted = self.sink.fit(batch).map_err(BatchError::Refused)?;
        self.sink.write_fitted(fitted).await.map_err(BatchError::Failed)
    }

    /// Rows written so far.
    pub(crate) fn rows(&self) -> u64 {
        self.sink.rows()
    }

    /// Approximate bytes written so far.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.sink.buffered_bytes()
    }

    /// Give up: delete every file written (best effort); nothing is committed.
    pub(crate) async fn abort(mut self, table: &Table) {
        let adds = self.sink.finish().await.unwrap_or_default();
        FileSink::abort(table, &adds).await;
    }
}

fn check_rows_match(predicate: &Predicate, batch: &RecordBatch) -> Result<()> {
    let mask = predicate.matches(batch)?;
    let misses = mask.len() - mask.true_count();
    if misses > 0 {
        return Err(Error::invalid(format!(
            "{misses} row(s) do not match replace_where {:?}; an overwrite of matching partitions may only write matching rows",
            predicate.sql()
        )));
    }
    Ok(())
}

/// The schema a new table gets from its first batch: nanosecond timestamps become
/// microseconds (Delta's unit) and field metadata is dropped.
fn normalize_new_schema(schema: &SchemaRef) -> SchemaRef {
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = match f.data_type() {
                DataType::Timestamp(_, tz) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into()))
                }
                DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
                DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
                DataType::Date64 => DataType::Date32,
                other => other.clone(),
            };
            Field::new(f.name(), data_type, f.is_nullable())
        })
        .collect();
    std::sync::Arc::new(Schema::new(fields))
}
