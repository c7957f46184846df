//! The `sediment` binary, run as a script would run it, against the S3 server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::s3_uri;

pub fn sediment_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SEDIMENT_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/it-<hash> -> target/<profile>/sediment
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sediment");
    assert!(
        bin.exists(),
        "build the CLI first (cargo build --bin sediment) or set SEDIMENT_BIN; looked at {}",
        bin.display()
    );
    bin
}

fn run(args: &[&str]) -> Output {
    Command::new(sediment_bin()).args(args).output().expect("sediment runs")
}

/// Run with no AWS endpoint in the environment: settings must come from options.
fn run_without_env(args: &[&str]) -> Output {
    Command::new(sediment_bin())
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ALLOW_HTTP")
        .output()
        .expect("sediment runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().to_string()
}

fn version_of(uri: &str) -> i64 {
    let out = run(&["info", uri, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    info["version"].as_i64().unwrap()
}

#[test]
fn append_scan_history_info_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_uri("cli");
    let csv = write(dir.path(), "a.csv", "id,city,amount\n1,paris,1.5\n2,oslo,2.5\n3,paris,3.0\n");
    let ndjson = write(
        dir.path(),
        "b.ndjson",
        "{\"id\": 4, \"city\": \"lima\", \"amount\": 4.0}\n{\"id\": 5, \"city\": \"oslo\"}\n",
    );

    let out = run(&["append", &uri, &csv, &ndjson, "--partition-by", "city", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 0);
    assert_eq!(report["rows_written"], 5);
    assert_eq!(report["created"], true);

    // Parquet written by `scan --format parquet` goes back in as a source file.
    let parquet = dir.path().join("c.parquet");
    let out =
        run(&["scan", &uri, "--where", "city = 'paris'", "--format", "parquet", "--output", parquet.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["append", &uri, parquet.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(version_of(&uri), 1);

    let out = run(&["scan", &uri, "--where", "city = 'paris'", "--columns", "id,amount", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4, "two paris rows, appended twice");
    assert!(rows.iter().all(|r| r.get("city").is_none() && r.get("id").is_some()));
    let report: serde_json::Value = serde_json::from_str(stderr(&out).lines().last().unwrap()).unwrap();
    assert_eq!(report["files_after_partition_pruning"], 2);
    assert_eq!(report["files_in_snapshot"], 4);

    // Time travel and CSV output.
    let out = run(&["scan", &uri, "--version", "0", "--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 6, "header and five rows");

    let out = run(&["history", &uri, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let history: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0]["engine"].as_str().unwrap().starts_with("sediment/"));

    let out = run(&["info", &uri]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("partitions   3 by [city]"), "{}", stdout(&out));
}

#[test]
fn bad_files_are_refused_by_name_and_nothing_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_uri("cli-bad");
    let good = write(dir.path(), "good.csv", "id,name\n1,a\n2,b\n");
    let out = run(&["append", &uri, &good]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A row that does not parse as the inferred type, after a good file in the same call.
    let mut text = String::from("id,name\n");
    for i in 0..1_500 {
        text.push_str(&format!("{i},n{i}\n"));
    }
    text.push_str("not-a-number,x\n");
    let malformed = write(dir.path(), "malformed.csv", &text);
    let out = run(&["append", &uri, &good, &malformed]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("malformed.csv"), "{}", stderr(&out));
    assert_eq!(version_of(&uri), 0);

    // A file whose column type does not fit the table: text files are read in the
    // table's types, so the value that does not parse is named with its file and column.
    let unfitting = write(dir.path(), "unfitting.ndjson", "{\"id\": \"seven\", \"name\": \"x\"}\n");
    let out = run(&["append", &uri, &unfitting]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unfitting.ndjson") && err.contains("'id'") && err.contains("Int64"), "{err}");
    assert_eq!(version_of(&uri), 0);

    // Not a parquet file at all; an unknown extension; a missing file.
    let fake = write(dir.path(), "fake.parquet", "this is not parquet");
    let out = run(&["append", &uri, &fake]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("fake.parquet"), "{}", stderr(&out));
    let out = run(&["append", &uri, &write(dir.path(), "x.txt", "hello")]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["append", &uri, "/no/such/file.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(version_of(&uri), 0);

    // Missing tables and versions are "not found" (3); bad expressions are input errors (2).
    let out = run(&["scan", &s3_uri("cli-none")]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = run(&["scan", &uri, "--version", "9"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = run(&["scan", &uri, "--where", "id >>> 3"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&["append", &uri, &good, "--storage-option", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_runs_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["demo", "--dir", dir.path().to_str().unwrap(), "--appends", "6", "--rows-per-append", "300"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("time travel") && text.contains("== next"), "{text}");
    let uri = dir.path().join("bronze/events");
    let out = run(&["info", uri.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["rows"], 1_800);
    assert_eq!(info["version"], 6, "six appends and a compaction");
    assert_eq!(info["files"], 5, "compacted to one file per day");
    assert!(text.contains("30 -> 5"), "{text}");
    // The demo compacted the table: compacting again says it is healthy and commits nothing.
    let out = run(&["compact", uri.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("is healthy: nothing to compact"), "{}", stdout(&out));
    let out = run(&["info", uri.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["version"], 6);
}

#[test]
fn storage_options_on_the_command_line_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_uri("cli-options");
    let file = write(dir.path(), "x.csv", "id\n1\n2\n");
    let endpoint = crate::common::s3_endpoint();
    let endpoint_option = format!("aws_endpoint={endpoint}");
    let options = ["--storage-option", &endpoint_option, "--storage-option", "aws_allow_http=true"];
    let mut args = vec!["append", &uri, &file];
    args.extend(options);
    let out = run_without_env(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut args = vec!["info", &uri, "--json"];
    args.extend(options);
    let out = run_without_env(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["rows"], 2);
}

#[test]
fn merge_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_uri("cli-merge");
    let base = write(dir.path(), "base.csv", "id,name,qty\n1,apple,5\n2,pear,3\n3,plum,7\n");
    let out = run(&["append", &uri, &base]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Upsert: 2 updated, 4 inserted, 1 and 3 untouched; `op` drives deletes.
    let changes = write(dir.path(), "changes.csv", "id,name,qty,op\n2,pear,30,u\n3,plum,7,d\n4,fig,1,u\n");
    let out = run(&["merge", &uri, &changes, "--key", "id", "--delete-when", "source.op = 'd'", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows_updated"], 1, "{report}");
    assert_eq!(report["rows_deleted"], 1, "{report}");
    assert_eq!(report["rows_inserted"], 1, "{report}");
    let out = run(&["scan", &uri, "--format", "csv"]);
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
    lines.sort();
    assert_eq!(lines, ["1,apple,5", "2,pear,30", "4,fig,1"]);

    // A dry run shows the files the merge would open and changes nothing.
    let version = version_of(&uri);
    let out = run(&["merge", &uri, &changes, "--key", "id", "--delete-when", "source.op = 'd'", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["source_rows"], 3, "{plan}");
    assert_eq!(
        plan["files_considered"].as_u64().unwrap(),
        plan["candidates"].as_array().unwrap().len() as u64 + plan["files_pruned"].as_u64().unwrap()
    );
    assert_eq!(version_of(&uri), version);

    // Duplicate keys are refused by name unless a dedupe column is given.
    let dup = write(dir.path(), "dup.csv", "id,name,qty\n5,kiwi,1\n5,kiwi,2\n");
    let version = version_of(&uri);
    let out = run(&["merge", &uri, &dup, "--key", "id"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("id = 5"), "{}", stderr(&out));
    assert_eq!(version_of(&uri), version);
    let out = run(&["merge", &uri, &dup, "--key", "id", "--dedupe-by", "qty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 duplicate source rows dropped"), "{}", stdout(&out));

    // Exactly-once: the same batch version twice commits once.
    let batch = write(dir.path(), "batch.csv", "id,name,qty\n6,lime,9\n");
    for expect_commit in [true, false] {
        let version = version_of(&uri);
        let out = run(&["merge", &uri, &batch, "--key", "id", "--app-id", "loader", "--batch-version", "1"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(version_of(&uri) > version, expect_commit, "{}", stdout(&out));
    }

    // A missing key column is an input error.
    let out = run(&["merge", &uri, &batch, "--key", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`nope`"), "{}", stderr(&out));

    // A source past its memory limit is spilled where --spill-dir says; a directory
    // that is not there is an input error naming it.
    let spill = dir.path().join("spill");
    let more = write(
        dir.path(),
        "more.csv",
        "id,name,qty
1,apple,6
7,date,2
8,sloe,4
",
    );
    let spill_dir = spill.to_str().unwrap();
    let args = ["merge", &uri, &more, "--key", "id", "--source-memory-limit", "1", "--spill-dir", spill_dir, "--json"];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(spill_dir), "{}", stderr(&out));
    std::fs::create_dir(&spill).unwrap();
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["key_ranges"].as_u64().unwrap() > 1, "{report}");
    assert_eq!((report["rows_updated"].as_u64(), report["rows_inserted"].as_u64()), (Some(1), Some(2)), "{report}");
}

#[test]
fn tables_created_with_deletion_vectors_get_rows_marked_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_uri("cli-dv");
    let base = write(dir.path(), "base.csv", "id,name\n1,apple\n2,pear\n3,plum\n");
    let out = run(&["append", &uri, &base, "--table-property", "delta.enableDeletionVectors=true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let changes = write(dir.path(), "changes.csv", "id,name\n2,quince\n");
    let out = run(&["merge", &uri, &changes, "--key", "id", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["files_marked"].as_u64(), report["files_rewritten"].as_u64()), (Some(1), Some(0)), "{report}");
    // Id 3 lives in the file the merge marked: its vector is extended.
    let out = run(&["delete", &uri, "--where", "id = 3", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = (report["rows_deleted"].as_u64(), report["files_marked"].as_u64(), report["files_rewritten"].as_u64());
    assert_eq!(counts, (Some(1), Some(1), Some(0)), "{report}");
    let out = run(&["scan", &uri, "--format", "csv"]);
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
    lines.sort();
    assert_eq!(lines, ["1,apple", "2,quince"]);
    // A bad property value is refused before anything is written.
    let out = run(&["append", &s3_uri("cli-dv-bad"), &base, "--table-property", "no-equals-sign"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
