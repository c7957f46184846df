//! The change data feed: every change operation on a table with
//! `delta.enableChangeDataFeed = true` writes the feed a model of the operation
//! predicts, and Sediment's reader, the CLI and an independent reader (the Python
//! `deltalake` wheel's `load_cdf`) return the same rows.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use sediment::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::{CompactOptions, MatchedAction, NotMatchedAction, NotMatchedBySourceAction, Table, WriteOptions};

use crate::common::{canonical_rows, table_rows};

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

/// Feed batches as comparable rows (the commit timestamp left out), sorted.
fn comparable(batches: &[RecordBatch]) -> Vec<String> {
    let trimmed: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let keep: Vec<usize> =
                (0..b.num_columns()).filter(|i| b.schema().field(*i).name() != "_commit_timestamp").collect();
            b.project(&keep).unwrap()
        })
        .collect();
    canonical_rows(&trimmed)
}

async fn sediment_feed(uri: &str, from: u64) -> Vec<String> {
    let table = Table::open(uri).await.unwrap();
    comparable(&table.changes(from, None).await.unwrap().collect().await.unwrap())
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
