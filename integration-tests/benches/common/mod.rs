//! Helpers shared by the benchmark programs.

use std::path::Path;
use std::process::Command;

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Copy a directory tree (each run gets its own copy of the table).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// CPU seconds (user + system) and peak RSS in bytes of this process so far.
///
/// The peak is `VmHWM` from `/proc/self/status`, the high-water mark of this
/// program's own memory: `getrusage`'s `ru_maxrss` would also count the parent's
/// memory at the time it forked this process.
pub fn rusage() -> (f64, u64) {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let hwm_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .unwrap_or(usage.ru_maxrss as u64);
    (secs(usage.ru_utime) + secs(usage.ru_stime), hwm_kib * 1024)
}

/// Resident memory of this process now, in bytes (`VmRSS`).
pub fn rss_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .unwrap_or(0)
        * 1024
}

/// Tell a `perf record --control fifo:FIFO -D -1` started around this process to
/// sample (`"enable"`) or stop (`"disable"`), when `PERF_CTL_FIFO` names its fifo:
/// profiles then cover the timed section only, not the setup around it.
pub fn perf_control(command: &str) {
    if let Ok(fifo) = std::env::var("PERF_CTL_FIFO") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(fifo) {
            let _ = writeln!(f, "{command}");
        }
    }
}

pub fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0 / 1024.0)
}

/// Run every mode `rounds` times, interleaved (so load on the machine hits all
/// alike), each on a fresh copy of `table` in its own process (`--run-one MODE --dir
/// COPY` plus `extra` arguments), and return per mode the run with the median wall
/// time, with `wall_min_s` and `wall_max_s` added. `after` sees each copy before it
/// is deleted.
pub fn run_rounds(
    table: &Path,
    work: &Path,
    modes: &[&str],
    rounds: usize,
    extra: &[String],
    mut after: impl FnMut(&str, usize, &Path, &serde_json::Value),
) -> Vec<serde_json::Value> {
    let mut runs: Vec<Vec<serde_json::Value>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let copy = work.join(format!("run-{mode}"));
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(table, &copy);
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--run-one", mode, "--dir", copy.to_str().unwrap()])
                .args(extra)
                .output()
                .unwrap();
            assert!(out.status.success(), "{mode} failed: {}", String::from_utf8_lossy(&out.stderr));
            let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
            let mut figures: serde_json::Value = serde_json::from_str(&line).unwrap();
            figures["stderr"] = String::from_utf8_lossy(&out.stderr).trim().into();
            after(mode, round, &copy, &figures);
            runs[m].push(figures);
            let _ = std::fs::remove_dir_all(&copy);
        }
    }
    runs.into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| a["wall_s"].as_f64().unwrap().total_cmp(&b["wall_s"].as_f64().unwrap()));
            let mut median = r[r.len() / 2].clone();
            median["wall_min_s"] = r[0]["wall_s"].clone();
            median["wall_max_s"] = r[r.len() - 1]["wall_s"].clone();
            median
        })
        .collect()
}

/// An object store that waits a fixed time before every request, as S3 does before
/// its first byte, over another store (`InMemory`, or the local file system, whose
/// reads `object_store`'s own `ThrottledStore` cannot delay). Ranged reads
/// are coalesced as `object_store` does for S3 (gaps up to 1 MiB) and each merged
/// range waits on its own, so every engine pays per request what S3 would charge.
#[derive(Debug)]
pub struct LatencyStore {
    inner: std::sync::Arc<dyn object_store::ObjectStore>,
    latency: std::time::Duration,
    /// With `BENCH_TRACE` set, every request is printed to stderr as it starts
    /// (milliseconds since the store was made, the operation, the path): the chain of
    /// dependent round trips an operation makes.
    trace: Option<std::time::Instant>,
}

impl LatencyStore {
    pub fn new(inner: std::sync::Arc<dyn object_store::ObjectStore>, latency: std::time::Duration) -> Self {
        let trace = std::env::var_os("BENCH_TRACE").map(|_| std::time::Instant::now());
        Self { inner, latency, trace }
    }

    fn trace(&self, op: &str, path: impl std::fmt::Display) {
        if let Some(start) = self.trace {
            eprintln!("trace {:>7.1} ms {op:<6} {path}", start.elapsed().as_secs_f64() * 1e3);
        }
    }
}

impl std::fmt::Display for LatencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Latency({:?}, {})", self.latency, self.inner)
    }
}

mod latency_store {
    use std::ops::Range;

    use bytes::Bytes;
    use futures::StreamExt;
    use futures::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
        PutOptions, PutPayload, PutResult, Result,
    };

    use super::LatencyStore;

    #[async_trait::async_trait]
    impl ObjectStore for LatencyStore {
        async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
            self.trace("put", location);
            tokio::time::sleep(self.latency).await;
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.trace("mpu", location);
            tokio::time::sleep(self.latency).await;
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            self.trace(if options.head { "head" } else { "get" }, location);
            tokio::time::sleep(self.latency).await;
            self.inner.get_opts(location, options).await
        }

        async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
            object_store::coalesce_ranges(
                ranges,
                |range| async move {
                    self.trace("range", format!("{location} {range:?}"));
                    tokio::time::sleep(self.latency).await;
                    self.inner.get_opts(location, GetOptions::new().with_range(Some(range))).await?.bytes().await
                },
                object_store::OBJECT_STORE_COALESCE_DEFAULT,
            )
            .await
        }

        fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
            let latency = self.latency;
            let delayed = locations.then(move |l| async move {
                tokio::time::sleep(latency).await;
                l
            });
            self.inner.delete_stream(delayed.boxed())
        }

        /// In lexicographic order, as S3 and `InMemory` list (the local file system
        /// lists in directory order, which the Delta kernel refuses for a log).
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.trace("list", prefix.map_or(String::new(), |p| p.to_string()));
            let (inner, prefix, latency) = (self.inner.clone(), prefix.cloned(), self.latency);
            futures::stream::once(async move {
                tokio::time::sleep(latency).await;
                let mut listed: Vec<Result<ObjectMeta>> = inner.list(prefix.as_ref()).collect().await;
                listed.sort_by(|a, b| match (a, b) {
                    (Ok(a), Ok(b)) => a.location.cmp(&b.location),
                    _ => std::cmp::Ordering::Equal,
                });
                futures::stream::iter(listed)
            })
            .flatten()
            .boxed()
        }

        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.trace("listd", prefix.map_or(String::new(), |p| p.to_string()));
            tokio::time::sleep(self.latency).await;
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.trace("copy", from);
            tokio::time::sleep(self.latency).await;
            self.inner.copy_opts(from, to, options).await
        }
    }
}

/// Open the table at `uri` as delta-rs alone would: its own builder over `store` (the
/// latency store) when given, else its own store for the location; no Sediment code
/// (such as its log read cache) in between, so the delta-rs rows measure delta-rs.
pub async fn delta_open(
    uri: &str,
    store: Option<std::sync::Arc<dyn object_store::ObjectStore>>,
) -> sediment::deltalake::DeltaTable {
    let url = match url::Url::parse(uri) {
        Ok(url) if url.scheme().len() > 1 => url,
        _ => url::Url::from_directory_path(std::fs::canonicalize(uri).unwrap()).unwrap(),
    };
    let mut builder = sediment::deltalake::DeltaTableBuilder::from_url(url.clone()).unwrap();
    if let Some(store) = store {
        builder = builder.with_storage_backend(store, url);
    }
    builder.load().await.unwrap()
}

/// The table at `dir` (this run's own copy on local disk) behind `latency_ms` of
/// latency per request and a counter of the requests every engine makes through it.
///
/// The files stay on disk, as a table's stay on S3, so the process's peak RSS is the
/// engine's memory, not a copy of the table held for it (an `InMemory` copy of W2's
/// table was most of every engine's RSS: 170 of about 210-285 MiB, the same for all,
/// which hid the ratio between them). The store is the local file system's, whose
/// reads `object_store`'s own `ThrottledStore` cannot delay; `LatencyStore` can.
pub async fn latency_store(
    dir: &Path,
    latency_ms: u64,
) -> (std::sync::Arc<dyn object_store::ObjectStore>, std::sync::Arc<sediment::IoLimiter>) {
    let local: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap());
    let delayed = std::sync::Arc::new(LatencyStore::new(local, std::time::Duration::from_millis(latency_ms)));
    let counter = sediment::IoLimiter::unbounded();
    (std::sync::Arc::new(sediment::BoundedStore::new(delayed, counter.clone())), counter)
}

/// The latencies of `--latency-ms L,...` (each `Some(ms)`), or one run on local disk
/// (`None`) without the flag.
pub fn latencies() -> Vec<Option<u64>> {
    match arg("--latency-ms") {
        Some(list) => list.split(',').map(|v| Some(v.trim().parse().unwrap())).collect(),
        None => vec![None],
    }
}

/// The faster of the delta-rs rows (`delta-rs`, `delta-rs-16`) among `results`: the
/// one ratios are taken against.
pub fn fastest_delta(results: &[serde_json::Value]) -> serde_json::Value {
    results
        .iter()
        .filter(|r| r["mode"].as_str().unwrap().starts_with("delta-rs"))
        .min_by(|a, b| a["wall_s"].as_f64().unwrap().total_cmp(&b["wall_s"].as_f64().unwrap()))
        .unwrap()
        .clone()
}
