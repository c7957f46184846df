//! Table info: what a snapshot holds, how healthy its file layout is, and which
//! files in storage no version references.

use std::collections::HashSet;

use futures::TryStreamExt;
use serde::Serialize;

use crate::error::Result;
use crate::table::log_files::LogView;
use crate::table::{DataFile, Table};
use sediment_compactor::{FileView, TableHealth};

/// The default target size of data files (when a table has no `delta.targetFileSize`): 128 MiB.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// A snapshot's size, layout and protocol.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// The table location.
    pub uri: String,
    /// The version described.
    pub version: u64,
    /// Live data files.
    pub files: usize,
    /// Total bytes of the live data files.
    pub bytes: u64,
    /// Live rows (rows in files less rows deleted by deletion vectors), when every
    /// file has a row count in its statistics.
    pub rows: Option<u64>,
    /// Rows deleted by deletion vectors but still stored in the files.
    pub deleted_rows: u64,
    /// Files without a row count in their statistics.
    pub files_without_stats: usize,
    /// Partition columns.
    pub partition_columns: Vec<String>,
    /// Distinct partitions holding at least one file.
    pub partitions: usize,
    /// Target file size (`delta.targetFileSize`, else 128 MiB).
    pub target_file_size: u64,
    /// Files below 1/8 of the target size.
    pub small_files: usize,
    /// Files with a deletion vector.
    pub files_with_deletion_vectors: usize,
    /// Health: fragments, undersized files, score, histogram, per-partition health.
    pub health: TableHealth,
    /// Columns and their types.
    pub schema: Vec<ColumnInfo>,
    /// Protocol versions and features.
    pub protocol: serde_json::Value,
    /// Table properties.
    pub configuration: std::collections::BTreeMap<String, String>,
}

/// One column of the schema.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Arrow type.
    pub data_type: String,
    /// Whether nulls are allowed.
    pub nullable: bool,
}

/// A data file in storage that neither the snapshot nor its tombstones reference:
/// left by a writer or compactor that died before committing, or by a write still in
/// flight (judge by its age).
#[derive(Debug, Clone, Serialize)]
pub struct OrphanFile {
    /// Path relative to the table root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, in milliseconds since the epoch.
    pub last_modified: i64,
}

/// What `info` and the compaction planner read of one version: from a [`Table`]'s
/// snapshot or from a [`LogView`] of its log.
pub(crate) struct VersionParts<'a> {
    pub uri: &'a str,
    pub version: u64,
    pub files: &'a [DataFile],
    pub configuration: std::collections::HashMap<String, String>,
    pub schema: deltalake::arrow::datatypes::SchemaRef,
    pub partition_columns: Vec<String>,
    pub protocol: serde_json::Value,
}

impl VersionParts<'_> {
    /// The target file size: `delta.targetFileSize`, else 128 MiB.
    pub fn target_file_size(&self) -> u64 {
        target_in(&self.configuration)
    }

    /// The files as the compaction planner sees them.
    pub fn views(&self) -> Vec<FileView> {
        views_in(self.files, &self.partition_columns)
    }

    /// [`TableInfo`] of these parts.
    pub fn info(&self) -> TableInfo {
        let files = self.files;
        let target_file_size = self.target_file_size();
        let health = sediment_compactor::health::table_health(&self.views(), target_file_size);
        let files_without_stats = files.iter().filter(|f| f.rows.is_none()).count();
        let deleted_rows: u64 = files.iter().map(|f| f.deleted_rows).sum();
        TableInfo {
            uri: self.uri.to_string(),
            version: self.version,
            files: files.len(),
            bytes: health.bytes,
            rows: (files_without_stats == 0)
                .then(|| files.iter().filter_map(|f| f.rows).sum::<u64>().saturating_sub(deleted_rows)),
            deleted_rows,
            files_without_stats,
            partitions: if self.partition_columns.is_empty() {
                usize::from(!files.is_empty())
            } else {
                health.partitions.len()
            },
            partition_columns: self.partition_columns.clone(),
            target_file_size,
            small_files: health.fragments,
            files_with_deletion_vectors: files.iter().filter(|f| f.has_deletion_vector).count(),
            health,
            schema: self
                .schema
                .fields()
                .iter()
                .map(|f| ColumnInfo {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
            protocol: self.protocol.clone(),
            configuration: self.configuration.clone().into_iter().collect(),
        }
    }
}

fn target_in(configuration: &std::collections::HashMap<String, String>) -> u64 {
    configuration
        .get("delta.targetFileSize")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_TARGET_FILE_SIZE)
}

fn views_in(files: &[DataFile], partition_columns: &[String]) -> Vec<FileView> {
    files
        .iter()
        .map(|f| FileView {
            partition: partition_columns
                .iter()
                .map(|c| (c.clone(), f.partition_values.get(c).cloned().flatten()))
                .collect(),
            path: f.path.clone(),
            size: f.size,
            rows: f.rows,
            deleted_rows: f.deleted_rows,
        })
        .collect()
}

impl LogView {
    /// The parts `info` and the planner read, over these files.
    pub(crate) fn parts(&self) -> VersionParts<'_> {
        VersionParts {
            uri: self.uri(),
            version: self.version(),
            files: self.files(),
            configuration: self.metadata().configuration().clone(),
            schema: self.arrow_schema(),
            partition_columns: self.metadata().partition_columns().to_vec(),
            protocol: serde_json::to_value(self.protocol()).unwrap_or_default(),
        }
    }

    /// Describe this version, as [`Table::info`] does.
    pub fn info(&self) -> TableInfo {
        self.parts().info()
    }
}

impl Table {
    /// The parts `info` and the planner read, over `files` (this snapshot's).
    pub(crate) fn parts<'a>(&'a self, files: &'a [DataFile]) -> Result<VersionParts<'a>> {
        Ok(VersionParts {
            uri: self.uri(),
            version: self.version().unwrap_or_default(),
            files,
            configuration: self.configuration()?,
            schema: self.arrow_schema()?,
            partition_columns: self.partition_columns()?,
            protocol: serde_json::to_value(self.state()?.protocol()).unwrap_or_default(),
        })
    }

    /// Describe this snapshot.
    pub fn info(&self) -> Result<TableInfo> {
        let files = self.files()?;
        Ok(self.parts(&files)?.info())
    }

    /// Data files in storage referenced by neither this snapshot nor its tombstones.
    /// Lists the whole table directory: as costly as a listing of the table.
    pub async fn orphan_files(&self) -> Result<Vec<OrphanFile>> {
        let state = self.state()?;
        let log_store = self.delta().log_store();
        let mut referenced: HashSet<String> = state.log_data().iter().map(|f| decode(&f.path())).collect();
        let tombstones: Vec<String> =
            state.all_tombstones(log_store.as_ref()).map_ok(|t| decode(&t.path())).try_collect().await?;
        referenced.extend(tombstones);
        orphans_in(self.object_store().as_ref(), &referenced).await
    }
}

impl LogView {
    /// Data files in storage referenced by neither this version nor its tombstones, as
    /// [`Table::orphan_files`] finds them.
    pub async fn orphan_files(&self) -> Result<Vec<OrphanFile>> {
        let referenced: HashSet<String> = self
            .files()
            .iter()
            .map(|f| f.path.as_str())
            .chain(self.tombstones().iter().map(|t| t.path.as_str()))
            .map(decode)
            .collect();
        orphans_in(self.object_store().as_ref(), &referenced).await
    }

    /// Every tag of the table, by name.
    pub async fn tags(&self) -> Result<Vec<crate::Tag>> {
        crate::table::tags::tags_in(self.object_store().as_ref(), self.uri()).await
    }
}

/// The Parquet files under `store` (a table's root) that `referenced` does not hold,
/// change data and the log aside.
async fn orphans_in(store: &dyn deltalake::ObjectStore, referenced: &HashSet<String>) -> Result<Vec<OrphanFile>> {
    let mut orphans: Vec<OrphanFile> = store
        .list(None)
        .try_filter_map(|meta| {
            let path = meta.location.to_string();
            let is_data = path.ends_with(".parquet")
                && !path.starts_with("_delta_log/")
                && !path.starts_with("_change_data/")
                && !path.contains("/_change_data/");
            let orphan = is_data && !referenced.contains(&path);
            futures::future::ready(Ok(orphan.then(|| OrphanFile {
                path,
                size: meta.size,
                last_modified: meta.last_modified.timestamp_millis(),
            })))
        })
        .try_collect()
        .await
        .map_err(|e| crate::Error::delta(deltalake::DeltaTableError::from(e)))?;
    orphans.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(orphans)
}

/// What the compaction planner and the health score see of a snapshot.
impl Table {
    /// The target file size: `delta.targetFileSize`, else 128 MiB.
    pub fn target_file_size(&self) -> Result<u64> {
        Ok(target_in(&self.configuration()?))
    }

    /// The live files as the compaction planner sees them, partition values in
    /// partition-column order.
    pub fn file_views(&self) -> Result<Vec<FileView>> {
        self.views_of(&self.files()?)
    }

    /// `files` (this snapshot's) as file views.
    pub(crate) fn views_of(&self, files: &[DataFile]) -> Result<Vec<FileView>> {
        Ok(views_in(files, &self.partition_columns()?))
    }

    /// Table health at `target` bytes per file.
    pub fn health(&self, target: u64) -> Result<TableHealth> {
        self.health_of(&self.files()?, target)
    }

    /// Health of `files` (this snapshot's), for callers that already listed them.
    pub(crate) fn health_of(&self, files: &[DataFile], target: u64) -> Result<TableHealth> {
        Ok(sediment_compactor::health::table_health(&self.views_of(files)?, target))
    }
}

/// Log paths are URL-encoded; listings give the stored names.
fn decode(path: &str) -> String {
    deltalake::Path::from_url_path(path).map(|p| p.to_string()).unwrap_or_else(|_| path.to_string())
}
