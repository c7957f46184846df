//! The buffered streaming writer: commits by size, by age, on flush and on close.

use std::time::Duration;

use sediment::{Table, TableWriter, TableWriterSettings};

use crate::common::{canonical_rows, s3_uri, table_rows};

#[tokio::test]
async fn table_writer_buffers_small_batches_into_few_commits() {
    let uri = s3_uri("table-writer");
    let table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let settings = TableWriterSettings::default().partition_by(["event_date"]).max_age(Duration::from_secs(3600));
    let mut writer = TableWriter::new(table, settings);
    let mut expected = Vec::new();
    for i in 0..50 {
        let batch = sediment::demo::events_batch(i * 100, 100);
        expected.push(batch.clone());
        assert!(writer.write(batch).await.unwrap().is_none(), "small batches are buffered");
    }
    assert_eq!(writer.buffered_rows(), 5_000);
    // Nothing is visible before the flush.
    assert!(!Table::open_or_new(&uri, Default::default()).await.unwrap().exists());
    let report = writer.flush().await.unwrap().expect("something was buffered");
    assert_eq!(report.rows_written, 5_000);
    assert_eq!(report.files_added, 5, "one file per partition, not one per batch");
    assert!(writer.flush().await.unwrap().is_none(), "an empty flush commits nothing");

    // Size trigger: a tiny buffer limit commits on the next write.
    let table = writer.close().await.unwrap();
    assert_eq!(table.version(), Some(0));
    let mut writer = TableWriter::new(table, TableWriterSettings::default().max_buffer_bytes(1));
    let batch = sediment::demo::events_batch(100_000, 10);
    expected.push(batch.clone());
    let committed = writer.write(batch).await.unwrap().expect("due by size");
    assert_eq!(committed.version, Some(1));

    // Age trigger, checked by flush_if_due.
    let table = writer.close().await.unwrap();
    let mut writer = TableWriter::new(table, TableWriterSettings::default().max_age(Duration::from_millis(50)));
    let batch = sediment::demo::events_batch(200_000, 10);
    expected.push(batch.clone());
    writer.write(batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(writer.is_due());
    assert_eq!(writer.flush_if_due().await.unwrap().unwrap().version, Some(2));

    // A batch that does not fit is refused and the buffer stays usable.
    let bad = sediment::arrow::array::RecordBatch::try_from_iter(vec![(
        "event_id",
        std::sync::Arc::new(sediment::arrow::array::StringArray::from(vec!["x"])) as sediment::arrow::array::ArrayRef,
    )])
    .unwrap();
    let good = sediment::demo::events_batch(300_000, 10);
    expected.push(good.clone());
    writer.write(good).await.unwrap();
    assert!(writer.write(bad).await.is_err());
    let table = writer.close().await.unwrap();
    assert_eq!(table.version(), Some(3));
    assert_eq!(table_rows(&table).await, canonical_rows(&expected));
}
