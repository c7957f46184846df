//! The compaction executor: runs a [`CompactionPlan`] against a table and commits it.
//!
//! For each bin the executor streams the inputs one row group at a time (never whole
//! files), conforms old files to the current schema (columns added later are null),
//! and writes one zstd Parquet file with column statistics. With a clustering order
//! the bin's rows are held in memory to be sorted (a bin is at most the target size).
//!
//! - **Memory**: every bin reserves an estimate of its memory (three times its largest
//!   input, plus the writer's row-group buffer) from `memory_budget` before it
//!   starts; bins run in parallel up to `max_concurrent_bins` while the budget allows.
//! - **Commits**: finished bins are committed together, every `commit_every_bins`
//!   bins or `commit_every` of time, as `remove` (dataChange = false) of their inputs
//!   plus `add` of their outputs. A crash loses only bins not yet committed, and
//!   their files are never referenced.
//! - **Conflicts**: concurrent appends do not conflict, but every commit is made on the
//!   newest version the executor has checked (no rebase inside delta-rs, which would
//!   let two compactions of the same files both commit). When another writer removed
//!   an input of a bin (delete, merge, overwrite, another compaction) or marked more
//!   of its rows deleted (a new deletion vector on the same file), the commit is
//!   re-planned on the newest version: bins whose inputs are all still live with the
//!   deletion vectors they were read with are committed, the others are given up,
//!   their files deleted, and the report says so.
//! - **Errors**: a bin whose storage calls fail is retried with backoff
//!   (`max_bin_attempts`); a bin whose input cannot be read is given up with the file
//!   named, and the other bins go on.
//! - **Deletion vectors**: the deletes are applied while rewriting: an input's
//!   deletion vector is read first and its deleted rows are skipped (a parquet row
//!   selection), so the output holds only live rows and carries no vector.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::arrow::array::{ArrayRef, RecordBatch, UInt64Array, new_null_array};
use deltalake::arrow::compute::{SortColumn, cast, concat_batches, lexsort_to_indices, take_record_batch};
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Add, DeletionVectorDescriptor, Remove};
use deltalake::parquet::arrow::ParquetRecordBatchStreamBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::{info, instrument, warn};

use crate::error::{CompactionError, Result};
use crate::health::PartitionKey;
use crate::io::{BoundedStore, BytesPermit, EarlyFetches, IoLimiter, IoReport, IoSettings};
use crate::planner::{Bin, Clustering, CompactionPlan, PlannedFile};
use crate::reader::StoreFileReader;
use crate::retry::{RetryBudget, RetrySettings, describe, is_conflict};

/// How the executor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorSettings {
    /// Bins rewritten at the same time, at most.
    pub max_concurrent_bins: usize,
    /// Memory the bins in flight may reserve, in bytes.
    pub memory_budget: u64,
    /// Commit after this many finished bins.
    pub commit_every_bins: usize,
    /// Commit when this much time has passed since the last commit.
    #[serde(with = "duration_secs")]
    pub commit_every: Duration,
    /// How often a commit that conflicts with other writers is planned again (bins
    /// whose inputs another writer changed are given up, not retried). Short by
    /// default: compaction is maintenance and can run again later.
    pub retry: RetrySettings,
    /// Attempts at a bin whose storage calls fail.
    pub max_bin_attempts: usize,
    /// The `engineInfo` written into commits.
    pub engine_info: String,
    /// Extra fields of every commit's `commitInfo` (the service puts the job and the
    /// daemon there, so the log says which job made each compaction commit).
    pub commit_info: serde_json::Map<String, serde_json::Value>,
    /// Copy row groups undecoded when every row group of a bin's inputs has at least
    /// this many compressed bytes (and the inputs share the table's schema and have
    /// no deletion vectors); `None`: always decode and encode.
    pub copy_row_groups_above: Option<u64>,
    /// In bins of small files (each read whole, with statistics, no deletion vector),
    /// splice the columns written without a dictionary whose pages average at least
    /// this many rows (or [`crate::splice::SPLICE_PAGE_BYTES`] before compression):
    /// their pages are copied undecoded, the other columns decoded and encoded again.
    /// `None`: decode and encode every column.
    pub splice_pages_above_rows: Option<u64>,
    /// How data files are read and written: requests in flight, the byte budget of
    /// prefetched inputs, whole-file reads of small files.
    pub io: IoSettings,
}

/// Default of [`ExecutorSettings::copy_row_groups_above`]: 8 MiB, half the row group
/// the writer makes for the default 128 MiB target.
pub const DEFAULT_COPY_ROW_GROUPS_ABOVE: u64 = 8 * 1024 * 1024;

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            // One more than twice the cores: a bin of small files whose columns are
            // mostly spliced waits on its reads and its output's upload about as long
            // as it computes, and while it waits the others keep the cores busy.
            max_concurrent_bins: std::thread::available_parallelism().map_or(3, |n| 2 * n.get() + 1),
            memory_budget: 1024 * 1024 * 1024,
            commit_every_bins: 64,
            commit_every: Duration::from_secs(60),
            retry: RetrySettings { max_attempts: 10, max_elapsed: Duration::from_secs(60), ..Default::default() },
            max_bin_attempts: 3,
            engine_info: format!("sediment-compactor/{}", env!("CARGO_PKG_VERSION")),
            commit_info: serde_json::Map::new(),
            copy_row_groups_above: Some(DEFAULT_COPY_ROW_GROUPS_ABOVE),
            splice_pages_above_rows: Some(crate::splice::DEFAULT_SPLICE_PAGES_ABOVE_ROWS),
            io: IoSettings::default(),
        }
    }
}

impl ExecutorSettings {
    /// Check the knobs.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrent_bins == 0 || self.commit_every_bins == 0 {
            return Err(CompactionError::Invalid("max_concurrent_bins and commit_every_bins must be positive".into()));
        }
        self.retry.validate().map_err(CompactionError::Invalid)?;
        if self.memory_budget < 16 * 1024 * 1024 {
            return Err(CompactionError::Invalid(format!(
                "memory budget of {} bytes is below the 16 MiB minimum",
                self.memory_budget
            )));
        }
        self.io.validate().map_err(CompactionError::Invalid)
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// A bin that was not committed, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbandonedBin {
    /// The bin's partition.
    pub partition: PartitionKey,
    /// Its input files.
    pub inputs: usize,
    /// Why it was given up.
    pub reason: String,
    /// Files it had written, deleted when it was given up.
    pub deleted_outputs: Vec<String>,
}

/// What a compaction job did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompactionReport {
    /// The version the plan was made from.
    pub read_version: u64,
    /// Versions committed, in order.
    pub versions: Vec<u64>,
    /// Bins in the plan.
    pub bins_planned: usize,
    /// Bins committed.
    pub bins_committed: usize,
    /// Of those, bins written by copying their inputs' row groups undecoded.
    #[serde(default)]
    pub bins_copied: usize,
    /// Bins given up (conflicts, unreadable inputs).
    pub abandoned: Vec<AbandonedBin>,
    /// Files removed by the commits.
    pub files_removed: usize,
    /// Files added by the commits.
    pub files_added: usize,
    /// Bytes of the removed files.
    pub bytes_removed: u64,
    /// Bytes of the added files.
    pub bytes_added: u64,
    /// Bytes of input files read (including bins later given up).
    pub bytes_read: u64,
    /// Bytes of output files written (including bins later given up).
    pub bytes_written: u64,
    /// Rows rewritten in committed bins.
    pub rows: u64,
    /// Commit attempts that lost a race and were re-planned.
    pub commit_conflicts: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The requests of the job's own reads and writes of data files: how many, the
    /// bytes read, the most in flight at once.
    #[serde(default)]
    pub io: IoReport,
}

impl CompactionReport {
    /// Bytes written per byte of committed output: 1.0 when nothing was wasted on bins
    /// given up.
    pub fn write_amplification(&self) -> f64 {
        if self.bytes_added == 0 { 0.0 } else { self.bytes_written as f64 / self.bytes_added as f64 }
    }
}

/// A progress callback: bins finished so far, bins planned, bytes read so far.
pub type ProgressFn = Arc<dyn Fn(usize, usize, u64) + Send + Sync>;

/// Called right before every commit; an `Err` refuses the commit (the job stops with a
/// conflict naming the reason, its written files left for vacuum). The service's
/// lease fence is one: a worker commits only while it still holds its job's lease.
pub type CommitGuard = Arc<dyn Fn() -> std::result::Result<(), String> + Send + Sync>;

/// Moves a bin's written outputs into the bin's storage class
/// ([`Bin::storage_class`](crate::planner::Bin::storage_class)), before their commit,
/// and returns their `add`s as they should be committed (with whatever tag records
/// the class). An `Err` gives the bin up (its outputs deleted).
pub type OutputClassFn = Arc<
    dyn Fn(Vec<Add>, String) -> futures::future::BoxFuture<'static, std::result::Result<Vec<Add>, String>>
        + Send
        + Sync,
>;

/// Runs compaction plans against one table.
pub struct CompactionExecutor {
    table: DeltaTable,
    settings: ExecutorSettings,
    before_commit: Option<CommitGuard>,
    progress: Option<ProgressFn>,
    output_class: Option<OutputClassFn>,
}

/// A rewritten bin waiting for its commit.
struct BinOutput {
    bin: Bin,
    adds: Vec<Add>,
    rows: u64,
    copied: bool,
}

/// What every bin task needs, shared.
struct BinContext {
    table: DeltaTable,
    store: Arc<dyn ObjectStore>,
    file_schema: SchemaRef,
    /// Every planned input as the plan's version has it.
    inputs: HashMap<String, InputFile>,
    clustering: Option<Clustering>,
    target_file_size: u64,
    copy_row_groups_above: Option<u64>,
    splice_pages_above_rows: Option<u64>,
    io: IoSettings,
    /// Bounds and counts the requests of `store`.
    limiter: Arc<IoLimiter>,
    bytes_read: AtomicU64,
    output_class: Option<OutputClassFn>,
    /// First inputs of the bins next in line, fetched while they wait for a slot.
    early: EarlyFetches,
}

type PartitionScalars = indexmap::IndexMap<String, delta_kernel::expressions::Scalar>;

/// A planned input file at the plan's version.
struct InputFile {
    /// Its `add`; its deletion vector gives the rows skipped, and the commit checks
    /// that the file is still live with that vector.
    add: Add,
    partition_values: PartitionScalars,
}

impl CompactionExecutor {
    /// An executor for `table`, loaded at the version the plan was made from.
    pub fn new(table: DeltaTable, settings: ExecutorSettings) -> Self {
        Self { table, settings, before_commit: None, progress: None, output_class: None }
    }

    /// Move the outputs of bins with a storage class there with `hook` before their
    /// commit (bins without one are left in the store's default class).
    pub fn with_output_class(mut self, hook: OutputClassFn) -> Self {
        self.output_class = Some(hook);
        self
    }

    /// Call `hook` right before every commit: a fence (an `Err` refuses the commit), or
    /// fault injection in tests (a hook that aborts the process is a crash between
    /// writing files and committing).
    pub fn with_before_commit(mut self, hook: CommitGuard) -> Self {
        self.before_commit = Some(hook);
        self
    }

    /// Report progress as bins finish.
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Run `plan` and commit it; returns the report and the table at its newest version.
    #[instrument(skip_all, fields(table = %self.table.table_url(), bins = plan.bins().count()))]
    pub async fn execute(mut self, plan: &CompactionPlan) -> Result<(CompactionReport, DeltaTable)> {
        self.settings.validate()?;
        let started = Instant::now();
        let state = self.table.snapshot().map_err(|e| CompactionError::Invalid(format!("table is not loaded: {e}")))?;
        let read_version = state.version();
        let mut report = CompactionReport { read_version, bins_planned: plan.bins().count(), ..Default::default() };
        if plan.is_empty() {
            report.duration_ms = started.elapsed().as_millis() as u64;
            return Ok((report, self.table));
        }
        let context = Arc::new(self.bin_context(plan)?);
        let row_group_bytes = row_group_bytes(plan.target_file_size);
        let permits_total = (self.settings.memory_budget / 1024).min(u32::MAX as u64) as u32;
        let memory = Arc::new(Semaphore::new(permits_total as usize));
        let slots = Arc::new(Semaphore::new(self.settings.max_concurrent_bins));
        // As many bins as run may wait with their first inputs fetched, each within its
        // share of a quarter of the byte budget (the running bins keep the rest).
        let next_in_line = Arc::new(Semaphore::new(self.settings.max_concurrent_bins));
        let early_bytes = self.settings.io.max_bytes_in_flight / 4 / self.settings.max_concurrent_bins as u64;

        let mut running = FuturesUnordered::new();
        for bin in plan.bins().cloned() {
            let context = context.clone();
            let memory = memory.clone();
            let slots = slots.clone();
            let next_in_line = next_in_line.clone();
            let attempts = self.settings.max_bin_attempts.max(1);
            let estimate = bin_memory_estimate(&bin, row_group_bytes).div_ceil(1024).min(permits_total as u64) as u32;
            let planned = bin.clone();
            let task = tokio::spawn(async move {
                let waiting = next_in_line.acquire_owned().await.expect("semaphore is never closed");
                fetch_early(&context, &bin, early_bytes);
                let _slot = slots.acquire_owned().await.expect("semaphore is never closed");
                drop(waiting);
                let _memory = memory.acquire_many_owned(estimate).await.expect("semaphore is never closed");
                rewrite_bin_with_retries(&context, bin, attempts).await
            });
            // A bin whose task panicked (a bug, ours or a library's) is given up like
            // one that failed; the other bins go on.
            running.push(async move {
                task.await
                    .unwrap_or_else(|e| Err((planned, CompactionError::Data(format!("the bin's task failed: {e}")))))
            });
        }

        let mut pending: Vec<BinOutput> = Vec::new();
        let mut last_commit = Instant::now();
        let mut finished = 0;
        while let Some(joined) = running.next().await {
            finished += 1;
            match joined {
                Ok(output) => {
                    report.bytes_written += output.adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
                    pending.push(output)
                }
                Err((bin, error)) => {
                    warn!(error = %error, "giving up a bin");
                    report.abandoned.push(AbandonedBin {
                        partition: bin.partition.clone(),
                        inputs: bin.inputs.len(),
                        reason: error.to_string(),
                        deleted_outputs: Vec::new(),
                    });
                }
            }
            if let Some(progress) = &self.progress {
                progress(finished, report.bins_planned, context.bytes_read.load(Ordering::Relaxed));
            }
            if pending.len() >= self.settings.commit_every_bins || last_commit.elapsed() >= self.settings.commit_every {
                self.commit(std::mem::take(&mut pending), plan, &context, &mut report).await?;
                last_commit = Instant::now();
            }
        }
        if !pending.is_empty() {
            self.commit(pending, plan, &context, &mut report).await?;
        }
        report.bytes_read = context.bytes_read.load(Ordering::Relaxed);
        report.io = context.limiter.report();
        report.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            bins = report.bins_committed,
            abandoned = report.abandoned.len(),
            files_removed = report.files_removed,
            files_added = report.files_added,
            "compaction finished"
        );
        Ok((report, self.table))
    }

    fn bin_context(&self, plan: &CompactionPlan) -> Result<BinContext> {
        let state = self.table.snapshot()?;
        let partition_columns: Vec<String> = state.metadata().partition_columns().to_vec();
        let table_schema = state.snapshot().arrow_schema();
        let file_schema = Arc::new(Schema::new(
            table_schema.fields().iter().filter(|f| !partition_columns.contains(f.name())).cloned().collect::<Vec<_>>(),
        ));
        if let Some(clustering) = &plan.clustering {
            let columns = match clustering {
                Clustering::SortBy { columns } | Clustering::ZOrder { columns } => columns,
            };
            for column in columns {
                if file_schema.field_with_name(column).is_err() {
                    return Err(CompactionError::Invalid(format!(
                        "clustering column `{column}` is not a data column of the table (partition columns cannot be clustered)"
                    )));
                }
            }
        }
        // Typed partition values of every planned input, from the snapshot.
        let planned: HashSet<&str> = plan.bins().flat_map(|b| b.inputs.iter().map(|f| f.path.as_str())).collect();
        let mut inputs = HashMap::new();
        let mut live = 0;
        for view in state.log_data().iter() {
            let path = view.path().to_string();
            if planned.contains(path.as_str()) {
                live += 1;
                let partition_values: PartitionScalars = view
                    .partition_values()
                    .map(|s| s.fields().iter().map(|f| f.name().to_string()).zip(s.values().iter().cloned()).collect())
                    .unwrap_or_default();
                let add = Add {
                    path: path.clone(),
                    partition_values: view.partition_values_map().into_iter().collect(),
                    size: view.size(),
                    modification_time: view.modification_time(),
                    data_change: false,
                    stats: view.stats(),
                    tags: None,
                    deletion_vector: view.deletion_vector_descriptor(),
                    base_row_id: None,
                    default_row_commit_version: None,
                    clustering_provider: None,
                };
                inputs.insert(path, InputFile { add, partition_values });
            }
        }
        if live != planned.len() {
            return Err(CompactionError::Invalid(format!(
                "the plan names {} files that are not live at version {}; plan again from this version",
                planned.len() - live,
                state.version()
            )));
        }
        let limiter = IoLimiter::new(&self.settings.io);
        Ok(BinContext {
            table: self.table.clone(),
            store: Arc::new(BoundedStore::new(self.table.object_store(), limiter.clone())),
            io: self.settings.io.clone(),
            limiter,
            file_schema,
            inputs,
            clustering: plan.clustering.clone(),
            target_file_size: plan.target_file_size,
            copy_row_groups_above: self.settings.copy_row_groups_above,
            splice_pages_above_rows: self.settings.splice_pages_above_rows,
            bytes_read: AtomicU64::new(0),
            output_class: self.output_class.clone(),
            early: EarlyFetches::default(),
        })
    }

    /// Commit finished bins; on a conflict keep the bins whose inputs are still live
    /// at the newest version and give up the others.
    async fn commit(
        &mut self,
        mut outputs: Vec<BinOutput>,
        plan: &CompactionPlan,
        context: &BinContext,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let mut budget = RetryBudget::new(&self.settings.retry);
        loop {
            if outputs.is_empty() {
                return Ok(());
            }
            let state = self.table.snapshot()?;
            let live: HashMap<String, (Remove, Option<DeletionVectorDescriptor>)> = state
                .log_data()
                .iter()
                .map(|v| (v.path().to_string(), (v.remove_action(false), v.deletion_vector_descriptor())))
                .collect();
            // An input is unchanged when its path is live with the vector it was read with.
            let unchanged = |path: &str| {
                live.get(path)
                    .zip(context.inputs.get(path))
                    .is_some_and(|((_, now), read)| *now == read.add.deletion_vector)
            };
            let (keep, lost): (Vec<BinOutput>, Vec<BinOutput>) =
                outputs.into_iter().partition(|o| o.bin.inputs.iter().all(|f| unchanged(&f.path)));
            for output in lost {
                self.give_up(
                    output,
                    "another writer removed one of its input files, or deleted more of its rows, first",
                    report,
                )
                .await;
            }
            outputs = keep;
            if outputs.is_empty() {
                return Ok(());
            }
            let mut actions = Vec::new();
            for output in &outputs {
                for input in &output.bin.inputs {
                    if let Some((remove, _)) = live.get(&input.path) {
                        actions.push(Action::Remove(remove.clone()));
                    }
                }
                actions.extend(output.adds.iter().cloned().map(Action::Add));
            }
            let operation = DeltaOperation::Optimize { predicate: None, target_size: plan.target_file_size as i64 };
            let mut info = operation.get_commit_info();
            info.timestamp = Some(chrono::Utc::now().timestamp_millis());
            info.engine_info = Some(self.settings.engine_info.clone());
            info.read_version = Some(state.version());
            info.is_blind_append = Some(false);
            let removed = outputs.iter().map(|o| o.bin.inputs.len()).sum::<usize>();
            let added = outputs.iter().map(|o| o.adds.len()).sum::<usize>();
            let metrics = serde_json::json!({
                "numRemovedFiles": removed.to_string(),
                "numAddedFiles": added.to_string(),
                "numRemovedBytes": outputs.iter().map(|o| o.bin.input_bytes).sum::<u64>().to_string(),
                "numAddedBytes": outputs.iter().flat_map(|o| o.adds.iter().map(|a| a.size.max(0) as u64)).sum::<u64>().to_string(),
                "numBins": outputs.len().to_string(),
            });
            info.info.insert("operationMetrics".into(), metrics);
            info.info.insert("clientVersion".into(), serde_json::Value::String(self.settings.engine_info.clone()));
            for (key, value) in &self.settings.commit_info {
                info.info.entry(key.clone()).or_insert_with(|| value.clone());
            }
            actions.insert(0, Action::CommitInfo(info));
            if let Some(hook) = &self.before_commit {
                hook().map_err(|reason| CompactionError::Conflict(format!("commit refused: {reason}")))?;
            }
            // No rebase inside delta-rs: its conflict checker (1.1) does not count a
            // `remove` with dataChange = false as a conflict, so two compactions of the
            // same files would both commit and the rows would be there twice. When another
            // writer commits first, the loop checks the inputs against the newest
            // snapshot itself and commits on that. No post-commit log cleanup (a listing
            // of the whole log per commit): that is retention's job.
            let properties = CommitProperties::default().with_max_retries(0).with_cleanup_expired_logs(Some(false));
            // Put at the next version straight away; a lost race goes through
            // delta-rs's path, which with no retries fails with a conflict. The table
            // moves to the committed version.
            let result = crate::commit::commit(&mut self.table, properties, actions, operation).await;
            match result {
                Ok(version) => {
                    report.versions.push(version);
                    report.bins_committed += outputs.len();
                    report.bins_copied += outputs.iter().filter(|o| o.copied).count();
                    report.files_removed += removed;
                    report.files_added += added;
                    report.bytes_removed += outputs.iter().map(|o| o.bin.input_bytes).sum::<u64>();
                    report.bytes_added +=
                        outputs.iter().flat_map(|o| o.adds.iter().map(|a| a.size.max(0) as u64)).sum::<u64>();
                    report.rows += outputs.iter().map(|o| o.rows).sum::<u64>();
                    return Ok(());
                }
                Err(e) if is_conflict(&e) && budget.retry().await => {
                    report.commit_conflicts += 1;
                    let attempt = budget.attempts();
                    info!(attempt, error = %describe(&e), "compaction commit conflicted; re-planning on the newest version");
                    self.table.update_state().await?;
                }
                Err(e) => {
                    let reason = if is_conflict(&e) {
                        format!("commit lost to other writers ({}): {}", budget.summary(), describe(&e))
                    } else {
                        format!("commit failed: {}", describe(&e))
                    };
                    for output in outputs {
                        self.give_up(output, &reason, report).await;
                    }
                    return Err(CompactionError::from(e));
                }
            }
        }
    }

    async fn give_up(&self, output: BinOutput, reason: &str, report: &mut CompactionReport) {
        delete_files(self.table.object_store().as_ref(), &output.adds).await;
        report.abandoned.push(AbandonedBin {
            partition: output.bin.partition.clone(),
            inputs: output.bin.inputs.len(),
            reason: reason.to_string(),
            deleted_outputs: output.adds.iter().map(|a| a.path.clone()).collect(),
        });
    }
}

pub use crate::encoding::{row_group_bytes, writer_properties, writer_properties_for};

/// The rows a bin's output will hold, when every input's row count is known.
pub(crate) fn bin_rows(bin: &Bin) -> Option<u64> {
    bin.inputs.iter().map(|f| Some(f.rows?.saturating_sub(f.deleted_rows))).sum()
}

/// Files fetched early per waiting bin, at most.
const EARLY_FILES: usize = 16;

/// Start fetching the first small inputs of `bin` (up to [`EARLY_FILES`] files and
/// `bytes` bytes), so that it finds them in memory when it gets its slot.
fn fetch_early(context: &BinContext, bin: &Bin, bytes: u64) {
    let mut total = 0u64;
    let files = bin
        .inputs
        .iter()
        .take(EARLY_FILES)
        .take_while(|file| {
            total += file.size;
            context.io.reads_whole(file.size) && total <= bytes
        })
        .filter_map(|file| Some((file.path.clone(), Path::from_url_path(&file.path).ok()?, file.size)));
    context.early.start(&context.store, &context.limiter, files);
}

/// Memory a bin may hold: its largest input decoded (about three times its size) and
/// two writer row groups; with clustering, the whole bin decoded.
fn bin_memory_estimate(bin: &Bin, row_group_bytes: usize) -> u64 {
    let largest = bin.inputs.iter().map(|f| f.size).max().unwrap_or(0);
    3 * largest + 2 * row_group_bytes as u64
}

async fn delete_files(store: &dyn ObjectStore, adds: &[Add]) {
    for add in adds {
        let path = Path::from_url_path(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()));
        if let Err(e) = store.delete(&path).await {
            warn!(path = %add.path, error = %e, "could not delete an uncommitted compaction output");
        }
    }
}

async fn rewrite_bin_with_retries(
    context: &BinContext,
    bin: Bin,
    attempts: usize,
) -> std::result::Result<BinOutput, (Bin, CompactionError)> {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=attempts {
        match rewrite_bin(context, &bin).await {
            Ok((adds, rows, copied)) => {
                let adds = match (bin.storage_class.clone(), &context.output_class) {
                    (Some(class), Some(hook)) => match hook(adds.clone(), class.clone()).await {
                        Ok(adds) => adds,
                        Err(e) => {
                            delete_files(context.store.as_ref(), &adds).await;
                            let error = CompactionError::Storage(format!("moving its outputs to {class}: {e}"));
                            return Err((bin, error));
                        }
                    },
                    _ => adds,
                };
                return Ok(BinOutput { bin, adds, rows, copied });
            }
            Err(CompactionError::Storage(e)) if attempt < attempts => {
                warn!(attempt, error = %e, "storage error while rewriting a bin; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err((bin, e)),
        }
    }
    Err((bin, CompactionError::Storage("no attempt was made".into())))
}

/// Rewrite one bin into one file; returns its `add` actions (dataChange = false), its
/// rows and whether its row groups were copied undecoded.
async fn rewrite_bin(context: &BinContext, bin: &Bin) -> Result<(Vec<Add>, u64, bool)> {
    if context.clustering.is_none() {
        let adds = bin
            .inputs
            .iter()
            .map(|f| context.inputs.get(&f.path).map(|i| i.add.clone()))
            .collect::<Option<Vec<Add>>>()
            .ok_or_else(|| CompactionError::Invalid("a planned input is not in the snapshot".into()))?;
        if let Some(threshold) = context.copy_row_groups_above
            && let Some(inputs) =
                crate::copy::copyable(&context.store, adds.clone(), &context.file_schema, threshold).await?
        {
            let copied =
                crate::copy::copy_bin(&context.store, &inputs, &context.file_schema, context.target_file_size).await?;
            context.bytes_read.fetch_add(copied.bytes_read, Ordering::Relaxed);
            return Ok((vec![copied.add], copied.rows, true));
        }
        if let Some(min_page_rows) = context.splice_pages_above_rows
            && crate::splice::applies(&adds, &context.io)
        {
            let cx = crate::splice::SpliceContext {
                store: &context.store,
                limiter: &context.limiter,
                io: &context.io,
                file_schema: &context.file_schema,
                target_file_size: context.target_file_size,
                min_page_rows,
                expected_rows: bin_rows(bin),
                single_put_below: crate::splice::SINGLE_PUT_BELOW,
                early: &context.early,
            };
            if let Some(spliced) = crate::splice::splice_bin(&cx, adds).await? {
                context.bytes_read.fetch_add(spliced.bytes_read, Ordering::Relaxed);
                return Ok((vec![spliced.add], spliced.rows, false));
            }
        }
    }
    let partition_values = context
        .inputs
        .get(&bin.inputs[0].path)
        .map(|f| f.partition_values.clone())
        .ok_or_else(|| CompactionError::Invalid(format!("no partition values for {}", bin.inputs[0].path)))?;
    // One output per bin: its inputs total at most the target, so a cut at twice the
    // target never happens in practice. Writer settings are chosen from the first batch.
    let mut writer =
        RecordBatchWriter::for_table(&context.table)?.with_target_file_size(context.target_file_size.saturating_mul(2));
    let mut settings_chosen = false;
    let mut rows = 0u64;
    let mut held: Vec<RecordBatch> = Vec::new();
    // The next inputs are fetched (small ones whole) while one is decoded.
    let opened = futures::stream::iter(bin.inputs.iter().cloned())
        .map(|input| open_input(context, input))
        .buffered(context.io.prefetch_files);
    let mut opened = std::pin::pin!(opened);
    while let Some(next) = opened.next().await {
        let (input, builder, _budget) = next?;
        let mut stream = builder.with_batch_size(8192).build().map_err(|e| CompactionError::reading(&input.path, e))?;
        while let Some(batch) = stream.try_next().await.map_err(|e| CompactionError::reading(&input.path, e))? {
            let batch = conform(&batch, &context.file_schema).map_err(|e| {
                CompactionError::Data(format!("data file {} does not fit the table schema: {e}", input.path))
            })?;
            rows += batch.num_rows() as u64;
            if !settings_chosen {
                let properties =
                    crate::encoding::writer_properties_for_rows(context.target_file_size, &batch, bin_rows(bin));
                writer = writer.with_writer_properties(properties);
                settings_chosen = true;
            }
            if context.clustering.is_some() {
                held.push(batch);
            } else {
                writer.write_partition(batch, &partition_values, WriteMode::Default).await?;
            }
        }
        context.bytes_read.fetch_add(input.size, Ordering::Relaxed);
    }
    if let Some(clustering) = &context.clustering {
        let all = concat_batches(&context.file_schema, &held)?;
        drop(held);
        let sorted = cluster(&all, clustering)?;
        drop(all);
        writer.write_partition(sorted, &partition_values, WriteMode::Default).await?;
    }
    let mut adds = writer.flush().await?;
    for add in &mut adds {
        add.data_change = false;
    }
    Ok((adds, rows, false))
}

/// Open one input of a bin for decoding: its share of the byte budget reserved, the
/// file fetched whole when small (else its footer read), its deletion vector's rows
/// skipped.
async fn open_input(
    context: &BinContext,
    input: PlannedFile,
) -> Result<(PlannedFile, ParquetRecordBatchStreamBuilder<StoreFileReader>, BytesPermit)> {
    let (reader, budget) = crate::reader::open_input_file(
        &context.early,
        &context.store,
        &context.limiter,
        &context.io,
        &input.path,
        input.size,
    )
    .await?;
    let builder =
        ParquetRecordBatchStreamBuilder::new(reader).await.map_err(|e| CompactionError::reading(&input.path, e))?;
    // Rows a deletion vector deleted are not read.
    let builder = match context.inputs.get(&input.path).and_then(|f| f.add.deletion_vector.as_ref()) {
        Some(dv) => {
            let deleted = crate::reader::deleted_positions(&context.table, &input.path, dv)
                .await
                .map_err(|e| CompactionError::Data(e.to_string()))?;
            crate::reader::skip_rows(builder, &deleted).0
        }
        None => builder,
    };
    Ok((input, builder, budget))
}

/// `batch` with exactly `schema`'s columns: missing ones (added to the table later)
/// as nulls, others cast to the table's type.
fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => cast(column, field.data_type()),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<std::result::Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Reorder `batch` by the clustering.
fn cluster(batch: &RecordBatch, clustering: &Clustering) -> Result<RecordBatch> {
    let indices = match clustering {
        Clustering::SortBy { columns } => {
            let keys: Vec<SortColumn> = columns
                .iter()
                .map(|c| SortColumn {
                    values: batch.column_by_name(c).expect("validated column").clone(),
                    options: None,
                })
                .collect();
            lexsort_to_indices(&keys, None)?
        }
        Clustering::ZOrder { columns } => zorder_indices(batch, columns)?,
    };
    Ok(take_record_batch(batch, &indices)?)
}

/// Z-order: each column's values are replaced by their rank (0..n, scaled to 21
/// bits), the ranks' bits interleaved into one key per row, and rows sorted by it.
fn zorder_indices(batch: &RecordBatch, columns: &[String]) -> Result<deltalake::arrow::array::UInt32Array> {
    let n = batch.num_rows();
    let bits_per_column = (64 / columns.len()).min(21) as u32;
    let mut keys = vec![0u64; n];
    for (c, name) in columns.iter().enumerate() {
        let column = batch.column_by_name(name).expect("validated column").clone();
        let order = lexsort_to_indices(&[SortColumn { values: column, options: None }], None)?;
        let scale = |rank: usize| -> u64 {
            if n <= 1 { 0 } else { (rank as u64 * ((1u64 << bits_per_column) - 1)) / (n as u64 - 1) }
        };
        for (rank, row) in order.values().iter().enumerate() {
            let value = scale(rank);
            let mut key = keys[*row as usize];
            for bit in 0..bits_per_column {
                if value & (1 << bit) != 0 {
                    key |= 1 << (bit as usize * columns.len() + c);
                }
            }
            keys[*row as usize] = key;
        }
    }
    let keys = UInt64Array::from(keys);
    Ok(lexsort_to_indices(&[SortColumn { values: Arc::new(keys), options: None }], None)?)
}
