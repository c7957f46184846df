//! Deletes and updates on a busy table: they rebase over appends, win against
//! compaction, and when they do lose for good they say to whom.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sediment::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::{ChangeOptions, CompactOptions, ErrorKind, OpenOptions, RetrySettings, Table, WriteOptions};

use crate::common::{canonical_rows, copy_dir, s3_uri, table_rows};

fn batch(keys: Range<i64>, value: impl Fn(i64) -> i64) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Int64, true)]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(keys.clone())),
        Arc::new(Int64Array::from_iter_values(keys.map(value))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn model_rows(model: &BTreeMap<i64, i64>) -> Vec<String> {
    let batches: Vec<RecordBatch> = model
        .iter()
        .map(|(k, v)| {
            let v = *v;
            batch(*k..*k + 1, move |_| v)
        })
        .collect();
    canonical_rows(&batches)
}

/// On the S3 server: one writer appends every 200 ms (the report's streaming writer
/// appended every few hundred milliseconds; as fast as it can, the log grows by
/// thousands of commits under a loaded test server and the test measures moto),
/// another compacts in a loop, and 30 deletes and 30 updates by predicate run
/// meanwhile. Every one of them
/// commits, and the rows are what a model says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_updates_get_through_a_busy_table() {
    let uri = s3_uri("busy");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let mut model: BTreeMap<i64, i64> = BTreeMap::new();
    for chunk in 0..12 {
        let keys = chunk * 100..(chunk + 1) * 100;
        table.write([batch(keys.clone(), |k| k)], WriteOptions::append()).await.unwrap();
        model.extend(keys.map(|k| (k, k)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (uri, stop) = (uri.clone(), stop.clone());
        tokio::spawn(async move {
            let mut table = Table::open(&uri).await.unwrap();
            let mut appended = Vec::new();
            let mut next = 100_000;
            while !stop.load(Ordering::Relaxed) {
                table.write([batch(next..next + 50, |k| k)], WriteOptions::append()).await.unwrap();
                appended.extend(next..next + 50);
                next += 50;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            appended
        })
    };
    let compactor = {
        let (uri, stop) = (uri.clone(), stop.clone());
        tokio::spawn(async move {
            let mut table = Table::open(&uri).await.unwrap();
            let (mut runs, mut bins) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                table.refresh().await.unwrap();
                let options = CompactOptions { min_input_files: Some(2), ..Default::default() };
                let report = table.compact(options).await.expect("compaction never fails on a busy table");
                runs += 1;
                bins += report.bins_committed;
            }
            (runs, bins)
        })
    };
    let mut retries = 0;
    for i in 0..30 {
        let report =
            table.delete(&format!("k < 1200 AND k % 60 = {i}")).await.unwrap_or_else(|e| panic!("delete {i}: {e}"));
        assert_eq!(report.rows_deleted, 20, "delete {i}: {report:?}");
        retries += report.retries;
        model.retain(|k, _| *k >= 1200 || k % 60 != i);
        let report = table
            .update(&format!("k < 1200 AND k % 60 = {}", 30 + i), &[("v", "v + 1000")])
            .await
            .unwrap_or_else(|e| panic!("update {i}: {e}"));
        assert_eq!(report.rows_updated, 20, "update {i}: {report:?}");
        retries += report.retries;
        for (k, v) in model.iter_mut() {
            if *k < 1200 && k % 60 == 30 + i {
                *v += 1000;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let appended = appender.await.unwrap();
    let (runs, bins) = compactor.await.unwrap();
    model.extend(appended.iter().map(|k| (*k, *k)));
    assert!(
        !appended.is_empty() && runs > 0,
        "the other writers ran ({} appended rows, {runs} compactions)",
        appended.len()
    );
    table.refresh().await.unwrap();
    assert_eq!(table_rows(&table).await, model_rows(&model), "nothing lost, duplicated or stale");
    eprintln!(
        "60 changes: {retries} retries; {runs} compactions committed {bins} bins; {} rows appended",
        appended.len()
    );
}

/// A delete that lands while a compaction rewrites the very files it changes: the
/// delete commits, the compaction gives its bin up and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_wins_against_a_compaction_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("race").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for chunk in 0..6 {
        table.write([batch(chunk * 10..(chunk + 1) * 10, |k| k)], WriteOptions::append()).await.unwrap();
    }
    let deleted = Arc::new(Mutex::new(None));
    let hook = {
        let (uri, deleted) = (uri.clone(), deleted.clone());
        Arc::new(move || {
            // Runs once the compaction has written its output, right before it commits.
            let report = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let mut user = Table::open(&uri).await.unwrap();
                    user.delete("k % 2 = 0").await.unwrap()
                })
            });
            deleted.lock().unwrap().get_or_insert(report);
            Ok(())
        })
    };
    let options = CompactOptions { before_commit: Some(hook), ..Default::default() };
    let report = table.compact(options).await.unwrap();
    let delete = deleted.lock().unwrap().take().expect("the delete ran");
    assert!(delete.version.is_some() && delete.rows_deleted == 30, "{delete:?}");
    assert_eq!(report.bins_committed, 0, "{report:?}");
    assert_eq!(report.abandoned.len(), 1, "{report:?}");
    assert!(report.abandoned[0].reason.contains("another writer removed"), "{report:?}");
    let expected: BTreeMap<i64, i64> = (0..60).filter(|k| k % 2 == 1).map(|k| (k, k)).collect();
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, model_rows(&expected));
    let orphans = Table::open(&uri).await.unwrap().orphan_files().await.unwrap();
    assert!(orphans.is_empty(), "the given-up bin's output is deleted: {orphans:?}");
}

/// A table of three files (keys 0..10, 10..20, 20..30) at `path`, and a store for
/// it that puts `winner`'s commit (run on a copy of the table) in the log at the
/// moment a writer through the store commits the next version.
async fn racing_table<F, Fut>(path: &std::path::Path, winner: F) -> (Table, u64)
where
    F: FnOnce(Table) -> Fut,
    Fut: std::future::Future<Output = Table>,
{
    let uri = path.to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for chunk in 0..3 {
        table.write([batch(chunk * 10..(chunk + 1) * 10, |k| k)], WriteOptions::append()).await.unwrap();
    }
    let version = table.version().unwrap();
    let copy = path.with_extension("copy");
    copy_dir(path, &copy);
    let twin = winner(Table::open(&copy.to_string_lossy()).await.unwrap()).await;
    assert_eq!(twin.version(), Some(version + 1), "the winner commits once");
    for file in twin.files().unwrap() {
        let target = path.join(&file.path);
        if !target.exists() {
            std::fs::copy(copy.join(&file.path), target).unwrap();
        }
    }
    let commit = std::fs::read(copy.join("_delta_log").join(format!("{:020}.json", version + 1))).unwrap();
    let store = crate::faults::racing_store(format!("_delta_log/{:020}.json", version + 1), Bytes::from(commit));
    (Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap(), version)
}

/// A delete that runs out of attempts (one, here) names the operation, the attempts
/// and the commit that won with the file both needed; no delta-rs chain of
/// "Transaction failed" is left in it, and nothing of the delete stays behind.
#[tokio::test]
async fn a_delete_that_loses_for_good_names_the_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loser");
    let compaction = |mut t: Table| async move {
        t.compact(CompactOptions::default()).await.unwrap();
        t
    };
    let (mut loser, version) = racing_table(&path, compaction).await;
    let quick = RetrySettings { max_attempts: 1, ..Default::default() };
    let err = loser.delete_with("k = 5", &ChangeOptions { retry: quick }).await.unwrap_err();
    let message = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{message}");
    assert!(message.starts_with("delete on table") && message.contains("1 attempts over"), "{message}");
    assert!(message.contains(&format!("version {} (OPTIMIZE) removed 1 file", version + 1)), "{message}");
    assert!(!message.contains("Transaction failed") && !message.contains("Failed to commit"), "{message}");
    let after = Table::open(&path.to_string_lossy()).await.unwrap();
    assert_eq!(after.version(), Some(version + 1), "only the winner committed");
    assert!(after.orphan_files().await.unwrap().is_empty(), "the delete's files are deleted");
}

/// A delete that loses to another delete of one of its two files plans again, keeps
/// what it wrote for the untouched file, reads only the other file's replacement,
/// and commits.
#[tokio::test]
async fn a_retried_delete_reads_again_only_the_files_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retry");
    let other_delete = |mut t: Table| async move {
        t.delete("k = 25").await.unwrap();
        t
    };
    let (mut table, version) = racing_table(&path, other_delete).await;
    let report = table.delete("k = 5 OR k = 24").await.unwrap();
    assert_eq!(report.retries, 1, "{report:?}");
    assert_eq!((report.files_reused, report.files_read, report.rows_deleted), (1, 1, 2), "{report:?}");
    assert_eq!(report.version, Some(version + 2));
    let expected: BTreeMap<i64, i64> = (0..30).filter(|k| ![5, 24, 25].contains(k)).map(|k| (k, k)).collect();
    let after = Table::open(&path.to_string_lossy()).await.unwrap();
    assert_eq!(table_rows(&after).await, model_rows(&expected));
    assert!(after.orphan_files().await.unwrap().is_empty(), "{:?}", after.orphan_files().await.unwrap());
}
