//! Compaction against the S3 server: content kept, files merged, time travel intact,
//! conflicts with concurrent writers handled, crashes invisible.

use std::sync::Arc;

use sediment::arrow::array::{Array, Int64Array, RecordBatch};
use sediment::{Clustering, CompactOptions, OpenOptions, Table, WriteOptions};

use crate::common::{ScanRun, append_events, canonical_rows, s3_uri, table_rows};

async fn fragmented_table(name: &str, appends: i64, rows: usize) -> (String, Table) {
    let uri = s3_uri(name);
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for i in 0..appends {
        append_events(&mut table, i * rows as i64, rows).await;
    }
    (uri, table)
}

#[tokio::test]
async fn compaction_keeps_rows_merges_files_and_converges() {
    let (uri, mut table) = fragmented_table("compact", 20, 500).await;
    let before_version = table.version().unwrap();
    let before_rows = table_rows(&table).await;
    assert_eq!(table.files().unwrap().len(), 100);
    let health = table.info().unwrap().health;
    assert!(health.score < 10, "100 small files in 5 partitions: {}", health.score);

    let plan = table.compaction_plan(&CompactOptions::default()).unwrap();
    assert_eq!(plan.partitions.len(), 5);
    assert_eq!(plan.bins().count(), 5);
    assert_eq!(plan.input_files(), 100);

    let report = table.compact(CompactOptions::default()).await.unwrap();
    assert_eq!(report.files_removed, 100);
    assert_eq!(report.files_added, 5);
    assert_eq!(report.bins_committed, 5);
    assert!(report.abandoned.is_empty());
    assert_eq!(report.rows, 10_000);
    assert!(report.bytes_written > 0 && (report.write_amplification() - 1.0).abs() < 1e-9, "{report:?}");
    assert_eq!(table.files().unwrap().len(), 5);
    assert_eq!(table_rows(&table).await, before_rows, "same rows after compaction");
    assert_eq!(table.info().unwrap().health.score, 100);

    // Time travel to before the compaction reads the old files.
    let old = Table::open_with(&uri, OpenOptions::new().version(before_version)).await.unwrap();
    assert_eq!(old.files().unwrap().len(), 100);
    assert_eq!(table_rows(&old).await, before_rows);

    // The commit is an OPTIMIZE by Sediment that changes no data.
    let history = table.history(Some(1)).await.unwrap();
    assert_eq!(history[0].operation.as_deref(), Some("OPTIMIZE"));
    assert_eq!(history[0].engine.as_deref(), Some(sediment::table::commit::engine_info().as_str()));
    let log = table.delta().log_store().read_commit_entry(history[0].version).await.unwrap().unwrap();
    let log = String::from_utf8(log.to_vec()).unwrap();
    let data_change_flags: Vec<bool> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|a| a.get("add").or_else(|| a.get("remove")).map(|x| x["dataChange"].as_bool().unwrap()))
        .collect();
    assert_eq!(data_change_flags.len(), 105);
    assert!(data_change_flags.iter().all(|d| !d), "compaction commits dataChange = false");

    // A second run on the healthy table plans nothing and commits nothing.
    let version = table.version();
    let second = table.compact(CompactOptions::default()).await.unwrap();
    assert_eq!(second.bins_planned, 0);
    assert!(second.versions.is_empty());
    assert_eq!(table.version(), version);
}

#[tokio::test]
async fn filters_budgets_small_targets_and_clustering() {
    let (_uri, mut table) = fragmented_table("compact-knobs", 12, 2_000).await;
    let before_rows = table_rows(&table).await;

    // Only one partition.
    let report = table.compact(CompactOptions::default().filter("event_date = '2024-05-02'")).await.unwrap();
    assert_eq!(report.files_removed, 12);
    let per_day = |t: &Table| {
        let mut counts = std::collections::BTreeMap::new();
        for f in t.files().unwrap() {
            *counts.entry(f.partition_values["event_date"].clone().unwrap()).or_insert(0) += 1;
        }
        counts
    };
    assert_eq!(per_day(&table)["2024-05-02"], 1);
    assert_eq!(per_day(&table)["2024-05-01"], 12);
    let err = table.compaction_plan(&CompactOptions::default().filter("user_id = 3")).unwrap_err();
    assert!(err.to_string().contains("partition columns"), "{err}");

    // A small target makes several files per partition, each at most the target, and
    // planning again on the result plans nothing.
    let target = 64 * 1024;
    let options = CompactOptions { target_file_size: Some(target), ..Default::default() };
    let report = table.compact(options.clone()).await.unwrap();
    assert!(report.files_added > 5, "{report:?}");
    for f in table.files().unwrap() {
        // 2024-05-02 was compacted above into one file above the new target: left alone.
        if f.partition_values["event_date"].as_deref() != Some("2024-05-02") {
            assert!(f.size <= target + target / 4, "{} is {} bytes", f.path, f.size);
        }
    }
    assert!(table.compaction_plan(&options).unwrap().is_empty(), "compaction converged");
    assert_eq!(table_rows(&table).await, before_rows);

    // A budget limits one run.
    let (_uri, mut budgeted) = fragmented_table("compact-budget", 6, 1_000).await;
    let total: u64 = budgeted.files().unwrap().iter().map(|f| f.size).sum();
    let options = CompactOptions { max_bytes: Some(total / 3), ..Default::default() };
    let plan = budgeted.compaction_plan(&options).unwrap();
    assert!(plan.input_bytes() <= total / 3 && plan.deferred_bins > 0, "{plan:?}");
    budgeted.compact(options).await.unwrap();

    // Sorting within rewritten files.
    let (_uri, mut sorted) = fragmented_table("compact-sort", 6, 1_000).await;
    let rows = table_rows(&sorted).await;
    let options = CompactOptions {
        clustering: Some(Clustering::SortBy { columns: vec!["user_id".into()] }),
        ..Default::default()
    };
    sorted.compact(options).await.unwrap();
    assert_eq!(table_rows(&sorted).await, rows);
    let (batches, _) = sorted.scan().filter("event_date = '2024-05-04'").columns(["user_id"]).run().await;
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
        .collect();
    assert!(ids.len() > 100 && ids.windows(2).all(|w| w[0] <= w[1]), "rows are sorted by user_id in the file");

    // Z-order keeps the content; a clustering column must exist.
    let (_uri, mut zordered) = fragmented_table("compact-zorder", 4, 1_000).await;
    let rows = table_rows(&zordered).await;
    let options = CompactOptions {
        clustering: Some(Clustering::ZOrder { columns: vec!["user_id".into(), "amount".into()] }),
        ..Default::default()
    };
    zordered.compact(options).await.unwrap();
    assert_eq!(table_rows(&zordered).await, rows);
    let bad =
        CompactOptions { clustering: Some(Clustering::SortBy { columns: vec!["nope".into()] }), ..Default::default() };
    let (_uri, mut other) = fragmented_table("compact-bad", 3, 100).await;
    let err = other.compact(bad).await.unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
    assert_eq!(other.files().unwrap().len(), 15, "nothing changed");
}

#[tokio::test]
async fn old_files_missing_new_columns_are_compacted_with_nulls() {
    let (_uri, mut table) = fragmented_table("compact-evolved", 3, 200).await;
    // Add a column; new files carry it, old ones do not.
    let batch = sediment::demo::events_batch(10_000, 200);
    let mut columns: Vec<(String, Arc<dyn Array>)> =
        batch.schema().fields().iter().zip(batch.columns()).map(|(f, c)| (f.name().clone(), c.clone())).collect();
    columns.push(("source".into(), Arc::new(sediment::arrow::array::StringArray::from(vec![Some("app"); 200]))));
    let evolved = RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, c)| (n, c, true))).unwrap();
    table.write([evolved], WriteOptions::append().schema_mode(sediment::SchemaMode::Merge)).await.unwrap();
    let rows = table_rows(&table).await;
    assert!(rows.iter().any(|r| r.contains("source=NULL")) && rows.iter().any(|r| r.contains("source=app")));
    table.compact(CompactOptions::default()).await.unwrap();
    assert_eq!(table.files().unwrap().len(), 5);
    assert_eq!(table_rows(&table).await, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_races_appenders_and_a_deleter_without_losing_rows() {
    let (uri, table) = fragmented_table("compact-race", 30, 300).await;
    let initial = sediment::demo::events_batch(0, 9_000);

    // Compact slowly: one bin at a time, a commit per bin.
    let compactor = {
        let mut table = table.clone();
        tokio::spawn(async move {
            let mut options = CompactOptions::default();
            options.executor.max_concurrent_bins = 1;
            options.executor.commit_every_bins = 1;
            table.compact(options).await.unwrap()
        })
    };
    // Appenders add new files concurrently.
    let appenders: Vec<_> = (0..3)
        .map(|w| {
            let uri = uri.clone();
            tokio::spawn(async move {
                let mut t = Table::open(&uri).await.unwrap();
                for i in 0..3 {
                    t.write([sediment::demo::events_batch(100_000 + w * 1_000 + i * 100, 100)], WriteOptions::append())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // A deleter removes rows (rewriting the files that hold them), retrying on conflict.
    let deleter = {
        let uri = uri.clone();
        tokio::spawn(async move {
            for attempt in 0..20 {
                let t = Table::open(&uri).await.unwrap();
                match t.delta().clone().delete().with_predicate("event_id < 1500").await {
                    Ok(_) => return attempt,
                    Err(e) => {
                        assert!(
                            e.to_string().to_lowercase().contains("conflict") || e.to_string().contains("Transaction"),
                            "{e}"
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
            panic!("the deleter never committed");
        })
    };
    let report = compactor.await.unwrap();
    for a in appenders {
        a.await.unwrap();
    }
    deleter.await.unwrap();

    // Model: initial rows without the deleted ids, plus every appended batch.
    let keep = sediment::read::predicate::Predicate::parse("event_id >= 1500", &initial.schema())
        .unwrap()
        .matches(&initial)
        .unwrap();
    let mut expected = vec![sediment::arrow::compute::filter_record_batch(&initial, &keep).unwrap()];
    for w in 0..3 {
        for i in 0..3 {
            expected.push(sediment::demo::events_batch(100_000 + w * 1_000 + i * 100, 100));
        }
    }
    let latest = Table::open(&uri).await.unwrap();
    assert_eq!(table_rows(&latest).await, canonical_rows(&expected), "no row lost or duplicated");
    assert_eq!(report.bins_committed + report.abandoned.len(), report.bins_planned, "{report:?}");
    assert_eq!(report.versions.len(), report.bins_committed, "one commit per bin: partial progress is committed");
    for abandoned in &report.abandoned {
        assert!(abandoned.reason.contains("removed one of its input files"), "{abandoned:?}");
    }
    // Files of abandoned bins were deleted.
    let orphans: Vec<String> = latest.orphan_files().await.unwrap().into_iter().map(|o| o.path).collect();
    for abandoned in &report.abandoned {
        assert!(!abandoned.deleted_outputs.is_empty());
        for path in &abandoned.deleted_outputs {
            assert!(!orphans.contains(path), "{path} was left behind");
        }
    }
    eprintln!("abandoned: {:?}\norphans: {orphans:?}", report.abandoned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bins_whose_inputs_a_concurrent_delete_removed_are_given_up() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let (uri, mut table) = fragmented_table("compact-conflict", 4, 500).await;
    let fired = Arc::new(AtomicBool::new(false));
    let hook_uri = uri.clone();
    let hook_fired = fired.clone();
    // Right before the compactor's first commit, another writer deletes a partition.
    let hook = move || {
        if hook_fired.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let uri = hook_uri.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let t = Table::open(&uri).await.unwrap();
                t.delta().clone().delete().with_predicate("event_date = '2024-05-01'").await.unwrap();
            })
        });
        Ok(())
    };
    let options = CompactOptions { before_commit: Some(Arc::new(hook)), ..Default::default() };
    let report = table.compact(options).await.unwrap();
    assert!(fired.load(Ordering::SeqCst));
    assert_eq!(report.bins_planned, 5);
    assert_eq!(report.bins_committed, 4, "{report:?}");
    assert_eq!(report.commit_conflicts, 1);
    assert!(report.write_amplification() > 1.0, "the given-up bin's bytes were written for nothing");
    assert_eq!(report.abandoned.len(), 1);
    let abandoned = &report.abandoned[0];
    assert_eq!(abandoned.partition, vec![("event_date".to_string(), Some("2024-05-01".to_string()))]);
    assert!(abandoned.reason.contains("removed one of its input files"), "{abandoned:?}");
    let orphans: Vec<String> = table.orphan_files().await.unwrap().into_iter().map(|o| o.path).collect();
    assert_eq!(abandoned.deleted_outputs.len(), 1);
    assert!(!orphans.contains(&abandoned.deleted_outputs[0]), "the given-up bin's file is deleted");

    // The result is as if the delete ran first and the compaction after it.
    let all = sediment::demo::events_batch(0, 2_000);
    let keep = sediment::read::predicate::Predicate::parse("event_date <> '2024-05-01'", &all.schema())
        .unwrap()
        .matches(&all)
        .unwrap();
    let expected = sediment::arrow::compute::filter_record_batch(&all, &keep).unwrap();
    assert_eq!(table_rows(&table).await, canonical_rows(&[expected]));
    assert_eq!(table.files().unwrap().len(), 4);
}

/// Bins whose inputs' row groups are all large are written by copying the row
/// groups undecoded. Here every row group counts as large (a 1-byte threshold): the
/// rows stay, each output's statistics (merged from its inputs') bound its rows, a
/// filtered scan still finds every row, and the Python reader reads the files.
#[tokio::test]
async fn large_row_groups_are_copied_undecoded() {
    let (uri, mut table) = fragmented_table("compact-copy", 6, 2_000).await;
    let before = table_rows(&table).await;
    // With the default threshold (8 MiB) these small row groups are decoded.
    let plan = table.compaction_plan(&CompactOptions::default()).unwrap();
    assert_eq!(plan.bins().count(), 5);

    let mut options = CompactOptions::default();
    options.executor.copy_row_groups_above = Some(1);
    let report = table.compact(options).await.unwrap();
    assert_eq!((report.bins_committed, report.bins_copied), (5, 5), "{report:?}");
    assert_eq!(report.rows, 12_000);
    assert_eq!(table_rows(&table).await, before);

    // Each output's statistics: its row count, and bounds that hold its rows.
    let state = table.state().unwrap();
    for view in state.log_data().iter() {
        let stats: serde_json::Value = serde_json::from_str(&view.stats().expect("statistics")).unwrap();
        let day = view.partition_values_map()["event_date"].clone().unwrap();
        let ids = day_ids(&table, &day).await;
        assert_eq!(stats["numRecords"].as_u64().unwrap(), ids.len() as u64);
        let (lo, hi) = (*ids.iter().min().unwrap(), *ids.iter().max().unwrap());
        assert_eq!(stats["minValues"]["event_id"].as_i64(), Some(lo), "{stats}");
        assert_eq!(stats["maxValues"]["event_id"].as_i64(), Some(hi), "{stats}");
        assert_eq!(stats["nullCount"]["event_id"].as_u64(), Some(0));
        // A point filter uses the statistics and still finds its row.
        let (found, _) = table.scan().filter(format!("event_id = {hi}")).run().await;
        assert_eq!(found.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    }
    let (rows, _) = crate::interop::python_read(&uri);
    assert_eq!(rows, 12_000);

    // Large and small row groups in one bin: the large are copied, the small decoded
    // and encoded together into a new row group of the same file.
    let (uri, mut mixed) = fragmented_table("compact-copy-mixed", 1, 20_000).await;
    for i in 0..3 {
        append_events(&mut mixed, 100_000 + i * 50, 50).await;
    }
    let rows = table_rows(&mixed).await;
    let sizes: Vec<u64> = mixed.files().unwrap().iter().map(|f| f.size).collect();
    let (small, large) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    assert!(large > 4 * small, "{sizes:?}");
    let mut options = CompactOptions::default();
    options.executor.copy_row_groups_above = Some(large / 2);
    let report = mixed.compact(options).await.unwrap();
    assert_eq!((report.bins_committed, report.bins_copied), (5, 5), "{report:?}");
    assert!(report.bytes_read >= sizes.iter().sum::<u64>() / 2, "{report:?}");
    assert_eq!(table_rows(&mixed).await, rows);
    assert_eq!(mixed.files().unwrap().iter().map(|f| f.rows.unwrap()).sum::<u64>(), 20_150);
    let (python_rows, _) = crate::interop::python_read(&uri);
    assert_eq!(python_rows, 20_150);
    // The page indexes (offsets moved for copied chunks) point at the right pages: a
    // row selection read through them equals the same rows read plainly.
    for file in mixed.files().unwrap() {
        use object_store::ObjectStoreExt as _;
        use sediment::deltalake::parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
        let path = object_store::path::Path::from_url_path(&file.path).unwrap();
        let bytes = mixed.object_store().get(&path).await.unwrap().bytes().await.unwrap();
        let options = ArrowReaderOptions::new()
            .with_page_index_policy(sediment::deltalake::parquet::file::metadata::PageIndexPolicy::Required);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes.clone(), options).unwrap();
        assert!(builder.metadata().offset_index().is_some(), "{} has page indexes", file.path);
        assert!(builder.metadata().num_row_groups() >= 2, "copied and encoded row groups in {}", file.path);
        selection_reads_like_a_plain_read(builder, bytes, &file.path);
    }

    // Files whose schema differs (a column added later) are decoded instead.
    let (_uri, mut evolved) = fragmented_table("compact-copy-evolved", 2, 500).await;
    let batch = sediment::demo::events_batch(10_000, 500);
    let mut columns: Vec<(String, Arc<dyn Array>)> =
        batch.schema().fields().iter().zip(batch.columns()).map(|(f, c)| (f.name().clone(), c.clone())).collect();
    columns.push(("source".into(), Arc::new(sediment::arrow::array::StringArray::from(vec![Some("app"); 500]))));
    let batch = RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, c)| (n, c, true))).unwrap();
    evolved.write([batch], WriteOptions::append().schema_mode(sediment::SchemaMode::Merge)).await.unwrap();
    let rows = table_rows(&evolved).await;
    let mut options = CompactOptions::default();
    options.executor.copy_row_groups_above = Some(1);
    let report = evolved.compact(options).await.unwrap();
    assert_eq!((report.bins_committed, report.bins_copied), (5, 0), "{report:?}");
    assert_eq!(table_rows(&evolved).await, rows);
}

/// Small files written by Sediment: the columns written without a dictionary keep their
/// input pages (spliced), the others are encoded anew, and the files read back the same
/// everywhere: rows, Delta statistics, page indexes, another reader.
#[tokio::test]
async fn plain_columns_of_small_files_are_spliced_page_by_page() {
    let (uri, mut table) = fragmented_table("compact-splice", 4, 10_000).await;
    let (plain_uri, mut plain) = fragmented_table("compact-splice-plain", 4, 10_000).await;
    let inputs: std::collections::HashMap<String, usize> =
        table.files().unwrap().iter().fold(Default::default(), |mut counts, file| {
            *counts.entry(file.partition_values["event_date"].clone().unwrap_or_default()).or_default() += 1;
            counts
        });
    let before = table_rows(&table).await;
    let mut options = CompactOptions::default();
    options.executor.splice_pages_above_rows = Some(1_000);
    let report = table.compact(options.clone()).await.unwrap();
    assert_eq!((report.bins_committed, report.files_removed, report.rows), (5, 20, 40_000), "{report:?}");
    assert_eq!(table_rows(&table).await, before);
    // The same compaction with every column encoded anew makes the same rows.
    options.executor.splice_pages_above_rows = None;
    plain.compact(options).await.unwrap();
    assert_eq!(table_rows(&plain).await, before);
    let (rows, _) = crate::interop::python_read(&uri);
    assert_eq!(rows, 40_000);
    let (rows, _) = crate::interop::python_read(&plain_uri);
    assert_eq!(rows, 40_000);

    let state = table.state().unwrap();
    for view in state.log_data().iter() {
        use object_store::ObjectStoreExt as _;
        use sediment::deltalake::parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
        let day = view.partition_values_map()["event_date"].clone().unwrap();
        let path = object_store::path::Path::from_url_path(view.path().as_ref()).unwrap();
        let bytes = table.object_store().get(&path).await.unwrap().bytes().await.unwrap();
        let options = ArrowReaderOptions::new()
            .with_page_index_policy(sediment::deltalake::parquet::file::metadata::PageIndexPolicy::Required);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes.clone(), options).unwrap();
        let metadata = builder.metadata().clone();
        assert!(metadata.file_metadata().created_by().unwrap().contains("pages spliced"), "{day}");
        // `event_id` (unique, written plain): one page per input, undecoded.
        let id_pages = metadata.offset_index().unwrap()[0][0].page_locations().len();
        assert_eq!(id_pages, inputs[&day], "{day}");
        // `event_type` (five values) keeps a dictionary: encoded anew, one dictionary.
        assert!(metadata.row_group(0).column(2).dictionary_page_offset().is_some());

        // Delta statistics of the output bound its rows.
        let stats: serde_json::Value = serde_json::from_str(&view.stats().expect("statistics")).unwrap();
        let ids = day_ids(&table, &day).await;
        assert_eq!(stats["numRecords"].as_u64().unwrap(), ids.len() as u64);
        let (lo, hi) = (*ids.iter().min().unwrap(), *ids.iter().max().unwrap());
        assert_eq!(
            (stats["minValues"]["event_id"].as_i64(), stats["maxValues"]["event_id"].as_i64()),
            (Some(lo), Some(hi))
        );
        // Parquet's own chunk statistics too.
        let chunk = metadata.row_group(0).column(0).statistics().unwrap();
        assert_eq!(chunk.min_bytes_opt(), Some(&lo.to_le_bytes()[..]), "{day}");
        assert_eq!(chunk.max_bytes_opt(), Some(&hi.to_le_bytes()[..]), "{day}");
        let (found, _) = table.scan().filter(format!("event_id = {hi}")).run().await;
        assert_eq!(found.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);

        // A row selection read through the page indexes equals the same rows read plainly.
        selection_reads_like_a_plain_read(builder, bytes, &day);
    }
}

/// Two compactions of the same files: the one that commits second finds its inputs
/// gone and gives its bins up; the rows are there once. (delta-rs 1.1's conflict
/// checker does not count a `remove` with dataChange = false as a conflict: rebased
/// inside delta-rs, both commits would land and every row would be there twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactions_of_the_same_files_commit_once() {
    let (uri, table) = fragmented_table("compact-twice", 6, 50).await;
    let rows = table_rows(&table).await;
    let other = {
        let uri = uri.clone();
        Arc::new(move || {
            // The other compaction runs to its commit while this one is about to commit.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let mut other = Table::open(&uri).await.unwrap();
                    let report = other.compact(CompactOptions::default()).await.unwrap();
                    assert!(report.bins_committed > 0, "{report:?}");
                })
            });
        })
    };
    let once = std::sync::Once::new();
    let hook: sediment::maintain::compaction::CommitGuard = Arc::new(move || {
        once.call_once(|| other());
        Ok(())
    });
    let mut table = Table::open(&uri).await.unwrap();
    let report = table.compact(CompactOptions { before_commit: Some(hook), ..Default::default() }).await.unwrap();
    assert_eq!(report.bins_committed, 0, "{report:?}");
    assert!(
        !report.abandoned.is_empty() && report.abandoned[0].reason.contains("another writer removed"),
        "{report:?}"
    );
    let table = Table::open(&uri).await.unwrap();
    assert_eq!(table_rows(&table).await, rows, "every row once");
}

/// The `event_id`s of the table's rows on `day`.
async fn day_ids(table: &Table, day: &str) -> Vec<i64> {
    let (batches, _) = table.scan().filter(format!("event_date = '{day}'")).columns(["event_id"]).run().await;
    batches.iter().flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()).collect()
}

/// A row selection read through a file's page indexes (`builder`, loaded with them)
/// holds the same rows as the same part of a plain read of the file (`bytes`).
fn selection_reads_like_a_plain_read(
    builder: sediment::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes>,
    bytes: bytes::Bytes,
    label: &str,
) {
    use sediment::deltalake::parquet::arrow::arrow_reader::{
        ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
    };
    let total = builder.metadata().file_metadata().num_rows() as usize;
    let (skip, take) = (total / 3, total / 3);
    let selection = RowSelection::from(vec![RowSelector::skip(skip), RowSelector::select(take)]);
    let selected: Vec<RecordBatch> =
        builder.with_row_selection(selection).build().unwrap().map(Result::unwrap).collect();
    let all: Vec<RecordBatch> =
        ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap().map(Result::unwrap).collect();
    let all = sediment::arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
    assert_eq!(canonical_rows(&selected), canonical_rows(&[all.slice(skip, take)]), "{label}");
}
