//! The service: the HTTP API in process (auth, bad requests, the OpenAPI document), the
//! daemon compacting a fragmented bronze table with the built-in policies, and
//! `sediment run-once` with its exit codes, over SQLite catalogs and tables on S3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sediment::arrow::array::{Int64Array, RecordBatch, StringArray};
use sediment::arrow::datatypes::{DataType, Field, Schema};
use sediment::service::settings::{Role, TokenSettings, token_hash};
use sediment::service::{Service, Settings};
use sediment::{Table, WriteOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::common::s3_uri;

/// Append one row `{id, day}` as one file in partition `day`.
pub async fn append_day_row(table: &mut Table, id: i64, day: &str) {
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("day", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![id])), Arc::new(StringArray::from(vec![day.to_string()]))],
    )
    .unwrap();
    table.write(vec![batch], WriteOptions::append().partition_by(["day"])).await.expect("an append commits");
}

/// A bronze table on S3 with `files` one-row appends in each of `partitions` days.
pub async fn fragmented_table(name: &str, partitions: usize, files: usize) -> String {
    let uri = s3_uri(name);
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    for f in 0..files {
        for p in 0..partitions {
            append_day_row(&mut table, (f * partitions + p) as i64, &format!("2024-05-{:02}", p + 1)).await;
        }
    }
    uri
}

/// One HTTP/1.1 request on a new connection; (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or(b"");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A daemon in this process on a fresh SQLite catalog; stopped when the guard drops.
pub struct Daemon {
    pub addr: std::net::SocketAddr,
    pub service: Service,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// On a fresh SQLite catalog.
    pub async fn start(settings: Settings) -> Daemon {
        Daemon::start_on(settings, None).await
    }

    /// On `catalog` (a URL), or a fresh SQLite one.
    pub async fn start_on(mut settings: Settings, catalog: Option<String>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        settings.catalog = catalog.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("catalog.db").display()));
        let service = Service::builder(settings).build().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (s, t) = (service.clone(), stop.clone());
        let task = tokio::spawn(async move { s.serve(listener, t).await.unwrap() });
        Daemon { addr, service, stop, task: Some(task), _dir: dir }
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), task).await.expect("stops within the grace").unwrap();
        }
    }
}

fn with_tokens(mut settings: Settings) -> Settings {
    settings.auth.tokens = vec![
        TokenSettings { name: "ops".into(), role: Role::Admin, sha256: token_hash("admin-token") },
        TokenSettings { name: "dash".into(), role: Role::Read, sha256: token_hash("read-token") },
    ];
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_auth_bad_requests_and_openapi() {
    let mut settings = with_tokens(Settings::default());
    settings.scheduler.enabled = false;
    let daemon = Daemon::start(settings).await;
    let a = daemon.addr;
    let (admin, read) = (Some("admin-token"), Some("read-token"));
    let uri = fragmented_table("svc-api", 1, 3).await;

    assert_eq!(http(a, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(http(a, "GET", "/readyz", None, None).await.0, 200);
    // Auth: no token, a wrong token, a read token on an admin route.
    assert_eq!(http(a, "GET", "/api/v1/tables", None, None).await.0, 401);
    assert_eq!(http(a, "GET", "/metrics", None, None).await.0, 401);
    assert_eq!(http(a, "GET", "/api/v1/tables", Some("nope"), None).await.0, 401);
    let register = format!(r#"{{"name": "raw.events", "layer": "bronze", "location": "{uri}"}}"#);
    let (status, body) = http(a, "POST", "/api/v1/tables", read, Some(register.as_bytes())).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = http(a, "POST", "/api/v1/tables", admin, Some(register.as_bytes())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(http(a, "POST", "/api/v1/tables", admin, Some(register.as_bytes())).await.0, 409);
    // Bad requests name what was wrong.
    let (status, body) = http(a, "POST", "/api/v1/tables", admin, Some(b"{\"name\": ")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"kind\":\"invalid_input\""), "{body}");
    let (status, body) =
        http(a, "POST", "/api/v1/tables", admin, Some(br#"{"name": "x.y", "layer": "platinum", "location": "/tmp"}"#))
            .await;
    assert_eq!(status, 400);
    assert!(body.contains("platinum"), "{body}");
    let (status, body) = http(a, "POST", "/api/v1/tables", admin, Some(br#"{"name": "x.y", "layer": "gold"}"#)).await;
    assert_eq!(status, 400);
    assert!(body.contains("location"), "{body}");
    let (status, body) = http(a, "GET", "/api/v1/tables/no.such", read, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        http(a, "POST", "/api/v1/tables/raw.events/jobs", admin, Some(br#"{"kind": "optimize"}"#)).await;
    assert_eq!(status, 400);
    assert!(body.contains("kind") && body.contains("optimize"), "{body}");
    let (status, body) =
        http(a, "POST", "/api/v1/tables/raw.events/jobs", admin, Some(br#"{"kind": "vacuum", "retain": "1d"}"#)).await;
    assert_eq!(status, 400);
    assert!(body.contains("retain"), "{body}");
    let huge = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(http(a, "POST", "/api/v1/tables", admin, Some(&huge)).await.0, 413);
    assert_eq!(http(a, "GET", "/api/v1/jobs?state=stuck", read, None).await.0, 400);
    assert_eq!(http(a, "GET", "/api/v1/jobs/abc", read, None).await.0, 400);
    assert_eq!(http(a, "GET", "/api/v1/jobs/12345", read, None).await.0, 404);
    // A job by request runs (the scheduler is off) and shows in the list.
    let (status, body) =
        http(a, "POST", "/api/v1/tables/raw.events/jobs", admin, Some(br#"{"kind": "checkpoint"}"#)).await;
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, body) = http(a, "GET", &format!("/api/v1/jobs/{id}"), read, None).await;
        let job: serde_json::Value = serde_json::from_str(&body).unwrap();
        if job["state"] == "succeeded" || Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["report"]["version"], 2, "{job}");
    let (_, body) = http(a, "GET", "/api/v1/jobs?table=raw.events&kind=checkpoint", read, None).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"].as_array().unwrap().len(), 1);
    let (status, body) = http(a, "POST", &format!("/api/v1/jobs/{id}/cancel"), admin, Some(b"")).await;
    assert_eq!(status, 409, "a finished job: {body}");
    // Tags through the API land in the table and in the catalog's mirror.
    let (status, body) =
        http(a, "POST", "/api/v1/tables/raw.events/tags", admin, Some(br#"{"name": "first", "version": 0}"#)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(Table::open(&uri).await.unwrap().tags().await.unwrap().len(), 1);
    let (_, body) = http(a, "GET", "/api/v1/tables/raw.events", read, None).await;
    let described: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(described["tags"][0]["name"], "first", "{described}");
    assert_eq!(described["files"], 3, "{described}");
    // CHECK constraints through the API land in the Delta table.
    let (status, body) = http(
        a,
        "POST",
        "/api/v1/tables/raw.events/constraints",
        admin,
        Some(br#"{"name": "known_id", "expression": "id >= 0"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(Table::open(&uri).await.unwrap().constraints().unwrap().len(), 1);
    let (status, body) = http(
        a,
        "POST",
        "/api/v1/tables/raw.events/constraints",
        admin,
        Some(br#"{"name": "never", "expression": "id < 0"}"#),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("violate it"), "{body}");
    let (_, body) = http(a, "GET", "/api/v1/tables/raw.events/constraints", read, None).await;
    assert!(body.contains("\"known_id\"") && !body.contains("never"), "{body}");
    let (status, body) = http(a, "DELETE", "/api/v1/tables/raw.events/constraints/known_id", admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(Table::open(&uri).await.unwrap().constraints().unwrap().is_empty());
    let (status, body) = http(a, "GET", "/metrics", read, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("sediment_jobs_total"), "{body}");

    // The OpenAPI document parses and lists every route the router serves.
    let (status, body) = http(a, "GET", "/api/v1/openapi.json", read, None).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("the OpenAPI document parses");
    let mut routes: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| format!("{} {path}", m.to_uppercase())))
        .collect();
    routes.sort();
    let expected = [
        "DELETE /api/v1/tables/{name}",
        "DELETE /api/v1/tables/{name}/constraints/{constraint}",
        "DELETE /api/v1/tables/{name}/tags/{tag}",
        "GET /api/v1/jobs",
        "GET /api/v1/jobs/{id}",
        "GET /api/v1/lineage/{table}",
        "GET /api/v1/openapi.json",
        "GET /api/v1/pipelines",
        "GET /api/v1/pipelines/{name}",
        "GET /api/v1/tables",
        "GET /api/v1/tables/{name}",
        "GET /api/v1/tables/{name}/constraints",
        "GET /api/v1/tables/{name}/tags",
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "POST /api/v1/jobs/{id}/cancel",
        "POST /api/v1/pipelines/{name}/runs",
        "POST /api/v1/tables",
        "POST /api/v1/tables/{name}/constraints",
        "POST /api/v1/tables/{name}/jobs",
        "POST /api/v1/tables/{name}/restore",
        "POST /api/v1/tables/{name}/tags",
    ];
    assert_eq!(routes, expected);
    // Every documented route is served (none falls through to the router's 404).
    for route in &routes {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{name}", "raw.events")
            .replace("{id}", &id.to_string())
            .replace("{tag}", "first")
            .replace("{constraint}", "first")
            .replace("{table}", "raw.events");
        let (status, body) = http(a, method, &path, admin, Some(b"{}")).await;
        assert!(!body.contains("no such route"), "{route}: {status} {body}");
    }
    assert!(http(a, "GET", "/api/v1/nothing", admin, None).await.1.contains("no such route"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_policies_compact_a_registered_bronze_table_within_a_minute() {
    builtin_policies_compact(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_policies_compact_a_registered_bronze_table_on_postgres() {
    builtin_policies_compact(Some(crate::catalog::postgres_database().await)).await;
}

async fn builtin_policies_compact(catalog: Option<String>) {
    let uri = fragmented_table("svc-bronze", 2, 20).await;
    let before = crate::common::table_rows(&Table::open(&uri).await.unwrap()).await;
    assert_eq!(Table::open(&uri).await.unwrap().files().unwrap().len(), 40);
    let daemon = Daemon::start_on(Settings::default(), catalog).await;
    let entry = sediment_catalog::NewTable::new("raw.clicks", sediment_catalog::Layer::Bronze, uri.clone());
    sediment::service::ops::register_table(&daemon.service, entry).await.unwrap();
    let started = Instant::now();
    let files = loop {
        let files = Table::open(&uri).await.unwrap().files().unwrap().len();
        if files <= 2 || started.elapsed() > Duration::from_secs(60) {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(files, 2, "one file per partition within a minute (took {:?})", started.elapsed());
    let after = crate::common::table_rows(&Table::open(&uri).await.unwrap()).await;
    assert_eq!(after, before, "nothing lost, nothing duplicated");
    let jobs = daemon
        .service
        .catalog()
        .list_jobs(&sediment_catalog::JobFilter {
            kind: Some(sediment_catalog::JobKind::Compact),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "one compaction for one trigger: {jobs:?}");
    assert!(jobs[0].reason.contains("small files"), "{}", jobs[0].reason);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_runs_what_is_due_and_says_whether_anything_failed() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let busy = fragmented_table("svc-once-busy", 1, 12).await;
    let quiet = fragmented_table("svc-once-quiet", 1, 2).await;
    let bin = crate::cli::sediment_bin();
    let run = |args: Vec<String>| std::process::Command::new(&bin).args(args).output().unwrap();
    for (name, uri) in [("raw.busy", &busy), ("raw.quiet", &quiet)] {
        let out = run(vec![
            "tables".into(),
            "register".into(),
            name.into(),
            "--layer".into(),
            "bronze".into(),
            "--location".into(),
            uri.clone(),
            "--catalog".into(),
            catalog.clone(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let once = || run(vec!["run-once".into(), "--json".into(), "--catalog".into(), catalog.clone()]);
    let out = once();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ran: Vec<(String, String)> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["table"].as_str().unwrap().to_string(), j["kind"].as_str().unwrap().to_string()))
        .collect();
    assert!(ran.contains(&("raw.busy".into(), "compact".into())), "{report}");
    assert!(!ran.contains(&("raw.quiet".into(), "compact".into())), "2 files are not due: {report}");
    assert_eq!(Table::open(&busy).await.unwrap().files().unwrap().len(), 1);
    // Nothing is due the second time (vacuum ran within its day, compaction is done).
    let out = once();
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["jobs"].as_array().unwrap().len(), 0, "{report}");
    // A due job that fails: exit code 10.
    let store = sediment_catalog::SqlCatalog::connect(&catalog).await.unwrap();
    use sediment_catalog::Catalog as _;
    let now = chrono::Utc::now();
    store
        .enqueue(
            sediment_catalog::NewJob {
                table: "raw.quiet".into(),
                kind: sediment_catalog::JobKind::Expire,
                reason: "request".into(),
                options: serde_json::json!({"kind": "expire", "older_than": "1d", "column": "no_such_column"}),
                run_after: now,
                max_attempts: 1,
                unless_succeeded_after: None,
            },
            now,
        )
        .await
        .unwrap()
        .unwrap();
    let out = once();
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["jobs"][0]["error"].as_str().unwrap().contains("no_such_column"), "{report}");
}

#[test]
fn serve_check_validates_settings_without_starting() {
    let bin = crate::cli::sediment_bin();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sediment.example.toml");
    let out = std::process::Command::new(&bin).args(["serve", "--check", "--config"]).arg(&example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("settings valid"));
    let dir = tempfile::tempdir().unwrap();
    for (text, named) in [
        ("[workers]\nconcurency = 2\n", "concurency"),
        ("[workers]\nlease = \"soon\"\n", "lease"),
        ("listen = \"0.0.0.0:8408\"\n", "token"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(&bin)
            .args(["serve", "--check", "--config"])
            .arg(&path)
            .env_remove("SEDIMENT_ADMIN_TOKEN")
            .env_remove("SEDIMENT_READ_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(named), "{text}: {stderr}");
    }
}
