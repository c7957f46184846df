//! A writer that dies between writing data files and committing leaves nothing visible.

use sediment::{Table, TableWriter, TableWriterSettings};

use crate::common::{append_events, s3_uri, table_rows};
use crate::s3_table::list_data_files;

#[tokio::test]
async fn a_writer_crash_before_commit_leaves_the_table_unchanged() {
    let uri = s3_uri("crash");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 300).await;
    let rows_before = table_rows(&table).await;
    let files_before = list_data_files(&table).await;

    // Small target files so the writer finishes (uploads) some before it "crashes".
    let settings = TableWriterSettings { target_file_size: 16 * 1024, ..TableWriterSettings::default() };
    let mut writer = TableWriter::new(Table::open(&uri).await.unwrap(), settings);
    for i in 0..5 {
        let committed = writer.write(sediment::demo::events_batch(10_000 + i * 4_000, 4_000)).await.unwrap();
        assert!(committed.is_none(), "nothing is due yet");
    }
    assert_eq!(writer.buffered_rows(), 20_000);
    // The process dies here: no flush, no close, no cleanup code runs.
    std::mem::forget(writer);

    let after = Table::open(&uri).await.unwrap();
    assert_eq!(after.version(), Some(0), "no commit happened");
    assert_eq!(table_rows(&after).await, rows_before, "readers see exactly the old rows");
    let files_after = list_data_files(&after).await;
    assert!(
        files_after.len() > files_before.len(),
        "the crash left data files behind (uncommitted, invisible): {} before, {} after",
        files_before.len(),
        files_after.len()
    );
}

/// The compactor process dies after writing its files and before committing.
#[tokio::test]
async fn a_compactor_crash_before_commit_leaves_the_table_unchanged_and_orphans_reported() {
    let uri = s3_uri("compact-crash");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..6 {
        append_events(&mut table, i * 200, 200).await;
    }
    let rows_before = table_rows(&table).await;
    let version = table.version();

    let out = std::process::Command::new(crate::cli::sediment_bin())
        .args(["compact", &uri])
        .env("SEDIMENT_FAULT", "crash-before-commit")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the process died");
    assert_eq!(out.status.code(), None, "killed by a signal (abort), not an orderly exit");

    let after = Table::open(&uri).await.unwrap();
    assert_eq!(after.version(), version, "nothing committed");
    assert_eq!(table_rows(&after).await, rows_before, "readable, same rows");
    let out = std::process::Command::new(crate::cli::sediment_bin()).args(["info", &uri, "--json"]).output().unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let orphans = info["orphan_files"].as_array().unwrap();
    assert_eq!(orphans.len(), 5, "one rewritten file per partition, never committed: {orphans:?}");

    // A later run compacts normally; the orphans stay orphans (vacuum removes them).
    let report = Table::open(&uri).await.unwrap().compact(Default::default()).await.unwrap();
    assert_eq!(report.files_removed, 30);
}
