//! Append commit latency against the length of the log, Sediment against delta-rs.
//!
//! On the S3 test server (start it with `scripts/with-s3.sh`), for tables whose log
//! holds 1,000 and 10,000 commits (a checkpoint every 100, as writers leave them),
//! each engine appends one row `--rounds` times (default 20) through one store that
//! counts requests:
//! - `sediment`: `Table::write` (commits neither list nor clean the log);
//! - `delta-rs`: `DeltaTable::write` with its default commit properties (after every
//!   commit its post-commit hook lists the whole `_delta_log` to clean expired logs:
//!   what Sediment's commits did before they took that over).
//!
//! Printed: median and 90th-percentile latency per append and requests per append.
//!
//! Run (release):
//!   bash scripts/with-s3.sh cargo bench -p sediment-integration-tests --bench commit_latency -- [--rounds N] [--entries 1000,10000]
//!
//! It prints a table of figures; nothing here is a pass/fail test.

#[path = "../tests/it/raw_log.rs"]
mod raw_log;

use std::sync::Arc;
use std::time::Instant;

use sediment::deltalake::protocol::SaveMode;
use sediment::{IoLimiter, OpenOptions, Table, WriteOptions};

#[tokio::main]
async fn main() {
    let rounds: usize = arg("--rounds").map(|r| r.parse().unwrap()).unwrap_or(20);
    let entries: Vec<u64> = arg("--entries")
        .map(|e| e.split(',').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    std::env::var("AWS_ENDPOINT_URL").expect("run under scripts/with-s3.sh (AWS_ENDPOINT_URL)");
    println!("| log entries | engine | median ms | p90 ms | requests per append |");
    println!("|---:|---|---:|---:|---:|");
    for n in entries {
        for engine in ["sediment", "delta-rs"] {
            let uri = format!("s3://sediment-tests/bench-commit-{}-{n}-{engine}", std::process::id());
            build_log(&uri, n).await;
            let limiter = IoLimiter::unbounded();
            let s3 = Table::open(&uri).await.unwrap().delta().log_store().root_object_store(None);
            let store: Arc<dyn object_store::ObjectStore> = Arc::new(sediment::BoundedStore::new(s3, limiter.clone()));
            let mut times = Vec::new();
            let before = limiter.report().requests;
            if engine == "sediment" {
                let mut table = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
                for i in 0..rounds {
                    let started = Instant::now();
                    table
                        .write([sediment::demo::events_batch(n as i64 + i as i64, 1)], WriteOptions::append())
                        .await
                        .unwrap();
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            } else {
                let url = url::Url::parse(&uri).unwrap();
                let mut table = sediment::deltalake::DeltaTableBuilder::from_url(url.clone())
                    .unwrap()
                    .with_storage_backend(store, url)
                    .load()
                    .await
                    .unwrap();
                for i in 0..rounds {
                    let started = Instant::now();
                    table = table
                        .write(vec![sediment::demo::events_batch(n as i64 + i as i64, 1)])
                        .with_save_mode(SaveMode::Append)
                        .await
                        .unwrap();
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            let requests = (limiter.report().requests - before) as f64 / rounds as f64;
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
            println!("| {n} | {engine} | {median:.1} | {p90:.1} | {requests:.1} |");
        }
    }
}

/// The value after `name` on the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// A table of `n` commits of one row each and a checkpoint where writers leave it.
async fn build_log(uri: &str, n: u64) {
    raw_log::table_of_one_row_appends(uri, n).await;
    // Checkpoints where writers leave them; the last one is what readers start from.
    let last = (n - 1) / 100 * 100;
    if last > 0 {
        Table::open_with(uri, OpenOptions::new().version(last - 1)).await.unwrap().checkpoint().await.unwrap();
    }
}
