//! The merge source: checked, deduplicated and indexed by key.
//!
//! The source is read once, batch by batch (so a source read from files is never
//! held twice): each batch is fitted to the table's types, its keys checked and
//! added to the index, and the batch kept as it is. Rows are addressed by their
//! position in the source (a *row id*); a row dropped by deduplication stays stored
//! but no key points to it. Keys are encoded with Arrow's row format, which compares
//! bytes in sort order, so one encoding serves the hash lookup of target rows and the
//! range checks against file statistics.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use deltalake::arrow::array::BooleanBufferBuilder;
use deltalake::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array};
use deltalake::arrow::buffer::NullBuffer;
use deltalake::arrow::compute::{interleave_record_batch, take_record_batch};
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::arrow::ipc::reader::FileReader;
use deltalake::arrow::ipc::writer::FileWriter;
use deltalake::arrow::row::{Row, RowConverter, Rows, SortField};
use deltalake::arrow::util::display::array_value_to_string;

use crate::error::{Error, Result};
use crate::table::schema::fit_column;

/// A source ready to be merged.
pub(crate) struct MergeSource {
    /// Every source row, fitted to the table's types.
    pub rows: SourceRows,
    /// Row id by encoded key, one per distinct key.
    pub index: KeyIndex,
    /// Encodes the key columns of source and target rows alike.
    pub keys: KeyEncoder,
    /// Per key column, the distinct source values in sort order (single-column rows).
    pub sorted_keys: Vec<SortedKeys>,
    /// For a single integer key held in memory: row id by value, which target keys
    /// are looked up in without encoding them (the common case, and the hot loop of
    /// probing large tables).
    integer_index: Option<IntegerIndex>,
    /// Rows dropped by deduplication.
    pub duplicates_dropped: u64,
}

/// Source row ids by value of a single integer key.
enum IntegerIndex {
    /// Keys within a range at most [`DENSE_SLOTS_PER_KEY`] times their number (ids
    /// that grow, as auto-increment keys do): one slot per value of the range, holding
    /// the row id or `u32::MAX`; a lookup is a subtraction and a load.
    Dense {
        min: i64,
        ids: Vec<u32>,
    },
    Hashed(HashMap<i64, u32, ahash::RandomState>),
}

/// Slots per key a dense integer index may use (4 bytes each: at most the size of a
/// hash map entry and its control byte, times two).
const DENSE_SLOTS_PER_KEY: u64 = 4;

impl IntegerIndex {
    /// The index of the `len` (key, row id) pairs `keyed()` yields.
    fn new<I: Iterator<Item = (i64, u32)>>(keyed: impl Fn() -> I, len: usize) -> Self {
        let (min, max) = keyed().fold((i64::MAX, i64::MIN), |(lo, hi), (k, _)| (lo.min(k), hi.max(k)));
        // In i128: the span of i64::MIN..=i64::MAX does not fit a u64.
        let span = max as i128 - min as i128 + 1;
        if len > 0 && span <= (DENSE_SLOTS_PER_KEY * len as u64) as i128 {
            let mut ids = vec![u32::MAX; span as usize];
            for (key, id) in keyed() {
                ids[(key - min) as usize] = id;
            }
            return Self::Dense { min, ids };
        }
        let mut map = HashMap::with_capacity_and_hasher(len, ahash::RandomState::new());
        map.extend(keyed());
        Self::Hashed(map)
    }
}

/// Source row ids by encoded key: a hash table of row ids whose keys stay in each
/// batch's row encoding, so an entry costs a few bytes beyond the key itself.
pub(crate) struct KeyIndex {
    /// The encoded keys of each stored batch.
    encoded: Vec<Rows>,
    /// The row id of each batch's first row.
    starts: Vec<u32>,
    table: HashTable<u32>,
    hasher: RandomState,
}

impl KeyIndex {
    fn new() -> Self {
        Self { encoded: Vec::new(), starts: Vec::new(), table: HashTable::new(), hasher: RandomState::new() }
    }

    /// Distinct keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// The row id of `key`, if the source has it.
    pub fn get(&self, key: Row<'_>) -> Option<u32> {
        let hash = self.hasher.hash_one(key.as_ref());
        self.table.find(hash, |id| key_of(&self.encoded, &self.starts, *id) == key).copied()
    }

    /// The encoded key of row `id`.
    pub fn key(&self, id: u32) -> Row<'_> {
        key_of(&self.encoded, &self.starts, id)
    }

    /// The row ids the index points to, in no order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().copied()
    }

    /// Every stored row's id and encoded key in row-id order, including rows whose
    /// key another row took (deduplication).
    pub fn all_keys(&self) -> impl Iterator<Item = (u32, Row<'_>)> + '_ {
        self.encoded
            .iter()
            .zip(&self.starts)
            .flat_map(|(rows, start)| rows.iter().enumerate().map(move |(i, row)| (start + i as u32, row)))
    }

    /// Add a batch's encoded keys, its first row being row id `start`. For a key
    /// already present, `replace(kept, new)` says whether row `new` takes its place.
    fn add(&mut self, keys: Rows, start: u32, mut replace: impl FnMut(u32, u32) -> Result<bool>) -> Result<()> {
        self.encoded.push(keys);
        self.starts.push(start);
        let Self { encoded, starts, table, hasher } = self;
        let batch = encoded.last().ok_or_else(|| Error::internal("no keys"))?;
        table.reserve(batch.num_rows(), |other| hasher.hash_one(key_of(encoded, starts, *other).as_ref()));
        for (i, key) in batch.iter().enumerate() {
            let id = start + i as u32;
            let hash = hasher.hash_one(key.as_ref());
            let same = |other: &u32| key_of(encoded, starts, *other) == key;
            let rehash = |other: &u32| hasher.hash_one(key_of(encoded, starts, *other).as_ref());
            match table.entry(hash, same, rehash) {
                Entry::Vacant(slot) => {
                    slot.insert(id);
                }
                Entry::Occupied(mut slot) => {
                    if replace(*slot.get(), id)? {
                        *slot.get_mut() = id;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `(batch, row)` of row id `id`, given each batch's first row id.
fn locate(starts: &[u32], id: u32) -> (usize, usize) {
    let batch = starts.partition_point(|start| *start <= id) - 1;
    (batch, (id - starts[batch]) as usize)
}

fn key_of<'a>(encoded: &'a [Rows], starts: &[u32], id: u32) -> Row<'a> {
    let (batch, row) = locate(starts, id);
    encoded[batch].row(row)
}

/// Stored batches with the row id of their first row.
pub(crate) type Batches<'a> = Box<dyn Iterator<Item = Result<(u32, RecordBatch)>> + Send + 'a>;

/// The source's rows as they came, batch by batch, addressed by row id: in memory,
/// or, past the merge's memory limit, in a local Arrow IPC spill file.
pub(crate) struct SourceRows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// The spill file, once the rows outgrew the limit (then `batches` is empty).
    spill: Option<tempfile::NamedTempFile>,
    /// Bytes of the rows (in memory, or as they were when written to the spill).
    bytes: usize,
    /// The row id of each batch's first row.
    starts: Vec<u32>,
    rows: usize,
}

impl SourceRows {
    /// The source's schema: the table's columns in the table's types (nullable), then
    /// columns only the source has.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows stored, including rows deduplication dropped.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// Whether the rows are in a spill file (then only [`Self::scan`] reads them).
    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Bytes of the rows.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every stored batch in row-id order, with the row id of its first row.
    pub fn scan(&self) -> Result<Batches<'_>> {
        match &self.spill {
            None => Ok(Box::new(self.starts.iter().copied().zip(self.batches.iter().cloned()).map(Ok))),
            Some(file) => {
                let reader = FileReader::try_new(std::io::BufReader::new(file.reopen().map_err(spill_error)?), None)?;
                Ok(Box::new(self.starts.iter().copied().zip(reader).map(|(start, batch)| Ok((start, batch?)))))
            }
        }
    }

    /// The rows `ids` in that order; a null id gives a row of nulls. Rows in memory only.
    pub fn take(&self, ids: &UInt32Array) -> Result<RecordBatch> {
        if self.is_spilled() {
            return Err(Error::internal("rows of a spilled merge source are read by scanning"));
        }
        match self.batches.as_slice() {
            [] => {
                let columns = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| deltalake::arrow::array::new_null_array(f.data_type(), ids.len()));
                let options = RecordBatchOptions::new().with_row_count(Some(ids.len()));
                Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns.collect(), &options)?)
            }
            [one] => Ok(take_record_batch(one, ids)?),
            batches => {
                let located: Vec<(usize, usize)> = ids.iter().flatten().map(|id| locate(&self.starts, id)).collect();
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                let dense = interleave_record_batch(&refs, &located)?;
                if ids.null_count() == 0 {
                    return Ok(dense);
                }
                let mut next = 0u32;
                let spread: UInt32Array = ids
                    .iter()
                    .map(|id| {
                        id.map(|_| {
                            next += 1;
                            next - 1
                        })
                    })
                    .collect();
                Ok(take_record_batch(&dense, &spread)?)
            }
        }
    }
}

/// The distinct values of one key column, sorted, for range checks against file
/// statistics.
pub(crate) struct SortedKeys {
    pub column: String,
    pub converter: RowConverter,
    /// The column's values, encoded (single-column rows); `None` for the only key
    /// column, whose values the key index holds encoded the same way (a second copy
    /// was as large as the source's keys).
    rows: Option<Rows>,
    /// The distinct values in sort order: indices into `rows`, or row ids of the key
    /// index.
    order: Vec<u32>,
    /// The smallest and largest value, for the conflict-check predicate.
    pub min: ArrayRef,
    pub max: ArrayRef,
}

/// Encodes the key columns of a batch as comparable bytes.
pub(crate) struct KeyEncoder {
    pub columns: Vec<String>,
    converter: RowConverter,
}

impl KeyEncoder {
    fn new(columns: &[String], schema: &SchemaRef) -> Result<Self> {
        let fields = columns
            .iter()
            .map(|c| Ok(SortField::new(schema.field_with_name(c)?.data_type().clone())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { columns: columns.to_vec(), converter: RowConverter::new(fields)? })
    }

    /// The key columns of `batch`, encoded (the batch must have them in the table's types).
    pub fn encode(&self, batch: &RecordBatch) -> Result<deltalake::arrow::row::Rows> {
        let columns = self
            .columns
            .iter()
            .map(|c| {
                batch.column_by_name(c).cloned().ok_or_else(|| Error::internal(format!("key column `{c}` missing")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.converter.convert_columns(&columns)?)
    }
}

/// A merge source being read: each batch checked, indexed and stored in turn
/// ([`MergeSource::prepare`] runs the steps in order).
struct SourceBuilder<'a> {
    keys: &'a [String],
    dedupe_by: Option<&'a str>,
    memory_limit: Option<usize>,
    spill_directory: Option<&'a std::path::Path>,
    /// The first batch's schema, which every later batch must have.
    schema: Option<SchemaRef>,
    encoder: Option<KeyEncoder>,
    index: KeyIndex,
    /// Stored batches while the rows are in memory.
    batches: Vec<RecordBatch>,
    /// The row id of each stored batch's first row.
    starts: Vec<u32>,
    /// The dedupe column's values of each stored batch, encoded for comparison.
    dedupe_values: Vec<Rows>,
    /// Per key column, its values batch by batch (kept when the rows are spilled).
    key_arrays: Vec<Vec<ArrayRef>>,
    spill: Option<(tempfile::NamedTempFile, FileWriter<std::io::BufWriter<std::fs::File>>)>,
    /// Rows and bytes stored so far.
    rows: usize,
    bytes: usize,
}

impl<'a> SourceBuilder<'a> {
    fn new(
        keys: &'a [String],
        dedupe_by: Option<&'a str>,
        memory_limit: Option<usize>,
        spill_directory: Option<&'a std::path::Path>,
    ) -> Self {
        Self {
            keys,
            dedupe_by,
            memory_limit,
            spill_directory,
            schema: None,
            encoder: None,
            index: KeyIndex::new(),
            batches: Vec::new(),
            starts: Vec::new(),
            dedupe_values: Vec::new(),
            key_arrays: vec![Vec::new(); keys.len()],
            spill: None,
            rows: 0,
            bytes: 0,
        }
    }

    /// The first part fixes the columns (and must have the keys and the dedupe
    /// column); every later part must have the same.
    fn check_shape(&mut self, part: usize, batch: &RecordBatch) -> Result<()> {
        match &self.schema {
            None => {
                for key in self.keys {
                    if batch.column_by_name(key).is_none() {
                        return Err(Error::invalid(format!("key column `{key}` is not in the merge source")));
                    }
                }
                if let Some(c) = self.dedupe_by
                    && batch.column_by_name(c).is_none()
                {
                    return Err(Error::invalid(format!("dedupe column `{c}` is not in the merge source")));
                }
                self.encoder = Some(KeyEncoder::new(self.keys, &batch.schema())?);
                self.schema = Some(batch.schema());
                Ok(())
            }
            Some(first) if first.fields() != batch.schema().fields() => Err(Error::invalid(format!(
                "the merge source's parts do not have the same columns and types: part {} has ({}), the first part ({})",
                part + 1,
                describe_fields(&batch.schema()),
                describe_fields(first)
            ))),
            Some(_) => Ok(()),
        }
    }

    /// No null key, and row ids still fit in a `u32`.
    fn check_keys(&self, batch: &RecordBatch) -> Result<()> {
        for key in self.keys {
            let column = batch.column_by_name(key).ok_or_else(|| Error::internal("key column missing"))?;
            if column.null_count() > 0 {
                let row = (0..column.len()).find(|i| column.is_null(*i)).unwrap_or_default();
                return Err(Error::invalid(format!(
                    "the merge source has row(s) with a null key `{key}` (the first is row {})",
                    self.rows + row
                )));
            }
        }
        if self.rows + batch.num_rows() > u32::MAX as usize {
            return Err(Error::invalid("the merge source has more than 4,294,967,295 rows; merge it in parts"));
        }
        Ok(())
    }

    /// Add the batch's keys to the index: a key seen before keeps the row with the
    /// larger dedupe value (the later row on ties), or, without a dedupe column, is
    /// an error naming the key.
    fn index(&mut self, batch: &RecordBatch) -> Result<()> {
        let dedupe = self
            .dedupe_by
            .map(|c| {
                let column = batch.column_by_name(c).ok_or_else(|| Error::internal("dedupe column missing"))?;
                let converter = RowConverter::new(vec![SortField::new(column.data_type().clone())])?;
                Ok::<_, Error>(converter.convert_columns(std::slice::from_ref(column))?)
            })
            .transpose()?;
        let encoded = self.encoder.as_ref().ok_or_else(|| Error::internal("no key encoder"))?.encode(batch)?;
        let start = self.rows as u32;
        let (starts, dedupe_values, keys) = (&self.starts, &self.dedupe_values, self.keys);
        self.index.add(encoded, start, |kept, new| match &dedupe {
            Some(values) => {
                let new_value = values.row((new - start) as usize);
                Ok(if kept >= start {
                    new_value >= values.row((kept - start) as usize)
                } else {
                    let (b, row) = locate(starts, kept);
                    new_value >= dedupe_values[b].row(row)
                })
            }
            None => Err(Error::invalid(format!(
                "the merge source has more than one row with key {}; give a dedupe column to keep the latest",
                describe_key(batch, keys, (new - start) as usize)
            ))),
        })?;
        if let Some(values) = dedupe {
            self.dedupe_values.push(values);
        }
        Ok(())
    }

    /// Keep the batch: in memory, or appended to the spill file once there is one.
    fn store(&mut self, batch: RecordBatch) -> Result<()> {
        self.starts.push(self.rows as u32);
        self.rows += batch.num_rows();
        for (arrays, key) in self.key_arrays.iter_mut().zip(self.keys) {
            arrays.push(batch.column_by_name(key).cloned().ok_or_else(|| Error::internal("key column missing"))?);
        }
        self.bytes += batch.get_array_memory_size();
        match &mut self.spill {
            Some((_, writer)) => writer.write(&batch)?,
            None => self.batches.push(batch),
        }
        Ok(())
    }

    /// Past the memory limit, move the rows held so far to a new spill file (in the
    /// spill directory, else the temporary directory).
    fn spill_past_limit(&mut self) -> Result<()> {
        if self.spill.is_some() || self.memory_limit.is_none_or(|limit| self.bytes <= limit) {
            return Ok(());
        }
        let bytes = self.bytes;
        let directory = self.spill_directory.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
        let file = tempfile::Builder::new().prefix("sediment-merge-source-").tempfile_in(&directory).map_err(|e| {
            // A directory that is not there or not writable is a setting to fix;
            // anything else (a full disk) may pass.
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::NotADirectory => crate::ErrorKind::InvalidInput,
                _ => crate::ErrorKind::Unavailable,
            };
            Error::new(
                kind,
                format!(
                    "the merge source ({bytes} bytes) is past its memory limit, and its spill file cannot be created in {}: {e}",
                    directory.display()
                ),
            )
        })?;
        let mut writer = FileWriter::try_new(
            std::io::BufWriter::new(file.reopen().map_err(spill_error)?),
            &self.batches[0].schema(),
        )?;
        for batch in self.batches.drain(..) {
            writer.write(&batch)?;
        }
        tracing::info!(bytes, limit = self.memory_limit, path = %file.path().display(), "merge source spilled to a local file");
        self.spill = Some((file, writer));
        Ok(())
    }

    /// The source: the spill file closed, each key column's sorted values, and for a
    /// single integer key held in memory its index of native values.
    fn finish(self) -> Result<MergeSource> {
        let spill = match self.spill {
            Some((file, mut writer)) => {
                writer.finish()?;
                Some(file)
            }
            None => None,
        };
        let schema = self.schema.ok_or_else(|| Error::invalid("the merge source has no batches"))?;
        let keys = self.encoder.ok_or_else(|| Error::internal("no key encoder"))?;
        let integer_index = match self.key_arrays.as_slice() {
            [arrays] if spill.is_none() && arrays.iter().all(|a| is_integer(a.data_type())) => {
                Some(integer_index(arrays, &self.starts, &self.index, self.rows)?)
            }
            _ => None,
        };
        let sorted_keys = keys
            .columns
            .iter()
            .zip(&self.key_arrays)
            .map(|(k, arrays)| {
                let only = (keys.columns.len() == 1).then_some(&self.index);
                // A dense integer index holds the row ids in key order already (the row
                // format orders integers as their values).
                let in_order = match &integer_index {
                    Some(IntegerIndex::Dense { ids, .. }) => Some(ids.iter().copied().filter(|id| *id != u32::MAX)),
                    _ => None,
                };
                SortedKeys::new(k, schema.field_with_name(k)?.data_type(), arrays, only, in_order)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MergeSource {
            integer_index,
            duplicates_dropped: (self.rows - self.index.len()) as u64,
            rows: SourceRows {
                schema,
                batches: self.batches,
                spill,
                bytes: self.bytes,
                starts: self.starts,
                rows: self.rows,
            },
            index: self.index,
            keys,
            sorted_keys,
        })
    }
}

/// The native-value index of a single integer key whose values, batch by batch, are
/// `arrays` (`rows` stored, `index` the keys kept).
fn integer_index(arrays: &[ArrayRef], starts: &[u32], index: &KeyIndex, rows: usize) -> Result<IntegerIndex> {
    let arrays = arrays
        .iter()
        .map(|a| {
            let a = deltalake::arrow::compute::cast(a, &deltalake::arrow::datatypes::DataType::Int64)?;
            Ok(a.as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::internal("int64 key"))?.clone())
        })
        .collect::<Result<Vec<Int64Array>>>()?;
    Ok(if index.len() == rows {
        // Every row kept: its keys in row-id order.
        let keyed = || {
            arrays
                .iter()
                .zip(starts)
                .flat_map(|(a, start)| a.values().iter().enumerate().map(move |(i, key)| (*key, start + i as u32)))
        };
        IntegerIndex::new(keyed, index.len())
    } else {
        let keyed = || {
            index.ids().map(|id| {
                let (batch, row) = locate(starts, id);
                (arrays[batch].value(row), id)
            })
        };
        IntegerIndex::new(keyed, index.len())
    })
}

impl MergeSource {
    /// Read, check and index `source` for a merge on `keys` into a table of
    /// `table_schema`. `dedupe_by` keeps the row with the largest value of that column
    /// per key (the later row on ties); without it a duplicated key is an error naming
    /// the key. An error from `source` stops the preparation.
    ///
    /// Once the rows kept exceed `memory_limit` bytes they move to a local spill file
    /// and later batches follow them there; the keys stay in memory.
    pub(crate) fn prepare(
        source: impl Iterator<Item = Result<RecordBatch>>,
        keys: &[String],
        dedupe_by: Option<&str>,
        table_schema: &SchemaRef,
        memory_limit: Option<usize>,
        spill_directory: Option<&std::path::Path>,
    ) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::invalid("a merge needs at least one key column"));
        }
        for key in keys {
            if table_schema.field_with_name(key).is_err() {
                return Err(Error::invalid(format!("key column `{key}` is not in the table")));
            }
        }
        let mut builder = SourceBuilder::new(keys, dedupe_by, memory_limit, spill_directory);
        for (part, batch) in source.enumerate() {
            let batch = shrink(fit_to_table(&batch?, table_schema)?)?;
            builder.check_shape(part, &batch)?;
            if batch.num_rows() == 0 {
                continue;
            }
            builder.check_keys(&batch)?;
            builder.index(&batch)?;
            builder.store(batch)?;
            builder.spill_past_limit()?;
        }
        builder.finish()
    }

    /// Source row id for each row of a target batch (null: no source row has its key).
    pub(crate) fn lookup(&self, target: &RecordBatch) -> Result<UInt32Array> {
        if let (Some(values), [key]) = (&self.integer_index, self.keys.columns.as_slice()) {
            let column =
                target.column_by_name(key).ok_or_else(|| Error::internal(format!("key column `{key}` missing")))?;
            let column = deltalake::arrow::compute::cast(column, &deltalake::arrow::datatypes::DataType::Int64)?;
            let column = column.as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::internal("int64 key"))?;
            let keys = column.values();
            return Ok(match values {
                IntegerIndex::Dense { min, ids } => row_ids(column.len(), |i| {
                    let id = ids.get(keys[i].wrapping_sub(*min) as u64 as usize).copied().unwrap_or(u32::MAX);
                    (id != u32::MAX && column.is_valid(i)).then_some(id)
                }),
                IntegerIndex::Hashed(map) => {
                    row_ids(column.len(), |i| if column.is_null(i) { None } else { map.get(&keys[i]).copied() })
                }
            });
        }
        let rows = self.keys.encode(target)?;
        Ok(row_ids(rows.num_rows(), |i| self.index.get(rows.row(i))))
    }

    /// Assign each kept row to one of `passes` consecutive key ranges of about equal
    /// rows; rows deduplication dropped get `u16::MAX`.
    pub(crate) fn key_ranges(&self, passes: usize) -> Vec<u16> {
        let mut ids = self.row_ids();
        ids.sort_unstable_by(|a, b| self.index.key(*a).cmp(&self.index.key(*b)));
        let per_range = ids.len().div_ceil(passes.clamp(1, u16::MAX as usize - 1)).max(1);
        let mut range_of = vec![u16::MAX; self.rows.num_rows()];
        for (position, id) in ids.iter().enumerate() {
            range_of[*id as usize] = (position / per_range) as u16;
        }
        range_of
    }

    /// The kept rows whose range is `range` (see [`Self::key_ranges`]), as batches,
    /// with their row ids in the same order.
    pub(crate) fn range_rows(&self, range_of: &[u16], range: u16) -> Result<(Vec<RecordBatch>, Vec<u32>)> {
        let mut batches = Vec::new();
        let mut ids = Vec::new();
        for item in self.rows.scan()? {
            let (start, batch) = item?;
            let picked: Vec<u32> =
                (0..batch.num_rows() as u32).filter(|i| range_of[(start + i) as usize] == range).collect();
            if picked.is_empty() {
                continue;
            }
            ids.extend(picked.iter().map(|i| start + i));
            batches.push(take_record_batch(&batch, &UInt32Array::from(picked))?);
        }
        Ok((batches, ids))
    }

    /// The ids of the rows the merge uses (one per key), ascending.
    pub(crate) fn row_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.index.ids().collect();
        ids.sort_unstable();
        ids
    }
}

impl SortedKeys {
    /// The sorted values of key `column`, whose values are `arrays`; `index`: the key
    /// index, when this is the only key column (its encoded keys are then this
    /// column's, in the same row format, one per distinct value); `in_order`: that
    /// index's row ids in key order, when known.
    fn new(
        column: &str,
        data_type: &deltalake::arrow::datatypes::DataType,
        arrays: &[ArrayRef],
        index: Option<&KeyIndex>,
        in_order: Option<impl Iterator<Item = u32>>,
    ) -> Result<Self> {
        let converter = RowConverter::new(vec![SortField::new(data_type.clone())])?;
        let (rows, order) = match (index, in_order) {
            (Some(_), Some(in_order)) => (None, in_order.collect()),
            (Some(index), None) => {
                // Sorted by the keys' bytes, looked up once each (a lookup per comparison
                // cost a 100,000-key source 25 ms).
                let mut keyed: Vec<(&[u8], u32)> = index.ids().map(|id| (index.key(id).data(), id)).collect();
                keyed.sort_unstable();
                (None, keyed.into_iter().map(|(_, id)| id).collect())
            }
            (None, _) => {
                let rows_in: usize = arrays.iter().map(|a| a.len()).sum();
                let mut rows = converter.empty_rows(rows_in, 0);
                for array in arrays {
                    converter.append(&mut rows, std::slice::from_ref(array))?;
                }
                let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
                order.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
                order.dedup_by(|a, b| rows.row(*a as usize) == rows.row(*b as usize));
                (Some(rows), order)
            }
        };
        // The key index's rows come from its own converter: parsed again for this one.
        let parser = converter.parser();
        let value = |i: u32| -> Result<ArrayRef> {
            let row = match (&rows, index) {
                (Some(rows), _) => rows.row(i as usize),
                (None, Some(index)) => parser.parse(index.key(i).data()),
                (None, None) => return Err(Error::internal("sorted keys without rows")),
            };
            Ok(converter.convert_rows(std::iter::once(row))?.remove(0))
        };
        let (min, max) = match (order.first(), order.last()) {
            (Some(lo), Some(hi)) => (value(*lo)?, value(*hi)?),
            _ => {
                let empty = converter.convert_rows(std::iter::empty())?.remove(0);
                (empty.clone(), empty)
            }
        };
        Ok(Self { column: column.to_string(), converter, rows, order, min, max })
    }

    /// The encoded value `id` of `order` names (`index`: the source's key index).
    fn row<'a>(&'a self, index: &'a KeyIndex, id: u32) -> Row<'a> {
        match &self.rows {
            Some(rows) => rows.row(id as usize),
            None => index.key(id),
        }
    }

    /// Whether some source value lies in `[lo, hi]` (either bound may be unknown);
    /// `index`: the source's key index.
    pub(crate) fn any_between(&self, index: &KeyIndex, lo: Option<Row<'_>>, hi: Option<Row<'_>>) -> bool {
        let value = |i: usize| self.row(index, self.order[i]);
        let start = match lo {
            Some(lo) => self.order.partition_point(|id| self.row(index, *id) < lo),
            None => 0,
        };
        match (start < self.order.len(), hi) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(hi)) => value(start) <= hi,
        }
    }
}

/// An array of `len` optional row ids, `id(i)` for each, its values and validity
/// written directly (lookups run once per target row).
fn row_ids(len: usize, mut id: impl FnMut(usize) -> Option<u32>) -> UInt32Array {
    let mut values = Vec::with_capacity(len);
    let mut valid = BooleanBufferBuilder::new(len);
    let mut missing = 0usize;
    for i in 0..len {
        match id(i) {
            Some(v) => {
                values.push(v);
                valid.append(true);
            }
            None => {
                values.push(0);
                valid.append(false);
                missing += 1;
            }
        }
    }
    let nulls = (missing > 0).then(|| NullBuffer::new(valid.finish()));
    UInt32Array::new(values.into(), nulls)
}

/// The source with each column the table also has converted to the table's type.
/// Columns the table lacks are kept as they are (conditions may use them).
fn fit_to_table(batch: &RecordBatch, table_schema: &SchemaRef) -> Result<RecordBatch> {
    let batch =
        crate::read::scan::decode_dictionaries(batch.clone(), &crate::read::scan::plain_schema(&batch.schema()))?;
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match table_schema.field_with_name(field.name()) {
            Ok(table_field) => {
                // Nulls in non-null table columns are checked when rows are written.
                let target = Field::new(field.name(), table_field.data_type().clone(), true);
                columns.push(fit_column(column, field, &target).map_err(|e| e.context("merge source"))?);
                fields.push(target);
            }
            Err(_) => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone().with_nullable(true));
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// `batch` with its buffers' spare capacity released (readers allocate ahead; the
/// source is kept for the whole merge). Columns shared with the caller stay as they are.
fn shrink(batch: RecordBatch) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let (schema, columns, _) = batch.into_parts();
    let columns = columns
        .into_iter()
        .map(|mut column| {
            if let Some(array) = Arc::get_mut(&mut column) {
                array.shrink_to_fit();
            }
            column
        })
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema, columns, &options)?)
}

/// Whether keys of this type go into the integer index (every value fits an i64).
fn is_integer(data_type: &deltalake::arrow::datatypes::DataType) -> bool {
    use deltalake::arrow::datatypes::DataType as D;
    matches!(data_type, D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32)
}

/// An I/O error of the local spill file.
fn spill_error(e: std::io::Error) -> Error {
    Error::new(crate::ErrorKind::Unavailable, format!("the merge source's local spill file: {e}"))
}

/// `a Int64, b Utf8` for error messages.
fn describe_fields(schema: &Schema) -> String {
    schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

/// `(a = 1, b = 'x')` for row `row` of `batch`.
pub(crate) fn describe_key(batch: &RecordBatch, keys: &[String], row: usize) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            let value = batch
                .column_by_name(k)
                .and_then(|c| array_value_to_string(c, row).ok())
                .unwrap_or_else(|| "?".to_string());
            format!("{k} = {value}")
        })
        .collect();
    format!("({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::DataType;

    use super::*;

    fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Utf8, true)]))
    }

    fn part(keys: &[i64], values: &[&str]) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(keys.to_vec())), Arc::new(StringArray::from(values.to_vec()))];
        Ok(RecordBatch::try_new(table_schema(), columns)?)
    }

    fn values(batch: &RecordBatch) -> Vec<Option<String>> {
        let column = batch.column_by_name("v").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        column.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn a_source_in_parts_is_indexed_and_deduplicated_across_parts() {
        let parts = || vec![part(&[1, 2], &["a", "b"]), part(&[], &[]), part(&[3, 1], &["c", "z"]), part(&[2], &["a"])];
        let source =
            MergeSource::prepare(parts().into_iter(), &["k".to_string()], Some("v"), &table_schema(), None, None)
                .unwrap();
        assert!(!source.rows.is_spilled());
        // Past a memory limit the rows go to a spill file; keys and order stay.
        let spilled =
            MergeSource::prepare(parts().into_iter(), &["k".to_string()], Some("v"), &table_schema(), Some(1), None)
                .unwrap();
        assert!(spilled.rows.is_spilled());
        assert_eq!(spilled.row_ids(), vec![1, 2, 3]);
        let scanned: Vec<(u32, usize)> =
            spilled.rows.scan().unwrap().map(|r| r.map(|(start, b)| (start, b.num_rows())).unwrap()).collect();
        assert_eq!(scanned, vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(spilled.sorted_keys[0].min.len(), 1);
        assert_eq!((source.rows.num_rows(), source.index.len(), source.duplicates_dropped), (5, 3, 2));
        // Key 1 keeps "z" (larger, later part); key 2 keeps "b" (larger, earlier part).
        assert_eq!(source.row_ids(), vec![1, 2, 3]);
        let taken = source.rows.take(&UInt32Array::from(vec![Some(3), None, Some(1), Some(2)])).unwrap();
        assert_eq!(values(&taken), vec![Some("z".into()), None, Some("b".into()), Some("c".into())]);
        assert_eq!(source.sorted_keys[0].min.len(), 1);
    }

    #[test]
    fn integer_keys_are_looked_up_densely_or_hashed_alike() {
        // A narrow range of keys gets a dense index, a sparse one a hash map; both
        // must answer like the row-encoded index, for keys inside and outside the
        // source's range, negative keys, nulls, and with rows deduplication dropped.
        let keys = ["k".to_string()];
        for (source_keys, dense) in [
            (vec![-3i64, 0, 5, 2, -3], true),
            (vec![i64::MIN, 7, i64::MAX, 7, -1], false),
            (vec![1i64 << 40, 3, 1 << 40, 9, 4], false),
        ] {
            let names: Vec<String> = (0..source_keys.len()).map(|i| format!("r{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let source = MergeSource::prepare(
                vec![part(&source_keys[..2], &names[..2]), part(&source_keys[2..], &names[2..])].into_iter(),
                &keys,
                Some("v"),
                &table_schema(),
                None,
                None,
            )
            .unwrap();
            let index = source.integer_index.as_ref().expect("an integer key gets an integer index");
            assert_eq!(matches!(index, IntegerIndex::Dense { .. }), dense, "{source_keys:?}");
            let mut probes: Vec<Option<i64>> = source_keys.iter().map(|k| Some(*k)).collect();
            probes.extend([None, Some(-4), Some(6), Some(1), Some(i64::MIN + 1), Some(i64::MAX - 1), Some(1 << 41)]);
            let target = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)])),
                vec![Arc::new(Int64Array::from(probes.clone()))],
            )
            .unwrap();
            let found = source.lookup(&target).unwrap();
            let encoded = source.keys.encode(&target).unwrap();
            for (i, probe) in probes.iter().enumerate() {
                let expected = probe.and_then(|_| source.index.get(encoded.row(i)));
                assert_eq!(found.is_valid(i).then(|| found.value(i)), expected, "key {probe:?} of {source_keys:?}");
                if let Some(k) = probe {
                    assert_eq!(expected.is_some(), source_keys.contains(k), "key {k} of {source_keys:?}");
                }
            }
            // The sorted keys (from the dense index's order, or sorted from the key
            // index) are the distinct keys in order, and answer range checks alike.
            let sorted = &source.sorted_keys[0];
            let mut distinct = source_keys.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let min_max: Vec<i64> = [&sorted.min, &sorted.max]
                .iter()
                .map(|a| a.as_any().downcast_ref::<Int64Array>().unwrap().value(0))
                .collect();
            assert_eq!(min_max, [distinct[0], *distinct.last().unwrap()], "{source_keys:?}");
            let in_order: Vec<i64> = sorted.order.iter().map(|id| source_keys[*id as usize]).collect();
            assert_eq!(in_order, distinct, "{source_keys:?}");
            let bound = |v: i64| sorted.converter.convert_columns(&[Arc::new(Int64Array::from(vec![v])) as _]).unwrap();
            for (lo, hi) in [(-10i64, -4), (-3, -3), (1, 1), (6, 8), (8, 1 << 41), (i64::MIN, i64::MIN)] {
                let (lo_row, hi_row) = (bound(lo), bound(hi));
                let expected = distinct.iter().any(|k| (lo..=hi).contains(k));
                let answer = sorted.any_between(&source.index, Some(lo_row.row(0)), Some(hi_row.row(0)));
                assert_eq!(answer, expected, "[{lo}, {hi}] in {source_keys:?}");
            }
        }
    }

    #[test]
    fn duplicates_null_keys_and_mismatched_parts_are_refused_by_name() {
        let keys = ["k".to_string()];
        let refused = |parts: Vec<Result<RecordBatch>>| {
            let err = MergeSource::prepare(parts.into_iter(), &keys, None, &table_schema(), None, None).err();
            err.expect("the source is refused").to_string()
        };
        let err = refused(vec![part(&[1], &["a"]), part(&[1], &["b"])]);
        assert!(err.contains("more than one row with key (k = 1)"), "{err}");
        let other = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("w", DataType::Int64, true),
        ]));
        let odd =
            RecordBatch::try_new(other, vec![Arc::new(Int64Array::from(vec![2])), Arc::new(Int64Array::from(vec![2]))]);
        let err = refused(vec![part(&[1], &["a"]), odd.map_err(Error::from)]);
        assert!(err.contains("part 2 has (k Int64, w Int64)"), "{err}");
        let err = refused(Vec::new());
        assert!(err.contains("no batches"), "{err}");
        let err = refused(vec![part(&[1], &["a"]), Err(Error::invalid("file x.csv: bad record"))]);
        assert!(err.contains("x.csv"), "{err}");
    }
}
