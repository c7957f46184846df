//! Compacting small files by rewriting only the columns that need it.
//!
//! A bin of small files (each read whole in one GET) is written into one file whose
//! row groups hold the inputs' rows in order. Most of a rewrite's work is zstd and
//! the column encoders, and for a column written without a dictionary that work only
//! reproduces pages the inputs already hold: such a column's pages are *spliced*, its
//! input chunks' bytes (page headers and compressed pages) copied one after another
//! into the output's column chunk, with no decoding. The other columns (dictionary
//! encoded, nested, of another codec, with pages too small to keep) are decoded and
//! encoded as before, alone: the reader decodes only their columns.
//!
//! A column chunk of an input is spliced when all of these hold:
//! - the input has the table's columns in name, order and nesting, decodes as the
//!   table's Arrow schema (else the bin takes the decoding path), and a Parquet
//!   writer known to write valid page statistics made it (parquet-rs, delta-rs or
//!   Sediment; another writer's files are decoded whole);
//! - the column's Parquet type and levels are exactly the ones Sediment writes for
//!   the table (a REQUIRED column of another writer under a nullable table column is
//!   decoded: its pages carry no definition levels);
//! - the column is a top-level primitive column, zstd-compressed, without a
//!   dictionary page or dictionary-encoded pages;
//! - the chunk has statistics, a column index and an offset index, with a sort order
//!   whose bounds merge safely (not INT96, fixed-length or signed byte arrays);
//! - its pages hold at least `min_page_rows` rows, or [`SPLICE_PAGE_BYTES`] bytes
//!   before compression, on average, so small pages are not carried over (they would
//!   compress worse and bloat the page index); a page the writer cut at its size
//!   limit ([`crate::encoding::DATA_PAGE_BYTES`]) is not small, however few its rows;
//! - the output does not keep a dictionary for the column: each column's encoding is
//!   chosen from a first batch of the first input, for the rows of the whole bin
//!   ([`crate::encoding::writer_properties_for_rows`]), and a column of few values
//!   that an input wrote plain is encoded with its dictionary.
//!
//! The set of spliced columns is chosen per output row group from its first input
//! row group; an input row group that cannot splice one of them starts a new row
//! group. The output chunk's statistics are the inputs' merged (least minimum,
//! greatest maximum, summed nulls), its column index and offset index the inputs'
//! pages in order, their offsets and first rows moved. Its Delta statistics are the
//! inputs' merged ([`crate::copy::merge_stats`]), as for copied row groups.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::Add;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use deltalake::parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use deltalake::parquet::arrow::{ArrowSchemaConverter, ProjectionMask};
use deltalake::parquet::basic::{Compression, Encoding, SortOrder, Type as PhysicalType};
use deltalake::parquet::column::writer::ColumnCloseResult;
use deltalake::parquet::data_type::AsBytes;
use deltalake::parquet::file::metadata::ParquetMetaDataReader;
use deltalake::parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, PageIndexPolicy, ParquetMetaData};
use deltalake::parquet::file::page_index::column_index::ColumnIndexMetaData;
use deltalake::parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::file::statistics::{Statistics, ValueStatistics};
use deltalake::parquet::file::writer::SerializedFileWriter;
use deltalake::parquet::schema::types::SchemaDescriptor;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::copy::{Copied, Pending, Range};
use crate::error::{CompactionError, Result};
use crate::io::{BytesPermit, EarlyFetches, IoLimiter, IoSettings};

/// Default of [`crate::ExecutorSettings::splice_pages_above_rows`].
pub const DEFAULT_SPLICE_PAGES_ABOVE_ROWS: u64 = 4096;

/// Pages of at least this many bytes before compression, on average, are spliced
/// whatever their rows: half the size at which Sediment's writers cut a page.
pub const SPLICE_PAGE_BYTES: u64 = crate::encoding::DATA_PAGE_BYTES as u64 / 2;

/// An output larger than this is uploaded in parts as it is written; a smaller one
/// in one PUT at the end.
pub(crate) const SINGLE_PUT_BELOW: usize = 16 * 1024 * 1024;

/// What splicing a bin needs from the executor.
pub(crate) struct SpliceContext<'a> {
    pub store: &'a Arc<dyn object_store::ObjectStore>,
    pub limiter: &'a Arc<IoLimiter>,
    pub io: &'a IoSettings,
    pub file_schema: &'a SchemaRef,
    pub target_file_size: u64,
    pub min_page_rows: u64,
    /// Rows the output will hold, when known (for the choice of its encodings).
    pub expected_rows: Option<u64>,
    /// [`SINGLE_PUT_BELOW`] but in tests.
    pub single_put_below: usize,
    /// Inputs fetched before the bin started.
    pub early: &'a EarlyFetches,
}

/// Whether a bin of `adds` can take this path at all: every input read whole, with
/// statistics and no deletion vector.
pub(crate) fn applies(adds: &[Add], io: &IoSettings) -> bool {
    !adds.is_empty()
        && adds.iter().all(|a| a.deletion_vector.is_none() && a.stats.is_some() && io.reads_whole(a.size.max(0) as u64))
}

/// One fetched input: its `add`, bytes and footer (page indexes included), and its
/// share of the byte budget.
struct Fetched {
    add: Add,
    bytes: Bytes,
    metadata: Arc<ParquetMetaData>,
    _permit: BytesPermit,
}

async fn fetch(cx: &SpliceContext<'_>, add: Add) -> Result<Fetched> {
    let size = add.size.max(0) as u64;
    let (reader, permit) =
        crate::reader::open_input_file(cx.early, cx.store, cx.limiter, cx.io, &add.path, size).await?;
    // `applies` admits only files read whole.
    let bytes =
        reader.fetched_bytes().ok_or_else(|| CompactionError::Storage(format!("{} was not fetched", add.path)))?;
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&bytes)
        .map_err(|e| CompactionError::reading(&add.path, e))?;
    Ok(Fetched { add, bytes, metadata: Arc::new(metadata), _permit: permit })
}

/// Whether the writer that made a file is one whose page statistics are trusted as
/// they are (old parquet-mr releases wrote wrong byte-array bounds; their pages must
/// not be relabelled as Sediment's).
fn trusted_writer(metadata: &ParquetMetaData) -> bool {
    let trusted = ["parquet-rs", "delta-rs", "sediment"];
    metadata.file_metadata().created_by().is_some_and(|by| trusted.iter().any(|writer| by.starts_with(writer)))
}

/// Per leaf column of row group `group`, whether its chunk can be spliced.
fn spliceable(metadata: &ParquetMetaData, group: usize, min_page_rows: u64, ours: &SchemaDescriptor) -> Vec<bool> {
    let descr = metadata.file_metadata().schema_descr();
    let row_group = metadata.row_group(group);
    let rows = row_group.num_rows().max(0) as u64;
    (0..descr.num_columns())
        .map(|leaf| {
            let column = descr.column(leaf);
            let chunk = row_group.column(leaf);
            let Some(pages) = metadata.offset_index().and_then(|i| i.get(group)?.get(leaf)) else { return false };
            let Some(index) = metadata.column_index().and_then(|i| i.get(group)?.get(leaf)) else { return false };
            let pages = pages.page_locations().len() as u64;
            descr.get_column_root(leaf).is_primitive()
                && column.self_type() == ours.column(leaf).self_type()
                && column.max_def_level() == ours.column(leaf).max_def_level()
                && column.max_rep_level() == 0
                && matches!(chunk.compression(), Compression::ZSTD(_))
                && chunk.dictionary_page_offset().is_none()
                && !chunk.encodings().any(|e| matches!(e, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY))
                && chunk.statistics().is_some_and(|s| mergeable(s, column.sort_order()))
                && !matches!(index, ColumnIndexMetaData::NONE)
                && index.null_counts().is_some()
                && pages > 0
                && (rows / pages >= min_page_rows
                    || chunk.uncompressed_size().max(0) as u64 / pages >= SPLICE_PAGE_BYTES)
        })
        .collect()
}

/// Whether the columns of a file with schema `descr` are the table's (`ours`) in
/// name, order and nesting: its rows can be decoded as the table's. Types and
/// nullability may differ (another writer's REQUIRED column, an INT32 of a smaller
/// integer type); a column whose type or levels differ is decoded, not spliced.
fn same_layout(descr: &SchemaDescriptor, ours: &SchemaDescriptor) -> bool {
    let names =
        |d: &SchemaDescriptor| d.root_schema().get_fields().iter().map(|f| f.name().to_string()).collect::<Vec<_>>();
    descr.num_columns() == ours.num_columns()
        && names(descr) == names(ours)
        && (0..ours.num_columns()).all(|leaf| descr.column(leaf).path() == ours.column(leaf).path())
}

/// Whether chunk statistics `s` of a column with sort order `order` can be merged with
/// others of the same column into valid bounds.
fn mergeable(s: &Statistics, order: SortOrder) -> bool {
    if s.is_min_max_deprecated() || s.null_count_opt().is_none() {
        return false;
    }
    match s {
        Statistics::Boolean(_) | Statistics::Int32(_) | Statistics::Int64(_) => order != SortOrder::UNDEFINED,
        Statistics::Float(v) => {
            order == SortOrder::SIGNED
                && !v.min_opt().is_some_and(|x| x.is_nan())
                && !v.max_opt().is_some_and(|x| x.is_nan())
        }
        Statistics::Double(v) => {
            order == SortOrder::SIGNED
                && !v.min_opt().is_some_and(|x| x.is_nan())
                && !v.max_opt().is_some_and(|x| x.is_nan())
        }
        Statistics::ByteArray(_) => order == SortOrder::UNSIGNED,
        Statistics::Int96(_) | Statistics::FixedLenByteArray(_) => false,
    }
}

/// `a` and `b` (statistics of one column with sort order `order`) merged: the least
/// minimum, the greatest maximum, the nulls summed. `None` when they do not merge.
fn merge_statistics(a: &Statistics, b: &Statistics, order: SortOrder) -> Option<Statistics> {
    use std::cmp::Ordering;
    fn merge<T: Clone>(
        a: &ValueStatistics<T>,
        b: &ValueStatistics<T>,
        cmp: impl Fn(&T, &T) -> Ordering,
    ) -> Option<ValueStatistics<T>> {
        let pick = |x: Option<&T>, x_exact: bool, y: Option<&T>, y_exact: bool, want: Ordering| match (x, y) {
            (Some(x), Some(y)) => {
                if cmp(y, x) == want {
                    (Some(y.clone()), y_exact)
                } else {
                    (Some(x.clone()), x_exact)
                }
            }
            (Some(x), None) => (Some(x.clone()), x_exact),
            (None, Some(y)) => (Some(y.clone()), y_exact),
            (None, None) => (None, false),
        };
        let (min, min_exact) = pick(a.min_opt(), a.min_is_exact(), b.min_opt(), b.min_is_exact(), Ordering::Less);
        let (max, max_exact) = pick(a.max_opt(), a.max_is_exact(), b.max_opt(), b.max_is_exact(), Ordering::Greater);
        let nulls = a.null_count_opt()?.checked_add(b.null_count_opt()?)?;
        Some(
            ValueStatistics::new(min, max, None, Some(nulls), false)
                .with_min_is_exact(min_exact)
                .with_max_is_exact(max_exact),
        )
    }
    let unsigned = order == SortOrder::UNSIGNED;
    let signed_compatible = order == SortOrder::SIGNED;
    let merged: Statistics = match (a, b) {
        (Statistics::Boolean(a), Statistics::Boolean(b)) => merge(a, b, |x, y| x.cmp(y))?.into(),
        (Statistics::Int32(a), Statistics::Int32(b)) if unsigned => {
            merge(a, b, |x, y| (*x as u32).cmp(&(*y as u32)))?.into()
        }
        (Statistics::Int32(a), Statistics::Int32(b)) => merge(a, b, |x, y| x.cmp(y))?.into(),
        (Statistics::Int64(a), Statistics::Int64(b)) if unsigned => {
            merge(a, b, |x, y| (*x as u64).cmp(&(*y as u64)))?.into()
        }
        (Statistics::Int64(a), Statistics::Int64(b)) => merge(a, b, |x, y| x.cmp(y))?.into(),
        (Statistics::Float(a), Statistics::Float(b)) => merge(a, b, |x, y| x.total_cmp(y))?.into(),
        (Statistics::Double(a), Statistics::Double(b)) => merge(a, b, |x, y| x.total_cmp(y))?.into(),
        (Statistics::ByteArray(a), Statistics::ByteArray(b)) if unsigned => {
            merge(a, b, |x, y| x.as_bytes().cmp(y.as_bytes()))?.into()
        }
        _ => return None,
    };
    Some(match merged {
        Statistics::Boolean(v) => Statistics::Boolean(v.with_backwards_compatible_min_max(signed_compatible)),
        Statistics::Int32(v) => Statistics::Int32(v.with_backwards_compatible_min_max(signed_compatible)),
        Statistics::Int64(v) => Statistics::Int64(v.with_backwards_compatible_min_max(signed_compatible)),
        Statistics::Float(v) => Statistics::Float(v.with_backwards_compatible_min_max(signed_compatible)),
        Statistics::Double(v) => Statistics::Double(v.with_backwards_compatible_min_max(signed_compatible)),
        Statistics::ByteArray(v) => Statistics::ByteArray(v.with_backwards_compatible_min_max(signed_compatible)),
        other => other,
    })
}

/// Page `page`'s bounds in a column index, as plain-encoded bytes (empty for a page
/// of nulls).
fn page_bounds(index: &ColumnIndexMetaData, page: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    fn primitive<T: AsBytes>(min: Option<&T>, max: Option<&T>) -> (Vec<u8>, Vec<u8>) {
        (min.map(|v| v.as_bytes().to_vec()).unwrap_or_default(), max.map(|v| v.as_bytes().to_vec()).unwrap_or_default())
    }
    Some(match index {
        ColumnIndexMetaData::BOOLEAN(i) => primitive(i.min_value(page), i.max_value(page)),
        ColumnIndexMetaData::INT32(i) => primitive(i.min_value(page), i.max_value(page)),
        ColumnIndexMetaData::INT64(i) => primitive(i.min_value(page), i.max_value(page)),
        ColumnIndexMetaData::FLOAT(i) => primitive(i.min_value(page), i.max_value(page)),
        ColumnIndexMetaData::DOUBLE(i) => primitive(i.min_value(page), i.max_value(page)),
        ColumnIndexMetaData::BYTE_ARRAY(i) => (
            i.min_value(page).map(<[u8]>::to_vec).unwrap_or_default(),
            i.max_value(page).map(<[u8]>::to_vec).unwrap_or_default(),
        ),
        _ => return None,
    })
}

/// One leaf column's spliced chunk of the row group being built.
struct SplicedChunk {
    bytes: Vec<u8>,
    first: Option<ColumnChunkMetaData>,
    statistics: Option<Statistics>,
    encodings: Vec<Encoding>,
    num_values: i64,
    uncompressed: i64,
    unencoded_byte_array_bytes: Option<i64>,
    pages: Vec<PageLocation>,
    unencoded_pages: Option<Vec<i64>>,
    index: ColumnIndexBuilder,
    rows: i64,
}

impl SplicedChunk {
    fn new(physical: PhysicalType) -> Self {
        Self {
            bytes: Vec::new(),
            first: None,
            statistics: None,
            encodings: Vec::new(),
            num_values: 0,
            uncompressed: 0,
            unencoded_byte_array_bytes: Some(0),
            pages: Vec::new(),
            unencoded_pages: Some(Vec::new()),
            index: ColumnIndexBuilder::new(physical),
            rows: 0,
        }
    }

    /// Append leaf `leaf` of row group `group` of `input` (checked spliceable).
    fn push(&mut self, input: &Fetched, group: usize, leaf: usize) -> Result<()> {
        let metadata = &input.metadata;
        let bad = |what: &str| CompactionError::Data(format!("{}: {what} of column {leaf}", input.add.path));
        let chunk = metadata.row_group(group).column(leaf);
        let rows = metadata.row_group(group).num_rows();
        let (Some(offsets), Some(index), Some(statistics)) = (
            metadata.offset_index().and_then(|i| i.get(group)?.get(leaf)),
            metadata.column_index().and_then(|i| i.get(group)?.get(leaf)),
            chunk.statistics(),
        ) else {
            return Err(bad("no page index or statistics"));
        };
        let start = chunk.data_page_offset();
        let length = chunk.compressed_size();
        let end = start.checked_add(length).filter(|e| start >= 0 && *e as u64 <= input.bytes.len() as u64);
        let Some(end) = end else { return Err(bad("a column chunk outside the file")) };
        let base = self.bytes.len() as i64;
        self.bytes.extend_from_slice(&input.bytes[start as usize..end as usize]);
        let order = chunk.column_descr().sort_order();
        self.statistics = match self.statistics.take() {
            None => Some(statistics.clone()),
            Some(acc) => {
                Some(merge_statistics(&acc, statistics, order).ok_or_else(|| bad("statistics that do not merge"))?)
            }
        };
        for encoding in chunk.encodings() {
            if !self.encodings.contains(&encoding) {
                self.encodings.push(encoding);
            }
        }
        self.num_values += chunk.num_values();
        self.uncompressed += chunk.uncompressed_size();
        self.unencoded_byte_array_bytes =
            self.unencoded_byte_array_bytes.zip(chunk.unencoded_byte_array_data_bytes()).map(|(a, b)| a + b);
        let locations = offsets.page_locations();
        if locations.len() as u64 != index.num_pages() {
            return Err(bad("a column index and an offset index of different page counts"));
        }
        for (page, location) in locations.iter().enumerate() {
            if location.offset < start || location.offset >= end {
                return Err(bad("a page outside its column chunk"));
            }
            self.pages.push(PageLocation {
                offset: location.offset - start + base,
                compressed_page_size: location.compressed_page_size,
                first_row_index: location.first_row_index + self.rows,
            });
            let (min, max) = page_bounds(index, page).ok_or_else(|| bad("a column index of an unsupported type"))?;
            let nulls = index.null_count(page).ok_or_else(|| bad("a column index without null counts"))?;
            self.index.append(index.is_null_page(page), min, max, nulls);
        }
        self.unencoded_pages = match (self.unencoded_pages.take(), offsets.unencoded_byte_array_data_bytes()) {
            (Some(mut acc), Some(sizes)) if sizes.len() == locations.len() => {
                acc.extend_from_slice(sizes);
                Some(acc)
            }
            _ => None,
        };
        if self.first.is_none() {
            self.first = Some(chunk.clone());
        }
        self.rows += rows;
        Ok(())
    }

    /// The chunk as a writer would close it, its pages at offset 0 of the returned bytes.
    fn finish(self) -> Result<(Bytes, ColumnCloseResult)> {
        let first = self.first.ok_or_else(|| CompactionError::Invalid("a spliced column without pages".into()))?;
        let mut builder = ColumnChunkMetaData::builder(first.column_descr_ptr())
            .set_compression(first.compression())
            .set_encodings(self.encodings)
            .set_num_values(self.num_values)
            .set_total_compressed_size(self.bytes.len() as i64)
            .set_total_uncompressed_size(self.uncompressed)
            .set_data_page_offset(0)
            .set_unencoded_byte_array_data_bytes(
                self.unencoded_byte_array_bytes.filter(|_| first.unencoded_byte_array_data_bytes().is_some()),
            );
        if let Some(statistics) = self.statistics {
            builder = builder.set_statistics(statistics);
        }
        let metadata = builder.build()?;
        let column_index = if self.index.valid() { Some(self.index.build()?) } else { None };
        let offset_index = OffsetIndexMetaData {
            page_locations: self.pages,
            unencoded_byte_array_data_bytes: self.unencoded_pages.filter(|p| !p.is_empty()),
        };
        let close = ColumnCloseResult {
            bytes_written: self.bytes.len() as u64,
            rows_written: self.rows.max(0) as u64,
            metadata,
            bloom_filter: None,
            column_index,
            offset_index: Some(offset_index),
        };
        Ok((Bytes::from(self.bytes), close))
    }
}

/// The row group being built: per leaf, a spliced chunk or an encoder.
struct Group {
    spliced: Vec<bool>,
    chunks: Vec<Option<SplicedChunk>>,
    writers: Vec<Option<ArrowColumnWriter>>,
    rows: u64,
    bytes: u64,
}

/// The output file being written and where its bytes go.
struct Output {
    writer: SerializedFileWriter<Pending>,
    factory: ArrowRowGroupWriterFactory,
    pending: Pending,
    location: Path,
    single_put_below: usize,
    /// Per leaf column, whether the output keeps a dictionary for it.
    dictionary: Vec<bool>,
    /// The bytes not yet uploaded, while the file is small enough for one PUT.
    buffered: Option<Vec<u8>>,
    upload: Option<object_store::WriteMultipart>,
    size: u64,
    groups: usize,
}

impl Output {
    /// Hand what the writer produced to the upload, starting a multipart upload once
    /// the file outgrows one PUT.
    async fn hand_over(&mut self, store: &Arc<dyn object_store::ObjectStore>) -> Result<()> {
        let chunk = self.pending.take();
        self.size += chunk.len() as u64;
        if let Some(buffered) = &mut self.buffered {
            if buffered.is_empty() {
                *buffered = chunk;
            } else {
                buffered.extend_from_slice(&chunk);
            }
            if buffered.len() < self.single_put_below {
                return Ok(());
            }
            let upload = store
                .put_multipart(&self.location)
                .await
                .map_err(|e| CompactionError::Storage(format!("writing {}: {e}", self.location)))?;
            let mut upload = object_store::WriteMultipart::new(upload);
            upload.write(&self.buffered.take().unwrap_or_default());
            self.upload = Some(upload);
        } else if let Some(upload) = &mut self.upload {
            upload.write(&chunk);
        }
        if let Some(upload) = &mut self.upload {
            upload
                .wait_for_capacity(crate::copy::PARTS_IN_FLIGHT)
                .await
                .map_err(|e| CompactionError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    async fn flush(&mut self, group: Option<Group>, store: &Arc<dyn object_store::ObjectStore>) -> Result<()> {
        let Some(group) = group else { return Ok(()) };
        if group.rows == 0 {
            return Ok(());
        }
        let mut row_group = self.writer.next_row_group()?;
        for (chunk, writer) in group.chunks.into_iter().zip(group.writers) {
            match (chunk, writer) {
                (Some(chunk), _) => {
                    let (bytes, close) = chunk.finish()?;
                    row_group.append_column(&Range { start: 0, bytes }, close)?;
                }
                (None, Some(writer)) => writer.close()?.append_to_row_group(&mut row_group)?,
                (None, None) => return Err(CompactionError::Invalid("a leaf column with no writer".into())),
            }
        }
        row_group.close()?;
        self.groups += 1;
        self.hand_over(store).await
    }

    async fn abort(self) {
        if let Some(upload) = self.upload {
            let _ = upload.abort().await;
        }
    }
}

/// Write one file from `adds` (a bin's inputs, in order), splicing the columns that
/// allow it. `None` when an input's schema is not the one Sediment writes for the
/// table or its writer is not trusted: nothing was uploaded and the bin must be
/// decoded whole.
pub(crate) async fn splice_bin(cx: &SpliceContext<'_>, adds: Vec<Add>) -> Result<Option<Copied>> {
    let Some(first) = adds.first().cloned() else {
        return Err(CompactionError::Invalid("a bin without inputs".into()));
    };
    let ours = ArrowSchemaConverter::new()
        .convert(cx.file_schema)
        .map_err(|e| CompactionError::Data(format!("cannot convert the table schema to parquet: {e}")))?;
    let directory = first.path.rsplit_once('/').map(|(dir, _)| format!("{dir}/")).unwrap_or_default();
    let name = format!("{directory}part-00000-{}-c000.zstd.parquet", uuid::Uuid::new_v4());
    let location =
        Path::from_url_path(&name).map_err(|e| CompactionError::Data(format!("bad output path {name}: {e}")))?;
    let stats: Vec<String> = adds.iter().filter_map(|a| a.stats.clone()).collect();
    let fetched = futures::stream::iter(adds).map(|add| fetch(cx, add)).buffered(cx.io.prefetch_files);
    let mut fetched = std::pin::pin!(fetched);
    let mut output: Option<Output> = None;
    let written = write_inputs(cx, &ours, location.clone(), &mut fetched, &mut output).await;
    let (rows, bytes_read) = match written {
        Ok(Some(done)) => done,
        Ok(None) => {
            if let Some(output) = output {
                output.abort().await;
            }
            return Ok(None);
        }
        Err(e) => {
            if let Some(output) = output {
                output.abort().await;
            }
            return Err(e);
        }
    };
    // Inputs without rows: the decoding path writes what such a bin makes.
    let Some(output) = output else { return Ok(None) };
    let Output { writer, pending, buffered, upload, size, .. } = output;
    writer.close()?;
    let rest = pending.take();
    let size = size + rest.len() as u64;
    match (buffered, upload) {
        (Some(mut buffered), _) => {
            buffered.extend_from_slice(&rest);
            cx.store
                .put(&location, Bytes::from(buffered).into())
                .await
                .map_err(|e| CompactionError::Storage(format!("writing {name}: {e}")))?;
        }
        (None, Some(mut upload)) => {
            upload.write(&rest);
            upload.finish().await.map_err(|e| CompactionError::Storage(format!("writing {name}: {e}")))?;
        }
        (None, None) => return Err(CompactionError::Invalid("an output with nowhere to go".into())),
    }
    let stats: Vec<&str> = stats.iter().map(String::as_str).collect();
    let add = Add {
        path: name,
        partition_values: first.partition_values.clone(),
        size: size as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: false,
        stats: crate::copy::merge_stats(&stats, cx.file_schema),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    };
    Ok(Some(Copied { add, rows, bytes_read }))
}

/// The inputs' rows into `output` (created at the first input); the rows and bytes
/// read, or `None` when an input cannot be spliced at all.
async fn write_inputs(
    cx: &SpliceContext<'_>,
    ours: &SchemaDescriptor,
    location: Path,
    fetched: &mut (impl futures::Stream<Item = Result<Fetched>> + Unpin),
    output: &mut Option<Output>,
) -> Result<Option<(u64, u64)>> {
    let row_group_bytes = crate::encoding::row_group_bytes(cx.target_file_size) as u64;
    let leaves = ours.num_columns();
    let mut group: Option<Group> = None;
    let (mut rows, mut bytes_read) = (0u64, 0u64);
    let mut max_rows = usize::MAX;
    while let Some(input) = fetched.next().await {
        let input = input?;
        let descr = input.metadata.file_metadata().schema_descr();
        if !same_layout(descr, ours) {
            return Ok(None);
        }
        // Another writer's pages are decoded (their statistics are not relabelled).
        let trusted = trusted_writer(&input.metadata);
        // Decoded with the table's Arrow types (and the file's nullability, which the
        // reader must be given as it is).
        let Some(supplied) = decoding_schema(&input.metadata, cx.file_schema) else { return Ok(None) };
        let options = ArrowReaderOptions::new().with_schema(supplied);
        let Ok(reader_metadata) = ArrowReaderMetadata::try_new(input.metadata.clone(), options) else {
            return Ok(None);
        };
        bytes_read += input.bytes.len() as u64;
        for index in 0..input.metadata.num_row_groups() {
            let group_rows = input.metadata.row_group(index).num_rows().max(0) as u64;
            if group_rows == 0 {
                continue;
            }
            // The file and its settings, at the first input: each column's encoding
            // chosen from a first batch of all columns, for the rows the bin holds.
            if output.is_none() {
                let sample =
                    ParquetRecordBatchReaderBuilder::new_with_metadata(input.bytes.clone(), reader_metadata.clone())
                        .with_row_groups(vec![index])
                        .with_batch_size(crate::encoding::SAMPLE_ROWS)
                        .build()
                        .map_err(|e| CompactionError::reading(&input.add.path, e))?
                        .next()
                        .transpose()
                        .map_err(|e| decode_error(&input.add.path, e))?;
                let properties = match &sample {
                    Some(batch) => {
                        crate::encoding::writer_properties_for_rows(cx.target_file_size, batch, cx.expected_rows)
                    }
                    None => crate::encoding::writer_properties(cx.target_file_size),
                };
                let properties = properties_for_output(properties, cx.file_schema);
                max_rows = properties.max_row_group_row_count().unwrap_or(usize::MAX);
                // A column the output keeps a dictionary for is encoded, never spliced.
                let dictionary =
                    (0..leaves).map(|leaf| properties.dictionary_enabled(ours.column(leaf).path())).collect();
                let pending = Pending::default();
                let writer = SerializedFileWriter::new(pending.clone(), ours.root_schema_ptr(), Arc::new(properties))?;
                let factory = ArrowRowGroupWriterFactory::new(&writer, cx.file_schema.clone());
                *output = Some(Output {
                    writer,
                    factory,
                    pending,
                    location: location.clone(),
                    single_put_below: cx.single_put_below,
                    dictionary,
                    buffered: Some(Vec::new()),
                    upload: None,
                    size: 0,
                    groups: 0,
                });
            }
            let here: Vec<bool> = {
                let Some(out) = output.as_ref() else { return Err(CompactionError::Invalid("no output".into())) };
                let spliceable = spliceable(&input.metadata, index, cx.min_page_rows, ours);
                spliceable
                    .into_iter()
                    .zip(&out.dictionary)
                    .map(|(can, dictionary)| trusted && can && !dictionary)
                    .collect()
            };
            if let Some(current) = &group {
                let lost = current.spliced.iter().zip(&here).any(|(was, now)| *was && !*now);
                let full = current.bytes >= row_group_bytes || current.rows + group_rows > max_rows as u64;
                if lost || full {
                    let done = group.take();
                    if let Some(out) = output.as_mut() {
                        out.flush(done, cx.store).await?;
                    }
                }
            }
            let spliced: Vec<bool> = match &group {
                Some(current) => current.spliced.clone(),
                None => here.clone(),
            };
            // The roots decoded: those with a leaf not spliced.
            let roots: Vec<usize> = {
                let mut roots: Vec<usize> =
                    (0..leaves).filter(|leaf| !spliced[*leaf]).map(|leaf| descr.get_column_root_idx(leaf)).collect();
                roots.dedup();
                roots
            };
            let batches = if roots.is_empty() {
                None
            } else {
                Some(
                    ParquetRecordBatchReaderBuilder::new_with_metadata(input.bytes.clone(), reader_metadata.clone())
                        .with_projection(ProjectionMask::roots(descr, roots.iter().copied()))
                        .with_row_groups(vec![index])
                        .with_batch_size(8192)
                        .build()
                        .map_err(|e| CompactionError::reading(&input.add.path, e))?,
                )
            };
            let batches = batches.into_iter().flatten();
            let Some(out) = output.as_mut() else { return Err(CompactionError::Invalid("no output".into())) };
            let current = match &mut group {
                Some(current) => current,
                None => {
                    let mut writers: Vec<Option<ArrowColumnWriter>> =
                        out.factory.create_column_writers(out.groups)?.into_iter().map(Some).collect();
                    let mut chunks = Vec::with_capacity(leaves);
                    for leaf in 0..leaves {
                        if spliced[leaf] {
                            writers[leaf] = None;
                            chunks.push(Some(SplicedChunk::new(ours.column(leaf).physical_type())));
                        } else {
                            chunks.push(None);
                        }
                    }
                    group.insert(Group { spliced: spliced.clone(), chunks, writers, rows: 0, bytes: 0 })
                }
            };
            let mut decoded = 0u64;
            for batch in batches {
                let batch = batch.map_err(|e| decode_error(&input.add.path, e))?;
                decoded += batch.num_rows() as u64;
                let mut writers = current.writers.iter_mut().filter_map(Option::as_mut);
                // Written as the table's columns (nullable where the table says so).
                for (root, column) in roots.iter().zip(batch.columns()) {
                    for leaf in compute_leaves(cx.file_schema.field(*root), column)? {
                        writers
                            .next()
                            .ok_or_else(|| CompactionError::Data("more leaf columns than writers".into()))?
                            .write(&leaf)?;
                    }
                }
            }
            if !roots.is_empty() && decoded != group_rows {
                return Err(CompactionError::Data(format!(
                    "{}: row group {index} decoded {decoded} rows, its footer says {group_rows}",
                    input.add.path
                )));
            }
            for (leaf, chunk) in current.chunks.iter_mut().enumerate() {
                if let Some(chunk) = chunk {
                    chunk.push(&input, index, leaf)?;
                }
            }
            current.rows += group_rows;
            current.bytes += input.metadata.row_group(index).compressed_size().max(0) as u64;
            rows += group_rows;
        }
    }
    if let Some(out) = output.as_mut() {
        out.flush(group.take(), cx.store).await?;
    }
    Ok(Some((rows, bytes_read)))
}

fn decode_error(path: &str, e: impl std::fmt::Display) -> CompactionError {
    CompactionError::Data(format!("cannot read data file {path}: {e}"))
}

/// The table's Arrow schema with the nullability of `metadata`'s columns, to decode
/// that file with; `None` when its schema does not convert.
fn decoding_schema(metadata: &ParquetMetaData, table: &SchemaRef) -> Option<SchemaRef> {
    let file = metadata.file_metadata();
    let inferred =
        deltalake::parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata()).ok()?;
    if inferred.fields().len() != table.fields().len() {
        return None;
    }
    let fields: Vec<deltalake::arrow::datatypes::Field> = table
        .fields()
        .iter()
        .zip(inferred.fields())
        .map(|(ours, theirs)| ours.as_ref().clone().with_nullable(theirs.is_nullable()))
        .collect();
    Some(Arc::new(deltalake::arrow::datatypes::Schema::new(fields)))
}

/// Writer settings of the output: `properties`, labelled as Sediment's, with the
/// table's Arrow schema in its key-value metadata (as Arrow writers put it).
fn properties_for_output(properties: WriterProperties, schema: &SchemaRef) -> WriterProperties {
    let mut properties = properties
        .into_builder()
        .set_created_by(format!("sediment-compactor {} (pages spliced)", env!("CARGO_PKG_VERSION")))
        .build();
    deltalake::parquet::arrow::add_encoded_arrow_schema_to_metadata(schema, &mut properties);
    properties
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use deltalake::arrow::compute::concat_batches;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
    use object_store::memory::InMemory;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, true),
            Field::new("payload", DataType::Utf8, true),
            Field::new("small_ids", DataType::Int64, true),
        ]))
    }

    /// `rows` rows from id `start`: a unique id and payload (written plain), a kind of
    /// three values (dictionary), amounts with nulls, small ids from a small range.
    fn batch(start: i64, rows: i64) -> RecordBatch {
        let ids = start..start + rows;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(ids.clone().map(|i| ["a", "b", "c"][(i % 3) as usize]))),
            Arc::new(Float64Array::from_iter(ids.clone().map(|i| (i % 7 != 0).then_some(i as f64 * 1.5)))),
            Arc::new(StringArray::from_iter(ids.clone().map(|i| (i % 5 != 0).then(|| format!("payload-{i:08}"))))),
            Arc::new(Int64Array::from_iter(ids.map(|i| (i % 11 != 0).then_some(i % 50)))),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    /// One input file as Sediment's writers make it.
    fn file(batch: &RecordBatch) -> Bytes {
        file_with(batch, crate::encoding::writer_properties_for(128 << 20, batch))
    }

    /// One input file written with `properties`.
    fn file_with(batch: &RecordBatch, properties: WriterProperties) -> Bytes {
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        Bytes::from(out)
    }

    /// A file's metadata with its page indexes.
    fn metadata_of(bytes: &Bytes) -> ParquetMetaData {
        ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Required).parse_and_finish(bytes).unwrap()
    }

    async fn put(store: &Arc<dyn object_store::ObjectStore>, name: &str, bytes: Bytes) -> Add {
        let size = bytes.len() as i64;
        store.put(&Path::from(name), bytes.into()).await.unwrap();
        Add {
            path: name.into(),
            size,
            stats: Some(r#"{"numRecords":1}"#.into()),
            data_change: true,
            ..Default::default()
        }
    }

    async fn splice(store: &Arc<dyn object_store::ObjectStore>, adds: Vec<Add>, min_page_rows: u64) -> Option<Copied> {
        splice_with(store, adds, min_page_rows, SINGLE_PUT_BELOW).await
    }

    async fn splice_with(
        store: &Arc<dyn object_store::ObjectStore>,
        adds: Vec<Add>,
        min_page_rows: u64,
        single_put_below: usize,
    ) -> Option<Copied> {
        let io = IoSettings::default();
        let limiter = IoLimiter::new(&io);
        let file_schema = schema();
        let early = EarlyFetches::default();
        let cx = SpliceContext {
            store,
            limiter: &limiter,
            io: &io,
            file_schema: &file_schema,
            target_file_size: 128 << 20,
            min_page_rows,
            expected_rows: None,
            single_put_below,
            early: &early,
        };
        splice_bin(&cx, adds).await.unwrap()
    }

    async fn read(store: &Arc<dyn object_store::ObjectStore>, path: &str) -> (Bytes, ParquetMetaData) {
        let bytes = store.get(&Path::from(path)).await.unwrap().bytes().await.unwrap();
        let metadata = metadata_of(&bytes);
        (bytes, metadata)
    }

    #[tokio::test]
    async fn plain_columns_are_spliced_and_the_file_reads_back_with_valid_statistics_and_page_indexes() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let inputs: Vec<RecordBatch> = (0..4).map(|i| batch(i * 5000, 5000)).collect();
        let mut adds = Vec::new();
        let mut input_pages = 0;
        for (i, input) in inputs.iter().enumerate() {
            let bytes = file(input);
            let metadata = metadata_of(&bytes);
            input_pages += metadata.offset_index().unwrap()[0][0].page_locations().len();
            adds.push(put(&store, &format!("day=1/in-{i}.parquet"), bytes).await);
        }
        let spliced = splice(&store, adds, 1000).await.expect("the bin is spliced");
        assert_eq!(spliced.rows, 20_000);
        assert!(spliced.add.path.starts_with("day=1/part-00000-"), "{}", spliced.add.path);
        let (bytes, metadata) = read(&store, &spliced.add.path).await;
        assert_eq!(spliced.add.size as usize, bytes.len());
        assert!(metadata.file_metadata().created_by().unwrap().contains("pages spliced"));
        assert_eq!(metadata.num_row_groups(), 1);
        let group = metadata.row_group(0);
        // `id` and `payload` are unique (written plain): their input pages are kept
        // one for one; `kind` and `small_ids` keep a dictionary and are encoded anew.
        let pages = |leaf: usize| metadata.offset_index().unwrap()[0][leaf].page_locations().len();
        assert_eq!(pages(0), input_pages);
        assert_eq!(pages(3), input_pages);
        assert!(group.column(0).dictionary_page_offset().is_none());
        assert!(group.column(1).dictionary_page_offset().is_some());
        assert!(group.column(4).dictionary_page_offset().is_some());

        // Every row, in order.
        let expected = concat_batches(&schema(), &inputs).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let got = concat_batches(&schema(), &batches).unwrap();
        assert_eq!(got, expected);

        // Chunk statistics bound the data exactly and count its nulls.
        for (leaf, column) in expected.columns().iter().enumerate() {
            let statistics = group.column(leaf).statistics().unwrap();
            assert_eq!(statistics.null_count_opt(), Some(column.null_count() as u64), "column {leaf}");
        }
        match group.column(0).statistics().unwrap() {
            Statistics::Int64(v) => assert_eq!((v.min_opt(), v.max_opt()), (Some(&0), Some(&19_999))),
            other => panic!("{other:?}"),
        }
        match group.column(3).statistics().unwrap() {
            Statistics::ByteArray(v) => {
                assert_eq!(v.min_opt().unwrap().as_bytes(), b"payload-00000001");
                assert_eq!(v.max_opt().unwrap().as_bytes(), b"payload-00019999");
            }
            other => panic!("{other:?}"),
        }
        // The offset index covers the rows in order; the column index bounds each page.
        let locations = metadata.offset_index().unwrap()[0][0].page_locations();
        assert_eq!(locations[0].first_row_index, 0);
        assert!(locations.windows(2).all(|w| w[0].first_row_index < w[1].first_row_index));
        let ColumnIndexMetaData::INT64(index) = &metadata.column_index().unwrap()[0][0] else { panic!() };
        for (page, location) in locations.iter().enumerate() {
            let first = location.first_row_index;
            let last = locations.get(page + 1).map_or(20_000, |l| l.first_row_index) - 1;
            assert_eq!((index.min_value(page), index.max_value(page)), (Some(&first), Some(&last)));
        }
        // A reader that prunes pages by the column index finds the rows it asks for.
        let metadata_options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, metadata_options).unwrap();
        let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
        let filter = ArrowPredicateFn::new(mask, |b: RecordBatch| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            Ok(ids.iter().map(|v| v.map(|v| (12_345..12_350).contains(&v))).collect())
        });
        let reader = builder.with_row_filter(RowFilter::new(vec![Box::new(filter)])).build().unwrap();
        let found: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(found, 5);
    }

    #[tokio::test]
    async fn small_pages_and_foreign_schemas_are_not_spliced() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let mut adds = Vec::new();
        for i in 0..3 {
            adds.push(put(&store, &format!("in-{i}.parquet"), file(&batch(i * 2000, 2000))).await);
        }
        // Pages of 2,000 rows under a 4,096-row floor: every column encoded anew.
        let spliced = splice(&store, adds.clone(), 4096).await.expect("written");
        let (_, metadata) = read(&store, &spliced.add.path).await;
        assert_eq!(metadata.offset_index().unwrap()[0][0].page_locations().len(), 1, "one new page of 6,000 ids");
        // An input of another schema: not this path's to write.
        let other =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1i64; 5000])) as ArrayRef)]).unwrap();
        let mut foreign = adds.clone();
        foreign.push(put(&store, "other.parquet", file(&other)).await);
        assert!(splice(&store, foreign, 1000).await.is_none());
        // A writer whose page statistics are not trusted: decoded, none of its pages kept.
        let input = batch(0, 5000);
        let properties = crate::encoding::writer_properties_for(128 << 20, &input)
            .into_builder()
            .set_created_by("parquet-mr version 1.8.1".into())
            .build();
        let out = file_with(&input, properties);
        let old = vec![put(&store, "old-1.parquet", out.clone()).await, put(&store, "old-2.parquet", out).await];
        let written = splice(&store, old, 1000).await.expect("decoded and encoded");
        let (_, metadata) = read(&store, &written.add.path).await;
        // Encoded anew: a page cut at 64 KiB of ids, not the inputs' two pages of 5,000.
        let locations = metadata.offset_index().unwrap()[0][0].page_locations();
        assert_eq!(locations.len(), 2);
        assert!(locations[1].first_row_index > 8000, "ids encoded anew: {locations:?}");
        assert_eq!(written.rows, 10_000);
    }

    #[tokio::test]
    async fn pages_cut_at_the_writers_size_limit_are_spliced_however_few_their_rows() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let mut adds = Vec::new();
        let mut payload_pages = 0;
        // Payloads of 73 bytes: a 64 KiB page holds under 1,000 of them.
        let long = |start: i64| {
            let mut columns = batch(start, 10_000).columns().to_vec();
            let payloads =
                (start..start + 10_000).map(|i| (i % 5 != 0).then(|| format!("payload-{i:08}-{}", "x".repeat(56))));
            columns[3] = Arc::new(StringArray::from_iter(payloads));
            RecordBatch::try_new(schema(), columns).unwrap()
        };
        for i in 0..2 {
            let bytes = file(&long(i * 10_000));
            let metadata = metadata_of(&bytes);
            let pages = metadata.offset_index().unwrap()[0][3].page_locations().len();
            // `payload` pages end at the size limit, under 4,096 rows each.
            assert!(10_000 / pages < 4096, "{pages} pages");
            let chunk = metadata.row_group(0).column(3);
            assert!(chunk.uncompressed_size() as u64 / pages as u64 >= SPLICE_PAGE_BYTES);
            payload_pages += pages;
            adds.push(put(&store, &format!("in-{i}.parquet"), bytes).await);
        }
        let spliced = splice(&store, adds, 4096).await.expect("written");
        let (bytes, metadata) = read(&store, &spliced.add.path).await;
        assert_eq!(metadata.offset_index().unwrap()[0][3].page_locations().len(), payload_pages, "kept page for page");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let expected = concat_batches(&schema(), &[long(0), long(10_000)]).unwrap();
        assert_eq!(concat_batches(&schema(), &batches).unwrap(), expected);
    }

    #[tokio::test]
    async fn an_input_that_cannot_splice_a_column_starts_a_new_row_group() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let first = batch(0, 5000);
        // The second input's payload repeats: its writer kept a dictionary.
        let mut columns = batch(5000, 5000).columns().to_vec();
        columns[3] = Arc::new(StringArray::from_iter_values((0..5000).map(|i| format!("p{}", i % 4))));
        let second = RecordBatch::try_new(schema(), columns).unwrap();
        let third = batch(10_000, 5000);
        let mut adds = Vec::new();
        for (i, input) in [&first, &second, &third].into_iter().enumerate() {
            adds.push(put(&store, &format!("in-{i}.parquet"), file(input)).await);
        }
        let spliced = splice(&store, adds.clone(), 1000).await.expect("written");
        let (bytes, metadata) = read(&store, &spliced.add.path).await;
        // [first], then [second, third] with payload encoded anew.
        assert_eq!(metadata.num_row_groups(), 2);
        assert_eq!(metadata.row_group(0).num_rows(), 5000);
        assert_eq!(metadata.row_group(1).num_rows(), 10_000);
        assert!(metadata.row_group(0).column(3).dictionary_page_offset().is_none());
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let expected = concat_batches(&schema(), &[first, second, third]).unwrap();
        assert_eq!(concat_batches(&schema(), &batches).unwrap(), expected);
        // The same bin uploaded in parts (past a tiny single-PUT limit): the same file.
        let parts = splice_with(&store, adds, 1000, 1024).await.expect("written");
        let (in_parts, _) = read(&store, &parts.add.path).await;
        assert_eq!(in_parts.len() as i64, parts.add.size);
        let reader = ParquetRecordBatchReaderBuilder::try_new(in_parts).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(concat_batches(&schema(), &batches).unwrap(), expected);
    }

    #[tokio::test]
    async fn a_column_the_output_keeps_a_dictionary_for_is_encoded_even_if_written_plain() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let mut adds = Vec::new();
        for i in 0..3 {
            let input = batch(i * 5000, 5000);
            // Another writer wrote the three-valued `kind` plain.
            let properties = crate::encoding::writer_properties_for(128 << 20, &input)
                .into_builder()
                .set_column_dictionary_enabled("kind".into(), false)
                .build();
            let bytes = file_with(&input, properties);
            let metadata = ParquetMetaDataReader::new().parse_and_finish(&bytes).unwrap();
            assert!(metadata.row_group(0).column(1).dictionary_page_offset().is_none());
            adds.push(put(&store, &format!("in-{i}.parquet"), bytes).await);
        }
        let spliced = splice(&store, adds, 1000).await.expect("written");
        let (_, metadata) = read(&store, &spliced.add.path).await;
        assert!(metadata.row_group(0).column(1).dictionary_page_offset().is_some(), "kind encoded with a dictionary");
        assert!(metadata.row_group(0).column(0).dictionary_page_offset().is_none());
        assert_eq!(metadata.offset_index().unwrap()[0][0].page_locations().len(), 3, "ids spliced");
    }

    #[tokio::test]
    async fn required_columns_of_another_writer_are_decoded_into_the_nullable_table_columns() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        // The table's columns are all nullable; the inputs' writer declared `id` and
        // `kind` NOT NULL (REQUIRED in its files).
        let table: SchemaRef = Arc::new(Schema::new(
            schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
        ));
        let (mut adds, mut inputs) = (Vec::new(), Vec::new());
        for i in 0..2 {
            let input = batch(i * 5000, 5000);
            adds.push(put(&store, &format!("in-{i}.parquet"), file(&input)).await);
            inputs.push(RecordBatch::try_new(table.clone(), input.columns().to_vec()).unwrap());
        }
        let (io, early) = (IoSettings::default(), EarlyFetches::default());
        let limiter = IoLimiter::new(&io);
        let cx = SpliceContext {
            store: &store,
            limiter: &limiter,
            io: &io,
            file_schema: &table,
            target_file_size: 128 << 20,
            min_page_rows: 1000,
            expected_rows: None,
            single_put_below: SINGLE_PUT_BELOW,
            early: &early,
        };
        let spliced = splice_bin(&cx, adds).await.unwrap().expect("written");
        let (bytes, metadata) = read(&store, &spliced.add.path).await;
        // `id` decoded into the nullable column (one new page); `payload` spliced.
        assert_eq!(metadata.offset_index().unwrap()[0][0].page_locations().len(), 1);
        assert_eq!(metadata.offset_index().unwrap()[0][3].page_locations().len(), 2);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches[0].schema(), table, "the table's Arrow schema");
        assert_eq!(concat_batches(&table, &batches).unwrap(), concat_batches(&table, &inputs).unwrap());
    }

    #[test]
    fn merged_statistics_take_the_outer_bounds_in_the_column_order() {
        let a = Statistics::int64(Some(-5), Some(10), None, Some(1), false);
        let b = Statistics::int64(Some(3), Some(-1), None, Some(2), false);
        let Statistics::Int64(signed) = merge_statistics(&a, &b, SortOrder::SIGNED).unwrap() else { panic!() };
        assert_eq!((signed.min_opt(), signed.max_opt(), signed.null_count_opt()), (Some(&-5), Some(&10), Some(3)));
        // Unsigned: -5 and -1 are the largest values.
        let Statistics::Int64(unsigned) = merge_statistics(&a, &b, SortOrder::UNSIGNED).unwrap() else { panic!() };
        assert_eq!((unsigned.min_opt(), unsigned.max_opt()), (Some(&3), Some(&-1)));
        // A chunk of nulls has no bounds; the other's stand.
        let nulls = Statistics::int64(None, None, None, Some(4), false);
        let Statistics::Int64(merged) = merge_statistics(&nulls, &a, SortOrder::SIGNED).unwrap() else { panic!() };
        assert_eq!((merged.min_opt(), merged.max_opt(), merged.null_count_opt()), (Some(&-5), Some(&10), Some(5)));
        // Unknown null counts, or different types, do not merge.
        let unknown = Statistics::int64(Some(1), Some(2), None, None, false);
        assert!(merge_statistics(&a, &unknown, SortOrder::SIGNED).is_none());
        assert!(
            merge_statistics(&a, &Statistics::int32(Some(1), Some(2), None, Some(0), false), SortOrder::SIGNED)
                .is_none()
        );
        // Byte arrays compare as unsigned bytes, never as signed (decimals).
        let x = Statistics::byte_array(Some("b".into()), Some("m".into()), None, Some(0), false);
        let y = Statistics::byte_array(Some("a".into()), Some("\u{e9}".into()), None, Some(0), false);
        let Statistics::ByteArray(bytes) = merge_statistics(&x, &y, SortOrder::UNSIGNED).unwrap() else { panic!() };
        assert_eq!(
            (bytes.min_opt().unwrap().as_bytes(), bytes.max_opt().unwrap().as_bytes()),
            (&b"a"[..], "\u{e9}".as_bytes())
        );
        assert!(merge_statistics(&x, &y, SortOrder::SIGNED).is_none());
    }
}
