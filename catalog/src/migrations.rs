//! The catalog's schema, one list of migrations per backend (sqlx's migrator records
//! which ran in `_sqlx_migrations` and refuses a database whose applied migrations
//! were edited). Times are milliseconds since the epoch (BIGINT) and JSON is text, so
//! both backends read the same columns the same way. Add a migration; never edit one.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

const TABLES: &str = "
CREATE TABLE sediment_tables (
    name TEXT PRIMARY KEY,
    layer TEXT NOT NULL,
    location TEXT NOT NULL UNIQUE,
    storage_profile TEXT,
    owner TEXT,
    description TEXT,
    policy TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE sediment_tags (
    table_name TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT,
    expires_at BIGINT,
    description TEXT,
    PRIMARY KEY (table_name, name)
);
";

const JOBS_COLUMNS: &str = "
    table_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    options TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    run_after BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    taken_over BIGINT NOT NULL,
    cancel_requested BIGINT NOT NULL,
    error TEXT,
    report TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
";

const JOBS_INDEXES: &str = "
CREATE UNIQUE INDEX sediment_jobs_one_active ON sediment_jobs (table_name, kind)
    WHERE state IN ('scheduled', 'running');
CREATE INDEX sediment_jobs_due ON sediment_jobs (state, run_after);
CREATE INDEX sediment_jobs_table ON sediment_jobs (table_name, kind, finished_at);
";

fn migration(version: i64, description: &'static str, sql: String) -> Migration {
    Migration::new(
        version,
        Cow::Borrowed(description),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(sql).into_sql_str(),
        false,
    )
}

/// The migrations of SQLite.
pub(crate) fn sqlite() -> Migrator {
    Migrator::with_migrations(vec![migration(
        1,
        "tables, tags and jobs",
        format!(
            "{TABLES}\nCREATE TABLE sediment_jobs (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,{JOBS_COLUMNS});\n{JOBS_INDEXES}"
        ),
    )])
}

/// The migrations of PostgreSQL.
pub(crate) fn postgres() -> Migrator {
    Migrator::with_migrations(vec![migration(
        1,
        "tables, tags and jobs",
        format!(
            "{TABLES}\nCREATE TABLE sediment_jobs (\n    id BIGSERIAL PRIMARY KEY,{JOBS_COLUMNS});\n{JOBS_INDEXES}"
        ),
    )])
}
