//! The catalog's conformance suite: every test runs on SQLite (a fresh file) and on
//! PostgreSQL (a fresh database of the server `scripts/test.sh` starts), through the
//! one `Catalog` trait.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sediment_catalog::{
    Catalog, CatalogErrorKind, JobFilter, JobKind, JobOutcome, JobState, Layer, Lease, NewJob, NewTable, SqlCatalog,
    TagEntry,
};
use serde_json::json;

/// A fresh SQLite catalog in a temporary directory (kept alive by the returned guard).
pub async fn sqlite_catalog() -> (Arc<dyn Catalog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    (Arc::new(SqlCatalog::connect(&url).await.expect("sqlite catalog")), dir)
}

/// The URL of a fresh, empty database on the test PostgreSQL server.
pub async fn postgres_database() -> String {
    let admin = std::env::var("SEDIMENT_TEST_POSTGRES_URL")
        .expect("SEDIMENT_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL");
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        Utc::now().timestamp_micros()
    );
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin).await.expect("postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.expect("create database");
    pool.close().await;
    match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("unexpected postgres URL {admin}"),
    }
}

async fn postgres_catalog() -> Arc<dyn Catalog> {
    Arc::new(SqlCatalog::connect(&postgres_database().await).await.expect("postgres catalog"))
}

/// Run one suite test on both backends.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                let (catalog, _dir) = super::sqlite_catalog().await;
                super::$name(catalog).await;
            })+
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::postgres_catalog().await).await;
            })+
        }
    };
}

both_backends!(
    tables_register_list_unregister,
    one_active_job_per_table_and_kind,
    leases_fence_and_expire,
    failures_retry_then_fail,
    cancel_and_give_back,
    lists_page_and_prune,
    tags_mirror,
    concurrent_claims_take_each_job_once,
);

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + seconds, 0).unwrap()
}

fn job(table: &str, kind: JobKind, at: DateTime<Utc>) -> NewJob {
    NewJob {
        table: table.into(),
        kind,
        reason: "request".into(),
        options: json!({}),
        run_after: at,
        max_attempts: 3,
        unless_succeeded_after: None,
    }
}

async fn register(catalog: &dyn Catalog, name: &str) {
    catalog.register_table(NewTable::new(name, Layer::Bronze, format!("memory://{name}")), t(0)).await.unwrap();
}

async fn tables_register_list_unregister(catalog: Arc<dyn Catalog>) {
    catalog.ping().await.unwrap();
    let mut new = NewTable::new("sales.orders", Layer::Silver, "s3://lake/silver/orders");
    new.owner = Some("data-eng".into());
    new.policy = Some(json!({"vacuum": {"retention": "3d"}}));
    let entry = catalog.register_table(new.clone(), t(0)).await.unwrap();
    assert_eq!(entry.layer, Layer::Silver);
    assert_eq!(entry.policy, json!({"vacuum": {"retention": "3d"}}));
    assert_eq!(entry.created_at, t(0));
    let err = catalog.register_table(new.clone(), t(1)).await.unwrap_err();
    assert_eq!(err.kind(), CatalogErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("sales.orders"), "{err}");
    let mut same_place = new.clone();
    same_place.name = "sales.orders2".into();
    let err = catalog.register_table(same_place, t(1)).await.unwrap_err();
    assert_eq!(err.kind(), CatalogErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("s3://lake/silver/orders"), "{err}");
    let mut bad = new.clone();
    bad.name = "orders".into();
    assert_eq!(catalog.register_table(bad, t(1)).await.unwrap_err().kind(), CatalogErrorKind::InvalidInput);
    register(&*catalog, "a.first").await;
    let names: Vec<String> = catalog.list_tables().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["a.first", "sales.orders"]);
    assert_eq!(catalog.table("sales.orders").await.unwrap().owner.as_deref(), Some("data-eng"));
    assert_eq!(catalog.table("no.such").await.unwrap_err().kind(), CatalogErrorKind::NotFound);

    // Unregistering cancels the table's scheduled jobs; its history stays.
    let scheduled = catalog.enqueue(job("sales.orders", JobKind::Vacuum, t(0)), t(0)).await.unwrap().unwrap();
    catalog.unregister_table("sales.orders", t(5)).await.unwrap();
    assert_eq!(catalog.table("sales.orders").await.unwrap_err().kind(), CatalogErrorKind::NotFound);
    assert_eq!(catalog.job(scheduled.id).await.unwrap().state, JobState::Cancelled);
    assert_eq!(catalog.unregister_table("sales.orders", t(6)).await.unwrap_err().kind(), CatalogErrorKind::NotFound);
    let err = catalog.enqueue(job("sales.orders", JobKind::Vacuum, t(7)), t(7)).await.unwrap_err();
    assert_eq!(err.kind(), CatalogErrorKind::NotFound);
}

async fn one_active_job_per_table_and_kind(catalog: Arc<dyn Catalog>) {
    register(&*catalog, "a.t").await;
    let first = catalog.enqueue(job("a.t", JobKind::Compact, t(0)), t(0)).await.unwrap().expect("scheduled");
    assert_eq!((first.state, first.attempt), (JobState::Scheduled, 0));
    assert!(catalog.enqueue(job("a.t", JobKind::Compact, t(1)), t(1)).await.unwrap().is_none());
    // Another kind of the same table is not held back.
    assert!(catalog.enqueue(job("a.t", JobKind::Vacuum, t(1)), t(1)).await.unwrap().is_some());
    let claimed = catalog.claim("d1", t(60), t(2)).await.unwrap().expect("due");
    assert_eq!(claimed.id, first.id);
    assert!(catalog.enqueue(job("a.t", JobKind::Compact, t(3)), t(3)).await.unwrap().is_none(), "running counts");
    catalog.finish(first.id, "d1", JobOutcome::Succeeded { report: json!({"files": 3}) }, t(10)).await.unwrap();
    // A trigger seen on a snapshot older than that success is stale.
    let mut stale = job("a.t", JobKind::Compact, t(11));
    stale.unless_succeeded_after = Some(t(5));
    assert!(catalog.enqueue(stale.clone(), t(11)).await.unwrap().is_none());
    stale.unless_succeeded_after = Some(t(10));
    assert!(catalog.enqueue(stale, t(11)).await.unwrap().is_some());
    let bad = NewJob { options: json!([1]), ..job("a.t", JobKind::Expire, t(0)) };
    assert_eq!(catalog.enqueue(bad, t(0)).await.unwrap_err().kind(), CatalogErrorKind::InvalidInput);
}

async fn leases_fence_and_expire(catalog: Arc<dyn Catalog>) {
    register(&*catalog, "a.t").await;
    // Not due yet.
    let queued = catalog.enqueue(job("a.t", JobKind::Compact, t(100)), t(0)).await.unwrap().unwrap();
    assert!(catalog.claim("d1", t(130), t(50)).await.unwrap().is_none());
    let mine = catalog.claim("d1", t(130), t(100)).await.unwrap().expect("due");
    assert_eq!((mine.id, mine.attempt, mine.taken_over), (queued.id, 1, false));
    assert_eq!(mine.lease_owner.as_deref(), Some("d1"));
    assert!(catalog.claim("d2", t(130), t(110)).await.unwrap().is_none(), "leased");
    assert_eq!(catalog.heartbeat(mine.id, "d1", t(160), t(120)).await.unwrap(), Lease::Held);
    assert!(catalog.claim("d2", t(190), t(150)).await.unwrap().is_none(), "renewed");
    // d1 stops heartbeating; after the lease expires d2 takes the job over.
    let theirs = catalog.claim("d2", t(200), t(170)).await.unwrap().expect("expired lease");
    assert_eq!((theirs.id, theirs.attempt, theirs.taken_over), (queued.id, 2, true));
    assert_eq!(catalog.heartbeat(mine.id, "d1", t(230), t(171)).await.unwrap(), Lease::Lost);
    let err = catalog.finish(mine.id, "d1", JobOutcome::Succeeded { report: json!({}) }, t(172)).await.unwrap_err();
    assert_eq!(err.kind(), CatalogErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("d2"), "{err}");
    let done =
        catalog.finish(theirs.id, "d2", JobOutcome::Succeeded { report: json!({"rows": 7}) }, t(180)).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.report, Some(json!({"rows": 7})));
    assert_eq!(done.finished_at, Some(t(180)));
    // An expired lease on the last attempt fails the job instead of running it again.
    let mut once = job("a.t", JobKind::Vacuum, t(200));
    once.max_attempts = 1;
    let once = catalog.enqueue(once, t(200)).await.unwrap().unwrap();
    catalog.claim("d1", t(230), t(200)).await.unwrap().unwrap();
    assert!(catalog.claim("d2", t(300), t(240)).await.unwrap().is_none());
    let failed = catalog.job(once.id).await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.unwrap().contains("lease"));
}

async fn failures_retry_then_fail(catalog: Arc<dyn Catalog>) {
    register(&*catalog, "a.t").await;
    let mut new = job("a.t", JobKind::Checkpoint, t(0));
    new.max_attempts = 2;
    let id = catalog.enqueue(new, t(0)).await.unwrap().unwrap().id;
    catalog.claim("d1", t(60), t(0)).await.unwrap().unwrap();
    let failed = JobOutcome::Failed { error: "storage unavailable".into(), report: None, retry_at: Some(t(30)) };
    let retried = catalog.finish(id, "d1", failed.clone(), t(5)).await.unwrap();
    assert_eq!((retried.state, retried.run_after, retried.finished_at), (JobState::Scheduled, t(30), None));
    assert_eq!(retried.error.as_deref(), Some("storage unavailable"));
    assert!(catalog.claim("d1", t(60), t(20)).await.unwrap().is_none(), "backing off");
    let second = catalog.claim("d1", t(90), t(30)).await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    let last = catalog.finish(id, "d1", failed, t(35)).await.unwrap();
    assert_eq!((last.state, last.finished_at), (JobState::Failed, Some(t(35))));
    assert_eq!(
        catalog.last_finished("a.t", JobKind::Checkpoint, Some(JobState::Failed)).await.unwrap().map(|j| j.id),
        Some(id)
    );
    assert!(catalog.last_finished("a.t", JobKind::Checkpoint, Some(JobState::Succeeded)).await.unwrap().is_none());
    // An error retrying cannot mend fails at once, attempts left or not.
    let id = catalog.enqueue(job("a.t", JobKind::Checkpoint, t(40)), t(40)).await.unwrap().unwrap().id;
    catalog.claim("d1", t(90), t(40)).await.unwrap().unwrap();
    let permanent = JobOutcome::Failed { error: "not a delta table".into(), report: None, retry_at: None };
    let ended = catalog.finish(id, "d1", permanent, t(41)).await.unwrap();
    assert_eq!((ended.state, ended.attempt), (JobState::Failed, 1));
}

async fn cancel_and_give_back(catalog: Arc<dyn Catalog>) {
    register(&*catalog, "a.t").await;
    let scheduled = catalog.enqueue(job("a.t", JobKind::Compact, t(0)), t(0)).await.unwrap().unwrap();
    let cancelled = catalog.cancel(scheduled.id, t(1)).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(catalog.cancel(scheduled.id, t(2)).await.unwrap_err().kind(), CatalogErrorKind::Conflict);
    assert_eq!(catalog.cancel(424242, t(2)).await.unwrap_err().kind(), CatalogErrorKind::NotFound);

    let running = catalog.enqueue(job("a.t", JobKind::Compact, t(2)), t(2)).await.unwrap().unwrap();
    catalog.claim("d1", t(60), t(2)).await.unwrap().unwrap();
    let requested = catalog.cancel(running.id, t(3)).await.unwrap();
    assert_eq!((requested.state, requested.cancel_requested), (JobState::Running, true));
    assert_eq!(catalog.heartbeat(running.id, "d1", t(70), t(4)).await.unwrap(), Lease::CancelRequested);
    let ended = catalog.finish(running.id, "d1", JobOutcome::Cancelled { report: None }, t(5)).await.unwrap();
    assert_eq!(ended.state, JobState::Cancelled);

    // A daemon shutting down gives its job back: scheduled again, the attempt not counted.
    let given = catalog.enqueue(job("a.t", JobKind::Compact, t(6)), t(6)).await.unwrap().unwrap();
    catalog.claim("d1", t(60), t(6)).await.unwrap().unwrap();
    let back = catalog.finish(given.id, "d1", JobOutcome::GivenBack, t(7)).await.unwrap();
    assert_eq!((back.state, back.attempt, back.lease_owner.clone()), (JobState::Scheduled, 0, None));
    let again = catalog.claim("d2", t(60), t(7)).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempt, again.taken_over), (given.id, 1, false));
}

async fn lists_page_and_prune(catalog: Arc<dyn Catalog>) {
    register(&*catalog, "a.t").await;
    register(&*catalog, "b.t").await;
    let mut ids = Vec::new();
    for (i, kind) in JobKind::ALL.into_iter().enumerate() {
        ids.push(catalog.enqueue(job("a.t", kind, t(i as i64)), t(i as i64)).await.unwrap().unwrap().id);
    }
    ids.push(catalog.enqueue(job("b.t", JobKind::Compact, t(9)), t(9)).await.unwrap().unwrap().id);
    let n = ids.len();
    assert_eq!(catalog.count_active().await.unwrap(), (n as u64, 0));
    let all = catalog.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|j| j.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>());
    let of_a = catalog.list_jobs(&JobFilter { table: Some("a.t".into()), ..Default::default() }).await.unwrap();
    assert_eq!(of_a.len(), JobKind::ALL.len());
    let compactions =
        catalog.list_jobs(&JobFilter { kind: Some(JobKind::Compact), ..Default::default() }).await.unwrap();
    assert_eq!(compactions.len(), 2);
    let page = catalog.list_jobs(&JobFilter { limit: Some(2), ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 2);
    let next = catalog
        .list_jobs(&JobFilter { limit: Some(2), before_id: Some(page[1].id), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[n - 3], ids[n - 4]]);
    // Finish one, then prune history older than a horizon.
    let claimed = catalog.claim("d1", t(100), t(10)).await.unwrap().unwrap();
    catalog.finish(claimed.id, "d1", JobOutcome::Succeeded { report: json!({}) }, t(20)).await.unwrap();
    assert_eq!(catalog.count_active().await.unwrap(), (n as u64 - 1, 0));
    let done = catalog.list_jobs(&JobFilter { state: Some(JobState::Succeeded), ..Default::default() }).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(catalog.prune_jobs(t(20)).await.unwrap(), 0);
    assert_eq!(catalog.prune_jobs(t(21)).await.unwrap(), 1);
    assert_eq!(catalog.job(claimed.id).await.unwrap_err().kind(), CatalogErrorKind::NotFound);
}

async fn tags_mirror(catalog: Arc<dyn Catalog>) {
    register(&*catalog, "a.t").await;
    let tag = |name: &str, version| TagEntry {
        table: "a.t".into(),
        name: name.into(),
        version,
        created_at: Some(t(1)),
        expires_at: None,
        description: Some("month end".into()),
    };
    catalog.replace_tags("a.t", vec![tag("v2", 2), tag("eom", 7)]).await.unwrap();
    let tags = catalog.tags("a.t").await.unwrap();
    assert_eq!(tags, vec![tag("eom", 7), tag("v2", 2)]);
    catalog.replace_tags("a.t", vec![tag("eom", 8)]).await.unwrap();
    assert_eq!(catalog.tags("a.t").await.unwrap(), vec![tag("eom", 8)]);
    catalog.replace_tags("a.t", vec![]).await.unwrap();
    assert!(catalog.tags("a.t").await.unwrap().is_empty());
}

async fn concurrent_claims_take_each_job_once(catalog: Arc<dyn Catalog>) {
    for i in 0..24 {
        register(&*catalog, &format!("n.t{i}")).await;
        catalog.enqueue(job(&format!("n.t{i}"), JobKind::Compact, t(0)), t(0)).await.unwrap().unwrap();
    }
    let mut claimers = Vec::new();
    for c in 0..6 {
        let catalog = catalog.clone();
        claimers.push(tokio::spawn(async move {
            let owner = format!("d{c}");
            let mut got = Vec::new();
            while let Some(job) = catalog.claim(&owner, t(600), t(1)).await.unwrap() {
                got.push(job.id);
                catalog.finish(job.id, &owner, JobOutcome::Succeeded { report: json!({}) }, t(2)).await.unwrap();
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(total, 24);
}
