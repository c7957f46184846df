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
