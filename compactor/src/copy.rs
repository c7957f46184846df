//! Copying row groups without decoding them.
//!
//! A row group that is already large (at least
//! [`crate::ExecutorSettings::copy_row_groups_above`] compressed bytes) would only be
//! reproduced by decoding and encoding it again. When a bin's inputs share one
//! Parquet schema that reads as the table's and some of their row groups are large,
//! the executor writes the bin's output by copying those row groups' column chunks as
//! they are (pages, dictionaries, chunk statistics) and decoding only the small row
//! groups, which it encodes together into new row groups of the file; the file is
//! streamed to the store part by part. Small and copied row groups are mixed only
//! when the inputs' schema is exactly the one Sediment's encoder writes for the
//! table; otherwise a bin is copied only if all its row groups are large.
//!
//! The output's Delta statistics are the inputs' merged (see [`merge_stats`]): the
//! least minimum, the greatest maximum, summed null counts and rows. Each is a valid
//! bound of the copied rows, whatever writer produced the inputs; a column some input
//! has no statistics for gets none.
//!
//! Inputs with deletion vectors, clustered bins and inputs whose schema differs (an
//! older file missing a column added later, another physical type) take the
//! decoding path. Page indexes of copied chunks are carried over (their offsets
//! moved) when every copied chunk has one; otherwise the file has none, and copied
//! and encoded row groups are not mixed.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use deltalake::kernel::Add;
use deltalake::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use deltalake::parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStream;
use deltalake::parquet::arrow::{ArrowSchemaConverter, ParquetRecordBatchStreamBuilder, parquet_to_arrow_schema};
use deltalake::parquet::column::writer::ColumnCloseResult;
use deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use deltalake::parquet::file::reader::{ChunkReader, Length};
use deltalake::parquet::file::writer::SerializedFileWriter;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde_json::{Map, Value};

use crate::error::{CompactionError, Result};
use crate::reader::StoreFileReader;

/// One input of a bin that can be copied: its `add`, its footer, and per row group
/// whether it is copied (else decoded and encoded again).
pub(crate) struct CopyInput {
    pub add: Add,
    pub metadata: Arc<ParquetMetaData>,
    pub copy: Vec<bool>,
}

/// The inputs' footers, and which row groups to copy, when some row group is at
/// least `threshold` compressed bytes, the inputs share one schema that reads as
/// `file_schema`, and every input has statistics; `None` when the bin must be
/// decoded whole.
pub(crate) async fn copyable(
    store: &Arc<dyn object_store::ObjectStore>,
    adds: Vec<Add>,
    file_schema: &SchemaRef,
    threshold: u64,
) -> Result<Option<Vec<CopyInput>>> {
    if adds.iter().any(|a| a.deletion_vector.is_some() || a.stats.is_none()) {
        return Ok(None);
    }
    // A row group of `threshold` bytes needs a file at least that large: without one,
    // no footer is worth reading (the decoding path reads them anyway).
    if adds.iter().all(|a| (a.size.max(0) as u64) < threshold) {
        return Ok(None);
    }
    let mut inputs: Vec<CopyInput> = Vec::with_capacity(adds.len());
    for add in adds {
        let path = Path::from_url_path(&add.path)
            .map_err(|e| CompactionError::Data(format!("bad data file path {}: {e}", add.path)))?;
        let size = add.size.max(0) as u64;
        let mut reader = StoreFileReader::new(store.clone(), path, size);
        // The page indexes too, carried over for copied chunks. A storage error is
        // transient (the bin is retried), anything else names the file.
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .with_prefetch_hint(Some(64 * 1024))
            .load_and_finish(&mut reader, size)
            .await
            .map_err(|e| CompactionError::reading(&add.path, e))?;
        let metadata = Arc::new(metadata);
        let descr = metadata.file_metadata().schema_descr();
        match inputs.first() {
            None => {
                let arrow = parquet_to_arrow_schema(descr, metadata.file_metadata().key_value_metadata())
                    .map_err(|e| CompactionError::Data(format!("cannot read the schema of {}: {e}", add.path)))?;
                if !same_columns(arrow.fields(), file_schema.fields()) {
                    return Ok(None);
                }
            }
            Some(first) if first.metadata.file_metadata().schema_descr().root_schema() != descr.root_schema() => {
                return Ok(None);
            }
            Some(_) => {}
        }
        let copy = metadata.row_groups().iter().map(|rg| rg.compressed_size().max(0) as u64 >= threshold).collect();
        inputs.push(CopyInput { add, metadata, copy });
    }
    let copied = inputs.iter().flat_map(|i| &i.copy).filter(|c| **c).count();
    let decoded = inputs.iter().flat_map(|i| &i.copy).filter(|c| !**c).count();
    if copied == 0 {
        return Ok(None);
    }
    if decoded > 0 {
        // Encoded row groups carry offset indexes; a file's offset indexes must cover
        // all its row groups or none, so every copied one needs its own.
        if !copied_chunks_indexed(&inputs) {
            return Ok(None);
        }
        // Encoded row groups must have exactly the copied ones' schema.
        let ours = ArrowSchemaConverter::new()
            .convert(file_schema)
            .map_err(|e| CompactionError::Data(format!("cannot convert the table schema to parquet: {e}")))?;
        if ours.root_schema() != inputs[0].metadata.file_metadata().schema_descr().root_schema() {
            return Ok(None);
        }
    }
    Ok(Some(inputs))
}

/// Whether every row group to be copied has an offset index for each column chunk.
fn copied_chunks_indexed(inputs: &[CopyInput]) -> bool {
    inputs.iter().all(|input| {
        input.copy.iter().enumerate().filter(|(_, copy)| **copy).all(|(group, _)| {
            let columns = input.metadata.row_group(group).num_columns();
            input
                .metadata
                .offset_index()
                .and_then(|index| index.get(group))
                .is_some_and(|chunks| chunks.len() == columns)
        })
    })
}

/// Same names and types, in order (nullability aside).
fn same_columns(a: &Fields, b: &Fields) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// A byte range of a file, read as if it were the file.
pub(crate) struct Range {
    pub start: u64,
    pub bytes: Bytes,
}

impl Length for Range {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for Range {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> deltalake::parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let offset = start.checked_sub(self.start).filter(|o| *o <= self.bytes.len() as u64).ok_or_else(|| {
            deltalake::parquet::errors::ParquetError::General(format!("offset {start} outside the fetched range"))
        })?;
        Ok(self.bytes.slice(offset as usize..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> deltalake::parquet::errors::Result<Bytes> {
        let offset = start.checked_sub(self.start).map(|o| o as usize);
        match offset {
            Some(o) if o + length <= self.bytes.len() => Ok(self.bytes.slice(o..o + length)),
            _ => Err(deltalake::parquet::errors::ParquetError::General(format!(
                "range {start}+{length} outside the fetched range"
            ))),
        }
    }
}

/// What copying a bin produced.
pub(crate) struct Copied {
    pub add: Add,
    pub rows: u64,
    pub bytes_read: u64,
}

/// Write one file from a bin's `inputs`' row groups, in order: copied, or decoded
/// and encoded together into row groups of about `target_file_size / 8`.
pub(crate) async fn copy_bin(
    store: &Arc<dyn object_store::ObjectStore>,
    inputs: &[CopyInput],
    file_schema: &SchemaRef,
    target_file_size: u64,
) -> Result<Copied> {
    let first = inputs.first().ok_or_else(|| CompactionError::Invalid("a bin without inputs".into()))?;
    // Next to the first input, in its partition's directory.
    let directory = first.add.path.rsplit_once('/').map(|(dir, _)| format!("{dir}/")).unwrap_or_default();
    let name = format!("{directory}part-00000-{}-c000.parquet", uuid::Uuid::new_v4());
    let location =
        Path::from_url_path(&name).map_err(|e| CompactionError::Data(format!("bad output path {name}: {e}")))?;
    let upload = store.put_multipart(&location).await.map_err(|e| CompactionError::Storage(e.to_string()))?;
    let mut upload = WriteMultipart::new(upload);
    let written = write_copies(store, inputs, file_schema, target_file_size, &mut upload).await;
    let (size, rows, bytes_read) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = upload.abort().await;
            return Err(e);
        }
    };
    upload.finish().await.map_err(|e| CompactionError::Storage(format!("writing {name}: {e}")))?;
    let stats: Vec<&str> = inputs.iter().filter_map(|i| i.add.stats.as_deref()).collect();
    let add = Add {
        path: name,
        partition_values: first.add.partition_values.clone(),
        size: size as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: false,
        stats: merge_stats(&stats, file_schema),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    };
    Ok(Copied { add, rows, bytes_read })
}

/// The bytes the file writer produced and the upload has not taken yet; shared so
/// they can be taken between column chunks, while a row group is open.
#[derive(Clone, Default)]
pub(crate) struct Pending(Arc<std::sync::Mutex<Vec<u8>>>);

impl Pending {
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::io::Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parts of the output being uploaded at once, at most.
pub(crate) const PARTS_IN_FLIGHT: usize = 2;

/// Small row groups decoded and waiting to be written as one row group.
struct Encoder {
    writers: Vec<ArrowColumnWriter>,
    rows: u64,
}

/// Write `inputs`' row groups into `upload`: copied ones one column chunk at a time
/// (fetched, appended, handed to the upload), small ones decoded into an encoder
/// that becomes a row group when it holds about a row group's bytes (or before the
/// next copied row group, and at the end). Returns the file's size, its rows and the
/// bytes read.
async fn write_copies(
    store: &Arc<dyn object_store::ObjectStore>,
    inputs: &[CopyInput],
    file_schema: &SchemaRef,
    target_file_size: u64,
    upload: &mut WriteMultipart,
) -> Result<(u64, u64, u64)> {
    let first = &inputs[0].metadata;
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    // Settings of the row groups it encodes: chosen from a sample of the first one.
    let properties = match sample(store, inputs).await? {
        Some(batch) => crate::encoding::writer_properties_for(target_file_size, &batch),
        None => crate::encoding::writer_properties(target_file_size),
    }
    .into_builder()
    .set_created_by(format!("sediment-compactor {} (row groups copied)", env!("CARGO_PKG_VERSION")))
    .set_key_value_metadata(first.file_metadata().key_value_metadata().cloned())
    .build();
    let pending = Pending::default();
    let mut writer = SerializedFileWriter::new(pending.clone(), schema, Arc::new(properties))?;
    let factory = ArrowRowGroupWriterFactory::new(&writer, file_schema.clone());
    // Page indexes of copied chunks are carried over only if every copied chunk has one.
    let indexed = copied_chunks_indexed(inputs);
    let mut groups_written = 0usize;
    let row_group_bytes = crate::encoding::row_group_bytes(target_file_size);
    let mut encoder: Option<Encoder> = None;
    let (mut size, mut rows, mut bytes_read) = (0u64, 0u64, 0u64);
    for input in inputs {
        let path = Path::from_url_path(&input.add.path)
            .map_err(|e| CompactionError::Data(format!("bad data file path {}: {e}", input.add.path)))?;
        for (index, group) in input.metadata.row_groups().iter().enumerate() {
            if !input.copy[index] {
                let mut stream = row_group_batches(store, input, path.clone(), index)?;
                bytes_read += group.compressed_size().max(0) as u64;
                while let Some(batch) =
                    stream.try_next().await.map_err(|e| CompactionError::reading(&input.add.path, e))?
                {
                    let state = match &mut encoder {
                        Some(state) => state,
                        None => {
                            let writers = factory.create_column_writers(groups_written)?;
                            encoder.insert(Encoder { writers, rows: 0 })
                        }
                    };
                    let mut writers = state.writers.iter_mut();
                    for (field, column) in file_schema.fields().iter().zip(batch.columns()) {
                        for leaf in compute_leaves(field, column)? {
                            writers
                                .next()
                                .ok_or_else(|| CompactionError::Data("more leaf columns than writers".into()))?
                                .write(&leaf)?;
                        }
                    }
                    state.rows += batch.num_rows() as u64;
                    if state.writers.iter().map(|w| w.get_estimated_total_bytes()).sum::<usize>() >= row_group_bytes {
                        size += flush_encoder(&mut writer, &mut encoder, &pending, upload).await?;
                        groups_written += 1;
                    }
                }
                rows += group.num_rows().max(0) as u64;
                continue;
            }
            if encoder.is_some() {
                size += flush_encoder(&mut writer, &mut encoder, &pending, upload).await?;
                groups_written += 1;
            }
            let mut group_writer = writer.next_row_group()?;
            for (position, column) in group.columns().iter().enumerate() {
                let start = column.dictionary_page_offset().unwrap_or_else(|| column.data_page_offset()).max(0) as u64;
                let length = column.compressed_size().max(0) as u64;
                let bytes = store
                    .get_range(&path, start..start + length)
                    .await
                    .map_err(|e| CompactionError::Storage(format!("reading {}: {e}", input.add.path)))?;
                bytes_read += length;
                let close = ColumnCloseResult {
                    bytes_written: length,
                    rows_written: group.num_rows().max(0) as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: indexed
                        .then(|| input.metadata.column_index()?.get(index)?.get(position).cloned())
                        .flatten(),
                    offset_index: indexed
                        .then(|| input.metadata.offset_index()?.get(index)?.get(position).cloned())
                        .flatten(),
                };
                group_writer.append_column(&Range { start, bytes }, close).map_err(|e| {
                    CompactionError::Data(format!("cannot copy a column chunk of {}: {e}", input.add.path))
                })?;
                size += hand_over(&pending, upload).await?;
            }
            group_writer.close()?;
            groups_written += 1;
            rows += group.num_rows().max(0) as u64;
        }
    }
    size += flush_encoder(&mut writer, &mut encoder, &pending, upload).await?;
    // The footer.
    writer.close()?;
    let rest = pending.take();
    size += rest.len() as u64;
    upload.write(&rest);
    Ok((size, rows, bytes_read))
}

/// The first batch of the first row group to be decoded, if any.
async fn sample(store: &Arc<dyn object_store::ObjectStore>, inputs: &[CopyInput]) -> Result<Option<RecordBatch>> {
    for input in inputs {
        let Some(index) = input.copy.iter().position(|copy| !copy) else { continue };
        let path = Path::from_url_path(&input.add.path)
            .map_err(|e| CompactionError::Data(format!("bad data file path {}: {e}", input.add.path)))?;
        let mut stream = row_group_batches(store, input, path, index)?;
        return stream.try_next().await.map_err(|e| CompactionError::reading(&input.add.path, e));
    }
    Ok(None)
}

/// The batches of row group `index` of `input` (at `path`), decoded.
fn row_group_batches(
    store: &Arc<dyn object_store::ObjectStore>,
    input: &CopyInput,
    path: Path,
    index: usize,
) -> Result<ParquetRecordBatchStream<StoreFileReader>> {
    let reader = StoreFileReader::new(store.clone(), path, input.add.size.max(0) as u64);
    let metadata = ArrowReaderMetadata::try_new(input.metadata.clone(), Default::default())?;
    Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_row_groups(vec![index])
        .with_batch_size(8192)
        .build()?)
}

/// Write the encoder's rows, if any, as one row group; returns the bytes handed over.
async fn flush_encoder(
    writer: &mut SerializedFileWriter<Pending>,
    encoder: &mut Option<Encoder>,
    pending: &Pending,
    upload: &mut WriteMultipart,
) -> Result<u64> {
    let Some(state) = encoder.take() else { return Ok(0) };
    let mut group_writer = writer.next_row_group()?;
    for column in state.writers {
        column.close()?.append_to_row_group(&mut group_writer)?;
    }
    group_writer.close()?;
    hand_over(pending, upload).await
}

/// Move what the file writer produced to the upload; returns its length.
async fn hand_over(pending: &Pending, upload: &mut WriteMultipart) -> Result<u64> {
    let chunk = pending.take();
    upload.write(&chunk);
    upload.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| CompactionError::Storage(e.to_string()))?;
    Ok(chunk.len() as u64)
}

/// Delta file statistics of a file holding the rows of files with statistics
/// `stats`: rows and null counts summed, the least minimum and the greatest maximum
/// of each column every input has them for (compared as `schema` types them).
/// Columns of types whose JSON form does not compare safely (binary, decimals above
/// 15 digits, lists) get no bounds.
pub fn merge_stats(stats: &[&str], schema: &SchemaRef) -> Option<String> {
    let parsed: Vec<Map<String, Value>> = stats
        .iter()
        .map(|s| match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let rows: u64 = parsed.iter().map(|m| m.get("numRecords").and_then(Value::as_u64)).sum::<Option<u64>>()?;
    let section = |name: &str| -> Vec<Option<&Map<String, Value>>> {
        parsed.iter().map(|m| m.get(name).and_then(Value::as_object)).collect()
    };
    let mut out = Map::new();
    out.insert("numRecords".into(), Value::from(rows));
    let fields = schema.fields();
    if let Some(min) = merge_bounds(&section("minValues"), fields, std::cmp::Ordering::Less) {
        out.insert("minValues".into(), Value::Object(min));
    }
    if let Some(max) = merge_bounds(&section("maxValues"), fields, std::cmp::Ordering::Greater) {
        out.insert("maxValues".into(), Value::Object(max));
    }
    if let Some(nulls) = merge_null_counts(&section("nullCount"), fields) {
        out.insert("nullCount".into(), Value::Object(nulls));
    }
    if parsed.iter().any(|m| m.get("tightBounds") == Some(&Value::Bool(false))) {
        out.insert("tightBounds".into(), Value::Bool(false));
    }
    Some(Value::Object(out).to_string())
}

/// Per column, the input value that is furthest in `direction` (Less: the minimum).
fn merge_bounds(
    inputs: &[Option<&Map<String, Value>>],
    fields: &Fields,
    direction: std::cmp::Ordering,
) -> Option<Map<String, Value>> {
    let inputs: Vec<&Map<String, Value>> = inputs.iter().copied().collect::<Option<_>>()?;
    let mut out = Map::new();
    for field in fields {
        let values: Option<Vec<&Value>> = inputs.iter().map(|m| m.get(field.name())).collect();
        let Some(values) = values else { continue };
        if let DataType::Struct(children) = field.data_type() {
            let nested: Vec<Option<&Map<String, Value>>> = values.iter().map(|v| v.as_object()).collect();
            if let Some(merged) = merge_bounds(&nested, children, direction)
                && !merged.is_empty()
            {
                out.insert(field.name().clone(), Value::Object(merged));
            }
            continue;
        }
        let mut best: Option<&Value> = None;
        let mut comparable = true;
        for value in values {
            match best {
                None => best = Some(value),
                Some(current) => match compare(field, value, current) {
                    Some(order) if order == direction => best = Some(value),
                    Some(_) => {}
                    None => comparable = false,
                },
            }
        }
        if comparable
            && let Some(best) = best
            && compare(field, best, best).is_some()
        {
            out.insert(field.name().clone(), best.clone());
        }
    }
    Some(out)
}

/// Summed null counts of the columns every input counts.
fn merge_null_counts(inputs: &[Option<&Map<String, Value>>], fields: &Fields) -> Option<Map<String, Value>> {
    let inputs: Vec<&Map<String, Value>> = inputs.iter().copied().collect::<Option<_>>()?;
    let mut out = Map::new();
    for field in fields {
        let values: Option<Vec<&Value>> = inputs.iter().map(|m| m.get(field.name())).collect();
        let Some(values) = values else { continue };
        match field.data_type() {
            DataType::Struct(children) => {
                let nested: Vec<Option<&Map<String, Value>>> = values.iter().map(|v| v.as_object()).collect();
                if let Some(merged) = merge_null_counts(&nested, children)
                    && !merged.is_empty()
                {
                    out.insert(field.name().clone(), Value::Object(merged));
                }
            }
            _ => {
                if let Some(sum) = values.iter().map(|v| v.as_u64()).sum::<Option<u64>>() {
                    out.insert(field.name().clone(), Value::from(sum));
                }
            }
        }
    }
    Some(out)
}

/// `a` against `b` as `field`'s type orders them; `None` when the type's JSON form
/// is not compared safely or a value does not parse.
fn compare(field: &Field, a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    use DataType as D;
    match field.data_type() {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => {
            Some(a.as_i64()?.cmp(&b.as_i64()?))
        }
        D::UInt64 => Some(a.as_u64()?.cmp(&b.as_u64()?)),
        D::Float16 | D::Float32 | D::Float64 => a.as_f64()?.partial_cmp(&b.as_f64()?),
        // Above 15 digits a JSON number need not survive a round trip through f64.
        D::Decimal128(precision, _) | D::Decimal256(precision, _) if *precision <= 15 => {
            a.as_f64()?.partial_cmp(&b.as_f64()?)
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => Some(a.as_str()?.cmp(b.as_str()?)),
        D::Date32 | D::Date64 => {
            let parse = |v: &Value| chrono::NaiveDate::parse_from_str(v.as_str()?, "%Y-%m-%d").ok();
            Some(parse(a)?.cmp(&parse(b)?))
        }
        D::Timestamp(_, _) => {
            let parse = |v: &Value| {
                let text = v.as_str()?;
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|t| t.naive_utc())
                    .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
                    .ok()
            };
            Some(parse(a)?.cmp(&parse(b)?))
        }
        D::Boolean => Some(a.as_bool()?.cmp(&b.as_bool()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::datatypes::{Schema, TimeUnit};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("day", DataType::Date32, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("blob", DataType::Binary, true),
            Field::new("s", DataType::Struct(vec![Field::new("x", DataType::Float64, true)].into()), true),
        ]))
    }

    #[test]
    fn merged_statistics_bound_every_input() {
        let a = r#"{"numRecords":10,"minValues":{"id":5,"name":"b","day":"2024-05-02","at":"2024-05-02T10:00:00.000Z","blob":"x","s":{"x":1.5}},"maxValues":{"id":90,"name":"m","day":"2024-05-03","at":"2024-05-03T00:00:00.000Z","s":{"x":2.0}},"nullCount":{"id":0,"name":1,"day":0,"at":0,"s":{"x":0}}}"#;
        let b = r#"{"numRecords":5,"minValues":{"id":-3,"name":"c","day":"2024-05-01","at":"2024-05-01T23:59:59.999+00:00","s":{"x":-1.0}},"maxValues":{"id":7,"name":"zz","day":"2024-05-01","at":"2024-05-04T00:00:00.000Z","s":{"x":9.5}},"nullCount":{"id":0,"name":2,"day":3,"at":0,"s":{"x":4}}}"#;
        let merged: Value = serde_json::from_str(&merge_stats(&[a, b], &schema()).unwrap()).unwrap();
        assert_eq!(merged["numRecords"], 15);
        assert_eq!(merged["minValues"]["id"], -3);
        assert_eq!(merged["maxValues"]["id"], 90);
        assert_eq!(merged["minValues"]["name"], "b");
        assert_eq!(merged["maxValues"]["name"], "zz");
        assert_eq!(merged["minValues"]["day"], "2024-05-01");
        assert_eq!(merged["maxValues"]["day"], "2024-05-03");
        assert_eq!(merged["minValues"]["at"], "2024-05-01T23:59:59.999+00:00");
        assert_eq!(merged["maxValues"]["at"], "2024-05-04T00:00:00.000Z");
        assert_eq!(merged["minValues"]["s"]["x"], -1.0);
        assert_eq!(merged["maxValues"]["s"]["x"], 9.5);
        assert_eq!(merged["nullCount"]["name"], 3);
        assert_eq!(merged["nullCount"]["s"]["x"], 4);
        // Binary has no safe order; a column only one input bounds gets no bound.
        assert!(merged["minValues"].get("blob").is_none());
        assert!(merged.get("tightBounds").is_none());
    }

    #[test]
    fn missing_statistics_give_none_or_fewer_bounds() {
        let a = r#"{"numRecords":1,"minValues":{"id":1},"maxValues":{"id":1},"nullCount":{"id":0}}"#;
        let b = r#"{"numRecords":1}"#;
        let merged: Value = serde_json::from_str(&merge_stats(&[a, b], &schema()).unwrap()).unwrap();
        assert_eq!(merged["numRecords"], 2);
        assert!(merged.get("minValues").is_none() && merged.get("nullCount").is_none());
        assert!(merge_stats(&[a, r#"{"minValues":{}}"#], &schema()).is_none(), "no row count: no statistics");
        assert!(merge_stats(&[a, "not json"], &schema()).is_none());
        let wide = r#"{"numRecords":1,"tightBounds":false}"#;
        let merged: Value = serde_json::from_str(&merge_stats(&[a, wide], &schema()).unwrap()).unwrap();
        assert_eq!(merged["tightBounds"], false);
    }
}
