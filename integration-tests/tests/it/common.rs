//! Helpers shared by the scenarios.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use sediment::arrow::array::RecordBatch;
use sediment::arrow::util::display::{ArrayFormatter, FormatOptions};
use sediment::{Table, WriteOptions};

/// The bucket `scripts/test.sh` creates.
pub const BUCKET: &str = "sediment-tests";

/// The S3 endpoint of the test server. The tests are meant to run through
/// `scripts/test.sh`, which starts the server; without it they fail loudly.
pub fn s3_endpoint() -> String {
    std::env::var("SEDIMENT_TEST_S3_ENDPOINT")
        .expect("SEDIMENT_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the S3 server")
}

/// A fresh table location on the S3 server.
pub fn s3_uri(name: &str) -> String {
    let _ = s3_endpoint();
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("s3://{BUCKET}/{name}-{}-{n}-{}", std::process::id(), uuid_like())
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{nanos:x}")
}

/// Every row of `batches` as `col=value|...` with columns in name order, sorted:
/// an order-independent picture of a table's content.
pub fn canonical_rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let mut order: Vec<usize> = (0..schema.fields().len()).collect();
        order.sort_by_key(|i| schema.field(*i).name().clone());
        let formatters: Vec<ArrayFormatter> = order
            .iter()
            .map(|i| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options).expect("formattable column"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = order
                .iter()
                .zip(&formatters)
                .map(|(i, f)| format!("{}={}", schema.field(*i).name(), f.value(row)))
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

/// Run a scan to the end: its batches and its report.
pub trait ScanRun {
    /// Execute and collect, panicking on errors (tests only).
    async fn run(self) -> (Vec<RecordBatch>, sediment::ScanReport);
}

impl ScanRun for sediment::ScanBuilder<'_> {
    async fn run(self) -> (Vec<RecordBatch>, sediment::ScanReport) {
        self.execute().await.expect("scan starts").collect().await.expect("scan reads")
    }
}

/// All rows of a table version, canonicalized.
pub async fn table_rows(table: &Table) -> Vec<String> {
    let (batches, _) = table.scan().run().await;
    canonical_rows(&batches)
}

/// Row count of a scan's batches.
pub fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Write the demo's events `[start, start + rows)` as one append.
pub async fn append_events(table: &mut Table, start: i64, rows: usize) -> sediment::WriteReport {
    table
        .write([sediment::demo::events_batch(start, rows)], WriteOptions::append().partition_by(["event_date"]))
        .await
        .expect("append succeeds")
}

/// The demo's events `[start, start + rows)` that fall on `day` (YYYY-MM-DD).
pub fn events_on_day(start: i64, rows: usize, day: &str) -> RecordBatch {
    let batch = sediment::demo::events_batch(start, rows);
    let predicate =
        sediment::read::predicate::Predicate::parse(&format!("event_date = '{day}'"), &batch.schema()).unwrap();
    let mask = predicate.matches(&batch).unwrap();
    sediment::arrow::compute::filter_record_batch(&batch, &mask).unwrap()
}

/// `../shared/conformance`, or `SEDIMENT_CONFORMANCE_DIR`; `None` when neither exists.
pub fn conformance_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("SEDIMENT_CONFORMANCE_DIR") {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    dir.is_dir().then_some(dir)
}

/// Copy a directory tree (tests never write into the conformance folders).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create target dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
