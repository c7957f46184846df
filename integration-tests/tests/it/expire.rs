//! Partition retention: `Table::expire` and `sediment expire`, with an injected clock.

use std::process::Command;
use std::sync::Arc;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use sediment::arrow::array::{Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::{ErrorKind, ExpireOptions, ManualClock, Table, WriteOptions};

use crate::common::{append_events, canonical_rows, s3_uri, table_rows};

/// Rows of the demo's events `[0, rows)` for which `keep` holds.
fn events_where(rows: usize, keep: &str) -> Vec<String> {
    let batch = sediment::demo::events_batch(0, rows);
    let predicate = sediment::read::predicate::Predicate::parse(keep, &batch.schema()).unwrap();
    let mask = predicate.matches(&batch).unwrap();
    canonical_rows(&[sediment::arrow::compute::filter_record_batch(&batch, &mask).unwrap()])
}

#[tokio::test]
async fn expire_drops_whole_date_partitions_or_deletes_by_a_timestamp_column() {
    let uri = s3_uri("expire");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 500).await;
    // 400 days after 2024-05-04: the events of 05-01 to 05-03 are older than 400 days.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 5, 4, 0, 0, 0).unwrap() + Duration::days(400));
    let options = || ExpireOptions::older_than(Duration::days(400)).with_clock(clock.clone());
    let dry = table.expire(options().dry_run(true)).await.unwrap();
    assert_eq!((dry.column.as_str(), dry.partition_column), ("event_date", true));
    assert_eq!(dry.partitions, ["2024-05-01", "2024-05-02", "2024-05-03"]);
    assert_eq!(table.version(), Some(0), "a dry run commits nothing");

    let report = table.expire(options()).await.unwrap();
    let delete = report.delete.as_ref().unwrap();
    assert_eq!((delete.files_read, delete.files_removed), (0, 3), "metadata only: {delete:?}");
    assert_eq!(report.rows, dry.rows);
    assert_eq!(table.version(), Some(1));
    assert_eq!(table_rows(&table).await, events_where(500, "event_date >= DATE '2024-05-04'"));
    let again = table.expire(options()).await.unwrap();
    assert_eq!((again.files, again.delete.is_none()), (0, true), "nothing older is left");

    // By a column that is not a partition column: a delete by predicate.
    clock.set(Utc.with_ymd_and_hms(2024, 5, 4, 12, 0, 0).unwrap() + Duration::days(400));
    let report = table.expire(options().column("ts")).await.unwrap();
    assert!(!report.partition_column && report.rows > 0, "{report:?}");
    assert_eq!(
        table_rows(&table).await,
        events_where(500, "event_date >= DATE '2024-05-04' AND ts >= TIMESTAMP '2024-05-04T12:00:00Z'")
    );

    // Bad requests, each named.
    let err = table.expire(options().column("nope")).await.unwrap_err();
    assert!(err.to_string().contains("column `nope` is not in table"), "{err}");
    let err = table.expire(options().column("user_id")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("of type Int64"), "{err}");
    let err = table.expire(ExpireOptions::older_than(Duration::days(-1))).await.unwrap_err();
    assert!(err.to_string().contains("must not be negative"), "{err}");
}

#[tokio::test]
async fn expire_finds_iso_date_string_partitions_and_asks_for_a_column_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("day", DataType::Utf8, false)]));
    let days = ["2024-01-01", "2024-01-02", "2024-02-01"];
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(StringArray::from(days.to_vec()))],
    )
    .unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    table.write([batch.clone()], WriteOptions::append().partition_by(["day"])).await.unwrap();
    let now = NaiveDate::from_ymd_opt(2024, 1, 31).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let report =
        table.expire(ExpireOptions::older_than(Duration::days(29)).with_clock(ManualClock::new(now))).await.unwrap();
    assert_eq!((report.column.as_str(), report.partitions.clone()), ("day", vec!["2024-01-01".to_string()]));
    assert_eq!(table.files().unwrap().len(), 2);

    let plain = dir.path().join("plain").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&plain, Default::default()).await.unwrap();
    table.write([batch], WriteOptions::append()).await.unwrap();
    let err = table.expire(ExpireOptions::older_than(Duration::days(1))).await.unwrap_err();
    assert!(err.to_string().contains("--column"), "{err}");

    // The CLI: a positive duration is required; a dry run says what would go.
    let run =
        |args: &[&str]| Command::new(crate::cli::sediment_bin()).arg("expire").arg(&uri).args(args).output().unwrap();
    for bad in ["--older-than=0d", "--older-than=-3d", "--older-than=soon"] {
        let out = run(&[bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"), "{bad}");
    }
    let out = run(&["--older-than", "30d", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("would remove 2 rows in 2 files") && stdout.contains("2024-02-01"), "{stdout}");
}
