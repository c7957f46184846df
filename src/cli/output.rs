//! Writing a stream of record batches as a table, CSV, NDJSON or Parquet, to
//! standard output or a file: what `scan` and `changes` print.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;
use futures::{Stream, StreamExt};

use crate::arrow::array::RecordBatch;
use crate::arrow::datatypes::SchemaRef;
use crate::arrow::util::pretty::pretty_format_batches;

/// How rows are printed.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum OutputFormat {
    Table,
    Csv,
    Ndjson,
    Parquet,
}

impl OutputFormat {
    /// The format asked for, or the default: a table for people, NDJSON with `--json`.
    pub(crate) fn or_default(format: Option<Self>, json: bool) -> Self {
        format.unwrap_or(if json { Self::Ndjson } else { Self::Table })
    }

    /// Refuse Parquet to a terminal before anything runs.
    pub(crate) fn check(self, output: &Option<PathBuf>) -> anyhow::Result<()> {
        if self == Self::Parquet && output.is_none() {
            anyhow::bail!(crate::Error::invalid("--format parquet needs --output PATH"));
        }
        Ok(())
    }
}

/// Write every batch of `batches` (with `schema`) in `format` to `output` (standard
/// output when `None`); returns the rows written.
pub(crate) async fn write_batches<S>(
    mut batches: S,
    schema: SchemaRef,
    format: OutputFormat,
    output: Option<&PathBuf>,
) -> anyhow::Result<u64>
where
    S: Stream<Item = crate::Result<RecordBatch>> + Unpin,
{
    let mut out: Box<dyn Write + Send> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut rows = 0u64;
    match format {
        OutputFormat::Table => {
            let mut all: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                all.push(batch);
            }
            if all.is_empty() {
                all.push(RecordBatch::new_empty(schema.clone()));
            }
            writeln!(out, "{}", pretty_format_batches(&all)?)?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(&mut out);
            let mut wrote = false;
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
                wrote = true;
            }
            if !wrote {
                writer.write(&RecordBatch::new_empty(schema.clone()))?;
            }
        }
        OutputFormat::Ndjson => {
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
        }
        OutputFormat::Parquet => {
            let mut writer = crate::deltalake::parquet::arrow::ArrowWriter::try_new(
                &mut out,
                schema.clone(),
                Some(crate::writer_properties(crate::DEFAULT_TARGET_FILE_SIZE)),
            )?;
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.close()?;
        }
    }
    out.flush()?;
    Ok(rows)
}
