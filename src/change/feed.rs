//! Writing the change data feed: the rows a delete, update or merge changed, as
//! `_change_data/` files and `cdc` actions in the same commit as the data.
//!
//! The Delta protocol's rule: a reader of a commit's changes uses its `cdc` files
//! when it has any, and otherwise derives them from its `add` (inserts) and `remove`
//! (deletes) actions with `dataChange = true`. So:
//!
//! | operation | change data written |
//! |---|---|
//! | append, overwrite, a delete by partition only (whole files removed) | none: readers take the rows from the `add`s and `remove`s |
//! | delete by predicate (rewriting or marking rows) | `delete` rows |
//! | update | `update_preimage` and `update_postimage` rows |
//! | merge, upsert, SCD type 2 | `delete`, `update_preimage`/`update_postimage` and `insert` rows; none when it only inserted |
//! | compaction and every `dataChange = false` rewrite | none, and `_change_data/` is never rewritten |
//!
//! Only tables whose feed is *active* get any of this ([`feed_active`]): the
//! property `delta.enableChangeDataFeed = true` on a protocol that supports it
//! (writer version 4 to 6, or 7 with the `changeDataFeed` writer feature). A table
//! that sets the property on an older protocol has no feed as far as Delta is
//! concerned; Sediment writes none and never upgrades the protocol itself.
//!
//! A [`ChangeFeed`] takes batches of changed rows (the table's columns) with their
//! change type from several file tasks at once, splits them by partition and streams
//! them into one Parquet file per partition under `_change_data/` (partition columns
//! are in the action, not the file, as for data files). Nothing it writes is visible
//! before the commit; [`ChangeFeed::abort`] deletes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use delta_kernel::expressions::Scalar;
use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use deltalake::arrow::compute::{cast, take};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::AddCDCFile;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::parquet::arrow::async_writer::AsyncArrowWriter;
use deltalake::table::state::DeltaTableState;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;

/// The column of change data that says what happened to a row.
pub const CHANGE_TYPE_COLUMN: &str = "_change_type";

/// What happened to a row, as `_change_type` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Insert,
    Delete,
    UpdatePreimage,
    UpdatePostimage,
}

impl ChangeType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeType::Insert => "insert",
            ChangeType::Delete => "delete",
            ChangeType::UpdatePreimage => "update_preimage",
            ChangeType::UpdatePostimage => "update_postimage",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Whether changes to the table must write change data: the table sets
/// `delta.enableChangeDataFeed = true` and its protocol supports the feed.
pub fn feed_active(state: &DeltaTableState) -> bool {
    property_set(state) && protocol_supports_feed(state)
}

/// Whether the table sets `delta.enableChangeDataFeed = true` (whatever its protocol).
pub(crate) fn property_set(state: &DeltaTableState) -> bool {
    state.metadata().configuration().get("delta.enableChangeDataFeed").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Writer version 4 to 6, or 7 declaring the `changeDataFeed` writer feature.
pub(crate) fn protocol_supports_feed(state: &DeltaTableState) -> bool {
    let protocol = state.protocol();
    match protocol.writer_features() {
        Some(features) => features.iter().any(|f| f.as_ref() == "changeDataFeed"),
        None => protocol.min_writer_version() >= 4,
    }
}

/// Change data of one operation, written as it comes (see the module doc).
pub(crate) struct ChangeFeed {
    store: Arc<dyn ObjectStore>,
    /// The table's columns, in its order and types.
    schema: SchemaRef,
    partition_columns: Vec<String>,
    /// The files' columns: the table's data columns, then `_change_type`.
    file_schema: SchemaRef,
    properties: deltalake::parquet::file::properties::WriterProperties,
    /// Open files by partition values; `None` once finished or aborted.
    files: std::sync::Mutex<Option<HashMap<PartitionKey, Arc<tokio::sync::Mutex<FeedFile>>>>>,
    /// Rows written by change type.
    rows: [AtomicU64; 4],
}

/// A partition's values as the log writes them, in the order of the partition columns.
type PartitionKey = Vec<Option<String>>;

/// One open change-data file (of one partition).
struct FeedFile {
    path: deltalake::Path,
    partition_values: HashMap<String, Option<String>>,
    writer: AsyncArrowWriter<BufWriter>,
}

/// The change files an operation wrote, for its commit (or for deletion when it
/// does not commit).
#[derive(Debug, Default)]
pub(crate) struct FeedFiles {
    pub actions: Vec<AddCDCFile>,
}

impl FeedFiles {
    /// Bytes of the change files.
    pub fn bytes(&self) -> u64 {
        self.actions.iter().map(|a| a.size.max(0) as u64).sum()
    }

    /// Delete the files of a commit that did not land (best effort).
    pub async fn discard(&self, table: &Table) {
        crate::write::sink::delete_uncommitted(
            table.object_store(),
            self.actions.iter().map(|a| deltalake::Path::from(a.path.as_str())),
        )
        .await;
    }
}

impl ChangeFeed {
    /// The feed of a change to `table`, or `None` when its feed is not active.
    pub(crate) fn for_table(table: &Table) -> Result<Option<Arc<Self>>> {
        let state = table.state()?;
        if !feed_active(state) {
            return Ok(None);
        }
        let schema = crate::read::scan::plain_schema(&table.arrow_schema()?);
        let partition_columns = table.partition_columns()?;
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new(CHANGE_TYPE_COLUMN, DataType::Utf8, false));
        let target = table.target_file_size()?;
        Ok(Some(Arc::new(Self {
            store: table.object_store(),
            schema,
            partition_columns,
            file_schema: Arc::new(Schema::new(fields)),
            properties: sediment_compactor::executor::writer_properties(target),
            files: std::sync::Mutex::new(Some(HashMap::new())),
            rows: Default::default(),
        })))
    }

    /// Write `rows` (with at least the table's columns, by name) as changes of `kind`.
    pub(crate) async fn write(&self, rows: &RecordBatch, kind: ChangeType) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let columns = self.table_columns(rows)?;
        for (key, indices) in self.group_by_partition(&columns)? {
            let indices = UInt32Array::from(indices);
            let mut data: Vec<ArrayRef> = Vec::with_capacity(self.file_schema.fields().len());
            for (field, column) in self.schema.fields().iter().zip(&columns) {
                if !self.partition_columns.contains(field.name()) {
                    data.push(take(column.as_ref(), &indices, None)?);
                }
            }
            data.push(Arc::new(StringArray::from(vec![kind.as_str(); indices.len()])));
            let batch = RecordBatch::try_new(self.file_schema.clone(), data)?;
            let file = self.file(key)?;
            file.lock().await.writer.write(&batch).await.map_err(|e| Error::from(e).context("writing change data"))?;
        }
        self.rows[kind.index()].fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Close every file and return their `cdc` actions. When only inserts were
    /// written, the files are deleted and no action is returned (the commit's `add`s
    /// carry the same rows).
    pub(crate) async fn finish(&self) -> Result<FeedFiles> {
        let files = self.take_files()?;
        // Whether every row written is an insert: such a commit needs no change files
        // (its adds say the same), so they are deleted.
        let only_inserts = [ChangeType::Delete, ChangeType::UpdatePreimage, ChangeType::UpdatePostimage]
            .iter()
            .all(|kind| self.rows[kind.index()].load(Ordering::Relaxed) == 0);
        let mut actions = Vec::with_capacity(files.len());
        let mut error = None;
        for file in files {
            let mut file = file.lock().await;
            match file.writer.finish().await {
                Ok(_) => actions.push(AddCDCFile {
                    path: file.path.to_string(),
                    size: file.writer.bytes_written() as i64,
                    partition_values: file.partition_values.clone(),
                    data_change: false,
                    tags: None,
                }),
                Err(e) => error = error.or(Some(Error::from(e).context("closing change data"))),
            }
        }
        let feed = FeedFiles { actions };
        if let Some(e) = error {
            self.delete(&feed).await;
            return Err(e);
        }
        if only_inserts {
            self.delete(&feed).await;
            return Ok(FeedFiles::default());
        }
        Ok(feed)
    }

    /// Give up: close and delete whatever was written (the operation failed).
    pub(crate) async fn abort(&self) {
        match self.finish().await {
            Ok(feed) => self.delete(&feed).await,
            Err(e) => tracing::warn!(error = %e, "could not close change data of a failed operation"),
        }
    }

    async fn delete(&self, feed: &FeedFiles) {
        crate::write::sink::delete_uncommitted(
            self.store.clone(),
            feed.actions.iter().map(|a| deltalake::Path::from(a.path.as_str())),
        )
        .await;
    }

    fn take_files(&self) -> Result<Vec<Arc<tokio::sync::Mutex<FeedFile>>>> {
        let mut files = self.files.lock().map_err(|_| Error::internal("a change-data writer panicked"))?;
        Ok(files.take().map(|f| f.into_values().collect()).unwrap_or_default())
    }

    /// The open file of the partition `key`, made on first use.
    fn file(&self, key: PartitionKey) -> Result<Arc<tokio::sync::Mutex<FeedFile>>> {
        let mut files = self.files.lock().map_err(|_| Error::internal("a change-data writer panicked"))?;
        let files = files.as_mut().ok_or_else(|| Error::internal("change data written after the feed was closed"))?;
        if let Some(file) = files.get(&key) {
            return Ok(file.clone());
        }
        let mut path = String::from("_change_data");
        for (column, value) in self.partition_columns.iter().zip(&key) {
            path.push('/');
            path.push_str(&path_segment(column, value.as_deref()));
        }
        path.push_str(&format!("/cdc-{}.c000.zstd.parquet", uuid::Uuid::new_v4()));
        let path = deltalake::Path::from(path);
        let writer = AsyncArrowWriter::try_new(
            BufWriter::new(self.store.clone(), path.clone()),
            self.file_schema.clone(),
            Some(self.properties.clone()),
        )?;
        let partition_values = self.partition_columns.iter().cloned().zip(key.iter().cloned()).collect();
        let file = Arc::new(tokio::sync::Mutex::new(FeedFile { path, partition_values, writer }));
        files.insert(key, file.clone());
        Ok(file)
    }

    /// The table's columns of `rows`, in the table's order and types.
    fn table_columns(&self, rows: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.schema
            .fields()
            .iter()
            .map(|field| {
                let column = rows.column_by_name(field.name()).ok_or_else(|| {
                    Error::internal(format!("change data without the table's column `{}`", field.name()))
                })?;
                Ok(if column.data_type() == field.data_type() {
                    column.clone()
                } else {
                    cast(column, field.data_type())?
                })
            })
            .collect()
    }

    /// Row indices by partition values (as the log writes them), in first-seen order.
    fn group_by_partition(&self, columns: &[ArrayRef]) -> Result<Vec<(PartitionKey, Vec<u32>)>> {
        let rows = columns.first().map_or(0, |c| c.len());
        if self.partition_columns.is_empty() {
            return Ok(vec![(Vec::new(), (0..rows as u32).collect())]);
        }
        // In the order of `partition_columns`, as the key is built.
        let ordered: Vec<&ArrayRef> = self
            .partition_columns
            .iter()
            .map(|name| {
                let i = self.schema.fields().iter().position(|f| f.name() == name).unwrap_or(0);
                &columns[i]
            })
            .collect();
        let mut groups: Vec<(PartitionKey, Vec<u32>)> = Vec::new();
        let mut index: HashMap<PartitionKey, usize> = HashMap::new();
        for row in 0..rows {
            let key = ordered
                .iter()
                .map(|column| {
                    if column.is_null(row) {
                        return Ok(None);
                    }
                    Scalar::from_array(column.as_ref(), row).map(|s| Some(s.serialize())).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Unsupported,
                            format!(
                                "a partition value of type {} cannot be written as change data",
                                column.data_type()
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            match index.get(&key) {
                Some(&g) => groups[g].1.push(row as u32),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, vec![row as u32]));
                }
            }
        }
        Ok(groups)
    }
}

/// `column=value` for a change-data folder, with only characters every store and
/// reader takes as they are (others become `_`; each file's action carries the
/// exact partition values, so the folder name only groups files).
fn path_segment(column: &str, value: Option<&str>) -> String {
    let clean = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect::<String>()
    };
    format!("{}={}", clean(column), value.map_or_else(|| "__HIVE_DEFAULT_PARTITION__".to_string(), clean))
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn folders_keep_only_plain_characters() {
        assert_eq!(path_segment("day", Some("2024-05-01")), "day=2024-05-01");
        assert_eq!(path_segment("city", Some("São Paulo/x")), "city=S_o_Paulo_x");
        assert_eq!(path_segment("g", None), "g=__HIVE_DEFAULT_PARTITION__");
    }
}
