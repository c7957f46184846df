//! Deletes on the S3 server: only the files holding matching rows are rewritten.

use sediment::{CompactOptions, ErrorKind, OpenOptions, Table, WriteOptions};

use crate::common::{ScanRun, append_events, canonical_rows, s3_uri, table_rows};

fn without(batch: &sediment::arrow::array::RecordBatch, predicate: &str) -> sediment::arrow::array::RecordBatch {
    let keep = sediment::read::predicate::Predicate::parse(&format!("NOT ({predicate})"), &batch.schema())
        .unwrap()
        .matches(batch)
        .unwrap();
    sediment::arrow::compute::filter_record_batch(batch, &keep).unwrap()
}

#[tokio::test]
async fn deletes_rewrite_only_the_files_that_hold_matching_rows() {
    let uri = s3_uri("delete");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..4 {
        append_events(&mut table, i * 1_000, 1_000).await;
    }
    let all = sediment::demo::events_batch(0, 4_000);

    // Ids 1000..1099 live in the second append's 5 files only: 15 files are pruned by
    // statistics, 5 are read and rewritten.
    let predicate = "event_id >= 1000 AND event_id < 1100";
    let report = table.delete(predicate).await.unwrap();
    assert_eq!(report.files_considered, 20);
    assert_eq!(report.files_pruned, 15);
    assert_eq!(report.files_read, 5);
    assert_eq!(report.files_rewritten, 5);
    assert_eq!(report.rows_deleted, 100);
    assert_eq!(report.rows_copied, 900);
    let expected = without(&all, predicate);
    assert_eq!(table_rows(&table).await, canonical_rows(std::slice::from_ref(&expected)));
    let history = table.history(Some(1)).await.unwrap();
    assert_eq!(history[0].operation.as_deref(), Some("DELETE"));

    // A partition predicate removes whole files without reading them.
    let report = table.delete("event_date = '2024-05-02'").await.unwrap();
    assert_eq!(report.files_read, 0);
    assert_eq!(report.files_removed, 4);
    let expected = without(&expected, "event_date = '2024-05-02'");
    assert_eq!(table_rows(&table).await, canonical_rows(std::slice::from_ref(&expected)));

    // No match: nothing is committed.
    let version = table.version();
    let report = table.delete("event_id > 1000000").await.unwrap();
    assert_eq!(report.version, None);
    assert_eq!(table.version(), version);
    // A file read but holding no match stays untouched.
    let report = table.delete("event_id >= 1000 AND event_id < 1100").await.unwrap();
    assert_eq!(report.version, None);
    assert_eq!(report.rows_deleted, 0);

    // Time travel still sees the deleted rows.
    let v3 = Table::open_with(&uri, OpenOptions::new().version(3)).await.unwrap();
    assert_eq!(table_rows(&v3).await, canonical_rows(&[all]));

    // Bad expressions are input errors; nothing is committed.
    let err = table.delete("no_such_column = 1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = table.delete("event_id >").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(Table::open(&uri).await.unwrap().version(), version);
}

#[tokio::test]
async fn a_delete_racing_a_compaction_is_planned_again() {
    let uri = s3_uri("delete-race");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..6 {
        append_events(&mut table, i * 500, 500).await;
    }
    let all = sediment::demo::events_batch(0, 3_000);
    // The compaction commits between the delete's planning and its commit: the
    // delete read files that are gone, so it must plan again on the compacted table.
    let mut deleter = Table::open(&uri).await.unwrap();
    let mut compactor = Table::open(&uri).await.unwrap();
    compactor.compact(CompactOptions::default()).await.unwrap();
    let report = deleter.delete("user_id < 5000").await.unwrap();
    assert_eq!(report.retries, 1, "{report:?}");
    assert_eq!(report.files_considered, 5, "planned again on the 5 compacted files");
    let expected = without(&all, "user_id < 5000");
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, canonical_rows(&[expected]));

    // Concurrent appends to other rows do not stop it.
    let mut appender = Table::open(&uri).await.unwrap();
    appender.write([sediment::demo::events_batch(10_000, 100)], WriteOptions::append()).await.unwrap();
    let report = deleter.delete("user_id >= 9000").await.unwrap();
    assert!(report.version.is_some());
}

#[test]
fn explain_and_delete_on_the_command_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let uri = s3_uri("cli-delete");
    rt.block_on(async {
        let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
        for i in 0..3 {
            append_events(&mut table, i * 100, 100).await;
        }
    });
    let bin = crate::cli::sediment_bin();
    let out = std::process::Command::new(&bin)
        .args(["explain", &uri, "--where", "event_date = '2024-05-01' AND event_id < 100", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["report"]["files_in_snapshot"], 15);
    assert_eq!(plan["report"]["files_after_partition_pruning"], 3);
    assert_eq!(plan["report"]["files_after_stats_skipping"], 1);

    let out =
        std::process::Command::new(&bin).args(["delete", &uri, "--where", "event_id < 50", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows_deleted"], 50);
    let out = std::process::Command::new(&bin).args(["delete", &uri, "--where", "event_id <"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(&bin)
        .args([
            "update",
            &uri,
            "--set",
            "amount=amount * 2",
            "--set",
            "payload='x'",
            "--where",
            "event_id >= 250",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows_updated"], 50);
}

#[tokio::test]
async fn updates_change_matching_rows_in_the_files_that_hold_them() {
    let uri = s3_uri("update");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..3 {
        append_events(&mut table, i * 1_000, 1_000).await;
    }
    let report = table
        .update("event_id >= 1000 AND event_id < 1010", &[("amount", "0.5"), ("event_type", "'corrected'")])
        .await
        .unwrap();
    assert_eq!(report.rows_updated, 10);
    // Only files of the second append can hold ids 1000..1009 (per day, by statistics).
    assert!(report.files_pruned >= 10, "{report:?}");
    assert_eq!(report.files_read, 15 - report.files_pruned, "{report:?}");
    assert!(report.files_rewritten >= 1 && report.files_rewritten <= report.files_read, "{report:?}");
    assert!(report.rows_copied < 1_000, "only rows of rewritten files are copied: {report:?}");
    let (batches, _) = table.scan().filter("event_type = 'corrected'").columns(["event_id", "amount"]).run().await;
    let rows = canonical_rows(&batches);
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| r.starts_with("amount=0.5|")), "{rows:?}");
    assert_eq!(table.info().unwrap().rows, Some(3_000));

    // Expressions over the old values; moving rows to another partition.
    let before: u64 = table.info().unwrap().rows.unwrap();
    table
        .update("event_id < 5", &[("user_id", "user_id + 1000000"), ("event_date", "DATE '2024-06-01'")])
        .await
        .unwrap();
    let (batches, report) = table.scan().filter("event_date = '2024-06-01'").run().await;
    assert_eq!(crate::common::count(&batches), 5);
    // The moved rows sit in the new partition (one new file per source file rewritten).
    assert!(report.files_after_partition_pruning >= 1 && report.files_after_partition_pruning <= 5, "{report:?}");
    assert_eq!(crate::common::count(&table.scan().filter("event_id < 5").run().await.0), 5);
    assert_eq!(table.info().unwrap().rows, Some(before));

    // Bad assignments are input errors naming the problem; nothing is committed.
    let version = table.version();
    let err = table.update("event_id = 1", &[("nope", "1")]).await.unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
    let err = table.update("event_id = 1", &[("user_id", "'abc'")]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = table.update("event_id = 1", &[("event_id", "NULL")]).await.unwrap_err();
    assert!(err.to_string().contains("event_id"), "{err}");
    assert_eq!(Table::open(&uri).await.unwrap().version(), version);
}
