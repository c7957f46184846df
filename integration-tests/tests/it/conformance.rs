//! Conformance: real Delta tables that Sediment did not write.
//!
//! - DAT: every case returns exactly its `expected/` rows at every listed version.
//! - delta-rs test data and the delta-io golden tables: every table either scans to
//!   the row count an independent reader found (`INVENTORY.md`), or is refused with a
//!   clear error for a reason written down in [`REFUSED`]; none panics.
//! - Broken logs: `a` and `b` open; `c`..`f`, `h`, `i` fail with an error, not a panic.
//!
//! When `../shared/conformance` (or `SEDIMENT_CONFORMANCE_DIR`) does not exist, as in
//! a user's clone, these tests say so and pass without checking anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use sediment::arrow::array::RecordBatch;
use sediment::arrow::compute::cast;
use sediment::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sediment::{OpenOptions, Table};

use crate::common::{ScanRun, canonical_rows, conformance_dir, count};

/// Tables that Sediment refuses or cannot read, and why. A table listed here must
/// fail with an error (never a panic); a table not listed must return the rows the
/// independent reader found.
const REFUSED: &[(&str, &str)] = &[
    (
        "delta-golden/golden-tables/basic-with-vacuum-protocol-check-feature",
        "reader feature vacuumProtocolCheck: delta-rs's scan refuses it",
    ),
    ("delta-golden/golden-tables/type-widening", "reader feature typeWidening-preview is not supported by delta-rs"),
    (
        "delta-golden/golden-tables/type-widening-nested",
        "reader feature typeWidening-preview is not supported by delta-rs",
    ),
    (
        "delta-golden/kernel-benchmarks-workload-specs/basic_catalog_managed/delta",
        "catalog-managed table: must be read through its catalog",
    ),
    (
        "delta-golden/kernel-defaults-resources/catalog-owned-preview",
        "catalog-managed table: must be read through its catalog",
    ),
    (
        "delta-golden/kernel-defaults-resources/spark-shredded-variant-preview-delta",
        "reader feature variantShredding-preview is not supported",
    ),
    ("delta-rs/spark-shredded-variant-preview-delta", "reader feature variantShredding-preview is not supported"),
    (
        "delta-golden/spark-test-resources/variant-stats-nested-no-checkpoint",
        "reader feature variantShredding-preview is not supported",
    ),
    (
        "delta-golden/spark-test-resources/variant-stats-no-checkpoint",
        "reader feature variantShredding-preview is not supported",
    ),
    (
        "delta-golden/spark-test-resources/variant-stats-state-reconstruction",
        "reader feature variantShredding-preview is not supported",
    ),
    (
        "delta-golden/spark-test-resources/variant-stats-with-struct-no-checkpoint",
        "reader feature variantShredding-preview is not supported",
    ),
    (
        "delta-golden/spark-test-resources/partitioned-table-with-dv-large",
        "the copy does not ship its deletion-vector files; the scan names the missing file",
    ),
    (
        "delta-golden/spark-test-resources/table-with-dv-large",
        "the copy does not ship its deletion-vector files; the scan names the missing file",
    ),
    (
        "delta-golden/spark-test-resources/table-with-dv-small",
        "the copy does not ship its deletion-vector files; the scan names the missing file",
    ),
    (
        "delta-golden/spark-test-resources/table-with-dv-special-char",
        "its deletion-vector path is a template ({{FOLDER_WITH_SPECIAL_CHAR}}) never filled in",
    ),
    (
        "delta-rs/simple_table_features",
        "invalid protocol: reader features with minReaderVersion 5 (delta-kernel rejects the log)",
    ),
];

fn dir_or_skip(test: &str) -> Option<PathBuf> {
    let dir = conformance_dir();
    if dir.is_none() {
        eprintln!("{test}: skipped, no ../shared/conformance and no SEDIMENT_CONFORMANCE_DIR");
    }
    dir
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Cast `expected`'s columns to the types the scan returned, so values print alike.
fn align(expected: &[RecordBatch], actual_schema: &sediment::arrow::datatypes::SchemaRef) -> Vec<RecordBatch> {
    expected
        .iter()
        .map(|b| {
            let columns = actual_schema
                .fields()
                .iter()
                .map(|f| {
                    let column = b
                        .column_by_name(f.name())
                        .unwrap_or_else(|| panic!("expected data has no column {}", f.name()));
                    cast(column, f.data_type()).unwrap()
                })
                .collect();
            RecordBatch::try_new(actual_schema.clone(), columns).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn dat_cases_return_the_expected_rows_at_every_version() {
    let Some(dir) = dir_or_skip("dat") else { return };
    let mut checked = 0;
    for case in std::fs::read_dir(dir.join("dat")).unwrap() {
        let case = case.unwrap().path();
        let uri = case.join("delta").to_string_lossy().to_string();
        for expected in std::fs::read_dir(case.join("expected")).unwrap() {
            let expected = expected.unwrap().path();
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(expected.join("table_version_metadata.json")).unwrap()).unwrap();
            let version = meta["version"].as_u64().unwrap();
            let table = Table::open_with(&uri, OpenOptions::new().version(version)).await.unwrap();
            let (batches, _) = table.scan().run().await;
            let schema = table.scan().execute().await.unwrap().schema();
            let want = align(&read_parquet(&expected.join("table_content.parquet")), &schema);
            assert_eq!(canonical_rows(&batches), canonical_rows(&want), "{} at version {version}", case.display());
            checked += 1;
        }
    }
    assert!(checked >= 9, "all DAT versions were checked ({checked})");
}

#[derive(Debug)]
enum Outcome {
    Rows(usize),
    Error(String),
    Panic(String),
}

async fn open_only(path: PathBuf) -> Outcome {
    let uri = path.to_string_lossy().to_string();
    match tokio::spawn(async move { Table::open(&uri).await.map(|t| t.files().map(|f| f.len())) }).await {
        Ok(Ok(Ok(files))) => Outcome::Rows(files),
        Ok(Ok(Err(e)) | Err(e)) => Outcome::Error(format!("{:?}: {e}", e.kind())),
        Err(e) => Outcome::Panic(e.to_string()),
    }
}

async fn open_and_scan(path: PathBuf) -> Outcome {
    let uri = path.to_string_lossy().to_string();
    let task = tokio::spawn(async move {
        let table = Table::open(&uri).await?;
        let (batches, _) = table.scan().execute().await?.collect().await?;
        Ok::<_, sediment::Error>(count(&batches))
    });
    match task.await {
        Ok(Ok(rows)) => Outcome::Rows(rows),
        Ok(Err(e)) => Outcome::Error(format!("{:?}: {e}", e.kind())),
        Err(e) => Outcome::Panic(e.to_string()),
    }
}

/// `table -> Some(rows)` (or `None` where the independent reader failed) from INVENTORY.md.
fn inventory(dir: &Path) -> BTreeMap<String, Option<usize>> {
    let text = std::fs::read_to_string(dir.join("INVENTORY.md")).unwrap();
    let mut section = "";
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("## DAT") {
            section = "dat";
        } else if line.starts_with("## delta-rs") {
            section = "delta-rs";
        } else if line.starts_with("## delta-io") {
            section = "delta-golden";
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 8 || !line.starts_with("| ") || cells[1] == "table" || section == "dat" {
            continue;
        }
        let rows = cells[7].strip_prefix("rows=").and_then(|n| n.parse().ok());
        // The delta-rs section lists its copy of a golden table as `delta-golden/...`;
        // on disk it is `delta-rs/golden/...`.
        let table = cells[1].replace("delta-golden/", "golden/");
        let table = if section == "delta-rs" { table } else { cells[1].to_string() };
        out.insert(format!("{section}/{table}"), rows);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tables_scan_to_the_independent_row_counts_or_are_refused_cleanly() {
    let Some(dir) = dir_or_skip("foreign tables") else { return };
    let tables = inventory(&dir);
    assert!(tables.len() > 150, "inventory parsed ({} tables)", tables.len());
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for (name, rows) in &tables {
        let outcome = open_and_scan(dir.join(name)).await;
        let refused = REFUSED.iter().find(|(t, _)| t == name);
        summary.push(format!("{name}: {outcome:?}"));
        // Deletion vectors: the independent reader counted the rows stored in the files;
        // a correct reader returns those less the rows the log's deletion vectors delete.
        let (live, deleted) = match Table::open(&dir.join(name).to_string_lossy()).await.and_then(|t| t.info()) {
            Ok(info) => (info.rows, info.deleted_rows),
            Err(_) => (None, 0),
        };
        match (&outcome, rows, refused) {
            (Outcome::Panic(p), _, _) => failures.push(format!("{name}: panicked: {p}")),
            (Outcome::Rows(n), Some(want), None) if n == want => {}
            (Outcome::Rows(n), Some(want), None)
                if deleted > 0 && Some(*n as u64) == live && *want as u64 == live.unwrap_or(0) + deleted => {}
            (Outcome::Rows(n), Some(want), None) => failures.push(format!(
                "{name}: {n} rows, independent reader found {want} (log: {live:?} live, {deleted} deleted)"
            )),
            (Outcome::Rows(n), None, None) => failures
                .push(format!("{name}: {n} rows where the independent reader failed; add it to the expectations")),
            // Both readers fail: log-only copies without data files, or damaged logs.
            (Outcome::Error(_), None, None) => {}
            (Outcome::Error(_), _, Some(_)) => {}
            (Outcome::Error(e), Some(_), None) => failures.push(format!("{name}: unexpected error: {e}")),
            (Outcome::Rows(n), _, Some((_, why))) => {
                failures.push(format!("{name}: listed as refused ({why}) but returned {n} rows"))
            }
        }
    }
    eprintln!("{}", summary.join("\n"));
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn broken_logs_fail_with_errors_not_panics() {
    let Some(dir) = dir_or_skip("broken logs") else { return };
    let base = dir.join("delta-rs-broken-logs");
    for (table, must_open) in [
        ("table_a", true),
        ("table_b", true),
        ("table_c", false),
        ("table_d", false),
        ("table_e", false),
        ("table_f", false),
        ("table_h", false),
        ("table_i", false),
    ] {
        let outcome = open_only(base.join(table)).await;
        match (outcome, must_open) {
            (Outcome::Panic(p), _) => panic!("{table} panicked: {p}"),
            (Outcome::Rows(_), true) | (Outcome::Error(_), false) => {}
            (other, _) => panic!("{table}: expected {}, got {other:?}", if must_open { "to open" } else { "an error" }),
        }
    }
    // table_g: whatever it is, no panic.
    assert!(!matches!(open_only(base.join("table_g")).await, Outcome::Panic(_)));
}

/// A writable copy of the foreign table `name` (kept while the temp dir lives).
async fn open_copy(dir: &Path, name: &str) -> (tempfile::TempDir, String, Table) {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("t");
    crate::common::copy_dir(&dir.join(name), &copy);
    let uri = copy.to_string_lossy().to_string();
    let table = Table::open(&uri).await.unwrap();
    (work, uri, table)
}

/// Tables copied and appended to: writable ones take the append (their own rows again),
/// the rest are refused with the feature named and left untouched.
#[tokio::test]
async fn appends_to_copies_of_foreign_tables_or_refuses_them() {
    let Some(dir) = dir_or_skip("foreign appends") else { return };
    let cases = [
        ("dat/basic_append/delta", true),
        ("dat/basic_partitioned/delta", true),
        ("dat/multi_partitioned/delta", false), // binary partition column
        ("dat/with_schema_change/delta", true),
        ("delta-rs/delta-0.8.0-partitioned", true),
        ("delta-rs/table-with-dv-small", true),
        ("delta-rs/table_with_column_mapping", false),
        ("delta-rs/checkpoint-v2-table", false),
    ];
    for (name, writable) in cases {
        let (_work, uri, mut table) = open_copy(&dir, name).await;
        let version = table.version();
        let (batches, _) = table.scan().run().await;
        let before = canonical_rows(&batches);
        let result = table.write(batches.clone(), sediment::WriteOptions::append()).await;
        let after = Table::open(&uri).await.unwrap();
        if writable {
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut doubled: Vec<String> = before.iter().chain(before.iter()).cloned().collect();
            doubled.sort();
            assert_eq!(crate::common::table_rows(&after).await, doubled, "{name}");
        } else {
            let err = result.expect_err(name);
            assert_eq!(err.kind(), sediment::ErrorKind::Unsupported, "{name}: {err}");
            assert!(err.to_string().contains("cannot write"), "{name}: {err}");
            assert_eq!(after.version(), version, "{name} untouched");
        }
    }
}

/// Copies of foreign tables compacted with a small target keep their rows; tables
/// with features compaction cannot preserve are refused and left untouched.
#[tokio::test]
async fn compacting_copies_of_foreign_tables_keeps_their_rows() {
    let Some(dir) = dir_or_skip("foreign compaction") else { return };
    let cases = [
        ("dat/basic_append/delta", true),
        ("dat/basic_partitioned/delta", true),
        ("dat/with_schema_change/delta", true),
        ("delta-rs/delta-0.8.0-partitioned", true),
        ("delta-rs/delta-0.8.0-null-partition", true),
        ("delta-rs/delta-2.2.0-partitioned-types", true),
        ("delta-rs/table-with-dv-small", true),
        ("delta-rs/http_requests", true),
        ("delta-rs/table_with_column_mapping", false),
        ("delta-rs/checkpoint-v2-table", false),
    ];
    // Each table twice: decoding every bin, then copying row groups wherever the
    // inputs allow it (a 1-byte threshold), which merges the foreign writers' statistics.
    let mut copied = 0;
    for ((name, writable), copy) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let (_work, uri, mut table) = open_copy(&dir, name).await;
        assert!(table.orphan_files().await.unwrap().is_empty(), "{name}: a pristine table has no orphans");
        let version = table.version();
        let before = crate::common::table_rows(&table).await;
        let mut options = sediment::CompactOptions { target_file_size: Some(1024 * 1024), ..Default::default() };
        options.executor.copy_row_groups_above = if copy { Some(1) } else { None };
        let result = table.compact(options).await;
        let after = Table::open(&uri).await.unwrap();
        if writable {
            let report = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(report.abandoned.is_empty(), "{name}: {report:?}");
            assert_eq!(crate::common::table_rows(&after).await, before, "{name} (copy: {copy}): rows unchanged");
            if report.files_removed > 0 {
                assert!(after.version() > version, "{name}");
            }
            if !copy {
                assert_eq!(report.bins_copied, 0);
            }
            copied += report.bins_copied;
            point_lookups_find_their_rows(&after, name).await;
        } else {
            let err = result.expect_err(name);
            assert_eq!(err.kind(), sediment::ErrorKind::Unsupported, "{name}: {err}");
            assert_eq!(after.version(), version, "{name} untouched");
        }
    }
    assert!(copied > 0, "some foreign tables (DAT's, written by Spark) have their row groups copied");
}

/// For a unique integer column, filters on single values (smallest, largest, one in
/// between) each return their row: the statistics files carry, merged or written by
/// the compaction, never prune a file holding a match.
async fn point_lookups_find_their_rows(table: &Table, name: &str) {
    use sediment::arrow::datatypes::DataType;
    let (batches, _) = table.scan().run().await;
    let Some(all) = batches.first().map(|b| b.schema()) else { return };
    let all = sediment::arrow::compute::concat_batches(&all, &batches).unwrap();
    let Some(key) = unique_key(&all) else { return };
    let column = all.column_by_name(&key).unwrap();
    if !matches!(column.data_type(), DataType::Int32 | DataType::Int64) {
        return;
    }
    let column = sediment::arrow::compute::cast(column, &DataType::Int64).unwrap();
    let values = column.as_any().downcast_ref::<sediment::arrow::array::Int64Array>().unwrap();
    let mut sorted: Vec<i64> = values.values().to_vec();
    sorted.sort_unstable();
    for value in [sorted[0], sorted[sorted.len() / 2], sorted[sorted.len() - 1]] {
        let (found, _) = table.scan().filter(format!("{key} = {value}")).run().await;
        assert_eq!(crate::common::count(&found), 1, "{name}: {key} = {value}");
    }
}

/// A column of a primitive type whose values are non-null and unique across `batch`.
fn unique_key(batch: &RecordBatch) -> Option<String> {
    use sediment::arrow::datatypes::DataType::*;
    let schema = batch.schema();
    schema.fields().iter().enumerate().find_map(|(i, f)| {
        let column = batch.column(i);
        let keyable = matches!(f.data_type(), Int8 | Int16 | Int32 | Int64 | Utf8 | LargeUtf8 | Date32)
            || matches!(f.data_type(), Dictionary(_, v) if matches!(v.as_ref(), Utf8 | Int32 | Int64));
        if !keyable || column.null_count() > 0 {
            return None;
        }
        let values: std::collections::HashSet<String> = (0..column.len())
            .map(|r| sediment::arrow::util::display::array_value_to_string(column, r).unwrap())
            .collect();
        (values.len() == batch.num_rows()).then(|| f.name().clone())
    })
}

/// Merges into copies of writable foreign tables, keyed by a unique column: an
/// upsert of rows the table already holds commits nothing; deleting them by merge and
/// upserting them back restores the table's rows.
#[tokio::test]
async fn merges_into_copies_of_foreign_tables_keep_their_rows() {
    let Some(dir) = dir_or_skip("foreign merges") else { return };
    let cases = [
        "dat/basic_append/delta",
        "dat/basic_partitioned/delta",
        "dat/with_schema_change/delta",
        "delta-rs/delta-0.8.0-partitioned",
        "delta-rs/delta-0.8.0-null-partition",
        "delta-rs/delta-2.2.0-partitioned-types",
        "delta-rs/table-with-dv-small",
        "delta-rs/http_requests",
    ];
    let mut merged = Vec::new();
    for name in cases {
        let (_work, uri, mut table) = open_copy(&dir, name).await;
        let (batches, _) = table.scan().run().await;
        let all = sediment::arrow::compute::concat_batches(&table.scan().execute().await.unwrap().schema(), &batches)
            .unwrap();
        let before = canonical_rows(std::slice::from_ref(&all));
        let Some(key) = unique_key(&all) else {
            eprintln!("{name}: no unique non-null column to merge on; skipped");
            continue;
        };
        let source = all.slice(0, all.num_rows().min(3));
        let n = source.num_rows() as u64;

        let report = table.upsert([source.clone()], [key.as_str()]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((report.version, report.rows_unchanged), (None, n), "{name}: {report:?}");

        let report = table
            .merge([source.clone()])
            .on([key.as_str()])
            .when_matched(sediment::MatchedAction::Delete)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.rows_deleted, n, "{name}: {report:?}");
        assert_eq!(count(&table.scan().run().await.0), all.num_rows() - n as usize, "{name}");

        let report = table.upsert([source], [key.as_str()]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.rows_inserted, n, "{name}: {report:?}");
        let after = Table::open(&uri).await.unwrap();
        assert_eq!(crate::common::table_rows(&after).await, before, "{name}: rows restored");
        merged.push(name);
    }
    assert!(merged.len() >= 5, "too few foreign tables had a usable key: {merged:?}");
}

/// Every table directory (one holding `_delta_log`) under `dir`.
fn delta_tables(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.join("_delta_log").is_dir() {
            out.push(path.clone());
        }
        delta_tables(&path, out);
    }
}

/// What a version looks like to planning: its files (sorted), its info and its plan.
fn planning_view(files: &[sediment::DataFile], info: &sediment::TableInfo, plan: &sediment::CompactionPlan) -> String {
    let mut files: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
    files.sort();
    format!(
        "{}\n{}\n{}",
        files.join("\n"),
        serde_json::to_string_pretty(info).unwrap(),
        serde_json::to_string_pretty(plan).unwrap()
    )
}

/// The vacuum dry runs both readers plan on every table, at a fixed clock: the table's
/// own retention (lite), and everything tombstoned with a folder listing (full).
fn vacuum_dry_runs() -> Vec<sediment::maintain::vacuum::VacuumOptions> {
    use sediment::maintain::vacuum::VacuumOptions;
    let clock = sediment::ManualClock::new(now());
    let base = VacuumOptions::default().dry_run(true).with_clock(clock);
    vec![base.clone(), base.full(true).retain(chrono::Duration::zero()).retention_check(false)]
}

/// A vacuum report as text to compare, without its timing; or its error.
fn vacuum_view(report: sediment::Result<sediment::maintain::vacuum::VacuumReport>) -> String {
    match report {
        Ok(mut report) => {
            report.duration_ms = 0;
            report.files.sort_by(|a, b| a.path.cmp(&b.path));
            serde_json::to_string_pretty(&report).unwrap()
        }
        Err(e) => format!("vacuum refused: {e}"),
    }
}

fn sorted(mut lines: Vec<String>) -> String {
    lines.sort();
    lines.join("\n")
}

fn steps() -> sediment::maintain::tiering::TierSteps {
    sediment::maintain::tiering::TierSteps::parse("30d:STANDARD_IA,180d:GLACIER_IR").unwrap()
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// `LogView` (the log read by Sediment alone, for planning) against delta-rs's
/// snapshot on every foreign table: the same files, info, compaction plan, orphan
/// files and storage cost (with a tiering plan); or it declines the table (and the caller uses delta-rs); or both
/// fail. Never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_view_plans_foreign_tables_as_the_snapshot_does() {
    let Some(dir) = dir_or_skip("log view") else { return };
    let mut tables = Vec::new();
    delta_tables(&dir, &mut tables);
    tables.sort();
    assert!(tables.len() > 150, "{} tables found", tables.len());
    let options = sediment::CompactOptions::default().target_file_size(1024 * 1024);
    let (mut same, mut declined, mut both_fail) = (0, 0, 0);
    let mut failures = Vec::new();
    for path in tables {
        let name = path.strip_prefix(&dir).unwrap().to_string_lossy().to_string();
        let uri = path.to_string_lossy().to_string();
        let opts = options.clone();
        let snapshot = tokio::spawn({
            let (uri, opts) = (uri.clone(), opts.clone());
            async move {
                let mut table = Table::open(&uri).await?;
                let files = table.files()?;
                let cost = table.storage_cost(&Default::default(), Some(&steps()), None, now()).ok();
                let extra = serde_json::json!({"orphans": table.orphan_files().await?, "cost": cost});
                let view = planning_view(&files, &table.info()?, &table.compaction_plan(&opts)?);
                let delta = table.delta();
                let tombstones: Vec<String> = delta
                    .snapshot()
                    .map_err(sediment::Error::delta)?
                    .all_tombstones(delta.log_store().as_ref())
                    .map_ok(|t| format!("{} {:?} {}", t.path(), t.deletion_timestamp(), t.size().unwrap_or(0)))
                    .try_collect()
                    .await
                    .map_err(sediment::Error::delta)?;
                let mut vacuums = Vec::new();
                for options in vacuum_dry_runs() {
                    vacuums.push(vacuum_view(table.vacuum(options).await));
                }
                Ok::<_, sediment::Error>(format!("{view}\n{extra}\n{}\n{}", sorted(tombstones), vacuums.join("\n")))
            }
        })
        .await;
        let view = tokio::spawn(async move {
            match sediment::LogView::open(&uri, &OpenOptions::new()).await? {
                Some(mut view) => {
                    let plan = view.compaction_plan(&opts)?;
                    let cost = view.storage_cost(&Default::default(), Some(&steps()), None, now()).ok();
                    let extra = serde_json::json!({"orphans": view.orphan_files().await?, "cost": cost});
                    let planned = planning_view(view.files(), &view.info(), &plan);
                    let tombstones = view
                        .tombstones()
                        .iter()
                        // delta-rs says 0 for a remove without a size; the log view None.
                        .map(|t| format!("{} {:?} {}", t.path, t.deletion_timestamp, t.size.unwrap_or(0)))
                        .collect();
                    let mut vacuums = Vec::new();
                    for options in vacuum_dry_runs() {
                        vacuums.push(vacuum_view(view.vacuum_plan(options).await));
                    }
                    Ok(Some(format!("{planned}\n{extra}\n{}\n{}", sorted(tombstones), vacuums.join("\n"))))
                }
                None => Ok::<_, sediment::Error>(None),
            }
        })
        .await;
        match (snapshot, view) {
            (Err(p), _) => failures.push(format!("{name}: the snapshot path panicked: {p}")),
            (_, Err(p)) => failures.push(format!("{name}: the log view panicked: {p}")),
            (Ok(Ok(a)), Ok(Ok(Some(b)))) if a == b => same += 1,
            (Ok(Ok(a)), Ok(Ok(Some(b)))) => {
                let diff: Vec<String> = a
                    .lines()
                    .zip(b.lines())
                    .filter(|(x, y)| x != y)
                    .take(3)
                    .map(|(x, y)| format!("  snapshot: {x}\n  log view: {y}"))
                    .collect();
                failures.push(format!("{name}: the log view differs:\n{}", diff.join("\n")))
            }
            (_, Ok(Ok(None))) => declined += 1,
            (Ok(Err(_)), Ok(Err(_))) => both_fail += 1,
            (Ok(Ok(_)), Ok(Err(e))) => {
                failures.push(format!("{name}: the log view failed where delta-rs reads it: {e}"))
            }
            (Ok(Err(e)), Ok(Ok(Some(_)))) => {
                failures.push(format!("{name}: the log view read a table delta-rs refuses ({e})"))
            }
        }
    }
    eprintln!("log view: {same} alike, {declined} declined, {both_fail} unreadable by both");
    assert!(same > 100, "only {same} tables read alike");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n\n"));
}
