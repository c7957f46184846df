//! Concurrent writers on the S3 server: no lock service, only conditional puts.

use sediment::{Table, WriteOptions};

use crate::common::{ScanRun, append_events, count, s3_uri};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_appenders_each_land_exactly_once() {
    let uri = s3_uri("concurrent");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 10).await; // version 0

    let writers = 8;
    let rows_per_writer = 250;
    let mut handles = Vec::new();
    for w in 0..writers {
        let uri = uri.clone();
        handles.push(tokio::spawn(async move {
            let mut table = Table::open(&uri).await.unwrap();
            let start = 1_000 + (w * rows_per_writer) as i64;
            table.write([sediment::demo::events_batch(start, rows_per_writer)], WriteOptions::append()).await.unwrap()
        }));
    }
    let mut versions = Vec::new();
    for h in handles {
        versions.push(h.await.unwrap().version.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=writers as u64).collect::<Vec<_>>(), "versions are contiguous, one per writer");

    let table = Table::open(&uri).await.unwrap();
    assert_eq!(table.version(), Some(writers as u64));
    let (batches, _) = table.scan().columns(["event_id"]).run().await;
    assert_eq!(count(&batches), 10 + writers * rows_per_writer);
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0).as_any().downcast_ref::<sediment::arrow::array::Int64Array>().unwrap().values().to_vec()
        })
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "no row landed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creators_make_one_table() {
    let uri = s3_uri("create-race");
    let mut handles = Vec::new();
    for w in 0..4 {
        let uri = uri.clone();
        handles.push(tokio::spawn(async move {
            let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
            table
                .write(
                    [sediment::demo::events_batch(w * 100, 100)],
                    WriteOptions::append().partition_by(["event_date"]),
                )
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    for h in handles {
        created += usize::from(h.await.unwrap().created);
    }
    assert!(created >= 1);
    let table = Table::open(&uri).await.unwrap();
    assert_eq!(table.version(), Some(3));
    assert_eq!(table.info().unwrap().rows, Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overwrite_racing_appends_is_replanned_and_wins_cleanly() {
    let uri = s3_uri("overwrite-race");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 100).await;
    let appenders: Vec<_> = (0..4)
        .map(|w| {
            let uri = uri.clone();
            tokio::spawn(async move {
                let mut t = Table::open(&uri).await.unwrap();
                t.write([sediment::demo::events_batch(1_000 + w * 10, 10)], WriteOptions::append()).await.unwrap()
            })
        })
        .collect();
    let mut overwriter = Table::open(&uri).await.unwrap();
    let report = overwriter.write([sediment::demo::events_batch(50_000, 7)], WriteOptions::overwrite()).await.unwrap();
    for a in appenders {
        a.await.unwrap();
    }
    // The overwrite removed every file it saw at its final read version: what is
    // left is its 7 rows plus exactly the appends that committed after it.
    let latest = Table::open(&uri).await.unwrap();
    let overwrite_version = report.version.unwrap();
    let appended_after =
        latest.history(None).await.unwrap().into_iter().filter(|h| h.version > overwrite_version).count();
    assert_eq!(latest.info().unwrap().rows, Some(7 + 10 * appended_after as u64));
}
