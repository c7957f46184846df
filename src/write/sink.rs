//! Writing data files: batches in, Parquet files and their `add` actions out.
//!
//! A [`FileSink`] fits each batch to the table schema, splits it by partition values
//! and streams it into zstd-compressed Parquet files with column statistics, rolling
//! to a new file at the target size. Nothing it writes is visible until the caller
//! commits the returned `add` actions; [`FileSink::abort`] deletes what it wrote.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::table::Table;
use crate::table::schema::{SchemaFitter, SchemaMode};
use crate::write::constraints::{Constraint, ConstraintChecker};
use sediment_compactor::encoding::writer_properties_for_rows;

pub use crate::table::info::DEFAULT_TARGET_FILE_SIZE;

/// Parquet settings of every data file Sediment writes, shared with the compactor:
/// zstd level 3, page statistics, data pages of at most 64 KiB, and row groups of at
/// most `target_file_size / 8` encoded bytes (64 KiB to 16 MiB).
///
/// The row-group bound is what makes files come out near the target: a file is cut
/// when its compressed bytes plus the open row group's *uncompressed* estimate reach
/// the target, so a large open row group would cut files at a fraction of it.
pub use sediment_compactor::executor::{writer_properties, writer_properties_for};

/// Streams batches into data files of one table.
pub(crate) struct FileSink {
    url: String,
    storage_options: crate::StorageOptions,
    partition_columns: Vec<String>,
    target_file_size: u64,
    fitter: SchemaFitter,
    /// Always `Some` between calls; taken only to change its settings.
    writer: Option<RecordBatchWriter>,
    /// Whether the writer settings were chosen from the first batch yet.
    settings_chosen: bool,
    /// Rows the file written is expected to hold, when the caller knows (a rewrite of
    /// a file): a dictionary is then kept only where it makes the column smaller.
    expected_rows: Option<u64>,
    writer_schema: SchemaRef,
    finished: Vec<Add>,
    rows: u64,
    /// The table's CHECK constraints, checked on every batch.
    checker: Option<ConstraintChecker>,
}

impl FileSink {
    /// A sink for `table` with `schema` (the table's, or the first batch's for a new table).
    pub(crate) fn new(
        table: &Table,
        schema: SchemaRef,
        partition_columns: Vec<String>,
        schema_mode: SchemaMode,
        target_file_size: u64,
    ) -> Result<Self> {
        for column in &partition_columns {
            if schema.field_with_name(column).is_err() {
                return Err(Error::invalid(format!(
                    "partition column `{column}` is not in the schema (columns: {})",
                    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if !partition_columns.is_empty() && partition_columns.len() == schema.fields().len() {
            return Err(Error::invalid("every column is a partition column; a table needs at least one data column"));
        }
        let writer = if table.exists() {
            RecordBatchWriter::for_table(table.delta())?
        } else {
            Self::writer_for(table.url().as_str(), &schema, &partition_columns, table.storage_options())?
        }
        .with_writer_properties(writer_properties(target_file_size))
        .with_target_file_size(target_file_size);
        let writer_schema = writer.arrow_schema();
        let checker = ConstraintChecker::for_table(table, &schema)?;
        Ok(Self {
            url: table.url().to_string(),
            storage_options: table.storage_options().clone(),
            partition_columns,
            target_file_size,
            fitter: SchemaFitter::new(schema, schema_mode),
            writer: Some(writer),
            settings_chosen: false,
            expected_rows: None,
            writer_schema,
            finished: Vec::new(),
            rows: 0,
            checker,
        })
    }

    fn writer_for(
        url: &str,
        schema: &SchemaRef,
        partition_columns: &[String],
        options: &crate::StorageOptions,
    ) -> Result<RecordBatchWriter> {
        Ok(RecordBatchWriter::try_new(url, schema.clone(), Some(partition_columns.to_vec()), Some(options.clone()))?)
    }

    /// Expect the files written to hold about `rows` rows (the file a rewrite replaces),
    /// for the choice of each column's encoding.
    pub(crate) fn expect_rows(&mut self, rows: Option<u64>) {
        self.expected_rows = rows;
    }

    /// The table schema after the batches written so far (grows in merge mode).
    pub(crate) fn schema(&self) -> &SchemaRef {
        self.fitter.schema()
    }

    /// Whether a batch added columns to the schema.
    pub(crate) fn schema_evolved(&self) -> bool {
        self.fitter.evolved()
    }

    /// Rows accepted so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Approximate bytes written since the last [`FileSink::finish`].
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.writer.as_ref().map_or(0, RecordBatchWriter::buffer_len)
            + self.finished.iter().map(|a| a.size as usize).sum::<usize>()
    }

    /// Fit `batch` to the table schema (growing it in merge mode) and check it against
    /// the table's CHECK constraints. Nothing is written.
    pub(crate) fn fit(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let fitted = self.fitter.fit(batch)?;
        if let Some(checker) = &self.checker {
            checker.check(&fitted)?;
        }
        Ok(fitted)
    }

    /// Check every row against `constraints` (a new table's, which it does not have yet).
    pub(crate) fn check_constraints(&mut self, uri: &str, constraints: &[Constraint]) -> Result<()> {
        if !constraints.is_empty() {
            self.checker = ConstraintChecker::compile(uri, constraints, self.fitter.schema())?;
        }
        Ok(())
    }

    /// The CHECK constraints every written row was checked against.
    pub(crate) fn constraints_checked(&self) -> Vec<Constraint> {
        self.checker.as_ref().map(|c| c.constraints().cloned().collect()).unwrap_or_default()
    }

    /// Write a batch returned by [`Self::fit`]. After an error the open files are
    /// unusable: the caller must give up the whole sink.
    pub(crate) async fn write_fitted(&mut self, fitted: RecordBatch) -> Result<()> {
        if fitted.num_rows() == 0 {
            return Ok(());
        }
        if fitted.schema().fields() != self.writer_schema.fields() {
            // Schema evolution: seal the files written so far and continue with a writer
            // for the wider schema; every file lands in the same commit.
            let adds = self.writer_mut()?.flush().await?;
            self.finished.extend(adds);
            let writer =
                Self::writer_for(&self.url, fitted.schema_ref(), &self.partition_columns, &self.storage_options)?
                    .with_target_file_size(self.target_file_size);
            self.writer_schema = writer.arrow_schema();
            self.writer = Some(writer);
            self.settings_chosen = false;
        }
        if !self.settings_chosen {
            // Dictionary encoding per column, judged from the first batch.
            let writer = self.writer.take().ok_or_else(|| Error::internal("file sink without a writer"))?;
            let properties = writer_properties_for_rows(self.target_file_size, &fitted, self.expected_rows);
            self.writer = Some(writer.with_writer_properties(properties));
            self.settings_chosen = true;
        }
        let rows = fitted.num_rows() as u64;
        self.writer_mut()?.write(fitted).await.map_err(|e| match Error::delta(e) {
            err if err.kind() == crate::ErrorKind::Internal => err.context("writing data file"),
            err => err,
        })?;
        self.rows += rows;
        Ok(())
    }

    fn writer_mut(&mut self) -> Result<&mut RecordBatchWriter> {
        self.writer.as_mut().ok_or_else(|| Error::internal("file sink without a writer"))
    }

    /// Fit and write `batch` (a merge or rewrite output, never refused half-way).
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let fitted = self.fit(batch)?;
        self.write_fitted(fitted).await
    }

    /// Close the open files and return the `add` actions of everything written.
    pub(crate) async fn finish(&mut self) -> Result<Vec<Add>> {
        let mut adds = std::mem::take(&mut self.finished);
        adds.extend(self.writer_mut()?.flush().await?);
        Ok(adds)
    }

    /// Finish after a run of writes whose outcome is `written`: the `add` actions of
    /// everything written, or, when the writes or the closing failed, the error (the
    /// files written are deleted).
    pub(crate) async fn close(mut self, table: &Table, written: Result<()>) -> Result<Vec<Add>> {
        match (written, self.finish().await) {
            (Ok(()), Ok(adds)) => Ok(adds),
            (Err(e), Ok(adds)) => {
                Self::abort(table, &adds).await;
                Err(e)
            }
            (_, Err(e)) => Err(e),
        }
    }

    /// Delete files that were written but will not be committed (best effort).
    pub(crate) async fn abort(table: &Table, adds: &[Add]) {
        let paths = adds.iter().map(|a| {
            deltalake::Path::from_url_path(&a.path).unwrap_or_else(|_| deltalake::Path::from(a.path.as_str()))
        });
        delete_uncommitted(table.object_store(), paths).await;
    }
}

/// Delete `paths` (relative to the table) that an operation wrote but will not commit:
/// best effort, in one delete stream, a failure logged.
pub(crate) async fn delete_uncommitted(
    store: std::sync::Arc<dyn deltalake::ObjectStore>,
    paths: impl Iterator<Item = deltalake::Path>,
) {
    let paths: Vec<_> = paths.map(Ok).collect();
    if paths.is_empty() {
        return;
    }
    let mut results = store.delete_stream(futures::stream::iter(paths).boxed());
    while let Some(result) = results.next().await {
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not delete an uncommitted file");
        }
    }
}
