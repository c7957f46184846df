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
//! - when the opener asks for it ([`LogCacheStore::prefetch_checkpoint`], an open of the
//!   latest version), reading `_last_checkpoint` starts the fetch of the single-part
//!   checkpoint it names, so that the kernel's listing of the log and the checkpoint's
//!   GET overlap instead of following each other (one round trip less per open); the
//!   kernel's first read of that checkpoint waits for the fetch, and
//!   [`LogCacheStore::release`] cancels a fetch nobody asked for.
//!
//! Everything else (listings, data files, conditional or versioned reads) goes to the
//! store underneath unchanged, and a delete, rename or copy onto a cached name drops it
//! from the cache.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
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
        let slice = self.slice(&wanted)?;
        Some(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(slice) }).boxed()),
            meta: self.meta.clone(),
            range: wanted,
            attributes: Default::default(),
        })
    }

    /// Bytes `range` of the file, or `None` when this copy does not hold all of them.
    fn slice(&self, range: &Range<u64>) -> Option<Bytes> {
        (range.start >= self.start && range.start <= range.end && range.end <= self.meta.size)
            .then(|| self.bytes.slice((range.start - self.start) as usize..(range.end - self.start) as usize))
    }
}

/// A checkpoint's tail being fetched ahead of the kernel's first read of it.
type Prefetch = Shared<BoxFuture<'static, std::result::Result<Arc<Cached>, String>>>;

#[derive(Default)]
struct State {
    checkpoint: Option<(Path, Arc<Cached>)>,
    /// The checkpoint `_last_checkpoint` named, its fetch, and the task running it.
    prefetch: Option<(Path, Prefetch, tokio::task::AbortHandle)>,
    commits: BTreeMap<Path, Arc<Cached>>,
}

/// What a log path is to the cache.
#[derive(PartialEq)]
enum Kind {
    Checkpoint,
    Commit,
    /// `_last_checkpoint`: not cached, but its read may start the fetch of the
    /// checkpoint it names.
    LastCheckpoint,
    Other,
}

impl Kind {
    /// Whether the cache keeps copies of files of this kind.
    fn cached(&self) -> bool {
        matches!(self, Kind::Checkpoint | Kind::Commit)
    }
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
    if name == "_last_checkpoint" && !dir.ends_with("_sidecars") {
        return Kind::LastCheckpoint;
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
    /// Whether the next read of `_last_checkpoint` starts the fetch of its checkpoint.
    prefetch_next: AtomicBool,
}

impl LogCacheStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, state: Arc::default(), prefetch_next: AtomicBool::new(false) }
    }

    /// Let the next read of `_last_checkpoint` start fetching the checkpoint it names
    /// (for an open of the latest version, which reads that checkpoint next).
    pub fn prefetch_checkpoint(&self) {
        self.prefetch_next.store(true, Ordering::Relaxed);
    }

    /// Drop the checkpoint copy and cancel a prefetch not read (once the table's
    /// snapshot is built, the checkpoint is not read again).
    pub fn release(&self) {
        self.prefetch_next.store(false, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.checkpoint = None;
        if let Some((_, _, task)) = state.prefetch.take() {
            task.abort();
        }
    }

    /// Start fetching `location`'s tail in a task of its own.
    fn start_prefetch(&self, location: Path) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let inner = self.inner.clone();
        let target = location.clone();
        let task = runtime.spawn(async move { fetch_tail(inner.as_ref(), &target).await.map(Arc::new) });
        let abort = task.abort_handle();
        let fetch = async move {
            match task.await {
                Ok(Ok(cached)) => Ok(cached),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        .boxed()
        .shared();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, old)) = state.prefetch.replace((location, fetch, abort)) {
            old.abort();
        }
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

    /// The first read of a checkpoint part: its tail (or all of it) in one GET, or the
    /// prefetch of it when one was started (a failed prefetch is fetched again).
    async fn fetch_checkpoint(&self, location: &Path) -> Result<Arc<Cached>> {
        let prefetch = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.prefetch.as_ref().filter(|(path, _, _)| path == location).map(|(_, fetch, _)| fetch.clone())
        };
        let cached = match prefetch {
            Some(fetch) => match fetch.await {
                Ok(cached) => cached,
                Err(_) => Arc::new(fetch_tail(self.inner.as_ref(), location).await?),
            },
            None => Arc::new(fetch_tail(self.inner.as_ref(), location).await?),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.checkpoint = Some((location.clone(), cached.clone()));
        if state.prefetch.as_ref().is_some_and(|(path, _, _)| path == location) {
            state.prefetch = None;
        }
        Ok(cached)
    }
}

/// A checkpoint part's last [`CHECKPOINT_FETCH`] bytes (all of a smaller one), in one GET.
async fn fetch_tail(store: &dyn ObjectStore, location: &Path) -> Result<Cached> {
    let options = GetOptions { range: Some(GetRange::Suffix(CHECKPOINT_FETCH)), ..Default::default() };
    let result = store.get_opts(location, options).await?;
    let (meta, range) = (result.meta.clone(), result.range.clone());
    let bytes = result.bytes().await?;
    Ok(Cached { meta, start: range.start, bytes })
}

/// The single-part checkpoint a `_last_checkpoint` at `location` with content `bytes`
/// names; `None` for a multi-part or V2 checkpoint, or content that does not parse.
fn named_checkpoint(location: &Path, bytes: &[u8]) -> Option<Path> {
    let hint: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let version = hint.get("version")?.as_u64()?;
    if hint.get("parts").is_some_and(|p| p.as_u64() != Some(1)) || hint.get("v2Checkpoint").is_some() {
        return None;
    }
    let dir = location.as_ref().rsplit_once('/').map_or("", |(dir, _)| dir);
    let name = format!("{version:020}.checkpoint.parquet");
    Some(Path::from(if dir.is_empty() { name } else { format!("{dir}/{name}") }))
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
        if kind.cached() {
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
        if kind(location).cached() {
            self.forget(location);
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let kind = kind(location);
        if kind == Kind::LastCheckpoint
            && plain(&options)
            && options.range.is_none()
            && self.prefetch_next.swap(false, Ordering::Relaxed)
        {
            let result = self.inner.get_opts(location, options).await?;
            let meta = result.meta.clone();
            let bytes = result.bytes().await?;
            if let Some(checkpoint) = named_checkpoint(location, &bytes) {
                self.start_prefetch(checkpoint);
            }
            let read = Cached { meta, start: 0, bytes };
            return Ok(read.serve(&None).expect("a whole copy serves a whole read"));
        }
        if !kind.cached() || !plain(&options) {
            return self.inner.get_opts(location, options).await;
        }
        let cached = self.lookup(location);
        if let Some(hit) = cached.as_ref().and_then(|c| c.serve(&options.range)) {
            return Ok(hit);
        }
        match kind {
            // Held, but not this part (an early part of a checkpoint larger than the tail):
            // to the store, without fetching the tail again.
            _ if cached.is_some() => self.inner.get_opts(location, options).await,
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
            if ranges.iter().all(|r| r.start < r.end)
                && let Some(slices) = ranges.iter().map(|r| cached.slice(r)).collect::<Option<Vec<_>>>()
            {
                return Ok(slices);
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

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use sediment_compactor::io::{BoundedStore, IoLimiter, IoSettings};

    use super::*;

    /// A cache over a request-counting in-memory store, and its counter.
    fn counted() -> (LogCacheStore, Arc<IoLimiter>, Arc<dyn ObjectStore>) {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let limiter = IoLimiter::new(&IoSettings::default());
        let counted = Arc::new(BoundedStore::new(memory.clone(), limiter.clone()));
        (LogCacheStore::new(counted), limiter, memory)
    }

    #[tokio::test]
    async fn a_commit_written_is_read_back_without_a_get_until_it_is_deleted() {
        let (store, limiter, _) = counted();
        let commit = Path::from("t/_delta_log/00000000000000000003.json");
        let entry = Bytes::from_static(b"{\"commitInfo\":{}}\n");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        store.put_opts(&commit, entry.clone().into(), create.clone()).await.unwrap();
        let before = limiter.report().requests;
        assert_eq!(store.get(&commit).await.unwrap().bytes().await.unwrap(), entry);
        assert_eq!(store.get_range(&commit, 2..9).await.unwrap(), entry.slice(2..9));
        assert_eq!(limiter.report().requests, before, "the entry came from the cache");
        // A losing put-if-absent keeps the winner's entry.
        assert!(store.put_opts(&commit, Bytes::from_static(b"other").into(), create).await.is_err());
        assert_eq!(store.get(&commit).await.unwrap().bytes().await.unwrap(), entry);
        store.delete(&commit).await.unwrap();
        assert!(matches!(store.get(&commit).await, Err(object_store::Error::NotFound { .. })));
    }

    #[tokio::test]
    async fn an_overwritten_commit_is_read_from_the_store() {
        let (store, _, _) = counted();
        let commit = Path::from("_delta_log/00000000000000000000.json");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        store.put_opts(&commit, Bytes::from_static(b"first").into(), create).await.unwrap();
        store.put(&commit, Bytes::from_static(b"second").into()).await.unwrap();
        assert_eq!(store.get(&commit).await.unwrap().bytes().await.unwrap(), Bytes::from_static(b"second"));
    }

    #[tokio::test]
    async fn a_small_checkpoint_is_fetched_once_and_released() {
        let (store, limiter, memory) = counted();
        let checkpoint = Path::from("t/_delta_log/00000000000000000010.checkpoint.parquet");
        let data = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        memory.put(&checkpoint, data.clone().into()).await.unwrap();
        assert_eq!(store.get_range(&checkpoint, 199_992..200_000).await.unwrap(), data.slice(199_992..200_000));
        assert_eq!(store.get_range(&checkpoint, 10..5000).await.unwrap(), data.slice(10..5000));
        let ranges = store.get_ranges(&checkpoint, &[0..4, 100_000..150_000]).await.unwrap();
        assert_eq!(ranges, vec![data.slice(0..4), data.slice(100_000..150_000)]);
        assert_eq!(limiter.report().requests, 1, "one GET for every read of the checkpoint");
        store.release();
        store.get_range(&checkpoint, 10..20).await.unwrap();
        assert_eq!(limiter.report().requests, 2, "released: the next read fetches again");
    }

    #[tokio::test]
    async fn a_large_checkpoint_keeps_its_tail_and_reads_the_rest_by_range() {
        let (store, limiter, memory) = counted();
        let checkpoint = Path::from("_delta_log/00000000000000000010.checkpoint.parquet");
        let size = CHECKPOINT_FETCH as usize + 1000;
        let data = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        memory.put(&checkpoint, data.clone().into()).await.unwrap();
        let footer = (size - 8) as u64..size as u64;
        assert_eq!(store.get_range(&checkpoint, footer.clone()).await.unwrap(), data.slice(size - 8..size));
        assert_eq!(limiter.report().requests, 1);
        // Before the tail: one request each, and the tail is not fetched again.
        assert_eq!(store.get_range(&checkpoint, 0..100).await.unwrap(), data.slice(0..100));
        assert_eq!(store.get_range(&checkpoint, 100..200).await.unwrap(), data.slice(100..200));
        assert_eq!(limiter.report().requests, 3);
        assert_eq!(store.get_range(&checkpoint, footer).await.unwrap(), data.slice(size - 8..size));
        assert_eq!(limiter.report().requests, 3);
    }

    #[tokio::test]
    async fn reading_last_checkpoint_fetches_its_checkpoint_before_the_kernel_asks() {
        let (store, limiter, memory) = counted();
        let hint = Path::from("t/_delta_log/_last_checkpoint");
        let checkpoint = Path::from("t/_delta_log/00000000000000000010.checkpoint.parquet");
        let data = Bytes::from((0..50_000u32).map(|i| (i % 7) as u8).collect::<Vec<u8>>());
        memory.put(&checkpoint, data.clone().into()).await.unwrap();
        memory.put(&hint, Bytes::from_static(br#"{"version":10,"size":3}"#).into()).await.unwrap();
        // Without the opener's word, `_last_checkpoint` is an ordinary read.
        store.get(&hint).await.unwrap().bytes().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(limiter.report().requests, 1);
        store.prefetch_checkpoint();
        let read = store.get(&hint).await.unwrap().bytes().await.unwrap();
        assert_eq!(read, Bytes::from_static(br#"{"version":10,"size":3}"#));
        // The checkpoint's GET starts on its own (while a kernel would list the log).
        for _ in 0..100 {
            if limiter.report().requests == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(limiter.report().requests, 3, "the hint and the checkpoint's prefetch");
        assert_eq!(store.get_range(&checkpoint, 100..200).await.unwrap(), data.slice(100..200));
        assert_eq!(store.get_range(&checkpoint, 49_990..50_000).await.unwrap(), data.slice(49_990..50_000));
        assert_eq!(limiter.report().requests, 3, "the kernel's reads are served by the prefetch");
        // Once only: the next read of the hint starts nothing.
        store.release();
        store.get(&hint).await.unwrap().bytes().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(limiter.report().requests, 4);
    }

    #[tokio::test]
    async fn a_prefetch_that_fails_or_names_parts_falls_back_to_plain_reads() {
        let (store, limiter, memory) = counted();
        let hint = Path::from("_delta_log/_last_checkpoint");
        // A multi-part checkpoint: its parts are not guessed.
        memory.put(&hint, Bytes::from_static(br#"{"version":10,"size":3,"parts":2}"#).into()).await.unwrap();
        store.prefetch_checkpoint();
        store.get(&hint).await.unwrap().bytes().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(limiter.report().requests, 1);
        assert!(store.state.lock().unwrap().prefetch.is_none());
        // A named checkpoint that is missing: the prefetch fails, the kernel's own read
        // goes to the store and gets the store's answer.
        memory.put(&hint, Bytes::from_static(br#"{"version":20,"size":3}"#).into()).await.unwrap();
        store.prefetch_checkpoint();
        store.get(&hint).await.unwrap().bytes().await.unwrap();
        let checkpoint = Path::from("_delta_log/00000000000000000020.checkpoint.parquet");
        assert!(matches!(store.get(&checkpoint).await, Err(object_store::Error::NotFound { .. })));
        // One the kernel never reads is cancelled by the release.
        memory.put(&checkpoint, Bytes::from_static(b"PAR1").into()).await.unwrap();
        store.prefetch_checkpoint();
        store.get(&hint).await.unwrap().bytes().await.unwrap();
        store.release();
        assert!(store.state.lock().unwrap().prefetch.is_none());
        assert_eq!(named_checkpoint(&hint, br#"{"version":3,"v2Checkpoint":{}}"#), None);
        assert_eq!(named_checkpoint(&hint, b"not json"), None);
    }

    #[test]
    fn only_log_files_are_cached() {
        assert!(kind(&Path::from("a/b/_delta_log/00000000000000000007.json")) == Kind::Commit);
        assert!(
            kind(&Path::from("_delta_log/00000000000000000007.checkpoint.0000000001.0000000002.parquet"))
                == Kind::Checkpoint
        );
        assert!(
            kind(&Path::from("_delta_log/_sidecars/3a0d65cd-4056-49b8-937b-95f9e3ee90e5.parquet")) == Kind::Checkpoint
        );
        assert!(kind(&Path::from("_delta_log/_last_checkpoint")) == Kind::LastCheckpoint);
        assert!(kind(&Path::from("a/_delta_log/_last_checkpoint")) == Kind::LastCheckpoint);
        assert!(!Kind::LastCheckpoint.cached());
        assert!(kind(&Path::from("a/_last_checkpoint")) == Kind::Other);
        assert!(kind(&Path::from("_delta_log/00000000000000000007.crc")) == Kind::Other);
        assert!(kind(&Path::from("_delta_log/_tags/nightly.json")) == Kind::Other);
        assert!(kind(&Path::from("part=1/00000000000000000007.json")) == Kind::Other);
    }
}
