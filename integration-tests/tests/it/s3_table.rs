//! Appends, overwrites, scans with pruning, schema enforcement and time travel on S3.

use std::sync::Arc;

use sediment::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use sediment::{ErrorKind, OpenOptions, SchemaMode, Table, WriteOptions};

use crate::common::{ScanRun, append_events, canonical_rows, count, s3_uri, table_rows};

#[tokio::test]
async fn append_overwrite_and_time_travel_on_s3() {
    let uri = s3_uri("basic");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    assert!(!table.exists());
    let first = append_events(&mut table, 0, 1_000).await;
    assert_eq!(first.version, Some(0));
    assert!(first.created);
    assert_eq!(first.rows_written, 1_000);
    // One file per partition (5 days), each far below the target size.
    assert_eq!(first.files_added, 5);
    // Object stores keep modification times to the second; leave a clear gap so a
    // timestamp between the two commits is unambiguous.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let second = append_events(&mut table, 1_000, 500).await;
    assert_eq!(second.version, Some(1));

    let reopened = Table::open(&uri).await.unwrap();
    assert_eq!(reopened.version(), Some(1));
    let info = reopened.info().unwrap();
    assert_eq!(info.rows, Some(1_500));
    assert_eq!(info.files, 10);
    assert_eq!(info.partitions, 5);
    assert_eq!(info.small_files, 10);

    // Time travel to version 0 sees only the first append.
    let v0 = Table::open_with(&uri, OpenOptions::new().version(0)).await.unwrap();
    let (batches, _) = v0.scan().run().await;
    assert_eq!(count(&batches), 1_000);
    let expected = canonical_rows(&[sediment::demo::events_batch(0, 1_000)]);
    assert_eq!(canonical_rows(&batches), expected);

    // Time travel by timestamp: a time between the commits resolves to version 0, a
    // time before the table existed is not found, now is the latest version.
    let history = reopened.history(None).await.unwrap();
    assert_eq!(history.iter().map(|h| h.version).collect::<Vec<_>>(), vec![1, 0]);
    assert_eq!(history[0].engine.as_deref(), Some(sediment::table::commit::engine_info().as_str()));
    assert_eq!(history[0].operation.as_deref(), Some("WRITE"));
    assert_eq!(history[0].metrics["numOutputRows"], "500");
    let at_between = Table::open_with(&uri, OpenOptions::new().as_of(between)).await.unwrap();
    assert_eq!(at_between.version(), Some(0));
    let now = Table::open_with(&uri, OpenOptions::new().as_of(chrono::Utc::now())).await.unwrap();
    assert_eq!(now.version(), Some(1));
    let before = between - chrono::Duration::days(1);
    let err = Table::open_with(&uri, OpenOptions::new().as_of(before)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A full overwrite replaces every file.
    let report = table.write([sediment::demo::events_batch(5_000, 100)], WriteOptions::overwrite()).await.unwrap();
    assert_eq!(report.files_removed, 10);
    assert_eq!(table_rows(&table).await, canonical_rows(&[sediment::demo::events_batch(5_000, 100)]));
    // ...and the old version is still readable.
    let v1 = Table::open_with(&uri, OpenOptions::new().version(1)).await.unwrap();
    assert_eq!(v1.info().unwrap().rows, Some(1_500));
}

#[tokio::test]
async fn replace_where_overwrites_only_matching_partitions() {
    let uri = s3_uri("replace-where");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 2_000).await;
    let before = table_rows(&table).await;
    let day = "2024-05-02";
    let filter = format!("event_date = '{day}'");
    let (old_day, _) = table.scan().filter(&filter).run().await;

    // New rows for that one day only.
    let replacement = crate::common::events_on_day(10_000, 2_000, day);
    let report = table.write([replacement.clone()], WriteOptions::append().replace_where(&filter)).await.unwrap();
    assert_eq!(report.files_removed, 1, "only the {day} partition's file is replaced");

    let mut expected: Vec<String> = before.into_iter().filter(|row| !canonical_rows(&old_day).contains(row)).collect();
    expected.extend(canonical_rows(&[replacement]));
    expected.sort();
    assert_eq!(table_rows(&table).await, expected);

    // Rows outside the predicate are refused and nothing is committed.
    let version = table.version();
    let err = table
        .write([sediment::demo::events_batch(20_000, 100)], WriteOptions::append().replace_where(&filter))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("do not match replace_where"), "{err}");
    table.refresh().await.unwrap();
    assert_eq!(table.version(), version);

    // A predicate on a data column is refused.
    let err = table
        .write([sediment::demo::events_batch(0, 1)], WriteOptions::append().replace_where("user_id = 1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("may only mention partition columns"), "{err}");
}

#[tokio::test]
async fn scans_prune_by_partition_and_statistics() {
    let uri = s3_uri("pruning");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    // Ten appends with disjoint event_id ranges: statistics can skip by event_id.
    for i in 0..10 {
        append_events(&mut table, i * 1_000, 1_000).await;
    }
    let all = table.plan_scan(None).unwrap().report;
    assert_eq!(all.files_in_snapshot, 50);

    let scan = table.scan().filter("event_date = '2024-05-03'").execute().await.unwrap();
    let (batches, report) = scan.collect().await.unwrap();
    assert_eq!(report.files_in_snapshot, 50);
    assert_eq!(report.files_after_partition_pruning, 10);
    assert_eq!(report.files_after_stats_skipping, 10);
    assert!(report.bytes_read > 0 && report.bytes_read <= report.bytes_in_selected_files * 2);
    let all_rows = sediment::demo::events_batch(0, 10_000);
    let day_mask = sediment::read::predicate::Predicate::parse("event_date = '2024-05-03'", &all_rows.schema())
        .unwrap()
        .matches(&all_rows)
        .unwrap();
    let expected = sediment::arrow::compute::filter_record_batch(&all_rows, &day_mask).unwrap();
    assert_eq!(canonical_rows(&batches), canonical_rows(&[expected]));

    // Statistics skipping: ids 3000..3999 live in the fourth append's 5 files only.
    let (batches, report) =
        table.scan().filter("event_id >= 3000 AND event_id < 3100").columns(["event_id", "user_id"]).run().await;
    assert_eq!(report.files_after_partition_pruning, 50);
    assert_eq!(report.files_after_stats_skipping, 5);
    assert_eq!(count(&batches), 100);
    assert_eq!(batches[0].schema().fields().len(), 2);

    // Both at once, and a limit.
    let (batches, report) = table.scan().filter("event_date = '2024-05-01' AND event_id < 1000").limit(7).run().await;
    assert_eq!(report.files_after_partition_pruning, 10);
    assert_eq!(report.files_after_stats_skipping, 1);
    assert!(count(&batches) <= 7);

    // Bad filters and columns are clear errors.
    let err = table.scan().filter("no_such_column = 1").execute().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("no_such_column"), "{err}");
    let err = table.scan().filter("event_id >").execute().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = table.scan().filter("event_id + 1").execute().await.unwrap_err();
    assert!(err.to_string().contains("expected a boolean"), "{err}");
    let err = table.scan().columns(["nope"]).execute().await.unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
}

/// A batch whose columns are all nullable.
fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, a)| (n, a, true))).unwrap()
}

#[tokio::test]
async fn schema_enforcement_and_evolution() {
    let uri = s3_uri("schema");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
    table.write([batch(vec![("id", ids.clone()), ("name", names.clone())])], WriteOptions::append()).await.unwrap();

    // Wrong type: refused, naming the column and both types; nothing committed.
    let bad: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
    let err = table.write([batch(vec![("id", bad)])], WriteOptions::append()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains("`id`") && msg.contains("Int64") && msg.contains("Utf8"), "{msg}");
    // An extra column is refused in strict mode...
    let extra: ArrayRef = Arc::new(StringArray::from(vec!["e1"]));
    let err = table
        .write(
            [batch(vec![("id", Arc::new(Int64Array::from(vec![4]))), ("color", extra.clone())])],
            WriteOptions::append(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`color`"), "{err}");
    assert_eq!(Table::open(&uri).await.unwrap().version(), Some(0));

    // ...and added in merge mode, old rows reading it as null.
    let report = table
        .write(
            [batch(vec![("id", Arc::new(Int64Array::from(vec![4]))), ("color", extra)])],
            WriteOptions::append().schema_mode(SchemaMode::Merge),
        )
        .await
        .unwrap();
    assert!(report.schema_evolved);
    let table = Table::open(&uri).await.unwrap();
    let schema = table.arrow_schema().unwrap();
    assert!(schema.field_with_name("color").unwrap().is_nullable());
    let rows = crate::common::table_rows(&table).await;
    assert_eq!(
        rows,
        vec!["color=NULL|id=1|name=a", "color=NULL|id=2|name=b", "color=NULL|id=3|name=c", "color=e1|id=4|name=NULL"]
    );
}

#[tokio::test]
async fn a_failing_input_stream_commits_nothing_and_leaves_no_files() {
    let uri = s3_uri("failing-stream");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 100).await;
    let files_before = list_data_files(&table).await;
    let batches = futures::stream::iter(vec![
        Ok(sediment::demo::events_batch(100, 500)),
        Ok(sediment::demo::events_batch(600, 500)),
        Err(sediment::Error::invalid("input broke half-way")),
    ]);
    let err = table.write_stream(batches, WriteOptions::append()).await.unwrap_err();
    assert!(err.to_string().contains("input broke half-way"));
    let reopened = Table::open(&uri).await.unwrap();
    assert_eq!(reopened.version(), Some(0));
    assert_eq!(reopened.info().unwrap().rows, Some(100));
    assert_eq!(list_data_files(&table).await, files_before, "written files are cleaned up");
}

/// Every parquet file under the table root, committed or not.
pub async fn list_data_files(table: &Table) -> Vec<String> {
    use futures::TryStreamExt;
    let mut files: Vec<String> = table
        .object_store()
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.ends_with(".parquet") && !p.contains("_delta_log"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn opening_what_is_not_there() {
    let err = Table::open(&s3_uri("missing")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = Table::open(dir.path().join("nope").to_str().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let uri = s3_uri("versions");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 10).await;
    let err = Table::open_with(&uri, OpenOptions::new().version(7)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = Table::open("ftp://x/y").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn files_are_zstd_parquet_with_statistics_cut_at_the_target_size() {
    use sediment::deltalake::parquet::basic::Compression;
    use sediment::deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("sized").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let target = 512 * 1024;
    let batches: Vec<RecordBatch> = (0..20).map(|i| sediment::demo::events_batch(i * 10_000, 10_000)).collect();
    let report = table.write(batches, WriteOptions::append().target_file_size(target)).await.unwrap();
    assert!(report.files_added > 1, "200k rows at a 512 KiB target make several files");
    let files = table.files().unwrap();
    assert_eq!(files.len(), report.files_added);
    let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
    // Files are cut near the target (all but the last reach 3/4 of it).
    assert!(sizes.iter().filter(|s| **s >= target * 3 / 4).count() >= files.len() - 1, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= target * 5 / 4), "{sizes:?}");
    for f in &files {
        assert!(f.rows.is_some(), "every file has a row count in its statistics");
        let path = dir.path().join("sized").join(&f.path);
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let row_group = reader.metadata().row_group(0);
        for column in row_group.columns() {
            assert!(matches!(column.compression(), Compression::ZSTD(_)), "{:?}", column.compression());
            assert!(column.statistics().is_some(), "column statistics are written");
        }
    }
    assert_eq!(table.info().unwrap().rows, Some(200_000));
}

#[tokio::test]
async fn memory_tables_are_shared_within_the_process() {
    let uri = format!("memory://sediment-test-{}/events", std::process::id());
    let mut writer = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut writer, 0, 100).await;
    let reader = Table::open(&uri).await.unwrap();
    assert_eq!(reader.info().unwrap().rows, Some(100));
    assert_eq!(table_rows(&reader).await, canonical_rows(&[sediment::demo::events_batch(0, 100)]));
}

#[tokio::test]
async fn a_replayed_batch_with_the_same_application_version_commits_nothing() {
    let uri = s3_uri("txn");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let options = |version: i64| WriteOptions::append().app_transaction("ingest-1", version);
    let first = table.write([sediment::demo::events_batch(0, 100)], options(1)).await.unwrap();
    assert_eq!(first.version, Some(0));
    assert_eq!(table.app_transaction_version("ingest-1").await.unwrap(), Some(1));
    // The writer crashed after committing and sends batch 1 again: nothing happens.
    let replay = table.write([sediment::demo::events_batch(0, 100)], options(1)).await.unwrap();
    assert_eq!(replay.version, None);
    assert_eq!(table.version(), Some(0));
    // Batch 2 goes in; another application's version 1 is independent.
    table.write([sediment::demo::events_batch(100, 100)], options(2)).await.unwrap();
    let other = WriteOptions::append().app_transaction("ingest-2", 1);
    table.write([sediment::demo::events_batch(200, 100)], other).await.unwrap();
    assert_eq!(Table::open(&uri).await.unwrap().info().unwrap().rows, Some(300));
}

/// `Table::checkpoint` writes a checkpoint of the current version on S3 that every
/// reader starts from: the table opens from it once the commits before it are gone.
#[tokio::test]
async fn a_checkpoint_written_now_is_where_readers_start() {
    let uri = s3_uri("checkpoint");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..3 {
        crate::common::append_events(&mut table, i * 100, 100).await;
    }
    let report = table.checkpoint().await.unwrap();
    assert_eq!((report.version, report.files), (2, table.files().unwrap().len()), "{report:?}");
    let rows = crate::common::table_rows(&table).await;
    // Remove the commits the checkpoint covers: the table still opens, with its rows.
    let store = table.delta().log_store().object_store(None);
    for version in 0..=2u64 {
        let path = sediment::deltalake::Path::from(format!("_delta_log/{version:020}.json"));
        object_store::ObjectStoreExt::delete(store.as_ref(), &path).await.unwrap();
    }
    let reopened = Table::open(&uri).await.unwrap();
    assert_eq!(reopened.version(), Some(2));
    assert_eq!(crate::common::table_rows(&reopened).await, rows);
    assert_eq!(crate::interop::python_read(&uri).0, 300, "and so does another reader");
}

/// What planning sees of a version: its files (sorted), info and compaction plan.
fn planning_view(files: &[sediment::DataFile], info: &sediment::TableInfo, plan: &sediment::CompactionPlan) -> String {
    let mut files: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
    files.sort();
    format!("{}\n{}\n{}", files.join("\n"), serde_json::to_string(info).unwrap(), serde_json::to_string(plan).unwrap())
}

async fn assert_log_view_matches(uri: &str, step: &str) -> sediment::CompactionPlan {
    let options = sediment::CompactOptions::default().target_file_size(256 * 1024);
    let table = Table::open(uri).await.unwrap();
    let plan = table.compaction_plan(&options).unwrap();
    let want = planning_view(&table.files().unwrap(), &table.info().unwrap(), &plan);
    let view = sediment::LogView::open(uri, &OpenOptions::new()).await.unwrap().expect("the view reads this log");
    let got = planning_view(view.files(), &view.info(), &view.compaction_plan(&options).unwrap());
    assert_eq!(got, want, "{step}: the log view differs from the snapshot");
    plan
}

/// The log view (planning from the log alone) sees what delta-rs's snapshot sees on a
/// table Sediment wrote on S3: before and after a checkpoint, with files removed by a
/// compaction and re-added with deletion vectors after it.
#[tokio::test]
async fn the_log_view_reads_what_the_snapshot_reads() {
    let uri = s3_uri("log-view");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let options =
        WriteOptions::append().partition_by(["event_date"]).table_property("delta.enableDeletionVectors", "true");
    table.write([sediment::demo::events_batch(0, 300)], options).await.unwrap();
    for i in 1..4 {
        append_events(&mut table, i * 300, 300).await;
    }
    assert_log_view_matches(&uri, "commits only").await;
    table.checkpoint().await.unwrap();
    assert_log_view_matches(&uri, "at the checkpoint").await;
    for i in 4..6 {
        append_events(&mut table, i * 300, 300).await;
    }
    table.compact(sediment::CompactOptions::default()).await.unwrap();
    table.delete("event_id % 7 = 0").await.unwrap();
    assert!(table.files().unwrap().iter().any(|f| f.has_deletion_vector), "the delete marked rows");
    append_events(&mut table, 6 * 300, 300).await;
    let plan = assert_log_view_matches(&uri, "after the checkpoint").await;
    // The CLI's dry run plans from the log view: the same plan.
    let out = std::process::Command::new(crate::cli::sediment_bin())
        .args(["compact", &uri, "--dry-run", "--json", "--target-size", "262144"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["plan"], serde_json::to_value(&plan).unwrap());
    assert_eq!(Table::open(&uri).await.unwrap().version(), table.version(), "a dry run commits nothing");
    // `info` describes the version from the log view: what the snapshot says.
    let out = std::process::Command::new(crate::cli::sediment_bin()).args(["info", &uri, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = serde_json::to_value(table.info().unwrap()).unwrap();
    for (key, value) in want.as_object().unwrap() {
        assert_eq!(&printed[key], value, "info's {key}");
    }
    assert_eq!(printed["orphan_files"], serde_json::to_value(table.orphan_files().await.unwrap()).unwrap());
    let cost = table.storage_cost(&Default::default(), None, None, chrono::Utc::now()).unwrap();
    // Through the same printing and parsing as the CLI's output: serde_json's parser
    // may land a printed float one unit in the last place off the value printed.
    let cost: serde_json::Value = serde_json::from_str(&serde_json::to_string(&cost).unwrap()).unwrap();
    assert_eq!((&printed["storage"]["classes"], &printed["storage"]["ranges"]), (&cost["classes"], &cost["ranges"]));
}
