//! Putting a commit at the next version without delta-rs's pre-put listing.
//!
//! delta-rs's commit path lists `_delta_log` for versions newer than the one read
//! before it puts the entry (a round trip on every commit, 30-60 ms on S3), although
//! the put is conditional (put-if-absent) and detects a lost race by itself.
//! [`commit`] puts the entry at `read version + 1` straight away; only when that
//! version is taken (or there is no version yet, or a checkpoint is due, which
//! delta-rs's post-commit hook writes) does it go through delta-rs's path, with its
//! listing, conflict checker and retries as `properties` say. Every writer of
//! Sediment (the table's commits and the compactor's) commits through here.
//!
//! After a direct put the handle moves to the new version without listing the log
//! either: delta-rs's snapshot update lists `_delta_log` from the last checkpoint to
//! find the new entry, which this process has just written. The update is given a log
//! store whose listing of `_delta_log` is that entry alone ([`KnownEntryStore`]); the
//! kernel keeps the commits it already had and reads the new one (which the table's
//! log cache holds, as it saw the put). Should that update fail, the ordinary one runs.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference, TransactionError};
use deltalake::logstore::CommitOrBytes;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaResult, DeltaTable};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Commit `actions` on top of the version `table` is at (or create version 0 when it
/// has none), put-if-absent at the next version first, delta-rs's path after a lost
/// race or when a checkpoint is due with this version; `table` moves to the version
/// committed, which is returned. An `Err` means nothing was committed.
pub async fn commit(
    table: &mut DeltaTable,
    properties: CommitProperties,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> DeltaResult<u64> {
    let log_store = table.log_store();
    let snapshot = table.snapshot().ok();
    // The version this commit takes if nobody committed since the read, unless a
    // checkpoint is due with it (delta-rs's post-commit hook writes those).
    let direct = snapshot.and_then(|s| {
        let next = s.version() + 1;
        let interval = s.table_config().checkpoint_interval.map_or(100, |n| n.get());
        (!(next + 1).is_multiple_of(interval)).then_some(next)
    });
    let prepared = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(snapshot.map(|s| s as &dyn TableReference), log_store.clone(), operation)
        .into_prepared_commit_future()
        .await?;
    if let Some(version) = direct {
        let entry = prepared.commit_or_bytes().clone();
        let size = match &entry {
            CommitOrBytes::LogBytes(bytes) => Some(bytes.len() as u64),
            CommitOrBytes::TmpCommit(_) => None,
        };
        let operation_id = uuid::Uuid::new_v4();
        match log_store.write_commit_entry(version, entry.clone(), operation_id).await {
            Ok(()) => {
                drop(prepared);
                match size {
                    Some(size) => advance_to_put(table, version, size).await,
                    None => advance(table, version).await,
                }
                return Ok(version);
            }
            Err(TransactionError::VersionAlreadyExists(_)) => {
                tracing::debug!(version, "version taken by another writer; checking for conflicts");
            }
            Err(e) => {
                let _ = log_store.abort_commit_entry(version, entry, operation_id).await;
                return Err(e.into());
            }
        }
    }
    // Past this await the commit has landed; what follows (a due checkpoint, the new
    // snapshot) may fail without undoing it.
    let landed = prepared.await?;
    let version = landed.version;
    match landed.await {
        Ok(finalized) => {
            // The commit's own snapshot (delta-rs brings it to the new version after
            // the commit): no second listing and reading of the log.
            table.state = Some(finalized.snapshot());
        }
        Err(e) => {
            tracing::warn!(version, error = %e, "committed, but the work after the commit failed");
            advance(table, version).await;
        }
    }
    Ok(version)
}

/// Move `table` to `version`, which this process committed. A commit that landed must
/// not look failed because reading it back did (a writer that gives up deletes its
/// files, which the log now references): on failure the handle stays at the version
/// it read, and the next commit finds this one and goes through delta-rs's path.
async fn advance(table: &mut DeltaTable, version: u64) {
    if let Err(e) = table.update_incremental(Some(version as _)).await {
        tracing::warn!(version, error = %e, "committed, but the log could not be read back");
    }
}

/// [`advance`] to `version`, whose entry of `size` bytes this process has just put,
/// without listing the log: the snapshot update lists through a [`KnownEntryStore`].
async fn advance_to_put(table: &mut DeltaTable, version: u64, size: u64) {
    let log_store = table.log_store();
    let known: Arc<dyn ObjectStore> = Arc::new(KnownEntryStore {
        inner: log_store.root_object_store(None),
        file_name: format!("{version:020}.json"),
        size,
        last_modified: chrono::Utc::now(),
    });
    let listed = deltalake::logstore::default_logstore(
        log_store.object_store(None),
        known,
        log_store.root_url(),
        log_store.config().options(),
    );
    if let Some(state) = table.state.as_mut() {
        match state.update(listed.as_ref(), Some(version as _)).await {
            Ok(()) if state.version() == version => return,
            Ok(()) => tracing::debug!(version, at = state.version(), "the known entry did not advance the snapshot"),
            Err(e) => tracing::debug!(version, error = %e, "the known entry did not advance the snapshot"),
        }
    }
    advance(table, version).await;
}

/// The table's root store, except that a listing of a `_delta_log` folder returns one
/// entry: the commit this process has just put (named `file_name`, with its size and
/// the time of the put). For one snapshot update to that version only: the kernel
/// lists from the last checkpoint and filters out what it has, so the entry alone is
/// what it looks for. Everything else goes to `inner`.
#[derive(Debug)]
struct KnownEntryStore {
    inner: Arc<dyn ObjectStore>,
    file_name: String,
    size: u64,
    last_modified: chrono::DateTime<chrono::Utc>,
}

impl KnownEntryStore {
    /// `prefix` when it is a `_delta_log` folder, whose listing this store answers.
    fn log_folder(prefix: Option<&Path>) -> Option<&Path> {
        prefix.filter(|p| p.filename() == Some("_delta_log"))
    }

    /// The listing of log folder `log`: the entry, when it sorts after `offset`.
    fn listing(&self, log: &Path, offset: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let location = log.clone().join(self.file_name.as_str());
        let after_offset = offset.is_none_or(|offset| location.as_ref() > offset.as_ref());
        let entry = after_offset.then_some(ObjectMeta {
            location,
            last_modified: self.last_modified,
            size: self.size,
            e_tag: None,
            version: None,
        });
        futures::stream::iter(entry.map(Ok)).boxed()
    }
}

impl std::fmt::Display for KnownEntryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownEntryStore({}, {})", self.file_name, self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for KnownEntryStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match Self::log_folder(prefix) {
            Some(log) => self.listing(log, None),
            None => self.inner.list(prefix),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match Self::log_folder(prefix) {
            Some(log) => self.listing(log, Some(offset)),
            None => self.inner.list_with_offset(prefix, offset),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
