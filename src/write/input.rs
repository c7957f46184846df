//! Reading input files (Parquet, CSV, NDJSON) as record batches.
//!
//! The format is taken from the extension: `.parquet`; `.csv`; `.ndjson`, `.jsonl` or
//! `.json` (one JSON object per line). CSV files need a header line; CSV and NDJSON
//! schemas are inferred from the first 1,000 records, and a later record that does
//! not fit is an error naming the file.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};

const INFER_RECORDS: usize = 1000;
const BATCH_ROWS: usize = 64 * 1024;

/// The formats `sediment append` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header line.
    Csv,
    /// Newline-delimited JSON objects.
    NdJson,
}

impl FileFormat {
    /// The format of `path`, from its extension.
    pub fn of(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "ndjson" | "jsonl" | "json" => Ok(Self::NdJson),
            _ => Err(Error::invalid(format!(
                "file {}: unknown format {ext:?}; expected .parquet, .csv, .ndjson, .jsonl or .json",
                path.display()
            ))),
        }
    }
}

/// A file opened for reading: its schema and an iterator of batches.
pub struct SourceFile {
    /// The schema of the file's batches.
    pub schema: SchemaRef,
    /// The batches; errors name the file.
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
}

/// Open `path` for reading, inferring the format from the extension. Columns of a
/// text file (CSV, NDJSON) that `table` (the schema of the table it goes to) also has
/// are read in the table's types, not inferred ones: `2024-05-01` stays a string for a
/// string column; a value that does not parse as its column's type is an error
/// naming the file.
pub fn open_source_file(path: &Path, table: Option<&SchemaRef>) -> Result<SourceFile> {
    let name = path.display().to_string();
    let fail = move |what: &str, e: &dyn std::fmt::Display| Error::invalid(format!("file {name}: {what}: {e}"));
    let format = FileFormat::of(path)?;
    let mut file = File::open(path).map_err(|e| fail("cannot open", &e))?;
    let name = path.display().to_string();
    let context = move |e: deltalake::arrow::error::ArrowError| Error::invalid(format!("file {name}: {e}"));
    match format {
        FileFormat::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| fail("not a readable parquet file", &e))?
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| fail("not a readable parquet file", &e))?;
            let schema = deltalake::arrow::array::RecordBatchReader::schema(&reader);
            Ok(SourceFile { schema, batches: Box::new(reader.map(move |b| b.map_err(&context))) })
        }
        FileFormat::Csv => {
            let format = arrow_csv::reader::Format::default().with_header(true);
            let (schema, _) = format
                .infer_schema(&mut BufReader::new(&file), Some(INFER_RECORDS))
                .map_err(|e| fail("not valid csv", &e))?;
            if schema.fields().is_empty() {
                return Err(fail("not valid csv", &"no header line"));
            }
            file.rewind().map_err(|e| fail("cannot read", &e))?;
            let schema = with_table_types(schema, table);
            let reader = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_format(format)
                .with_batch_size(BATCH_ROWS)
                .build(file)
                .map_err(|e| fail("not valid csv", &e))?;
            Ok(SourceFile { schema, batches: Box::new(reader.map(move |b| b.map_err(&context))) })
        }
        FileFormat::NdJson => {
            let (schema, _) =
                arrow_json::reader::infer_json_schema_from_seekable(BufReader::new(&file), Some(INFER_RECORDS))
                    .map_err(|e| fail("not valid newline-delimited json", &e))?;
            if schema.fields().is_empty() {
                return Err(fail("not valid newline-delimited json", &"no fields found"));
            }
            file.rewind().map_err(|e| fail("cannot read", &e))?;
            let schema = with_table_types(schema, table);
            let reader = arrow_json::ReaderBuilder::new(schema.clone())
                .with_batch_size(BATCH_ROWS)
                .build(BufReader::new(file))
                .map_err(|e| fail("not valid newline-delimited json", &e))?;
            Ok(SourceFile { schema, batches: Box::new(reader.map(move |b| b.map_err(&context))) })
        }
    }
}

/// `inferred` with the types of `table`'s columns of the same names.
fn with_table_types(inferred: Schema, table: Option<&SchemaRef>) -> SchemaRef {
    let Some(table) = table else { return std::sync::Arc::new(inferred) };
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| match table.field_with_name(f.name()) {
            Ok(column) => Field::new(f.name(), column.data_type().clone(), true),
            Err(_) => f.as_ref().clone(),
        })
        .collect();
    std::sync::Arc::new(Schema::new(fields))
}

/// The batches of `paths`, one file after the other, each opened only when the one
/// before it is read. Every path is checked first (it exists and has a known
/// format), so a typo fails before anything is read; errors name the file.
pub fn read_files(
    paths: &[std::path::PathBuf],
    table: Option<SchemaRef>,
) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send + use<>> {
    for path in paths {
        FileFormat::of(path)?;
        std::fs::metadata(path).map_err(|e| Error::invalid(format!("file {}: cannot open: {e}", path.display())))?;
    }
    let paths = paths.to_vec();
    Ok(paths.into_iter().flat_map(move |path| {
        let batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> =
            match open_source_file(&path, table.as_ref()) {
                Ok(file) => file.batches,
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        batches
    }))
}
