//! Table info: what a snapshot holds and how healthy its file layout is.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::Result;
use crate::sink::DEFAULT_TARGET_FILE_SIZE;
use crate::table::Table;

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
    /// File-size histogram.
    pub size_histogram: Vec<SizeBucket>,
    /// Columns and their types.
    pub schema: Vec<ColumnInfo>,
    /// Protocol versions and features.
    pub protocol: serde_json::Value,
    /// Table properties.
    pub configuration: std::collections::BTreeMap<String, String>,
}

/// One bucket of the file-size histogram: files with `min_bytes <= size < max_bytes`.
#[derive(Debug, Clone, Serialize)]
pub struct SizeBucket {
    /// Human label, e.g. `1MiB-8MiB`.
    pub label: String,
    /// Lower bound, inclusive.
    pub min_bytes: u64,
    /// Upper bound, exclusive (`u64::MAX` for the last bucket).
    pub max_bytes: u64,
    /// Files in the bucket.
    pub files: usize,
    /// Bytes in the bucket.
    pub bytes: u64,
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

const MIB: u64 = 1024 * 1024;
const BUCKET_EDGES: &[u64] = &[0, MIB, 8 * MIB, 32 * MIB, 64 * MIB, 128 * MIB, 256 * MIB, u64::MAX];

impl Table {
    /// Describe this snapshot.
    pub fn info(&self) -> Result<TableInfo> {
        let state = self.state()?;
        let files = self.files()?;
        let configuration = self.configuration()?;
        let target_file_size = configuration
            .get("delta.targetFileSize")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_TARGET_FILE_SIZE);
        let mut size_histogram: Vec<SizeBucket> = BUCKET_EDGES
            .windows(2)
            .map(|w| SizeBucket {
                label: bucket_label(w[0], w[1]),
                min_bytes: w[0],
                max_bytes: w[1],
                files: 0,
                bytes: 0,
            })
            .collect();
        for f in &files {
            if let Some(bucket) = size_histogram.iter_mut().find(|b| f.size >= b.min_bytes && f.size < b.max_bytes) {
                bucket.files += 1;
                bucket.bytes += f.size;
            }
        }
        let partitions: BTreeSet<Vec<Option<String>>> =
            files.iter().map(|f| f.partition_values.values().cloned().collect()).collect();
        let files_without_stats = files.iter().filter(|f| f.rows.is_none()).count();
        let deleted_rows: u64 = files.iter().map(|f| f.deleted_rows).sum();
        let schema = self.arrow_schema()?;
        Ok(TableInfo {
            uri: self.uri().to_string(),
            version: self.version().unwrap_or_default(),
            files: files.len(),
            bytes: files.iter().map(|f| f.size).sum(),
            rows: (files_without_stats == 0)
                .then(|| files.iter().filter_map(|f| f.rows).sum::<u64>().saturating_sub(deleted_rows)),
            deleted_rows,
            files_without_stats,
            partition_columns: self.partition_columns()?,
            partitions: if self.partition_columns()?.is_empty() {
                usize::from(!files.is_empty())
            } else {
                partitions.len()
            },
            target_file_size,
            small_files: files.iter().filter(|f| f.size < target_file_size / 8).count(),
            files_with_deletion_vectors: files.iter().filter(|f| f.has_deletion_vector).count(),
            size_histogram,
            schema: schema
                .fields()
                .iter()
                .map(|f| ColumnInfo {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
            protocol: serde_json::to_value(state.protocol()).unwrap_or_default(),
            configuration: configuration.into_iter().collect(),
        })
    }
}

fn bucket_label(min: u64, max: u64) -> String {
    let show = |b: u64| bytesize::ByteSize(b).display().iec_short().to_string().replace(' ', "");
    match (min, max) {
        (0, m) => format!("<{}", show(m)),
        (m, u64::MAX) => format!(">={}", show(m)),
        (a, b) => format!("{}-{}", show(a), show(b)),
    }
}
