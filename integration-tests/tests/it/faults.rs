//! Fault injection: an object store that fails some reads, the way a flaky network
//! or a throttling S3 endpoint does, and delays every request by a random time (so
//! requests in flight complete out of order, as they do on S3).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use sediment::{CompactOptions, OpenOptions, Table, WriteOptions};

use crate::common::{append_events, table_rows};

/// Fails the first read of data files (never of the log) with a transient error, for
/// the first `budget` files read: a retry of the same read succeeds.
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn ObjectStore>,
    budget: usize,
    failed: std::sync::Mutex<std::collections::HashSet<String>>,
    failures: Arc<AtomicUsize>,
    /// Panic (as a buggy library would) when reading a data file whose path has this.
    panic_on: Option<&'static str>,
    /// Delay every request by a pseudo-random time up to this many milliseconds.
    jitter_ms: u64,
    calls: AtomicUsize,
    /// When a put to a path ending with the first comes, put the second's bytes there
    /// first (once): another writer's commit landing a moment earlier.
    race: std::sync::Mutex<Option<(String, Bytes)>>,
    /// Deletes that still succeed; below zero every delete fails (a process that died
    /// half-way through, as far as the store can tell). `None`: no limit.
    deletes_left: Option<Arc<std::sync::atomic::AtomicI64>>,
    /// Puts of commits (`_delta_log/*.json`) that fail before the next succeeds.
    commit_failures: Option<Arc<AtomicUsize>>,
    /// The two faults above hang (never answer) instead of failing: the process froze
    /// there and is killed (its future dropped), no code of its running after.
    hang: bool,
    /// After each commit put that succeeds, this many listings fail until the next
    /// put (the counter counts those that failed): the log cannot be read back right
    /// after a commit.
    lists_failing_after_commit: Option<(usize, Arc<AtomicUsize>)>,
    lists_to_fail: AtomicUsize,
}

impl FlakyStore {
    fn new(budget: usize, failures: Arc<AtomicUsize>) -> Self {
        Self {
            inner: Arc::new(object_store::local::LocalFileSystem::new()),
            budget,
            failed: Default::default(),
            failures,
            panic_on: None,
            jitter_ms: 0,
            calls: AtomicUsize::new(0),
            race: Default::default(),
            deletes_left: None,
            commit_failures: None,
            hang: false,
            lists_failing_after_commit: None,
            lists_to_fail: AtomicUsize::new(0),
        }
    }

    /// Wait up to `jitter_ms`, differently for each call.
    async fn jitter(&self) {
        if self.jitter_ms > 0 {
            let n = self.calls.fetch_add(1, Ordering::Relaxed) as u64;
            let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            tokio::time::sleep(std::time::Duration::from_micros((mixed >> 11) % (self.jitter_ms * 1000 + 1))).await;
        }
    }
}

/// The local file system behind a store that, when a writer through it puts a path
/// ending with `at` (a commit), first puts `winner` there, and fails nothing.
pub fn racing_store(at: String, winner: Bytes) -> Arc<dyn ObjectStore> {
    Arc::new(FlakyStore {
        race: std::sync::Mutex::new(Some((at, winner))),
        ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0)))
    })
}

/// The local file system behind a store that delays every request by up to
/// `jitter_ms` (so concurrent requests complete out of order) and fails none.
pub fn jittery_store(jitter_ms: u64) -> Arc<dyn ObjectStore> {
    Arc::new(FlakyStore { jitter_ms, ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0))) })
}

/// The local file system behind a store whose deletes succeed `left` more times, then
/// fail (set `left` again to let them through).
pub fn store_failing_deletes(left: Arc<std::sync::atomic::AtomicI64>) -> Arc<dyn ObjectStore> {
    Arc::new(FlakyStore { deletes_left: Some(left), ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0))) })
}

/// [`store_failing_deletes`], but the deletes past `left` never answer.
pub fn store_hanging_deletes(left: Arc<std::sync::atomic::AtomicI64>) -> Arc<dyn ObjectStore> {
    Arc::new(FlakyStore { deletes_left: Some(left), hang: true, ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0))) })
}

/// [`store_failing_commits`], but those puts never answer.
pub fn store_hanging_commits(failures: Arc<AtomicUsize>) -> Arc<dyn ObjectStore> {
    Arc::new(FlakyStore {
        commit_failures: Some(failures),
        hang: true,
        ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0)))
    })
}

/// The local file system behind a store that fails the next `failures` commit puts.
pub fn store_failing_commits(failures: Arc<AtomicUsize>) -> Arc<dyn ObjectStore> {
    Arc::new(FlakyStore { commit_failures: Some(failures), ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0))) })
}

impl std::fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

impl FlakyStore {
    fn maybe_fail(&self, location: &Path) -> Result<()> {
        let path = location.as_ref();
        if path.ends_with(".parquet") && !path.contains("_delta_log") {
            if let Some(needle) = self.panic_on
                && path.contains(needle)
            {
                panic!("injected panic reading {path}");
            }
            let mut failed = self.failed.lock().unwrap();
            if failed.len() < self.budget && failed.insert(path.to_string()) {
                let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                return Err(object_store::Error::Generic {
                    store: "flaky",
                    source: format!("injected transient failure #{n} reading {path}").into(),
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.jitter().await;
        let winner = {
            let mut race = self.race.lock().unwrap();
            match race.as_ref() {
                Some((at, _)) if location.as_ref().ends_with(at.as_str()) => race.take().map(|(_, bytes)| bytes),
                _ => None,
            }
        };
        if let Some(bytes) = winner {
            self.inner.put_opts(location, bytes.into(), PutOptions::default()).await?;
        }
        let commit = location.as_ref().contains("_delta_log/") && location.as_ref().ends_with(".json");
        if commit
            && let Some(failures) = &self.commit_failures
            && failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            if self.hang {
                std::future::pending::<()>().await;
            }
            return Err(object_store::Error::Generic {
                store: "flaky",
                source: "injected failure putting a commit".into(),
            });
        }
        let put = self.inner.put_opts(location, payload, opts).await?;
        if let Some((lists, _)) = &self.lists_failing_after_commit {
            // The window opens with a commit put and closes with the next write.
            self.lists_to_fail.store(if commit { *lists } else { 0 }, Ordering::SeqCst);
        }
        Ok(put)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.jitter().await;
        self.maybe_fail(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.jitter().await;
        self.maybe_fail(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        use futures::StreamExt;
        let Some(left) = self.deletes_left.clone() else {
            return self.inner.delete_stream(locations);
        };
        let (inner, hang) = (self.inner.clone(), self.hang);
        locations
            .then(move |location| {
                let (inner, left) = (inner.clone(), left.clone());
                async move {
                    let location = location?;
                    if left.fetch_sub(1, Ordering::SeqCst) <= 0 {
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        return Err(object_store::Error::Generic {
                            store: "flaky",
                            source: format!("injected failure deleting {location}").into(),
                        });
                    }
                    let mut done = inner.delete_stream(futures::stream::iter([Ok(location)]).boxed());
                    done.next().await.unwrap_or_else(|| {
                        Err(object_store::Error::Generic { store: "flaky", source: "no answer".into() })
                    })
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Some((_, failed)) = &self.lists_failing_after_commit
            && self.lists_to_fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            use futures::StreamExt;
            failed.fetch_add(1, Ordering::SeqCst);
            let error = object_store::Error::Generic { store: "flaky", source: "injected failure listing".into() };
            return futures::stream::once(async move { Err(error) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Appends and a compaction whose commits land but cannot be read back (the listings
/// after each commit put fail) still count as committed: nobody deletes the files the
/// log now references, every row is there once, and the next commit on the same
/// handle lands after them. Direct commits make no listing to fail.
#[tokio::test]
async fn a_commit_that_cannot_be_read_back_still_counts_as_committed() {
    // With a checkpoint due every other version, those commits go through delta-rs's
    // path, whose snapshot update after the put lists the log: that listing fails.
    // Direct commits move the handle to their version without listing at all.
    for interval in [None, Some(2)] {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().join("read-back").to_string_lossy().to_string();
        let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
        let mut first = WriteOptions::append().partition_by(["event_date"]);
        if let Some(interval) = interval {
            first = first.table_property("delta.checkpointInterval", interval.to_string());
        }
        table.write([sediment::demo::events_batch(0, 300)], first).await.unwrap();
        for i in 1..8 {
            append_events(&mut table, i * 300, 300).await;
        }
        let version = table.version();
        let failed = Arc::new(AtomicUsize::new(0));
        let store = Arc::new(FlakyStore {
            lists_failing_after_commit: Some((1, failed.clone())),
            ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0)))
        });
        let mut flaky = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();

        let report = flaky.compact(CompactOptions::default()).await.unwrap();
        assert_eq!(report.bins_committed, 5, "{report:?}");
        assert!(report.abandoned.is_empty(), "{report:?}");
        append_events(&mut flaky, 2_400, 300).await;
        append_events(&mut flaky, 2_700, 300).await;
        match interval {
            None => assert_eq!(failed.load(Ordering::SeqCst), 0, "direct commits list nothing after their put"),
            Some(_) => assert!(failed.load(Ordering::SeqCst) > 0, "listings after the commit failed"),
        }

        let after = Table::open(&uri).await.unwrap();
        assert_eq!(after.version(), version.map(|v| v + 3), "one compaction and two appends, {interval:?}");
        assert_eq!(flaky.version(), after.version(), "the handle is at the last commit, {interval:?}");
        let expected = crate::common::canonical_rows(&[sediment::demo::events_batch(0, 3_000)]);
        assert_eq!(table_rows(&after).await, expected, "every row once, every file there");
        assert_eq!(table_rows(&flaky).await, expected, "the handle reads what it committed");
        let orphans: Vec<String> = after.orphan_files().await.unwrap().into_iter().map(|o| o.path).collect();
        assert!(orphans.is_empty(), "no file left unreferenced: {orphans:?}");
    }
}

/// A local table of `appends` appends of 300 events (5 files each, one per day).
async fn local_table(dir: &tempfile::TempDir, name: &str, appends: i64) -> (String, Table) {
    let uri = dir.path().join(name).to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..appends {
        append_events(&mut table, i * 300, 300).await;
    }
    (uri, table)
}

#[tokio::test]
async fn compaction_retries_transient_read_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, table) = local_table(&dir, "flaky", 8).await;
    let rows = table_rows(&table).await;

    let failures = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(FlakyStore { jitter_ms: 5, ..FlakyStore::new(3, failures.clone()) });
    let mut flaky = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    let mut options = CompactOptions::default();
    options.executor.max_bin_attempts = 4;
    let report = flaky.compact(options).await.unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 3, "faults were injected");
    assert_eq!(report.bins_committed, 5, "{report:?}");
    assert!(report.abandoned.is_empty(), "{report:?}");
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, rows);

    // With no retries allowed, a failing bin is given up and named; the rest commit.
    let (_, table) = local_table(&dir, "flaky2", 8).await;
    let store = Arc::new(FlakyStore { jitter_ms: 5, ..FlakyStore::new(2, Arc::new(AtomicUsize::new(0))) });
    let mut flaky = Table::open_with(table.uri(), OpenOptions::new().object_store(store)).await.unwrap();
    let mut options = CompactOptions::default();
    options.executor.max_bin_attempts = 1;
    let report = flaky.compact(options).await.unwrap();
    assert!((1..=2).contains(&report.abandoned.len()), "{report:?}");
    assert!(report.abandoned.iter().all(|a| a.reason.contains("injected transient failure")), "{report:?}");
    assert_eq!(report.bins_committed + report.abandoned.len(), 5);
}

#[tokio::test]
async fn a_corrupt_input_file_gives_up_its_bin_by_name_and_the_rest_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut table) = local_table(&dir, "corrupt", 4).await;
    let victim = table
        .files()
        .unwrap()
        .into_iter()
        .find(|f| f.partition_values["event_date"].as_deref() == Some("2024-05-03"))
        .unwrap();
    let path = dir.path().join("corrupt").join(&victim.path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let report = table.compact(CompactOptions::default()).await.unwrap();
    assert_eq!(report.bins_committed, 4, "{report:?}");
    assert_eq!(report.abandoned.len(), 1);
    let reason = &report.abandoned[0].reason;
    assert!(reason.contains(&victim.path) && reason.contains("data error"), "{reason}");
    // The damaged partition keeps its files; nothing was lost or half-committed.
    let files: Vec<_> = table.files().unwrap();
    assert_eq!(files.iter().filter(|f| f.partition_values["event_date"].as_deref() == Some("2024-05-03")).count(), 4);
    assert_eq!(files.len(), 8);
}

/// A merge that meets a damaged target file fails naming it, commits nothing and
/// deletes the files it had written for the other targets.
#[tokio::test]
async fn a_merge_meeting_a_corrupt_file_fails_by_name_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, mut table) = local_table(&dir, "merge-corrupt", 4).await;
    let version = table.version();
    let victim = table.files().unwrap().into_iter().next().unwrap();
    let path = dir.path().join("merge-corrupt").join(&victim.path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    // Every event again with another amount: every file holds a matched key.
    let source = sediment::demo::events_batch(0, 1_200);
    let amount = source.schema().index_of("amount").unwrap();
    let mut columns = source.columns().to_vec();
    columns[amount] = Arc::new(sediment::arrow::array::Float64Array::from(vec![1.0; 1_200]));
    let source = sediment::arrow::array::RecordBatch::try_new(source.schema(), columns).unwrap();
    let err = table.upsert([source], ["event_id"]).await.unwrap_err();
    assert!(err.to_string().contains(&victim.path), "{err}");

    let after = Table::open(&uri).await.unwrap();
    assert_eq!(after.version(), version, "nothing committed");
    let orphans: Vec<String> = after.orphan_files().await.unwrap().into_iter().map(|o| o.path).collect();
    assert!(orphans.is_empty(), "the merge's own files are deleted: {orphans:?}");
}

/// A bin whose task panics (here: the store panics reading one partition's files) is
/// given up and named like a failed one; the other bins commit and no row is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bin_whose_task_panics_is_given_up_and_the_rest_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, table) = local_table(&dir, "panicky", 4).await;
    let rows = table_rows(&table).await;
    let store = Arc::new(FlakyStore {
        panic_on: Some("event_date=2024-05-03"),
        ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0)))
    });
    let mut panicky = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    let report = panicky.compact(CompactOptions::default()).await.unwrap();
    assert_eq!((report.bins_planned, report.bins_committed), (5, 4), "{report:?}");
    assert_eq!(report.abandoned.len(), 1, "{report:?}");
    let abandoned = &report.abandoned[0];
    assert_eq!(abandoned.partition, vec![("event_date".to_string(), Some("2024-05-03".to_string()))]);
    assert!(abandoned.reason.contains("panicked"), "{abandoned:?}");
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, rows);
}

/// Compaction of many small inputs over a store whose requests take up to 20 ms and
/// complete out of order, with a small byte budget: the bounds hold (measured by the
/// job's own counters and by a counting store around everything it does), no request
/// is left running when it returns, and every row is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_at_high_latency_keeps_its_bounds_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, table) = local_table(&dir, "latency", 40).await;
    let rows = table_rows(&table).await;
    let inputs = table.files().unwrap().len();
    let jittery: Arc<dyn ObjectStore> =
        Arc::new(FlakyStore { jitter_ms: 20, ..FlakyStore::new(0, Arc::new(AtomicUsize::new(0))) });
    let outer = sediment::IoLimiter::unbounded();
    let store = Arc::new(sediment::BoundedStore::new(jittery, outer.clone()));
    let mut slow = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    let mut options = CompactOptions::default();
    options.executor.io.max_requests_in_flight = 6;
    options.executor.io.max_bytes_in_flight = 1024 * 1024;
    let report = slow.compact(options).await.unwrap();

    assert_eq!((report.bins_committed, report.files_removed), (5, inputs), "{report:?}");
    // Small files are read whole: one request each (and a few for the outputs).
    assert!(report.io.requests >= inputs as u64 && report.io.requests <= inputs as u64 + 20, "{:?}", report.io);
    assert!(report.io.peak_in_flight > 1 && report.io.peak_in_flight <= 6, "{:?}", report.io);
    assert!(report.io.peak_bytes_held <= 1024 * 1024, "{:?}", report.io);
    assert!(report.io.bytes_read >= report.bytes_removed, "{:?}", report.io);
    assert_eq!(outer.in_flight(), 0, "no request is left running");
    assert!(outer.report().requests > report.io.requests, "commits and log reads go through the same store");
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, rows);
}

/// A delete at high latency reads its candidate files several at once through the
/// bounded store (counted in its report), leaves no request running, and deletes
/// exactly the matching rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_at_high_latency_reads_its_candidates_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, table) = local_table(&dir, "latency-delete", 12).await;
    let before = table_rows(&table).await;
    let files = table.files().unwrap().len();
    let outer = sediment::IoLimiter::unbounded();
    let store = Arc::new(sediment::BoundedStore::new(jittery_store(20), outer.clone()));
    let mut slow = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    let report = slow.delete("event_id % 10 = 0").await.unwrap();

    assert_eq!((report.files_read, report.files_rewritten), (files, files), "{report:?}");
    assert_eq!(report.rows_deleted, 3_600 / 10, "{report:?}");
    assert!(report.io.requests >= files as u64, "every candidate read through the counted store: {:?}", report.io);
    assert!(report.io.peak_in_flight > 1, "candidates read in parallel: {:?}", report.io);
    assert_eq!(outer.in_flight(), 0, "no request is left running");
    let after = table_rows(&Table::open(&uri).await.unwrap()).await;
    let expected: Vec<String> = before.into_iter().filter(|r| !deleted_event(r)).collect();
    assert_eq!(after, expected);
}

/// Whether a canonical row is one `event_id % 10 = 0` deletes.
fn deleted_event(row: &str) -> bool {
    row.split('|')
        .find_map(|cell| cell.strip_prefix("event_id="))
        .and_then(|id| id.parse::<i64>().ok())
        .is_some_and(|id| id % 10 == 0)
}
