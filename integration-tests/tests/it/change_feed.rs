//! The change data feed: every change operation on a table with
//! `delta.enableChangeDataFeed = true` writes the feed a model of the operation
//! predicts, and Sediment's reader, the CLI and an independent reader (the Python
//! `deltalake` wheel's `load_cdf`) return the same rows.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use sediment::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::{
    CompactOptions, ErrorKind, MatchedAction, NotMatchedAction, NotMatchedBySourceAction, Scd2Options, Table,
    WriteOptions,
};

use crate::common::{canonical_rows, conformance_dir, copy_dir, table_rows};
use crate::merge::{changes, dimension};

/// key → (value, group); the group is the partition column of partitioned variants.
type Model = BTreeMap<i64, (i64, String)>;

fn batch(rows: &[(i64, i64, &str)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new("g", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn group(k: i64) -> &'static str {
    ["a", "b", "c"][(k % 3) as usize]
}

/// A feed row as the tests compare them: `_change_type=..|_commit_version=..|g=..|k=..|v=..`.
fn feed_row(kind: &str, version: u64, k: i64, (v, g): &(i64, String)) -> String {
    format!("_change_type={kind}|_commit_version={version}|g={g}|k={k}|v={v}")
}

/// The rows a commit at `version` that turned `before` into `after` must put in the
/// feed: deletes, inserts, and pre- and post-images of changed rows.
fn diff(version: u64, before: &Model, after: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for (k, old) in before {
        match after.get(k) {
            None => out.push(feed_row("delete", version, *k, old)),
            Some(new) if new != old => {
                out.push(feed_row("update_preimage", version, *k, old));
                out.push(feed_row("update_postimage", version, *k, new));
            }
            Some(_) => {}
        }
    }
    for (k, new) in after {
        if !before.contains_key(k) {
            out.push(feed_row("insert", version, *k, new));
        }
    }
    out
}

/// Feed batches as comparable rows (the commit timestamp and `skip` left out), sorted.
fn comparable(batches: &[RecordBatch], skip: &[&str]) -> Vec<String> {
    let trimmed: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|i| {
                    let name = b.schema().field(*i).name().clone();
                    name != "_commit_timestamp" && !skip.contains(&name.as_str())
                })
                .collect();
            b.project(&keep).unwrap()
        })
        .collect();
    canonical_rows(&trimmed)
}

async fn sediment_feed(uri: &str, from: u64) -> Vec<String> {
    sediment_feed_without(uri, from, &[]).await
}

async fn sediment_feed_without(uri: &str, from: u64, skip: &[&str]) -> Vec<String> {
    let table = Table::open(uri).await.unwrap();
    comparable(&table.changes(from, None).await.unwrap().collect().await.unwrap(), skip)
}

fn python() -> String {
    std::env::var("SEDIMENT_TEST_PYTHON").expect("SEDIMENT_TEST_PYTHON is not set: run the tests with scripts/test.sh")
}

/// The feed as delta-rs's Python `load_cdf` reads it, in the same form (columns
/// `skip` left out too).
pub fn python_feed(uri: &str, from: u64, skip: &[&str]) -> Vec<String> {
    let script = r#"
import json, os, sys
import pyarrow as pa
from deltalake import DeltaTable
uri, start, skip = sys.argv[1], int(sys.argv[2]), set(json.loads(sys.argv[3]))
opts = {}
if uri.startswith("s3://"):
    opts = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
data = pa.table(DeltaTable(uri, storage_options=opts).load_cdf(starting_version=start))
columns = sorted(c for c in data.column_names if c != "_commit_timestamp" and c not in skip)
def fmt(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
rows = sorted("|".join(f"{c}={fmt(r[c])}" for c in columns) for r in data.to_pylist())
print(json.dumps(rows), flush=True)
os._exit(0)
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(uri)
        .arg(from.to_string())
        .arg(serde_json::to_string(skip).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "python load_cdf failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// How many `cdc` actions the commit of `version` holds.
fn cdc_actions(table_dir: &std::path::Path, version: u64) -> usize {
    let log = std::fs::read_to_string(table_dir.join("_delta_log").join(format!("{version:020}.json"))).unwrap();
    log.lines().filter(|l| l.starts_with("{\"cdc\"")).count()
}

/// A table of keys 0..20 with the feed on (and deletion vectors, `partitioned` by `g`).
async fn feed_table(uri: &str, deletion_vectors: bool, partitioned: bool) -> (Table, Model) {
    let rows: Vec<(i64, i64, &str)> = (0..20).map(|k| (k, k, group(k))).collect();
    let mut options = WriteOptions::append().table_property("delta.enableChangeDataFeed", "true");
    if partitioned {
        options = options.partition_by(["g"]);
    }
    if deletion_vectors {
        options = options.table_property("delta.enableDeletionVectors", "true");
    }
    let mut table = Table::open_or_new(uri, Default::default()).await.unwrap();
    table.write([batch(&rows)], options).await.unwrap();
    let model = rows.iter().map(|(k, v, g)| (*k, (*v, g.to_string()))).collect();
    (table, model)
}

/// One step of the scenario: what it does to the table and to the model, and whether
/// its commit carries change files.
struct Step {
    name: &'static str,
    expect_cdc: bool,
}

async fn run_scenario(deletion_vectors: bool, partitioned: bool, spill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let uri = path.to_string_lossy().to_string();
    let (mut table, mut model) = feed_table(&uri, deletion_vectors, partitioned).await;
    let mut expected = diff(0, &Model::new(), &model);
    let limit = if spill { Some(64) } else { Some(sediment::DEFAULT_SOURCE_MEMORY_LIMIT) };
    let mut steps: Vec<(u64, Step)> = Vec::new();
    for step in 0..9 {
        let before = model.clone();
        let info = match step {
            0 => {
                let rows: Vec<(i64, i64, &str)> = (20..25).map(|k| (k, k, group(k))).collect();
                table.write([batch(&rows)], WriteOptions::append()).await.unwrap();
                for (k, v, g) in rows {
                    model.insert(k, (v, g.into()));
                }
                Step { name: "append", expect_cdc: false }
            }
            1 => {
                let source = batch(&[(1, 101, "b"), (2, 102, "c"), (30, 30, "a")]);
                table
                    .merge([source])
                    .on(["k"])
                    .when_matched(MatchedAction::UpdateAll)
                    .when_not_matched_insert_all()
                    .source_memory_limit(limit)
                    .execute()
                    .await
                    .unwrap();
                model.insert(1, (101, "b".into()));
                model.insert(2, (102, "c".into()));
                model.insert(30, (30, "a".into()));
                Step { name: "upsert", expect_cdc: true }
            }
            2 => {
                let source = batch(&[(3, 0, "a"), (31, 31, "b")]);
                table
                    .merge([source])
                    .on(["k"])
                    .when_matched(MatchedAction::Delete)
                    .when_not_matched(NotMatchedAction::InsertAll)
                    .source_memory_limit(limit)
                    .execute()
                    .await
                    .unwrap();
                model.remove(&3);
                model.insert(31, (31, "b".into()));
                Step { name: "merge delete matched, insert the rest", expect_cdc: true }
            }
            3 => {
                // Matched rows updated only when the source is larger; target rows of
                // group b the source does not mention get v = -1 (not matched by source).
                let source = batch(&[(4, 1, "b"), (5, 500, "c")]);
                table
                    .merge([source])
                    .on(["k"])
                    .when_matched_if("source.v > target.v", MatchedAction::UpdateAll)
                    .when_not_matched_by_source_if(
                        "target.g = 'b'",
                        NotMatchedBySourceAction::Update(vec![("v".into(), "-1".into())]),
                    )
                    .execute()
                    .await
                    .unwrap();
                model.insert(5, (500, "c".into()));
                for (k, (v, g)) in model.iter_mut() {
                    if g == "b" && *k != 4 && *k != 5 {
                        *v = -1;
                    }
                }
                Step { name: "merge conditional update, update not matched by source", expect_cdc: true }
            }
            4 => {
                table.update("k % 5 = 0", &[("v", "v * 2")]).await.unwrap();
                for (k, (v, _)) in model.iter_mut() {
                    if k % 5 == 0 {
                        *v *= 2;
                    }
                }
                Step { name: "update", expect_cdc: true }
            }
            5 => {
                table.delete("k = 7 OR k = 8").await.unwrap();
                model.remove(&7);
                model.remove(&8);
                Step { name: "delete by predicate", expect_cdc: true }
            }
            6 => {
                // A partition delete removes whole files on a partitioned table, with no
                // change data, unless a file has a deletion vector: then its live rows
                // are written as deletes (readers differ on removed files' vectors).
                let vectors = table.files().unwrap().iter().any(|f| {
                    f.has_deletion_vector && f.partition_values.get("g").and_then(|v| v.as_deref()) == Some("c")
                });
                table.delete("g = 'c'").await.unwrap();
                model.retain(|_, (_, g)| g != "c");
                if partitioned {
                    assert_eq!(vectors, deletion_vectors, "earlier steps marked rows of partition c");
                }
                Step { name: "partition delete", expect_cdc: !partitioned || vectors }
            }
            7 => {
                let source = batch(&[(40, 40, "a"), (0, 999, "a")]);
                table.merge([source]).on(["k"]).when_not_matched_insert_all().execute().await.unwrap();
                model.insert(40, (40, "a".into()));
                Step { name: "insert-only merge", expect_cdc: false }
            }
            _ => {
                let options = CompactOptions { max_deleted_rows_ratio: Some(0.0), ..Default::default() };
                table.compact(options).await.unwrap();
                Step { name: "compaction", expect_cdc: false }
            }
        };
        let version = table.version().unwrap();
        if info.name == "update" {
            // An update writes both images of every row it matched, changed or not (as
            // Spark's does); a merge leaves rows already equal to the source alone.
            for (k, old) in before.iter().filter(|(k, _)| *k % 5 == 0) {
                expected.push(feed_row("update_preimage", version, *k, old));
                expected.push(feed_row("update_postimage", version, *k, &model[k]));
            }
        } else {
            expected.extend(diff(version, &before, &model));
        }
        assert_eq!(table_rows(&table).await, table_rows_of(&model), "rows after {}", info.name);
        steps.push((version, info));
    }
    for (version, step) in &steps {
        if step.name == "compaction" {
            // Compaction may commit several times; none of them carries change data.
            continue;
        }
        assert_eq!(cdc_actions(&path, *version) > 0, step.expect_cdc, "change files of {} (v{version})", step.name);
    }
    expected.sort();
    let variant = format!("deletion vectors {deletion_vectors}, partitioned {partitioned}, spill {spill}");
    assert_eq!(sediment_feed(&uri, 0).await, expected, "Sediment's feed ({variant})");
    assert_eq!(python_feed(&uri, 0, &[]), expected, "delta-rs's load_cdf ({variant})");
    // From a later version on: only the changes since.
    let from = steps[3].0;
    let later: Vec<String> = expected
        .iter()
        .filter(|r| {
            r.split('|').nth(1).and_then(|v| v.strip_prefix("_commit_version=")).unwrap().parse::<u64>().unwrap()
                >= from
        })
        .cloned()
        .collect();
    assert_eq!(sediment_feed(&uri, from).await, later, "feed from v{from} ({variant})");
}

fn table_rows_of(model: &Model) -> Vec<String> {
    let rows: Vec<(i64, i64, &str)> = model.iter().map(|(k, (v, g))| (*k, *v, g.as_str())).collect();
    canonical_rows(&[batch(&rows)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_writes_the_feed_readers_agree_on_copy_on_write() {
    run_scenario(false, true, false).await;
    run_scenario(false, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_writes_the_feed_readers_agree_on_deletion_vectors() {
    run_scenario(true, true, false).await;
    run_scenario(true, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_writes_the_feed_readers_agree_on_spilled_merges() {
    run_scenario(false, true, true).await;
    run_scenario(true, false, true).await;
}

/// SCD type 2 on a table with the feed: the closed row's images and the new
/// versions as inserts; a change of an untracked column, nothing.
#[tokio::test]
async fn scd2_writes_the_closed_rows_images_and_the_new_versions() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("scd2").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let initial = [(1, "Oslo", "gold", 100, None, true), (2, "Rome", "silver", 100, None, true)];
    let options = WriteOptions::append().table_property("delta.enableChangeDataFeed", "true");
    table.write([dimension(&initial)], options).await.unwrap();
    let scd2 = Scd2Options::new(["customer_id"], ["city"], "changed_at");
    let batch = changes(&[(1, "Bergen", "gold", 200), (2, "Rome", "bronze", 200), (3, "Lima", "silver", 200)]);
    table.scd2([batch], &scd2).unwrap().execute().await.unwrap();
    let skip = ["valid_from", "valid_to"];
    let row = |kind: &str, version: u64, id: i64, city: &str, tier: &str, current: bool| {
        format!(
            "_change_type={kind}|_commit_version={version}|city={city}|customer_id={id}|is_current={current}|tier={tier}"
        )
    };
    let mut expected = vec![
        row("insert", 0, 1, "Oslo", "gold", true),
        row("insert", 0, 2, "Rome", "silver", true),
        row("update_preimage", 1, 1, "Oslo", "gold", true),
        row("update_postimage", 1, 1, "Oslo", "gold", false),
        row("insert", 1, 1, "Bergen", "gold", true),
        row("insert", 1, 3, "Lima", "silver", true),
    ];
    expected.sort();
    assert_eq!(sediment_feed_without(&uri, 0, &skip).await, expected);
    assert_eq!(python_feed(&uri, 0, &skip), expected);
}

/// A table without the property gets no change data and reading its feed says why;
/// one that sets the property on a protocol without the feature gets none either, and
/// its protocol is left as it is.
#[tokio::test]
async fn tables_without_an_active_feed_get_no_change_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain");
    let uri = path.to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let rows: Vec<(i64, i64, &str)> = (0..10).map(|k| (k, k, group(k))).collect();
    table.write([batch(&rows)], WriteOptions::append()).await.unwrap();
    table.delete("k < 3").await.unwrap();
    table.update("k = 5", &[("v", "50")]).await.unwrap();
    assert!(!path.join("_change_data").exists(), "no change data without the property");
    let err = table.changes(0, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("delta.enableChangeDataFeed"), "{err}");

    // The property on writer version 2: Delta says the feed is not on.
    let path = dir.path().join("old-protocol");
    std::fs::create_dir_all(path.join("_delta_log")).unwrap();
    let schema = r#"{"type":"struct","fields":[{"name":"k","type":"long","nullable":true,"metadata":{}},{"name":"v","type":"long","nullable":true,"metadata":{}}]}"#;
    let commit = serde_json::json!({"metaData": {"id": "6c3b0b5e-0000-4000-8000-000000000002", "format": {"provider": "parquet", "options": {}},
        "schemaString": schema, "partitionColumns": [], "configuration": {"delta.enableChangeDataFeed": "true"}, "createdTime": 0}});
    let log = format!("{}\n{commit}\n", r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}"#);
    std::fs::write(path.join("_delta_log").join(format!("{:020}.json", 0)), log).unwrap();
    let uri = path.to_string_lossy().to_string();
    let mut table = Table::open(&uri).await.unwrap();
    let rows = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true), Field::new("v", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    table.write([rows], WriteOptions::append()).await.unwrap();
    let report = table.delete("k = 2").await.unwrap();
    assert_eq!((report.rows_deleted, report.change_data_files), (1, 0), "{report:?}");
    assert!(!path.join("_change_data").exists());
    let protocol = Table::open(&uri).await.unwrap().state().unwrap().protocol().clone();
    assert_eq!(protocol.min_writer_version(), 2, "the protocol is never upgraded silently");
}

/// Versions outside the log, or out of order, fail with errors that say so.
#[tokio::test]
async fn a_range_outside_the_log_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retention");
    let uri = path.to_string_lossy().to_string();
    let (mut table, _) = feed_table(&uri, false, false).await;
    for k in 0..3 {
        table.update(&format!("k = {k}"), &[("v", "v + 100")]).await.unwrap();
    }
    let err = table.changes(5, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = table.changes(2, Some(9)).await.unwrap_err();
    assert!(err.to_string().contains("does not exist") && err.to_string().contains("newest is 3"), "{err}");
    let err = table.changes(3, Some(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    // Log retention removed the first commits (a checkpoint keeps the table readable).
    sediment::deltalake::checkpoints::create_checkpoint(table.delta(), None).await.unwrap();
    for version in 0..2 {
        std::fs::remove_file(path.join("_delta_log").join(format!("{version:020}.json"))).unwrap();
    }
    let table = Table::open(&uri).await.unwrap();
    let err = table.changes(0, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("log starts at version 2"), "{err}");
    assert_eq!(sediment_feed(&uri, 2).await.len(), 4, "versions 2 and 3 are still readable");
}

/// `sediment changes` prints the feed in each format.
#[tokio::test]
async fn the_cli_prints_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("cli").to_string_lossy().to_string();
    let (mut table, _) = feed_table(&uri, false, true).await;
    table.update("k = 1", &[("v", "100")]).await.unwrap();
    table.delete("k = 2").await.unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(crate::cli::sediment_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ndjson, summary) = run(&["changes", &uri, "--from-version", "1", "--format", "ndjson"]);
    let rows: Vec<serde_json::Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut kinds: Vec<(u64, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["_commit_version"].as_u64().unwrap(),
                r["_change_type"].as_str().unwrap().to_string(),
                r["k"].as_i64().unwrap(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![(1, "update_postimage".into(), 1), (1, "update_preimage".into(), 1), (2, "delete".into(), 2)],
        "{ndjson}"
    );
    assert!(summary.contains("versions 1 to 2: 3 change rows"), "{summary}");
    let (table_out, _) = run(&["changes", &uri, "--from-version", "2", "--to-version", "2"]);
    assert!(table_out.contains("_change_type") && table_out.contains("delete"), "{table_out}");
    let (csv, _) = run(&["changes", &uri, "--from-version", "0", "--to-version", "0", "--format", "csv"]);
    assert_eq!(csv.lines().count(), 21, "a header and the 20 inserts of version 0: {csv}");
    let parquet = dir.path().join("feed.parquet");
    run(&["changes", &uri, "--from-version", "1", "--format", "parquet", "--output", parquet.to_str().unwrap()]);
    assert!(std::fs::metadata(&parquet).unwrap().len() > 0);
}

/// The change-data-feed tables of the conformance set read through Sediment as
/// delta-rs's `load_cdf` reads them, and compacting copies of them leaves their feeds
/// as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_feeds_read_as_delta_rs_reads_them_and_survive_compaction() {
    let root = conformance_dir().expect("the conformance tables (../shared/conformance)").join("delta-rs");
    let work = tempfile::tempdir().unwrap();
    let mut compacted = 0;
    for name in [
        "cdf-table",
        "cdf-table-non-partitioned",
        "cdf-table-with-cdc-and-dvs",
        "checkpoint-cdf-table",
        "simple_table_with_cdc",
    ] {
        let copy = work.path().join(name);
        copy_dir(&root.join(name), &copy);
        let uri = copy.to_string_lossy().to_string();
        let from = std::fs::read_dir(copy.join("_delta_log"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".json").map(str::to_string))
            .filter_map(|v| v.parse::<u64>().ok())
            .min()
            .unwrap();
        let before = sediment_feed(&uri, from).await;
        assert!(!before.is_empty(), "{name} has a feed");
        assert_eq!(before, python_feed(&uri, from, &[]), "{name}: Sediment's feed and delta-rs's load_cdf");

        let mut table = Table::open(&uri).await.unwrap();
        let rows = table_rows(&table).await;
        let options = CompactOptions { max_deleted_rows_ratio: Some(0.0), ..Default::default() };
        let report = table.compact(options).await.unwrap();
        compacted += usize::from(report.bins_committed > 0);
        assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, rows, "{name}: rows kept");
        assert_eq!(sediment_feed(&uri, from).await, before, "{name}: compaction adds nothing to the feed");
        assert_eq!(python_feed(&uri, from, &[]), before, "{name}: as delta-rs reads it");
    }
    assert!(compacted >= 3, "most of the tables had small files to compact ({compacted})");
}

/// The report's case: a 1,000-row table written by delta-rs with the feed on; after
/// `sediment merge` updating 10 rows and `sediment delete` removing 5, delta-rs's
/// `load_cdf` sees exactly those changes (not whole files deleted and re-inserted).
#[tokio::test]
async fn a_table_delta_rs_wrote_gets_exactly_the_changes_sediment_made() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("foreign").to_string_lossy().to_string();
    let script = r#"
import os, sys
import pyarrow as pa
from deltalake import write_deltalake
ids = list(range(1000))
data = pa.table({"id": pa.array(ids, pa.int64()), "amount": pa.array([i * 1.5 for i in ids]),
                 "day": pa.array([f"2024-05-0{1 + i % 5}" for i in ids])})
write_deltalake(sys.argv[1], data, partition_by=["day"], configuration={"delta.enableChangeDataFeed": "true"})
os._exit(0)
"#;
    let out = Command::new(python()).arg("-c").arg(script).arg(&uri).output().unwrap();
    assert!(out.status.success(), "python writer failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut source = String::from("id,amount,day\n");
    for id in (0..100).step_by(10) {
        source.push_str(&format!("{id},-1.0,2024-05-0{}\n", 1 + id % 5));
    }
    let source_path = dir.path().join("source.csv");
    std::fs::write(&source_path, source).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(crate::cli::sediment_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["merge", &uri, source_path.to_str().unwrap(), "--key", "id"]);
    run(&["delete", &uri, "--where", "id >= 500 AND id < 505"]);
    let feed = python_feed(&uri, 1, &["amount", "day"]);
    let count = |kind: &str| feed.iter().filter(|r| r.starts_with(&format!("_change_type={kind}|"))).count();
    assert_eq!(
        (count("update_preimage"), count("update_postimage"), count("delete"), count("insert"), feed.len()),
        (10, 10, 5, 0, 25),
        "{feed:?}"
    );
    assert_eq!(sediment_feed_without(&uri, 1, &["amount", "day"]).await, feed);
}

/// On S3: a merge and a delete write their change data next to the table, and both
/// readers see it.
#[tokio::test]
async fn the_feed_on_s3() {
    let uri = crate::common::s3_uri("feed");
    let (mut table, mut model) = feed_table(&uri, false, true).await;
    let before = model.clone();
    table.upsert([batch(&[(1, 100, "b"), (50, 50, "c")])], ["k"]).await.unwrap();
    model.insert(1, (100, "b".into()));
    model.insert(50, (50, "c".into()));
    let mut expected = diff(0, &Model::new(), &before);
    expected.extend(diff(1, &before, &model));
    let before = model.clone();
    let report = table.delete("v = 4").await.unwrap();
    assert_eq!(report.change_data_files, 1, "{report:?}");
    model.remove(&4);
    expected.extend(diff(2, &before, &model));
    expected.sort();
    assert_eq!(sediment_feed(&uri, 0).await, expected);
    assert_eq!(python_feed(&uri, 0, &[]), expected);
}

/// A merge that fails half-way (a damaged target file) leaves no change data behind.
#[tokio::test]
async fn a_failed_change_leaves_no_change_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failing");
    let uri = path.to_string_lossy().to_string();
    let (mut table, _) = feed_table(&uri, false, true).await;
    let victim = table.files().unwrap().into_iter().find(|f| f.partition_values["g"].as_deref() == Some("c")).unwrap();
    let file = path.join(&victim.path);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let version = table.version();
    // Every partition holds a matched key: the other files' changes are written first.
    let err = table.upsert([batch(&[(0, -1, "a"), (1, -1, "b"), (2, -1, "c")])], ["k"]).await.unwrap_err();
    assert!(err.to_string().contains(&victim.path), "{err}");
    assert_eq!(Table::open(&uri).await.unwrap().version(), version, "nothing committed");
    let leftovers: Vec<_> = walk(&path.join("_change_data"));
    assert!(leftovers.is_empty(), "change data of the failed merge is deleted: {leftovers:?}");
    // The same merge on the repaired file writes change data in each partition.
    std::fs::write(&file, &bytes).unwrap();
    let mut table = Table::open(&uri).await.unwrap();
    table.upsert([batch(&[(0, -1, "a"), (1, -1, "b"), (2, -1, "c")])], ["k"]).await.unwrap();
    assert_eq!(walk(&path.join("_change_data")).len(), 3);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() { walk(&path) } else { vec![path] }
        })
        .collect()
}
