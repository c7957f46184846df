//! Writing deletion vectors: rows of a data file marked deleted without rewriting it.
//!
//! One `deletion_vector_<uuid>.bin` at the table root holds the vectors of every file
//! one commit marks, in Delta's `RoaringBitmapArray` format (written by the kernel's
//! `StreamingDeletionVectorWriter`, with its size prefixes and CRCs). Each marked file
//! is then removed and added again with a `u` (UUID-relative) descriptor pointing into
//! that file. Only tables that enable deletion vectors get them
//! ([`crate::table::features::deletion_vectors_enabled`]).

use std::sync::Arc;

use deltalake::DeltaTableError;
use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::kernel::{Action, Add};
use object_store::ObjectStoreExt as _;

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;

/// Files marked in one commit: the deletion-vector file written for them and the
/// actions that re-add each file with its vector.
pub(crate) struct Marked {
    /// The deletion-vector file and its size (`None` when nothing was marked).
    file: Option<(deltalake::Path, u64)>,
    /// `remove` of each marked file's old `add`, then the `add` with its vector.
    pub actions: Vec<Action>,
}

impl Marked {
    /// Bytes of the deletion-vector file.
    pub fn bytes(&self) -> u64 {
        self.file.as_ref().map_or(0, |(_, size)| *size)
    }

    /// Delete the deletion-vector file of a commit that did not land (best effort).
    pub async fn discard(&self, table: &Table) {
        if let Some((path, _)) = &self.file
            && let Err(e) = table.object_store().delete(path).await
        {
            tracing::warn!(path = %path, error = %e, "could not delete an uncommitted deletion-vector file");
        }
    }
}

/// Write one deletion-vector file holding a vector per marked file (the row positions
/// to delete) and return the actions that re-add the files with their vectors.
pub(crate) async fn write(table: &Table, marked: Vec<(Add, Vec<u64>)>) -> Result<Marked> {
    use delta_kernel::actions::deletion_vector_writer::{KernelDeletionVector, StreamingDeletionVectorWriter};
    if marked.is_empty() {
        return Ok(Marked { file: None, actions: Vec::new() });
    }
    let uuid = uuid::Uuid::new_v4();
    let mut buffer = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut buffer);
    let mut descriptors = Vec::with_capacity(marked.len());
    for (add, positions) in &marked {
        let mut dv = KernelDeletionVector::new();
        dv.add_deleted_row_indexes(positions.iter().copied());
        let written =
            writer.write_deletion_vector(dv).map_err(|e| Error::internal(format!("writing a deletion vector: {e}")))?;
        descriptors.push((add, written));
    }
    writer.finalize().map_err(|e| Error::internal(format!("writing a deletion vector: {e}")))?;
    let path = deltalake::Path::from(format!("deletion_vector_{uuid}.bin"));
    let size = buffer.len() as u64;
    table.object_store().put(&path, buffer.into()).await.map_err(|e| Error::from(DeltaTableError::from(e)))?;
    let encoded = z85::encode(uuid.as_bytes());
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions = Vec::with_capacity(2 * descriptors.len());
    for (add, written) in descriptors {
        let mut new = add.clone();
        new.deletion_vector = Some(deltalake::kernel::DeletionVectorDescriptor {
            storage_type: deltalake::kernel::StorageType::UuidRelativePath,
            path_or_inline_dv: encoded.clone(),
            offset: Some(written.offset),
            size_in_bytes: written.size_in_bytes,
            cardinality: written.cardinality,
        });
        new.data_change = true;
        new.modification_time = now;
        new.stats = new.stats.as_deref().map(wide_bounds);
        actions.push(Action::Remove(crate::table::commit::remove_action(add)));
        actions.push(Action::Add(new));
    }
    Ok(Marked { file: Some((path, size)), actions })
}

/// The row positions `add`'s deletion vector marks deleted, in ascending order
/// (empty when the file has none).
pub(crate) async fn deleted_positions(table: &Table, add: &Add) -> Result<Vec<u64>> {
    match &add.deletion_vector {
        None => Ok(Vec::new()),
        Some(dv) => sediment_compactor::reader::deleted_positions(table.delta(), &add.path, dv)
            .await
            .map_err(|e| Error::new(ErrorKind::Data, e.to_string())),
    }
}

/// The union of two ascending position lists, ascending and without repeats.
pub(crate) fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x <= y => {
                i += 1;
                if x == y {
                    j += 1;
                }
                *x
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                j += 1;
                *y
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

/// A batch read straight from a data file, as the table sees it: the table's columns
/// in its order and types, partition columns from the file's partition values,
/// columns the file predates as nulls.
pub(crate) fn with_partition_values(batch: &RecordBatch, add: &Add, table_schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in table_schema.fields() {
        let column = match (batch.column_by_name(field.name()), add.partition_values.get(field.name())) {
            (Some(column), _) => column.clone(),
            (None, Some(value)) => {
                // Parse the partition value once, then repeat it.
                let one = cast(&deltalake::arrow::array::StringArray::from(vec![value.clone()]), field.data_type())?;
                ScalarValue::try_from_array(&one, 0)?.to_array_of_size(rows)?
            }
            (None, None) => deltalake::arrow::array::new_null_array(field.data_type(), rows),
        };
        let column = if column.data_type() == field.data_type() { column } else { cast(&column, field.data_type())? };
        fields.push(Field::new(field.name(), field.data_type().clone(), true));
        columns.push(column);
    }
    let options = deltalake::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
}

/// File statistics once rows are marked deleted: the min/max/null counts still bound
/// the live rows but no longer tightly, which the protocol's `tightBounds` says (so
/// readers do not answer MIN/MAX from them); `numRecords` stays the physical count.
fn wide_bounds(stats: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(stats) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.insert("tightBounds".into(), serde_json::Value::Bool(false));
            serde_json::Value::Object(fields).to_string()
        }
        _ => stats.to_string(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn marked_files_declare_wide_bounds() {
        let stats = r#"{"numRecords":3,"minValues":{"id":1},"maxValues":{"id":3},"nullCount":{"id":0}}"#;
        let wide: serde_json::Value = serde_json::from_str(&super::wide_bounds(stats)).unwrap();
        assert_eq!(wide["tightBounds"], false);
        assert_eq!(wide["numRecords"], 3);
        assert_eq!(super::wide_bounds("not json"), "not json");
    }

    #[test]
    fn union_merges_sorted_positions() {
        assert_eq!(super::union(&[1, 3, 5], &[2, 3, 8]), vec![1, 2, 3, 5, 8]);
        assert_eq!(super::union(&[], &[4]), vec![4]);
        assert_eq!(super::union(&[7], &[]), vec![7]);
    }
}
