//! Compaction of tables with deletion vectors: deleted rows are dropped while
//! rewriting, heavily deleted files are purged, and a bin whose input gained deletes
//! while it ran is given up rather than bring those rows back.

use std::collections::BTreeMap;

use sediment::{CompactOptions, Table};

use crate::common::{s3_uri, table_rows};
use crate::merge::{Order, model_rows, once_before_commit, orders, orders_batch, orders_in_parts, python_orders};

/// A table with deletion vectors enabled: day 0 in four 25-row files, day 1 in one
/// 100-row file.
async fn dv_table(uri: &str) -> (Table, BTreeMap<i64, Order>) {
    orders_in_parts(uri, [0..25, 25..50, 50..75, 75..100, 100..200], true).await
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
    // Fires once; the report below shows that it did.
    let hook = once_before_commit(&uri, |mut t: Table| async move {
        let report = t.delete("order_id = 30").await.unwrap();
        assert_eq!(report.files_marked, 1, "{report:?}");
    });
    let guard: sediment::maintain::compaction::CommitGuard = std::sync::Arc::new(move || {
        hook();
        Ok(())
    });
    let options = CompactOptions { before_commit: Some(guard), ..Default::default() };
    let report = table.compact(options).await.unwrap();
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

/// A merge on a table with deletion vectors races a delete that marks rows of the
/// same file right before the merge commits: both remove the file's old `add`, so the
/// merge is planned again and its vector then includes the delete's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merge_racing_a_delete_on_the_same_file_is_planned_again() {
    let uri = s3_uri("dv-merge-race");
    let (mut table, mut model) = dv_table(&uri).await;
    // Fires once; the report below shows that it did.
    let hook = once_before_commit(&uri, |mut t: Table| async move {
        let report = t.delete("order_id = 150").await.unwrap();
        assert_eq!(report.files_marked, 1, "{report:?}");
    });
    let source = orders(120..130, "paid");
    let report = table
        .merge([orders_batch(&source)])
        .on(["order_id"])
        .when_matched(sediment::MatchedAction::UpdateAll)
        .when_not_matched_insert_all()
        .before_commit(hook)
        .execute()
        .await
        .unwrap();
    assert_eq!(report.retries, 1, "{report:?}");
    assert_eq!((report.files_marked, report.rows_updated), (1, 10), "{report:?}");
    model.remove(&150);
    for o in source {
        model.insert(o.id, o);
    }
    assert_eq!(table_rows(&table).await, model_rows(&model), "the delete's row stays deleted");
    let day1 = table.files().unwrap().into_iter().find(|f| f.deleted_rows > 0).unwrap();
    assert_eq!(day1.deleted_rows, 11, "one vector with the delete's row and the merge's ten");
    assert_eq!(python_orders(&uri), python_expected(&model));
}

/// A merge that marks rows of many files writes their new versions, and its
/// inserts, into one file per partition (not one per touched file); after a failed
/// merge none of them is left behind.
#[tokio::test]
async fn new_rows_of_a_merge_share_one_file_per_partition() {
    let uri = s3_uri("dv-merge-new-rows");
    let (mut table, mut model) = dv_table(&uri).await;
    // Updates in each of day 0's four files and in day 1's file; inserts on day 2.
    let mut source = Vec::new();
    for id in [5, 30, 55, 80, 81, 150] {
        source.extend(orders(id..id + 1, "paid"));
    }
    source.extend(orders(200..210, "new"));
    let report = table.upsert([orders_batch(&source)], ["order_id"]).await.unwrap();
    assert_eq!((report.files_marked, report.rows_updated, report.rows_inserted), (5, 6, 10), "{report:?}");
    assert_eq!(report.files_added, 3, "days 0, 1 and 2 get one new file each: {report:?}");
    for o in source {
        model.insert(o.id, o);
    }
    assert_eq!(table_rows(&table).await, model_rows(&model));
    assert_eq!(python_orders(&uri), python_expected(&model));

    // A merge that fails after writing new versions (an insert whose value cannot be
    // computed) commits nothing and deletes what it wrote.
    assert!(table.orphan_files().await.unwrap().is_empty());
    let version = table.version();
    let mut bad = orders(20..22, "shipped");
    bad.extend(orders(300..301, "new"));
    let err = table
        .merge([orders_batch(&bad)])
        .on(["order_id"])
        .when_matched(sediment::MatchedAction::UpdateAll)
        .when_not_matched(sediment::NotMatchedAction::Insert(vec![
            ("order_id".into(), "source.order_id".into()),
            ("amount".into(), "CAST(source.status AS DOUBLE)".into()),
        ]))
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("new"), "{err}");
    assert_eq!(table.version(), version, "nothing committed");
    let orphans: Vec<String> = table.orphan_files().await.unwrap().into_iter().map(|o| o.path).collect();
    assert!(orphans.is_empty(), "the failed merge's files are deleted: {orphans:?}");
    assert_eq!(table_rows(&table).await, model_rows(&model));
}

/// A deletion-vector file that went missing: merges and deletes stop with an error
/// naming the data file and commit nothing; compaction gives up that file's bin.
#[tokio::test]
async fn a_missing_deletion_vector_file_is_an_error_naming_the_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let (mut table, _) = dv_table(&uri).await;
    table.delete("order_id = 150").await.unwrap();
    let marked = table.files().unwrap().into_iter().find(|f| f.has_deletion_vector).unwrap();
    let vectors: Vec<_> = std::fs::read_dir(dir.path().join("t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("deletion_vector_"))
        .collect();
    assert_eq!(vectors.len(), 1);
    std::fs::remove_file(&vectors[0]).unwrap();
    let version = table.version();

    let err = table.upsert([orders_batch(&orders(160..161, "paid"))], ["order_id"]).await.unwrap_err();
    assert!(err.to_string().contains(&marked.path) && err.to_string().contains("deletion vector"), "{err}");
    let err = table.delete("order_id = 170").await.unwrap_err();
    assert!(err.to_string().contains(&marked.path), "{err}");
    table.refresh().await.unwrap();
    assert_eq!(table.version(), version, "nothing committed");
    // Compaction gives up that file's bin, naming it, and compacts day 0.
    let report =
        table.compact(CompactOptions { max_deleted_rows_ratio: Some(0.0), ..Default::default() }).await.unwrap();
    assert_eq!((report.bins_planned, report.bins_committed), (2, 1), "{report:?}");
    assert!(report.abandoned.iter().any(|b| b.reason.contains(&marked.path)), "{report:?}");
    assert!(table.files().unwrap().iter().any(|f| f.path == marked.path), "the marked file stays");
}
