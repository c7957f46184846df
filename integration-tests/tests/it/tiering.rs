//! Tiering's S3 calls against the S3 test server: a file's class, a change of class
//! in place (its bytes unchanged), an archived file refused by a plain GET until a
//! restore, and stores without classes.

use std::collections::HashMap;

use object_store::ObjectStoreExt as _;
use sediment::maintain::tiering::{ObjectClasses, RestoreState, StorageClass};

use crate::common::{s3_endpoint, s3_uri};

#[tokio::test]
async fn a_file_changes_class_in_place_and_an_archived_one_needs_a_restore() {
    let uri = s3_uri("tier-calls");
    let store = sediment::table::storage::store_at(&uri, HashMap::new()).unwrap();
    let path = "day=2024-05-01/part-0.parquet";
    let bytes = bytes::Bytes::from(vec![7u8; 4096]);
    store.put(&object_store::path::Path::from(path), bytes.clone().into()).await.unwrap();

    // Explicit storage options, as a storage profile gives them.
    let options: HashMap<String, String> = [
        ("aws_endpoint".to_string(), s3_endpoint()),
        ("aws_region".to_string(), "us-east-1".to_string()),
        ("aws_access_key_id".to_string(), "testing".to_string()),
        ("aws_secret_access_key".to_string(), "testing".to_string()),
    ]
    .into();
    let classes = ObjectClasses::for_table(&uri, &options).await.unwrap().expect("an S3 table has classes");
    assert_eq!(classes.class_of(path).await.unwrap(), StorageClass::Standard);
    classes.set_class(path, 4096, StorageClass::StandardIa).await.unwrap();
    assert_eq!(classes.class_of(path).await.unwrap(), StorageClass::StandardIa);
    let read = store.get(&object_store::path::Path::from(path)).await.unwrap().bytes().await.unwrap();
    assert_eq!(read, bytes, "a change of class keeps the bytes");

    // An archive class: a plain GET fails until a restore (moto completes it at once).
    classes.set_class(path, 4096, StorageClass::Glacier).await.unwrap();
    assert_eq!(classes.head(path).await.unwrap(), (StorageClass::Glacier, RestoreState::Archived));
    let err = store.get(&object_store::path::Path::from(path)).await.unwrap_err().to_string();
    assert!(err.contains("InvalidObjectState") || err.contains("403"), "{err}");
    classes.restore(path, 2).await.unwrap();
    assert!(matches!(classes.head(path).await.unwrap().1, RestoreState::Restored { .. }));
    let read = store.get(&object_store::path::Path::from(path)).await.unwrap().bytes().await.unwrap();
    assert_eq!(read, bytes);

    // From the environment alone (AWS_ENDPOINT_URL and the keys the test script sets).
    let from_env = ObjectClasses::for_table(&uri, &HashMap::new()).await.unwrap().unwrap();
    assert_eq!(from_env.class_of(path).await.unwrap(), StorageClass::Glacier);
    // A missing file is not found, naming it.
    let err = from_env.class_of("day=2024-05-01/none.parquet").await.unwrap_err();
    assert_eq!(err.kind(), sediment::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("none.parquet"), "{err}");
}

#[tokio::test]
async fn local_and_memory_tables_have_no_storage_classes() {
    let dir = tempfile::tempdir().unwrap();
    assert!(ObjectClasses::for_table(dir.path().to_str().unwrap(), &HashMap::new()).await.unwrap().is_none());
    assert!(ObjectClasses::for_table("memory://tiering/", &HashMap::new()).await.unwrap().is_none());
}

/// A table on S3 with one file in each of `days` (a string `day` partition).
async fn daily_table(name: &str, days: &[&str]) -> String {
    let uri = s3_uri(name);
    let mut table = sediment::Table::open_or_new(&uri, Default::default()).await.unwrap();
    for (i, day) in days.iter().enumerate() {
        crate::service::append_day_row(&mut table, i as i64, day).await;
    }
    uri
}

#[tokio::test]
async fn the_tier_plan_comes_from_the_log_by_partition_age() {
    use sediment::maintain::tiering::{AgeBy, TierSteps};
    let uri = daily_table("tier-plan", &["2026-11-30", "2026-10-01", "2026-10-02", "2025-06-01"]).await;
    let table = sediment::Table::open(&uri).await.unwrap();
    let steps = TierSteps::parse("30d:STANDARD_IA,180d:GLACIER_IR").unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let plan = table.tier_plan(&steps, None, now).unwrap();
    assert_eq!(plan.age_by, AgeBy::Partition("day".into()));
    let moves: Vec<(String, StorageClass, usize)> =
        plan.moves.iter().map(|m| (m.partition["day"].clone().unwrap(), m.storage_class, m.files.len())).collect();
    assert_eq!(
        moves,
        vec![
            ("2025-06-01".to_string(), StorageClass::GlacierIr, 1),
            ("2026-10-01".to_string(), StorageClass::StandardIa, 1),
            ("2026-10-02".to_string(), StorageClass::StandardIa, 1),
        ]
    );
    assert_eq!(plan.files_not_due, 1);
    // A column that is not a date is refused naming it.
    let err = table.tier_plan(&steps, Some("id"), now).unwrap_err().to_string();
    assert!(err.contains("id") && err.contains("not a partition column"), "{err}");

    // The CLI: the plan as JSON; moving is refused, saying it is not built; bad steps named.
    let bin = crate::cli::sediment_bin();
    let run = |args: &[&str]| std::process::Command::new(&bin).args(args).output().unwrap();
    let out = run(&["tier", &uri, "--policy", "30d:STANDARD_IA", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["storage_classes"], true);
    assert_eq!(plan["moves"].as_array().unwrap().len(), 3, "{plan}");
    let out = run(&["tier", &uri, "--policy", "30d:STANDARD_IA"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not built yet"));
    let out = run(&["tier", &uri, "--policy", "90d:GLACIER_IR,30d:STANDARD_IA", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("older"), "{stderr}");
    let out = run(&["tier", &uri, "--policy", "30d:TAPE", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("TAPE"));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("t");
    let mut t = sediment::Table::open_or_new(local.to_str().unwrap(), Default::default()).await.unwrap();
    t.write([sediment::demo::events_batch(0, 10)], sediment::WriteOptions::append()).await.unwrap();
    let out = run(&["tier", local.to_str().unwrap(), "--policy", "30d:STANDARD_IA", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no storage classes"));
}
