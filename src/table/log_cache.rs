//! A read cache for a table's log, under delta-rs's log store.
//!
//! Opening a table on object storage is a chain of dependent round trips, and most of
//! them are avoidable: delta-rs's kernel reads a checkpoint parquet file in many small
//! ranged reads one after the other (the footer, then each column chunk it needs, and
//! all of it twice: once for the protocol and metadata, once for the files), and after
//! every commit it reads back the entry it has just written. Both kinds of file are
//! immutable once they exist (the protocol never rewrites a checkpoint's or a commit's
//! content under its name), so this store, wrapped around the table's root store,
//! serves them from memory:
//!
//! - a checkpoint part's first read fetches its last [`CHECKPOINT_FETCH`] bytes (the whole
//!   file when it is smaller) in one GET, and the reads that fall inside it are served
//!   from that copy; one checkpoint is held at a time, and [`LogCacheStore::release`]
//!   drops it once the table is loaded;
//! - a commit entry this handle wrote with put-if-absent, or read whole, is kept (up to
//!   [`COMMIT_ENTRY_MAX`] bytes each, the newest [`COMMITS_KEPT`]), so the snapshot update
//!   after a commit and the second replay of an entry cost no GET.
//!
//! Everything else (listings, `_last_checkpoint`, data files, conditional or versioned
//! reads) goes to the store underneath unchanged, and a delete, rename or copy onto a
//! cached name drops it from the cache.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, path::Path,
};

/// How much of a checkpoint part the first read fetches: its tail, where the footer and
/// the last row groups sit, or the whole file when it is smaller.
pub const CHECKPOINT_FETCH: u64 = 8 * 1024 * 1024;
/// The largest commit entry kept.
pub const COMMIT_ENTRY_MAX: usize = 1024 * 1024;
/// How many commit entries are kept (the newest versions).
pub const COMMITS_KEPT: usize = 16;

/// Bytes `[start, meta.size)` of one immutable log file.
struct Cached {
    meta: ObjectMeta,
    start: u64,
    bytes: Bytes,
}

impl Cached {
    /// The part of `range` this copy holds, or `None` when it does not hold all of it.
    fn serve(&self, range: &Option<GetRange>) -> Option<GetResult> {
        let size = self.meta.size;
        let wanted = match range {
            None => 0..size,
            Some(GetRange::Bounded(r)) if r.start < r.end && r.start < size => r.start..r.end.min(size),
            Some(GetRange::Bounded(_)) => return None,
            Some(GetRange::Offset(o)) if *o < size => *o..size,
            Some(GetRange::Offset(_)) => return None,
            Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
        };
        if wanted.start < self.start {
            return None;
        }
        let slice = self.bytes.slice((wanted.start - self.start) as usize..(wanted.end - self.start) as usize);
        Some(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(slice) }).boxed()),
            meta: self.meta.clone(),
            range: wanted,
            attributes: Default::default(),
        })
    }
}

#[derive(Default)]
struct State {
    checkpoint: Option<(Path, Arc<Cached>)>,
    commits: BTreeMap<Path, Arc<Cached>>,
}

/// What a log path is to the cache.
#[derive(PartialEq)]
enum Kind {
    Checkpoint,
    Commit,
    Other,
}

fn kind(location: &Path) -> Kind {
    let s = location.as_ref();
    let (dir, name) = s.rsplit_once('/').unwrap_or(("", s));
    if !(dir == "_delta_log" || dir.ends_with("/_delta_log") || dir.ends_with("_delta_log/_sidecars")) {
        return Kind::Other;
    }
    if name.ends_with(".parquet") && (name.contains(".checkpoint") || dir.ends_with("_sidecars")) {
        return Kind::Checkpoint;
    }
    match name.strip_suffix(".json") {
        Some(stem) if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) => Kind::Commit,
        _ => Kind::Other,
    }
}

/// The cache around a table's root object store (see the module notes).
pub struct LogCacheStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl LogCacheStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, state: Arc::default() }
    }

    /// Drop the checkpoint copy (once the table's snapshot is built, it is not read again).
    pub fn release(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).checkpoint = None;
    }

    fn lookup(&self, location: &Path) -> Option<Arc<Cached>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.checkpoint {
            Some((path, cached)) if path == location => Some(cached.clone()),
            _ => state.commits.get(location).cloned(),
        }
    }

    fn keep_commit(&self, cached: Cached) {
        if cached.bytes.len() > COMMIT_ENTRY_MAX {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.commits.insert(cached.meta.location.clone(), Arc::new(cached));
        while state.commits.len() > COMMITS_KEPT {
            state.commits.pop_first();
        }
    }

    fn forget(&self, location: &Path) {
        forget(&self.state, location);
    }

    /// The first read of a checkpoint part: its tail (or all of it) in one GET.
    async fn fetch_checkpoint(&self, location: &Path) -> Result<Arc<Cached>> {
        let options = GetOptions { range: Some(GetRange::Suffix(CHECKPOINT_FETCH)), ..Default::default() };
        let result = self.inner.get_opts(location, options).await?;
        let (meta, range) = (result.meta.clone(), result.range.clone());
        let bytes = result.bytes().await?;
        let cached = Arc::new(Cached { meta, start: range.start, bytes });
        self.state.lock().unwrap_or_else(|e| e.into_inner()).checkpoint = Some((location.clone(), cached.clone()));
        Ok(cached)
    }
}

impl fmt::Display for LogCacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogCacheStore({})", self.inner)
    }
}

impl fmt::Debug for LogCacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogCacheStore").field("inner", &self.inner).finish()
    }
}

fn forget(state: &Mutex<State>, location: &Path) {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.commits.remove(location);
    if state.checkpoint.as_ref().is_some_and(|(p, _)| p == location) {
        state.checkpoint = None;
    }
}

fn plain(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
        && !options.head
}

#[async_trait::async_trait]
impl ObjectStore for LogCacheStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let create = matches!(opts.mode, PutMode::Create);
        let kind = kind(location);
        if kind != Kind::Other {
            self.forget(location);
        }
        let keep =
            (create && kind == Kind::Commit && payload.content_length() <= COMMIT_ENTRY_MAX).then(|| payload.clone());
        let result = self.inner.put_opts(location, payload, opts).await?;
        if let Some(payload) = keep {
            let bytes = Bytes::from(payload);
            let meta = ObjectMeta {
                location: location.clone(),
                last_modified: chrono::Utc::now(),
                size: bytes.len() as u64,
                e_tag: result.e_tag.clone(),
                version: result.version.clone(),
            };
            self.keep_commit(Cached { meta, start: 0, bytes });
        }
        Ok(result)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        if kind(location) != Kind::Other {
            self.forget(location);
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let kind = kind(location);
        if kind == Kind::Other || !plain(&options) {
            return self.inner.get_opts(location, options).await;
        }
        if let Some(hit) = self.lookup(location).and_then(|c| c.serve(&options.range)) {
            return Ok(hit);
        }
        match kind {
            Kind::Checkpoint => {
                let cached = self.fetch_checkpoint(location).await?;
                match cached.serve(&options.range) {
                    Some(hit) => Ok(hit),
                    // An early part of a checkpoint larger than the fetched tail.
                    None => self.inner.get_opts(location, options).await,
                }
            }
            _ if options.range.is_none() => {
                let result = self.inner.get_opts(location, options).await?;
                if result.meta.size as usize > COMMIT_ENTRY_MAX {
                    return Ok(result);
                }
                let meta = result.meta.clone();
                let bytes = result.bytes().await?;
                let cached = Cached { meta, start: 0, bytes };
                let served = cached.serve(&None).expect("a whole copy serves a whole read");
                self.keep_commit(cached);
                Ok(served)
            }
            _ => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if kind(location) == Kind::Checkpoint {
            let cached = match self.lookup(location) {
                Some(cached) => cached,
                None => self.fetch_checkpoint(location).await?,
            };
            if ranges.iter().all(|r| r.start >= cached.start && r.start < r.end && r.end <= cached.meta.size) {
                return Ok(ranges
                    .iter()
                    .map(|r| cached.bytes.slice((r.start - cached.start) as usize..(r.end - cached.start) as usize))
                    .collect());
            }
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // Forget before the delete is sent: a read racing the delete then goes to the store.
        let state = self.state.clone();
        let forgetting = locations
            .map(move |location| {
                if let Ok(path) = &location {
                    forget(&state, path);
                }
                location
            })
            .boxed();
        self.inner.delete_stream(forgetting)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.forget(from);
        self.forget(to);
        self.inner.rename_opts(from, to, options).await
    }
}
