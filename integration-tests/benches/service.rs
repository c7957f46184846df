//! The service benchmark: many fragmented tables made healthy by one daemon, against
//! the same tables compacted one after another.
//!
//! The tables: `--tables` (100) bronze tables on local disk, each written as
//! `--files` (200) appends of `--rows` (500) demo events, one file per append over 4
//! days. On identical copies:
//! - `daemon`: one `sediment serve` process (SQLite catalog, the tables in its
//!   `[[tables]]`, `--workers` (2) workers, the built-in bronze policy with its check
//!   cadence at 1 s, scheduler jitter off, workers polling every 200 ms, vacuum off),
//!   timed from its start until the catalog records a succeeded compaction of every
//!   table; peak RSS is the daemon's `VmHWM`;
//! - `sequential`: `sediment compact DIR` for each table, one process after another
//!   (what a cron script does); peak RSS is the largest process's;
//! - `delta-rs`: one process that opens each table and runs delta-rs's `optimize`
//!   on it, one after another, at the same target size.
//!
//! On local disk with 2 cores both the daemon and each `sediment compact` keep both
//! cores busy, so the daemon can win only what it saves per table. Users' tables are
//! on S3, where a compaction is a chain of dependent round trips; with
//! `--latency-ms 30` (comma-separated for several) each mode runs again in its own
//! process over every table's folder behind a fixed wait per request
//! (`common::LatencyStore` over the local file system): the daemon is the service in
//! process with those stores injected (`ServiceBuilder::with_stores`), `sequential`
//! the library call `sediment compact` makes, table after table, `delta-rs` its
//! optimize, table after table. `--no-local` skips the local-disk runs.
//!
//! Goals (issue 14): the daemon with two workers takes ≤ 0.6× the sequential wall
//! time, and its peak RSS stays ≤ 300 MiB.
//!
//! Run (release; builds the `sediment` binary it drives first):
//!   cargo build --profile bench --bin sediment
//!   cargo bench -p sediment-integration-tests --bench service -- [--tables N] [--files N] [--rows N] [--workers N] [--work-dir DIR] [--sediment-bin PATH] [--latency-ms L,...] [--no-local]
//!
//! It prints a table of wall time, CPU time, tables per minute, peak RSS and the
//! ratio to the sequential runs. Nothing here is a pass/fail test.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sediment::arrow::array::{ArrayRef, Date32Array, RecordBatch};
use sediment::{Table, WriteOptions};
use sediment_catalog::{Catalog as _, JobFilter, JobKind, JobState, SqlCatalog};

// This bench uses only the argument, copy, RSS and formatting helpers.
#[allow(dead_code)]
mod common;
use common::{arg, copy_dir, mib, rusage};

const DAYS: i32 = 4;
const FIRST_DAY: i32 = 19844; // 2024-05-01
const TARGET: u64 = 128 * 1024 * 1024;

fn number(name: &str, default: usize) -> usize {
    arg(name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number, found {v}"))).unwrap_or(default)
}

/// `rows` demo events, all on day `day` of the four.
fn batch(start: i64, rows: usize, day: i32) -> RecordBatch {
    let batch = sediment::demo::events_batch(start, rows);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let last = columns.len() - 1;
    columns[last] = Arc::new(Date32Array::from(vec![FIRST_DAY + day; rows]));
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

async fn template(work: &Path, files: usize, rows: usize) -> PathBuf {
    let dir = work.join(format!("template-{files}x{rows}"));
    if dir.join("_delta_log").is_dir()
        && Table::open(dir.to_str().unwrap()).await.is_ok_and(|t| t.version() == Some(files as u64 - 1))
    {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut table = Table::open_or_new(dir.to_str().unwrap(), Default::default()).await.unwrap();
    for i in 0..files {
        let b = batch((i * rows) as i64, rows, i as i32 % DAYS);
        table.write(vec![b], WriteOptions::append().partition_by(["event_date"])).await.unwrap();
    }
    dir
}

/// Peak RSS (`VmHWM`) of process `pid`, sampled until it exits or `stop` is set.
fn watch_peak(pid: u32, stop: Arc<AtomicBool>) -> (std::thread::JoinHandle<()>, Arc<AtomicU64>) {
    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    let handle = std::thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        while !stop.load(Ordering::SeqCst) {
            let Ok(status) = std::fs::read_to_string(&path) else { return };
            let hwm = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
                .unwrap_or(0);
            p.fetch_max(hwm * 1024, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (handle, peak)
}

/// CPU seconds of the children waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[derive(Default)]
struct Figures {
    mode: String,
    /// `local disk (processes)` or `N ms per request (in process)`.
    store: String,
    wall: f64,
    cpu: f64,
    peak: u64,
    /// Resident memory before the timed part (the in-process runs' own baseline).
    base: u64,
    requests: Option<u64>,
    peak_in_flight: Option<u64>,
}

fn copies(template: &Path, root: &Path, tables: usize) -> Vec<PathBuf> {
    let _ = std::fs::remove_dir_all(root);
    (0..tables)
        .map(|i| {
            let dir = root.join(format!("t{i:03}"));
            copy_dir(template, &dir);
            dir
        })
        .collect()
}

async fn healthy(dirs: &[PathBuf], mode: &str) {
    for dir in dirs {
        let table = Table::open(dir.to_str().unwrap()).await.unwrap();
        let files = table.files().unwrap().len();
        assert_eq!(files, DAYS as usize, "{mode}: {} has {files} files after the run", dir.display());
    }
}

/// The daemon's settings: `locations` registered as bronze tables.
fn daemon_config(root: &Path, locations: &[String], workers: usize) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let catalog = format!("sqlite://{}", root.join("catalog.db").display());
    let mut config = format!(
        r#"listen = "127.0.0.1:{port}"
catalog = "{catalog}"
daemon_id = "bench"

[workers]
concurrency = {workers}
poll = "200ms"

[scheduler]
tick = "1s"
jitter = "0s"

[policies.bronze.compaction]
schedule = {{ every = "1s" }}

[policies.bronze.vacuum]
enabled = false
"#
    );
    for (i, location) in locations.iter().enumerate() {
        config.push_str(&format!(
            "\n[[tables]]\nname = \"bench.t{i:03}\"\nlayer = \"bronze\"\nlocation = \"{location}\"\n"
        ));
    }
    config
}

/// Wait until the catalog at `root` records a succeeded compaction of `tables`
/// tables; `alive` says whether the daemon still runs.
async fn wait_compacted(root: &Path, tables: usize, started: Instant, mut alive: impl FnMut() -> bool) -> SqlCatalog {
    let catalog = format!("sqlite://{}", root.join("catalog.db").display());
    // The catalog file appears once the daemon has migrated it.
    let store = loop {
        if root.join("catalog.db").exists()
            && let Ok(store) = SqlCatalog::connect(&catalog).await
        {
            break store;
        }
        assert!(alive(), "the daemon stopped; see {}", root.join("daemon.log").display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let filter = JobFilter {
        kind: Some(JobKind::Compact),
        state: Some(JobState::Succeeded),
        limit: Some(500),
        ..Default::default()
    };
    loop {
        let done: std::collections::BTreeSet<String> =
            store.list_jobs(&filter).await.map(|jobs| jobs.into_iter().map(|j| j.table).collect()).unwrap_or_default();
        if done.len() >= tables {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let registered = store.list_tables().await.map(|t| t.len()).unwrap_or(0);
            assert_eq!(registered, tables, "tables registered; see {}", root.join("daemon.log").display());
        }
        assert!(alive(), "the daemon stopped; see {}", root.join("daemon.log").display());
        assert!(started.elapsed() < Duration::from_secs(3600), "the daemon did not finish within an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = store.list_jobs(&JobFilter { state: Some(JobState::Failed), ..Default::default() }).await.unwrap();
    assert!(failed.is_empty(), "failed jobs: {failed:?}");
    store
}

async fn run_daemon(bin: &Path, dirs: &[PathBuf], root: &Path, workers: usize) -> Figures {
    let locations: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let config_path = root.join("sediment.toml");
    std::fs::write(&config_path, daemon_config(root, &locations, workers)).unwrap();
    let log = std::fs::File::create(root.join("daemon.log")).unwrap();
    let cpu_before = children_cpu();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("sediment serve starts");
    let stop = Arc::new(AtomicBool::new(false));
    let (sampler, peak) = watch_peak(child.id(), stop.clone());
    wait_compacted(root, dirs.len(), started, || child.try_wait().unwrap().is_none()).await;
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "the daemon stopped with {status}");
    // The daemon's CPU time, counted once it has been waited for.
    let cpu = children_cpu() - cpu_before;
    Figures { mode: "daemon".into(), wall, cpu, peak, ..Default::default() }
}

fn run_sequential(bin: &Path, dirs: &[PathBuf]) -> Figures {
    let cpu_before = children_cpu();
    let started = Instant::now();
    let mut peak = 0;
    for dir in dirs {
        let mut child = Command::new(bin)
            .args(["compact", dir.to_str().unwrap(), "--target-size", &TARGET.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("sediment compact starts");
        let stop = Arc::new(AtomicBool::new(false));
        let (sampler, p) = watch_peak(child.id(), stop.clone());
        let status = child.wait().unwrap();
        assert!(status.success(), "sediment compact {} failed", dir.display());
        stop.store(true, Ordering::SeqCst);
        sampler.join().unwrap();
        peak = peak.max(p.load(Ordering::SeqCst));
    }
    Figures {
        mode: "sequential".into(),
        wall: started.elapsed().as_secs_f64(),
        cpu: children_cpu() - cpu_before,
        peak,
        ..Default::default()
    }
}

/// Run `--run-one MODE` of this program on the tables listed in `list`.
fn run_child(mode: &str, list: &Path, root: &Path, extra: &[String]) -> Figures {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--run-one", mode, "--list"])
        .arg(list)
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{mode} failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    Figures {
        mode: mode.into(),
        wall: v["wall_s"].as_f64().unwrap(),
        cpu: v["cpu_s"].as_f64().unwrap(),
        peak: v["peak_rss"].as_u64().unwrap(),
        base: v["base_rss"].as_u64().unwrap_or(0),
        requests: v["requests"].as_u64(),
        peak_in_flight: v["peak_in_flight"].as_u64(),
        ..Default::default()
    }
}

/// In the child, over `--latency-ms`: every table of the list on its own folder behind
/// a fixed wait per request (`common::LatencyStore` over the local file system), all
/// through one request counter; `mode` is the in-process daemon (the service with
/// those stores injected), Sediment's compaction of each table one after another (the
/// library call `sediment compact` makes), or delta-rs's optimize of each.
async fn latency_child(mode: &str, list: &Path, latency_ms: u64, workers: usize, root: &Path) {
    let dirs: Vec<String> = std::fs::read_to_string(list).unwrap().lines().map(str::to_string).collect();
    let counter = sediment::IoLimiter::unbounded();
    let stores: Vec<(String, Arc<dyn object_store::ObjectStore>)> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let local = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap());
            let delayed = Arc::new(common::LatencyStore::new(local, Duration::from_millis(latency_ms)));
            let store: Arc<dyn object_store::ObjectStore> =
                Arc::new(sediment::BoundedStore::new(delayed, counter.clone()));
            (format!("memory://svc-t{i:03}/"), store)
        })
        .collect();
    let base_rss = common::rss_now();
    let (cpu0, _) = rusage();
    let started = Instant::now();
    match mode {
        "daemon" => {
            let locations: Vec<String> = stores.iter().map(|(l, _)| l.clone()).collect();
            let settings = sediment::service::Settings::from_toml(&daemon_config(root, &[], workers)).unwrap();
            let by_location: std::collections::HashMap<String, Arc<dyn object_store::ObjectStore>> =
                stores.into_iter().collect();
            let resolver: sediment::service::StoreResolver = Arc::new(move |l| by_location.get(l).cloned());
            let service = sediment::service::Service::builder(settings).with_stores(resolver).build().await.unwrap();
            // As `[[tables]]` at start: opened to check, 8 at a time.
            use futures::StreamExt as _;
            futures::stream::iter(locations.iter().enumerate())
                .for_each_concurrent(8, |(i, location)| {
                    let service = service.clone();
                    async move {
                        let entry = sediment_catalog::NewTable::new(
                            format!("bench.t{i:03}"),
                            sediment_catalog::Layer::Bronze,
                            location.clone(),
                        );
                        sediment::service::ops::register_table(&service, entry).await.unwrap();
                    }
                })
                .await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stop = tokio_util::sync::CancellationToken::new();
            let (s, t) = (service.clone(), stop.clone());
            let task = tokio::spawn(async move { s.serve(listener, t).await.unwrap() });
            wait_compacted(root, dirs.len(), started, || !task.is_finished()).await;
            let wall = started.elapsed().as_secs_f64();
            stop.cancel();
            task.await.unwrap();
            print_child(wall, cpu0, base_rss, &counter);
            return;
        }
        "sequential" => {
            for (location, store) in stores {
                let mut table =
                    Table::open_with(&location, sediment::OpenOptions::new().object_store(store)).await.unwrap();
                table.compact(sediment::CompactOptions::default().target_file_size(TARGET)).await.unwrap();
            }
        }
        _ => {
            for (location, store) in stores {
                let table =
                    Table::open_with(&location, sediment::OpenOptions::new().object_store(store)).await.unwrap();
                deltars_optimize(&table).await;
            }
        }
    }
    print_child(started.elapsed().as_secs_f64(), cpu0, base_rss, &counter);
}

fn print_child(wall: f64, cpu0: f64, base_rss: u64, counter: &sediment::IoLimiter) {
    let (cpu1, peak) = rusage();
    let io = counter.report();
    println!(
        "{}",
        serde_json::json!({
            "wall_s": wall, "cpu_s": cpu1 - cpu0, "peak_rss": peak, "base_rss": base_rss,
            "requests": io.requests, "peak_in_flight": io.peak_in_flight,
        })
    );
}

/// delta-rs's optimize (compact) at the same target size.
async fn deltars_optimize(table: &Table) {
    table
        .delta()
        .clone()
        .optimize()
        .with_type(sediment::deltalake::operations::optimize::OptimizeType::Compact)
        .with_target_size(NonZeroU64::new(TARGET).unwrap())
        .await
        .unwrap();
}

/// In the child: delta-rs's optimize of each table of the list, one after another.
async fn deltars_child(list: &Path) {
    let dirs: Vec<String> = std::fs::read_to_string(list).unwrap().lines().map(str::to_string).collect();
    let (cpu0, _) = rusage();
    let started = Instant::now();
    for dir in &dirs {
        let table = Table::open(dir).await.unwrap();
        deltars_optimize(&table).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, peak) = rusage();
    println!("{}", serde_json::json!({ "wall_s": wall, "cpu_s": cpu1 - cpu0, "peak_rss": peak }));
}

fn sediment_bin() -> PathBuf {
    if let Some(bin) = arg("--sediment-bin") {
        return PathBuf::from(bin);
    }
    // target/release/deps/service-<hash> -> target/release/sediment
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sediment");
    assert!(
        bin.exists(),
        "build it first (cargo build --profile bench --bin sediment) or pass --sediment-bin; looked at {}",
        bin.display()
    );
    bin
}

#[tokio::main]
async fn main() {
    sediment::service::install_crypto_provider();
    let workers = number("--workers", 2);
    if let Some(mode) = arg("--run-one") {
        let list = PathBuf::from(arg("--list").expect("--list FILE"));
        match arg("--latency-ms") {
            Some(ms) => {
                let root = PathBuf::from(arg("--root").expect("--root DIR"));
                latency_child(&mode, &list, ms.parse().expect("--latency-ms: milliseconds"), workers, &root).await
            }
            None => deltars_child(&list).await,
        }
        return;
    }
    let tables = number("--tables", 100);
    let files = number("--files", 200);
    let rows = number("--rows", 500);
    let latencies: Vec<u64> = arg("--latency-ms")
        .map(|v| {
            v.split(',').map(|ms| ms.trim().parse().expect("--latency-ms: milliseconds, comma-separated")).collect()
        })
        .unwrap_or_default();
    let local = !std::env::args().any(|a| a == "--no-local");
    let work = PathBuf::from(
        arg("--work-dir")
            .unwrap_or_else(|| std::env::temp_dir().join("sediment-service-bench").to_string_lossy().to_string()),
    );
    std::fs::create_dir_all(&work).unwrap();
    let bin = sediment_bin();
    eprintln!("== template: {files} appends of {rows} rows over {DAYS} days");
    let template = template(&work, files, rows).await;
    let bytes: u64 =
        Table::open(template.to_str().unwrap()).await.unwrap().files().unwrap().iter().map(|f| f.size).sum();

    let mut scenarios: Vec<Option<u64>> = Vec::new();
    if local {
        scenarios.push(None);
    }
    scenarios.extend(latencies.iter().map(|ms| Some(*ms)));
    let mut results = Vec::new();
    for latency in scenarios {
        let store = match latency {
            None => "local disk (processes)".to_string(),
            Some(ms) => format!("{ms} ms per request (in process)"),
        };
        for mode in ["daemon", "sequential", "delta-rs"] {
            let root = work.join(mode);
            eprintln!("== {store}, {mode}: copying {tables} tables");
            let dirs = copies(&template, &root, tables);
            let list = root.join("tables.txt");
            let text: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            std::fs::write(&list, text.join("\n")).unwrap();
            eprintln!("== {store}, {mode}: running");
            let mut figures = match (latency, mode) {
                (None, "daemon") => run_daemon(&bin, &dirs, &root, workers).await,
                (None, "sequential") => run_sequential(&bin, &dirs),
                (None, _) => run_child(mode, &list, &root, &[]),
                (Some(ms), _) => run_child(
                    mode,
                    &list,
                    &root,
                    &["--latency-ms".into(), ms.to_string(), "--workers".into(), workers.to_string()],
                ),
            };
            figures.store = store.clone();
            healthy(&dirs, mode).await;
            results.push(figures);
            let _ = std::fs::remove_dir_all(&root);
        }
    }

    println!(
        "\n{tables} tables × {files} files ({} KiB each on average, {DAYS} partitions), {workers} daemon workers, {} cores",
        bytes / files as u64 / 1024,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "| store | run | wall s | CPU s | tables/min | peak RSS MiB (above start) | requests | peak in flight | wall vs sequential |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for f in &results {
        let sequential = results.iter().find(|g| g.store == f.store && g.mode == "sequential").unwrap().wall;
        let memory = match f.base {
            0 => mib(f.peak as f64),
            base => format!("{} ({})", mib(f.peak as f64), mib(f.peak.saturating_sub(base) as f64)),
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {memory} | {} | {} | {:.2}× |",
            f.store,
            f.mode,
            f.wall,
            f.cpu,
            tables as f64 / f.wall * 60.0,
            opt(f.requests),
            opt(f.peak_in_flight),
            f.wall / sequential
        );
    }
    println!("\ngoals (issue 14): daemon wall ≤ 0.6× the sequential runs', daemon peak RSS ≤ 300 MiB");
    for daemon in results.iter().filter(|f| f.mode == "daemon") {
        let sequential = results.iter().find(|g| g.store == daemon.store && g.mode == "sequential").unwrap().wall;
        let ratio = daemon.wall / sequential;
        println!(
            "- {}: {ratio:.2}× ({}); {} MiB ({})",
            daemon.store,
            if ratio <= 0.6 { "met" } else { "missed" },
            mib(daemon.peak as f64),
            if daemon.peak <= 300 * 1024 * 1024 { "met" } else { "missed" },
        );
    }
}
