//! Delta CHECK constraints: a table's rules, checked on every write.
//!
//! A constraint is a table property `delta.constraints.<name> = <SQL condition>`
//! (writer feature `checkConstraints`, or writer version 3 and up), so every Delta
//! writer that honours the protocol (Spark, Databricks, delta-rs, Sediment) enforces
//! it. Every row Sediment writes (appends, overwrites, merges, updates, pipeline runs)
//! must make each condition *true*: a row for which it is false or NULL refuses the
//! write, nothing of it becomes visible, and the error names the constraint with a
//! sample of the rows (as Delta's protocol and Spark have it; delta-rs lets a NULL
//! through). Rows a write copies unchanged out of a rewritten file are checked too.
//!
//! [`Table::add_constraint`] reads every live row first and refuses a condition some
//! row breaks; if a writer commits while it reads, the files that writer added are
//! checked before the constraint is committed again. A write that began before a
//! constraint was added and would commit after it fails with a conflict (its rows
//! were checked against the old rules) and commits nothing.
//!
//! Conditions are parsed by DataFusion's SQL parser with identifiers kept as written
//! (`amount > 0`, `status IN ('new', 'paid')`, `` `order id` IS NOT NULL ``). A
//! condition using a function DataFusion does not know (a Spark-only one) cannot be
//! checked here: writes to that table are refused, naming it.

use std::sync::{Arc, LazyLock};

use deltalake::arrow::array::{Array, BooleanArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::kernel::{Action, MetadataExt};
use deltalake::protocol::DeltaOperation;
use deltalake::table::state::DeltaTableState;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::commit::{CommitExtra, CommitRequest, commit};
use crate::table::conflict::{RetryBudget, RetrySettings, gave_up};
use crate::table::features;

/// The table-property prefix of a CHECK constraint.
pub const CONSTRAINT_PREFIX: &str = "delta.constraints.";

/// Rows shown in a violation error.
const SAMPLE_ROWS: usize = 5;

/// One CHECK constraint of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Constraint {
    /// Its name (the property is `delta.constraints.<name>`).
    pub name: String,
    /// The SQL condition every row must make true.
    pub expression: String,
}

/// What adding a constraint did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AddConstraintReport {
    pub constraint: Option<Constraint>,
    /// The version that records it; `None` when the table had it already.
    pub version: Option<u64>,
    /// The table had this very constraint already: nothing was committed.
    pub already_present: bool,
    /// Files and rows read to check that every row satisfies it.
    pub files_checked: usize,
    pub rows_checked: u64,
    /// Commit races lost on the way (each re-checks the files the winner added).
    pub retries: usize,
}

/// The CHECK constraints of a version, by name.
pub fn constraints_of(state: &DeltaTableState) -> Vec<Constraint> {
    from_properties(state.metadata().configuration())
}

/// The CHECK constraints among table properties, by name.
pub fn from_properties<'a>(properties: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<Constraint> {
    let mut constraints: Vec<Constraint> = properties
        .into_iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(CONSTRAINT_PREFIX)
                .map(|name| Constraint { name: name.to_string(), expression: value.clone() })
        })
        .collect();
    constraints.sort_by(|a, b| a.name.cmp(&b.name));
    constraints
}

/// The session that parses conditions: built once, identifiers kept as written.
static PARSER: LazyLock<SessionContext> = LazyLock::new(|| {
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.enable_ident_normalization = false;
    SessionContext::new_with_config(config)
});

/// A table's constraints compiled against the schema its rows are written with.
pub(crate) struct ConstraintChecker {
    uri: String,
    schema: SchemaRef,
    /// Each constraint and its *violation*: true where a row breaks it (never null).
    checks: Vec<(Constraint, Arc<dyn PhysicalExpr>)>,
}

impl ConstraintChecker {
    /// The checker of `table`'s constraints for rows of `schema`; `None` when it has none.
    pub(crate) fn for_table(table: &Table, schema: &SchemaRef) -> Result<Option<Self>> {
        if !table.exists() {
            return Ok(None);
        }
        Self::compile(table.uri(), &constraints_of(table.state()?), schema)
    }

    /// Compile `constraints` for rows of `schema`; `None` when there are none.
    pub(crate) fn compile(uri: &str, constraints: &[Constraint], schema: &SchemaRef) -> Result<Option<Self>> {
        if constraints.is_empty() {
            return Ok(None);
        }
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let mut checks = Vec::with_capacity(constraints.len());
        for constraint in constraints {
            let unusable = |e: &dyn std::fmt::Display| {
                Error::invalid(format!(
                    "table {uri}: CHECK constraint {} ({}) cannot be checked: {e}",
                    constraint.name, constraint.expression
                ))
            };
            let condition = crate::read::predicate::physical_expr(&PARSER, &constraint.expression, &df_schema)
                .map_err(|e| unusable(&e))?;
            match condition.data_type(schema.as_ref()) {
                Ok(DataType::Boolean) => {}
                Ok(other) => return Err(unusable(&format!("it is of type {other}, not a condition"))),
                Err(e) => return Err(unusable(&e)),
            }
            let violation = crate::read::predicate::physical_expr(
                &PARSER,
                &format!("NOT COALESCE(({}), FALSE)", constraint.expression),
                &df_schema,
            )
            .map_err(|e| unusable(&e))?;
            checks.push((constraint.clone(), violation));
        }
        Ok(Some(Self { uri: uri.to_string(), schema: schema.clone(), checks }))
    }

    /// The constraints checked.
    pub(crate) fn constraints(&self) -> impl Iterator<Item = &Constraint> {
        self.checks.iter().map(|(c, _)| c)
    }

    /// Check every row of `batch`; the error names the first constraint broken, how
    /// many rows break it and a sample of them.
    pub(crate) fn check(&self, batch: &RecordBatch) -> Result<()> {
        if let Some((constraint, rows, sample)) = self.violation(batch)? {
            return Err(Error::invalid(format!(
                "CHECK constraint {} ({}) of table {} is violated by {rows} of {} rows; nothing was written. \
                 Violating rows:\n  {sample}",
                constraint.name,
                constraint.expression,
                self.uri,
                batch.num_rows()
            )));
        }
        Ok(())
    }

    /// The first constraint `batch` breaks, with the number of rows breaking it and
    /// a sample of them.
    pub(crate) fn violation(&self, batch: &RecordBatch) -> Result<Option<(&Constraint, usize, String)>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let batch = self.fit(batch)?;
        for (constraint, violation) in &self.checks {
            let value = violation.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| {
                Error::invalid(format!(
                    "table {}: CHECK constraint {} ({}) cannot be evaluated: {e}",
                    self.uri, constraint.name, constraint.expression
                ))
            })?;
            let mask = value
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| Error::internal("a constraint's violation is not boolean"))?;
            let rows = mask.true_count();
            if rows > 0 {
                let failing = filter_record_batch(&batch, mask)?;
                let sample = sample_rows(&[failing], SAMPLE_ROWS);
                return Ok(Some((constraint, rows, sample)));
            }
        }
        Ok(None)
    }

    /// `batch` with the checker's columns, found by name (a write that added columns
    /// has more, maybe in another order).
    fn fit(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.schema().fields() == self.schema.fields() {
            return Ok(batch.clone());
        }
        let indices = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                batch.schema().index_of(f.name()).map_err(|_| {
                    Error::internal(format!("column {} of table {} is missing from written rows", f.name(), self.uri))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(batch.project(&indices)?)
    }
}

/// Whether the constraints of `now` are all among those a write checked: the error
/// of a write whose table gained (or changed) a constraint while it ran.
pub(crate) fn still_checked(uri: &str, checked: &[Constraint], now: &DeltaTableState) -> Result<()> {
    if let Some(new) = constraints_of(now).into_iter().find(|c| !checked.contains(c)) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "table {uri} gained CHECK constraint {} ({}) while this write ran, after its rows were checked; \
                 nothing was committed (write again)",
                new.name, new.expression
            ),
        ));
    }
    Ok(())
}

/// Check a declared constraint without its table: its name, and that its condition
/// parses as SQL (the columns are checked when it is added).
pub fn check_declared(name: &str, expression: &str) -> Result<()> {
    use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
    use deltalake::datafusion::sql::sqlparser::parser::Parser;
    check_name(name)?;
    Parser::new(&GenericDialect {})
        .try_with_sql(expression)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::invalid(format!("constraint {name}: condition {expression:?} does not parse: {e}")))?;
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::invalid(format!(
            "constraint name {name:?}: use letters, digits and '_' (it becomes the table property \
             {CONSTRAINT_PREFIX}{name})"
        )));
    }
    Ok(())
}

/// The protocol of `state` able to carry constraints: writer version 3 at least, and
/// with table features (writer 7), `checkConstraints` listed.
fn protocol_with_constraints(state: &DeltaTableState) -> Result<Option<deltalake::kernel::Protocol>> {
    let protocol = state.protocol();
    let mut json = serde_json::to_value(protocol).map_err(|e| Error::internal(format!("protocol as JSON: {e}")))?;
    let writer = protocol.min_writer_version();
    if writer < 3 {
        json["minWriterVersion"] = 3.into();
    } else if writer >= 7 {
        let features = json["writerFeatures"].as_array_mut();
        match features {
            Some(list) if list.iter().any(|f| f == "checkConstraints") => return Ok(None),
            Some(list) => list.push("checkConstraints".into()),
            None => json["writerFeatures"] = serde_json::json!(["checkConstraints"]),
        }
    } else {
        return Ok(None);
    }
    serde_json::from_value(json).map(Some).map_err(|e| Error::internal(format!("building protocol action: {e}")))
}

impl Table {
    /// The table's CHECK constraints, by name (for a table not created yet, those
    /// its first write gives it).
    pub fn constraints(&self) -> Result<Vec<Constraint>> {
        if !self.exists() {
            // Those its first write will give it.
            return Ok(from_properties(self.new_table_properties().iter().map(|(k, v)| (k, v))));
        }
        Ok(constraints_of(self.state()?))
    }

    /// Add CHECK constraint `name`: every live row is read and must satisfy
    /// `expression` (true, not false or NULL), then one commit records it (and raises
    /// the protocol to carry it). A constraint of that name with the same condition is
    /// left as it is; one with another condition is refused.
    pub async fn add_constraint(&mut self, name: &str, expression: &str) -> Result<AddConstraintReport> {
        check_name(name)?;
        if !self.exists() {
            return Err(Error::new(ErrorKind::NotFound, format!("table {} does not exist", self.uri())));
        }
        let constraint = Constraint { name: name.to_string(), expression: expression.trim().to_string() };
        let mut report = AddConstraintReport { constraint: Some(constraint.clone()), ..Default::default() };
        // Files checked so far, by path: after a lost race only the winners' are read.
        let mut checked: std::collections::HashSet<String> = std::collections::HashSet::new();
        // Lost races are retried as every writer's are: backoff, within one budget.
        let mut budget = RetryBudget::new(&RetrySettings::default());
        loop {
            features::check_writable(self.uri(), self.state()?)?;
            let read_version = self.version();
            let state = self.state()?;
            if let Some(existing) = constraints_of(state).into_iter().find(|c| c.name == name) {
                if existing.expression == constraint.expression {
                    report.already_present = true;
                    return Ok(report);
                }
                return Err(Error::invalid(format!(
                    "table {} has a CHECK constraint {name} already, with another condition ({}); drop it first",
                    self.uri(),
                    existing.expression
                )));
            }
            let schema = self.arrow_schema()?;
            let checker = ConstraintChecker::compile(self.uri(), std::slice::from_ref(&constraint), &schema)?
                .ok_or_else(|| Error::internal("no constraint compiled"))?;
            let files: Vec<deltalake::kernel::Add> =
                self.plan_scan(None)?.files.into_iter().filter(|a| !checked.contains(&a.path)).collect();
            let unreadable = crate::maintain::tiering::archive::unreadable(self, &files).await?;
            if !unreadable.is_empty() {
                return Err(crate::maintain::tiering::archive::archived_error(self, "constraint check", &unreadable));
            }
            let paths: Vec<String> = files.iter().map(|a| a.path.clone()).collect();
            report.files_checked += files.len();
            let (mut broken, mut sample) = (0u64, String::new());
            let what = format!("version {} of table {}", self.version().unwrap_or_default(), self.uri());
            crate::read::scan::for_each_file_batch(self, files, &what, |batch| {
                report.rows_checked += batch.num_rows() as u64;
                if let Some((_, rows, rows_sample)) = checker.violation(&batch)? {
                    if broken == 0 {
                        sample = rows_sample;
                    }
                    broken += rows as u64;
                }
                Ok(())
            })
            .await?;
            if broken > 0 {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "cannot add CHECK constraint {name} ({}) to table {}: {broken} of {} rows violate it \
                         (delete or fix them first); nothing was committed. Violating rows:\n  {sample}",
                        constraint.expression,
                        self.uri(),
                        report.rows_checked
                    ),
                ));
            }
            checked.extend(paths);
            let state = self.state()?;
            let metadata = state
                .metadata()
                .clone()
                .add_config_key(format!("{CONSTRAINT_PREFIX}{name}"), constraint.expression.clone())?;
            let mut actions = vec![Action::Metadata(metadata)];
            if let Some(protocol) = protocol_with_constraints(state)? {
                actions.push(Action::Protocol(protocol));
            }
            let request = CommitRequest {
                operation: DeltaOperation::AddConstraint {
                    constraints: vec![deltalake::table::Constraint::new(name, &constraint.expression)],
                },
                metrics: vec![
                    ("numFilesChecked", report.files_checked as u64),
                    ("numRowsChecked", report.rows_checked),
                ],
                blind_append: false,
                // No rebase: rows a racing writer added must be checked first.
                max_retries: 0,
                app_transactions: Vec::new(),
                extra: CommitExtra::default(),
            };
            match commit(self, actions, request).await {
                Ok(version) => {
                    report.version = Some(version);
                    return Ok(report);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    if !budget.retry().await {
                        let _ = self.refresh().await;
                        let what = format!("adding CHECK constraint {name}");
                        return Err(gave_up(self, &what, &budget, read_version, &Default::default(), &e).await);
                    }
                    report.retries = budget.retries();
                    tracing::info!(error = %e, "adding a constraint lost a commit race; checking the winner's files");
                    self.refresh().await?;
                }
                Err(e) => return Err(e.context(format!("table {}", self.uri()))),
            }
        }
    }

    /// Drop CHECK constraint `name`. A missing one is an error unless `if_exists`
    /// (then nothing is committed and `None` returned).
    pub async fn drop_constraint(&mut self, name: &str, if_exists: bool) -> Result<Option<u64>> {
        if !self.exists() {
            return Err(Error::new(ErrorKind::NotFound, format!("table {} does not exist", self.uri())));
        }
        let mut budget = RetryBudget::new(&RetrySettings::default());
        loop {
            features::check_writable(self.uri(), self.state()?)?;
            let read_version = self.version();
            let key = format!("{CONSTRAINT_PREFIX}{name}");
            let state = self.state()?;
            if !state.metadata().configuration().contains_key(&key) {
                if if_exists {
                    return Ok(None);
                }
                let names: Vec<String> = constraints_of(state).into_iter().map(|c| c.name).collect();
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "table {} has no CHECK constraint {name} (it has: {})",
                        self.uri(),
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ),
                ));
            }
            let metadata = state.metadata().clone().remove_config_key(&key)?;
            let request = CommitRequest {
                operation: DeltaOperation::DropConstraint { name: name.to_string() },
                metrics: Vec::new(),
                blind_append: false,
                max_retries: 0,
                app_transactions: Vec::new(),
                extra: CommitExtra::default(),
            };
            match commit(self, vec![Action::Metadata(metadata)], request).await {
                Ok(version) => return Ok(Some(version)),
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    if !budget.retry().await {
                        let _ = self.refresh().await;
                        let what = format!("dropping CHECK constraint {name}");
                        return Err(gave_up(self, &what, &budget, read_version, &Default::default(), &e).await);
                    }
                    self.refresh().await?;
                }
                Err(e) => return Err(e.context(format!("table {}", self.uri()))),
            }
        }
    }
}

/// Up to `limit` rows of `batches` as JSON objects, for an error message.
pub(crate) fn sample_rows(batches: &[RecordBatch], limit: usize) -> String {
    let mut rows = Vec::new();
    for batch in batches {
        if rows.len() >= limit {
            break;
        }
        let take = batch.slice(0, batch.num_rows().min(limit - rows.len()));
        let mut writer = arrow_json::ArrayWriter::new(Vec::new());
        if writer.write(&take).is_ok() && writer.finish().is_ok() {
            let text = String::from_utf8_lossy(&writer.into_inner()).to_string();
            if let Ok(serde_json::Value::Array(values)) = serde_json::from_str::<serde_json::Value>(&text) {
                rows.extend(values.into_iter().map(|v| v.to_string()));
            }
        }
    }
    rows.join("\n  ")
}
