//! Benchmark W1: compaction of a fragmented bronze table, Sediment against delta-rs.
//!
//! The table: ~10M event rows (event id, user id, event type, UTC timestamp, amount,
//! a short payload) partitioned by date over 10 days, written as 2,000 appends of
//! 5,000 rows. On identical copies, each in its own process so peak RSS is its own:
//! - `sediment`: `Table::compact` with default settings;
//! - `delta-rs`: `optimize` (compact) with the same target size, on a table opened
//!   by delta-rs's own builder (`common::delta_open`);
//! - `floor`: one plain arrow-rs pass that reads every file and writes each
//!   partition once with the same writer settings (zstd 3, dictionary encoding per
//!   column chosen from the first batch), no commit.
//!
//! - `delta-rs-16`: the same with its `max_concurrent_tasks` raised to 16.
//!
//! With `--latency-ms 0,10,30,60` each run instead reads and writes its copy of the
//! table through a store that adds a fixed wait per request (as S3's time to first
//! byte; `common::LatencyStore` over the local file system), one set of rounds per
//! latency, and the figures include the requests each engine made and the most it
//! had in flight (counted by a store both engines go through). The floor runs only on local disk.
//!
//! Run (release):
//!   cargo bench -p sediment-integration-tests --bench w1_compaction -- [--appends N] [--rows N] [--work-dir DIR] [--rounds N] [--latency-ms L,...]
//!
//! It prints a table of wall time, CPU time, peak RSS, files and bytes out, and the
//! ratios to delta-rs and to the floor. Nothing here is a pass/fail test.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sediment::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use sediment::arrow::datatypes::SchemaRef;
use sediment::deltalake::parquet::arrow::ArrowWriter;
use sediment::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sediment::{OpenOptions, Table, WriteOptions};

mod common;
use common::{arg, mib, perf_control, rss_now, run_rounds, rusage};

const DAYS: i64 = 10;
const FIRST_DAY: i32 = 19844; // 2024-05-01
const TARGET: u64 = 128 * 1024 * 1024;

/// The demo's bronze events schema: event id, user id, type, UTC timestamp, amount,
/// payload, and the `event_date` partition column.
fn schema() -> SchemaRef {
    sediment::demo::events_schema()
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `rows` events; an append carries the day it arrived (one day per 1/10 of appends,
/// as a streaming bronze writer would), with ids `start..start + rows`.
fn events(start: i64, rows: usize, day: i64) -> RecordBatch {
    const TYPES: &[&str] = &["view", "click", "add_to_cart", "purchase", "refund"];
    let ids: Vec<i64> = (start..start + rows as i64).collect();
    let h = |id: i64, salt: u64| splitmix(id as u64 ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|id| (h(*id, 1) % 1_000_000) as i64))),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|id| TYPES[(h(*id, 2) % 5) as usize]))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                ids.iter().map(|id| ((FIRST_DAY as i64 + day) * 86_400 + (h(*id, 3) % 86_400) as i64) * 1_000_000),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter(
            ids.iter().map(|id| (h(*id, 4) % 3 != 0).then(|| (h(*id, 5) % 100_000) as f64 / 100.0)),
        )),
        Arc::new(StringArray::from_iter(ids.iter().map(|id| {
            (h(*id, 6) % 4 != 0).then(|| format!("{{\"s\":{},\"p\":\"/p/{}\"}}", h(*id, 7) % 100_000, h(*id, 8) % 500))
        }))),
        Arc::new(Date32Array::from_iter_values(ids.iter().map(|_| FIRST_DAY + day as i32))),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns match")
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("_delta_log") {
            out.extend(data_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

/// The files and bytes the latest version of `uri` references.
async fn live_files(uri: &str, open: &OpenOptions) -> (usize, u64) {
    let table = Table::open_with(uri, open.clone()).await.unwrap();
    let files = table.files().unwrap();
    (files.len(), files.iter().map(|f| f.size).sum())
}

async fn run_one(mode: &str, dir: &Path, latency_ms: Option<u64>) -> serde_json::Value {
    // With a latency, the local copy is read through the latency store; otherwise directly.
    let (uri, open, counter, store) = match latency_ms {
        Some(ms) => {
            let (store, counter) = common::latency_store(dir, ms).await;
            (
                "memory://w1-latency/".to_string(),
                OpenOptions::new().object_store(store.clone()),
                Some(counter),
                Some(store),
            )
        }
        None => (dir.to_string_lossy().to_string(), OpenOptions::new(), None, None),
    };
    let base_rss = rss_now();
    let (cpu_before, _) = rusage();
    perf_control("enable");
    let started = Instant::now();
    // The table's files after the run are listed outside the timed section.
    let floor_out = match mode {
        "sediment" => {
            let mut table = Table::open_with(&uri, open.clone()).await.unwrap();
            let report = table.compact(sediment::CompactOptions::default().target_file_size(TARGET)).await.unwrap();
            assert!(report.abandoned.is_empty());
            None
        }
        "delta-rs" | "delta-rs-16" => {
            let table = common::delta_open(&uri, store.clone()).await;
            let mut optimize = table
                .optimize()
                .with_type(sediment::deltalake::operations::optimize::OptimizeType::Compact)
                .with_target_size(NonZeroU64::new(TARGET).unwrap());
            if mode == "delta-rs-16" {
                optimize = optimize.with_max_concurrent_tasks(16);
            }
            optimize.await.unwrap();
            None
        }
        "floor" => {
            let out_dir = dir.join("floor-out");
            let mut by_partition: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
            for file in data_files(dir) {
                let partition = file.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
                by_partition.entry(partition).or_default().push(file);
            }
            let mut bytes = 0;
            let files = by_partition.len();
            std::fs::create_dir_all(&out_dir).unwrap();
            for (partition, inputs) in by_partition {
                let out = out_dir.join(format!("{partition}.parquet"));
                let mut writer: Option<ArrowWriter<std::fs::File>> = None;
                for input in inputs {
                    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&input).unwrap())
                        .unwrap()
                        .with_batch_size(8192)
                        .build()
                        .unwrap();
                    for batch in reader {
                        let batch = batch.unwrap();
                        let w = writer.get_or_insert_with(|| {
                            ArrowWriter::try_new(
                                std::fs::File::create(&out).unwrap(),
                                batch.schema(),
                                Some(sediment::writer_properties_for(TARGET, &batch)),
                            )
                            .unwrap()
                        });
                        w.write(&batch).unwrap();
                    }
                }
                if let Some(w) = writer {
                    w.close().unwrap();
                }
                bytes += std::fs::metadata(&out).unwrap().len();
            }
            Some((files, bytes))
        }
        other => panic!("unknown mode {other}"),
    };
    let wall = started.elapsed().as_secs_f64();
    perf_control("disable");
    let (cpu, peak_rss) = rusage();
    // The timed section's CPU, not the setup's.
    let cpu = cpu - cpu_before;
    let io = counter.map(|c| c.report()).unwrap_or_default();
    let (files_out, bytes_out) = match floor_out {
        Some(out) => out,
        None => live_files(&uri, &open).await,
    };
    serde_json::json!({"mode": mode, "wall_s": wall, "cpu_s": cpu, "peak_rss": peak_rss, "base_rss": base_rss,
        "files_out": files_out, "bytes_out": bytes_out, "requests": io.requests, "peak_in_flight": io.peak_in_flight})
}

async fn prepare(dir: &Path, appends: usize, rows: usize, small: usize) {
    if dir.join("_delta_log").exists() {
        println!("reusing the W1 table at {}", dir.display());
        return;
    }
    println!("writing W1: {appends} appends of {rows} rows over {DAYS} days into {}", dir.display());
    let uri = dir.to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let started = Instant::now();
    for i in 0..appends {
        let day = (i as i64 * DAYS) / appends as i64;
        table
            .write([events((i * rows) as i64, rows, day)], WriteOptions::append().partition_by(["event_date"]))
            .await
            .unwrap();
        if (i + 1) % 200 == 0 {
            println!("  {} appends in {:.0} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    // Then small appends of 5,000 rows, spread over the days like the others.
    let first = appends * rows;
    for i in 0..small {
        let day = (i as i64 * DAYS) / small as i64;
        let batch = events((first + i * 5_000) as i64, 5_000, day);
        table.write([batch], WriteOptions::append().partition_by(["event_date"])).await.unwrap();
    }
}

#[tokio::main]
async fn main() {
    // Child process: run one mode on one copy and print its figures.
    if let (Some(mode), Some(dir)) = (arg("--run-one"), arg("--dir")) {
        let latency = arg("--latency").map(|v| v.parse().unwrap());
        let figures = run_one(&mode, Path::new(&dir), latency).await;
        println!("{figures}");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let appends: usize = arg("--appends").map(|v| v.parse().unwrap()).unwrap_or(2_000);
    let rows: usize = arg("--rows").map(|v| v.parse().unwrap()).unwrap_or(5_000);
    // Small appends after the others (mixed bins: large row groups beside small ones).
    let small: usize = arg("--small-appends").map(|v| v.parse().unwrap()).unwrap_or(0);
    let base = PathBuf::from(arg("--work-dir").unwrap_or_else(|| "target/w1-bench".into()));
    let name = if small > 0 { format!("w1-{appends}x{rows}+{small}") } else { format!("w1-{appends}x{rows}") };
    let source = base.join(name);
    prepare(&source, appends, rows, small).await;
    let (files_in, bytes_in) = live_files(&source.to_string_lossy(), &OpenOptions::new()).await;
    println!("W1: {files_in} files, {} MiB, {} rows\n", mib(bytes_in as f64), appends * rows + small * 5_000);

    let rounds: usize = arg("--rounds").map(|v| v.parse().unwrap()).unwrap_or(3);
    let latencies = common::latencies();
    println!("{rounds} rounds, modes interleaved; each row is the run with the median wall time\n");
    println!(
        "| {:<11} | {:>7} | {:>8} | {:>11} | {:>8} | {:>8} | {:>9} | {:>13} | {:>9} | {:>8} | {:>12} | {:>12} | {:>11} |",
        "run",
        "latency",
        "wall s",
        "wall range",
        "cpu s",
        "requests",
        "in flight",
        "peak RSS MiB",
        "files out",
        "MiB out",
        "wall/delta",
        "RSS/delta",
        "wall/floor"
    );
    println!("|{}|", [13, 9, 10, 13, 10, 10, 11, 15, 11, 10, 14, 14, 13].map(|w| "-".repeat(w)).join("|"));
    let get = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    for latency in latencies {
        let modes: &[&str] = match latency {
            None => &["sediment", "delta-rs", "delta-rs-16", "floor"],
            Some(_) => &["sediment", "delta-rs", "delta-rs-16"],
        };
        let extra: Vec<String> = latency.map(|ms| vec!["--latency".to_string(), ms.to_string()]).unwrap_or_default();
        let results = run_rounds(&source, &base, modes, rounds, &extra, |_, _, _, _| {});
        // Ratios against the faster of delta-rs's two rows.
        let delta = common::fastest_delta(&results);
        let floor = results.iter().find(|r| r["mode"] == "floor").cloned();
        for r in &results {
            println!(
                "| {:<11} | {:>7} | {:>8.2} | {:>11} | {:>8.2} | {:>8} | {:>9} | {:>13} | {:>9} | {:>8} | {:>12.2} | {:>12.2} | {:>11} |",
                r["mode"].as_str().unwrap(),
                latency.map_or("disk".to_string(), |ms| format!("{ms} ms")),
                get(r, "wall_s"),
                format!("{:.2}-{:.2}", get(r, "wall_min_s"), get(r, "wall_max_s")),
                get(r, "cpu_s"),
                if latency.is_some() { r["requests"].to_string() } else { "-".into() },
                if latency.is_some() { r["peak_in_flight"].to_string() } else { "-".into() },
                mib(get(r, "peak_rss")),
                r["files_out"].as_u64().unwrap_or(0),
                mib(get(r, "bytes_out")),
                get(r, "wall_s") / get(&delta, "wall_s"),
                get(r, "peak_rss") / get(&delta, "peak_rss"),
                floor.as_ref().map_or("-".to_string(), |f| format!("{:.2}", get(r, "wall_s") / get(f, "wall_s"))),
            );
        }
    }
}
