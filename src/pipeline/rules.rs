//! Data-quality rules of a pipeline, and what a run does with rows that break them.
//!
//! Row rules (`not_null`, `range`, `accepted_values`, `regex`, `expression`) are SQL
//! conditions evaluated on each row a run would write (after projection, before
//! deduplication); a null passes every rule but `not_null`, as in SQL `CHECK`
//! constraints and dbt's tests. `unique` fails the rows whose column value appears
//! more than once among the run's rows (after deduplication: an upsert's key is
//! unique by construction, so it is for other columns). Set rules (`freshness`,
//! `row_count`) look at the run as a whole and may only `warn` or `fail`.
//!
//! Actions: `warn` counts and reports; `quarantine` moves the failing rows to the
//! target's quarantine table; `fail` stops the run before anything is committed,
//! with the rule and a sample of failing rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
pub(crate) use crate::write::constraints::sample_rows;

/// What a broken rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Count and report.
    #[default]
    Warn,
    /// Move the failing rows to the quarantine table.
    Quarantine,
    /// Commit nothing; the run fails.
    Fail,
}

/// What a rule checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleCheck {
    NotNull,
    Unique,
    Range,
    AcceptedValues,
    Regex,
    Expression,
    Freshness,
    RowCount,
}

/// One rule, as declared (`[[pipelines.rules]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Its name in reports and the quarantine (default: check and column).
    #[serde(default)]
    pub name: Option<String>,
    pub check: RuleCheck,
    /// The column it looks at (target names); not for `expression` and `row_count`.
    #[serde(default)]
    pub column: Option<String>,
    /// `range`: the smallest and largest accepted values (either may be left out).
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// `accepted_values`.
    #[serde(default)]
    pub values: Vec<serde_json::Value>,
    /// `regex`: a regular expression the whole value must match somewhere.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `expression`: a SQL condition a good row makes true.
    #[serde(default)]
    pub expression: Option<String>,
    /// `freshness`: the newest value of `column` (a timestamp) may be at most this old.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// `row_count`: the run's rows against the mean of the last `trailing_runs` runs
    /// that read rows, within these ratios.
    #[serde(default)]
    pub min_ratio: Option<f64>,
    #[serde(default)]
    pub max_ratio: Option<f64>,
    #[serde(default = "default_trailing_runs")]
    pub trailing_runs: usize,
    #[serde(default)]
    pub action: RuleAction,
}

fn default_trailing_runs() -> usize {
    5
}

/// A rule's result in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    pub rule: String,
    pub check: String,
    pub action: String,
    /// Rows it looked at (set rules: the run's rows).
    pub rows_checked: u64,
    /// Rows that broke it (set rules: 1 when broken).
    pub rows_failed: u64,
    pub passed: bool,
    /// What was wrong, for set rules and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RuleSpec {
    /// Its name: given, else check and column (`not_null(amount)`).
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let check =
            serde_json::to_value(self.check).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        match &self.column {
            Some(column) => format!("{check}({column})"),
            None => check,
        }
    }

    /// The check's name.
    pub fn check_name(&self) -> String {
        serde_json::to_value(self.check).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }

    /// Whether it judges rows one by one (else the run as a whole).
    pub fn is_row_rule(&self) -> bool {
        !matches!(self.check, RuleCheck::Freshness | RuleCheck::RowCount)
    }

    /// Check its fields fit its kind.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let needs_column = !matches!(self.check, RuleCheck::Expression | RuleCheck::RowCount) && self.column.is_none();
        if needs_column {
            return Err(format!("{} needs a column", self.check_name()));
        }
        match self.check {
            RuleCheck::Range if self.min.is_none() && self.max.is_none() => {
                return Err("range needs min, max or both".into());
            }
            RuleCheck::AcceptedValues if self.values.is_empty() => {
                return Err("accepted_values needs values".into());
            }
            RuleCheck::AcceptedValues => {
                for v in &self.values {
                    literal(v)?;
                }
            }
            RuleCheck::Regex => {
                let pattern = self.pattern.as_deref().ok_or("regex needs a pattern")?;
                regex_syntax_ok(pattern)?;
            }
            RuleCheck::Expression => {
                let expr = self.expression.as_deref().ok_or("expression needs an expression")?;
                crate::pipeline::spec::parse_expression(expr)?;
            }
            RuleCheck::Freshness if self.max_age.is_none() => return Err("freshness needs max_age".into()),
            RuleCheck::RowCount => {
                if self.min_ratio.is_none() && self.max_ratio.is_none() {
                    return Err("row_count needs min_ratio, max_ratio or both".into());
                }
                if self.trailing_runs == 0 {
                    return Err("row_count: trailing_runs at least 1".into());
                }
            }
            _ => {}
        }
        if !self.is_row_rule() && self.action == RuleAction::Quarantine {
            return Err(format!("{} judges the run, not rows: its action is warn or fail", self.check_name()));
        }
        Ok(())
    }

    /// The columns it reads (to check against the target's when the service starts).
    pub fn columns(&self) -> Vec<&str> {
        self.column.iter().map(String::as_str).collect()
    }

    /// A row rule as a SQL condition that is true for a row that *breaks* it (never
    /// null); `None` for `unique` and set rules.
    pub fn failing_condition(&self) -> Option<String> {
        let column = self.column.as_deref().map(quote);
        let passes = match self.check {
            RuleCheck::NotNull => return Some(format!("{} IS NULL", column?)),
            RuleCheck::Range => {
                let c = column?;
                let mut parts = Vec::new();
                if let Some(min) = self.min {
                    parts.push(format!("{c} >= {min}"));
                }
                if let Some(max) = self.max {
                    parts.push(format!("{c} <= {max}"));
                }
                parts.join(" AND ")
            }
            RuleCheck::AcceptedValues => {
                let values: Vec<String> = self.values.iter().filter_map(|v| literal(v).ok()).collect();
                format!("{} IN ({})", column?, values.join(", "))
            }
            RuleCheck::Regex => {
                format!("regexp_like(CAST({} AS VARCHAR), '{}')", column?, self.pattern.as_deref()?.replace('\'', "''"))
            }
            RuleCheck::Expression => format!("({})", self.expression.as_deref()?),
            RuleCheck::Unique | RuleCheck::Freshness | RuleCheck::RowCount => return None,
        };
        Some(format!("NOT COALESCE({passes}, TRUE)"))
    }
}

/// A column name quoted for SQL.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A value as a SQL literal (strings, numbers, booleans).
fn literal(value: &serde_json::Value) -> std::result::Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(format!("'{}'", s.replace('\'', "''"))),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("accepted_values: strings, numbers or booleans, found {other}")),
    }
}

/// Whether a pattern compiles with the `regex` crate (DataFusion's `regexp_like`
/// compiles it the same way).
fn regex_syntax_ok(pattern: &str) -> std::result::Result<(), String> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| format!("regex {pattern:?}: {e}"))
}

/// The error of a run stopped by a `fail` rule.
pub(crate) fn failed(pipeline: &str, rule: &RuleResult, sample: &str) -> Error {
    let detail = rule.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
    Error::new(
        ErrorKind::Data,
        format!(
            "pipeline {pipeline}: rule {} failed on {} of {} rows{detail}; nothing was committed. Failing rows:\n  {sample}",
            rule.rule, rule.rows_failed, rule.rows_checked
        ),
    )
}
