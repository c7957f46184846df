//! The live files of a table's latest version, read from its log alone: for planning
//! at scale (`info`, `compact --dry-run`) on logs of hundreds of thousands of files.
//!
//! delta-rs's snapshot holds every `add` of a version as Arrow batches with its parsed
//! statistics (about 3.5 KB a file with 32 indexed columns): a 300,000-file table costs
//! a gigabyte and seconds to load before anything is planned. Planning needs none of the
//! statistics but the row count, so [`LogView`] reads what it needs itself:
//! - protocol, metadata and the version from delta-rs's lazy kernel snapshot (which
//!   replays only those two actions);
//! - the checkpoint's `add` columns `path`, `size`, `partitionValues`,
//!   `modificationTime`, `deletionVector`, `tags`, and the row count
//!   (`stats_parsed.numRecords` when the checkpoint has it, else read from the `stats`
//!   JSON), batch by batch, each batch dropped once its files are taken;
//! - the commits after the checkpoint, newest first, reconciled by path and
//!   deletion vector as the protocol says.
//!
//! What it does not read (multi-file V2 checkpoints with sidecars, UUID-named
//! checkpoints, time travel) makes [`LogView::open`] answer `None`, and the caller
//! loads the table through delta-rs as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::PrimitiveArray;
use deltalake::arrow::array::{Array, AsArray, MapArray, RecordBatch, StructArray};
use deltalake::arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use deltalake::kernel::{DeletionVectorDescriptor, Metadata, Protocol};
use deltalake::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use deltalake::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sediment_compactor::reader::StoreFileReader;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::table::{DataFile, open};

/// Commit entries fetched at once.
const COMMITS_IN_FLIGHT: usize = 16;
/// Rows per checkpoint batch: bounds the memory one batch of `add`s holds.
const CHECKPOINT_BATCH_ROWS: usize = 8 * 1024;
/// Bytes of the read columns a checkpoint part spans (see [`checkpoint_parts`]).
const CHECKPOINT_PART_BYTES: u64 = 16 * 1024 * 1024;

/// A version's protocol, metadata and live files, read from the log without
/// delta-rs's snapshot of the files.
pub struct LogView {
    uri: String,
    snapshot: deltalake::kernel::Snapshot,
    store: Arc<dyn ObjectStore>,
    /// The table's root, as delta-rs's log store names it.
    root: url::Url,
    /// The store at the root of the storage (what [`crate::OpenOptions::object_store`] takes).
    root_store: Arc<dyn ObjectStore>,
    storage_options: crate::table::storage::StorageOptions,
    files: Vec<DataFile>,
    classes: Vec<Option<String>>,
    vectors: Vec<Option<Box<DeletionVectorDescriptor>>>,
    tombstones: Vec<Tombstone>,
}

/// A `remove` of the version's log (a tombstone), as delta-rs's snapshot lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tombstone {
    /// The removed file's path, URL-decoded once.
    pub path: String,
    /// When the file was removed, in milliseconds since the epoch.
    pub deletion_timestamp: Option<i64>,
    /// The removed file's size, when the `remove` records it.
    pub size: Option<i64>,
}

/// What a replay of the log found.
#[derive(Default)]
struct Replayed {
    files: Vec<DataFile>,
    classes: Vec<Option<String>>,
    vectors: Vec<Option<Box<DeletionVectorDescriptor>>>,
    tombstones: Vec<Tombstone>,
}

impl std::fmt::Debug for LogView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogView").field("uri", &self.uri).field("files", &self.files.len()).finish()
    }
}

impl LogView {
    /// The table's latest version from its log, or `None` when this reader does not
    /// cover the table (time travel or a tag asked for, a V2 checkpoint): then open a
    /// [`crate::Table`].
    pub async fn open(uri: &str, options: &crate::OpenOptions) -> Result<Option<Self>> {
        if options.time_travels() {
            return Ok(None);
        }
        let url = crate::table::storage::parse_table_uri(uri, false)?;
        let (storage_options, object_store) = options.storage();
        let cache = open::log_cache(&url, storage_options, object_store)?;
        cache.prefetch_checkpoint();
        let log_store = open::builder_over(&url, storage_options, &cache)?
            .build_storage()
            .map_err(|e| Error::delta(e).context(format!("table {uri}")))?;
        let snapshot = deltalake::kernel::Snapshot::try_new(log_store.as_ref(), None)
            .await
            .map_err(|e| open::open_error(uri, options, e))?;
        crate::table::features::check_protocol_readable(uri, snapshot.protocol())?;
        let version = snapshot.version();
        let store = log_store.object_store(None);
        let Some(segment) = segment(store.as_ref(), version).await.map_err(|e| e.context(format!("table {uri}")))?
        else {
            return Ok(None);
        };
        let replayed = replay(store.clone(), &segment).await;
        cache.release();
        let Some(Replayed { files, classes, vectors, tombstones }) =
            replayed.map_err(|e| e.context(format!("table {uri}")))?
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            uri: uri.to_string(),
            snapshot,
            store,
            root: log_store.root_url().clone(),
            root_store: log_store.root_object_store(None),
            storage_options: storage_options.clone(),
            files,
            classes,
            vectors,
            tombstones,
        }))
    }

    /// The location as the user gave it.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The version read.
    pub fn version(&self) -> u64 {
        self.snapshot.version()
    }

    /// The live data files, as [`crate::Table::files`] lists them (in no set order).
    pub fn files(&self) -> &[DataFile] {
        &self.files
    }

    /// Each live file's `sediment.storageClass` tag, in the order of [`LogView::files`].
    pub fn class_tags(&self) -> &[Option<String>] {
        &self.classes
    }

    /// Each live file's deletion vector, in the order of [`LogView::files`].
    pub fn deletion_vectors(&self) -> impl Iterator<Item = Option<&DeletionVectorDescriptor>> {
        self.vectors.iter().map(Option::as_deref)
    }

    /// The `remove`s of this version's log (its tombstones), as delta-rs lists them.
    pub fn tombstones(&self) -> &[Tombstone] {
        &self.tombstones
    }

    /// The table's root URL.
    pub fn root(&self) -> &url::Url {
        &self.root
    }

    /// Options that open another version of this table through the same store.
    pub fn open_options(&self) -> crate::OpenOptions {
        crate::OpenOptions::new().storage_options(self.storage_options.clone()).object_store(self.root_store.clone())
    }

    /// The table properties delta-rs parses from the metadata.
    pub fn table_properties(&self) -> &delta_kernel::table_properties::TableProperties {
        self.snapshot.table_properties()
    }

    /// The object store rooted at the table directory.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The protocol.
    pub fn protocol(&self) -> &Protocol {
        self.snapshot.protocol()
    }

    /// The metadata (schema, partition columns, properties).
    pub fn metadata(&self) -> &Metadata {
        self.snapshot.metadata()
    }

    /// The schema as Arrow sees it (partition columns included).
    pub fn arrow_schema(&self) -> SchemaRef {
        self.snapshot.arrow_schema()
    }
}

/// The log entries a version is replayed from.
#[derive(Debug, Default, PartialEq)]
struct Segment {
    /// Checkpoint parts (all parts of one checkpoint), with their sizes.
    checkpoint: Vec<(Path, u64)>,
    /// Commit entries after the checkpoint up to the version, newest first.
    commits: Vec<Path>,
}

#[derive(Deserialize)]
struct LastCheckpoint {
    version: u64,
}

/// The checkpoint and commits that make `version`, or `None` when a checkpoint this
/// reader does not read (UUID-named, V2) would be the one to use.
async fn segment(store: &dyn ObjectStore, version: u64) -> Result<Option<Segment>> {
    let hint = match store.get(&Path::from("_delta_log/_last_checkpoint")).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(storage)?;
            serde_json::from_slice::<LastCheckpoint>(&bytes).ok().map(|c| c.version).filter(|v| *v <= version)
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(storage(e)),
    };
    let prefix = Path::from("_delta_log");
    let listing: Vec<object_store::ObjectMeta> = match hint {
        Some(v) => {
            store.list_with_offset(Some(&prefix), &Path::from(format!("_delta_log/{v:020}"))).try_collect().await
        }
        None => store.list(Some(&prefix)).try_collect().await,
    }
    .map_err(storage)?;
    Ok(segment_of(listing.into_iter().map(|m| (m.location, m.size)), version, hint))
}

/// A checkpoint part: its number, path and size.
type Part = (u64, Path, u64);

/// [`segment`] over a listing of `_delta_log` (from the hinted checkpoint's version on).
fn segment_of(listing: impl Iterator<Item = (Path, u64)>, version: u64, hint: Option<u64>) -> Option<Segment> {
    let mut commits: BTreeMap<u64, Path> = BTreeMap::new();
    // version -> (parts expected, parts seen); classic single part: (1, ..).
    let mut checkpoints: BTreeMap<u64, (u64, Vec<Part>)> = BTreeMap::new();
    let mut unreadable: HashSet<u64> = HashSet::new();
    for (path, size) in listing {
        let Some(name) = path.filename().map(str::to_string) else { continue };
        let Some((digits, rest)) = name.split_once('.') else { continue };
        let Ok(v) = digits.parse::<u64>() else { continue };
        if digits.len() != 20 || v > version {
            continue;
        }
        match rest {
            "json" => {
                commits.insert(v, path);
            }
            "checkpoint.parquet" => {
                checkpoints.insert(v, (1, vec![(1, path, size)]));
            }
            r if r.starts_with("checkpoint.") => {
                let parts: Vec<&str> = r.trim_start_matches("checkpoint.").split('.').collect();
                match parts.as_slice() {
                    [part, of, "parquet"] if part.len() == 10 && of.len() == 10 => {
                        match (part.parse::<u64>(), of.parse::<u64>()) {
                            (Ok(part), Ok(of)) => {
                                let entry = checkpoints.entry(v).or_insert((of, Vec::new()));
                                if entry.0 == of {
                                    entry.1.push((part, path, size));
                                }
                            }
                            _ => {
                                unreadable.insert(v);
                            }
                        }
                    }
                    _ => {
                        unreadable.insert(v);
                    }
                }
            }
            _ => {}
        }
    }
    let complete = checkpoints.into_iter().rev().find(|(_, (of, parts))| {
        let seen: HashSet<u64> = parts.iter().map(|(p, _, _)| *p).collect();
        (1..=*of).all(|p| seen.contains(&p))
    });
    let start = match &complete {
        Some((v, _)) => v + 1,
        None if hint.is_some() => return None,
        None => 0,
    };
    // A checkpoint this reader cannot read at or after the one it would use: the kernel
    // may prefer it, and its content may differ in form; let delta-rs read the table.
    if unreadable.iter().any(|v| complete.as_ref().is_none_or(|(c, _)| v >= c)) {
        return None;
    }
    if (start..=version).any(|v| !commits.contains_key(&v)) {
        return None;
    }
    let mut checkpoint: Vec<Part> = complete.map(|(_, (_, parts))| parts).unwrap_or_default();
    checkpoint.sort_by_key(|(p, _, _)| *p);
    checkpoint.dedup_by_key(|(p, _, _)| *p);
    Some(Segment {
        checkpoint: checkpoint.into_iter().map(|(_, path, size)| (path, size)).collect(),
        commits: commits.into_iter().rev().filter(|(v, _)| *v >= start).map(|(_, p)| p).collect(),
    })
}

fn storage(e: object_store::Error) -> Error {
    Error::delta(deltalake::DeltaTableError::from(e))
}

/// A file's identity in the log: its path and its deletion vector's.
type FileKey = (String, Option<String>);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DvLine {
    storage_type: String,
    path_or_inline_dv: String,
    offset: Option<i32>,
    #[serde(default)]
    size_in_bytes: i32,
    #[serde(default)]
    cardinality: i64,
}

impl DvLine {
    fn id(&self) -> String {
        dv_id(&self.storage_type, &self.path_or_inline_dv, self.offset)
    }

    fn descriptor(&self) -> Result<DeletionVectorDescriptor> {
        descriptor(&self.storage_type, &self.path_or_inline_dv, self.offset, self.size_in_bytes, self.cardinality)
    }
}

fn dv_id(storage_type: &str, path_or_inline: &str, offset: Option<i32>) -> String {
    match offset {
        Some(o) => format!("{storage_type}{path_or_inline}@{o}"),
        None => format!("{storage_type}{path_or_inline}"),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddLine {
    path: String,
    size: i64,
    #[serde(default)]
    partition_values: HashMap<String, Option<String>>,
    #[serde(default)]
    modification_time: i64,
    stats: Option<String>,
    deletion_vector: Option<DvLine>,
    tags: Option<HashMap<String, Option<String>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoveLine {
    path: String,
    deletion_vector: Option<DvLine>,
    deletion_timestamp: Option<i64>,
    size: Option<i64>,
}

#[derive(Deserialize)]
struct ActionLine {
    add: Option<AddLine>,
    remove: Option<RemoveLine>,
}

/// The live files of `segment`: commits newest first, then the checkpoint, each
/// `(path, deletion vector)` taken the first time it is seen; `None` for a checkpoint
/// with sidecars.
async fn replay(store: Arc<dyn ObjectStore>, segment: &Segment) -> Result<Option<Replayed>> {
    let mut seen: HashSet<FileKey> = HashSet::new();
    let mut out = Replayed::default();
    let mut commits = futures::stream::iter(segment.commits.iter().cloned())
        .map(|path| {
            let store = store.clone();
            async move {
                let bytes = store.get(&path).await.map_err(storage)?.bytes().await.map_err(storage)?;
                Ok::<_, Error>((path, bytes))
            }
        })
        .buffered(COMMITS_IN_FLIGHT);
    while let Some((path, bytes)) = commits.try_next().await? {
        for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let action: ActionLine = serde_json::from_slice(line)
                .map_err(|e| Error::invalid(format!("log entry {path} line {}: {e}", n + 1)))?;
            if let Some(remove) = action.remove {
                out.tombstones.push(Tombstone {
                    path: decoded(&remove.path),
                    deletion_timestamp: remove.deletion_timestamp,
                    size: remove.size,
                });
                seen.insert((remove.path, remove.deletion_vector.as_ref().map(DvLine::id)));
            }
            if let Some(add) = action.add {
                let key = (add.path.clone(), add.deletion_vector.as_ref().map(DvLine::id));
                if seen.insert(key) {
                    let class = add.tags.as_ref().and_then(|t| t.get(CLASS_TAG).cloned().flatten());
                    let vector = add.deletion_vector.as_ref().map(DvLine::descriptor).transpose()?.map(Box::new);
                    out.files.push(DataFile {
                        rows: add.stats.as_deref().and_then(num_records),
                        size: add.size.max(0) as u64,
                        partition_values: add.partition_values.into_iter().collect(),
                        modification_time: add.modification_time,
                        has_deletion_vector: add.deletion_vector.is_some(),
                        deleted_rows: add.deletion_vector.map_or(0, |dv| dv.cardinality.max(0) as u64),
                        path: decoded(&add.path),
                    });
                    out.classes.push(class);
                    out.vectors.push(vector);
                }
            }
        }
    }
    drop(commits);
    for (path, size) in &segment.checkpoint {
        let read = read_checkpoint(store.clone(), path, *size, &seen, &mut out)
            .await
            .map_err(|e| e.context(format!("checkpoint {path}")))?;
        if !read {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// A log path as [`DataFile`] holds it: URL-decoded once, as delta-rs's file views give it.
fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()
}

/// The `add` tag that records a file's storage class in the log (absent: STANDARD).
pub const CLASS_TAG: &str = "sediment.storageClass";

/// The row count of a file from its statistics JSON, reading no more of it than needed.
pub(crate) fn num_records(stats: &str) -> Option<u64> {
    const KEY: &str = "\"numRecords\":";
    if let Some(at) = stats.find(KEY) {
        let digits: &str = stats[at + KEY.len()..].trim_start();
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        if end > 0 {
            return digits[..end].parse().ok();
        }
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Stats {
        num_records: Option<u64>,
    }
    serde_json::from_str::<Stats>(stats).ok()?.num_records
}

/// Take the live `add`s of one checkpoint part; `false` when it is a V2 checkpoint
/// whose files are in sidecars (which this reader leaves to delta-rs).
async fn read_checkpoint(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
    seen: &HashSet<FileKey>,
    out: &mut Replayed,
) -> Result<bool> {
    let mut reader = StoreFileReader::new(store, path.clone(), size);
    // The offset index lets a read of some rows fetch only their pages.
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
    let metadata = ArrowReaderMetadata::load_async(&mut reader, options).await.map_err(parquet)?;
    let parquet_schema = metadata.parquet_schema();
    let has = |name: &str| {
        let parts: Vec<&str> = name.split('.').collect();
        parquet_schema
            .columns()
            .iter()
            .any(|c| c.path().parts().iter().map(String::as_str).take(parts.len()).eq(parts.iter().copied()))
    };
    let sidecars = has("sidecar.path");
    let parsed_rows = has("add.stats_parsed.numRecords");
    let mut columns =
        vec!["add.path", "add.size", "add.partitionValues", "add.modificationTime", "add.deletionVector", "add.tags"];
    columns.push(if parsed_rows { "add.stats_parsed.numRecords" } else { "add.stats" });
    if sidecars {
        columns.push("sidecar.path");
    }
    for column in ["remove.path", "remove.deletionTimestamp", "remove.size"] {
        if has(column) {
            columns.push(column);
        }
    }
    let mask = ProjectionMask::columns(parquet_schema, columns.iter().copied());
    let parts = checkpoint_parts(metadata.metadata(), &mask);
    // Each part is a stream of its own; the next part's pages are fetched while this
    // one is taken.
    let mut batches = futures::stream::iter(parts)
        .map(|(row_group, rows)| {
            let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader.clone(), metadata.clone())
                .with_projection(mask.clone())
                .with_row_groups(vec![row_group])
                .with_batch_size(CHECKPOINT_BATCH_ROWS);
            let builder = match rows {
                Some(selection) => builder.with_row_selection(selection),
                None => builder,
            };
            async move { builder.build()?.try_collect::<Vec<_>>().await }
        })
        .buffered(2);
    while let Some(part) = batches.try_next().await.map_err(parquet)? {
        for batch in part {
            // A V2 checkpoint's files are in its sidecars: declined (delta-rs reads them).
            if batch.column_by_name("sidecar").is_some_and(|s| s.null_count() < s.len()) {
                return Ok(false);
            }
            take_adds(&batch, seen, out)?;
            if let Some(remove) = batch.column_by_name("remove").and_then(|c| c.as_struct_opt())
                && let Some(path) = remove.column_by_name("path").and_then(|c| c.as_string_opt::<i32>())
            {
                let number = |name: &str| remove.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>());
                let (deleted, size) = (number("deletionTimestamp"), number("size"));
                let value =
                    |c: Option<&PrimitiveArray<Int64Type>>, r: usize| c.filter(|c| c.is_valid(r)).map(|c| c.value(r));
                out.tombstones.extend((0..remove.len()).filter(|r| remove.is_valid(*r) && path.is_valid(*r)).map(
                    |r| Tombstone {
                        path: decoded(path.value(r)),
                        deletion_timestamp: value(deleted, r),
                        size: value(size, r),
                    },
                ));
            }
        }
    }
    Ok(true)
}

/// The parts a checkpoint is read in: each row group, split into row ranges of about
/// [`CHECKPOINT_PART_BYTES`] of the projected columns when the file has an offset
/// index (a checkpoint is often one row group, and its `add.stats` chunk alone can be
/// hundreds of megabytes); a whole row group (`None`) otherwise.
fn checkpoint_parts(metadata: &ParquetMetaData, mask: &ProjectionMask) -> Vec<(usize, Option<RowSelection>)> {
    let mut parts = Vec::new();
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let total = group.num_rows().max(0) as usize;
        let bytes: u64 = group
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| mask.leaf_included(*leaf))
            .map(|(_, c)| c.compressed_size().max(0) as u64)
            .sum();
        let pieces = bytes.div_ceil(CHECKPOINT_PART_BYTES).max(1) as usize;
        if metadata.offset_index().is_none() || pieces == 1 || total == 0 {
            parts.push((index, None));
            continue;
        }
        let step = total.div_ceil(pieces).max(CHECKPOINT_BATCH_ROWS);
        for start in (0..total).step_by(step) {
            let end = (start + step).min(total);
            parts.push((index, Some(RowSelection::from_consecutive_ranges(std::iter::once(start..end), total))));
        }
    }
    parts
}

fn parquet(e: deltalake::parquet::errors::ParquetError) -> Error {
    Error::delta(deltalake::DeltaTableError::from(e))
}

fn bad(what: &str) -> Error {
    Error::invalid(format!("the checkpoint's {what} is not as the Delta protocol writes it"))
}

/// The live `add`s of one checkpoint batch.
fn take_adds(batch: &RecordBatch, seen: &HashSet<FileKey>, out: &mut Replayed) -> Result<()> {
    let Some(add) = batch.column_by_name("add") else { return Ok(()) };
    let add = add.as_struct_opt().ok_or_else(|| bad("add column"))?;
    let path = add.column_by_name("path").ok_or_else(|| bad("add.path"))?;
    let path = path.as_string_opt::<i32>().ok_or_else(|| bad("add.path"))?;
    let size =
        add.column_by_name("size").and_then(|c| c.as_primitive_opt::<Int64Type>()).ok_or_else(|| bad("add.size"))?;
    let modified = add.column_by_name("modificationTime").and_then(|c| c.as_primitive_opt::<Int64Type>());
    let partitions = add.column_by_name("partitionValues").and_then(|c| c.as_map_opt());
    let tags = add.column_by_name("tags").and_then(|c| c.as_map_opt());
    let dv = add.column_by_name("deletionVector").and_then(|c| c.as_struct_opt());
    let stats = add.column_by_name("stats").and_then(|c| c.as_string_opt::<i32>());
    let parsed_rows = add
        .column_by_name("stats_parsed")
        .and_then(|c| c.as_struct_opt())
        .and_then(|s| s.column_by_name("numRecords"))
        .and_then(|c| c.as_primitive_opt::<Int64Type>());
    for row in 0..add.len() {
        if add.is_null(row) || path.is_null(row) {
            continue;
        }
        let dv_row = dv.filter(|d| d.is_valid(row));
        let vector = dv_row.map(|d| dv_descriptor(d, row)).transpose()?;
        let dv_key = vector.as_ref().map(|d| dv_id(d.storage_type.as_ref(), &d.path_or_inline_dv, d.offset));
        let key: FileKey = (path.value(row).to_string(), dv_key);
        if seen.contains(&key) {
            continue;
        }
        let rows = match (parsed_rows, stats) {
            (Some(n), _) if n.is_valid(row) => Some(n.value(row).max(0) as u64),
            (_, Some(s)) if s.is_valid(row) => num_records(s.value(row)),
            _ => None,
        };
        let cardinality = vector.as_ref().map_or(0, |d| d.cardinality.max(0) as u64);
        out.files.push(DataFile {
            path: decoded(&key.0),
            size: size.value(row).max(0) as u64,
            rows,
            partition_values: partitions.map(|m| string_map(m, row)).transpose()?.unwrap_or_default(),
            modification_time: modified.filter(|m| m.is_valid(row)).map_or(0, |m| m.value(row)),
            has_deletion_vector: vector.is_some(),
            deleted_rows: cardinality,
        });
        out.classes.push(tags.map(|t| string_map(t, row)).transpose()?.and_then(|mut t| t.remove(CLASS_TAG)).flatten());
        out.vectors.push(vector.map(Box::new));
    }
    Ok(())
}

fn dv_descriptor(dv: &StructArray, row: usize) -> Result<DeletionVectorDescriptor> {
    let text = |name: &str| {
        dv.column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .filter(|c| c.is_valid(row))
            .map(|c| c.value(row).to_string())
            .ok_or_else(|| bad(&format!("add.deletionVector.{name}")))
    };
    let int32 = |name: &str| {
        dv.column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .filter(|c| c.is_valid(row))
            .map(|c| c.value(row))
    };
    let cardinality = dv
        .column_by_name("cardinality")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .filter(|c| c.is_valid(row))
        .map_or(0, |c| c.value(row));
    descriptor(
        &text("storageType")?,
        &text("pathOrInlineDv")?,
        int32("offset"),
        int32("sizeInBytes").unwrap_or(0),
        cardinality,
    )
}

fn descriptor(
    storage_type: &str,
    path_or_inline_dv: &str,
    offset: Option<i32>,
    size_in_bytes: i32,
    cardinality: i64,
) -> Result<DeletionVectorDescriptor> {
    let storage_type = storage_type
        .parse()
        .map_err(|_| Error::invalid(format!("deletion vector storage type {storage_type:?} is not u, i or p")))?;
    Ok(DeletionVectorDescriptor {
        storage_type,
        path_or_inline_dv: path_or_inline_dv.to_string(),
        offset,
        size_in_bytes,
        cardinality,
    })
}

/// Row `row` of a string-to-string map column (a null map: empty).
fn string_map(map: &MapArray, row: usize) -> Result<BTreeMap<String, Option<String>>> {
    if map.is_null(row) {
        return Ok(BTreeMap::new());
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_string_opt::<i32>().ok_or_else(|| bad("map keys"))?;
    let values = entries.column(1).as_string_opt::<i32>().ok_or_else(|| bad("map values"))?;
    Ok((0..entries.len())
        .map(|i| (keys.value(i).to_string(), values.is_valid(i).then(|| values.value(i).to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> Vec<(Path, u64)> {
        names.iter().map(|n| (Path::from(format!("_delta_log/{n}")), 10)).collect()
    }

    fn v(n: u64, rest: &str) -> String {
        format!("{n:020}.{rest}")
    }

    #[test]
    fn segment_takes_the_newest_complete_checkpoint_and_the_commits_after_it() {
        let names = [
            v(0, "json"),
            v(1, "json"),
            v(2, "json"),
            v(2, "checkpoint.parquet"),
            v(3, "json"),
            v(4, "json"),
            v(4, "checkpoint.0000000001.0000000002.parquet"),
            v(5, "json"),
            "_last_checkpoint".into(),
        ];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let got = segment_of(listing(&names).into_iter(), 5, None).unwrap();
        // The two-part checkpoint at 4 lacks its second part: the one at 2 is used.
        assert_eq!(got.checkpoint, vec![(Path::from(format!("_delta_log/{}", v(2, "checkpoint.parquet"))), 10)]);
        let commits: Vec<String> = got.commits.iter().map(|p| p.filename().unwrap().to_string()).collect();
        assert_eq!(commits, vec![v(5, "json"), v(4, "json"), v(3, "json")]);
        // At version 3 the newer entries are not part of it.
        let got = segment_of(listing(&names).into_iter(), 3, None).unwrap();
        assert_eq!(got.commits.len(), 1);
    }

    #[test]
    fn segment_declines_what_it_does_not_read() {
        // A UUID-named (V2) checkpoint: delta-rs reads the table.
        let names = [v(0, "json"), v(1, "json"), v(1, "checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.parquet")];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(segment_of(listing(&names).into_iter(), 1, None), None);
        // A gap in the commits after the checkpoint.
        let names = [v(0, "json"), v(0, "checkpoint.parquet"), v(2, "json")];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(segment_of(listing(&names).into_iter(), 2, None), None);
        // A hinted checkpoint that the listing does not hold.
        let names = [v(3, "json")];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(segment_of(listing(&names).into_iter(), 3, Some(2)), None);
    }

    #[test]
    fn row_counts_come_from_the_statistics_without_parsing_all_of_them() {
        assert_eq!(num_records(r#"{"numRecords":5000,"minValues":{"a":1}}"#), Some(5000));
        assert_eq!(num_records(r#"{"minValues":{"a":1}, "numRecords": 7}"#), Some(7));
        assert_eq!(num_records(r#"{"numRecords" : 9}"#), Some(9));
        assert_eq!(num_records(r#"{"minValues":{}}"#), None);
        assert_eq!(num_records("not json"), None);
    }
}
