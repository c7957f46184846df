//! Model-based test of merges, deletes and updates: random tables and random
//! operation sequences are applied to a Sediment table and to a plain in-memory map;
//! the two must hold the same rows after every step and at every version. Half the
//! tables enable deletion vectors, so merges mark rows instead of rewriting files,
//! and compactions in the sequences fold the vectors away; restores bring back the
//! version after an earlier step; tags (some expiring) name earlier versions and
//! vacuums with a random horizon delete what no version inside the window and no live
//! tag needs: afterwards every tagged version and every version inside the window
//! reads exactly the model's rows, and any other version either still does or fails
//! with an error saying a file was vacuumed. Half run their operations
//! over a store whose requests take a random time up to a few milliseconds, so the
//! several reads every operation has in flight complete out of order.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sediment::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::{MatchedAction, NotMatchedAction, NotMatchedBySourceAction, OpenOptions, Table, WriteOptions};

use crate::common::{canonical_rows, table_rows};

/// key → (value, group); the group is the partition column.
type Model = BTreeMap<i64, (i64, String)>;
type Row = (i64, i64, String);

#[derive(Debug, Clone)]
enum Op {
    /// Update every column of matched rows, insert the rest.
    Upsert(Vec<Row>),
    /// Update matched rows only when the source value is larger; insert the rest.
    UpsertIfLarger(Vec<Row>),
    /// Delete the rows whose keys the source holds.
    DeleteMatched(Vec<Row>),
    /// Insert only the rows whose keys the table lacks (no matched clause).
    InsertNew(Vec<Row>),
    /// Upsert, and delete target rows of group `g` that the source does not mention.
    Sync(Vec<Row>, String),
    /// `DELETE WHERE v < x`.
    DeleteWhere(i64),
    /// `UPDATE SET v = v + 1 WHERE k % m = 0`.
    UpdateWhere(i64),
    /// Compact every partition (small files, and files whose deletion vectors delete
    /// more than this share of their rows); row groups of at least the given bytes
    /// are copied undecoded (the others decoded), wherever the inputs allow it.
    Compact(f64, Option<u64>),
    /// Restore the version after an earlier step (this number modulo the steps so far).
    Restore(usize),
    /// Tag the version after an earlier step; `expiring`: the tag expires within the hour.
    Tag(usize, bool),
    /// Vacuum with the horizon at the commit time of the version after one of the last
    /// three steps;
    /// `full` lists storage too; `later` vacuums a day from now (expiring tags expired).
    Vacuum { at: usize, full: bool, later: bool },
}

fn rows(max_len: usize) -> impl Strategy<Value = Vec<Row>> {
    prop::collection::btree_map(0i64..60, (0i64..100, prop::sample::select(vec!["a", "b", "c"])), 0..max_len)
        .prop_map(|m| m.into_iter().map(|(k, (v, g))| (k, v, g.to_string())).collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => rows(20).prop_map(Op::Upsert),
        1 => rows(20).prop_map(Op::UpsertIfLarger),
        1 => rows(10).prop_map(Op::DeleteMatched),
        1 => rows(15).prop_map(Op::InsertNew),
        1 => (rows(15), prop::sample::select(vec!["a", "b", "c"])).prop_map(|(r, g)| Op::Sync(r, g.to_string())),
        1 => (0i64..100).prop_map(Op::DeleteWhere),
        1 => (1i64..5).prop_map(Op::UpdateWhere),
        1 => (prop::sample::select(vec![0.0, 0.05, 0.5]), prop::sample::select(vec![None, Some(1), Some(280)]))
            .prop_map(|(r, c)| Op::Compact(r, c)),
        1 => (0usize..16).prop_map(Op::Restore),
        2 => (0usize..16, any::<bool>()).prop_map(|(at, expiring)| Op::Tag(at, expiring)),
        2 => (0usize..16, any::<bool>(), any::<bool>()).prop_map(|(at, full, later)| Op::Vacuum { at, full, later }),
    ]
}

fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new("g", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2.as_str()))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn model_rows(model: &Model) -> Vec<String> {
    let rows: Vec<Row> = model.iter().map(|(k, (v, g))| (*k, *v, g.clone())).collect();
    canonical_rows(&[batch(&rows)])
}

fn apply_to_model(model: &mut Model, op: &Op) {
    match op {
        Op::Upsert(rows) => {
            for (k, v, g) in rows {
                model.insert(*k, (*v, g.clone()));
            }
        }
        Op::UpsertIfLarger(rows) => {
            for (k, v, g) in rows {
                match model.get(k) {
                    Some((old, _)) if *old >= *v => {}
                    _ => {
                        model.insert(*k, (*v, g.clone()));
                    }
                }
            }
        }
        Op::DeleteMatched(rows) => {
            for (k, _, _) in rows {
                model.remove(k);
            }
        }
        Op::InsertNew(rows) => {
            for (k, v, g) in rows {
                model.entry(*k).or_insert((*v, g.clone()));
            }
        }
        Op::Sync(rows, group) => {
            model.retain(|k, (_, g)| g != group || rows.iter().any(|r| r.0 == *k));
            for (k, v, g) in rows {
                model.insert(*k, (*v, g.clone()));
            }
        }
        Op::DeleteWhere(x) => model.retain(|_, (v, _)| *v >= *x),
        Op::Compact(..) | Op::Restore(_) | Op::Tag(..) | Op::Vacuum { .. } => {}
        Op::UpdateWhere(m) => {
            for (k, (v, _)) in model.iter_mut() {
                if k % m == 0 {
                    *v += 1;
                }
            }
        }
    }
}

async fn apply_to_table(table: &mut Table, op: &Op, limit: Option<usize>) -> sediment::Result<()> {
    match op {
        Op::Upsert(rows)
        | Op::UpsertIfLarger(rows)
        | Op::DeleteMatched(rows)
        | Op::InsertNew(rows)
        | Op::Sync(rows, _)
            if rows.is_empty() =>
        {
            // An empty source is not a merge; the model is unchanged too (except Sync,
            // which the strategy keeps meaningful only with rows).
            if let Op::Sync(_, group) = op {
                table.delete(&format!("g = '{group}'")).await?;
            }
        }
        Op::Upsert(rows) => {
            table
                .merge([batch(rows)])
                .on(["k"])
                .when_matched(MatchedAction::UpdateAll)
                .when_not_matched_insert_all()
                .source_memory_limit(limit)
                .execute()
                .await?;
        }
        Op::UpsertIfLarger(rows) => {
            table
                .merge([batch(rows)])
                .on(["k"])
                .when_matched_if("source.v > target.v", MatchedAction::UpdateAll)
                .when_not_matched(NotMatchedAction::InsertAll)
                .source_memory_limit(limit)
                .execute()
                .await?;
        }
        Op::DeleteMatched(rows) => {
            table
                .merge([batch(rows)])
                .on(["k"])
                .when_matched(MatchedAction::Delete)
                .source_memory_limit(limit)
                .execute()
                .await?;
        }
        Op::InsertNew(rows) => {
            table
                .merge([batch(rows)])
                .on(["k"])
                .when_not_matched_insert_all()
                .source_memory_limit(limit)
                .execute()
                .await?;
        }
        Op::Sync(rows, group) => {
            table
                .merge([batch(rows)])
                .on(["k"])
                .when_matched(MatchedAction::UpdateAll)
                .when_not_matched_insert_all()
                .when_not_matched_by_source_if(format!("target.g = '{group}'"), NotMatchedBySourceAction::Delete)
                .execute()
                .await?;
        }
        Op::DeleteWhere(x) => {
            table.delete(&format!("v < {x}")).await?;
        }
        Op::UpdateWhere(m) => {
            table.update(&format!("k % {m} = 0"), &[("v", "v + 1")]).await?;
        }
        Op::Restore(_) | Op::Tag(..) | Op::Vacuum { .. } => {
            unreachable!("restores, tags and vacuums are applied by run_case, which knows the versions")
        }
        Op::Compact(ratio, copy) => {
            let mut options = sediment::CompactOptions { max_deleted_rows_ratio: Some(*ratio), ..Default::default() };
            options.executor.copy_row_groups_above = *copy;
            let report = table.compact(options).await?;
            assert!(report.abandoned.is_empty(), "{report:?}");
            if *ratio == 0.0 {
                assert!(table.files()?.iter().all(|f| !f.has_deletion_vector), "every vector folded");
            }
        }
    }
    Ok(())
}

/// What a case turns on besides its operations.
#[derive(Debug, Clone, Copy)]
struct Variant {
    deletion_vectors: bool,
    spill: bool,
    jitter: bool,
    /// `delta.enableChangeDataFeed`: the feed, replayed from version 0, must rebuild
    /// the table at every version.
    feed: bool,
}

async fn run_case(initial: Vec<Vec<Row>>, ops: Vec<Op>, variant: Variant) {
    let Variant { deletion_vectors, spill, jitter, feed } = variant;
    // With `spill`, every merge source outgrows a tiny memory limit: it is spilled and
    // merged in key ranges (a few rows each). Sync merges (not matched by source) keep
    // the default, as they refuse a spilled source.
    let limit = if spill { Some(64) } else { Some(sediment::DEFAULT_SOURCE_MEMORY_LIMIT) };
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let mut model = Model::new();
    // Half the cases enable deletion vectors: merges then mark rows instead of rewriting.
    let create = || {
        let mut options = WriteOptions::append().partition_by(["g"]);
        if deletion_vectors {
            options = options.table_property("delta.enableDeletionVectors", "true");
        }
        if feed {
            options = options.table_property("delta.enableChangeDataFeed", "true");
        }
        options
    };
    // Initial appends may repeat keys across batches; the model keeps both rows' last
    // value only if keys are distinct, so keep the first occurrence per key.
    let mut seen = std::collections::BTreeSet::new();
    for rows in initial {
        let rows: Vec<Row> = rows.into_iter().filter(|r| seen.insert(r.0)).collect();
        if rows.is_empty() {
            continue;
        }
        for (k, v, g) in &rows {
            model.insert(*k, (*v, g.clone()));
        }
        table.write([batch(&rows)], create()).await.unwrap();
    }
    if !table.exists() {
        table.write([batch(&[(0, 0, "a".into())])], create()).await.unwrap();
        model.insert(0, (0, "a".into()));
    }
    // Counts what the operations have in flight, to check none is left running.
    let outer = sediment::IoLimiter::unbounded();
    if jitter {
        let store = Arc::new(sediment::BoundedStore::new(crate::faults::jittery_store(3), outer.clone()));
        table = Table::open_with(&uri, OpenOptions::new().object_store(store)).await.unwrap();
    }
    let mut versions: Vec<(u64, Vec<String>)> = vec![(table.version().unwrap(), model_rows(&model))];
    let mut models: Vec<Model> = vec![model.clone()];
    let mut readable: std::collections::BTreeSet<u64> = versions.iter().map(|v| v.0).collect();
    let mut tags = Vec::new();
    let mut vacuumed = false;
    for (step, op) in ops.iter().enumerate() {
        let limit = if matches!(op, Op::Sync(..)) { None } else { limit };
        if let Op::Restore(n) = op {
            // delta-rs derives a restore's feed from its adds and removes, and reads a
            // removed file's deletion vector wrongly (see change::feed): not combined.
            if feed && deletion_vectors {
                continue;
            }
            let at = n % models.len();
            match table.restore(sediment::RestoreTarget::Version(versions[at].0), false).await {
                Ok(report) => {
                    assert_eq!(report.restored_version, versions[at].0);
                    model = models[at].clone();
                }
                // A version a vacuum was allowed to strip is refused by name.
                Err(e) if !readable.contains(&versions[at].0) && e.to_string().contains("are gone (vacuumed?)") => {}
                Err(e) => panic!("step {step} {op:?}: {e}"),
            }
        } else if let Op::Tag(n, expiring) = op {
            let version = versions[n % versions.len()].0;
            if !readable.contains(&version) {
                continue;
            }
            let expires = expiring.then(|| chrono::Utc::now() + chrono::Duration::hours(1));
            let name = format!("t{step}");
            table.create_tag(&name, version, expires, None).await.unwrap_or_else(|e| panic!("step {step} {op:?}: {e}"));
            tags.push((version, expires));
        } else if let Op::Vacuum { at, full, later } = op {
            vacuumed = true;
            // Horizons among the newest versions, so most older ones (and their tags) fall outside.
            let at = versions.len() - 1 - at % versions.len().min(3);
            vacuum(&mut table, &versions[at], *full, *later, &mut tags, &mut readable)
                .await
                .unwrap_or_else(|e| panic!("step {step} {op:?}: {e}"));
        } else {
            apply_to_table(&mut table, op, limit).await.unwrap_or_else(|e| panic!("step {step} {op:?}: {e}"));
            apply_to_model(&mut model, op);
        }
        models.push(model.clone());
        assert_eq!(outer.in_flight(), 0, "a request of step {step} {op:?} is still running");
        assert_eq!(table_rows(&table).await, model_rows(&model), "after step {step}: {op:?}");
        versions.push((table.version().unwrap(), model_rows(&model)));
        // Every version a later vacuum may strip (vacuum commits add versions of their own).
        readable.extend(table.version());
    }
    // The feed of stripped versions may be gone with them.
    if feed && !vacuumed {
        replay_feed(&table, &versions).await;
    }
    for (version, expected) in versions {
        let old = Table::open_with(&uri, OpenOptions::new().version(version)).await.unwrap();
        if readable.contains(&version) {
            assert_eq!(table_rows(&old).await, expected, "time travel to version {version}");
            continue;
        }
        match old.scan().execute().await {
            Ok(scan) => match scan.collect().await {
                Ok((batches, _)) => assert_eq!(canonical_rows(&batches), expected, "vacuumed version {version}"),
                Err(e) => assert!(e.to_string().contains("is gone (vacuumed"), "version {version}: {e}"),
            },
            Err(e) => assert!(e.to_string().contains("is gone (vacuumed"), "version {version}: {e}"),
        }
    }
}

/// Vacuum with the horizon at `at`'s commit time; versions from the one current at
/// the horizon on, and those of live tags, stay `readable`.
async fn vacuum(
    table: &mut Table,
    at: &(u64, Vec<String>),
    full: bool,
    later: bool,
    tags: &mut Vec<(u64, Option<chrono::DateTime<chrono::Utc>>)>,
    readable: &mut std::collections::BTreeSet<u64>,
) -> sediment::Result<()> {
    let history = table.history(None).await?;
    let time = |v: u64| history.iter().find(|h| h.version == v).and_then(|h| h.timestamp).unwrap();
    let horizon = chrono::DateTime::from_timestamp_millis(time(at.0)).unwrap();
    let now = chrono::Utc::now() + if later { chrono::Duration::days(1) } else { chrono::Duration::zero() };
    let options = sediment::VacuumOptions::default()
        .full(full)
        .retain(now - horizon)
        .retention_check(false)
        .with_clock(sediment::ManualClock::new(now));
    let report = table.vacuum(options).await?;
    assert!(report.failed.is_empty(), "{report:?}");
    // The window: from the newest version committed before the horizon.
    let window_start =
        history.iter().filter(|h| h.timestamp.unwrap() < time(at.0)).map(|h| h.version).max().unwrap_or(0);
    tags.retain(|(_, expires)| expires.is_none_or(|e| e > now));
    readable.retain(|v| *v >= window_start || tags.iter().any(|(t, _)| t == v));
    Ok(())
}

/// Replay the table's change data feed from version 0: every delete and pre-image
/// removes exactly the row the table held, every insert and post-image adds one; after
/// the changes up to each version the rows are the table's at that version.
async fn replay_feed(table: &Table, versions: &[(u64, Vec<String>)]) {
    use sediment::arrow::array::{Array, AsArray, UInt64Array};
    use sediment::arrow::compute::cast;
    use sediment::arrow::datatypes::Int64Type;
    let batches = table.changes(0, None).await.unwrap().collect().await.unwrap();
    let mut changes: Vec<(u64, bool, i64, (i64, String))> = Vec::new();
    for b in &batches {
        let column = |name: &str, to: &DataType| cast(b.column_by_name(name).unwrap(), to).unwrap();
        let (k, v) = (column("k", &DataType::Int64), column("v", &DataType::Int64));
        let (g, kind) = (column("g", &DataType::Utf8), column("_change_type", &DataType::Utf8));
        let version = column("_commit_version", &DataType::UInt64);
        let version = version.as_any().downcast_ref::<UInt64Array>().unwrap();
        let (k, v) = (k.as_primitive::<Int64Type>(), v.as_primitive::<Int64Type>());
        let (g, kind) = (g.as_string::<i32>(), kind.as_string::<i32>());
        for i in 0..b.num_rows() {
            let adds = match kind.value(i) {
                "insert" | "update_postimage" => true,
                "delete" | "update_preimage" => false,
                other => panic!("unknown change type {other}"),
            };
            assert!(!v.is_null(i) && !g.is_null(i));
            changes.push((version.value(i), adds, k.value(i), (v.value(i), g.value(i).to_string())));
        }
    }
    // Per version, what goes before what comes.
    changes.sort_by_key(|(version, adds, ..)| (*version, *adds));
    let mut replayed = Model::new();
    let mut next = changes.into_iter().peekable();
    for (version, expected) in versions {
        while let Some((_, adds, k, row)) = next.next_if(|c| c.0 <= *version) {
            if adds {
                assert!(replayed.insert(k, row).is_none(), "the feed inserts key {k} twice (by v{version})");
            } else {
                assert_eq!(replayed.remove(&k), Some(row), "the feed removes a row of key {k} the table did not hold");
            }
        }
        assert_eq!(&model_rows(&replayed), expected, "the feed replayed up to version {version}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("SEDIMENT_MODEL_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merges_deletes_and_updates_agree_with_a_model(
        initial in prop::collection::vec(rows(25), 1..4),
        ops in prop::collection::vec(op(), 1..7),
        deletion_vectors in any::<bool>(),
        spill in any::<bool>(),
        jitter in any::<bool>(),
        feed in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run_case(initial, ops, Variant { deletion_vectors, spill, jitter, feed }));
    }
}
