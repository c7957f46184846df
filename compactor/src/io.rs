//! The I/O discipline of data-file reads: many requests in flight, bounded in number
//! and in bytes, and counted.
//!
//! On object storage every request costs tens of milliseconds before its first byte,
//! so reading files one request at a time leaves the CPU idle. The words:
//! - a *request* is one call to the object store (a GET, a ranged GET, a HEAD, a PUT,
//!   a part of a multipart upload, a LIST, a DELETE, a COPY);
//! - *in flight* are the requests started and not yet finished (a GET until its body
//!   has been read or dropped);
//! - the *byte budget* bounds the bytes fetched ahead of the decoder (prefetched
//!   files), so memory stays bounded whatever the latency.
//!
//! [`IoLimiter`] holds both bounds and the counters for one operation;
//! [`BoundedStore`] wraps an [`ObjectStore`] with it, so every request an operation
//! makes through that store waits for a permit and is counted, whoever makes it (the
//! compactor, delta-rs's writer, DataFusion). Byte ranges are coalesced here (as
//! `object_store` does, gaps up to 1 MiB) so each request that reaches the inner store
//! is one counted request. [`IoReport`] is what an operation's report carries.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default of [`IoSettings::max_requests_in_flight`]. At 30 ms a request, 64 kept a
/// compaction of small files on two cores waiting for its inputs (W1: 0.69 s against
/// 0.62 s at 128; 256 no faster). S3 serves thousands of GETs a second per prefix and
/// the byte budget, not this, bounds the memory.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 128;

/// How an operation reads data files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoSettings {
    /// Requests to the object store in flight at once, at most.
    pub max_requests_in_flight: usize,
    /// Bytes of data files fetched ahead of the decoder at once, at most.
    pub max_bytes_in_flight: u64,
    /// A data file at most this large is read whole, in one GET.
    pub read_whole_files_below: u64,
    /// Bytes read from the end of a larger file in its first request: the footer and
    /// metadata in one read in the common case.
    pub footer_read: u64,
    /// Files of one job opened (fetched, or their footers read) ahead of the one being
    /// decoded, at most.
    pub prefetch_files: usize,
}

impl Default for IoSettings {
    fn default() -> Self {
        Self {
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            max_bytes_in_flight: 64 * 1024 * 1024,
            read_whole_files_below: 8 * 1024 * 1024,
            footer_read: 64 * 1024,
            prefetch_files: 32,
        }
    }
}

impl IoSettings {
    /// Whether a data file of `size` bytes is read whole, in one GET: it is at most
    /// `read_whole_files_below` and fits the byte budget.
    pub fn reads_whole(&self, size: u64) -> bool {
        size <= self.read_whole_files_below.min(self.max_bytes_in_flight)
    }

    /// Bytes of the byte budget that opening a file of `size` bytes holds: the whole
    /// file, or its first footer read.
    pub fn bytes_to_open(&self, size: u64) -> u64 {
        if self.reads_whole(size) { size } else { self.footer_read.min(size) }
    }

    /// Whether the knobs can work: every bound positive.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.max_requests_in_flight == 0 || self.prefetch_files == 0 {
            return Err("max_requests_in_flight and prefetch_files must be positive".into());
        }
        if self.max_bytes_in_flight < 1024 * 1024 {
            return Err(format!(
                "max_bytes_in_flight of {} bytes is below the 1 MiB minimum",
                self.max_bytes_in_flight
            ));
        }
        Ok(())
    }
}

/// What an operation's requests were: how many, the bytes they fetched, the most in
/// flight at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoReport {
    /// Requests made.
    pub requests: u64,
    /// Bytes fetched (GET bodies).
    pub bytes_read: u64,
    /// The most requests in flight at one time.
    pub peak_in_flight: u64,
    /// The most bytes of fetched data held at one time, waiting to be decoded.
    #[serde(default)]
    pub peak_bytes_held: u64,
}

/// The bounds and counters of one operation's requests.
#[derive(Debug)]
pub struct IoLimiter {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// Permits of `bytes` are KiB (a semaphore counts in u32-sized chunks).
    bytes_permits: u32,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    bytes_read: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    bytes_held: AtomicU64,
    peak_bytes_held: AtomicU64,
}

/// One request in flight: a permit and a place in the counters, given back on drop.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    limiter: Arc<IoLimiter>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.limiter.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes of the byte budget, held while fetched data waits to be decoded.
#[derive(Debug)]
pub struct BytesPermit {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    limiter: Arc<IoLimiter>,
}

impl Drop for BytesPermit {
    fn drop(&mut self) {
        self.limiter.counters.bytes_held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl IoLimiter {
    /// A limiter with the bounds of `settings`.
    pub fn new(settings: &IoSettings) -> Arc<Self> {
        let bytes_permits = settings.max_bytes_in_flight.div_ceil(1024).clamp(1, u32::MAX as u64 >> 3) as u32;
        Arc::new(Self {
            requests: Arc::new(Semaphore::new(settings.max_requests_in_flight.max(1))),
            bytes: Arc::new(Semaphore::new(bytes_permits as usize)),
            bytes_permits,
            counters: Counters::default(),
        })
    }

    /// A limiter that bounds nothing (for counting another engine's requests).
    pub fn unbounded() -> Arc<Self> {
        Self::new(&IoSettings {
            max_requests_in_flight: Semaphore::MAX_PERMITS >> 1,
            max_bytes_in_flight: u64::MAX,
            ..IoSettings::default()
        })
    }

    /// Wait for a request permit and count the request.
    async fn start(self: &Arc<Self>) -> InFlight {
        let permit = self.requests.clone().acquire_owned().await.expect("the request semaphore is never closed");
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        c.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight { _permit: permit, limiter: self.clone() }
    }

    /// Reserve `bytes` of the byte budget (all of it, for more than the whole budget);
    /// waits, in order of asking, until that much is free.
    pub async fn reserve_bytes(self: &Arc<Self>, bytes: u64) -> BytesPermit {
        let permits = bytes.div_ceil(1024).clamp(1, self.bytes_permits as u64) as u32;
        let permit = self.bytes.clone().acquire_many_owned(permits).await.expect("the byte semaphore is never closed");
        let c = &self.counters;
        let now = c.bytes_held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        c.peak_bytes_held.fetch_max(now, Ordering::Relaxed);
        BytesPermit { _permit: permit, bytes, limiter: self.clone() }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    fn count_bytes(&self, bytes: u64) {
        self.counters.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The requests counted so far.
    pub fn report(&self) -> IoReport {
        let c = &self.counters;
        IoReport {
            requests: c.requests.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            peak_in_flight: c.peak_in_flight.load(Ordering::Relaxed),
            peak_bytes_held: c.peak_bytes_held.load(Ordering::Relaxed),
        }
    }
}

/// An [`ObjectStore`] whose every request waits for a permit of its [`IoLimiter`]
/// and is counted there.
#[derive(Debug)]
pub struct BoundedStore {
    inner: Arc<dyn ObjectStore>,
    limiter: Arc<IoLimiter>,
}

impl BoundedStore {
    /// `inner`, bounded and counted by `limiter`.
    pub fn new(inner: Arc<dyn ObjectStore>, limiter: Arc<IoLimiter>) -> Self {
        Self { inner, limiter }
    }

    /// The limiter this store reports to.
    pub fn limiter(&self) -> &Arc<IoLimiter> {
        &self.limiter
    }

    async fn get_range_counted(&self, location: &Path, range: Range<u64>) -> Result<Bytes> {
        let _in_flight = self.limiter.start().await;
        let bytes = self.inner.get_opts(location, GetOptions::new().with_range(Some(range))).await?.bytes().await?;
        self.limiter.count_bytes(bytes.len() as u64);
        Ok(bytes)
    }
}

impl fmt::Display for BoundedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bounded({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for BoundedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let _in_flight = self.limiter.start().await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let upload = {
            let _in_flight = self.limiter.start().await;
            self.inner.put_multipart_opts(location, opts).await?
        };
        Ok(Box::new(BoundedUpload { inner: upload, limiter: self.limiter.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let in_flight = self.limiter.start().await;
        let result = self.inner.get_opts(location, options).await?;
        let limiter = self.limiter.clone();
        let payload = match result.payload {
            GetResultPayload::Stream(stream) => {
                // The request stays in flight until its body is read or dropped.
                GetResultPayload::Stream(
                    stream
                        .map(move |chunk| {
                            let _held = &in_flight;
                            if let Ok(bytes) = &chunk {
                                limiter.count_bytes(bytes.len() as u64);
                            }
                            chunk
                        })
                        .boxed(),
                )
            }
            #[allow(unreachable_patterns)]
            other => {
                limiter.count_bytes(result.range.end - result.range.start);
                other
            }
        };
        Ok(GetResult { payload, ..result })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        object_store::coalesce_ranges(
            ranges,
            |range| self.get_range_counted(location, range),
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let limiter = self.limiter.clone();
        let counted = locations
            .map(move |location| {
                limiter.counters.requests.fetch_add(1, Ordering::Relaxed);
                location
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.limiter.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.limiter.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let _in_flight = self.limiter.start().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let _in_flight = self.limiter.start().await;
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload whose parts are bounded and counted like other requests.
#[derive(Debug)]
struct BoundedUpload {
    inner: Box<dyn MultipartUpload>,
    limiter: Arc<IoLimiter>,
}

#[async_trait]
impl MultipartUpload for BoundedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let limiter = self.limiter.clone();
        Box::pin(async move {
            let _in_flight = limiter.start().await;
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let _in_flight = self.limiter.start().await;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        let _in_flight = self.limiter.start().await;
        self.inner.abort().await
    }
}

/// Small data files fetched whole before the job that reads them starts: the first
/// inputs of a compaction bin waiting for its slot, so that it does not start with a
/// round trip while the others finish (each fetch holds its share of the byte budget
/// until it is taken; one nobody takes is cancelled when this is dropped).
#[derive(Default)]
pub(crate) struct EarlyFetches {
    files: std::sync::Mutex<std::collections::HashMap<String, EarlyFetch>>,
}

pub(crate) type EarlyResult = std::result::Result<(Bytes, BytesPermit), String>;

struct EarlyFetch(tokio::task::JoinHandle<EarlyResult>);

impl Drop for EarlyFetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EarlyFetches {
    /// Start fetching `files` (path as in the log, store path, size) whole, in tasks of
    /// their own, through `store` (counted and bounded by `limiter`).
    pub(crate) fn start(
        &self,
        store: &Arc<dyn ObjectStore>,
        limiter: &Arc<IoLimiter>,
        files: impl IntoIterator<Item = (String, Path, u64)>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut map = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for (key, path, size) in files {
            if map.contains_key(&key) {
                continue;
            }
            let (store, limiter) = (store.clone(), limiter.clone());
            let task = runtime.spawn(async move {
                let permit = limiter.reserve_bytes(size).await;
                let got = store.get(&path).await.map_err(|e| e.to_string())?;
                let bytes = got.bytes().await.map_err(|e| e.to_string())?;
                Ok((bytes, permit))
            });
            map.insert(key, EarlyFetch(task));
        }
    }

    /// The bytes of `key` fetched early, waiting for the fetch if it is under way, or
    /// why the fetch failed (a failure counts as the reader's own, so its retries stay
    /// the caller's); `None` when it was not fetched early (read it as usual).
    pub(crate) async fn take(&self, key: &str) -> Option<EarlyResult> {
        let mut fetch = self.files.lock().unwrap_or_else(|e| e.into_inner()).remove(key)?;
        Some(match (&mut fetch.0).await {
            Ok(result) => result,
            Err(e) => Err(e.to_string()),
        })
    }

    /// Files fetched or being fetched early and not taken.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn requests_are_counted_bounded_and_coalesced() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let limiter = IoLimiter::new(&IoSettings { max_requests_in_flight: 3, ..IoSettings::default() });
        let store = Arc::new(BoundedStore::new(inner, limiter.clone()));
        let data = Bytes::from(vec![7u8; 4 * 1024 * 1024]);
        store.put(&Path::from("f"), data.clone().into()).await.unwrap();
        let got = store.get(&Path::from("f")).await.unwrap().bytes().await.unwrap();
        assert_eq!(got, data);
        // Two ranges 1 KiB apart are one request; one 3 MiB away is another.
        let ranges = store.get_ranges(&Path::from("f"), &[0..10, 1034..2000, 3_500_000..3_500_010]).await.unwrap();
        assert_eq!(ranges[1], data.slice(1034..2000));
        let report = limiter.report();
        assert_eq!(report.requests, 1 + 1 + 2);
        assert_eq!(report.bytes_read, data.len() as u64 + 2000 + 10);
        // Many reads at once never exceed the bound.
        let reads = (0..20).map(|i| {
            let store = store.clone();
            async move { store.get_range(&Path::from("f"), i * 10..i * 10 + 5).await.unwrap() }
        });
        futures::future::join_all(reads).await;
        let report = limiter.report();
        assert_eq!(report.requests, 4 + 20);
        assert!(report.peak_in_flight <= 3, "peak {} above the bound of 3", report.peak_in_flight);
    }

    #[tokio::test]
    async fn early_fetches_are_taken_once_and_cancelled_when_dropped() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let limiter = IoLimiter::new(&IoSettings { max_bytes_in_flight: 1024 * 1024, ..IoSettings::default() });
        let store: Arc<dyn ObjectStore> = Arc::new(BoundedStore::new(inner, limiter.clone()));
        for name in ["a", "b"] {
            store.put(&Path::from(name), Bytes::from(name.repeat(1000)).into()).await.unwrap();
        }
        let early = EarlyFetches::default();
        let files = ["a", "b", "missing"].map(|n| (format!("log/{n}"), Path::from(n), 1000));
        early.start(&store, &limiter, files);
        assert_eq!(early.len(), 3);
        let (bytes, permit) = early.take("log/a").await.expect("fetched early").unwrap();
        assert_eq!(bytes, Bytes::from("a".repeat(1000)));
        assert!(early.take("log/a").await.is_none(), "taken once");
        let failed = early.take("log/missing").await.expect("fetched early").unwrap_err();
        assert!(failed.contains("missing"), "the failure is the reader's: {failed}");
        assert!(early.take("log/other").await.is_none());
        assert_eq!(early.len(), 1);
        // The one nobody took gives its share of the byte budget back when dropped: the
        // whole budget can be reserved again.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop((early, permit));
        let whole = tokio::time::timeout(std::time::Duration::from_secs(5), limiter.reserve_bytes(1024 * 1024));
        assert!(whole.await.is_ok(), "every early fetch gave its bytes back");
        assert_eq!(limiter.report().requests, 2 + 3);
    }

    #[tokio::test]
    async fn the_byte_budget_is_given_out_in_order() {
        let limiter = IoLimiter::new(&IoSettings { max_bytes_in_flight: 1024 * 1024, ..IoSettings::default() });
        let first = limiter.reserve_bytes(800 * 1024).await;
        // More than the whole budget is clamped to it, and waits for the first.
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.reserve_bytes(10 * 1024 * 1024).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap();
    }
}
