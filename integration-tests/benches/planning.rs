//! Benchmark: planning at scale. A table whose log holds many files (300,000 by
//! default, 100 columns, partitioned by day, statistics on the first 32 columns as
//! Delta writes them, a checkpoint at the last version) is generated as a log with no
//! data files. Each mode runs in a process of its own, so its peak RSS is its own:
//! - `delta-rs-load`: `deltalake::open_table`, which loads the snapshot and nothing else;
//! - `snapshot-plan`: `Table::open` (delta-rs's snapshot) and `compaction_plan`;
//! - `sediment-info`: `LogView::open` (the log read by Sediment: no statistics kept)
//!   and `info()` (file-size histogram, small files);
//! - `sediment-plan`: `LogView::open` and `compaction_plan` (what `compact --dry-run`
//!   runs); its bins must match `snapshot-plan`'s;
//! - `sediment-vacuum`: `LogView::open` and `vacuum_plan` with no retention (what
//!   `vacuum --dry-run --retain 0h` runs): the log also holds tombstones of files an
//!   earlier compaction removed (a tenth as many as the live files, removed an hour
//!   before the log was written), every one of them due;
//! - `snapshot-vacuum`: the same dry run on `Table::open` (delta-rs's snapshot); the
//!   files it would delete must match `sediment-vacuum`'s.
//!
//! Run (release):
//!   cargo bench -p sediment-integration-tests --bench planning -- [--files N] [--work-dir DIR] [--rounds N]
//!
//! It prints wall time, CPU time, peak RSS and the ratios to delta-rs's load. Nothing
//! here is a pass/fail test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sediment::{CompactOptions, LogView, OpenOptions, Table, VacuumOptions};

// This bench uses only the argument, RSS and formatting helpers.
#[allow(dead_code)]
mod common;
use common::{arg, mib, rusage};

const COLUMNS: usize = 100;
const INDEXED: usize = 32;
const ADDS_PER_COMMIT: usize = 1_000;
const DAYS: usize = 1_000;

/// Column `i`'s name and Delta type: an id, then doubles and strings in turn.
fn column(i: usize) -> (String, &'static str) {
    match i {
        0 => ("id".into(), "long"),
        i if i % 2 == 1 => (format!("m{i:02}"), "double"),
        i => (format!("s{i:02}"), "string"),
    }
}

fn day(n: usize) -> String {
    let date = chrono::NaiveDate::from_ymd_opt(2022, 1, 1).unwrap() + chrono::Duration::days((n % DAYS) as i64);
    date.format("%Y-%m-%d").to_string()
}

fn metadata_commit() -> String {
    let mut fields: Vec<serde_json::Value> = (0..COLUMNS)
        .map(|i| {
            let (name, kind) = column(i);
            serde_json::json!({"name": name, "type": kind, "nullable": true, "metadata": {}})
        })
        .collect();
    fields.push(serde_json::json!({"name": "day", "type": "string", "nullable": true, "metadata": {}}));
    let schema = serde_json::json!({"type": "struct", "fields": fields}).to_string();
    let protocol = serde_json::json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}});
    let metadata = serde_json::json!({"metaData": {
        "id": "00000000-0000-0000-0000-000000000300", "format": {"provider": "parquet", "options": {}},
        "schemaString": schema, "partitionColumns": ["day"], "configuration": {}, "createdTime": 1_700_000_000_000u64}});
    let info = serde_json::json!({"commitInfo": {"timestamp": 1_700_000_000_000u64, "operation": "CREATE TABLE"}});
    format!("{protocol}\n{metadata}\n{info}\n")
}

/// One `add` with statistics on the first `INDEXED` columns; sizes from 100 KB to
/// about 20 MB, so a compaction plan has small files to bin.
fn add(n: usize) -> String {
    let (mut min, mut max, mut nulls) = (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
    for i in 0..INDEXED {
        let (name, kind) = column(i);
        let (lo, hi) = match kind {
            "long" => (serde_json::json!(n * 5_000), serde_json::json!(n * 5_000 + 4_999)),
            "double" => (serde_json::json!((n % 97) as f64 * 1.5), serde_json::json!((n % 97) as f64 * 1.5 + 900.25)),
            _ => (serde_json::json!(format!("a{:06}", n % 1_000)), serde_json::json!(format!("z{:06}", n % 1_000))),
        };
        min.insert(name.clone(), lo);
        max.insert(name.clone(), hi);
        nulls.insert(name, serde_json::json!(n % 7));
    }
    let stats = serde_json::json!({"numRecords": 5_000, "minValues": min, "maxValues": max, "nullCount": nulls});
    let size = 100_000 + (n * 7_919) % 20_000_000;
    serde_json::json!({"add": {
        "path": format!("day={}/part-{n:07}-c000.zstd.parquet", day(n)), "partitionValues": {"day": day(n)},
        "size": size, "modificationTime": 1_700_000_000_000u64 + n as u64, "dataChange": true,
        "stats": stats.to_string()}})
    .to_string()
}

/// One `remove` of a file an earlier compaction replaced (not among the live files),
/// removed at `removed_at` (milliseconds since the epoch).
fn remove(n: usize, removed_at: u64) -> String {
    serde_json::json!({"remove": {
        "path": format!("day={}/old-{n:07}-c000.zstd.parquet", day(n)), "partitionValues": {"day": day(n)},
        "size": 100_000 + (n * 7_919) % 2_000_000, "deletionTimestamp": removed_at, "dataChange": false,
        "extendedFileMetadata": true}})
    .to_string()
}

async fn prepare(dir: &Path, files: usize) {
    if dir.join("_delta_log").join("_last_checkpoint").exists() {
        println!("reusing the table at {}", dir.display());
        return;
    }
    println!("writing a log of {files} files ({COLUMNS} columns, {DAYS} days) into {}", dir.display());
    let log = dir.join("_delta_log");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join(format!("{:020}.json", 0)), metadata_commit()).unwrap();
    let commits = files.div_ceil(ADDS_PER_COMMIT);
    for c in 0..commits {
        let mut out = std::io::BufWriter::new(std::fs::File::create(log.join(format!("{:020}.json", c + 1))).unwrap());
        for n in c * ADDS_PER_COMMIT..((c + 1) * ADDS_PER_COMMIT).min(files) {
            writeln!(out, "{}", add(n)).unwrap();
        }
        let info =
            serde_json::json!({"commitInfo": {"timestamp": 1_700_000_000_000u64 + c as u64, "operation": "WRITE"}});
        writeln!(out, "{info}").unwrap();
    }
    // A compaction's tombstones, recent enough that the checkpoint keeps them.
    let removed_at = chrono::Utc::now().timestamp_millis() as u64 - 3_600_000;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(log.join(format!("{:020}.json", commits + 1))).unwrap());
    for n in 0..files / 10 {
        writeln!(out, "{}", remove(n, removed_at)).unwrap();
    }
    let info = serde_json::json!({"commitInfo": {"timestamp": removed_at, "operation": "OPTIMIZE"}});
    writeln!(out, "{info}").unwrap();
    drop(out);
    let url = url::Url::from_directory_path(dir).unwrap();
    let table = sediment::deltalake::open_table(url).await.unwrap();
    sediment::deltalake::checkpoints::create_checkpoint(&table, None).await.unwrap();
    println!("checkpoint written at version {}", commits + 1);
}

fn run_one(mode: &str, dir: &Path) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let figure = runtime.block_on(async {
        let uri = dir.to_string_lossy().to_string();
        match mode {
            "delta-rs-load" => {
                let table = sediment::deltalake::open_table(url::Url::from_directory_path(dir).unwrap()).await.unwrap();
                table.snapshot().unwrap().log_data().num_files() as u64
            }
            "sediment-info" => {
                let view = LogView::open(&uri, &OpenOptions::new()).await.unwrap().expect("a log the view reads");
                view.info().files as u64
            }
            "sediment-plan" => {
                let view = LogView::open(&uri, &OpenOptions::new()).await.unwrap().expect("a log the view reads");
                let plan = view.compaction_plan(&CompactOptions::default()).unwrap();
                plan.partitions.iter().map(|p| p.bins.len()).sum::<usize>() as u64
            }
            "sediment-vacuum" => {
                let mut view = LogView::open(&uri, &OpenOptions::new()).await.unwrap().expect("a log the view reads");
                view.vacuum_plan(vacuum_options()).await.unwrap().files.len() as u64
            }
            "snapshot-vacuum" => {
                let mut table = Table::open(&uri).await.unwrap();
                table.vacuum(vacuum_options().dry_run(true)).await.unwrap().files.len() as u64
            }
            "snapshot-plan" => {
                let table = Table::open(&uri).await.unwrap();
                let plan = table.compaction_plan(&CompactOptions::default()).unwrap();
                plan.partitions.iter().map(|p| p.bins.len()).sum::<usize>() as u64
            }
            other => panic!("unknown mode {other}"),
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let (cpu, peak_rss) = rusage();
    serde_json::json!({"mode": mode, "wall_s": wall, "cpu_s": cpu, "peak_rss": peak_rss, "figure": figure})
}

/// A lite vacuum with no retention: every tombstone is due.
fn vacuum_options() -> VacuumOptions {
    VacuumOptions::default().retain(chrono::Duration::zero()).retention_check(false)
}

fn main() {
    if let Some(mode) = arg("--run-one") {
        let dir = PathBuf::from(arg("--dir").unwrap());
        println!("{}", run_one(&mode, &dir));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let files: usize = arg("--files").map(|v| v.parse().unwrap()).unwrap_or(300_000);
    let rounds: usize = arg("--rounds").map(|v| v.parse().unwrap()).unwrap_or(3);
    let base = PathBuf::from(arg("--work-dir").unwrap_or_else(|| "target/planning-bench".into()));
    let dir = base.join(format!("log-{files}-tombstones"));
    tokio::runtime::Runtime::new().unwrap().block_on(prepare(&dir, files));

    let modes =
        ["delta-rs-load", "snapshot-plan", "sediment-info", "sediment-plan", "snapshot-vacuum", "sediment-vacuum"];
    let mut runs: Vec<Vec<serde_json::Value>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--run-one", mode, "--dir", dir.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{mode} failed: {}", String::from_utf8_lossy(&out.stderr));
            let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
            runs[m].push(serde_json::from_str(&line).unwrap());
        }
    }
    let get = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    let medians: Vec<serde_json::Value> = runs
        .into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| get(a, "wall_s").total_cmp(&get(b, "wall_s")));
            r[r.len() / 2].clone()
        })
        .collect();
    println!("\n{files} files in the log; {rounds} rounds, each row the run with the median wall time\n");
    println!(
        "| {:<15} | {:>8} | {:>8} | {:>13} | {:>12} | {:>10} | {:>9} |",
        "run", "wall s", "cpu s", "peak RSS MiB", "wall/delta", "RSS/delta", "figure"
    );
    println!("|{}|", [17, 10, 10, 15, 14, 12, 11].map(|w| "-".repeat(w)).join("|"));
    let delta = medians[0].clone();
    for r in &medians {
        println!(
            "| {:<15} | {:>8.2} | {:>8.2} | {:>13} | {:>12.2} | {:>10.2} | {:>9} |",
            r["mode"].as_str().unwrap(),
            get(r, "wall_s"),
            get(r, "cpu_s"),
            mib(get(r, "peak_rss")),
            get(r, "wall_s") / get(&delta, "wall_s"),
            get(r, "peak_rss") / get(&delta, "peak_rss"),
            r["figure"],
        );
    }
    println!("\nfigure: files loaded (delta-rs), files counted (info), bins planned (plan), files to delete (vacuum)");
    let figure = |m: usize| medians[m]["figure"].clone();
    println!("same plan from the log view as from the snapshot: {}", figure(1) == figure(3));
    println!("same vacuum from the log view as from the snapshot: {}", figure(4) == figure(5));
}
