//! Scans: read a table (at any version) with projection, a filter and a limit.
//!
//! A scan is planned in two steps before any data file is opened:
//! 1. *partition pruning* keeps the files whose partition values satisfy the
//!    filter's partition-only conjuncts (exact);
//! 2. *statistics skipping* drops the files whose min/max/null counts prove that no
//!    row can match.
//!
//! The kept files are read through DataFusion with delta-rs's table provider (which
//! applies deletion vectors, column mapping and schema evolution), the filter is
//! applied to the rows, and the result comes back as a stream of record batches. The
//! [`ScanReport`] says how many files each step kept and how many bytes were read.
//!
//! ```no_run
//! # async fn example() -> sediment::Result<()> {
//! use futures::TryStreamExt;
//! let table = sediment::Table::open("s3://lake/bronze/events").await?;
//! let scan = table.scan().columns(["user_id", "amount"]).filter("date = '2024-05-01'").execute().await?;
//! let report = scan.report();
//! let batches: Vec<_> = scan.try_collect().await?;
//! println!("{} of {} files read", report.files_after_stats_skipping, report.files_in_snapshot);
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::execution::object_store::ObjectStoreUrl;
use deltalake::datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use deltalake::datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Add;
use futures::{Stream, StreamExt};
use tracing::instrument;

use crate::error::{Error, Result};
use crate::read::predicate::Predicate;
use crate::table::Table;
use crate::table::storage::{BoundedStore, IoLimiter, IoReport, IoSettings};

/// What a scan's planning kept and what its reading cost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScanReport {
    /// Version scanned.
    pub version: u64,
    /// Live data files in the snapshot.
    pub files_in_snapshot: usize,
    /// Files left after partition pruning.
    pub files_after_partition_pruning: usize,
    /// Files left after statistics skipping: the files that are read.
    pub files_after_stats_skipping: usize,
    /// Total size of the files that are read.
    pub bytes_in_selected_files: u64,
    /// Bytes actually fetched from storage (projected column chunks, footers).
    pub bytes_read: u64,
    /// Requests made to storage for the data files so far.
    pub requests: u64,
    /// The most of those requests in flight at once.
    pub peak_in_flight: u64,
    /// Rows returned so far.
    pub rows_returned: u64,
    /// Selected files left out because they are archived and not restored
    /// (`skip_archived`; otherwise such files fail the scan).
    pub files_skipped_archived: usize,
}

/// The files a filter selects, before any of them is read.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    /// Counts per pruning step (bytes and rows read are zero).
    pub report: ScanReport,
    /// The `add` actions of the selected files.
    pub files: Vec<Add>,
    /// The parsed filter.
    pub predicate: Option<Predicate>,
}

/// Builds a scan of one table version.
#[derive(Debug, Clone)]
pub struct ScanBuilder<'a> {
    table: &'a Table,
    columns: Option<Vec<String>>,
    filter: Option<String>,
    limit: Option<usize>,
    skip_archived: bool,
}

impl Table {
    /// Start building a scan of this table version.
    pub fn scan(&self) -> ScanBuilder<'_> {
        ScanBuilder { table: self, columns: None, filter: None, limit: None, skip_archived: false }
    }

    /// Which files a filter selects, and how many each pruning step kept.
    #[instrument(skip_all, fields(table = %self.uri(), version = ?self.version()))]
    pub fn plan_scan(&self, filter: Option<&str>) -> Result<ScanPlan> {
        let state = self.state()?;
        let schema = self.arrow_schema()?;
        let partition_columns = self.partition_columns()?;
        let files = self.files()?;
        let predicate = filter.map(|sql| Predicate::parse(sql, &schema)).transpose()?;
        let mut keep = vec![true; files.len()];
        let mut report = ScanReport {
            version: self.version().unwrap_or_default(),
            files_in_snapshot: files.len(),
            ..Default::default()
        };
        if let Some(partition_expr) = predicate.as_ref().and_then(|p| p.partition_part(&partition_columns)) {
            keep = Predicate::match_partitions(&partition_expr, &files, &schema, &partition_columns)?;
        }
        report.files_after_partition_pruning = keep.iter().filter(|k| **k).count();
        if let Some(predicate) = &predicate {
            let physical = Predicate::physical(predicate.expr(), &schema)?;
            // A predicate DataFusion cannot turn into a statistics check simply skips nothing.
            if let Some(pruning) = PruningPredicateBuilder::new().with_file_schema(schema.clone()).build(physical)
                && let Ok(stats_keep) = pruning.prune(&state.log_data())
            {
                for (k, s) in keep.iter_mut().zip(stats_keep) {
                    *k &= s;
                }
            }
        }
        let selected = selected_adds(state, &keep);
        report.files_after_stats_skipping = selected.len();
        report.bytes_in_selected_files = selected.iter().map(|a| a.size.max(0) as u64).sum();
        Ok(ScanPlan { report, files: selected, predicate })
    }
}

impl<'a> ScanBuilder<'a> {
    /// Return only these columns, in this order.
    pub fn columns<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Return only rows matching this SQL boolean expression.
    pub fn filter(mut self, sql: impl Into<String>) -> Self {
        self.filter = Some(sql.into());
        self
    }

    /// Return at most this many rows.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Leave out the selected files that are archived (GLACIER, DEEP_ARCHIVE) and not
    /// restored, counting them in the report, instead of failing the scan.
    pub fn skip_archived(mut self, skip: bool) -> Self {
        self.skip_archived = skip;
        self
    }

    /// Plan the scan and start reading.
    #[instrument(skip_all, fields(table = %self.table.uri(), version = ?self.table.version()))]
    pub async fn execute(self) -> Result<Scan> {
        let table = self.table;
        let schema = table.arrow_schema()?;
        if let Some(columns) = &self.columns {
            for column in columns {
                if schema.field_with_name(column).is_err() {
                    return Err(Error::invalid(format!(
                        "column `{column}` is not in table {} (columns: {})",
                        table.uri(),
                        schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
        let mut plan = table.plan_scan(self.filter.as_deref())?;
        let unreadable = crate::maintain::tiering::archive::unreadable(table, &plan.files).await?;
        if !unreadable.is_empty() {
            if !self.skip_archived {
                return Err(crate::maintain::tiering::archive::archived_error(table, "scan", &unreadable));
            }
            let skipped: std::collections::HashSet<&str> = unreadable.iter().map(|f| f.path.as_str()).collect();
            plan.files.retain(|a| !skipped.contains(a.path.as_str()));
            plan.report.files_skipped_archived = unreadable.len();
        }
        let limiter = IoLimiter::new(&IoSettings::default());
        let ctx = SessionContext::new();
        let url = table.url();
        let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
        let root_store = table.delta().log_store().root_object_store(None);
        ctx.runtime_env()
            .register_object_store(store_url.as_ref(), Arc::new(BoundedStore::new(root_store, limiter.clone())));
        let provider = table.delta().table_provider().with_adds(plan.files.clone()).build().await?;
        let mut df = ctx.read_table(Arc::new(provider))?;
        if let Some(predicate) = &plan.predicate {
            df = df.filter(predicate.expr().clone())?;
        }
        if let Some(columns) = &self.columns {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            df = df.select_columns(&names)?;
        }
        if let Some(limit) = self.limit {
            df = df.limit(0, Some(limit))?;
        }
        let what = format!("version {} of table {}", table.version().unwrap_or_default(), table.uri());
        let stream = df.execute_stream().await.map_err(|e| read_error(e, &what))?;
        Ok(Scan { schema: plain_schema(&stream.schema()), stream, report: plan.report, limiter, what })
    }
}

/// Read the rows of the given files of `table` (files some commit added, as a
/// pipeline's increment reads them, whether or not they are still in the snapshot),
/// with the table's current schema (partition columns from each file's `add`,
/// columns a file predates as nulls, rows its deletion vector deletes skipped);
/// `what` names them in errors. Files are read a few at a time through one bounded store.
pub(crate) async fn read_files(table: &Table, files: Vec<Add>, what: &str) -> Result<(Vec<RecordBatch>, IoReport)> {
    let mut batches = Vec::new();
    let io = for_each_file_batch(table, files, what, |batch| {
        batches.push(batch);
        Ok(())
    })
    .await?;
    Ok((batches, io))
}

/// [`read_files`] without keeping the rows: `each` sees every batch, file by file in
/// order, and may stop the read with an error. At most a few files' rows are held.
pub(crate) async fn for_each_file_batch(
    table: &Table,
    files: Vec<Add>,
    what: &str,
    mut each: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<IoReport> {
    use deltalake::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
    use futures::TryStreamExt;
    let io = IoSettings::default();
    let limiter = IoLimiter::new(&io);
    let store: Arc<dyn deltalake::ObjectStore> = Arc::new(BoundedStore::new(table.object_store(), limiter.clone()));
    let schema = plain_schema(&table.arrow_schema()?);
    let reads = futures::stream::iter(files).map(|add| {
        let (store, schema, io) = (store.clone(), schema.clone(), io.clone());
        let file = add.path.clone();
        async move {
            let path = deltalake::Path::from_url_path(&add.path)
                .map_err(|e| Error::new(crate::ErrorKind::Data, format!("bad data file path {}: {e}", add.path)))?;
            let read: Result<Vec<RecordBatch>> = async {
                let deleted = crate::change::deletion_vectors::deleted_positions(table, &add).await?;
                // Decoded in a task of its own: several files on several cores. The
                // task is aborted if this read is dropped (an error elsewhere, a
                // cancelled operation): no request outlives the read.
                let task = tokio::spawn(async move {
                    let reader =
                        sediment_compactor::reader::StoreFileReader::open(store, path, add.size.max(0) as u64, &io)
                            .await?;
                    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
                    let file_schema = builder.schema().clone();
                    let roots: Vec<usize> =
                        schema.fields().iter().filter_map(|f| file_schema.index_of(f.name()).ok()).collect();
                    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                    let (builder, _) = sediment_compactor::reader::skip_rows(builder.with_projection(mask), &deleted);
                    let batches: Vec<RecordBatch> = builder.with_batch_size(8192).build()?.try_collect().await?;
                    batches
                        .iter()
                        .map(|b| crate::change::deletion_vectors::with_partition_values(b, &add, &schema))
                        .collect::<Result<Vec<RecordBatch>>>()
                });
                let mut task = AbortOnDrop(task);
                (&mut task.0).await.unwrap_or_else(|e| Err(Error::internal(format!("a file read failed: {e}"))))
            }
            .await;
            read.map_err(|e| match e.kind() {
                crate::ErrorKind::NotFound => Error::new(
                    crate::ErrorKind::NotFound,
                    format!(
                        "cannot read {what}: file {file} is gone (vacuumed before the reader consumed it: the source's vacuum retention is shorter than the reader's lag): {e}"
                    ),
                ),
                _ => e.context(format!("reading {what}: file {file}")),
            })
        }
    });
    let mut reads = std::pin::pin!(reads.buffered(4));
    while let Some(batches) = reads.try_next().await? {
        for batch in batches {
            each(batch)?;
        }
    }
    Ok(limiter.report())
}

/// A spawned task aborted when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running scan: a stream of record batches and its report.
pub struct Scan {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    report: ScanReport,
    /// Bounds and counts the scan's requests.
    limiter: Arc<IoLimiter>,
    /// `version N of table URI`, for errors.
    what: String,
}

/// A scan's error; a data file that is gone is named, with the likely reason.
fn read_error(err: deltalake::datafusion::error::DataFusionError, what: &str) -> Error {
    match crate::error::missing_file(&err) {
        Some(path) => Error::new(
            crate::ErrorKind::NotFound,
            format!(
                "cannot read {what}: its file {path} is gone (vacuumed: the version is older than the table's \
                 retention and no tag keeps it)"
            ),
        ),
        None if crate::error::archived_object(&err) => Error::new(
            crate::ErrorKind::Unavailable,
            format!(
                "cannot read {what}: a data file is in an archive storage class (S3 says InvalidObjectState) that \
                 the log does not record (moved by a bucket lifecycle rule?); restore it with `sediment tier restore` \
                 or skip it with --skip-archived once `sediment tier` has recorded its class: {err}"
            ),
        ),
        None => Error::from(err).context(format!("scanning {what}")),
    }
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan").field("schema", &self.schema).field("report", &self.report()).finish()
    }
}

impl Scan {
    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The report so far (bytes read and rows returned grow as the stream is read).
    pub fn report(&self) -> ScanReport {
        let io = self.limiter.report();
        ScanReport {
            bytes_read: io.bytes_read,
            requests: io.requests,
            peak_in_flight: io.peak_in_flight,
            ..self.report.clone()
        }
    }

    /// Read everything: the batches and the final report.
    pub async fn collect(mut self) -> Result<(Vec<RecordBatch>, ScanReport)> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await {
            batches.push(batch?);
        }
        let report = self.report();
        Ok((batches, report))
    }
}

impl Stream for Scan {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.stream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                self.report.rows_returned += batch.num_rows() as u64;
                Poll::Ready(Some(decode_dictionaries(batch, &self.schema)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(read_error(e, &self.what)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The scan's schema with dictionary-encoded columns (delta-rs returns partition
/// columns that way) replaced by their value types, as the table declares them.
pub(crate) fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, values) => Field::new(f.name(), values.as_ref().clone(), f.is_nullable()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

pub(crate) fn decode_dictionaries(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns =
        batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    cast(column, field.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The `add` actions of the snapshot's files where `keep` (one flag per file, in log
/// order) holds; delta-rs's table provider takes a selection as `add` actions.
pub(crate) fn selected_adds(state: &deltalake::table::state::DeltaTableState, keep: &[bool]) -> Vec<Add> {
    state
        .log_data()
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(f, _)| {
            #[allow(deprecated)]
            f.add_action()
        })
        .collect()
}
