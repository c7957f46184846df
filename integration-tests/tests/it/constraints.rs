//! CHECK constraints (Delta `delta.constraints.*`): checked on every write Sediment
//! makes, checked against the rows already there before they are added, and honoured
//! by another Delta writer; on the S3 server.

use std::process::Command;
use std::sync::Arc;

use sediment::arrow::array::{Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::{ErrorKind, MatchedAction, Table, TableWriter, TableWriterSettings, WriteOptions};

use crate::common::{s3_uri, table_rows};

fn orders(rows: &[(i64, Option<i64>, &str)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Int64, true),
        Field::new("status", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

async fn orders_table(uri: &str) -> Table {
    let mut table = Table::open_or_new(uri, Default::default()).await.unwrap();
    let rows: Vec<(i64, Option<i64>, &str)> = (0..50).map(|i| (i, Some(i * 10), "new")).collect();
    table.write([orders(&rows)], WriteOptions::append()).await.unwrap();
    table
}

/// The Python `deltalake` writer appending one order: its error, or `None` when it wrote.
fn python_append(uri: &str, amount: i64) -> Option<String> {
    let script = r#"
import os, sys
import pyarrow as pa
from deltalake import write_deltalake
opts = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("amount", pa.int64()), ("status", pa.string())])
data = pa.table({"id": [1000], "amount": [int(sys.argv[2])], "status": ["new"]}, schema=schema)
try:
    write_deltalake(sys.argv[1], data, mode="append", storage_options=opts)
    print("written", flush=True)
except Exception as e:
    print("refused:", e, flush=True)
os._exit(0)
"#;
    let out =
        Command::new(crate::interop::python()).arg("-c").arg(script).arg(uri).arg(amount.to_string()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.starts_with("written") || stdout.starts_with("refused"),
        "python writer: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.strip_prefix("refused:").map(|e| e.trim().to_string())
}

#[tokio::test]
async fn check_constraints_hold_on_every_write_and_for_other_delta_writers() {
    let uri = s3_uri("constraints");
    let mut table = orders_table(&uri).await;

    // A condition some row breaks is refused, naming how many and which.
    let err = table.add_constraint("small_amount", "amount < 100").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains("40 of 50 rows violate it") && msg.contains("\"amount\":100"), "{msg}");
    assert_eq!(table.version(), Some(0));
    // Bad names and conditions.
    assert_eq!(table.add_constraint("a b", "amount > 0").await.unwrap_err().kind(), ErrorKind::InvalidInput);
    let err = table.add_constraint("unknown", "price > 0").await.unwrap_err();
    assert!(err.to_string().contains("price") && err.to_string().contains("unknown"), "{err}");
    let err = table.add_constraint("not_a_condition", "amount + 1").await.unwrap_err();
    assert!(err.to_string().contains("not a condition"), "{err}");

    let report = table.add_constraint("amount_not_negative", "amount >= 0").await.unwrap();
    assert_eq!((report.version, report.rows_checked, report.files_checked), (Some(1), 50, 1));
    table.add_constraint("known_status", "status IN ('new', 'paid')").await.unwrap();
    // The same constraint again changes nothing; another condition under its name is refused.
    assert!(table.add_constraint("known_status", "status IN ('new', 'paid')").await.unwrap().already_present);
    assert!(table.add_constraint("known_status", "status = 'new'").await.is_err());
    assert_eq!(table.version(), Some(2));
    let names: Vec<String> = table.constraints().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["amount_not_negative", "known_status"]);
    let reopened = Table::open(&uri).await.unwrap();
    let protocol = reopened.state().unwrap().protocol();
    assert!(protocol.min_writer_version() >= 3, "the protocol carries constraints");
    let before = table_rows(&table).await;

    // Appends: a false or NULL condition refuses the whole write.
    for (row, broken) in [
        ((100, Some(-1), "new"), "amount_not_negative"),
        ((100, None, "new"), "amount_not_negative"),
        ((100, Some(5), "lost"), "known_status"),
    ] {
        let batch = orders(&[(99, Some(1), "paid"), row]);
        let err = table.write([batch], WriteOptions::append()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(broken) && err.to_string().contains("1 of 2 rows"), "{err}");
    }
    table.write([orders(&[(100, Some(7), "paid")])], WriteOptions::append()).await.unwrap();
    assert_eq!(table.version(), Some(3));

    // Merges: an update or insert that breaks one commits nothing.
    let err = table
        .merge([orders(&[(1, Some(-5), "paid"), (500, Some(1), "new")])])
        .on(["id"])
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_insert_all()
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("amount_not_negative"), "{err}");
    let err = table
        .merge([orders(&[(501, Some(1), "nope")])])
        .on(["id"])
        .when_not_matched_insert_all()
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("known_status"), "{err}");
    // Updates too.
    let err = table.update("id = 2", &[("amount", "-1")]).await.unwrap_err();
    assert!(err.to_string().contains("amount_not_negative"), "{err}");
    table.refresh().await.unwrap();
    assert_eq!(table.version(), Some(3), "nothing was committed");
    let rows = table_rows(&table).await;
    assert_eq!(rows.len(), 51);
    assert!(before.iter().all(|r| rows.contains(r)));
    table.update("id = 2", &[("amount", "0")]).await.unwrap();
    table.delete("id = 3").await.unwrap();

    // Another Delta writer reads the constraint from the log and honours it.
    let refused = python_append(&uri, -3).expect("delta-rs refuses the row");
    assert!(refused.contains("validation") || refused.contains("violat"), "{refused}");
    assert!(python_append(&uri, 3).is_none());

    // Dropped, it no longer applies.
    table.refresh().await.unwrap();
    table.drop_constraint("amount_not_negative", false).await.unwrap();
    assert_eq!(table.drop_constraint("amount_not_negative", true).await.unwrap(), None);
    assert_eq!(table.drop_constraint("amount_not_negative", false).await.unwrap_err().kind(), ErrorKind::NotFound);
    table.write([orders(&[(600, Some(-1), "new")])], WriteOptions::append()).await.unwrap();
    assert_eq!(table_rows(&table).await.len(), 52);
}

/// A write whose rows were checked before a constraint was added does not commit
/// after it: its rows were never checked against it.
#[tokio::test]
async fn a_write_that_began_before_a_constraint_was_added_commits_nothing() {
    let uri = s3_uri("constraints-race");
    let table = orders_table(&uri).await;
    let settings = TableWriterSettings::default().max_age(std::time::Duration::from_secs(3600));
    let mut writer = TableWriter::new(table, settings);
    writer.write(orders(&[(700, Some(-7), "new")])).await.unwrap();

    // The buffered row is not in the table yet, so the constraint holds for every row.
    let mut other = Table::open(&uri).await.unwrap();
    other.add_constraint("amount_not_negative", "amount >= 0").await.unwrap();

    let err = writer.flush().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains("amount_not_negative") && err.to_string().contains("nothing was committed"),
        "{err}"
    );
    other.refresh().await.unwrap();
    assert_eq!(other.version(), Some(1));
    assert_eq!(table_rows(&other).await.len(), 50);
}

/// Adding a constraint on a version another writer has moved past loses the commit
/// race, checks the winner's files and commits on the newest version; when the
/// winner's rows break it, nothing is committed. Dropping one retries the same way.
#[tokio::test]
async fn a_constraint_change_that_loses_a_race_checks_the_winners_rows_and_retries() {
    let uri = s3_uri("constraints-retry");
    // Each `stale` handle reads the version before the other writer's append.
    let mut stale = orders_table(&uri).await;
    let mut writer = Table::open(&uri).await.unwrap();
    writer.write([orders(&[(100, Some(5), "new")])], WriteOptions::append()).await.unwrap();
    let report = stale.add_constraint("amount_not_negative", "amount >= 0").await.unwrap();
    assert_eq!((report.retries, report.version), (1, Some(2)), "{report:?}");
    assert_eq!((report.files_checked, report.rows_checked), (2, 51), "the first file, then the winner's: {report:?}");

    // The winner's row breaks the new constraint: refused, nothing committed.
    let mut stale = Table::open(&uri).await.unwrap();
    let mut writer = Table::open(&uri).await.unwrap();
    writer.write([orders(&[(101, Some(5000), "new")])], WriteOptions::append()).await.unwrap();
    let err = stale.add_constraint("amount_small", "amount < 1000").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("nothing was committed") && err.to_string().contains("5000"), "{err}");
    writer.refresh().await.unwrap();
    assert_eq!(writer.version(), Some(3));

    let mut stale = Table::open(&uri).await.unwrap();
    writer.write([orders(&[(102, Some(7), "new")])], WriteOptions::append()).await.unwrap();
    assert_eq!(stale.drop_constraint("amount_not_negative", false).await.unwrap(), Some(5));
    writer.refresh().await.unwrap();
    assert!(writer.constraints().unwrap().is_empty());
    assert_eq!(table_rows(&writer).await.len(), 53);
}

/// `sediment constraint add|list|drop`.
#[tokio::test]
async fn constraints_on_the_command_line() {
    let uri = s3_uri("constraints-cli");
    orders_table(&uri).await;
    let run = |args: &[&str]| Command::new(crate::cli::sediment_bin()).args(args).output().unwrap();
    let out = run(&["constraint", "add", &uri, "positive", "amount >= 0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("50 rows in 1 files checked"));
    let out = run(&["--json", "constraint", "list", &uri]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list, serde_json::json!([{ "name": "positive", "expression": "amount >= 0" }]));
    let out = run(&["constraint", "add", &uri, "tiny", "amount < 5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("49 of 50 rows violate it"), "{stderr}");
    let out = run(&["constraint", "drop", &uri, "positive"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["constraint", "drop", &uri, "positive"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no CHECK constraint positive"));
}

/// A pipeline whose run would break a constraint of its target fails before it
/// commits anything (quarantine included), naming the constraint; delete events are
/// not rows and break nothing.
#[tokio::test]
async fn a_pipeline_run_that_would_break_a_target_constraint_commits_nothing() {
    let bronze_uri = s3_uri("constraints-bronze");
    let silver_uri = s3_uri("constraints-silver");
    let quarantine_uri = s3_uri("constraints-silver-quarantine");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    bronze
        .write([orders(&[(1, Some(10), "new"), (2, Some(20), "new"), (3, None, "bad")])], WriteOptions::append())
        .await
        .unwrap();
    let spec: sediment::pipeline::PipelineSpec = serde_json::from_value(serde_json::json!({
        "name": "orders_silver", "type": "upsert", "source": "bronze.orders", "target": "silver.orders",
        "keys": ["id"], "delete_when": "status = 'D'",
        "rules": [{ "check": "not_null", "column": "amount", "action": "quarantine" }],
    }))
    .unwrap();
    spec.validate().unwrap();
    let mut silver = Table::open_or_new(&silver_uri, Default::default()).await.unwrap();
    let mut quarantine = Table::open_or_new(&quarantine_uri, Default::default()).await.unwrap();
    {
        let sources = [sediment::pipeline::SourceTable { name: "bronze.orders", table: &bronze }];
        let outputs =
            sediment::pipeline::Outputs { target: &mut silver, quarantine: Some(&mut quarantine), tombstones: None };
        let report = sediment::pipeline::run(&spec, &sources, outputs, &Default::default()).await.unwrap();
        assert_eq!((report.rows_read, report.rows_quarantined), (3, 1), "{report:?}");
    }
    silver.add_constraint("small", "amount < 100").await.unwrap();
    let quarantine_version = {
        quarantine.refresh().await.unwrap();
        quarantine.version()
    };
    let silver_version = silver.version();

    // A row breaking the constraint, one breaking the quarantine rule, a delete (whose amount is no row of the target).
    let mut bronze = Table::open(&bronze_uri).await.unwrap();
    bronze
        .write([orders(&[(1, Some(500), "paid"), (4, None, "bad"), (2, Some(999), "D")])], WriteOptions::append())
        .await
        .unwrap();
    {
        let sources = [sediment::pipeline::SourceTable { name: "bronze.orders", table: &bronze }];
        let outputs =
            sediment::pipeline::Outputs { target: &mut silver, quarantine: Some(&mut quarantine), tombstones: None };
        let err = sediment::pipeline::run(&spec, &sources, outputs, &Default::default()).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("orders_silver") && msg.contains("CHECK constraint small") && msg.contains("1 rows"),
            "{msg}"
        );
        assert!(msg.contains("\"amount\":500"), "{msg}");
    }
    silver.refresh().await.unwrap();
    quarantine.refresh().await.unwrap();
    assert_eq!((silver.version(), quarantine.version()), (silver_version, quarantine_version), "nothing committed");

    // Fixed at the source (a newer event for the key), the next run goes through.
    bronze.write([orders(&[(1, Some(50), "paid")])], WriteOptions::append()).await.unwrap();
    let sources = [sediment::pipeline::SourceTable { name: "bronze.orders", table: &bronze }];
    let outputs =
        sediment::pipeline::Outputs { target: &mut silver, quarantine: Some(&mut quarantine), tombstones: None };
    let report = sediment::pipeline::run(&spec, &sources, outputs, &Default::default()).await.unwrap();
    assert!(report.committed, "{report:?}");
    let rows = table_rows(&silver).await;
    assert_eq!(rows.len(), 1, "key 2 deleted, key 1 updated: {rows:?}");
}

/// Constraints declared on `[[tables]]`: added to the tables the daemon registers,
/// given to a target a pipeline creates in its first commit (whose rows are checked
/// before anything is committed), and a declaration the rows break stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_constraints_reach_registered_tables_and_the_targets_pipelines_create() {
    use sediment::service::{Service, Settings, pipelines};
    let dir = tempfile::tempdir().unwrap();
    let bronze_uri = s3_uri("declared-bronze");
    let silver_uri = s3_uri("declared-silver");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    bronze.write([orders(&[(1, Some(10), "new"), (2, Some(500), "new")])], WriteOptions::append()).await.unwrap();
    let settings = |bronze_constraints: &str| {
        let text = format!(
            r#"
catalog = "sqlite://{catalog}/catalog.db"

[[tables]]
name = "bronze.orders"
layer = "bronze"
location = "{bronze_uri}"
constraints = {bronze_constraints}

[[tables]]
name = "silver.orders"
layer = "silver"
location = "{silver_uri}"
constraints = {{ small = "amount < 100" }}

[[pipelines]]
name = "orders_silver"
type = "upsert"
source = "bronze.orders"
target = "silver.orders"
keys = ["id"]
"#,
            catalog = dir.path().display()
        );
        let settings = Settings::from_toml(&text).unwrap();
        settings.validate().unwrap();
        settings
    };
    let service = Service::builder(settings(r#"{ id_known = "id >= 0" }"#)).build().await.unwrap();
    service.register_configured_tables().await.unwrap();
    let names = |t: &Table| t.constraints().unwrap().into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(names(&Table::open(&bronze_uri).await.unwrap()), ["id_known"]);
    // Again (another daemon, a restart): nothing more is committed.
    service.register_configured_tables().await.unwrap();
    assert_eq!(Table::open(&bronze_uri).await.unwrap().version(), Some(1));

    // The first run would create silver with a row that breaks its declared constraint.
    let err = pipelines::run(&service, "orders_silver", None).await.unwrap_err();
    assert!(err.to_string().contains("CHECK constraint small") && err.to_string().contains("500"), "{err}");
    assert!(!Table::open_or_new(&silver_uri, Default::default()).await.unwrap().exists(), "nothing created");

    // Fixed at the source: the run creates silver with the constraint in its first commit.
    // (The bronze handle predates id_known: its write, checked without it, is refused
    // once and goes through again on the refreshed handle.)
    let more = orders(&[(3, Some(30), "paid")]);
    let err = bronze.write([more.clone()], WriteOptions::append()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    bronze.write([more], WriteOptions::append()).await.unwrap();
    bronze.update("id = 2", &[("amount", "50")]).await.unwrap();
    let report = pipelines::run(&service, "orders_silver", None).await.unwrap();
    assert!(report.committed, "{report:?}");
    let silver = Table::open_with(&silver_uri, sediment::OpenOptions::new().version(0)).await.unwrap();
    assert_eq!(names(&silver), ["small"]);
    assert!(silver.state().unwrap().protocol().min_writer_version() >= 3);
    assert_eq!(table_rows(&silver).await.len(), 3);

    // A declaration the table's rows break stops the daemon's start, naming both.
    let service = Service::builder(settings(r#"{ tiny = "amount < 5" }"#)).build().await.unwrap();
    let err = service.register_configured_tables().await.unwrap_err().to_string();
    assert!(
        err.contains("bronze.orders") && err.contains("declared constraint tiny") && err.contains("violate"),
        "{err}"
    );
    assert_eq!(names(&Table::open(&bronze_uri).await.unwrap()), ["id_known"]);
}
