//! The merge source: checked, deduplicated and indexed by key.
//!
//! The source is held in memory (it is the small side of a merge); its keys are
//! encoded with Arrow's row format, which compares bytes in sort order, so one
//! encoding serves the hash lookup of target rows and the range checks against file
//! statistics.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{concat_batches, take_record_batch};
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::arrow::row::{Row, RowConverter, Rows, SortField};
use deltalake::arrow::util::display::array_value_to_string;

use crate::error::{Error, Result};
use crate::schema::fit_column;

/// A source ready to be merged.
pub(crate) struct MergeSource {
    /// The rows, one per key; columns that the table has are in the table's types.
    pub batch: RecordBatch,
    /// Row index by encoded key.
    pub index: HashMap<Box<[u8]>, u32>,
    /// Encodes the key columns of source and target rows alike.
    pub keys: KeyEncoder,
    /// Per key column, the distinct source values in sort order (single-column rows).
    pub sorted_keys: Vec<SortedKeys>,
    /// Rows dropped by deduplication.
    pub duplicates_dropped: u64,
}

/// The distinct values of one key column, sorted, for range checks against file
/// statistics.
pub(crate) struct SortedKeys {
    pub column: String,
    pub converter: RowConverter,
    /// The column's values, encoded (single-column rows).
    rows: Rows,
    /// Indices into `rows` of the distinct values, in sort order.
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

impl MergeSource {
    /// Check and index `batches` for a merge on `keys` into a table of `table_schema`.
    /// `dedupe_by` keeps the row with the largest value of that column per key (the
    /// later row on ties); without it a duplicated key is an error naming the key.
    pub(crate) fn prepare(
        batches: &[RecordBatch],
        keys: &[String],
        dedupe_by: Option<&str>,
        table_schema: &SchemaRef,
    ) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::invalid("a merge needs at least one key column"));
        }
        let fitted = batches.iter().map(|b| fit_to_table(b, table_schema)).collect::<Result<Vec<_>>>()?;
        let first = fitted.first().ok_or_else(|| Error::invalid("the merge source has no batches"))?;
        let batch = concat_batches(&first.schema(), &fitted).map_err(|e| {
            Error::invalid(format!("the merge source's parts do not have the same columns and types: {e}"))
        })?;
        let schema = batch.schema();
        for key in keys {
            if table_schema.field_with_name(key).is_err() {
                return Err(Error::invalid(format!("key column `{key}` is not in the table")));
            }
            let column = batch
                .column_by_name(key)
                .ok_or_else(|| Error::invalid(format!("key column `{key}` is not in the merge source")))?;
            if column.null_count() > 0 {
                let row = (0..column.len()).find(|i| column.is_null(*i)).unwrap_or_default();
                return Err(Error::invalid(format!(
                    "the merge source has {} row(s) with a null key `{key}` (the first is row {row})",
                    column.null_count()
                )));
            }
        }
        let dedupe = dedupe_by
            .map(|c| {
                let column = batch
                    .column_by_name(c)
                    .ok_or_else(|| Error::invalid(format!("dedupe column `{c}` is not in the merge source")))?;
                let converter = RowConverter::new(vec![SortField::new(column.data_type().clone())])?;
                Ok::<_, Error>(converter.convert_columns(std::slice::from_ref(column))?)
            })
            .transpose()?;
        let encoder = KeyEncoder::new(keys, &schema)?;
        let rows = encoder.encode(&batch)?;
        let mut chosen: HashMap<Box<[u8]>, u32> = HashMap::with_capacity(batch.num_rows());
        for (i, row) in rows.iter().enumerate() {
            match chosen.entry(row.as_ref().into()) {
                Entry::Vacant(slot) => {
                    slot.insert(i as u32);
                }
                Entry::Occupied(mut slot) => match &dedupe {
                    Some(order) => {
                        if order.row(i) >= order.row(*slot.get() as usize) {
                            slot.insert(i as u32);
                        }
                    }
                    None => {
                        return Err(Error::invalid(format!(
                            "the merge source has more than one row with key {}; give a dedupe column to keep the latest",
                            describe_key(&batch, keys, i)
                        )));
                    }
                },
            }
        }
        let duplicates_dropped = (batch.num_rows() - chosen.len()) as u64;
        let (batch, index) = if duplicates_dropped > 0 {
            let mut kept: Vec<u32> = chosen.values().copied().collect();
            kept.sort_unstable();
            let batch = take_record_batch(&batch, &UInt32Array::from(kept))?;
            let rows = encoder.encode(&batch)?;
            let index = rows.iter().enumerate().map(|(i, r)| (r.as_ref().into(), i as u32)).collect();
            (batch, index)
        } else {
            (batch, chosen)
        };
        let sorted_keys = keys.iter().map(|k| SortedKeys::new(k, &batch)).collect::<Result<Vec<_>>>()?;
        Ok(Self { batch, index, keys: encoder, sorted_keys, duplicates_dropped })
    }

    /// Source row index for each row of a target batch (null: no source row has its key).
    pub(crate) fn lookup(&self, target: &RecordBatch) -> Result<UInt32Array> {
        let rows = self.keys.encode(target)?;
        Ok(rows.iter().map(|r| self.index.get(r.as_ref()).copied()).collect())
    }
}

impl SortedKeys {
    fn new(column: &str, batch: &RecordBatch) -> Result<Self> {
        let array = batch.column_by_name(column).ok_or_else(|| Error::internal("key column missing"))?;
        let converter = RowConverter::new(vec![SortField::new(array.data_type().clone())])?;
        let rows = converter.convert_columns(std::slice::from_ref(array))?;
        let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
        order.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
        order.dedup_by(|a, b| rows.row(*a as usize) == rows.row(*b as usize));
        let (min, max) = match (order.first(), order.last()) {
            (Some(lo), Some(hi)) => (array.slice(*lo as usize, 1), array.slice(*hi as usize, 1)),
            _ => (array.slice(0, 0), array.slice(0, 0)),
        };
        Ok(Self { column: column.to_string(), converter, rows, order, min, max })
    }

    /// Whether some source value lies in `[lo, hi]` (either bound may be unknown).
    pub(crate) fn any_between(&self, lo: Option<Row<'_>>, hi: Option<Row<'_>>) -> bool {
        let value = |i: usize| self.rows.row(self.order[i] as usize);
        let start = match lo {
            Some(lo) => self.order.partition_point(|v| self.rows.row(*v as usize) < lo),
            None => 0,
        };
        match (start < self.order.len(), hi) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(hi)) => value(start) <= hi,
        }
    }
}

/// The source with each column the table also has converted to the table's type.
/// Columns the table lacks are kept as they are (conditions may use them).
fn fit_to_table(batch: &RecordBatch, table_schema: &SchemaRef) -> Result<RecordBatch> {
    let batch = crate::scan::decode_dictionaries(batch.clone(), &crate::scan::plain_schema(&batch.schema()))?;
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
