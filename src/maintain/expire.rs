//! Partition retention: removing data older than a horizon (`sediment expire`).
//!
//! The horizon is now (from the injected clock) less `older_than`. The column is the
//! one given, else the partition column partitions age by, by the rule tiering uses
//! too: the first of type `date` or `timestamp`, else the first string column whose
//! every value is an ISO date (`2024-05-01`) or timestamp. On a
//! partition column whole partitions before the horizon go in one metadata-only
//! commit (their files removed, nothing read); on any other column it is a delete by
//! predicate (files pruned by their statistics, deletion vectors where the table has
//! them). Either way the files stay in storage until vacuum reclaims them, so time
//! travel inside the retention still sees the expired rows.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use deltalake::arrow::datatypes::DataType;
use serde::Serialize;
use tracing::instrument;

use crate::change::ChangeReport;
use crate::error::{Error, Result};
use crate::table::Table;
use crate::table::clock::{self, Clock};

/// How to expire. The clock is injected with [`ExpireOptions::with_clock`].
#[derive(Debug, Clone)]
pub struct ExpireOptions {
    pub older_than: Duration,
    /// The column to age rows by; `None`: the first date-like partition column.
    pub column: Option<String>,
    pub dry_run: bool,
    clock: Arc<dyn Clock>,
}

impl ExpireOptions {
    pub fn older_than(older_than: Duration) -> Self {
        Self { older_than, column: None, dry_run: false, clock: clock::system() }
    }
    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// What an expiry did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    pub column: String,
    /// Whether whole partitions went (a metadata-only commit).
    pub partition_column: bool,
    pub horizon: DateTime<Utc>,
    /// The delete it ran (or would run).
    pub predicate: String,
    pub dry_run: bool,
    /// Files the predicate selects (a dry run) or that were removed or rewritten.
    pub files: usize,
    /// Rows removed (a dry run: rows in the selected files, from their statistics).
    pub rows: u64,
    /// Partitions that went whole (their values), on a partition column.
    pub partitions: Vec<String>,
    /// The delete's own report (`None` in a dry run).
    pub delete: Option<ChangeReport>,
}

impl Table {
    /// Remove the rows older than `options.older_than` (see the [module docs](crate::maintain::expire)).
    #[instrument(skip_all, fields(table = %self.uri(), dry_run = options.dry_run))]
    pub async fn expire(&mut self, options: ExpireOptions) -> Result<ExpireReport> {
        if options.older_than < Duration::zero() {
            return Err(Error::invalid(format!("expire horizon must not be negative, got {}", options.older_than)));
        }
        self.refresh().await?;
        let partitions = self.partition_columns()?;
        let schema = self.arrow_schema()?;
        let column = match &options.column {
            Some(c) => {
                if schema.field_with_name(c).is_err() {
                    return Err(Error::invalid(format!("column `{c}` is not in table {}", self.uri())));
                }
                c.clone()
            }
            None => self.date_partition_column(&partitions)?,
        };
        let field = schema.field_with_name(&column).map_err(|e| Error::internal(e.to_string()))?;
        let horizon = options.clock.now() - options.older_than;
        let quoted = format!("\"{}\"", column.replace('"', "\"\""));
        let predicate = match field.data_type() {
            DataType::Date32 | DataType::Date64 => format!("{quoted} < DATE '{}'", horizon.date_naive()),
            DataType::Timestamp(_, Some(_)) => {
                format!("{quoted} < TIMESTAMP '{}'", horizon.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
            }
            DataType::Timestamp(_, None) => {
                format!("{quoted} < TIMESTAMP '{}'", horizon.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f"))
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                format!("{quoted} < '{}'", horizon.date_naive())
            }
            other => {
                return Err(Error::invalid(format!(
                    "cannot expire table {} by column `{column}` of type {other}: use a date, timestamp or ISO-date string column",
                    self.uri()
                )));
            }
        };
        let partition_column = partitions.contains(&column);
        // On a partition column pruning is exact: the files left are the expired partitions'.
        let matched = self.plan_scan(Some(&predicate))?.files;
        let mut values: Vec<String> =
            matched.iter().filter_map(|a| a.partition_values.get(&column).cloned().flatten()).collect();
        values.sort();
        values.dedup();
        let mut report = ExpireReport {
            column,
            partition_column,
            horizon,
            predicate: predicate.clone(),
            dry_run: options.dry_run,
            files: matched.len(),
            rows: matched.iter().filter_map(crate::table::commit::stored_rows).sum(),
            partitions: if partition_column { values } else { Vec::new() },
            delete: None,
        };
        if options.dry_run || matched.is_empty() {
            return Ok(report);
        }
        let deleted = self.delete(&predicate).await?;
        report.files = deleted.files_removed + deleted.files_rewritten + deleted.files_marked;
        report.rows = deleted.rows_deleted;
        report.delete = Some(deleted);
        Ok(report)
    }

    /// The partition column partitions age by (the rule tiering uses:
    /// [`Table::age_by`]), or an error asking for `--column`.
    fn date_partition_column(&self, partitions: &[String]) -> Result<String> {
        if let Ok(crate::maintain::tiering::AgeBy::Partition(column)) = self.age_by(None, &self.tier_files()?) {
            return Ok(column);
        }
        Err(Error::invalid(format!(
            "table {} has no date, timestamp or ISO-date partition column (partition columns: {}): name the column to age rows by with --column",
            self.uri(),
            if partitions.is_empty() { "none".to_string() } else { partitions.join(", ") }
        )))
    }
}
