//! Checking a run's rows against its rules (see [`crate::pipeline::rules`]): which
//! rows continue, which go to the quarantine, and each rule's result.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::pipeline::increment::VERSION_COLUMN;
use crate::pipeline::rules::{RuleAction, RuleCheck, RuleResult, RuleSpec, count_true, failed, quote, sample_rows};

/// Failing rows shown in a `fail` rule's error.
const SAMPLE_ROWS: usize = 5;

/// The columns a quarantined row carries besides its own.
pub const QUARANTINE_COLUMNS: [&str; 7] =
    ["_rule", "_reason", "_pipeline", "_run_id", "_source_table", "_source_version", "_quarantined_at"];

/// The rows that passed, the rows to quarantine (with [`QUARANTINE_COLUMNS`]), and
/// the results of the row rules.
pub(crate) struct Checked {
    pub kept: Vec<RecordBatch>,
    pub quarantined: Vec<RecordBatch>,
    pub results: Vec<RuleResult>,
}

/// Who the quarantined rows came from.
pub(crate) struct RunIdentity<'a> {
    pub pipeline: &'a str,
    pub run_id: &'a str,
    pub source_table: &'a str,
    pub now: DateTime<Utc>,
}

/// Register `batches` as table `name` in `ctx`.
pub(crate) fn register(ctx: &SessionContext, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Err(Error::internal("no batches to register"));
    };
    let table = MemTable::try_new(schema, vec![batches])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// Apply the row rules (all but `unique`, `freshness`, `row_count`) to table (or
/// view) `input` of `ctx`, in one pass over it. A `fail` rule with failing rows is an error naming it, with a sample.
pub(crate) async fn check_rows(
    ctx: &SessionContext,
    input: &str,
    rules: &[RuleSpec],
    who: &RunIdentity<'_>,
) -> Result<Checked> {
    let row_rules: Vec<(&RuleSpec, String)> =
        rules.iter().filter_map(|r| r.failing_condition().map(|c| (r, c))).collect();
    let mut select = vec!["*".to_string()];
    for (i, (_, condition)) in row_rules.iter().enumerate() {
        select.push(format!("{condition} AS \"__rule_{i}\""));
    }
    let sql = format!("SELECT {} FROM {}", select.join(", "), quote(input));
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| Error::invalid(format!("pipeline {}: a rule does not fit the rows: {e}", who.pipeline)))?
        .collect()
        .await
        .map_err(|e| Error::invalid(format!("pipeline {}: a rule cannot be evaluated: {e}", who.pipeline)))?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let data_columns = batches.first().map(|b| b.num_columns() - row_rules.len()).unwrap_or(0);
    let mut results = Vec::new();
    for (i, (rule, _)) in row_rules.iter().enumerate() {
        let mut failing = 0;
        for batch in &batches {
            failing += count_true(batch.column(data_columns + i).as_ref())?;
        }
        let result = RuleResult {
            rule: rule.name(),
            check: rule.check_name(),
            action: action_name(rule.action),
            rows_checked: rows,
            rows_failed: failing,
            passed: failing == 0,
            detail: None,
        };
        if failing > 0 && rule.action == RuleAction::Fail {
            let mut sample = Vec::new();
            for batch in &batches {
                let mask = as_bool(batch.column(data_columns + i).as_ref())?;
                let rows = filter_record_batch(batch, &mask)?;
                sample.push(rows.project(&(0..data_columns).collect::<Vec<_>>())?);
            }
            return Err(failed(who.pipeline, &result, &sample_rows(&sample, SAMPLE_ROWS)));
        }
        results.push(result);
    }
    let quarantine_rules: Vec<usize> =
        (0..row_rules.len()).filter(|i| row_rules[*i].0.action == RuleAction::Quarantine).collect();
    let mut kept = Vec::new();
    let mut quarantined = Vec::new();
    for batch in &batches {
        let data = batch.project(&(0..data_columns).collect::<Vec<_>>())?;
        if quarantine_rules.is_empty() {
            kept.push(data);
            continue;
        }
        let masks: Vec<BooleanArray> =
            quarantine_rules.iter().map(|i| as_bool(batch.column(data_columns + i).as_ref())).collect::<Result<_>>()?;
        let any: BooleanArray = (0..batch.num_rows()).map(|r| Some(masks.iter().any(|m| m.value(r)))).collect();
        let none: BooleanArray = any.iter().map(|v| v.map(|b| !b)).collect();
        kept.push(filter_record_batch(&data, &none)?);
        if any.true_count() == 0 {
            continue;
        }
        let (mut rule, mut reason) = (Vec::new(), Vec::new());
        for r in 0..batch.num_rows() {
            if !any.value(r) {
                continue;
            }
            let broken: Vec<&RuleSpec> =
                quarantine_rules.iter().zip(&masks).filter(|(_, m)| m.value(r)).map(|(i, _)| row_rules[*i].0).collect();
            rule.push(broken[0].name());
            reason.push(broken.iter().map(|b| describe(b)).collect::<Vec<_>>().join("; "));
        }
        let failing = filter_record_batch(&data, &any)?;
        quarantined.push(quarantine_batch(&failing, rule, reason, who)?);
    }
    Ok(Checked { kept, quarantined, results })
}

/// The set rules and `unique`, on the rows a run would write (table `rows` of `ctx`;
/// `None` when the run has no rows). `trailing` is the rows read by the pipeline's
/// last runs, newest first. A `fail` rule that breaks is an error.
pub(crate) async fn check_set(
    ctx: &SessionContext,
    rows_table: Option<&str>,
    rows: u64,
    rules: &[RuleSpec],
    trailing: &[u64],
    who: &RunIdentity<'_>,
) -> Result<Vec<RuleResult>> {
    let mut results = Vec::new();
    for rule in rules.iter().filter(|r| r.failing_condition().is_none()) {
        let mut result = RuleResult {
            rule: rule.name(),
            check: rule.check_name(),
            action: action_name(rule.action),
            rows_checked: rows,
            ..Default::default()
        };
        let column = rule.column.as_deref().map(quote).unwrap_or_default();
        match (rule.check, rows_table) {
            (RuleCheck::Unique, Some(table)) => {
                let sql = format!(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n FROM {} WHERE {column} IS NOT NULL GROUP BY {column} HAVING COUNT(*) > 1)",
                    quote(table)
                );
                result.rows_failed = scalar_i64(ctx, &sql, who).await?.unwrap_or(0) as u64;
                if result.rows_failed > 0 {
                    result.detail =
                        Some(format!("{} rows share a value of {column} with another row", result.rows_failed));
                }
            }
            (RuleCheck::Freshness, Some(table)) => {
                let sql = format!("SELECT to_unixtime(MAX({column})) FROM {}", quote(table));
                let newest = scalar_i64(ctx, &sql, who).await?;
                let max_age = rule.max_age.unwrap_or_default();
                let limit = who.now.timestamp() - max_age.as_secs() as i64;
                if newest.is_none_or(|n| n < limit) {
                    result.rows_failed = 1;
                    result.detail = Some(match newest {
                        Some(n) => format!(
                            "the newest {column} is {} old, more than {}",
                            humantime_serde::re::humantime::format_duration(std::time::Duration::from_secs(
                                (who.now.timestamp() - n).max(0) as u64
                            )),
                            humantime_serde::re::humantime::format_duration(max_age)
                        ),
                        None => format!("no {column} values"),
                    });
                }
            }
            (RuleCheck::RowCount, _) => {
                let window: Vec<u64> = trailing.iter().take(rule.trailing_runs).copied().collect();
                if !window.is_empty() {
                    let mean = window.iter().sum::<u64>() as f64 / window.len() as f64;
                    let ratio = rows as f64 / mean.max(1.0);
                    let low = rule.min_ratio.is_some_and(|m| ratio < m);
                    let high = rule.max_ratio.is_some_and(|m| ratio > m);
                    if low || high {
                        result.rows_failed = 1;
                        result.detail = Some(format!(
                            "{rows} rows read, {ratio:.2} times the mean {mean:.0} of the last {} runs",
                            window.len()
                        ));
                    }
                }
            }
            _ => {}
        }
        result.passed = result.rows_failed == 0;
        if !result.passed && rule.action == RuleAction::Fail {
            return Err(failed(who.pipeline, &result, "(a rule on the run as a whole: no single failing row)"));
        }
        results.push(result);
    }
    Ok(results)
}

async fn scalar_i64(ctx: &SessionContext, sql: &str, who: &RunIdentity<'_>) -> Result<Option<i64>> {
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| Error::invalid(format!("pipeline {}: a rule does not fit the rows: {e}", who.pipeline)))?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let column = deltalake::arrow::compute::cast(batch.column(0), &DataType::Int64)?;
    let column = column.as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::internal("int64 scalar"))?;
    Ok(column.is_valid(0).then(|| column.value(0)))
}

fn as_bool(column: &dyn Array) -> Result<BooleanArray> {
    column
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| Error::internal("a rule column is not boolean"))
}

fn action_name(action: RuleAction) -> String {
    match action {
        RuleAction::Warn => "warn",
        RuleAction::Quarantine => "quarantine",
        RuleAction::Fail => "fail",
    }
    .to_string()
}

/// Why a row breaks `rule`, in words.
fn describe(rule: &RuleSpec) -> String {
    let column = rule.column.as_deref().unwrap_or("");
    let what = match rule.check {
        RuleCheck::NotNull => format!("{column} is null"),
        RuleCheck::Range => format!(
            "{column} is outside [{}, {}]",
            rule.min.map_or("-inf".into(), |v| v.to_string()),
            rule.max.map_or("inf".into(), |v| v.to_string())
        ),
        RuleCheck::AcceptedValues => format!("{column} is not one of the accepted values"),
        RuleCheck::Regex => format!("{column} does not match {:?}", rule.pattern.as_deref().unwrap_or("")),
        RuleCheck::Expression => format!("not ({})", rule.expression.as_deref().unwrap_or("")),
        _ => rule.check_name(),
    };
    format!("{}: {what}", rule.name())
}

/// `rows` (their data columns) with the quarantine's columns.
fn quarantine_batch(
    rows: &RecordBatch,
    rule: Vec<String>,
    reason: Vec<String>,
    who: &RunIdentity<'_>,
) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let source_version = rows
        .column_by_name(VERSION_COLUMN)
        .map(|c| deltalake::arrow::compute::cast(c, &DataType::Int64))
        .transpose()?
        .unwrap_or_else(|| Arc::new(Int64Array::from(vec![None::<i64>; n])));
    let keep: Vec<usize> = (0..rows.num_columns())
        .filter(|i| {
            let name = rows.schema().field(*i).name().clone();
            !name.starts_with("__sediment") && name != VERSION_COLUMN && name != "_change_type"
        })
        .collect();
    let data = rows.project(&keep)?;
    let mut fields: Vec<Field> =
        data.schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let mut columns = data.columns().to_vec();
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    fields.extend([text("_rule"), text("_reason"), text("_pipeline"), text("_run_id"), text("_source_table")]);
    columns.push(Arc::new(StringArray::from(rule)));
    columns.push(Arc::new(StringArray::from(reason)));
    columns.push(Arc::new(StringArray::from(vec![who.pipeline; n])));
    columns.push(Arc::new(StringArray::from(vec![who.run_id; n])));
    columns.push(Arc::new(StringArray::from(vec![who.source_table; n])));
    fields.push(Field::new("_source_version", DataType::Int64, true));
    columns.push(source_version);
    fields.push(Field::new("_quarantined_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true));
    columns.push(Arc::new(TimestampMicrosecondArray::from(vec![who.now.timestamp_micros(); n]).with_timezone("UTC")));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
