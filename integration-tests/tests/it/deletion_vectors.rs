//! Compaction of tables with deletion vectors: deleted rows are dropped while
//! rewriting, heavily deleted files are purged, and a bin whose input gained deletes
//! while it ran is given up rather than bring those rows back.

use std::collections::BTreeMap;

use sediment::{CompactOptions, Table, WriteOptions};

use crate::common::{s3_uri, table_rows};
use crate::merge::{Order, model_rows, orders, orders_batch, python_orders};

/// A table with deletion vectors enabled: day 0 in four 25-row files, day 1 in one
/// 100-row file.
async fn dv_table(uri: &str) -> (Table, BTreeMap<i64, Order>) {
    let mut table = Table::open_or_new(uri, Default::default()).await.unwrap();
    let mut model = BTreeMap::new();
    let options =
        || WriteOptions::append().partition_by(["order_date"]).table_property("delta.enableDeletionVectors", "true");
    for part in [0..25, 25..50, 50..75, 75..100, 100..200] {
        let batch = orders(part, "new");
        for o in &batch {
            model.insert(o.id, o.clone());
        }
        table.write([orders_batch(&batch)], options()).await.unwrap();
    }
    (table, model)
}

fn python_expected(model: &BTreeMap<i64, Order>) -> Vec<(i64, String)> {
    model.values().map(|o| (o.id, o.status.clone())).collect()
}

#[tokio::test]
async fn compaction_drops_deleted_rows_and_purges_heavily_deleted_files() {
    let uri = s3_uri("dv-compact");
    let (mut table, mut model) = dv_table(&uri).await;
    // Every tenth order deleted: each day-0 file and the day-1 file get a vector.
    let report = table.delete("order_id % 10 = 0").await.unwrap();
    assert_eq!((report.files_marked, report.rows_deleted), (5, 20), "{report:?}");
    model.retain(|id, _| id % 10 != 0);
    let with_vectors = table.files().unwrap().iter().filter(|f| f.has_deletion_vector).count();
    assert_eq!(with_vectors, 5);

    // Day 0's four small files form one bin; day 1's single file is purged on its own
    // (10 % of its rows deleted, above the 5 % default).
    let plan = table.compaction_plan(&CompactOptions::default()).unwrap();
    assert_eq!(plan.bins().count(), 2, "{plan:?}");
    assert_eq!(plan.files_with_deletes, 5);
    assert!(plan.bins().any(|b| b.inputs.len() == 1 && b.inputs[0].deleted_rows == 10));
    // With a higher threshold the lone day-1 file is left alone.
    let lenient = CompactOptions { max_deleted_rows_ratio: Some(0.5), ..Default::default() };
    assert_eq!(table.compaction_plan(&lenient).unwrap().bins().count(), 1);

    let report = table.compact(CompactOptions::default()).await.unwrap();
    assert_eq!((report.bins_committed, report.files_removed, report.files_added), (2, 5, 2), "{report:?}");
    assert_eq!(report.rows, 180, "only live rows are rewritten");
    let files = table.files().unwrap();
    assert!(files.iter().all(|f| !f.has_deletion_vector && f.deleted_rows == 0), "{files:?}");
    assert_eq!(files.iter().map(|f| f.rows).sum::<Option<u64>>(), Some(180));
    assert_eq!(table_rows(&table).await, model_rows(&model));
    // The Python reader (its pyarrow path refuses tables with deletion vectors, so it
    // reads through DataFusion) agrees.
    assert_eq!(python_orders(&uri), python_expected(&model));
    // Converged: nothing more to do.
    assert!(table.compaction_plan(&CompactOptions::default()).unwrap().is_empty());
}

/// Right before the compactor commits, another writer deletes a row of one of its
/// inputs by extending that file's deletion vector. The file's path is still live,
/// but the compactor read it with the old vector: committing would bring the row
/// back, so the bin is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bin_whose_input_gained_deletes_is_given_up() {
    let uri = s3_uri("dv-compact-race");
    let (mut table, mut model) = dv_table(&uri).await;
    let hook_uri = uri.clone();
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook_fired = fired.clone();
    let hook = move || {
        if hook_fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let uri = hook_uri.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let mut t = Table::open(&uri).await.unwrap();
                let report = t.delete("order_id = 30").await.unwrap();
                assert_eq!(report.files_marked, 1, "{report:?}");
            })
        });
    };
    let options = CompactOptions { before_commit: Some(std::sync::Arc::new(hook)), ..Default::default() };
    let report = table.compact(options).await.unwrap();
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    model.remove(&30);
    assert_eq!(report.bins_planned, 1, "{report:?}");
    assert_eq!(report.bins_committed, 0, "{report:?}");
    assert_eq!(report.abandoned.len(), 1);
    assert!(report.abandoned[0].reason.contains("deleted more of its rows"), "{:?}", report.abandoned);
    assert_eq!(table_rows(&table).await, model_rows(&model), "the deleted row stays deleted");

    // The next run compacts day 0, dropping the row.
    let report = table.compact(CompactOptions::default()).await.unwrap();
    assert_eq!(report.bins_committed, 1, "{report:?}");
    assert_eq!(report.rows, 99);
    assert_eq!(table_rows(&table).await, model_rows(&model));
    assert_eq!(python_orders(&uri), python_expected(&model));
}
