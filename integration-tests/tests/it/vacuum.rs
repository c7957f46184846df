//! Vacuum and log cleanup: what tags and the retention window need stays, the rest
//! goes; on the S3 server, on local copies of foreign tables, through failing stores.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use chrono::{Duration, Utc};
use object_store::ObjectStoreExt as _;
use sediment::{ErrorKind, ManualClock, OpenOptions, Table, VacuumOptions, VacuumParts, WriteOptions};

use crate::common::{append_events, s3_uri, table_rows};

async fn overwrite(table: &mut Table, start: i64, rows: usize) {
    table
        .write([sediment::demo::events_batch(start, rows)], WriteOptions::overwrite().partition_by(["event_date"]))
        .await
        .unwrap();
}

fn at(table: &Table, version: u64) -> OpenOptions {
    OpenOptions::new().object_store(table.delta().log_store().root_object_store(None)).version(version)
}

async fn read_error(table: &Table, version: u64) -> sediment::Error {
    let old = Table::open_with(table.uri(), at(table, version)).await.unwrap();
    match old.scan().execute().await {
        Ok(scan) => scan.collect().await.expect_err("the version lost files"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn vacuum_keeps_what_live_tags_and_the_window_need_and_deletes_the_rest() {
    let uri = s3_uri("vacuum");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 200).await; // v0: A
    let v0 = table_rows(&table).await;
    overwrite(&mut table, 1_000, 200).await; // v1: B
    append_events(&mut table, 2_000, 200).await; // v2: B + C
    let v2 = table_rows(&table).await;
    overwrite(&mut table, 3_000, 200).await; // v3: D
    let latest = table_rows(&table).await;
    let a_files = Table::open_with(&uri, OpenOptions::new().version(0)).await.unwrap().files().unwrap().len();
    table.create_tag("audit", 2, None, None).await.unwrap();
    table.create_tag("short", 0, Some(Utc::now() + Duration::hours(1)), None).await.unwrap();

    // Ten days from now the default retention (7 days) puts every version but the
    // newest out of the window (the log's 30 days keep every commit); "short" has
    // expired by then, "audit" has not.
    let clock = ManualClock::new(Utc::now() + Duration::days(10));
    let dry = table.vacuum(VacuumOptions::default().dry_run(true).with_clock(clock.clone())).await.unwrap();
    assert!(dry.dry_run && dry.commits.is_empty());
    assert_eq!(dry.deleted.expired_tag.files, a_files, "A only the expired tag needed: {dry:?}");
    assert_eq!(dry.deleted.tombstoned.files, 0, "B and C are pinned by the live tag: {dry:?}");
    assert!(dry.kept_for_tags.files > 0);
    assert_eq!(dry.tags_expired, ["short"]);
    assert_eq!(dry.window_start, Some(3));
    assert_eq!(
        table_rows(&Table::open_with(&uri, at(&table, 0)).await.unwrap()).await,
        v0,
        "a dry run deletes nothing"
    );
    assert_eq!(table.tags().await.unwrap().len(), 2);

    let report = table.vacuum(VacuumOptions::default().with_clock(clock.clone())).await.unwrap();
    assert_eq!(report.deleted.total(), dry.deleted.total(), "{report:?}");
    assert!(report.failed.is_empty());
    assert_eq!(report.commits, [4, 5], "VACUUM START and END");
    let history = table.history(Some(2)).await.unwrap();
    let ops: Vec<_> = history.iter().map(|h| h.operation.clone().unwrap()).collect();
    assert_eq!(ops, ["VACUUM END", "VACUUM START"]);
    assert_eq!(history[0].parameters["status"], "COMPLETED");

    assert_eq!(table_rows(&table).await, latest, "the newest version is untouched");
    let tagged = Table::open_with(&uri, OpenOptions::new().tag("audit")).await.unwrap();
    assert_eq!(table_rows(&tagged).await, v2, "the tagged version reads exactly");
    let err = read_error(&table, 0).await;
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("version 0 of table") && err.to_string().contains("is gone (vacuumed"), "{err}");
    assert_eq!(table.tags().await.unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["audit"]);

    // Once the tag goes, its files go too; the rerun finds nothing else.
    table.delete_tag("audit").await.unwrap();
    let report = table.vacuum(VacuumOptions::default().with_clock(clock.clone())).await.unwrap();
    assert!(report.deleted.tombstoned.files >= 2, "B and C: {report:?}");
    let again = table.vacuum(VacuumOptions::default().full(true).with_clock(clock)).await.unwrap();
    assert_eq!(again.deleted.total().files, 0, "a second full vacuum deletes nothing: {again:?}");
    assert_eq!(table_rows(&table).await, latest);
    let (rows, _) = crate::interop::python_read(&uri);
    assert_eq!(rows, 200, "another reader reads the vacuumed table");
}

#[tokio::test]
async fn versions_inside_the_retention_window_keep_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 100).await;
    overwrite(&mut table, 1_000, 100).await;
    let v1 = table_rows(&table).await;
    let committed = table.history(Some(1)).await.unwrap()[0].timestamp.unwrap();
    let horizon = chrono::DateTime::from_timestamp_millis(committed + 1).unwrap();
    overwrite(&mut table, 2_000, 100).await;
    // The horizon just after version 1's commit: version 1 was current then; version 0 was not.
    let now = Utc::now();
    let options =
        VacuumOptions::default().retain(now - horizon).retention_check(false).with_clock(ManualClock::new(now));
    let report = table.vacuum(options).await.unwrap();
    assert_eq!(report.window_start, Some(1), "the newest commit before the horizon");
    assert!(report.deleted.tombstoned.files > 0, "{report:?}");
    assert_eq!(table_rows(&Table::open_with(&uri, OpenOptions::new().version(1)).await.unwrap()).await, v1);
    assert!(read_error(&table, 0).await.to_string().contains("is gone (vacuumed"));
}

#[tokio::test]
async fn the_cli_vacuums_full_and_refuses_bad_requests() {
    let uri = s3_uri("vacuum-cli");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 300).await;
    overwrite(&mut table, 1_000, 300).await;
    let latest = table_rows(&table).await;
    // Files no commit references: a crashed writer's, at the top and in a partition.
    let store = table.object_store();
    for orphan in ["part-orphan.parquet", "event_date=2024-01-01/part-orphan.parquet"] {
        store.put(&orphan.into(), bytes::Bytes::from_static(b"PAR1").into()).await.unwrap();
    }
    table.create_tag("keep", 0, None, None).await.unwrap();
    let run =
        |args: &[&str]| Command::new(crate::cli::sediment_bin()).arg("vacuum").arg(&uri).args(args).output().unwrap();

    let out = run(&["--retain=1h"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shorter than") && stderr.contains("--no-retention-check"), "{stderr}");
    for bad in ["-1d", "abc", "7 days"] {
        let out = run(&[&format!("--retain={bad}")]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"), "{bad}");
    }
    assert!(!run(&["--data-only", "--log-only"]).status.success(), "the two halves exclude each other");

    let out = run(&["--full", "--retain", "0s", "--no-retention-check", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("would delete 2 files") && stdout.contains("part-orphan.parquet"), "{stdout}");
    assert!(stdout.contains("kept for tags"), "{stdout}");

    let out = Command::new(crate::cli::sediment_bin())
        .args(["--json", "vacuum", &uri, "--full", "--retain", "0s", "--no-retention-check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deleted"]["orphan"]["files"], 2, "{report}");
    assert_eq!(report["mode"], "full");
    assert!(report["log"]["kept_from"].is_null(), "nothing in the log is 30 days old: {report}");
    assert!(store.head(&"part-orphan.parquet".into()).await.is_err());
    assert!(store.head(&"_sediment/tags/keep.json".into()).await.is_ok(), "tags are never vacuumed");
    let table = Table::open(&uri).await.unwrap();
    assert_eq!(table_rows(&table).await, latest);
    let tagged = Table::open_with(&uri, OpenOptions::new().tag("keep")).await.unwrap();
    assert_eq!(table_rows(&tagged).await.len(), 300);

    let out = run(&["--log-only", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("log cleanup: would delete 0 commits"));
}

/// A vacuum whose deletes stop half-way (the process died, as far as the store can
/// tell) leaves a readable table and reports what failed; a rerun finishes.
#[tokio::test]
async fn a_vacuum_stopped_half_way_leaves_a_readable_table_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..4 {
        append_events(&mut table, i * 100, 100).await;
    }
    overwrite(&mut table, 1_000, 100).await;
    let latest = table_rows(&table).await;
    let left = Arc::new(AtomicI64::new(3));
    let store = Arc::new(sediment::BoundedStore::new(
        crate::faults::store_failing_deletes(left.clone()),
        sediment::IoLimiter::unbounded(),
    ));
    let mut flaky = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    let options = || VacuumOptions::default().retain(Duration::zero()).retention_check(false);
    let report = flaky.vacuum(options()).await.unwrap();
    assert_eq!(report.deleted.total().files, 3, "three deletes got through: {report:?}");
    assert!(!report.failed.is_empty() && report.failed[0].error.contains("injected failure"), "{report:?}");
    assert_eq!(flaky.history(Some(1)).await.unwrap()[0].parameters["status"], "FAILED");
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, latest, "readable, same rows");

    left.store(i64::MAX, Ordering::SeqCst);
    let rerun = flaky.vacuum(options()).await.unwrap();
    assert!(rerun.failed.is_empty());
    let files_left = Table::open(&uri).await.unwrap().orphan_files().await.unwrap();
    assert!(files_left.is_empty(), "nothing unreferenced is left: {files_left:?}");
    let after = Table::open(&uri).await.unwrap();
    assert_eq!(stored_data_files(&after).await, after.files().unwrap().len(), "only the live files are left");
    assert_eq!(table_rows(&after).await, latest);
}

/// Data files in the table's folder, referenced or not.
async fn stored_data_files(table: &Table) -> usize {
    crate::s3_table::list_data_files(table).await.len()
}

/// A vacuum killed half-way through its deletes (its future dropped while the store
/// hangs, so none of its code runs after: no retry, no VACUUM END) leaves a readable
/// table; a rerun from another process finishes.
#[tokio::test]
async fn a_vacuum_killed_half_way_leaves_a_readable_table_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..4 {
        append_events(&mut table, i * 100, 100).await;
    }
    overwrite(&mut table, 1_000, 100).await;
    let latest = table_rows(&table).await;
    let store = crate::faults::store_hanging_deletes(Arc::new(AtomicI64::new(3)));
    let mut doomed = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    let options = || VacuumOptions::default().retain(Duration::zero()).retention_check(false);
    let killed = tokio::time::timeout(std::time::Duration::from_secs(2), doomed.vacuum(options())).await;
    assert!(killed.is_err(), "the vacuum hung in its deletes and was killed");
    drop(doomed);

    let mut table = Table::open(&uri).await.unwrap();
    assert_eq!(table.history(Some(1)).await.unwrap()[0].operation.as_deref(), Some("VACUUM START"));
    assert_eq!(table_rows(&table).await, latest, "readable, same rows");
    let live = table.files().unwrap().len();
    assert!(stored_data_files(&table).await > live, "the kill left files to delete");
    let rerun = table.vacuum(options()).await.unwrap();
    assert!(rerun.failed.is_empty() && rerun.deleted.total().files > 0, "{rerun:?}");
    assert_eq!(stored_data_files(&table).await, live, "the rerun finished the job");
    assert_eq!(table_rows(&table).await, latest);
}

/// A restore killed while its commit is on the way (the put never answers) commits
/// nothing; a rerun restores.
#[tokio::test]
async fn a_restore_killed_during_its_commit_changes_nothing_and_a_rerun_restores() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 100).await;
    let v0 = table_rows(&table).await;
    overwrite(&mut table, 1_000, 100).await;
    let latest = table_rows(&table).await;
    let store = crate::faults::store_hanging_commits(Arc::new(AtomicUsize::new(1)));
    let mut doomed = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    let restore = doomed.restore(sediment::RestoreTarget::Version(0), false);
    assert!(tokio::time::timeout(std::time::Duration::from_secs(2), restore).await.is_err(), "killed");
    drop(doomed);
    let mut table = Table::open(&uri).await.unwrap();
    assert_eq!((table.version(), table_rows(&table).await), (Some(1), latest), "nothing committed");
    let report = table.restore(sediment::RestoreTarget::Version(0), false).await.unwrap();
    assert_eq!(report.version, Some(2));
    assert_eq!(table_rows(&table).await, v0);
}

/// A restore whose commit fails commits nothing; a rerun restores.
#[tokio::test]
async fn a_restore_whose_commit_fails_changes_nothing_and_a_rerun_restores() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 100).await;
    let v0 = table_rows(&table).await;
    overwrite(&mut table, 1_000, 100).await;
    let latest = table_rows(&table).await;
    let failures = Arc::new(AtomicUsize::new(1));
    let store = crate::faults::store_failing_commits(failures.clone());
    let mut flaky = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    assert!(flaky.restore(sediment::RestoreTarget::Version(0), false).await.is_err());
    let after = Table::open(&uri).await.unwrap();
    assert_eq!((after.version(), table_rows(&after).await), (Some(1), latest), "nothing committed");
    let report = flaky.restore(sediment::RestoreTarget::Version(0), false).await.unwrap();
    assert_eq!(report.version, Some(2));
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, v0);
}

/// Log cleanup on a table of 1,000+ commits: commits older than the log retention
/// go, but a tag from before the horizon stays readable by another Delta reader.
#[tokio::test]
async fn log_cleanup_keeps_a_tag_from_before_the_horizon_readable_by_another_reader() {
    let uri = s3_uri("log-cleanup");
    let mut table = crate::raw_log::table_of_one_row_appends(&uri, 1_050).await;
    let store = table.object_store();
    for v in [99, 999] {
        Table::open_with(&uri, OpenOptions::new().version(v)).await.unwrap().checkpoint().await.unwrap();
    }
    table.refresh().await.unwrap();
    assert_eq!(table.version(), Some(1_049));
    table.create_tag("audit", 150, None, None).await.unwrap();

    let clock = ManualClock::new(Utc::now() + Duration::days(60));
    let options = || VacuumOptions::default().parts(VacuumParts::LogOnly).with_clock(clock.clone());
    let dry = table.vacuum(options().dry_run(true)).await.unwrap();
    let log = dry.log.unwrap();
    assert_eq!((log.kept_from, log.checkpoint_written), (Some(150), Some(150)), "{log:?}");
    assert_eq!(log.commits_deleted, 150, "{log:?}");
    assert!(store.head(&"_delta_log/00000000000000000000.json".into()).await.is_ok(), "a dry run deletes nothing");
    let report = table.vacuum(options()).await.unwrap();
    let log = report.log.unwrap();
    assert_eq!(log.commits_deleted, 150, "commits 0..=149: {log:?}");
    assert_eq!(log.checkpoints_deleted, 1, "the checkpoint at 99");
    assert!(log.failed.is_empty());
    assert!(store.head(&"_delta_log/00000000000000000149.json".into()).await.is_err());
    assert!(store.head(&"_delta_log/00000000000000000150.checkpoint.parquet".into()).await.is_ok());

    let (rows, _) = crate::interop::python_read_at(&uri, Some(150));
    assert_eq!(rows, 151, "the tagged version, read by the Python reader");
    let (rows, _) = crate::interop::python_read(&uri);
    assert_eq!(rows, 1_050);
    let tagged = Table::open_with(&uri, OpenOptions::new().tag("audit")).await.unwrap();
    assert_eq!(table_rows(&tagged).await.len(), 151);
    let err = Table::open_with(&uri, OpenOptions::new().version(100)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // A second cleanup finds nothing more to do.
    let again = table.vacuum(options()).await.unwrap().log.unwrap();
    assert_eq!((again.commits_deleted, again.checkpoint_written), (0, None), "{again:?}");
}

/// Copies of foreign tables (checkpoints, deletion vectors, change data feed) vacuumed
/// full with zero retention keep their newest rows, stay readable by the Python
/// reader, and a tagged older version restores to its rows.
#[tokio::test]
async fn vacuuming_copies_of_foreign_tables_keeps_their_rows() {
    let Some(dir) = crate::common::conformance_dir() else { return };
    let cases = [
        "delta-rs/simple_table_with_checkpoint",
        "delta-rs/checkpoint-cdf-table",
        "delta-rs/cdf-table-with-cdc-and-dvs",
        "delta-rs/table-with-dv-small",
        "delta-rs/cdf-table",
        "delta-rs/simple_table_with_cdc",
        "dat/basic_append/delta",
        "dat/with_schema_change/delta",
    ];
    let mut deleted = 0;
    for name in cases {
        let work = tempfile::tempdir().unwrap();
        let copy = work.path().join("t");
        crate::common::copy_dir(&dir.join(name), &copy);
        let uri = copy.to_string_lossy().to_string();
        let mut table = Table::open(&uri).await.unwrap();
        let latest = table.version().unwrap();
        let before = table_rows(&table).await;
        // The oldest version this reader can still open, tagged.
        let mut oldest = latest;
        for v in (0..latest).rev() {
            if Table::open_with(&uri, OpenOptions::new().version(v)).await.is_err() {
                break;
            }
            oldest = v;
        }
        let old_rows = table_rows(&Table::open_with(&uri, OpenOptions::new().version(oldest)).await.unwrap()).await;
        table.create_tag("old", oldest, None, None).await.unwrap();
        let options = VacuumOptions::default().full(true).retain(Duration::zero()).retention_check(false);
        let report = table.vacuum(options).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.failed.is_empty(), "{name}: {report:?}");
        deleted += report.deleted.total().files;
        let after = Table::open(&uri).await.unwrap();
        assert_eq!(table_rows(&after).await, before, "{name}: newest rows unchanged");
        let (rows, _) = crate::interop::python_read(&uri);
        assert_eq!(rows as usize, before.len(), "{name}: the Python reader agrees");
        let mut after = after;
        after
            .restore(sediment::RestoreTarget::Tag("old".into()), false)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(table_rows(&after).await, old_rows, "{name}: restore of the tagged version");
    }
    assert!(deleted > 0, "the foreign tables had files to vacuum");
}
