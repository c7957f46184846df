//! Schema enforcement: fitting incoming batches to a table's schema.
//!
//! A batch *fits* a table when every table column is present with the same type or a
//! type that converts without loss of meaning (a narrower integer, `Float32` into
//! `Float64`, any string or binary encoding, a timestamp of another unit, a timestamp
//! without time zone into a UTC column, text that parses as the table's date or
//! timestamp), when non-null columns hold no nulls, and when the batch has no extra
//! columns. Missing nullable columns are filled with nulls.
//!
//! In [`SchemaMode::Merge`] extra columns are added to the table as nullable columns
//! (schema evolution); everything else is checked the same way.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use deltalake::arrow::compute::{CastOptions, cast_with_options};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// What to do with columns a batch has and the table does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// Refuse them (the default).
    #[default]
    Strict,
    /// Add them to the table as nullable columns.
    Merge,
}

/// Fits batches to a table schema, growing it in [`SchemaMode::Merge`].
#[derive(Debug, Clone)]
pub struct SchemaFitter {
    schema: SchemaRef,
    mode: SchemaMode,
    evolved: bool,
}

impl SchemaFitter {
    /// A fitter for a table whose schema is `schema`.
    pub fn new(schema: SchemaRef, mode: SchemaMode) -> Self {
        Self { schema, mode, evolved: false }
    }

    /// The table schema, including columns added so far.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Whether a batch added columns.
    pub fn evolved(&self) -> bool {
        self.evolved
    }

    /// Return `batch` with exactly the table's columns, in the table's order and types.
    pub fn fit(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let batch_schema = batch.schema();
        let extra: Vec<&Arc<Field>> =
            batch_schema.fields().iter().filter(|f| self.schema.field_with_name(f.name()).is_err()).collect();
        if !extra.is_empty() {
            match self.mode {
                SchemaMode::Strict => {
                    let f = extra[0];
                    return Err(Error::invalid(format!(
                        "column `{}` ({}) is not in the table schema; use schema mode merge to add it",
                        f.name(),
                        f.data_type()
                    )));
                }
                SchemaMode::Merge => {
                    let mut fields: Vec<Arc<Field>> = self.schema.fields().iter().cloned().collect();
                    for f in extra {
                        check_new_column(f)?;
                        fields.push(Arc::new(f.as_ref().clone().with_nullable(true)));
                    }
                    self.schema = Arc::new(Schema::new_with_metadata(fields, self.schema.metadata().clone()));
                    self.evolved = true;
                }
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let column = match batch_schema.index_of(field.name()) {
                Ok(i) => fit_column(batch.column(i), batch_schema.field(i), field)?,
                Err(_) if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
                Err(_) => {
                    return Err(Error::invalid(format!(
                        "column `{}` (non-null {}) is missing from the batch",
                        field.name(),
                        field.data_type()
                    )));
                }
            };
            columns.push(column);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(Error::from)
    }
}

fn check_new_column(field: &Field) -> Result<()> {
    if field.data_type() == &DataType::Null {
        return Err(Error::invalid(format!(
            "column `{}` has no type (all values are null); give it a type before adding it",
            field.name()
        )));
    }
    Ok(())
}

pub(crate) fn fit_column(array: &ArrayRef, from: &Field, to: &Field) -> Result<ArrayRef> {
    let mismatch = || {
        Error::invalid(format!(
            "column `{}`: the table has type {}, the batch has type {}",
            to.name(),
            to.data_type(),
            from.data_type()
        ))
    };
    if let DataType::Dictionary(_, values) = from.data_type() {
        // Dictionary-encoded input (as scans return partition columns): decode, then fit.
        let decoded = deltalake::arrow::compute::cast(array, values).map_err(|_| mismatch())?;
        let decoded_field = Field::new(from.name(), values.as_ref().clone(), from.is_nullable());
        return fit_column(&decoded, &decoded_field, to);
    }
    let array = if from.data_type().equals_datatype(to.data_type()) {
        array.clone()
    } else if from.data_type() == &DataType::Null {
        new_null_array(to.data_type(), array.len())
    } else if convertible(from.data_type(), to.data_type()) {
        let options = CastOptions { safe: false, ..Default::default() };
        cast_with_options(array, to.data_type(), &options).map_err(|e| {
            Error::invalid(format!(
                "column `{}`: cannot convert {} to the table's {}: {e}",
                to.name(),
                from.data_type(),
                to.data_type()
            ))
        })?
    } else {
        return Err(mismatch());
    };
    if !to.is_nullable() && array.null_count() > 0 {
        return Err(Error::invalid(format!(
            "column `{}` is non-null in the table but the batch has {} null value(s)",
            to.name(),
            array.null_count()
        )));
    }
    Ok(array)
}

/// Conversions that keep every value's meaning.
fn convertible(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let int_rank = |t: &DataType| match t {
        Int8 => Some((8, true)),
        Int16 => Some((16, true)),
        Int32 => Some((32, true)),
        Int64 => Some((64, true)),
        UInt8 => Some((8, false)),
        UInt16 => Some((16, false)),
        UInt32 => Some((32, false)),
        UInt64 => Some((64, false)),
        _ => None,
    };
    match (from, to) {
        (a, b) if int_rank(a).is_some() && int_rank(b).is_some() => {
            let (wa, sa) = int_rank(a).unwrap_or((64, true));
            let (wb, sb) = int_rank(b).unwrap_or((64, true));
            (sa == sb && wa <= wb) || (!sa && sb && wa < wb)
        }
        (a, Float64) if int_rank(a).is_some() => true,
        (Float16 | Float32, Float64) | (Float16, Float32) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Utf8 | LargeUtf8 | Utf8View, Date32 | Timestamp(_, _)) => true,
        (Date64, Date32) => true,
        (Timestamp(_, from_tz), Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, to_tz)) => {
            from_tz.is_some() == to_tz.is_some() || (from_tz.is_none() && to_tz.is_some())
        }
        (Decimal128(p1, s1), Decimal128(p2, s2)) => s1 == s2 && p1 <= p2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int32Array, Int64Array, StringArray};

    fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]))
    }

    #[test]
    fn widens_integers_and_fills_missing_nullable_columns() {
        let batch =
            RecordBatch::try_from_iter(vec![("id", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef)]).unwrap();
        let mut fitter = SchemaFitter::new(table_schema(), SchemaMode::Strict);
        let out = fitter.fit(&batch).unwrap();
        assert_eq!(out.schema(), table_schema());
        assert_eq!(out.column(1).null_count(), 2);
    }

    #[test]
    fn refuses_wrong_type_naming_column_and_both_types() {
        let batch =
            RecordBatch::try_from_iter(vec![("id", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]).unwrap();
        let err = SchemaFitter::new(table_schema(), SchemaMode::Strict).fit(&batch).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`id`") && msg.contains("Int64") && msg.contains("Utf8"), "{msg}");
    }

    #[test]
    fn refuses_missing_non_null_column_and_nulls_in_non_null_column() {
        let batch =
            RecordBatch::try_from_iter(vec![("name", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]).unwrap();
        let err = SchemaFitter::new(table_schema(), SchemaMode::Strict).fit(&batch).unwrap_err();
        assert!(err.to_string().contains("`id` (non-null Int64) is missing"), "{err}");
        let batch =
            RecordBatch::try_from_iter(vec![("id", Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef)])
                .unwrap();
        let err = SchemaFitter::new(table_schema(), SchemaMode::Strict).fit(&batch).unwrap_err();
        assert!(err.to_string().contains("1 null value"), "{err}");
    }

    #[test]
    fn extra_columns_are_refused_or_merged() {
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("extra", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ])
        .unwrap();
        let err = SchemaFitter::new(table_schema(), SchemaMode::Strict).fit(&batch).unwrap_err();
        assert!(err.to_string().contains("`extra`"), "{err}");
        let mut fitter = SchemaFitter::new(table_schema(), SchemaMode::Merge);
        let out = fitter.fit(&batch).unwrap();
        assert!(fitter.evolved());
        assert_eq!(out.schema().field(2).name(), "extra");
        assert!(out.schema().field(2).is_nullable());
    }
}
