//! Three `sediment serve` processes on one PostgreSQL catalog and 30 bronze tables on
//! the S3 server:
//!
//! 1. the tables are registered already fragmented: each is compacted by exactly one
//!    job, whichever daemon's scheduler saw it first, and the others enqueue nothing;
//! 2. writers keep appending small files while the daemons compact; one daemon, whose
//!    storage profile goes through a latency proxy so that its jobs are slow, is
//!    killed with SIGKILL while it runs a job: the others take the job over once its
//!    lease expires;
//! 3. afterwards every table holds exactly the rows the writers wrote, its compaction
//!    commits (each names its job in `commitInfo.sediment`) come one job at a time,
//!    each planned on the previous job's result, and no two compactions of one table
//!    ran at once by the catalog's record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sediment::Table;
use sediment::arrow::array::Int64Array;
use sediment_catalog::{Catalog as _, Job, JobFilter, JobKind, JobState, SqlCatalog};

use crate::common::{ScanRun, s3_endpoint};
use crate::service::{fragmented_table, http};

const TABLES: usize = 30;
/// Files a table starts with (one partition); the policy's trigger is 4.
const START_FILES: usize = 5;
const ADMIN: &str = "cluster-admin-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `sediment serve` process; killed when dropped.
struct Process {
    name: String,
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, name: &str, catalog: &str, listen: std::net::SocketAddr, endpoint: &str) -> PathBuf {
    let text = format!(
        r#"
listen = "{listen}"
catalog = "{catalog}"
daemon_id = "{name}"

[workers]
concurrency = 2
lease = "4s"
heartbeat = "1s"
poll = "200ms"
retry_backoff = "1s"
shutdown_grace = "20s"

[scheduler]
tick = "2s"
jitter = "500ms"

[[auth.tokens]]
name = "test"
role = "admin"
sha256 = "{hash}"

[storage.lake]
aws_endpoint = "{endpoint}"
aws_allow_http = "true"

[policies.bronze.compaction]
min_small_files = 4
schedule = {{ every = "1s" }}

[policies.bronze.vacuum]
enabled = false
"#,
        hash = sediment::service::settings::token_hash(ADMIN),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_daemon(dir: &Path, name: &str, catalog: &str, endpoint: &str) -> Process {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = config(dir, name, catalog, addr, endpoint);
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(crate::cli::sediment_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
        .spawn()
        .expect("sediment serve starts");
    let process = Process { name: name.into(), child, addr, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() && http(addr, "GET", "/readyz", None, None).await.0 == 200
        {
            return process;
        }
        assert!(Instant::now() < deadline, "{name} did not get ready:\n{}", process.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `scripts/latency-proxy.py` in front of the S3 server, `delay_ms` per request.
struct Proxy {
    child: Child,
    endpoint: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn latency_proxy(delay_ms: u64) -> Proxy {
    let port = free_port();
    let upstream = s3_endpoint().trim_start_matches("http://").trim_end_matches('/').to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/latency-proxy.py");
    let child = Command::new("python3")
        .arg(script)
        .args([port.to_string(), upstream, delay_ms.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs the latency proxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the latency proxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Proxy { child, endpoint: format!("http://127.0.0.1:{port}") }
}

async fn append(table: &mut Table, id: i64) {
    crate::service::append_day_row(table, id, &format!("2024-05-{:02}", 1 + id % 2)).await;
}

async fn ids(uri: &str) -> Vec<i64> {
    let (batches, _) = Table::open(uri).await.unwrap().scan().run().await;
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
            column.values().to_vec()
        })
        .collect();
    ids.sort();
    ids
}

/// Every job matching `filter`, page by page.
async fn all_jobs(catalog: &SqlCatalog, mut filter: JobFilter) -> Vec<Job> {
    let mut jobs = Vec::new();
    loop {
        let page = catalog.list_jobs(&filter).await.unwrap();
        let Some(last) = page.last() else { return jobs };
        filter.before_id = Some(last.id);
        jobs.extend(page);
    }
}

async fn compactions(catalog: &SqlCatalog) -> Vec<Job> {
    all_jobs(catalog, JobFilter { kind: Some(JobKind::Compact), ..Default::default() }).await
}

async fn running_on(catalog: &SqlCatalog, daemon: &str) -> Vec<Job> {
    all_jobs(catalog, JobFilter { state: Some(JobState::Running), ..Default::default() })
        .await
        .into_iter()
        .filter(|j| j.lease_owner.as_deref() == Some(daemon))
        .collect()
}

/// Wait until no job is scheduled or running, twice in a row a few ticks apart.
async fn settle(catalog: &SqlCatalog, within: Duration, daemons: &[&Process]) {
    let deadline = Instant::now() + within;
    let mut quiet = 0;
    while quiet < 2 {
        let (scheduled, running) = catalog.count_active().await.unwrap();
        quiet = if scheduled + running == 0 { quiet + 1 } else { 0 };
        if Instant::now() > deadline {
            let logs: Vec<String> = daemons.iter().map(|d| format!("== {}\n{}", d.name, d.log())).collect();
            panic!("jobs still active after {within:?}: {scheduled} scheduled, {running} running\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_share_postgres_and_take_over_a_killed_daemons_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let catalog_url = crate::catalog::postgres_database().await;
    let proxy = latency_proxy(100).await;
    let direct = s3_endpoint();

    // The tables, fragmented before any daemon sees them.
    let mut uris = Vec::new();
    for chunk in (0..TABLES).collect::<Vec<_>>().chunks(6) {
        let made = futures::future::join_all(
            chunk.iter().map(|i| async move { fragmented_table(&format!("cluster-{i}"), 1, START_FILES).await }),
        )
        .await;
        uris.extend(made);
    }
    let mut model: Vec<Vec<i64>> = (0..TABLES).map(|_| (0..START_FILES as i64).collect()).collect();

    // Daemon a reaches S3 through the proxy: its jobs take a while, so one can be
    // caught running.
    let slow = start_daemon(dir.path(), "daemon-a", &catalog_url, &proxy.endpoint).await;
    let b = start_daemon(dir.path(), "daemon-b", &catalog_url, &direct).await;
    let c = start_daemon(dir.path(), "daemon-c", &catalog_url, &direct).await;
    let catalog = SqlCatalog::connect(&catalog_url).await.unwrap();
    for (i, uri) in uris.iter().enumerate() {
        let body =
            format!(r#"{{"name": "raw.t{i}", "layer": "bronze", "location": "{uri}", "storage_options": "lake"}}"#);
        let (status, text) = http(b.addr, "POST", "/api/v1/tables", Some(ADMIN), Some(body.as_bytes())).await;
        assert_eq!(status, 201, "{text}");
    }

    // 1. One trigger per table: one job per table, whoever enqueued it.
    settle(&catalog, Duration::from_secs(120), &[&slow, &b, &c]).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // every scheduler ticks again
    let jobs = compactions(&catalog).await;
    let mut per_table: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for job in &jobs {
        per_table.entry(job.table.as_str()).or_default().push(job);
    }
    assert_eq!(per_table.len(), TABLES, "every table compacted: {jobs:#?}");
    for (table, jobs) in &per_table {
        assert_eq!(jobs.len(), 1, "{table}: one compaction for one trigger: {jobs:#?}");
        assert_eq!(jobs[0].state, JobState::Succeeded, "{:?}", jobs[0]);
    }
    for uri in &uris {
        assert_eq!(Table::open(uri).await.unwrap().files().unwrap().len(), 1, "{uri}");
    }
    let owners: BTreeSet<&str> = jobs.iter().filter_map(|j| j.lease_owner.as_deref()).collect();
    assert!(owners.len() >= 2, "the daemons split the work: {owners:?}");

    // 2. Writers fragment the tables again while the daemons compact; daemon a is
    // killed while it runs a job.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3usize {
        let mine: Vec<(usize, String)> = uris.iter().cloned().enumerate().filter(|(i, _)| i % 3 == w).collect();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut tables = Vec::new();
            for (i, uri) in &mine {
                tables.push((*i, Table::open(uri).await.unwrap()));
            }
            let mut written: Vec<(usize, i64)> = Vec::new();
            let mut seq = 1000i64;
            while !stop.load(Ordering::SeqCst) {
                for (i, table) in tables.iter_mut() {
                    append(table, seq).await;
                    written.push((*i, seq));
                    seq += 1;
                    // A steady trickle, not a flood of the one S3 test server.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            written
        }));
    }
    // Catch daemon a running a job and SIGKILL it (no shutdown, no give-back). In the
    // rare case that its job ended between the listing and the kill, start it again
    // and retry.
    let mut slow = slow;
    let mut taken: BTreeSet<i64> = BTreeSet::new();
    for _ in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(90);
        while running_on(&catalog, "daemon-a").await.is_empty() {
            assert!(Instant::now() < deadline, "daemon a never ran a job:\n{}", slow.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slow.child.kill().unwrap();
        slow.child.wait().unwrap();
        // What the catalog says the dead daemon held.
        taken = running_on(&catalog, "daemon-a").await.into_iter().map(|j| j.id).collect();
        if !taken.is_empty() {
            break;
        }
        slow = start_daemon(dir.path(), "daemon-a", &catalog_url, &proxy.endpoint).await;
    }
    assert!(!taken.is_empty(), "daemon a was never killed holding a job");
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        for (i, id) in writer.await.unwrap() {
            model[i].push(id);
        }
    }

    // 3. The others finish the killed daemon's jobs and the writers' fragments.
    settle(&catalog, Duration::from_secs(120), &[&b, &c]).await;
    for id in &taken {
        let job = catalog.job(*id).await.unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert!(job.taken_over, "job {id} was taken over after the kill: {job:?}");
        assert_ne!(job.lease_owner.as_deref(), Some("daemon-a"), "{job:?}");
        assert!(job.attempt >= 2, "{job:?}");
    }
    let (_, metrics) = http(b.addr, "GET", "/metrics", Some(ADMIN), None).await;
    let (_, metrics_c) = http(c.addr, "GET", "/metrics", Some(ADMIN), None).await;
    assert!(
        metrics.contains("sediment_lease_takeovers_total") || metrics_c.contains("sediment_lease_takeovers_total"),
        "a takeover is counted"
    );

    // Nothing lost, nothing duplicated; every table healthy again.
    for (i, uri) in uris.iter().enumerate() {
        let mut expected = model[i].clone();
        expected.sort();
        assert_eq!(ids(uri).await, expected, "table {i}: the rows the writers wrote");
        let table = Table::open(uri).await.unwrap();
        let mut per_partition: BTreeMap<String, usize> = BTreeMap::new();
        for file in table.files().unwrap() {
            *per_partition.entry(format!("{:?}", file.partition_values)).or_default() += 1;
        }
        assert!(per_partition.values().all(|n| *n < 4), "table {i} left unhealthy: {per_partition:?}");
    }

    // One compaction at a time per table: in the log, a job's commits are never
    // interleaved with another job's, and each job planned on the previous job's
    // last commit; in the catalog, no two jobs of one table overlap.
    let jobs = compactions(&catalog).await;
    assert!(
        jobs.iter().all(|j| j.state == JobState::Succeeded),
        "{:#?}",
        jobs.iter().filter(|j| j.state != JobState::Succeeded).collect::<Vec<_>>()
    );
    for (i, uri) in uris.iter().enumerate() {
        let history = Table::open(uri).await.unwrap().history(None).await.unwrap();
        let mut runs: Vec<(i64, u64, u64)> = Vec::new(); // (job, first read version, last version)
        for entry in history.iter().rev().filter(|e| e.operation.as_deref() == Some("OPTIMIZE")) {
            let job = entry.job.as_ref().and_then(|j| j["job"].as_i64()).expect("a compaction commit names its job");
            let read = entry.read_version.unwrap();
            match runs.last_mut() {
                Some(last) if last.0 == job => last.2 = entry.version,
                _ => {
                    assert!(
                        !runs.iter().any(|r| r.0 == job),
                        "table {i}: job {job}'s commits are interleaved with another job's"
                    );
                    if let Some(previous) = runs.last() {
                        assert!(
                            read >= previous.2,
                            "table {i}: job {job} planned on version {read}, before job {}'s commit {}",
                            previous.0,
                            previous.2
                        );
                    }
                    runs.push((job, read, entry.version));
                }
            }
        }
        let name = format!("raw.t{i}");
        let mut spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
            jobs.iter().filter(|j| j.table == name).map(|j| (j.started_at.unwrap(), j.finished_at.unwrap())).collect();
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[1].0 >= pair[0].1, "{name}: two compactions overlapped: {pair:?}");
        }
    }

    let appended: usize = model.iter().map(|m| m.len() - START_FILES).sum();
    let by_owner = jobs.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, j| {
        *m.entry(j.lease_owner.as_deref().unwrap_or("")).or_default() += 1;
        m
    });
    eprintln!("{appended} appends, {} compactions by {by_owner:?}, jobs taken over: {taken:?}", jobs.len());

    // SIGTERM: the survivors stop cleanly.
    for daemon in [b, c] {
        let pid = daemon.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let mut daemon = daemon;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{} did not stop on SIGTERM", daemon.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(status.success(), "{}: {status}\n{}", daemon.name, daemon.log());
    }
    drop(proxy);
}
