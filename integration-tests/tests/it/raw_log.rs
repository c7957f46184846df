//! A long log, fast: commits written the way a writer's appends look, several at a
//! time, without going through an engine (a commit each through one takes minutes on
//! the test server). Shared by the tests and the `commit_latency` bench (which
//! includes this file by path).

use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use sediment::{Table, WriteOptions};

/// Create the table at `uri` with one append of one row, then commits 1..`versions`,
/// each adding a copy of that first data file (same size and statistics).
pub async fn table_of_one_row_appends(uri: &str, versions: u64) -> Table {
    let mut table = Table::open_or_new(uri, Default::default()).await.unwrap();
    table.write([sediment::demo::events_batch(0, 1)], WriteOptions::append()).await.unwrap();
    let store = table.object_store();
    let first = table.files().unwrap().remove(0).path;
    let log0 = store.get(&"_delta_log/00000000000000000000.json".into()).await.unwrap().bytes().await.unwrap();
    let add: serde_json::Value = std::str::from_utf8(&log0)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|a| a.get("add").is_some())
        .unwrap()["add"]
        .clone();
    futures::stream::iter(1..versions)
        .map(|v| {
            let (store, first, mut add) = (store.clone(), first.clone(), add.clone());
            async move {
                let path = format!("part-{v:06}-copy.parquet");
                store.copy(&first.as_str().into(), &path.as_str().into()).await.unwrap();
                add["path"] = path.into();
                let info = serde_json::json!({"commitInfo": {"timestamp": chrono::Utc::now().timestamp_millis(),
                    "operation": "WRITE", "operationParameters": {"mode": "Append"}, "readVersion": v - 1}});
                let body = format!("{info}\n{}\n", serde_json::json!({ "add": add }));
                store.put(&format!("_delta_log/{v:020}.json").as_str().into(), body.into_bytes().into()).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    table.refresh().await.unwrap();
    table
}
