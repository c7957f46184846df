//! Checking a run's rows against its rules (see [`crate::pipeline::rules`]): which
//! rows continue, which go to the quarantine, and each rule's result.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::kernels::boolean::{not, or};
use deltalake::arrow::compute::{filter_record_batch, prep_null_mask_filter};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::pipeline::increment::VERSION_COLUMN;
use crate::pipeline::rules::{RuleAction, RuleCheck, RuleResult, RuleSpec, failed, quote, sample_rows};
pub(crate) use crate::read::predicate::physical_expr;

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

/// The row rules (all but `unique`, `freshness`, `row_count`), compiled against the
/// rows' schema and evaluated batch by batch: no query plan, no copy of the rows.
pub(crate) struct RowRules<'a> {
    rules: Vec<(&'a RuleSpec, Arc<dyn PhysicalExpr>)>,
}

impl<'a> RowRules<'a> {
    /// Compile the row rules of `rules` against `schema` (the columns the target gets).
    pub(crate) fn compile(rules: &'a [RuleSpec], schema: &SchemaRef, pipeline: &str) -> Result<Self> {
        let row_rules: Vec<(&RuleSpec, String)> =
            rules.iter().filter_map(|r| r.failing_condition().map(|c| (r, c))).collect();
        if row_rules.is_empty() {
            return Ok(Self { rules: Vec::new() });
        }
        // A session (DataFusion's function registry, some MiB) only for rules that need
        // SQL: `not_null` compiles directly.
        let mut ctx: Option<SessionContext> = None;
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let mut compiled = Vec::new();
        for (rule, condition) in row_rules {
            let invalid = |e: &dyn std::fmt::Display| {
                Error::invalid(format!("pipeline {pipeline}: rule {} does not fit the rows: {e}", rule.name()))
            };
            let physical = match (rule.check, rule.column.as_deref()) {
                (RuleCheck::NotNull, Some(column)) => {
                    use deltalake::datafusion::common::Column;
                    use deltalake::datafusion::execution::context::ExecutionProps;
                    use deltalake::datafusion::logical_expr::Expr;
                    let expr = Expr::IsNull(Box::new(Expr::Column(Column::new_unqualified(column))));
                    deltalake::datafusion::physical_expr::create_physical_expr(
                        &expr,
                        &df_schema,
                        &ExecutionProps::new(),
                        &Default::default(),
                    )
                    .map_err(|e| invalid(&e))?
                }
                _ => physical_expr(ctx.get_or_insert_with(SessionContext::new), &condition, &df_schema)
                    .map_err(|e| invalid(&e))?,
            };
            match physical.data_type(schema.as_ref()) {
                Ok(DataType::Boolean) => {}
                Ok(other) => return Err(invalid(&format!("its condition is of type {other}, expected a boolean"))),
                Err(e) => return Err(invalid(&e)),
            }
            compiled.push((rule, physical));
        }
        Ok(Self { rules: compiled })
    }

    /// For each rule, whether each row of `batch` breaks it.
    fn failing(&self, batch: &RecordBatch, pipeline: &str) -> Result<Vec<BooleanArray>> {
        self.rules
            .iter()
            .map(|(rule, physical)| {
                let value = physical.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| {
                    Error::invalid(format!("pipeline {pipeline}: rule {} cannot be evaluated: {e}", rule.name()))
                })?;
                let mask = as_bool(value.as_ref())?;
                // A null (which the conditions do not give) breaks nothing.
                Ok(if mask.null_count() > 0 { prep_null_mask_filter(&mask) } else { mask })
            })
            .collect()
    }
}

/// Apply the compiled row rules to `batches`. A `fail` rule with failing rows is an
/// error naming it, with a sample. `version_column`: the rows' source commit, which
/// the quarantine records.
pub(crate) fn check_rows(
    batches: Vec<RecordBatch>,
    rules: &RowRules<'_>,
    version_column: Option<&str>,
    who: &RunIdentity<'_>,
) -> Result<Checked> {
    if rules.rules.is_empty() {
        return Ok(Checked { kept: batches, quarantined: Vec::new(), results: Vec::new() });
    }
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let masks: Vec<Vec<BooleanArray>> =
        batches.iter().map(|b| rules.failing(b, who.pipeline)).collect::<Result<_>>()?;
    let mut results = Vec::new();
    for (i, (rule, _)) in rules.rules.iter().enumerate() {
        let failing: u64 = masks.iter().map(|m| m[i].true_count() as u64).sum();
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
            let sample: Vec<RecordBatch> = batches
                .iter()
                .zip(&masks)
                .map(|(batch, m)| {
                    filter_record_batch(&without_internal(batch, version_column)?, &m[i]).map_err(Error::from)
                })
                .collect::<Result<_>>()?;
            return Err(failed(who.pipeline, &result, &sample_rows(&sample, SAMPLE_ROWS)));
        }
        results.push(result);
    }
    let quarantine_rules: Vec<usize> =
        (0..rules.rules.len()).filter(|i| rules.rules[*i].0.action == RuleAction::Quarantine).collect();
    if quarantine_rules.is_empty() {
        return Ok(Checked { kept: batches, quarantined: Vec::new(), results });
    }
    let mut kept = Vec::new();
    let mut quarantined = Vec::new();
    for (batch, masks) in batches.into_iter().zip(masks) {
        let mut any = masks[quarantine_rules[0]].clone();
        for i in &quarantine_rules[1..] {
            any = or(&any, &masks[*i])?;
        }
        if any.true_count() == 0 {
            kept.push(batch);
            continue;
        }
        kept.push(filter_record_batch(&batch, &not(&any)?)?);
        let (mut rule, mut reason) = (Vec::new(), Vec::new());
        for r in (0..batch.num_rows()).filter(|r| any.value(*r)) {
            let broken: Vec<&RuleSpec> =
                quarantine_rules.iter().filter(|i| masks[**i].value(r)).map(|i| rules.rules[*i].0).collect();
            rule.push(broken[0].name());
            reason.push(broken.iter().map(|b| describe(b)).collect::<Vec<_>>().join("; "));
        }
        let failing = filter_record_batch(&batch, &any)?;
        quarantined.push(quarantine_batch(&failing, version_column, rule, reason, who)?);
    }
    Ok(Checked { kept, quarantined, results })
}

/// The set rules and `unique`, on the rows a run would write (`rows_written`: none
/// when the run has no rows; only these two checks read them, in their own session). `trailing` is the rows read by the pipeline's
/// last runs, newest first. A `fail` rule that breaks is an error.
pub(crate) async fn check_set(
    rows_written: &[RecordBatch],
    rows: u64,
    rules: &[RuleSpec],
    trailing: &[u64],
    who: &RunIdentity<'_>,
) -> Result<Vec<RuleResult>> {
    let mut results = Vec::new();
    let reads_rows = |r: &RuleSpec| matches!(r.check, RuleCheck::Unique | RuleCheck::Freshness);
    let non_empty: Vec<RecordBatch> = rows_written.iter().filter(|b| b.num_rows() > 0).cloned().collect();
    // A session only when a rule reads the rows.
    let session = (!non_empty.is_empty() && rules.iter().any(reads_rows))
        .then(|| {
            let config = deltalake::datafusion::prelude::SessionConfig::new().with_target_partitions(1);
            let ctx = SessionContext::new_with_config(config);
            register(&ctx, "__sediment_rows", non_empty).map(|_| ctx)
        })
        .transpose()?;
    let rows_table = session.as_ref().map(|_| "__sediment_rows");
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
                result.rows_failed =
                    scalar_i64(session.as_ref().expect("made for this rule"), &sql, who).await?.unwrap_or(0) as u64;
                if result.rows_failed > 0 {
                    result.detail =
                        Some(format!("{} rows share a value of {column} with another row", result.rows_failed));
                }
            }
            (RuleCheck::Freshness, Some(table)) => {
                let sql = format!("SELECT to_unixtime(MAX({column})) FROM {}", quote(table));
                let newest = scalar_i64(session.as_ref().expect("made for this rule"), &sql, who).await?;
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
    version_column: Option<&str>,
    rule: Vec<String>,
    reason: Vec<String>,
    who: &RunIdentity<'_>,
) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let source_version = version_column
        .and_then(|c| rows.column_by_name(c))
        .map(|c| deltalake::arrow::compute::cast(c, &DataType::Int64))
        .transpose()?
        .unwrap_or_else(|| Arc::new(Int64Array::from(vec![None::<i64>; n])));
    let data = without_internal(rows, version_column)?;
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

/// `rows` without the run's own columns (the version column among them).
fn without_internal(rows: &RecordBatch, version_column: Option<&str>) -> Result<RecordBatch> {
    let schema = rows.schema();
    let keep: Vec<usize> = (0..rows.num_columns())
        .filter(|i| {
            let name = schema.field(*i).name().as_str();
            !name.starts_with("__sediment")
                && Some(name) != version_column
                && name != VERSION_COLUMN
                && name != "_change_type"
        })
        .collect();
    Ok(rows.project(&keep)?)
}
