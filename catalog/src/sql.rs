//! [`SqlCatalog`]: the catalog on SQLite or PostgreSQL, through sqlx's `Any` driver.
//!
//! Both backends run the same statements (numbered `$N` parameters, BIGINT times in
//! milliseconds, JSON as text); the one difference is the claim, which on PostgreSQL
//! locks the chosen row with `FOR UPDATE SKIP LOCKED` so daemons claiming at once
//! each get a different job without waiting on each other. SQLite serializes writers
//! itself (one daemon per SQLite file).
//!
//! Every change of a running job (`heartbeat`, `finish`) is fenced on
//! `lease_owner = $owner AND state = 'running'`: a daemon whose lease was taken over
//! changes nothing.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::error::{CatalogError, Result};
use crate::model::*;
use crate::{Catalog, MAX_PAGE, migrations};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The catalog on SQLite (`sqlite://PATH`, created when missing; `sqlite::memory:`)
/// or PostgreSQL (`postgres://USER@HOST:PORT/DB`).
#[derive(Debug, Clone)]
pub struct SqlCatalog {
    pool: AnyPool,
    backend: Backend,
}

const JOB_COLUMNS: &str = "id, table_name, kind, state, reason, options, attempt, max_attempts, run_after, lease_owner, \
     lease_expires_at, taken_over, cancel_requested, error, report, created_at, started_at, finished_at";
const TABLE_COLUMNS: &str =
    "name, layer, location, storage_profile, owner, description, policy, created_at, updated_at";

impl SqlCatalog {
    /// Connect and bring the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let url = if rest == ":memory:" || rest.contains('?') || rest.is_empty() {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(CatalogError::invalid(format!(
                "catalog: expected sqlite://PATH or postgres://USER@HOST/DB, found {:?}",
                redact_url(url)
            )));
        };
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = AnyPoolOptions::new()
            // An in-memory SQLite database lives and dies with its one connection.
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory { None } else { Some(std::time::Duration::from_secs(300)) })
            .max_lifetime(if memory { None } else { Some(std::time::Duration::from_secs(1800)) })
            .acquire_timeout(std::time::Duration::from_secs(15))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers (the API) run beside the writer (the workers);
                        // waiting on a busy database beats failing.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 15000;").await?;
                    }
                    Ok(())
                })
            });
        let pool = options
            .connect(&url)
            .await
            .map_err(|e| CatalogError::database(format_args!("connecting to {}", redact_url(&url)), e))?;
        let migrator = match backend {
            Backend::Sqlite => migrations::sqlite(),
            Backend::Postgres => migrations::postgres(),
        };
        migrator.run(&pool).await.map_err(|e| {
            CatalogError::new(
                crate::CatalogErrorKind::Internal,
                format!("catalog: migrating the schema of {}: {e}", redact_url(&url)),
            )
        })?;
        Ok(Self { pool, backend })
    }

    /// Close the pool (waits for connections in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A catalog URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn json_text(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        CatalogError::new(crate::CatalogErrorKind::Internal, format!("catalog: unreadable {what} {text:?}: {e}"))
    })
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>>(row: &'r AnyRow, column: &str) -> Result<T> {
    row.try_get(column).map_err(|e| CatalogError::database(format_args!("reading column {column}"), e))
}

fn table_from_row(row: &AnyRow) -> Result<TableEntry> {
    Ok(TableEntry {
        name: get(row, "name")?,
        layer: Layer::from_str(&get::<String>(row, "layer")?)?,
        location: get(row, "location")?,
        storage_options: get(row, "storage_profile")?,
        owner: get(row, "owner")?,
        description: get(row, "description")?,
        policy: json_text("policy", &get::<String>(row, "policy")?)?,
        created_at: time(get(row, "created_at")?),
        updated_at: time(get(row, "updated_at")?),
    })
}

fn job_from_row(row: &AnyRow) -> Result<Job> {
    let report: Option<String> = get(row, "report")?;
    Ok(Job {
        id: get(row, "id")?,
        table: get(row, "table_name")?,
        kind: JobKind::from_str(&get::<String>(row, "kind")?)?,
        state: JobState::from_str(&get::<String>(row, "state")?)?,
        reason: get(row, "reason")?,
        options: json_text("job options", &get::<String>(row, "options")?)?,
        attempt: get::<i64>(row, "attempt")?.clamp(0, u32::MAX as i64) as u32,
        max_attempts: get::<i64>(row, "max_attempts")?.clamp(0, u32::MAX as i64) as u32,
        run_after: time(get(row, "run_after")?),
        lease_owner: get(row, "lease_owner")?,
        lease_expires_at: get::<Option<i64>>(row, "lease_expires_at")?.map(time),
        taken_over: get::<i64>(row, "taken_over")? != 0,
        cancel_requested: get::<i64>(row, "cancel_requested")? != 0,
        error: get(row, "error")?,
        report: report.as_deref().map(|r| json_text("job report", r)).transpose()?,
        created_at: time(get(row, "created_at")?),
        started_at: get::<Option<i64>>(row, "started_at")?.map(time),
        finished_at: get::<Option<i64>>(row, "finished_at")?.map(time),
    })
}

/// Statements whose text is built once from the column lists.
macro_rules! sql {
    ($($part:expr),+ $(,)?) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        sqlx::AssertSqlSafe(TEXT.get_or_init(|| [$($part),+].concat()).as_str())
    }};
}

#[async_trait::async_trait]
impl Catalog for SqlCatalog {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(|e| CatalogError::database("ping", e))?;
        Ok(())
    }

    async fn register_table(&self, table: NewTable, now: DateTime<Utc>) -> Result<TableEntry> {
        validate_table_name(&table.name)?;
        if table.location.trim().is_empty() {
            return Err(CatalogError::invalid("location: empty"));
        }
        let policy = table.policy.clone().unwrap_or(Value::Object(Default::default()));
        if !policy.is_object() {
            return Err(CatalogError::invalid(format!("policy: expected an object of policy fields, found {policy}")));
        }
        let inserted = sqlx::query(sql!(
            "INSERT INTO sediment_tables (",
            TABLE_COLUMNS,
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
            TABLE_COLUMNS
        ))
        .bind(&table.name)
        .bind(table.layer.as_str())
        .bind(&table.location)
        .bind(&table.storage_options)
        .bind(&table.owner)
        .bind(&table.description)
        .bind(policy.to_string())
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => table_from_row(&row),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => match self.table(&table.name).await {
                Ok(existing) => Err(CatalogError::conflict(format!(
                    "table {} is registered already (at {})",
                    existing.name, existing.location
                ))),
                Err(_) => Err(CatalogError::conflict(format!(
                    "location {} is registered already under another name",
                    table.location
                ))),
            },
            Err(e) => Err(CatalogError::database(format_args!("registering table {}", table.name), e)),
        }
    }

    async fn table(&self, name: &str) -> Result<TableEntry> {
        let row = sqlx::query(sql!("SELECT ", TABLE_COLUMNS, " FROM sediment_tables WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CatalogError::database(format_args!("reading table {name}"), e))?;
        match row {
            Some(row) => table_from_row(&row),
            None => Err(CatalogError::not_found(format!("no table {name} in the catalog"))),
        }
    }

    async fn list_tables(&self) -> Result<Vec<TableEntry>> {
        let rows = sqlx::query(sql!("SELECT ", TABLE_COLUMNS, " FROM sediment_tables ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| CatalogError::database("listing tables", e))?;
        rows.iter().map(table_from_row).collect()
    }

    async fn unregister_table(&self, name: &str, now: DateTime<Utc>) -> Result<TableEntry> {
        let mut tx = self.pool.begin().await.map_err(|e| CatalogError::database("starting a transaction", e))?;
        let row = sqlx::query(sql!("DELETE FROM sediment_tables WHERE name = $1 RETURNING ", TABLE_COLUMNS))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| CatalogError::database(format_args!("unregistering table {name}"), e))?;
        let Some(row) = row else {
            return Err(CatalogError::not_found(format!("no table {name} in the catalog")));
        };
        sqlx::query(
            "UPDATE sediment_jobs SET state = 'cancelled', finished_at = $2, error = 'the table was unregistered' \
             WHERE table_name = $1 AND state = 'scheduled'",
        )
        .bind(name)
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(|e| CatalogError::database(format_args!("cancelling the jobs of table {name}"), e))?;
        sqlx::query("UPDATE sediment_jobs SET cancel_requested = 1 WHERE table_name = $1 AND state = 'running'")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| CatalogError::database(format_args!("cancelling the jobs of table {name}"), e))?;
        sqlx::query("DELETE FROM sediment_tags WHERE table_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| CatalogError::database(format_args!("forgetting the tags of table {name}"), e))?;
        tx.commit().await.map_err(|e| CatalogError::database(format_args!("unregistering table {name}"), e))?;
        table_from_row(&row)
    }

    async fn enqueue(&self, job: NewJob, now: DateTime<Utc>) -> Result<Option<Job>> {
        // A pipeline's job is recorded under its target's name, which its first run
        // creates and registers.
        if job.kind != JobKind::Pipeline {
            self.table(&job.table).await?;
        }
        if !job.options.is_object() {
            return Err(CatalogError::invalid(format!("options: expected an object, found {}", job.options)));
        }
        let inserted = sqlx::query(sql!(
            "INSERT INTO sediment_jobs (table_name, kind, state, reason, options, attempt, max_attempts, run_after, \
             taken_over, cancel_requested, created_at) \
             SELECT $1, $2, 'scheduled', $3, $4, 0, $5, $6, 0, 0, $7 \
             WHERE NOT EXISTS (SELECT 1 FROM sediment_jobs WHERE table_name = $1 AND kind = $2 \
             AND state = 'succeeded' AND finished_at > $8) RETURNING ",
            JOB_COLUMNS
        ))
        .bind(&job.table)
        .bind(job.kind.as_str())
        .bind(&job.reason)
        .bind(job.options.to_string())
        .bind(job.max_attempts.max(1) as i64)
        .bind(ms(job.run_after))
        .bind(ms(now))
        .bind(job.unless_succeeded_after.map(ms).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await;
        match inserted {
            Ok(Some(row)) => Ok(Some(job_from_row(&row)?)),
            Ok(None) => Ok(None),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(None),
            Err(e) => {
                Err(CatalogError::database(format_args!("scheduling a {} job of table {}", job.kind, job.table), e))
            }
        }
    }

    async fn claim(&self, owner: &str, lease_until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<Job>> {
        // Expired leases on a last attempt, and expired cancelled jobs, end first.
        sqlx::query(
            "UPDATE sediment_jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'failed' END, \
             finished_at = $1, lease_expires_at = NULL, \
             error = CASE WHEN cancel_requested = 1 THEN error ELSE 'the lease of its last attempt expired: the daemon running it stopped heartbeating' END \
             WHERE state = 'running' AND lease_expires_at < $1 AND (attempt >= max_attempts OR cancel_requested = 1)",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(|e| CatalogError::database("ending jobs whose lease expired", e))?;
        let statement = match self.backend {
            Backend::Postgres => sql!(
                "UPDATE sediment_jobs SET state = 'running', attempt = attempt + 1, lease_owner = $1, \
                 lease_expires_at = $2, taken_over = CASE WHEN state = 'running' THEN 1 ELSE 0 END, started_at = $3 \
                 WHERE id = (SELECT id FROM sediment_jobs WHERE cancel_requested = 0 AND attempt < max_attempts \
                 AND ((state = 'scheduled' AND run_after <= $3) OR (state = 'running' AND lease_expires_at < $3)) \
                 ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING ",
                JOB_COLUMNS
            ),
            Backend::Sqlite => sql!(
                "UPDATE sediment_jobs SET state = 'running', attempt = attempt + 1, lease_owner = $1, \
                 lease_expires_at = $2, taken_over = CASE WHEN state = 'running' THEN 1 ELSE 0 END, started_at = $3 \
                 WHERE id = (SELECT id FROM sediment_jobs WHERE cancel_requested = 0 AND attempt < max_attempts \
                 AND ((state = 'scheduled' AND run_after <= $3) OR (state = 'running' AND lease_expires_at < $3)) \
                 ORDER BY run_after, id LIMIT 1) RETURNING ",
                JOB_COLUMNS
            ),
        };
        let row = sqlx::query(statement)
            .bind(owner)
            .bind(ms(lease_until))
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CatalogError::database("claiming a job", e))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn heartbeat(&self, id: i64, owner: &str, lease_until: DateTime<Utc>, _now: DateTime<Utc>) -> Result<Lease> {
        let row = sqlx::query(
            "UPDATE sediment_jobs SET lease_expires_at = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running' \
             RETURNING cancel_requested",
        )
        .bind(id)
        .bind(owner)
        .bind(ms(lease_until))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| CatalogError::database(format_args!("renewing the lease of job {id}"), e))?;
        Ok(match row {
            None => Lease::Lost,
            Some(row) if get::<i64>(&row, "cancel_requested")? != 0 => Lease::CancelRequested,
            Some(_) => Lease::Held,
        })
    }

    async fn finish(&self, id: i64, owner: &str, outcome: JobOutcome, now: DateTime<Utc>) -> Result<Job> {
        let fenced = " WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING ";
        let query = match &outcome {
            JobOutcome::Succeeded { report } => sqlx::query(sql!(
                "UPDATE sediment_jobs SET state = 'succeeded', report = $3, error = NULL, finished_at = $4, \
                 lease_expires_at = NULL",
                fenced,
                JOB_COLUMNS
            ))
            .bind(id)
            .bind(owner)
            .bind(Some(report.to_string()))
            .bind(ms(now)),
            JobOutcome::Failed { error, report, retry_at } => sqlx::query(sql!(
                "UPDATE sediment_jobs SET \
                 state = CASE WHEN attempt < max_attempts AND cancel_requested = 0 AND $6 >= 0 THEN 'scheduled' ELSE 'failed' END, \
                 finished_at = CASE WHEN attempt < max_attempts AND cancel_requested = 0 AND $6 >= 0 THEN NULL ELSE $4 END, \
                 run_after = CASE WHEN attempt < max_attempts AND cancel_requested = 0 AND $6 >= 0 THEN $6 ELSE run_after END, \
                 error = $5, report = $3, lease_expires_at = NULL",
                fenced,
                JOB_COLUMNS
            ))
            .bind(id)
            .bind(owner)
            .bind(report.as_ref().map(|r| r.to_string()))
            .bind(ms(now))
            .bind(error.clone())
            .bind((*retry_at).map(ms).unwrap_or(-1)),
            JobOutcome::Cancelled { report } => sqlx::query(sql!(
                "UPDATE sediment_jobs SET state = 'cancelled', report = $3, finished_at = $4, lease_expires_at = NULL",
                fenced,
                JOB_COLUMNS
            ))
            .bind(id)
            .bind(owner)
            .bind(report.as_ref().map(|r| r.to_string()))
            .bind(ms(now)),
            JobOutcome::GivenBack => sqlx::query(sql!(
                "UPDATE sediment_jobs SET state = 'scheduled', attempt = attempt - 1, run_after = $3, \
                 lease_owner = NULL, lease_expires_at = NULL, taken_over = 0",
                fenced,
                JOB_COLUMNS
            ))
            .bind(id)
            .bind(owner)
            .bind(ms(now)),
        };
        let row = query
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CatalogError::database(format_args!("recording the end of job {id}"), e))?;
        match row {
            Some(row) => job_from_row(&row),
            None => {
                let job = self.job(id).await?;
                Err(CatalogError::conflict(format!(
                    "job {id}: its lease is not held by {owner} any more (state {}, lease owner {})",
                    job.state,
                    job.lease_owner.as_deref().unwrap_or("none")
                )))
            }
        }
    }

    async fn cancel(&self, id: i64, now: DateTime<Utc>) -> Result<Job> {
        let row = sqlx::query(sql!(
            "UPDATE sediment_jobs SET \
             cancel_requested = 1, \
             finished_at = CASE WHEN state = 'scheduled' THEN $2 ELSE finished_at END, \
             state = CASE WHEN state = 'scheduled' THEN 'cancelled' ELSE state END \
             WHERE id = $1 AND state IN ('scheduled', 'running') RETURNING ",
            JOB_COLUMNS
        ))
        .bind(id)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| CatalogError::database(format_args!("cancelling job {id}"), e))?;
        match row {
            Some(row) => job_from_row(&row),
            None => {
                let job = self.job(id).await?;
                Err(CatalogError::conflict(format!("job {id} has {} already: nothing to cancel", job.state)))
            }
        }
    }

    async fn job(&self, id: i64) -> Result<Job> {
        let row = sqlx::query(sql!("SELECT ", JOB_COLUMNS, " FROM sediment_jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CatalogError::database(format_args!("reading job {id}"), e))?;
        match row {
            Some(row) => job_from_row(&row),
            None => Err(CatalogError::not_found(format!("no job {id} in the catalog"))),
        }
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE) as i64;
        let rows = sqlx::query(sql!(
            "SELECT ",
            JOB_COLUMNS,
            " FROM sediment_jobs WHERE ($1 = '' OR table_name = $1) AND ($2 = '' OR kind = $2) \
             AND ($3 = '' OR state = $3) AND id < $4 ORDER BY id DESC LIMIT $5"
        ))
        .bind(filter.table.clone().unwrap_or_default())
        .bind(filter.kind.map(|k| k.as_str()).unwrap_or_default())
        .bind(filter.state.map(|s| s.as_str()).unwrap_or_default())
        .bind(filter.before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| CatalogError::database("listing jobs", e))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn last_finished(&self, table: &str, kind: JobKind, state: Option<JobState>) -> Result<Option<Job>> {
        let row = sqlx::query(sql!(
            "SELECT ",
            JOB_COLUMNS,
            " FROM sediment_jobs WHERE table_name = $1 AND kind = $2 AND finished_at IS NOT NULL \
             AND ($3 = '' OR state = $3) ORDER BY finished_at DESC, id DESC LIMIT 1"
        ))
        .bind(table)
        .bind(kind.as_str())
        .bind(state.map(|s| s.as_str()).unwrap_or_default())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| CatalogError::database(format_args!("reading the last {kind} job of table {table}"), e))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn count_active(&self) -> Result<(u64, u64)> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM sediment_jobs WHERE state IN ('scheduled', 'running') GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| CatalogError::database("counting active jobs", e))?;
        let (mut scheduled, mut running) = (0, 0);
        for row in rows {
            let n = get::<i64>(&row, "n")?.max(0) as u64;
            match get::<String>(&row, "state")?.as_str() {
                "scheduled" => scheduled = n,
                _ => running = n,
            }
        }
        Ok((scheduled, running))
    }

    async fn prune_jobs(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sediment_jobs WHERE finished_at IS NOT NULL AND finished_at < $1")
            .bind(ms(before))
            .execute(&self.pool)
            .await
            .map_err(|e| CatalogError::database("pruning job history", e))?;
        Ok(done.rows_affected())
    }

    async fn replace_tags(&self, table: &str, tags: Vec<TagEntry>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| CatalogError::database("starting a transaction", e))?;
        sqlx::query("DELETE FROM sediment_tags WHERE table_name = $1")
            .bind(table)
            .execute(&mut *tx)
            .await
            .map_err(|e| CatalogError::database(format_args!("replacing the tags of table {table}"), e))?;
        for tag in &tags {
            sqlx::query(
                "INSERT INTO sediment_tags (table_name, name, version, created_at, expires_at, description) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(table)
            .bind(&tag.name)
            .bind(tag.version.min(i64::MAX as u64) as i64)
            .bind(tag.created_at.map(ms))
            .bind(tag.expires_at.map(ms))
            .bind(&tag.description)
            .execute(&mut *tx)
            .await
            .map_err(|e| CatalogError::database(format_args!("mirroring tag {} of table {table}", tag.name), e))?;
        }
        tx.commit().await.map_err(|e| CatalogError::database(format_args!("replacing the tags of table {table}"), e))
    }

    async fn tags(&self, table: &str) -> Result<Vec<TagEntry>> {
        let rows = sqlx::query(
            "SELECT name, version, created_at, expires_at, description FROM sediment_tags \
             WHERE table_name = $1 ORDER BY name",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| CatalogError::database(format_args!("reading the tags of table {table}"), e))?;
        rows.iter()
            .map(|row| {
                Ok(TagEntry {
                    table: table.to_string(),
                    name: get(row, "name")?,
                    version: get::<i64>(row, "version")?.max(0) as u64,
                    created_at: get::<Option<i64>>(row, "created_at")?.map(time),
                    expires_at: get::<Option<i64>>(row, "expires_at")?.map(time),
                    description: get(row, "description")?,
                })
            })
            .collect()
    }
}
