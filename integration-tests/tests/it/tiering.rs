//! Tiering against the S3 test server: its S3 calls (a file's class, a change of
//! class in place with its bytes unchanged, an archived file refused by a plain GET
//! until a restore, stores without classes), the plan from the log, and whole runs:
//! two years of daily partitions tiered by a two-step policy with an injected clock,
//! a run killed between its copies and its commit, tiering racing compaction and
//! deletes, and `sediment tier` by the catalog's policy and as a daemon job.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use sediment::Table;
use sediment::arrow::array::{Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::maintain::tiering::{ObjectClasses, RestoreState, StorageClass, TierOptions, TierSteps};
use sediment::table::clock::ManualClock;

use crate::common::{s3_endpoint, s3_uri, table_rows};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// One append of a row per day in `days` (ids from `first`): a file per day.
async fn append_days(table: &mut Table, first: i64, days: &[String]) {
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("day", DataType::Utf8, false)]));
    let ids: Vec<i64> = (first..first + days.len() as i64).collect();
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(days.to_vec()))])
            .unwrap();
    table.write(vec![batch], sediment::WriteOptions::append().partition_by(["day"])).await.expect("an append commits");
}

/// `n` days back from `today`, newest first.
fn days_back(today: DateTime<Utc>, n: i64) -> Vec<String> {
    (0..n).map(|d| (today.date_naive() - Duration::days(d)).to_string()).collect()
}

/// Every live file's class as the log records it and as HeadObject reports it.
async fn log_and_store_classes(table: &Table) -> Vec<(String, StorageClass, StorageClass)> {
    let classes = ObjectClasses::for_table(table.uri(), &HashMap::new()).await.unwrap().unwrap();
    let files = table.tier_files().unwrap();
    futures::stream::iter(files)
        .map(|f| {
            let classes = classes.clone();
            async move {
                let stored = classes.class_of(&f.path).await.unwrap();
                (f.path, f.storage_class, stored)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

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
async fn a_large_file_changes_class_by_a_multipart_copy() {
    let uri = s3_uri("tier-multipart");
    let store = sediment::table::storage::store_at(&uri, HashMap::new()).unwrap();
    let path = "day=2024-05-01/big.parquet";
    let bytes = bytes::Bytes::from((0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    store.put(&object_store::path::Path::from(path), bytes.clone().into()).await.unwrap();
    // Above 5 MiB in parts of 5 MiB: three UploadPartCopy requests.
    let classes = ObjectClasses::for_table(&uri, &HashMap::new())
        .await
        .unwrap()
        .unwrap()
        .with_copy_limits(5 * 1024 * 1024, 5 * 1024 * 1024);
    classes.set_class(path, bytes.len() as u64, StorageClass::StandardIa).await.unwrap();
    assert_eq!(classes.class_of(path).await.unwrap(), StorageClass::StandardIa);
    let read = store.get(&object_store::path::Path::from(path)).await.unwrap().bytes().await.unwrap();
    assert_eq!(read, bytes, "the parts put back every byte in order");
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
    use sediment::maintain::tiering::AgeBy;
    // Days relative to today: the CLI plans with the wall clock.
    let now = Utc::now();
    let day = |back: i64| (now.date_naive() - Duration::days(back)).to_string();
    let (d2, d62, d61, d549) = (day(2), day(62), day(61), day(549));
    let uri = daily_table("tier-plan", &[&d2, &d62, &d61, &d549]).await;
    let table = sediment::Table::open(&uri).await.unwrap();
    let steps = TierSteps::parse("30d:STANDARD_IA,180d:GLACIER_IR").unwrap();
    let plan = table.tier_plan(&steps, None, now).unwrap();
    assert_eq!(plan.age_by, AgeBy::Partition("day".into()));
    let moves: Vec<(String, StorageClass, usize)> =
        plan.moves.iter().map(|m| (m.partition["day"].clone().unwrap(), m.storage_class, m.files.len())).collect();
    assert_eq!(
        moves,
        vec![
            (d549, StorageClass::GlacierIr, 1),
            (d62, StorageClass::StandardIa, 1),
            (d61, StorageClass::StandardIa, 1)
        ]
    );
    assert_eq!(plan.files_not_due, 1);
    // A column that is not a date is refused naming it.
    let err = table.tier_plan(&steps, Some("id"), now).unwrap_err().to_string();
    assert!(err.contains("id") && err.contains("not a partition column"), "{err}");

    // The CLI: the plan as JSON, nothing moved; bad steps named.
    let bin = crate::cli::sediment_bin();
    let run = |args: &[&str]| std::process::Command::new(&bin).args(args).output().unwrap();
    let out = run(&["tier", &uri, "--policy", "30d:STANDARD_IA", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["storage_classes"], true);
    assert_eq!(plan["planned"].as_array().unwrap().len(), 3, "{plan}");
    assert_eq!(plan["files_planned"], 3, "{plan}");
    assert!(table_files_standard(&uri).await, "a dry run moves nothing");
    let out = run(&["tier", &uri, "--policy", "90d:GLACIER_IR,30d:STANDARD_IA", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("older"), "{stderr}");
    let out = run(&["tier", &uri, "--policy", "30d:TAPE", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("TAPE"));
    // A partition column that holds no dates cannot age.
    let regions = daily_table("tier-regions", &["eu-west", "us-east"]).await;
    let out = run(&["tier", &regions, "--policy", "30d:STANDARD_IA", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("day") && stderr.contains("date"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("t");
    let mut t = sediment::Table::open_or_new(local.to_str().unwrap(), Default::default()).await.unwrap();
    t.write([sediment::demo::events_batch(0, 10)], sediment::WriteOptions::append()).await.unwrap();
    let out = run(&["tier", local.to_str().unwrap(), "--policy", "30d:STANDARD_IA", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no storage classes"));
}

async fn table_files_standard(uri: &str) -> bool {
    let table = Table::open(uri).await.unwrap();
    log_and_store_classes(&table)
        .await
        .iter()
        .all(|(_, log, store)| *log == StorageClass::Standard && *store == StorageClass::Standard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_years_of_daily_partitions_tier_by_a_two_step_policy() {
    let now = at("2026-12-02T06:00:00Z");
    let days = days_back(now, 730);
    let uri = s3_uri("tier-two-years");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_days(&mut table, 0, &days).await;
    // A second file in each of the newest 40 days (30 not due, 10 due for STANDARD_IA).
    append_days(&mut table, 10_000, &days[..40]).await;
    // A tombstoned file: day 400's only file, deleted (the file stays for vacuum).
    let tombstoned = table.files().unwrap().into_iter().find(|f| f.path.contains(&days[400])).unwrap().path;
    table.delete(&format!("day = '{}'", days[400])).await.unwrap();
    let rows = table_rows(&table).await;

    let steps = TierSteps::parse("30d:STANDARD_IA,365d:GLACIER_IR").unwrap();
    let clock = ManualClock::new(now);
    let report = table.tier(TierOptions::new(steps.clone()).with_clock(clock.clone())).await.unwrap();
    // Days 30..=364 to STANDARD_IA (335 partitions; the 10 of them with two small files
    // compacted into one first), 365..=729 to GLACIER_IR less day 400.
    assert_eq!(report.partitions_compacted, 10, "{report:#?}");
    assert_eq!(report.moved[&StorageClass::StandardIa].files, 335, "{report:#?}");
    assert_eq!(report.moved[&StorageClass::GlacierIr].files, 364, "{report:#?}");
    assert_eq!(report.files_not_due, 60);
    assert_eq!((report.files_gone, report.files_already_there), (0, 0));
    assert_eq!(report.versions.len(), 1, "699 moves fit one commit: {report:#?}");

    // The log and HeadObject agree with the policy, file by file; rows unchanged.
    let table = Table::open(&uri).await.unwrap();
    for (path, log, stored) in log_and_store_classes(&table).await {
        let day = path.split("day=").nth(1).unwrap().get(..10).unwrap().to_string();
        let age = now - at(&format!("{day}T00:00:00Z"));
        let expected = steps.class_for(age.to_std().unwrap()).unwrap_or(StorageClass::Standard);
        assert_eq!((log, stored), (expected, expected), "{path}");
    }
    assert_eq!(table_rows(&table).await, rows);
    let classes = ObjectClasses::for_table(&uri, &HashMap::new()).await.unwrap().unwrap();
    assert_eq!(classes.class_of(&tombstoned).await.unwrap(), StorageClass::Standard, "a tombstoned file stays");
    // The commit says what it was.
    let history = table.history(Some(1)).await.unwrap();
    assert_eq!(history[0].operation.as_deref(), Some("SET STORAGE CLASS"), "{history:?}");

    // A second run does nothing; a month later, the next partitions move.
    let mut table = table;
    let again = table.tier(TierOptions::new(steps.clone()).with_clock(clock.clone())).await.unwrap();
    assert_eq!((again.files_planned, again.versions.len()), (0, 0), "{again:#?}");
    clock.advance(Duration::days(31));
    let later = table.tier(TierOptions::new(steps).with_clock(clock)).await.unwrap();
    // Days 0..=29 reach 30 days (their two files each compacted into one first); days
    // 334..=364 reach a year.
    assert_eq!(later.partitions_compacted, 30, "{later:#?}");
    assert_eq!(later.moved[&StorageClass::StandardIa].files, 30, "{later:#?}");
    assert_eq!(later.moved[&StorageClass::GlacierIr].files, 31, "{later:#?}");
}

#[tokio::test]
async fn a_run_killed_before_its_commit_is_finished_by_the_next() {
    // The real clock: the CLI below ages partitions by it.
    let now = Utc::now();
    let uri = s3_uri("tier-killed");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let days = days_back(now, 60);
    append_days(&mut table, 0, &days).await;
    // The copies of a run that died before recording them: the store moved, the log did not.
    let classes = ObjectClasses::for_table(&uri, &HashMap::new()).await.unwrap().unwrap();
    let oldest_not_due = days[30].as_str(); // 30 days old: due
    let due: Vec<_> = table
        .tier_files()
        .unwrap()
        .into_iter()
        .filter(|f| f.partition["day"].as_deref() <= Some(oldest_not_due))
        .collect();
    assert_eq!(due.len(), 30);
    for f in &due[..20] {
        classes.set_class(&f.path, f.size, StorageClass::StandardIa).await.unwrap();
    }
    // `info --check-storage-classes` sees the store disagree with the log.
    let mismatches = table.check_storage_classes().await.unwrap().unwrap();
    assert_eq!(mismatches.len(), 20, "{mismatches:?}");
    assert!(mismatches.iter().all(|m| (m.log, m.store) == (StorageClass::Standard, StorageClass::StandardIa)));
    let bin = crate::cli::sediment_bin();
    let out = std::process::Command::new(&bin)
        .args(["info", &uri, "--check-storage-classes", "--tier-policy", "30d:STANDARD_IA", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["storage_class_mismatches"].as_array().unwrap().len(), 20, "{info}");
    assert_eq!(info["storage"]["classes"][0]["storage_class"], "STANDARD", "the log's view: {info}");
    assert_eq!(info["storage"]["classes"][0]["files"], 60);
    // Tiny files: STANDARD_IA bills each as 128 KB, so this policy would cost more, and says so.
    assert_eq!(info["storage"]["policy"]["files_to_move"], 30, "{info}");
    assert!(info["storage"]["policy"]["monthly_savings_usd"].as_f64().unwrap() < 0.0, "{info}");
    assert_eq!(
        info["storage"]["ranges"].as_array().unwrap().len(),
        days.iter().map(|d| &d[..7]).collect::<std::collections::BTreeSet<_>>().len()
    );

    let steps = TierSteps::parse("30d:STANDARD_IA").unwrap();
    let report = table.tier(TierOptions::new(steps).with_clock(ManualClock::new(now))).await.unwrap();
    assert!(table.check_storage_classes().await.unwrap().unwrap().is_empty());
    // S3 refuses a copy onto itself that changes nothing, and the run then finds the
    // file in place with one HeadObject; moto copies it again. Either way all 30 are
    // recorded, and the log and the store agree.
    assert!(report.files_already_there <= 20, "{report:#?}");
    assert_eq!(report.moved[&StorageClass::StandardIa].files, 30, "{report:#?}");
    for (path, log, stored) in log_and_store_classes(&table).await {
        assert_eq!(log, stored, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiering_racing_compaction_deletes_and_merges_loses_nothing() {
    let now = at("2024-07-15T00:00:00Z");
    for round in 0..2 {
        let uri = crate::service::fragmented_table(&format!("tier-race-{round}"), 4, 6).await;
        let rows = table_rows(&Table::open(&uri).await.unwrap()).await;
        let steps = TierSteps::parse("30d:STANDARD_IA").unwrap();
        let mut tiering = Table::open(&uri).await.unwrap();
        let mut compacting = Table::open(&uri).await.unwrap();
        let mut deleting = Table::open(&uri).await.unwrap();
        let mut merging = Table::open(&uri).await.unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Utf8, false),
        ]));
        let source = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 9000])),
                Arc::new(StringArray::from(vec!["2024-05-04", "2024-05-01"])),
            ],
        )
        .unwrap();
        let merge = merging
            .merge([source])
            .on(["id"])
            .when_matched(sediment::MatchedAction::Delete)
            .when_not_matched_insert_all()
            .execute();
        let (tiered, compacted, deleted, merged) = tokio::join!(
            tiering.tier(TierOptions::new(steps.clone()).with_clock(ManualClock::new(now))),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50 * round)).await;
                compacting.compact(Default::default()).await
            },
            deleting.delete("id = 3"),
            merge,
        );
        let tiered = tiered.unwrap();
        compacted.unwrap();
        deleted.unwrap();
        merged.unwrap();
        let mut table = Table::open(&uri).await.unwrap();
        let now_rows = table_rows(&table).await;
        assert_eq!(
            now_rows.len(),
            rows.len() - 2 + 1,
            "round {round}: two rows deleted, one inserted, none lost: {tiered:#?}"
        );
        for (path, log, stored) in log_and_store_classes(&table).await {
            assert_eq!(log, stored, "round {round}: {path}: {tiered:#?}");
        }
        // Another run brings whatever the others wrote into its class.
        table.tier(TierOptions::new(steps).with_clock(ManualClock::new(now))).await.unwrap();
        assert_eq!(table_rows(&table).await, now_rows);
        for (path, log, stored) in log_and_store_classes(&table).await {
            assert_eq!((log, stored), (StorageClass::StandardIa, StorageClass::StandardIa), "round {round}: {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sediment_tier_by_the_catalogs_policy_and_as_a_daemon_job() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let now = Utc::now();
    let uri = s3_uri("tier-catalog");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_days(&mut table, 0, &days_back(now, 50)).await;
    let bin = crate::cli::sediment_bin();
    let run =
        |args: &[&str]| std::process::Command::new(&bin).args(args).arg("--catalog").arg(&catalog).output().unwrap();
    let policy = r#"{"tiering": {"enabled": true, "steps": [{"older_than": "40d", "storage_class": "STANDARD_IA"}]}}"#;
    let out = run(&["tables", "register", "raw.days", "--layer", "bronze", "--location", &uri, "--policy", policy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // By name, with the policy from the catalog: a dry run, then the move.
    let out = run(&["tier", "raw.days", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["files_planned"], 10, "days 40..=49: {plan}");
    // By location with steps of its own (days 45..=49).
    let out = run(&["tier", &uri, "--policy", "45d:STANDARD_IA"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("moved to STANDARD_IA: 5 files"), "{text}");
    // An unknown table is named.
    let out = run(&["tier", "raw.nope"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("raw.nope"));

    // The daemon's scheduler runs a tier job by the policy (run-once): days 40..=44.
    let out = run(&["run-once", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = report["jobs"].as_array().unwrap().iter().find(|j| j["kind"] == "tier").cloned();
    assert!(job.is_some(), "a tier job is due on its first look: {report}");
    let table = Table::open(&uri).await.unwrap();
    let classes = log_and_store_classes(&table).await;
    assert!(classes.iter().all(|(_, log, stored)| log == stored), "{classes:?}");
    assert_eq!(classes.iter().filter(|(_, log, _)| *log == StorageClass::StandardIa).count(), 10, "{classes:?}");
    // Its commit names the job.
    let history = table.history(Some(1)).await.unwrap();
    assert!(history[0].job.is_some(), "{history:?}");
    // The catalog's description has the storage by class (the API's GET returns the same).
    let out = run(&["tables", "describe", "raw.days", "--json"]);
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let classes = described["storage"]["classes"].as_array().unwrap();
    let ia = classes.iter().find(|c| c["storage_class"] == "STANDARD_IA").unwrap();
    assert_eq!(ia["files"], 10, "{described}");
    assert_eq!(described["storage"]["policy"]["files_to_move"], 0, "{described}");
    // Nothing left: the CLI by the catalog's policy finds its work done.
    let out = run(&["tier", "raw.days", "--json"]);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["files_planned"], 0, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_partition_fails_fast_naming_it_until_restored() {
    let now = Utc::now();
    let days = days_back(now, 400);
    let (today, old) = (days[0].clone(), days[399].clone());
    let uri = s3_uri("tier-archived");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_days(&mut table, 0, &[today.clone(), old.clone()]).await;
    let rows = table_rows(&table).await;
    let steps = TierSteps::parse("365d:GLACIER").unwrap();
    let report = table.tier(TierOptions::new(steps)).await.unwrap();
    assert_eq!(report.moved[&StorageClass::Glacier].files, 1, "{report:#?}");

    // A scan, a delete and a merge that would read it fail at once, naming the partition and the restore.
    let err = table.scan().execute().await.unwrap_err();
    assert_eq!(err.kind(), sediment::ErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("day={old}")) && text.contains("sediment tier restore"), "{text}");
    assert!(text.contains("--skip-archived"), "{text}");
    let err = table.delete("id = 1").await.unwrap_err().to_string();
    assert!(err.contains(&format!("day={old}")) && err.contains("delete from"), "{err}");
    let source = {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1])), Arc::new(StringArray::from(vec![old.clone()]))],
        )
        .unwrap()
    };
    let err = table
        .merge([source])
        .on(["id"])
        .when_matched(sediment::MatchedAction::UpdateAll)
        .when_not_matched_insert_all()
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("day={old}")) && err.contains("merge into"), "{err}");
    // Scans that do not touch it, or skip it explicitly, read.
    let (batches, _) = crate::common::ScanRun::run(table.scan().filter(format!("day = '{today}'"))).await;
    assert_eq!(crate::common::count(&batches), 1);
    let (batches, report) = crate::common::ScanRun::run(table.scan().skip_archived(true)).await;
    assert_eq!((crate::common::count(&batches), report.files_skipped_archived), (1, 1));

    // The CLI says the same; `tier restore` asks for the restore (moto completes it at once); then it reads.
    let bin = crate::cli::sediment_bin();
    let run = |args: &[&str]| std::process::Command::new(&bin).args(args).output().unwrap();
    let out = run(&["scan", &uri]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&format!("day={old}")), "{stderr}");
    let out = run(&["scan", &uri, "--skip-archived"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("1 archived files skipped"));
    let predicate = format!("day = '{old}'");
    let out = run(&["tier", "restore", &uri, "--where", &predicate, "--days", "2", "--json", "--wait", "--poll", "1s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((lines[0]["files_archived"].as_u64(), lines[0]["requested"].as_u64()), (Some(1), Some(1)), "{lines:?}");
    assert_eq!(lines.last().unwrap()["restored"], 1, "--wait ends when it is readable: {lines:?}");
    assert_eq!(table_rows(&table).await, rows);
    let out = run(&["tier", "restore", &uri, "--where", "days = 'x'"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("days"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_partitions_are_compacted_before_they_leave_hot_and_cold_files_are_left_alone() {
    let now = at("2024-07-15T00:00:00Z");
    // Three old partitions (2024-05-01..03) and one young one, eight one-row files each.
    let uri = crate::service::fragmented_table("tier-compact-first", 3, 8).await;
    let mut table = Table::open(&uri).await.unwrap();
    for i in 0..8 {
        crate::service::append_day_row(&mut table, 1000 + i, "2024-07-14").await;
    }
    let rows = table_rows(&table).await;
    let steps = TierSteps::parse("30d:STANDARD_IA").unwrap();

    let dry =
        table.tier(TierOptions::new(steps.clone()).with_clock(ManualClock::new(now)).dry_run(true)).await.unwrap();
    assert_eq!((dry.partitions_compacted, dry.files_planned), (3, 24), "{dry:#?}");
    let report = table.tier(TierOptions::new(steps.clone()).with_clock(ManualClock::new(now))).await.unwrap();
    assert_eq!(report.partitions_compacted, 3, "{report:#?}");
    let compaction = report.compaction.as_ref().expect("compacted first");
    assert_eq!((compaction.files_removed, compaction.files_added), (24, 3), "{compaction:#?}");
    assert_eq!(report.moved[&StorageClass::StandardIa].files, 3, "the outputs moved, not the 24 inputs: {report:#?}");
    assert_eq!(table_rows(&table).await, rows);
    let classes = log_and_store_classes(&table).await;
    let young = |path: &str| path.contains("2024-07-14");
    for (path, log, stored) in &classes {
        let expected = if young(path) { StorageClass::Standard } else { StorageClass::StandardIa };
        assert_eq!((*log, *stored), (expected, expected), "{path}");
    }

    // Compaction afterwards leaves the cold partitions alone: only the young one is planned.
    let plan = table.compaction_plan(&Default::default()).unwrap();
    let planned: Vec<String> =
        plan.partitions.iter().map(|p| p.partition.iter().map(|(_, v)| v.clone().unwrap()).collect()).collect();
    assert_eq!(planned, vec!["2024-07-14".to_string()], "{plan:#?}");

    // Late rows land in a cold partition (hot files); --include-cold merges them with the
    // cold file, and the output goes into that file's class.
    for i in 0..3 {
        crate::service::append_day_row(&mut table, 2000 + i, "2024-05-02").await;
    }
    let rows = table_rows(&table).await;
    let options = sediment::CompactOptions {
        filter: Some("day = '2024-05-02'".into()),
        include_cold: true,
        ..Default::default()
    };
    let plan = table.compaction_plan(&options).unwrap();
    assert_eq!(plan.partitions.len(), 1);
    assert_eq!(plan.partitions[0].bins[0].inputs.len(), 4, "{plan:#?}");
    assert_eq!(plan.partitions[0].bins[0].storage_class.as_deref(), Some("STANDARD_IA"));
    table.compact(options).await.unwrap();
    assert_eq!(table_rows(&table).await, rows);
    let in_partition: Vec<_> =
        log_and_store_classes(&table).await.into_iter().filter(|(p, _, _)| p.contains("2024-05-02")).collect();
    assert_eq!(in_partition.len(), 1, "{in_partition:?}");
    assert_eq!((in_partition[0].1, in_partition[0].2), (StorageClass::StandardIa, StorageClass::StandardIa));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_deletes_and_updates_write_new_versions_of_cold_files_in_their_class() {
    let now = Utc::now();
    let days = days_back(now, 100);
    let (old, young) = (days[90].clone(), days[1].clone());
    let uri = s3_uri("tier-rewrites");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    // Three appends: a two-row file in the old partition and a one-row file in the young one each.
    for round in 0..3 {
        append_days(&mut table, round * 100, &[old.clone(), old.clone(), young.clone()]).await;
    }
    let steps = TierSteps::parse("30d:STANDARD_IA").unwrap();
    let mut options = TierOptions::new(steps);
    options.compact_first = None; // keep the three files of the old partition
    table.tier(options).await.unwrap();

    // An update, a delete and a merge that each rewrite a cold file.
    table.update("id = 100", &[("id", "id + 1000")]).await.unwrap();
    table.delete("id = 200").await.unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("day", DataType::Utf8, false)]));
    let source = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![0, 7000])), Arc::new(StringArray::from(vec![old.clone(), old.clone()]))],
    )
    .unwrap();
    table
        .merge([source])
        .on(["id"])
        .when_matched(sediment::MatchedAction::Delete)
        .when_not_matched_insert_all()
        .execute()
        .await
        .unwrap();
    let table = Table::open(&uri).await.unwrap();
    let classes = log_and_store_classes(&table).await;
    let in_old = classes.iter().filter(|(p, _, _)| p.contains(&old)).count();
    assert!(in_old >= 3, "{classes:?}");
    for (path, log, stored) in &classes {
        let expected = if path.contains(&old) { StorageClass::StandardIa } else { StorageClass::Standard };
        assert_eq!((*log, *stored), (expected, expected), "{path}: {classes:?}");
    }
    assert_eq!(table_rows(&table).await.len(), 9 - 2 + 1);
}
