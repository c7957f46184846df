//! What a run reads of a source: the commits since the version its last run consumed,
//! and their rows.
//!
//! The first run of a pipeline (no `txn` in the target for the source) reads the
//! source's whole snapshot. Later runs read the commits after the recorded version:
//! - commits that only add files (appends): the rows of the added files;
//! - commits that also remove files with `dataChange = true` (updates, deletes,
//!   merges on the source): with the change data feed on (`delta.enableChangeDataFeed`)
//!   the feed's inserted and post-update rows; without it the rows of the files the
//!   commits added (the rewritten files: the touched rows in their new state, with
//!   the unchanged rows of those files), and the partitions the commits touched;
//! - commits with `dataChange = false` only (compaction, tiering): nothing.
//!
//! Rows of a source's deletes are not events: an upsert pipeline's deletes come from
//! its `delete_when` condition on the events.
//!
//! `max_source_versions` counts commits that change data; `max_bytes` the bytes of
//! added files (the commit that crosses it is the last one read, so a run always
//! makes progress).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use deltalake::arrow::array::{Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::kernel::Add;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::table::Table;
use crate::table::log::commit_actions;

/// Commits read at once.
const COMMITS_IN_FLIGHT: usize = 32;

/// The column with each increment row's source commit version.
pub const VERSION_COLUMN: &str = "_commit_version";
/// The column with each increment row's change type (`insert`, `update_postimage`).
pub const CHANGE_TYPE_COLUMN: &str = "_change_type";

/// How a run read a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncrementKind {
    /// The whole snapshot (the first run, or a backfill from version 0).
    Snapshot,
    /// The files appends added.
    Appends,
    /// The change data feed (the source has updates or deletes and records changes).
    ChangeDataFeed,
    /// The files the source's updates and deletes wrote, and the partitions they
    /// touched (the source has updates or deletes and no change data feed).
    RewrittenFiles,
    /// Only commits that change no data (compaction).
    NoDataChange,
}

/// The part of a source one run consumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceIncrement {
    /// The source's catalog name.
    pub table: String,
    /// The last version the previous run consumed (`None`: none).
    pub after_version: Option<u64>,
    /// The last version this run consumes.
    pub to_version: u64,
    pub increment: IncrementKind,
    /// Commits in the range that change data.
    pub data_commits: u64,
    /// Bytes of the files read.
    pub bytes: u64,
    /// Rows read.
    pub rows: u64,
    /// The partitions (column to value) the range's commits added to or removed from.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub touched_partitions: Vec<BTreeMap<String, Option<String>>>,
    /// Whether the source has newer versions than this run consumed (a limit stopped it).
    pub more_pending: bool,
    /// The source's newest version when the run read it.
    pub latest_version: u64,
}

/// Limits of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_source_versions: Option<u64>,
    pub max_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct Line {
    add: Option<Add>,
    remove: Option<RemoveRef>,
    cdc: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RemoveRef {
    path: String,
    #[serde(rename = "dataChange", default = "yes")]
    data_change: bool,
    #[serde(rename = "partitionValues", default)]
    partition_values: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    size: Option<i64>,
    #[serde(rename = "deletionVector", default)]
    deletion_vector: Option<deltalake::kernel::DeletionVectorDescriptor>,
}

fn yes() -> bool {
    true
}

/// One commit's data changes.
struct CommitChange {
    version: u64,
    adds: Vec<Add>,
    /// Files removed with `dataChange = true`, as the `add`s they were (no statistics).
    removed: Vec<Add>,
    removes_data: bool,
    has_cdc: bool,
    touched: BTreeSet<BTreeMap<String, Option<String>>>,
}

/// The increment's plan and the added files to read, by commit version.
pub(crate) struct IncrementPlan {
    pub increment: SourceIncrement,
    files: Vec<(u64, Vec<Add>)>,
    /// Files the range's commits removed with `dataChange = true`.
    pub(crate) removed: Vec<Add>,
}

/// Plan what a run reads of `source` (at its latest version) after `after` (`None`:
/// the snapshot); `pinned_to`: the last version is given (a run redoing the range of a
/// run killed between its quarantine and target commits). `None` when there is nothing new.
pub(crate) async fn plan(
    name: &str,
    source: &Table,
    after: Option<u64>,
    pinned_to: Option<u64>,
    limits: Limits,
) -> Result<Option<IncrementPlan>> {
    let latest = source.version().ok_or_else(|| {
        Error::new(crate::ErrorKind::NotFound, format!("source {name}: no delta table at {}", source.uri()))
    })?;
    let Some(after) = after else {
        let to = pinned_to.unwrap_or(latest);
        return Ok(Some(IncrementPlan {
            increment: SourceIncrement {
                table: name.to_string(),
                after_version: None,
                to_version: to,
                increment: IncrementKind::Snapshot,
                data_commits: to + 1,
                bytes: 0,
                rows: 0,
                touched_partitions: Vec::new(),
                more_pending: to < latest,
                latest_version: latest,
            },
            files: Vec::new(),
            removed: Vec::new(),
        }));
    };
    if after >= latest {
        return Ok(None);
    }
    let log_store = source.delta().log_store();
    let mut next = after + 1;
    let last = pinned_to.unwrap_or(latest).min(latest);
    let mut changes: Vec<CommitChange> = Vec::new();
    let (mut data_commits, mut bytes) = (0u64, 0u64);
    let mut to = after;
    'windows: while next <= last {
        let top = (next + COMMITS_IN_FLIGHT as u64 - 1).min(last);
        let window: Vec<CommitChange> = futures::stream::iter(next..=top)
            .map(|version| {
                let log_store = log_store.clone();
                async move {
                    let bytes = log_store.read_commit_entry(version).await?.ok_or_else(|| {
                        Error::new(
                            crate::ErrorKind::NotFound,
                            format!(
                                "source {name}: commit {version} is no longer in its log (log retention removed it before \
                                 the pipeline consumed it); run a backfill from a version still in the log"
                            ),
                        )
                    })?;
                    parse_commit(version, &bytes)
                }
            })
            .buffered(COMMITS_IN_FLIGHT)
            .try_collect()
            .await
            .map_err(|e: Error| e.context(format!("reading the log of source {name}")))?;
        for change in window {
            let changes_data = !change.adds.is_empty() || change.removes_data || change.has_cdc;
            if changes_data && pinned_to.is_none() {
                let over_versions = limits.max_source_versions.is_some_and(|max| data_commits >= max);
                let over_bytes = limits.max_bytes.is_some_and(|max| bytes >= max);
                if data_commits > 0 && (over_versions || over_bytes) {
                    break 'windows;
                }
            }
            to = change.version;
            if changes_data {
                data_commits += 1;
                bytes += change.adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
            }
            changes.push(change);
        }
        next = top + 1;
    }
    let rewrites = changes.iter().any(|c| c.removes_data || c.has_cdc);
    let increment = if data_commits == 0 {
        IncrementKind::NoDataChange
    } else if rewrites && change_data_feed_on(source) {
        IncrementKind::ChangeDataFeed
    } else if rewrites {
        IncrementKind::RewrittenFiles
    } else {
        IncrementKind::Appends
    };
    let touched: BTreeSet<_> = changes.iter().flat_map(|c| c.touched.iter().cloned()).collect();
    let removed = changes.iter_mut().flat_map(|c| std::mem::take(&mut c.removed)).collect();
    let files = changes.into_iter().filter(|c| !c.adds.is_empty()).map(|c| (c.version, c.adds)).collect();
    Ok(Some(IncrementPlan {
        increment: SourceIncrement {
            table: name.to_string(),
            after_version: Some(after),
            to_version: to,
            increment,
            data_commits,
            bytes,
            rows: 0,
            touched_partitions: touched.into_iter().filter(|p| !p.is_empty()).collect(),
            more_pending: to < latest,
            latest_version: latest,
        },
        files,
        removed,
    }))
}

fn parse_commit(version: u64, bytes: &[u8]) -> Result<CommitChange> {
    let mut change = CommitChange {
        version,
        adds: Vec::new(),
        removed: Vec::new(),
        removes_data: false,
        has_cdc: false,
        touched: BTreeSet::new(),
    };
    for line in commit_actions::<Line>(version, bytes)? {
        if let Some(add) = line.add
            && add.data_change
        {
            change.touched.insert(add.partition_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
            change.adds.push(add);
        }
        if let Some(remove) = line.remove
            && remove.data_change
        {
            change.removes_data = true;
            let partition_values = remove.partition_values.unwrap_or_default();
            change.touched.insert(partition_values.clone());
            change.removed.push(Add {
                path: remove.path,
                partition_values: partition_values.into_iter().collect(),
                size: remove.size.unwrap_or_default(),
                data_change: true,
                deletion_vector: remove.deletion_vector,
                ..Default::default()
            });
        }
        if line.cdc.is_some() {
            change.has_cdc = true;
        }
    }
    Ok(change)
}

/// Whether the table records its changes now.
fn change_data_feed_on(table: &Table) -> bool {
    table
        .state()
        .ok()
        .and_then(|s| s.metadata().configuration().get("delta.enableChangeDataFeed").cloned())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl IncrementPlan {
    /// Read the increment's rows, each with [`VERSION_COLUMN`] and [`CHANGE_TYPE_COLUMN`].
    pub(crate) async fn read(&mut self, source: &Table) -> Result<Vec<RecordBatch>> {
        let name = self.increment.table.clone();
        let batches = match self.increment.increment {
            IncrementKind::NoDataChange => Vec::new(),
            IncrementKind::Snapshot => {
                let at = self.increment.to_version;
                let snapshot = if source.version() == Some(at) {
                    source.clone()
                } else {
                    Table::open_with(
                        source.uri(),
                        crate::OpenOptions::new().storage_options(source.storage_options().clone()).version(at),
                    )
                    .await?
                };
                // Its files read directly (as an increment's added files are), not through a
                // query engine's scan: a snapshot read is most of a first run's memory.
                let files = snapshot.plan_scan(None)?.files;
                let unreadable = crate::maintain::tiering::archive::unreadable(&snapshot, &files).await?;
                if !unreadable.is_empty() {
                    return Err(crate::maintain::tiering::archive::archived_error(
                        &snapshot,
                        "pipeline read",
                        &unreadable,
                    ));
                }
                let what = format!("version {at} of source {name}");
                let (batches, io) = crate::read::scan::read_files(&snapshot, files, &what).await?;
                self.increment.bytes = io.bytes_read;
                batches.into_iter().map(|b| with_version(b, at, "insert")).collect::<Result<Vec<_>>>()?
            }
            IncrementKind::ChangeDataFeed => {
                let from = self.increment.after_version.map_or(0, |v| v + 1);
                let rows = source.changes(from, Some(self.increment.to_version)).await?.collect().await?;
                let mut kept = Vec::new();
                for batch in rows {
                    let kinds = batch
                        .column_by_name(CHANGE_TYPE_COLUMN)
                        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                        .ok_or_else(|| Error::internal("the change feed has no _change_type column"))?;
                    let mask: deltalake::arrow::array::BooleanArray =
                        kinds.iter().map(|k| Some(matches!(k, Some("insert" | "update_postimage")))).collect();
                    let batch = deltalake::arrow::compute::filter_record_batch(&batch, &mask)?;
                    let batch = batch.project(
                        &(0..batch.num_columns())
                            .filter(|i| batch.schema().field(*i).name() != "_commit_timestamp")
                            .collect::<Vec<_>>(),
                    )?;
                    kept.push(batch);
                }
                kept
            }
            IncrementKind::Appends | IncrementKind::RewrittenFiles => {
                let mut all = Vec::new();
                let files = std::mem::take(&mut self.files);
                let reads = futures::stream::iter(files)
                    .map(|(version, adds)| {
                        let what = format!("the files commit {version} of source {name} added");
                        async move {
                            let (batches, io) = crate::read::scan::read_files(source, adds, &what).await?;
                            Ok::<_, Error>((version, batches, io.bytes_read))
                        }
                    })
                    .buffered(4);
                futures::pin_mut!(reads);
                while let Some(read) = reads.next().await {
                    let (version, batches, _) = read?;
                    for batch in batches {
                        all.push(with_version(batch, version, "insert")?);
                    }
                }
                all
            }
        };
        self.increment.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        Ok(batches)
    }
}

/// `batch` with the version and change-type columns.
fn with_version(batch: RecordBatch, version: u64, kind: &str) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    fields.push(Field::new(CHANGE_TYPE_COLUMN, DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from(vec![kind; rows])));
    fields.push(Field::new(VERSION_COLUMN, DataType::Int64, false));
    columns.push(Arc::new(Int64Array::from(vec![version as i64; rows])));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
