//! A buffered writer for producers that receive small batches continuously.
//!
//! Committing every small batch leaves one tiny file and one log entry per batch. A
//! [`TableWriter`] streams incoming batches into open data files and commits them
//! when they reach a size (`max_buffer_bytes`) or an age (`max_age`), or when
//! [`TableWriter::flush`] or [`TableWriter::close`] is called. Age is checked whenever
//! a batch arrives and by [`TableWriter::flush_if_due`], which a producer calls from a
//! timer when input is quiet.
//!
//! Every commit is atomic. Dropping the writer without closing it loses only what
//! was not committed yet; nothing committed is lost and nothing half-written becomes
//! visible (files of an uncommitted buffer are unreferenced and removed by vacuum).
//!
//! A batch that does not fit the table is refused and the buffer stays as it was. If
//! storage fails while writing or committing, the whole buffer is given up and the
//! error says how many rows must be written again.
//!
//! ```no_run
//! # async fn example(batch: deltalake::arrow::array::RecordBatch) -> sediment::Result<()> {
//! use sediment::{Table, TableWriter, TableWriterSettings};
//! let table = Table::open_or_new("/data/bronze/events", Default::default()).await?;
//! let mut writer = TableWriter::new(table, TableWriterSettings::default().partition_by(["date"]));
//! writer.write(batch).await?; // commits by itself when the buffer is big or old enough
//! let table = writer.close().await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use deltalake::arrow::array::RecordBatch;

use crate::error::Result;
use crate::table::Table;
use crate::table::schema::SchemaMode;
use crate::write::append::{BatchError, WriteJob, WriteOptions, WriteReport};
use crate::write::sink::DEFAULT_TARGET_FILE_SIZE;

/// When a [`TableWriter`] commits, and how it writes.
#[derive(Debug, Clone)]
pub struct TableWriterSettings {
    /// Commit once this many bytes of data files are buffered (default 64 MiB).
    pub max_buffer_bytes: usize,
    /// Commit once the oldest uncommitted batch is this old (default 60 s).
    pub max_age: Duration,
    /// Data files are cut at this size (default 128 MiB).
    pub target_file_size: u64,
    /// Partition columns of a new table.
    pub partition_by: Vec<String>,
    /// Refuse or add new columns.
    pub schema_mode: SchemaMode,
}

impl Default for TableWriterSettings {
    fn default() -> Self {
        Self {
            max_buffer_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(60),
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            partition_by: Vec::new(),
            schema_mode: SchemaMode::Strict,
        }
    }
}

impl TableWriterSettings {
    /// Partition a new table by these columns.
    pub fn partition_by<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.partition_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Commit at this many buffered bytes.
    pub fn max_buffer_bytes(mut self, bytes: usize) -> Self {
        self.max_buffer_bytes = bytes;
        self
    }

    /// Commit when the buffer is this old.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Set the schema mode.
    pub fn schema_mode(mut self, mode: SchemaMode) -> Self {
        self.schema_mode = mode;
        self
    }
}

/// Buffers batches into data files and commits them by size or age.
pub struct TableWriter {
    table: Table,
    settings: TableWriterSettings,
    job: Option<(WriteJob, Instant)>,
    commits: Vec<WriteReport>,
}

impl TableWriter {
    /// A writer appending to `table` (created by the first commit if it does not exist).
    pub fn new(table: Table, settings: TableWriterSettings) -> Self {
        Self { table, settings, job: None, commits: Vec::new() }
    }

    /// The table, at the version of the last commit this writer made or saw.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Rows written but not committed yet.
    pub fn buffered_rows(&self) -> u64 {
        self.job.as_ref().map_or(0, |(job, _)| job.rows())
    }

    /// Reports of the commits made so far.
    pub fn commits(&self) -> &[WriteReport] {
        &self.commits
    }

    /// Whether the buffer is due for a commit by size or age.
    pub fn is_due(&self) -> bool {
        match &self.job {
            Some((job, opened)) => {
                job.buffered_bytes() >= self.settings.max_buffer_bytes || opened.elapsed() >= self.settings.max_age
            }
            None => false,
        }
    }

    /// Buffer `batch`; commits (and returns the report) when the buffer is due.
    ///
    /// A batch that does not fit the table is refused with an error and leaves the
    /// buffer as it was.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<Option<WriteReport>> {
        if self.job.is_none() {
            let options = WriteOptions {
                partition_by: self.settings.partition_by.clone(),
                schema_mode: self.settings.schema_mode,
                target_file_size: self.settings.target_file_size,
                ..WriteOptions::append()
            };
            let job = self.table.begin_write(Some(batch.schema()), options)?;
            self.job = Some((job, Instant::now()));
        }
        if let Some((job, _)) = &mut self.job {
            let buffered = job.rows();
            match job.write(&batch).await {
                Ok(()) => {}
                Err(BatchError::Refused(e)) => return Err(e),
                Err(BatchError::Failed(e)) => {
                    // The open files are unusable: give up the whole buffer, loudly.
                    if let Some((job, _)) = self.job.take() {
                        job.abort(&self.table).await;
                    }
                    return Err(e.context(format!(
                        "writing failed; the {buffered} buffered rows and this batch were not committed and must be written again"
                    )));
                }
            }
        }
        self.flush_if_due().await
    }

    /// Commit if the buffer is due by size or age.
    pub async fn flush_if_due(&mut self) -> Result<Option<WriteReport>> {
        if self.is_due() { self.flush().await } else { Ok(None) }
    }

    /// Commit whatever is buffered. Returns `None` when nothing was.
    pub async fn flush(&mut self) -> Result<Option<WriteReport>> {
        let Some((job, _)) = self.job.take() else {
            return Ok(None);
        };
        let rows = job.rows();
        let report = self.table.commit_job(job).await.map_err(|e| {
            e.context(format!("commit failed; the {rows} buffered rows were not committed and must be written again"))
        })?;
        if report.version.is_none() {
            return Ok(None);
        }
        self.commits.push(report.clone());
        Ok(Some(report))
    }

    /// Commit what is buffered and give the table back.
    pub async fn close(mut self) -> Result<Table> {
        self.flush().await?;
        Ok(self.table)
    }
}
