//! Benchmarks W2 (upsert into a silver table) and W3 (point lookup), Sediment against
//! delta-rs.
//!
//! W2's table: a silver `orders` table of ~10M rows (order id, customer id, status,
//! amount, updated_at), partitioned by order date over 100 days, one file per
//! partition; order ids grow with the date, as an auto-increment key does. The
//! source: 100k rows, 90% updates to orders of the 3 newest days, 10% new orders.
//! On identical copies, each in its own process so peak RSS is its own:
//! - `sediment`: an upsert (`Table::merge` on `order_id`, update all, insert the rest;
//!   `--source-memory-limit BYTES` spills the source and merges it in key ranges);
//! - `delta-rs`: `merge` with `t.order_id = s.order_id`, update all when matched,
//!   insert all when not matched (what a user writes), on a table opened by
//!   delta-rs's own builder (`common::delta_open`: no Sediment code under it).
//!
//! - `pipeline`: the same upsert as a Sediment pipeline (`sediment::pipeline::run`, an
//!   upsert pipeline on `order_id` with a `not_null` rule) from a bronze table holding
//!   the 100k change events (written in 10 appends before the timed section): it reads
//!   the bronze increment, checks the rule, deduplicates, merges and records its
//!   `txn` and lineage. Local disk only. Its goal: at most 1.2 times the direct merge's
//!   wall time and peak RSS (`wall/sediment`, `RSS/sediment` in the table).
//!
//! - `floor`: the lower bound of copy-on-write: decode the 3 files holding the
//!   updated orders and encode them once with the same writer settings,
//!   sequentially, without a join or a commit.
//!
//! Both merge results are then checked to hold the same rows (count and an
//! order-independent checksum of every row).
//!
//! W3: a point lookup by order id and date, and by order id alone, on the merged
//! table: files opened against files in the table.
//!
//! - `delta-rs-16`: the same with DataFusion's target partitions raised to 16.
//!
//! With `--latency-ms 0,10,30,60` each run instead works on its copy of the table
//! through a store that adds a fixed wait per request (`common::LatencyStore` over
//! the local file system), one set of rounds per latency; the figures then include
//! the requests each engine made and the most it had in flight, and each run checks
//! its own result (the floor runs only on local disk).
//!
//! Run (release):
//!   cargo bench -p sediment-integration-tests --bench w2_merge -- [--rows-per-day N] [--work-dir DIR] [--rounds N] [--deletion-vectors] [--latency-ms L,...]
//!
//! With `--deletion-vectors` the table is created with `delta.enableDeletionVectors =
//! true`: Sediment then marks the updated rows with deletion vectors instead of
//! rewriting the 3 files; delta-rs rewrites them as before.
//!
//! Memory columns: `peak RSS` is the process's high-water mark; `RSS at start` its
//! resident memory when the timed section starts (binary, runtime, the source's
//! batches and a first look at the table, alike for every mode); `growth/delta` is
//! (peak - start) over delta-rs's, the memory the merge itself added. CPU is the
//! timed section's. Set `PERF_CTL_FIFO` to profile only the timed section (see
//! `common::perf_control`); set `BENCH_STOP_AFTER_TIMED` to end a `--run-one` child
//! right after the timed section (for heap profilers, whose peak would otherwise be
//! the result check's).
//!
//! It prints tables of figures; nothing here is a pass/fail test.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sediment::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use sediment::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sediment::arrow::row::{RowConverter, SortField};
use sediment::deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use sediment::{OpenOptions, Table, WriteOptions};

mod common;
use common::{arg, mib, perf_control, rss_now, run_rounds, rusage};

const DAYS: i64 = 100;
const FIRST_DAY: i32 = 19844; // 2024-05-01
const STATUSES: &[&str] = &["placed", "paid", "shipped", "delivered", "returned"];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("updated_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("order_date", DataType::Date32, false),
    ]))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn h(id: i64, salt: u64) -> u64 {
    splitmix(id as u64 ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Orders `ids` placed on `day`; `version` 0 is the original row, 1 an update.
fn orders(ids: &[i64], day: i64, version: u64) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|id| (h(*id, 1) % 1_000_000) as i64))),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|id| STATUSES[((h(*id, 2) + version) % 5) as usize]))),
        Arc::new(Float64Array::from_iter_values(
            ids.iter().map(|id| (h(*id, 3) % 100_000) as f64 / 100.0 + version as f64),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(ids.iter().map(|id| {
                ((FIRST_DAY as i64 + day) * 86_400 + (h(*id, 4) % 86_400) as i64 + version as i64 * 86_400) * 1_000_000
            }))
            .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from_iter_values(ids.iter().map(|_| FIRST_DAY + day as i32))),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns match")
}

/// The W2 source: ~90% updates to orders of the 3 newest days, ~10% new orders.
fn source(rows_per_day: i64) -> Vec<RecordBatch> {
    let total = rows_per_day; // the source is 1% of a 100-day table: one day's worth
    let updates = total * 9 / 10;
    let mut batches = Vec::new();
    let newest = DAYS - 3..DAYS;
    let per_day = updates / 3;
    for day in newest {
        // A spread-out sample of the day's orders.
        let step = rows_per_day / per_day.max(1);
        let ids: Vec<i64> =
            (0..per_day).map(|i| day * rows_per_day + i * step + (h(i, 9) % step.max(1) as u64) as i64).collect();
        batches.push(orders(&ids, day, 1));
    }
    let new_ids: Vec<i64> = (0..total - updates).map(|i| DAYS * rows_per_day + i).collect();
    batches.push(orders(&new_ids, DAYS - 1, 0));
    batches
}

async fn run_one(
    mode: &str,
    dir: &Path,
    rows_per_day: i64,
    source_limit: Option<usize>,
    latency_ms: Option<u64>,
) -> serde_json::Value {
    // With a latency, the local copy is read through the latency store; otherwise directly.
    let (uri, open, counter, store) = match latency_ms {
        Some(ms) => {
            let (store, counter) = common::latency_store(dir, ms).await;
            (
                "memory://w2-latency/".to_string(),
                OpenOptions::new().object_store(store.clone()),
                Some(counter),
                Some(store),
            )
        }
        None => (dir.to_string_lossy().to_string(), OpenOptions::new(), None, None),
    };
    let before: HashSet<String> =
        Table::open_with(&uri, open.clone()).await.unwrap().files().unwrap().into_iter().map(|f| f.path).collect();
    // The pipeline reads its events from the bronze table (made by the parent process,
    // as a user's bronze table is there before the pipeline runs); the others get them
    // in memory.
    let batches = if mode == "pipeline" { Vec::new() } else { source(rows_per_day) };
    let base_rss = rss_now();
    let (cpu_before, _) = rusage();
    perf_control("enable");
    let started = Instant::now();
    match mode {
        "sediment" => {
            let mut table = Table::open_with(&uri, open.clone()).await.unwrap();
            let report = table
                .merge(batches)
                .on(["order_id"])
                .when_matched(sediment::MatchedAction::UpdateAll)
                .when_not_matched_insert_all()
                .source_memory_limit(source_limit.or(Some(sediment::DEFAULT_SOURCE_MEMORY_LIMIT)))
                .execute()
                .await
                .unwrap();
            eprintln!("{}", serde_json::to_string(&report).unwrap());
        }
        "delta-rs" | "delta-rs-16" => {
            let table = common::delta_open(&uri, store.clone()).await;
            let ctx = if mode == "delta-rs-16" {
                SessionContext::new_with_config(SessionConfig::new().with_target_partitions(16))
            } else {
                SessionContext::new()
            };
            let frame = ctx.read_batches(batches).unwrap();
            let columns: Vec<String> = schema().fields().iter().map(|f| f.name().clone()).collect();
            let cols = columns.clone();
            table
                .merge(frame, "t.order_id = s.order_id")
                .with_session_state(Arc::new(ctx.state()))
                .with_source_alias("s")
                .with_target_alias("t")
                .when_matched_update(|u| cols.iter().fold(u, |u, c| u.update(c.as_str(), format!("s.{c}"))))
                .unwrap()
                .when_not_matched_insert(|i| columns.iter().fold(i, |i, c| i.set(c.as_str(), format!("s.{c}"))))
                .unwrap()
                .await
                .unwrap();
        }
        "pipeline" => {
            let spec: sediment::pipeline::PipelineSpec = serde_json::from_value(serde_json::json!({
                "name": "w2_orders", "type": "upsert", "source": "bronze.order_events", "target": "silver.orders",
                "keys": ["order_id"],
                "rules": [{ "check": "not_null", "column": "order_id", "action": "warn" }],
            }))
            .unwrap();
            spec.validate().unwrap();
            let bronze_dir = arg("--bronze").expect("the pipeline mode reads --bronze");
            let bronze = Table::open(&bronze_dir).await.unwrap();
            let mut target = Table::open_with(&uri, open.clone()).await.unwrap();
            let sources = [sediment::pipeline::SourceTable { name: "bronze.order_events", table: &bronze }];
            let outputs = sediment::pipeline::Outputs { target: &mut target, quarantine: None, tombstones: None };
            let report = sediment::pipeline::run(&spec, &sources, outputs, &Default::default()).await.unwrap();
            let events: u64 = bronze.files().unwrap().iter().map(|f| f.rows.unwrap()).sum();
            assert_eq!(report.rows_read, events, "{report:?}");
            assert!(report.committed, "{report:?}");
            eprintln!("{}", serde_json::to_string(&report.phases).unwrap());
        }
        "floor" => {
            // Copy-on-write's lower bound: decode the files holding the updated orders
            // (the 3 newest days) and encode them once, sequentially, no join, no commit.
            let table = Table::open(&uri).await.unwrap();
            let newest: Vec<_> = table
                .files()
                .unwrap()
                .into_iter()
                .filter(|f| {
                    f.partition_values.values().flatten().any(|d| {
                        (DAYS - 3..DAYS).any(|day| {
                            let date = sediment::arrow::util::display::array_value_to_string(
                                &Date32Array::from(vec![FIRST_DAY + day as i32]),
                                0,
                            )
                            .unwrap();
                            *d == date
                        })
                    })
                })
                .collect();
            for (i, file) in newest.iter().enumerate() {
                let input = std::fs::File::open(dir.join(&file.path)).unwrap();
                let reader =
                    sediment::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(input)
                        .unwrap()
                        .build()
                        .unwrap();
                let mut writer = None;
                for batch in reader {
                    let batch = batch.unwrap();
                    let w = writer.get_or_insert_with(|| {
                        sediment::deltalake::parquet::arrow::ArrowWriter::try_new(
                            std::fs::File::create(dir.join(format!("floor-{i}.parquet"))).unwrap(),
                            batch.schema(),
                            Some(sediment::writer_properties_for(sediment::DEFAULT_TARGET_FILE_SIZE, &batch)),
                        )
                        .unwrap()
                    });
                    w.write(&batch).unwrap();
                }
                writer.unwrap().close().unwrap();
            }
            assert_eq!(newest.len(), 3, "one file per day");
        }
        other => panic!("unknown mode {other}"),
    }
    let wall = started.elapsed().as_secs_f64();
    perf_control("disable");
    let (cpu, peak_rss) = rusage();
    let cpu = cpu - cpu_before;
    if std::env::var_os("BENCH_STOP_AFTER_TIMED").is_some() {
        // For heap profilers: end before the checks, whose reads would set the peak.
        println!(
            "{}",
            serde_json::json!({ "mode": mode, "wall_s": wall, "cpu_s": cpu, "peak_rss": peak_rss, "base_rss": base_rss })
        );
        std::process::exit(0);
    }
    let io = counter.map(|c| c.report()).unwrap_or_default();
    let after = Table::open_with(&uri, open.clone()).await.unwrap().files().unwrap();
    let after_paths: HashSet<&str> = after.iter().map(|f| f.path.as_str()).collect();
    let added: Vec<_> = after.iter().filter(|f| !before.contains(&f.path)).collect();
    let removed = before.iter().filter(|p| !after_paths.contains(p.as_str())).count();
    serde_json::json!({
        "mode": mode, "wall_s": wall, "cpu_s": cpu, "peak_rss": peak_rss, "base_rss": base_rss,
        "files_removed": removed, "files_added": added.len(),
        "bytes_written": added.iter().map(|f| f.size).sum::<u64>(),
        "requests": io.requests, "peak_in_flight": io.peak_in_flight,
        // Each run checks its own result through the store it wrote with.
        "checksum": if latency_ms.is_some() && mode != "floor" { Some(checksum(&uri, &open).await) } else { None },
    })
}

/// Row count and an order-independent checksum of every row of the table at `uri`.
async fn checksum(uri: &str, open: &OpenOptions) -> (u64, u64) {
    let table = Table::open_with(uri, open.clone()).await.unwrap();
    let (batches, _) = table.scan().execute().await.unwrap().collect().await.unwrap();
    let (mut rows, mut sum) = (0u64, 0u64);
    for batch in batches {
        let fields = batch.schema().fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let converter = RowConverter::new(fields).unwrap();
        let encoded = converter.convert_columns(batch.columns()).unwrap();
        for row in encoded.iter() {
            let mut hasher = DefaultHasher::new();
            row.as_ref().hash(&mut hasher);
            sum = sum.wrapping_add(hasher.finish());
            rows += 1;
        }
    }
    (rows, sum)
}

async fn prepare(dir: &Path, rows_per_day: i64, deletion_vectors: bool) {
    if dir.join("_delta_log").exists() {
        println!("reusing the W2 table at {}", dir.display());
        return;
    }
    println!("writing W2: {DAYS} days of {rows_per_day} orders into {}", dir.display());
    let uri = dir.to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for day in 0..DAYS {
        let ids: Vec<i64> = (day * rows_per_day..(day + 1) * rows_per_day).collect();
        let mut options = WriteOptions::append().partition_by(["order_date"]);
        if deletion_vectors {
            options = options.table_property("delta.enableDeletionVectors", "true");
        }
        table.write([orders(&ids, day, 0)], options).await.unwrap();
    }
}

async fn lookups(uri: &str, rows_per_day: i64) {
    let table = Table::open(uri).await.unwrap();
    let id = (DAYS - 2) * rows_per_day + 12_345 % rows_per_day;
    let date = sediment::arrow::util::display::array_value_to_string(
        &Date32Array::from(vec![FIRST_DAY + (DAYS - 2) as i32]),
        0,
    )
    .unwrap();
    println!("\nW3: point lookups on the merged table (Sediment scan)\n");
    println!("| {:<38} | {:>10} | {:>12} | {:>11} | {:>9} |", "filter", "files", "files opened", "bytes read", "rows");
    println!("|{}|", ["-".repeat(40), "-".repeat(12), "-".repeat(14), "-".repeat(13), "-".repeat(11)].join("|"));
    for filter in [format!("order_id = {id} AND order_date = '{date}'"), format!("order_id = {id}")] {
        let (_, report) = table.scan().filter(filter.clone()).execute().await.unwrap().collect().await.unwrap();
        println!(
            "| {:<38} | {:>10} | {:>12} | {:>11} | {:>9} |",
            filter,
            report.files_in_snapshot,
            report.files_after_stats_skipping,
            report.bytes_read,
            report.rows_returned
        );
    }
}

/// Run `future` to completion from inside the runtime (the round callbacks are sync).
/// The W2 source as a bronze table of 10 appends (made again on each run of the
/// benchmark: a pipeline run never changes it).
async fn prepare_bronze(dir: &Path, rows_per_day: i64) {
    let _ = std::fs::remove_dir_all(dir);
    let mut bronze = Table::open_or_new(&dir.to_string_lossy(), Default::default()).await.unwrap();
    let all = sediment::arrow::compute::concat_batches(&schema(), &source(rows_per_day)).unwrap();
    let chunk = all.num_rows().div_ceil(10);
    for start in (0..all.num_rows()).step_by(chunk) {
        let part = all.slice(start, chunk.min(all.num_rows() - start));
        bronze.write([part], WriteOptions::append()).await.unwrap();
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::main]
async fn main() {
    let rows_per_day: i64 = arg("--rows-per-day").map(|v| v.parse().unwrap()).unwrap_or(100_000);
    // Sediment's source memory limit in bytes (a small one spills the source and
    // merges it in key ranges).
    let source_limit: Option<usize> = arg("--source-memory-limit").map(|v| v.parse().unwrap());
    // Child process: run one mode on one copy and print its figures.
    if let (Some(mode), Some(dir)) = (arg("--run-one"), arg("--dir")) {
        let latency = arg("--latency").map(|v| v.parse().unwrap());
        let figures = run_one(&mode, Path::new(&dir), rows_per_day, source_limit, latency).await;
        println!("{figures}");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = PathBuf::from(arg("--work-dir").unwrap_or_else(|| "target/w2-bench".into()));
    let deletion_vectors = std::env::args().any(|a| a == "--deletion-vectors");
    let table_dir = base.join(format!("w2-{}{rows_per_day}", if deletion_vectors { "dv-" } else { "" }));
    prepare(&table_dir, rows_per_day, deletion_vectors).await;
    if deletion_vectors {
        println!("deletion vectors enabled on the table (delta.enableDeletionVectors = true)");
    }
    let files = Table::open(&table_dir.to_string_lossy()).await.unwrap().files().unwrap();
    println!(
        "W2: {} files, {} MiB, {} rows; source {} rows\n",
        files.len(),
        mib(files.iter().map(|f| f.size).sum::<u64>() as f64),
        DAYS * rows_per_day,
        rows_per_day
    );

    let rounds: usize = arg("--rounds").map(|v| v.parse().unwrap()).unwrap_or(3);
    let latencies = common::latencies();
    // The pipeline's bronze table: the same change events, landed in 10 appends.
    let bronze_dir = base.join(format!("w2-bronze-{rows_per_day}"));
    prepare_bronze(&bronze_dir, rows_per_day).await;
    let mut base_extra = vec![
        "--rows-per-day".to_string(),
        rows_per_day.to_string(),
        "--bronze".to_string(),
        bronze_dir.to_string_lossy().to_string(),
    ];
    if let Some(limit) = source_limit {
        println!("sediment's source memory limit: {limit} bytes (the source is spilled and merged in key ranges)");
        base_extra.extend(["--source-memory-limit".to_string(), limit.to_string()]);
    }
    let mut lookups_done = false;
    let mut tables = Vec::new();
    for latency in latencies {
        let modes: &[&str] = match latency {
            None => &["sediment", "pipeline", "delta-rs", "delta-rs-16", "floor"],
            Some(_) => &["sediment", "delta-rs", "delta-rs-16"],
        };
        let mut extra = base_extra.clone();
        if let Some(ms) = latency {
            extra.extend(["--latency".to_string(), ms.to_string()]);
        }
        let mut sums: Vec<(String, (u64, u64))> = Vec::new();
        let mut phases = Vec::new();
        let mut pipeline_phases: Vec<String> = Vec::new();
        let results = run_rounds(&table_dir, &base, modes, rounds, &extra, |mode, round, copy, figures| {
            let uri = copy.to_string_lossy().to_string();
            if round == 0 && mode != "floor" {
                let sum = match figures["checksum"].as_array() {
                    Some(pair) => (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap()),
                    None => block_on(checksum(&uri, &OpenOptions::new())),
                };
                sums.push((mode.to_string(), sum));
            }
            if mode == "pipeline" {
                pipeline_phases.push(figures["stderr"].as_str().unwrap_or("").lines().last().unwrap_or("").to_string());
            }
            if mode == "sediment" {
                let report: serde_json::Value =
                    serde_json::from_str(figures["stderr"].as_str().unwrap_or("{}")).unwrap_or_default();
                phases.push(report["phases"].to_string());
                if !lookups_done && latency.is_none() {
                    block_on(lookups(&uri, rows_per_day));
                    lookups_done = true;
                }
            }
        });
        let label = latency.map_or("local disk".to_string(), |ms| format!("{ms} ms per request"));
        let mut out = format!("\nW2 on {label}: sediment's phases (ms) per round: {}\n", phases.join(" "));
        if !pipeline_phases.is_empty() {
            out += &format!("the pipeline's phases (ms) per round: {}\n", pipeline_phases.join(" "));
        }
        out += &format!("{rounds} rounds, modes interleaved; each row is the run with the median wall time\n\n");
        out += &table(&results, latency.is_some());
        let same = sums.windows(2).all(|w| w[0].1 == w[1].1);
        let described: Vec<String> =
            sums.iter().map(|(m, (rows, sum))| format!("{m} {rows} rows, checksum {sum:016x}")).collect();
        out += &format!("\nsame rows: {same} ({})\n", described.join("; "));
        println!("{out}");
        tables.push(out);
    }
    if tables.len() > 1 {
        println!("\n== all latencies\n{}", tables.join(""));
    }
}

/// The figures of one set of rounds as a Markdown table; ratios against the faster of
/// delta-rs's two rows.
fn table(results: &[serde_json::Value], latency: bool) -> String {
    let get = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    let delta = common::fastest_delta(results);
    let mut out = format!(
        "| {:<11} | {:>8} | {:>11} | {:>8} | {:>8} | {:>9} | {:>13} | {:>12} | {:>13} | {:>11} | {:>12} | {:>10} | {:>9} | {:>12} | {:>13} | {:>12} |\n",
        "run",
        "wall s",
        "wall range",
        "cpu s",
        "requests",
        "in flight",
        "peak RSS MiB",
        "RSS at start",
        "files removed",
        "files added",
        "MiB written",
        "wall/delta",
        "RSS/delta",
        "growth/delta",
        "wall/sediment",
        "RSS/sediment"
    );
    out += &format!(
        "|{}|\n",
        [13, 10, 13, 10, 10, 11, 15, 14, 15, 13, 14, 12, 11, 14, 15, 14].map(|n| "-".repeat(n)).join("|")
    );
    let direct = results.iter().find(|r| r["mode"] == "sediment").cloned().unwrap_or_default();
    for r in results {
        let io = |k: &str| if latency { r[k].to_string() } else { "-".to_string() };
        out += &format!(
            "| {:<11} | {:>8.2} | {:>11} | {:>8.2} | {:>8} | {:>9} | {:>13} | {:>12} | {:>13} | {:>11} | {:>12} | {:>10.2} | {:>9.2} | {:>12.2} | {:>13.2} | {:>12.2} |\n",
            r["mode"].as_str().unwrap(),
            get(r, "wall_s"),
            format!("{:.2}-{:.2}", get(r, "wall_min_s"), get(r, "wall_max_s")),
            get(r, "cpu_s"),
            io("requests"),
            io("peak_in_flight"),
            mib(get(r, "peak_rss")),
            mib(get(r, "base_rss")),
            r["files_removed"],
            r["files_added"],
            mib(get(r, "bytes_written")),
            get(r, "wall_s") / get(&delta, "wall_s"),
            get(r, "peak_rss") / get(&delta, "peak_rss"),
            (get(r, "peak_rss") - get(r, "base_rss")) / (get(&delta, "peak_rss") - get(&delta, "base_rss")),
            get(r, "wall_s") / get(&direct, "wall_s"),
            get(r, "peak_rss") / get(&direct, "peak_rss"),
        );
    }
    out
}
