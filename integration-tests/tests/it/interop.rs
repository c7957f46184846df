//! Tables Sediment writes are readable by an independent Delta reader (the Python
//! `deltalake` wheel, which the test script installs), locally and on S3.

use std::process::Command;

use sediment::{Table, WriteOptions};

use crate::common::{append_events, s3_uri};

pub fn python() -> String {
    std::env::var("SEDIMENT_TEST_PYTHON").expect("SEDIMENT_TEST_PYTHON is not set: run the tests with scripts/test.sh")
}

/// Rows and columns the Python reader sees at the latest version.
pub fn python_read(uri: &str) -> (u64, Vec<String>) {
    python_read_at(uri, None)
}

/// Rows and columns the Python reader sees at `version` (the latest: `None`).
pub fn python_read_at(uri: &str, version: Option<u64>) -> (u64, Vec<String>) {
    let script = r#"
import json, os, sys
from deltalake import DeltaTable
opts = {}
if sys.argv[1].startswith("s3://"):
    opts = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
version = int(sys.argv[2]) if len(sys.argv) > 2 else None
t = DeltaTable(sys.argv[1], version=version, storage_options=opts)
try:
    data = t.to_pyarrow_table()
    rows, columns = data.num_rows, data.column_names
except Exception as e:
    # Its pyarrow path reads no deletion vectors; its DataFusion path does.
    if "deletionVectors" not in str(e):
        raise
    import pyarrow as pa
    from deltalake import QueryBuilder
    counted = QueryBuilder().register("t", t).execute("select count(*) as n from t").read_all()
    rows, columns = pa.table(counted).column("n")[0].as_py(), [f.name for f in t.schema().fields]
print(json.dumps({"rows": rows, "columns": sorted(columns)}), flush=True)
# The deltalake wheel can abort in its native teardown at interpreter exit
# ("terminate called without an active exception") after a correct read: skip it.
os._exit(0)
"#;
    let mut command = Command::new(python());
    command.arg("-c").arg(script).arg(uri);
    if let Some(v) = version {
        command.arg(v.to_string());
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let columns = v["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    (v["rows"].as_u64().unwrap(), columns)
}

#[tokio::test]
async fn python_deltalake_reads_what_sediment_writes() {
    let dir = tempfile::tempdir().unwrap();
    for uri in [dir.path().join("t").to_string_lossy().to_string(), s3_uri("interop")] {
        let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
        append_events(&mut table, 0, 700).await;
        append_events(&mut table, 700, 300).await;
        table
            .write(
                [crate::common::events_on_day(5_000, 50, "2024-05-01")],
                WriteOptions::append().replace_where("event_date = '2024-05-01'"),
            )
            .await
            .unwrap();
        let ours = table.info().unwrap().rows.unwrap();
        let (rows, mut columns) = python_read(&uri);
        assert_eq!(rows, ours, "{uri}");
        let mut expected: Vec<String> =
            table.arrow_schema().unwrap().fields().iter().map(|f| f.name().clone()).collect();
        expected.sort();
        columns.sort();
        assert_eq!(columns, expected);
    }
}
