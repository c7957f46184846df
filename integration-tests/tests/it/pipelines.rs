//! Pipelines on the S3 server: an upsert pipeline from a bronze table of change events
//! into silver, run after random appends (duplicates, out-of-order sequences, deletes,
//! rows that break rules) and compactions; after every run silver equals the model's
//! state per key, the quarantine holds exactly the failing rows, and a run with no new
//! source data commits nothing. Bad pipeline declarations are refused naming the
//! pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;

use sediment::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::pipeline::IncrementKind;
use sediment::service::{Service, Settings, pipelines};
use sediment::{CompactOptions, Table, WriteOptions};

use crate::common::{ScanRun, s3_uri};

const DAYS: [&str; 4] = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"];

/// One change event of the bronze table.
#[derive(Debug, Clone)]
struct Event {
    id: i64,
    seq: i64,
    op: &'static str,
    amount: f64,
    name: Option<String>,
    day: &'static str,
}

fn events_batch(events: &[Event]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("day", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(events.iter().map(|e| e.id).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(events.iter().map(|e| e.seq).collect::<Vec<_>>())),
            Arc::new(StringArray::from(events.iter().map(|e| e.op).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(events.iter().map(|e| e.amount).collect::<Vec<_>>())),
            Arc::new(StringArray::from(events.iter().map(|e| e.name.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(events.iter().map(|e| e.day).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What silver should hold, as in DLT's APPLY CHANGES: per key, the newest event
/// (by sequence; a later one wins a tie) among the rows that pass the quarantine rule,
/// whichever run it arrived in; the key is absent when that event is a delete.
#[derive(Default)]
struct Model {
    latest: BTreeMap<i64, Event>,
    silver: BTreeMap<i64, Event>,
    /// Every failing event (key, sequence, bronze version), as often as it was appended.
    quarantined: BTreeMap<(i64, i64, i64), usize>,
}

impl Model {
    fn run(&mut self, events: &[(u64, Event)]) {
        for (version, e) in events {
            if e.amount < 0.0 {
                *self.quarantined.entry((e.id, e.seq, *version as i64)).or_default() += 1;
                continue;
            }
            if self.latest.get(&e.id).is_none_or(|l| e.seq >= l.seq) {
                self.latest.insert(e.id, e.clone());
            }
        }
        self.silver = self.latest.iter().filter(|(_, e)| e.op != "D").map(|(k, e)| (*k, e.clone())).collect();
    }

    fn rows(&self) -> Vec<String> {
        self.silver
            .values()
            .map(|e| {
                format!("{}|{}|{}|{}|{}", e.id, e.seq, e.amount, e.name.clone().unwrap_or_else(|| "NULL".into()), e.day)
            })
            .collect()
    }

    /// Gold: orders and amount per day of silver.
    fn gold(&self) -> Vec<String> {
        let mut days: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
        for e in self.silver.values() {
            let day = days.entry(e.day).or_default();
            day.0 += 1;
            day.1 += e.amount;
        }
        days.into_iter().map(|(d, (n, a))| format!("{d}|{n}|{a}")).collect()
    }
}

/// A string column as plain UTF-8, whichever string type the reader returned.
fn strings(batch: &RecordBatch, column: &str) -> StringArray {
    let column = sediment::arrow::compute::cast(batch.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    column.as_any().downcast_ref::<StringArray>().unwrap().clone()
}

async fn silver_rows(uri: &str) -> Vec<String> {
    let table = Table::open(uri).await.unwrap();
    let (batches, _) = table.scan().run().await;
    let mut rows = Vec::new();
    for b in &batches {
        assert!(b.column_by_name("op").is_none(), "op is an except column");
        assert!(b.schema().fields().iter().all(|f| !f.name().starts_with("__sediment")), "{:?}", b.schema());
        let id = b.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let seq = b.column_by_name("seq").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let amount = b.column_by_name("amount").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
        let name = strings(b, "name");
        let day = strings(b, "day");
        let cents = b.column_by_name("amount_cents").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        for r in 0..b.num_rows() {
            assert_eq!(cents.value(r), (amount.value(r) * 100.0) as i64, "derived column");
            let name = if name.is_null(r) { "NULL".to_string() } else { name.value(r).to_string() };
            rows.push(format!("{}|{}|{}|{}|{}", id.value(r), seq.value(r), amount.value(r), name, day.value(r)));
        }
    }
    rows.sort_by_key(|r| r.split('|').next().unwrap().parse::<i64>().unwrap());
    rows
}

async fn gold_rows(uri: &str) -> Vec<String> {
    let table = Table::open(uri).await.unwrap();
    let (batches, _) = table.scan().run().await;
    let mut rows = Vec::new();
    for b in &batches {
        let day = strings(b, "day");
        let orders = sediment::arrow::compute::cast(b.column_by_name("orders").unwrap(), &DataType::Int64).unwrap();
        let orders = orders.as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let amount = sediment::arrow::compute::cast(b.column_by_name("amount").unwrap(), &DataType::Float64).unwrap();
        let amount = amount.as_any().downcast_ref::<Float64Array>().unwrap().clone();
        for r in 0..b.num_rows() {
            rows.push(format!("{}|{}|{}", day.value(r), orders.value(r), amount.value(r)));
        }
    }
    rows.sort();
    rows
}

async fn quarantine_rows(uri: &str) -> BTreeMap<(i64, i64, i64), usize> {
    let Ok(table) = Table::open(uri).await else { return BTreeMap::new() };
    let (batches, _) = table.scan().run().await;
    let mut rows = BTreeMap::new();
    for b in &batches {
        let id = b.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let seq = b.column_by_name("seq").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let version =
            b.column_by_name("_source_version").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let (rule, pipeline, source) = (strings(b, "_rule"), strings(b, "_pipeline"), strings(b, "_source_table"));
        for r in 0..b.num_rows() {
            assert_eq!(rule.value(r), "amount_not_negative");
            assert_eq!((pipeline.value(r), source.value(r)), ("orders_silver", "bronze.orders"));
            assert!(version.is_valid(r), "a quarantined row without its source version");
            *rows.entry((id.value(r), seq.value(r), version.value(r))).or_default() += 1;
        }
    }
    rows
}

/// Register the bronze table the settings' pipelines read.
async fn register_bronze(service: &Service, uri: &str) {
    let table = sediment_catalog::NewTable::new("bronze.orders", sediment_catalog::Layer::Bronze, uri);
    sediment::service::ops::register_table(service, table).await.unwrap();
}

fn settings(catalog: &str, silver: &str, gold: &str, extra: &str) -> Settings {
    let settings = Settings::from_toml(&toml_text(catalog, silver, gold, extra)).unwrap();
    settings.validate().unwrap();
    settings
}

/// The settings of the tests' chain: bronze.orders -> silver.orders -> two gold tables.
fn toml_text(catalog: &str, silver: &str, gold: &str, extra: &str) -> String {
    format!(
        r#"
catalog = "{catalog}"

[[tables]]
name = "silver.orders"
layer = "silver"
location = "{silver}"

[[pipelines]]
name = "orders_silver"
type = "upsert"
source = "bronze.orders"
target = "silver.orders"
keys = ["id"]
sequence_by = "seq"
delete_when = "op = 'D'"
except_columns = ["op"]
derived = {{ amount_cents = "CAST(amount * 100 AS BIGINT)" }}
{extra}

[[pipelines.rules]]
name = "amount_not_negative"
check = "range"
column = "amount"
min = 0
action = "quarantine"

[[pipelines.rules]]
check = "not_null"
column = "name"
action = "warn"

[[tables]]
name = "gold.daily"
layer = "gold"
location = "{gold}"

[[tables]]
name = "gold.daily_merged"
layer = "gold"
location = "{gold}_merged"

[[pipelines]]
name = "daily_gold"
type = "sql"
sources = ["silver.orders"]
target = "gold.daily"
partition_by = ["day"]
query = "SELECT day, COUNT(*) AS orders, SUM(amount) AS amount FROM silver.orders GROUP BY day"

[[pipelines]]
name = "daily_gold_merged"
type = "sql"
sources = ["silver.orders"]
target = "gold.daily_merged"
write = "merge"
keys = ["day"]
query = "SELECT day, COUNT(*) AS orders, SUM(amount) AS amount FROM silver.orders GROUP BY day"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_pipeline_follows_the_model_through_appends_compactions_and_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let bronze_uri = s3_uri("pipe-bronze");
    let silver_uri = s3_uri("pipe-silver");
    let gold_uri = s3_uri("pipe-gold");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut seq = 0i64;
    let mut model = Model::default();
    // Appended events with the bronze version that holds them.
    let mut pending: Vec<(u64, Event)> = Vec::new();
    let append = |rng: &mut Rng, seq: &mut i64, n: usize| -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..n {
            *seq += 1;
            // Out of order: a sequence up to 20 behind the newest.
            // (Unique per event: the last digits are the event's number.)
            let s = (*seq * 10 - rng.below(200) as i64) * 1000 + *seq % 1000;
            events.push(Event {
                id: rng.below(30) as i64,
                seq: s,
                op: if rng.below(8) == 0 { "D" } else { "U" },
                amount: if rng.below(12) == 0 { -1.0 } else { rng.below(1000) as f64 / 4.0 },
                name: if rng.below(10) == 0 { None } else { Some(format!("n{}", rng.below(50))) },
                day: DAYS[rng.below(DAYS.len() as u64) as usize],
            });
        }
        // A duplicate of an earlier event of the batch now and then.
        if n > 2 && rng.below(2) == 0 {
            let again = events[0].clone();
            events.push(again);
        }
        events
    };
    let first = append(&mut rng, &mut seq, 40);
    let version = bronze.write([events_batch(&first)], WriteOptions::append()).await.unwrap().version.unwrap();
    pending.extend(first.into_iter().map(|e| (version, e)));

    let settings = settings(&catalog, &silver_uri, &gold_uri, "");
    let service = Service::builder(settings).build().await.unwrap();
    register_bronze(&service, &bronze_uri).await;
    pipelines::check(&service).await.unwrap();
    let quarantine_uri = format!("{silver_uri}_quarantine");

    for round in 0..10 {
        // Now and then a run is killed at a random point first (its task aborted):
        // whatever it did or did not commit, the next run neither loses nor repeats it.
        let killed = round > 0 && rng.below(3) == 0;
        if killed {
            for name in ["orders_silver", "daily_gold"] {
                let (service, name) = (service.clone(), name.to_string());
                let task = tokio::spawn(async move { pipelines::run(&service, &name, None).await });
                tokio::time::sleep(std::time::Duration::from_millis(rng.below(400))).await;
                task.abort();
                let _ = task.await;
            }
        }
        let report = pipelines::run(&service, "orders_silver", None).await.unwrap();
        model.run(&pending);
        if !killed {
            assert!(!report.up_to_date, "round {round}: {report:?}");
            assert_eq!(report.rows_read as usize, pending.len(), "round {round}");
        }
        assert_eq!(
            report.rows_read,
            report.rows_written() + report.rows_quarantined + report.rows_dropped_duplicates + report.rows_superseded,
            "{report:?}"
        );
        if !report.up_to_date {
            let expected_kind = if round == 0 { IncrementKind::Snapshot } else { IncrementKind::Appends };
            assert_eq!(report.sources[0].increment, expected_kind, "round {round}");
        }
        pending.clear();
        assert_eq!(silver_rows(&silver_uri).await, model.rows(), "round {round}: {report:#?}");
        assert_eq!(quarantine_rows(&quarantine_uri).await, model.quarantined, "round {round}");
        if !report.up_to_date {
            let nulls = report.rules.iter().find(|r| r.rule == "not_null(name)").unwrap();
            assert_eq!(nulls.action, "warn");
        }
        // Gold, both ways, from silver's increment.
        for (name, uri) in [("daily_gold", gold_uri.clone()), ("daily_gold_merged", format!("{gold_uri}_merged"))] {
            let gold = pipelines::run(&service, name, None).await.unwrap();
            assert_eq!(gold_rows(&uri).await, model.gold(), "round {round} {name}: {gold:#?}");
            let version = Table::open(&uri).await.unwrap().version();
            let again = pipelines::run(&service, name, None).await.unwrap();
            assert!(again.up_to_date && !again.committed, "{name}: {again:?}");
            assert_eq!(Table::open(&uri).await.unwrap().version(), version);
        }

        // Nothing new: nothing committed.
        let version = Table::open(&silver_uri).await.unwrap().version();
        let again = pipelines::run(&service, "orders_silver", None).await.unwrap();
        assert!(again.up_to_date && !again.committed, "{again:?}");
        assert_eq!(Table::open(&silver_uri).await.unwrap().version(), version);

        // A compaction of bronze is not a change.
        if round % 3 == 1 {
            bronze.refresh().await.unwrap();
            let compacted = bronze.compact(CompactOptions::default()).await.unwrap();
            assert!(!compacted.versions.is_empty(), "round {round}: {compacted:?}");
            let after = pipelines::run(&service, "orders_silver", None).await.unwrap();
            assert!(!after.committed, "{after:?}");
            assert_eq!(Table::open(&silver_uri).await.unwrap().version(), version);
        }
        for _ in 0..(1 + rng.below(3)) {
            let n = 1 + rng.below(25) as usize;
            let events = append(&mut rng, &mut seq, n);
            let version = bronze.write([events_batch(&events)], WriteOptions::append()).await.unwrap().version.unwrap();
            pending.extend(events.into_iter().map(|e| (version, e)));
        }
        // The appended files compacted away before the pipeline reads them.
        if round % 3 == 2 {
            bronze.refresh().await.unwrap();
            bronze.compact(CompactOptions::default()).await.unwrap();
        }
    }

    // Status and lineage: consumed up to bronze's version before the last appends.
    let status = pipelines::status(&service, "orders_silver").await.unwrap();
    assert_eq!(status.sources.len(), 1);
    assert!(status.sources[0].versions_behind.unwrap() > 0, "{status:?}");
    assert_eq!(status.last_run.as_ref().unwrap()["pipeline"], "orders_silver");
    let lineage = pipelines::lineage(&service, "silver.orders").await.unwrap();
    assert_eq!(lineage.upstream.len(), 1);
    assert_eq!(lineage.upstream[0].table, "bronze.orders");
    assert_eq!(lineage.upstream[0].consumed_version, status.sources[0].consumed_version);
    let lineage = pipelines::lineage(&service, "bronze.orders").await.unwrap();
    assert_eq!(lineage.downstream[0].table, "silver.orders");
    // The target and its quarantine were registered when created.

    let names: Vec<String> = service.catalog().list_tables().await.unwrap().into_iter().map(|t| t.name).collect();
    assert!(names.contains(&"silver.orders".to_string()), "{names:?}");
    assert!(names.contains(&"silver.orders_quarantine".to_string()), "{names:?}");
    // The target's commits name the pipeline and the source range.
    let history = Table::open(&silver_uri).await.unwrap().history(Some(1)).await.unwrap();
    let lineage = history[0].pipeline.as_ref().unwrap();
    assert_eq!(lineage["sources"][0]["table"], "bronze.orders");
    assert!(lineage["rules"].as_array().unwrap().iter().any(|r| r["rule"] == "amount_not_negative"), "{lineage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pipelines_are_refused_naming_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let base = format!("catalog = \"{catalog}\"\n");
    let refused = |text: String, wanted: &[&str]| {
        let err = Settings::from_toml(&text).and_then(|s| s.validate()).unwrap_err().to_string();
        for w in wanted {
            assert!(err.contains(w), "{err:?} should name {w:?}");
        }
    };
    // SQL that does not parse.
    refused(
        format!(
            "{base}[[pipelines]]\nname = \"gold_daily\"\ntype = \"sql\"\nsources = [\"silver.orders\"]\ntarget = \"gold.daily\"\npartition_by = [\"day\"]\nquery = \"SELEC day, sum(amount) FROM silver.orders\"\n"
        ),
        &["pipeline gold_daily", "query"],
    );
    // A query naming a table that is not one of its sources.
    refused(
        format!(
            "{base}[[pipelines]]\nname = \"gold_daily\"\ntype = \"sql\"\nsources = [\"silver.orders\"]\ntarget = \"gold.daily\"\npartition_by = [\"day\"]\nquery = \"SELECT day FROM silver.nowhere\"\n"
        ),
        &["pipeline gold_daily", "silver.nowhere"],
    );
    // A delete condition that is not SQL.
    refused(
        format!(
            "{base}[[pipelines]]\nname = \"up\"\ntype = \"upsert\"\nsource = \"bronze.a\"\ntarget = \"silver.a\"\nkeys = [\"id\"]\ndelete_when = \"op = = 'D'\"\n"
        ),
        &["pipeline up", "delete_when"],
    );
    // A cycle.
    refused(
        format!(
            "{base}[[pipelines]]\nname = \"a_to_b\"\ntype = \"upsert\"\nsource = \"x.a\"\ntarget = \"x.b\"\nkeys = [\"id\"]\n\n[[pipelines]]\nname = \"b_to_a\"\ntype = \"upsert\"\nsource = \"x.b\"\ntarget = \"x.a\"\nkeys = [\"id\"]\n"
        ),
        &["pipeline a_to_b", "cycle", "b_to_a"],
    );
    // A rule that cannot quarantine, an unknown rule field.
    refused(
        format!(
            "{base}[[pipelines]]\nname = \"up\"\ntype = \"upsert\"\nsource = \"bronze.a\"\ntarget = \"silver.a\"\nkeys = [\"id\"]\n[[pipelines.rules]]\ncheck = \"freshness\"\ncolumn = \"ts\"\nmax_age = \"1h\"\naction = \"quarantine\"\n"
        ),
        &["pipeline up", "rules[0]", "warn or fail"],
    );

    // What needs the tables: an unknown table, a key or a rule column the source lacks.
    let bronze_uri = s3_uri("pipe-bad-bronze");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let events = [Event { id: 1, seq: 1, op: "U", amount: 1.0, name: None, day: DAYS[0] }];
    bronze.write([events_batch(&events)], WriteOptions::append()).await.unwrap();
    let with = |extra: &str, rule_column: &str| {
        format!(
            "{base}[[tables]]\nname = \"silver.a\"\nlayer = \"silver\"\nlocation = \"{}\"\n\n[[pipelines]]\nname = \"up\"\ntype = \"upsert\"\nsource = \"bronze.a\"\ntarget = \"silver.a\"\n{extra}\n[[pipelines.rules]]\ncheck = \"not_null\"\ncolumn = \"{rule_column}\"\n",
            s3_uri("pipe-bad-silver")
        )
    };
    let check = |text: String| {
        let bronze_uri = bronze_uri.clone();
        async move {
            let service = Service::builder(Settings::from_toml(&text).unwrap()).build().await.unwrap();
            let _ = sediment::service::ops::register_table(
                &service,
                sediment_catalog::NewTable::new("bronze.a", sediment_catalog::Layer::Bronze, bronze_uri.clone()),
            )
            .await;
            pipelines::check(&service).await.map_err(|e| e.to_string())
        }
    };
    let err = check(with("keys = [\"order_id\"]", "name")).await.unwrap_err();
    assert!(err.contains("pipeline up") && err.contains("order_id"), "{err}");
    let err = check(with("keys = [\"id\"]", "colour")).await.unwrap_err();
    assert!(err.contains("pipeline up") && err.contains("colour"), "{err}");
    let err = check(with("keys = [\"id\"]\nexcept_columns = [\"id\"]", "name")).await.unwrap_err();
    assert!(err.contains("pipeline up") && err.contains("id"), "{err}");
    check(with("keys = [\"id\"]", "name")).await.unwrap();
    let text = with("keys = [\"id\"]", "name").replace("source = \"bronze.a\"", "source = \"bronze.missing\"");
    let err = check(text).await.unwrap_err();
    assert!(err.contains("pipeline up") && err.contains("bronze.missing"), "{err}");
}

/// The pipeline jobs a `run_once` ran (their tables), each of which must have succeeded.
fn pipeline_jobs(report: &sediment::service::RunOnceReport) -> Vec<String> {
    let value = serde_json::to_value(report).unwrap();
    value["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "pipeline")
        .map(|j| {
            assert_eq!(j["outcome"], "succeeded", "{j}");
            j["table"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_pipelines_when_their_sources_commit_and_the_api_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let bronze_uri = s3_uri("pipe-d-bronze");
    let silver_uri = s3_uri("pipe-d-silver");
    let gold_uri = s3_uri("pipe-d-gold");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let mut rng = Rng(77);
    let events: Vec<Event> = (0..30)
        .map(|i| Event {
            id: i % 12,
            seq: i * 10,
            op: "U",
            amount: rng.below(100) as f64,
            name: Some("x".into()),
            day: DAYS[(i % 4) as usize],
        })
        .collect();
    bronze.write([events_batch(&events)], WriteOptions::append()).await.unwrap();
    let mut settings = settings(&catalog, &silver_uri, &gold_uri, "on_commit = true");
    for p in &mut settings.pipelines {
        p.on_commit = true;
    }
    let service = Service::builder(settings).build().await.unwrap();
    register_bronze(&service, &bronze_uri).await;
    // Silver first (gold's sources are not registered yet), then gold.
    let first = service.run_once().await.unwrap();
    assert_eq!(pipeline_jobs(&first), vec!["silver.orders".to_string()]);
    let second = service.run_once().await.unwrap();
    let mut ran = pipeline_jobs(&second);
    ran.sort();
    assert_eq!(ran, vec!["gold.daily".to_string(), "gold.daily_merged".to_string()], "{second:?}");
    assert_eq!(pipeline_jobs(&service.run_once().await.unwrap()), Vec::<String>::new());
    // A compaction of bronze is no reason to run; an append is.
    bronze.refresh().await.unwrap();
    let more: Vec<Event> =
        (0..5).map(|i| Event { id: i, seq: 1000 + i, op: "D", amount: 1.0, name: None, day: DAYS[0] }).collect();
    bronze.write([events_batch(&more)], WriteOptions::append()).await.unwrap();
    assert_eq!(pipeline_jobs(&service.run_once().await.unwrap()), vec!["silver.orders".to_string()]);
    let jobs = service
        .catalog()
        .list_jobs(&sediment_catalog::JobFilter { table: Some("silver.orders".into()), ..Default::default() })
        .await
        .unwrap();
    let report = jobs[0].report.as_ref().unwrap();
    assert_eq!(report["rows_deleted"], 5, "{report}");
    assert!(report["rules"].as_array().unwrap().iter().any(|r| r["rule"] == "amount_not_negative"), "{report}");
    assert_eq!(silver_rows(&silver_uri).await.len(), 7);

    // The API: list, status, lineage, a run started by request.
    let daemon_settings = {
        let mut s = service.settings().clone();
        s.scheduler.enabled = false;
        s
    };
    let daemon = crate::service::Daemon::start_on(daemon_settings, Some(catalog.clone())).await;
    let (status, body) = crate::service::http(daemon.addr, "GET", "/api/v1/pipelines", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("orders_silver") && body.contains("daily_gold"), "{body}");
    let (status, body) = crate::service::http(daemon.addr, "GET", "/api/v1/pipelines/orders_silver", None, None).await;
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["sources"][0]["versions_behind"], 0, "{body}");
    let (status, body) = crate::service::http(daemon.addr, "GET", "/api/v1/lineage/silver.orders", None, None).await;
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["upstream"][0]["table"], "bronze.orders", "{body}");
    assert_eq!(value["downstream"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) =
        crate::service::http(daemon.addr, "POST", "/api/v1/pipelines/daily_gold/runs", None, None).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = crate::service::http(daemon.addr, "GET", "/api/v1/pipelines/nope", None, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        crate::service::http(daemon.addr, "POST", "/api/v1/pipelines/daily_gold/runs", None, Some(b"{\"from\": 1}"))
            .await;
    assert_eq!(status, 400, "{body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_worked_off_in_bounded_runs_and_a_backfill_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let bronze_uri = s3_uri("pipe-l-bronze");
    let silver_uri = s3_uri("pipe-l-silver");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let event =
        |id: i64, seq: i64| Event { id, seq, op: "U", amount: seq as f64, name: Some("a".into()), day: DAYS[0] };
    bronze.write([events_batch(&[event(0, 0)])], WriteOptions::append()).await.unwrap();
    let settings = settings(&catalog, &silver_uri, &s3_uri("pipe-l-gold"), "max_source_versions = 2");
    let service = Service::builder(settings).build().await.unwrap();
    register_bronze(&service, &bronze_uri).await;
    let first = pipelines::run(&service, "orders_silver", None).await.unwrap();
    assert_eq!(first.sources[0].increment, IncrementKind::Snapshot);
    // Five appends (versions 1..=5), a compaction between them (version 3): no data.
    for v in 1..=4 {
        bronze.write([events_batch(&[event(v, v * 10)])], WriteOptions::append()).await.unwrap();
        if v == 2 {
            let compacted = bronze.compact(CompactOptions::default()).await.unwrap();
            assert_eq!(compacted.versions, vec![3], "{compacted:?}");
        }
    }
    let mut ranges = Vec::new();
    loop {
        let run = pipelines::run(&service, "orders_silver", None).await.unwrap();
        if run.up_to_date {
            break;
        }
        let s = &run.sources[0];
        ranges.push((s.after_version.unwrap(), s.to_version, s.data_commits, s.more_pending));
        assert!(ranges.len() < 10, "{ranges:?}");
    }
    // Two data commits per run; the compaction rides along without counting.
    assert_eq!(ranges, vec![(0, 3, 2, true), (3, 5, 2, false)], "{ranges:?}");
    assert_eq!(silver_rows(&silver_uri).await.len(), 5);
    let status = pipelines::status(&service, "orders_silver").await.unwrap();
    assert_eq!(status.sources[0].consumed_version, Some(5));
    assert_eq!(status.sources[0].versions_behind, Some(0));

    // A backfill from version 1 reads it all again (bounded the same way), exactly once.
    let mut backfill = Vec::new();
    loop {
        let run = pipelines::run(&service, "orders_silver", Some(1)).await.unwrap();
        if run.up_to_date {
            break;
        }
        backfill.push((run.sources[0].after_version, run.sources[0].to_version, run.rows_read));
        assert!(backfill.len() < 10, "{backfill:?}");
    }
    assert_eq!(backfill, vec![(Some(0), 3, 2), (Some(3), 5, 2)], "{backfill:?}");
    assert_eq!(silver_rows(&silver_uri).await.len(), 5);
    let silver = Table::open(&silver_uri).await.unwrap();
    assert_eq!(
        silver.app_transaction_version("sediment-pipeline:orders_silver:bronze.orders:backfill-from-1").await.unwrap(),
        Some(5)
    );
    // The regular run has nothing left.
    assert!(pipelines::run(&service, "orders_silver", None).await.unwrap().up_to_date);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_between_its_quarantine_and_target_commits_is_redone_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let bronze_uri = dir.path().join("bronze").to_string_lossy().to_string();
    let silver_uri = dir.path().join("silver").to_string_lossy().to_string();
    let gold_uri = dir.path().join("gold").to_string_lossy().to_string();
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let event =
        |id: i64, seq: i64, amount: f64| Event { id, seq, op: "U", amount, name: Some("a".into()), day: DAYS[0] };
    let first: Vec<Event> = (0..10).map(|i| event(i, i, if i % 3 == 0 { -1.0 } else { i as f64 })).collect();
    bronze.write([events_batch(&first)], WriteOptions::append()).await.unwrap();
    let settings = settings(&catalog, &silver_uri, &gold_uri, "");

    // A daemon whose commits to silver never answer: it dies there, its quarantine
    // (and tombstones) committed, its target commit not.
    let hanging = crate::faults::store_hanging_commits(Arc::new(std::sync::atomic::AtomicUsize::new(1)));
    let silver_at = silver_uri.clone();
    let resolver: sediment::service::StoreResolver =
        Arc::new(move |location: &str| (location == silver_at).then(|| hanging.clone()));
    let doomed = Service::builder(settings.clone()).with_stores(resolver).build().await.unwrap();
    register_bronze(&doomed, &bronze_uri).await;
    let task = tokio::spawn(async move { pipelines::run(&doomed, "orders_silver", None).await });
    let quarantine_uri = format!("{silver_uri}_quarantine");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while Table::open(&quarantine_uri).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the quarantine commit never came");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the target commit should hang");
    task.abort();
    let _ = task.await;
    assert_eq!(quarantine_rows(&quarantine_uri).await.len(), 4);
    assert!(Table::open(&silver_uri).await.is_err(), "silver was not created");

    // More events land before the next run.
    let second: Vec<Event> = (10..15).map(|i| event(i, i, -2.0)).collect();
    bronze.write([events_batch(&second)], WriteOptions::append()).await.unwrap();

    // The next daemon redoes exactly the killed run's range (version 0): its
    // quarantine write is recognised as done; then the rest.
    let service = Service::builder(settings).build().await.unwrap();
    let redo = pipelines::run(&service, "orders_silver", None).await.unwrap();
    assert_eq!(redo.sources[0].to_version, 0, "{redo:?}");
    assert_eq!(redo.rows_quarantined, 4);
    assert_eq!(redo.quarantine_version, None, "{redo:?}");
    assert_eq!(quarantine_rows(&quarantine_uri).await.len(), 4);
    assert_eq!(silver_rows(&silver_uri).await.len(), 6);
    let rest = pipelines::run(&service, "orders_silver", None).await.unwrap();
    assert_eq!((rest.sources[0].after_version, rest.sources[0].to_version), (Some(0), 1), "{rest:?}");
    assert_eq!(quarantine_rows(&quarantine_uri).await.len(), 9);
    assert_eq!(silver_rows(&silver_uri).await.len(), 6);
    assert!(pipelines::run(&service, "orders_silver", None).await.unwrap().up_to_date);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_runs_backfills_and_shows_status_and_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let bronze_uri = dir.path().join("bronze").to_string_lossy().to_string();
    let silver_uri = dir.path().join("silver").to_string_lossy().to_string();
    let gold_uri = dir.path().join("gold").to_string_lossy().to_string();
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let events: Vec<Event> = (0..8)
        .map(|i| Event { id: i % 5, seq: i, op: "U", amount: i as f64, name: None, day: DAYS[(i % 2) as usize] })
        .collect();
    bronze.write([events_batch(&events)], WriteOptions::append()).await.unwrap();
    let config = dir.path().join("sediment.toml");
    let text = toml_text(&catalog, &silver_uri, &gold_uri, "");
    std::fs::write(&config, text).unwrap();
    let bin = crate::cli::sediment_bin();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin).args(args).arg("--config").arg(&config).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&["tables", "register", "bronze.orders", "--layer", "bronze", "--location", &bronze_uri]);
    let list: serde_json::Value = serde_json::from_str(&run(&["pipeline", "list", "--json"])).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    let report: serde_json::Value =
        serde_json::from_str(&run(&["pipeline", "run", "orders_silver", "--json"])).unwrap();
    assert_eq!(report["rows_read"], 8, "{report}");
    assert_eq!(report["rows_inserted"], 5, "{report}");
    assert_eq!(report["rows_dropped_duplicates"], 3, "{report}");
    let text = run(&["pipeline", "run", "orders_silver"]);
    assert!(text.contains("up to date"), "{text}");
    let text = run(&["pipeline", "run", "daily_gold"]);
    assert!(text.contains("committed version 0"), "{text}");
    let status: serde_json::Value =
        serde_json::from_str(&run(&["pipeline", "status", "orders_silver", "--json"])).unwrap();
    assert_eq!(status["sources"][0]["consumed_version"], 0, "{status}");
    let text = run(&["pipeline", "backfill", "orders_silver", "--from-version", "0"]);
    assert!(text.contains("rows: 8 read"), "{text}");
    let lineage: serde_json::Value = serde_json::from_str(&run(&["lineage", "silver.orders", "--json"])).unwrap();
    assert_eq!(lineage["upstream"][0]["table"], "bronze.orders", "{lineage}");
    let text = run(&["lineage", "bronze.orders"]);
    assert!(text.contains("-> silver.orders"), "{text}");
    // An unknown pipeline: not found (exit code 3), named.
    let out =
        std::process::Command::new(&bin).args(["pipeline", "run", "nope", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_pipeline_runs_once_per_interval_of_the_service_clock() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let bronze_uri = s3_uri("pipe-s-bronze");
    let silver_uri = s3_uri("pipe-s-silver");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let event = |i: i64| Event { id: i, seq: i, op: "U", amount: 1.0, name: Some("x".into()), day: DAYS[0] };
    bronze.write([events_batch(&(0..4).map(event).collect::<Vec<_>>())], WriteOptions::append()).await.unwrap();
    // Only silver's pipeline has a trigger: every 10 minutes.
    let settings = settings(&catalog, &silver_uri, &s3_uri("pipe-s-gold"), "schedule = { every = \"10m\" }");
    let clock = sediment::ManualClock::new(chrono::Utc::now());
    let service = Service::builder(settings).with_clock(clock.clone()).build().await.unwrap();
    register_bronze(&service, &bronze_uri).await;

    // Never ran: due now.
    assert_eq!(pipeline_jobs(&service.run_once().await.unwrap()), vec!["silver.orders".to_string()]);
    assert_eq!(silver_rows(&silver_uri).await.len(), 4);
    // A source commit is no trigger for a scheduled pipeline; the interval is.
    bronze.write([events_batch(&(4..7).map(event).collect::<Vec<_>>())], WriteOptions::append()).await.unwrap();
    assert_eq!(pipeline_jobs(&service.run_once().await.unwrap()), Vec::<String>::new());
    clock.advance(chrono::Duration::minutes(9));
    assert_eq!(pipeline_jobs(&service.run_once().await.unwrap()), Vec::<String>::new());
    assert_eq!(silver_rows(&silver_uri).await.len(), 4);
    clock.advance(chrono::Duration::minutes(2));
    assert_eq!(pipeline_jobs(&service.run_once().await.unwrap()), vec!["silver.orders".to_string()]);
    assert_eq!(silver_rows(&silver_uri).await.len(), 7);
    // Due again with nothing new: it runs and commits nothing.
    let version = Table::open(&silver_uri).await.unwrap().version();
    clock.advance(chrono::Duration::minutes(11));
    assert_eq!(pipeline_jobs(&service.run_once().await.unwrap()), vec!["silver.orders".to_string()]);
    assert_eq!(Table::open(&silver_uri).await.unwrap().version(), version);
}

/// What an SCD type 2 target should hold after `events` (in append order; of two
/// events of a key at one sequence the later appended wins): per key in sequence
/// order, a version per upsert whose tracked columns (all but the key and the
/// sequence) differ from the open version's (else the open version continues),
/// closed by the next version or a delete; a row's sequence is its version's start.
/// Rows: `id|seq|amount|name|day|valid_from|valid_to|current`.
fn scd2_model(events: &[Event]) -> Vec<String> {
    let mut last: BTreeMap<(i64, i64), &Event> = BTreeMap::new();
    for e in events {
        last.insert((e.id, e.seq), e);
    }
    let row = |v: &Event, from: i64, to: Option<i64>| {
        let name = v.name.clone().unwrap_or_else(|| "NULL".into());
        let to_text = to.map_or("NULL".to_string(), |t| t.to_string());
        format!("{}|{from}|{}|{}|{}|{from}|{to_text}|{}", v.id, v.amount, name, v.day, to.is_none())
    };
    let mut rows = Vec::new();
    let mut open: Option<(i64, i64, &Event)> = None; // (id, valid_from, values)
    for (&(id, seq), e) in &last {
        if let Some((open_id, from, v)) = open
            && open_id != id
        {
            rows.push(row(v, from, None));
            open = None;
        }
        if e.op == "D" {
            if let Some((_, from, v)) = open.take() {
                rows.push(row(v, from, Some(seq)));
            }
            continue;
        }
        match open {
            Some((_, from, v)) if v.amount == e.amount && v.day == e.day && v.name == e.name => {
                open = Some((id, from, e))
            }
            Some((_, from, v)) => {
                rows.push(row(v, from, Some(seq)));
                open = Some((id, seq, e));
            }
            None => open = Some((id, seq, e)),
        }
    }
    if let Some((_, from, v)) = open {
        rows.push(row(v, from, None));
    }
    rows.sort();
    rows
}

async fn scd2_rows(uri: &str) -> Vec<String> {
    let table = Table::open(uri).await.unwrap();
    let (batches, _) = table.scan().run().await;
    let mut rows = Vec::new();
    let int =
        |b: &RecordBatch, c: &str| b.column_by_name(c).unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
    for b in &batches {
        let (id, seq, from, to) = (int(b, "id"), int(b, "seq"), int(b, "valid_from"), int(b, "valid_to"));
        let amount = b.column_by_name("amount").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
        let current = b
            .column_by_name("is_current")
            .unwrap()
            .as_any()
            .downcast_ref::<sediment::arrow::array::BooleanArray>()
            .unwrap()
            .clone();
        let (name, day) = (strings(b, "name"), strings(b, "day"));
        for r in 0..b.num_rows() {
            let name = if name.is_null(r) { "NULL".to_string() } else { name.value(r).to_string() };
            let to = if to.is_null(r) { "NULL".to_string() } else { to.value(r).to_string() };
            rows.push(format!(
                "{}|{}|{}|{name}|{}|{}|{to}|{}",
                id.value(r),
                seq.value(r),
                amount.value(r),
                day.value(r),
                from.value(r),
                current.value(r)
            ));
        }
    }
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_scd2_pipeline_keeps_every_version_whatever_order_and_runs_the_events_come_in() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let bronze_uri = s3_uri("pipe-scd2-bronze");
    let silver_uri = s3_uri("pipe-scd2-silver");
    let mut bronze = Table::open_or_new(&bronze_uri, Default::default()).await.unwrap();
    let text = format!(
        r#"
catalog = "{catalog}"

[[tables]]
name = "silver.customers"
layer = "silver"
location = "{silver_uri}"

[[pipelines]]
name = "customers_history"
type = "upsert"
source = "bronze.orders"
target = "silver.customers"
keys = ["id"]
sequence_by = "seq"
delete_when = "op = 'D'"
except_columns = ["op"]
scd2 = {{}}
"#
    );
    let settings = Settings::from_toml(&text).unwrap();
    settings.validate().unwrap();
    let service = Service::builder(settings).build().await.unwrap();

    let mut rng = Rng(0x5cd2);
    let mut all: Vec<Event> = Vec::new();
    let mut next_seq = 0i64;
    for round in 0..8 {
        let mut events = Vec::new();
        for _ in 0..(1 + rng.below(30)) {
            next_seq += 1;
            // Out of order: up to 15 behind the newest.
            let seq = (next_seq * 10 - rng.below(150) as i64) * 100 + next_seq % 100;
            events.push(Event {
                id: rng.below(8) as i64,
                seq,
                op: if rng.below(7) == 0 { "D" } else { "U" },
                amount: rng.below(2) as f64,
                name: if rng.below(3) == 0 { None } else { Some(format!("n{}", rng.below(2))) },
                day: DAYS[rng.below(2) as usize],
            });
        }
        // Now and then an earlier event of a key again at its sequence, with new values:
        // the later one wins.
        if round > 0 && rng.below(2) == 0 {
            let mut again = all[rng.below(all.len() as u64) as usize].clone();
            again.amount = 1.0 - again.amount;
            again.op = "U";
            events.push(again);
        }
        bronze.write([events_batch(&events)], WriteOptions::append()).await.unwrap();
        all.extend(events);
        if round == 0 {
            register_bronze(&service, &bronze_uri).await;
            pipelines::check(&service).await.unwrap();
        }
        // A run killed part way now and then: the next one neither loses nor repeats it.
        if rng.below(3) == 0 {
            let service = service.clone();
            let task = tokio::spawn(async move { pipelines::run(&service, "customers_history", None).await });
            tokio::time::sleep(std::time::Duration::from_millis(rng.below(300))).await;
            task.abort();
            let _ = task.await;
        }
        let report = pipelines::run(&service, "customers_history", None).await.unwrap();
        assert_eq!(
            report.rows_read,
            report.rows_written() + report.rows_quarantined + report.rows_dropped_duplicates + report.rows_superseded,
            "{report:?}"
        );
        assert_eq!(scd2_rows(&silver_uri).await, scd2_model(&all), "round {round}: {report:#?}");
        // Nothing new: nothing committed.
        let version = Table::open(&silver_uri).await.unwrap().version();
        let again = pipelines::run(&service, "customers_history", None).await.unwrap();
        assert!(again.up_to_date && !again.committed, "{again:?}");
        assert_eq!(Table::open(&silver_uri).await.unwrap().version(), version);
        // The history compacted between runs changes nothing.
        if round % 3 == 1 {
            let mut silver = Table::open(&silver_uri).await.unwrap();
            silver.compact(CompactOptions { min_input_files: Some(2), ..Default::default() }).await.unwrap();
        }
    }
    // A key's versions tile its history: each closed version ends where the next starts
    // or at a delete, and one at most is current.
    let rows = scd2_rows(&silver_uri).await;
    for id in 0..8 {
        let current = rows.iter().filter(|r| r.starts_with(&format!("{id}|")) && r.ends_with("|true")).count();
        assert!(current <= 1, "{id}: {rows:#?}");
    }

    // Settings an SCD type 2 pipeline refuses: no order, two orders, dedupe_by.
    let base = format!(
        "catalog = \"{catalog}\"\n[[tables]]\nname = \"silver.c\"\nlayer = \"silver\"\nlocation = \"{silver_uri}x\"\n"
    );
    for (extra, says) in [
        ("scd2 = {}", "effective_at"),
        ("sequence_by = \"seq\"\nscd2 = { effective_at = \"id\" }", "differ"),
        ("dedupe_by = \"seq\"\nscd2 = { effective_at = \"seq\" }", "dedupe_by"),
    ] {
        let text = format!(
            "{base}[[pipelines]]\nname = \"h\"\ntype = \"upsert\"\nsource = \"bronze.orders\"\ntarget = \"silver.c\"\nkeys = [\"id\"]\n{extra}\n"
        );
        let err =
            Settings::from_toml(&text).and_then(|s| s.validate().map(|_| s)).err().unwrap_or_else(|| panic!("{extra}"));
        let message = err.to_string();
        assert!(message.contains("pipeline h") && message.contains(says), "{extra}: {message}");
    }
}
