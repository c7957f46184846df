//! Merge clauses: what the user asked for, and its compiled form.
//!
//! Conditions and assignments are SQL expressions over `target.<column>` and
//! `source.<column>` (an unqualified name is fine when only one side has it). They are
//! compiled once against the *joined* schema — the table's columns, then the
//! source's — and evaluated on joined batches: a target batch with the matching
//! source rows beside it (nulls where no source row matched), or for inserts, the
//! unmatched source rows with null target columns.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, BooleanArray, RecordBatch, new_null_array};
use deltalake::arrow::datatypes::{DataType, Schema, SchemaRef};
use deltalake::datafusion::common::{Column, DFSchema};
use deltalake::datafusion::execution::context::ExecutionProps;
use deltalake::datafusion::logical_expr::{Expr, ExprSchemable};
use deltalake::datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use deltalake::datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::read::predicate::Predicate;

/// The qualifier of target columns in merge expressions.
pub const TARGET: &str = "target";
/// The qualifier of source columns in merge expressions.
pub const SOURCE: &str = "source";

/// What to do with a target row that has a matching source row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchedAction {
    /// Set every table column the source has to the source's value.
    UpdateAll,
    /// Set the given columns to SQL expressions (`("amount", "source.amount + target.amount")`).
    Update(Vec<(String, String)>),
    /// Delete the target row.
    Delete,
    /// Leave the row as it is (and stop looking at later matched clauses).
    Ignore,
}

/// What to insert for a source row that matches no target row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotMatchedAction {
    /// Insert the source row: every table column from the source column of the same
    /// name, null where the source has none.
    InsertAll,
    /// Insert a row whose given columns are SQL expressions over the source row (the
    /// others are null).
    Insert(Vec<(String, String)>),
}

/// What to do with a target row that no source row matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotMatchedBySourceAction {
    /// Set the given columns to SQL expressions over the target row.
    Update(Vec<(String, String)>),
    /// Delete the target row.
    Delete,
}

#[derive(Debug, Clone)]
pub(crate) struct MatchedClause {
    pub condition: Option<String>,
    pub action: MatchedAction,
    /// Also insert the source row (with the first not-matched clause's values): how
    /// SCD type 2 closes a row and opens its successor.
    pub reinsert: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct NotMatchedClause {
    pub condition: Option<String>,
    pub action: NotMatchedAction,
}

#[derive(Debug, Clone)]
pub(crate) struct BySourceClause {
    pub condition: Option<String>,
    pub action: NotMatchedBySourceAction,
}

pub(crate) type PExpr = Arc<dyn PhysicalExpr>;

/// A row change in compiled form.
pub(crate) enum Action {
    /// Table column index and its new value.
    Update(Vec<(usize, PExpr)>),
    Delete,
    Ignore,
}

/// A matched or not-matched-by-source clause, compiled.
pub(crate) struct CompiledClause {
    pub condition: Option<PExpr>,
    pub action: Action,
    /// Also insert the matching source row (matched clauses of SCD type 2 only).
    pub reinsert: bool,
}

pub(crate) struct CompiledInsert {
    pub condition: Option<PExpr>,
    /// Per table column: its value, or null.
    pub values: Vec<Option<PExpr>>,
}

/// Every clause compiled against the joined schema.
pub(crate) struct Compiled {
    pub table_schema: SchemaRef,
    pub joined_schema: SchemaRef,
    pub join_filter: Option<PExpr>,
    pub matched: Vec<CompiledClause>,
    pub not_matched: Vec<CompiledInsert>,
    pub by_source: Vec<CompiledClause>,
}

/// Which side of the join a column reference belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Target,
    Source,
}

struct Compiler {
    /// Made on the first SQL expression: a merge whose clauses are all "set every
    /// column from the source" never needs a session (its columns compile directly).
    ctx: Option<SessionContext>,
    df_schema: DFSchema,
    table_schema: SchemaRef,
    source_schema: SchemaRef,
    /// Source columns mentioned by some expression.
    used_source_columns: Vec<String>,
}

impl Compiler {
    fn parse(&mut self, sql: &str, what: &str, allowed: &[Side]) -> Result<Expr> {
        let invalid = |e: &dyn std::fmt::Display| Error::invalid(format!("invalid {what} {sql:?}: {e}"));
        let expr = self
            .ctx
            .get_or_insert_with(SessionContext::new)
            .parse_sql_expr(sql, &self.df_schema)
            .map_err(|e| invalid(&e))?;
        for column in expr.column_refs() {
            let side = self.side_of(column).map_err(|e| invalid(&e))?;
            if !allowed.contains(&side) {
                let names = allowed.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>().join(" or ");
                return Err(invalid(&format!("`{}` is not a {names} column here", column.flat_name())));
            }
            if side == Side::Source && !self.used_source_columns.contains(&column.name) {
                self.used_source_columns.push(column.name.clone());
            }
        }
        expr.get_type(&self.df_schema).map_err(|e| invalid(&e))?;
        Ok(expr)
    }

    fn side_of(&self, column: &Column) -> std::result::Result<Side, String> {
        let in_target = self.table_schema.field_with_name(&column.name).is_ok();
        let in_source = self.source_schema.field_with_name(&column.name).is_ok();
        match column.relation.as_ref().map(|r| r.table()) {
            Some(TARGET) if in_target => Ok(Side::Target),
            Some(SOURCE) if in_source => Ok(Side::Source),
            Some(other) => Err(format!("no column `{}` in {other}", column.name)),
            None => match (in_target, in_source) {
                (true, false) => Ok(Side::Target),
                (false, true) => Ok(Side::Source),
                (true, true) => {
                    Err(format!("`{0}` is in both target and source; write target.{0} or source.{0}", column.name))
                }
                (false, false) => Err(format!("no column `{}` in target or source", column.name)),
            },
        }
    }

    fn condition(&mut self, sql: Option<&str>, allowed: &[Side]) -> Result<Option<PExpr>> {
        let Some(sql) = sql else { return Ok(None) };
        let expr = self.parse(sql, "condition", allowed)?;
        let data_type = expr.get_type(&self.df_schema)?;
        if data_type != DataType::Boolean {
            return Err(Error::invalid(format!("condition {sql:?} is of type {data_type}, expected a boolean")));
        }
        Ok(Some(self.physical(expr, sql)?))
    }

    fn physical(&mut self, expr: Expr, sql: &str) -> Result<PExpr> {
        let compiled = match &expr {
            // A bare column needs no simplification or coercion.
            Expr::Column(_) => {
                create_physical_expr(&expr, &self.df_schema, &ExecutionProps::new(), &Default::default())
            }
            _ => self.ctx.get_or_insert_with(SessionContext::new).create_physical_expr(expr, &self.df_schema),
        };
        compiled.map_err(|e| Error::invalid(format!("invalid expression {sql:?}: {e}")))
    }

    fn assignments(&mut self, assignments: &[(String, String)], allowed: &[Side]) -> Result<Vec<(usize, PExpr)>> {
        if assignments.is_empty() {
            return Err(Error::invalid("an update or insert clause needs at least one assignment"));
        }
        let mut compiled = Vec::new();
        for (column, sql) in assignments {
            let index = self
                .table_schema
                .index_of(column)
                .map_err(|_| Error::invalid(format!("cannot set `{column}`: no such column in the table")))?;
            if compiled.iter().any(|(i, _)| *i == index) {
                return Err(Error::invalid(format!("`{column}` is assigned twice")));
            }
            let expr = self.parse(sql, &format!("expression for `{column}`"), allowed)?;
            compiled.push((index, self.physical(expr, sql)?));
        }
        Ok(compiled)
    }

    /// `target.c = source.c` for every table column `c` the source has.
    fn all_from_source(&mut self) -> Vec<(usize, PExpr)> {
        let mut compiled = Vec::new();
        let table_schema = self.table_schema.clone();
        for (index, field) in table_schema.fields().iter().enumerate() {
            if self.source_schema.field_with_name(field.name()).is_ok() {
                let expr = Expr::Column(Column::new(Some(SOURCE), field.name()));
                if let Ok(physical) = self.physical(expr, field.name()) {
                    compiled.push((index, physical));
                    if !self.used_source_columns.contains(field.name()) {
                        self.used_source_columns.push(field.name().clone());
                    }
                }
            }
        }
        compiled
    }
}

/// Compile the clauses of a merge of a source of `source_schema` into a table of
/// `table_schema`. `used_source_columns` (keys, dedupe column) count as used: other
/// source columns the table lacks must be mentioned by a clause.
pub(crate) fn compile(
    table_schema: &SchemaRef,
    source_schema: &SchemaRef,
    used_source_columns: &[String],
    join_condition: Option<&str>,
    matched: &[MatchedClause],
    not_matched: &[NotMatchedClause],
    by_source: &[BySourceClause],
) -> Result<Compiled> {
    // Every joined column is nullable: unmatched rows have null on the other side.
    let nullable_table =
        Schema::new(table_schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>());
    let df_schema = DFSchema::try_from_qualified_schema(TARGET, &nullable_table)?
        .join(&DFSchema::try_from_qualified_schema(SOURCE, source_schema)?)?;
    let joined_schema = Arc::new(df_schema.as_arrow().clone());
    let mut c = Compiler {
        ctx: None,
        df_schema,
        table_schema: table_schema.clone(),
        source_schema: source_schema.clone(),
        used_source_columns: used_source_columns.to_vec(),
    };
    let join_filter = c.condition(join_condition, &[Side::Target])?;
    let mut compiled_matched = Vec::new();
    for clause in matched {
        let condition = c.condition(clause.condition.as_deref(), &[Side::Target, Side::Source])?;
        let action = match &clause.action {
            MatchedAction::UpdateAll => Action::Update(c.all_from_source()),
            MatchedAction::Update(a) => Action::Update(c.assignments(a, &[Side::Target, Side::Source])?),
            MatchedAction::Delete => Action::Delete,
            MatchedAction::Ignore => Action::Ignore,
        };
        compiled_matched.push(CompiledClause { condition, action, reinsert: clause.reinsert });
    }
    let mut compiled_inserts = Vec::new();
    for clause in not_matched {
        let condition = c.condition(clause.condition.as_deref(), &[Side::Source])?;
        let assigned = match &clause.action {
            NotMatchedAction::InsertAll => c.all_from_source(),
            NotMatchedAction::Insert(a) => c.assignments(a, &[Side::Source])?,
        };
        let mut values: Vec<Option<PExpr>> = vec![None; table_schema.fields().len()];
        for (index, expr) in assigned {
            values[index] = Some(expr);
        }
        for (field, value) in table_schema.fields().iter().zip(&values) {
            if value.is_none() && !field.is_nullable() {
                return Err(Error::invalid(format!(
                    "an insert gives no value to the non-null column `{}`; the source has no such column",
                    field.name()
                )));
            }
        }
        compiled_inserts.push(CompiledInsert { condition, values });
    }
    let mut compiled_by_source = Vec::new();
    for clause in by_source {
        let condition = c.condition(clause.condition.as_deref(), &[Side::Target])?;
        let action = match &clause.action {
            NotMatchedBySourceAction::Update(a) => Action::Update(c.assignments(a, &[Side::Target])?),
            NotMatchedBySourceAction::Delete => Action::Delete,
        };
        compiled_by_source.push(CompiledClause { condition, action, reinsert: false });
    }
    if matched.iter().any(|m| m.reinsert) && compiled_inserts.is_empty() {
        return Err(Error::internal("a reinserting matched clause needs a not-matched clause"));
    }
    if let Some(unused) = source_schema
        .fields()
        .iter()
        .find(|f| table_schema.field_with_name(f.name()).is_err() && !c.used_source_columns.contains(f.name()))
    {
        return Err(Error::invalid(format!(
            "source column `{}` is not in the table and no merge clause uses it",
            unused.name()
        )));
    }
    Ok(Compiled {
        table_schema: table_schema.clone(),
        joined_schema,
        join_filter,
        matched: compiled_matched,
        not_matched: compiled_inserts,
        by_source: compiled_by_source,
    })
}

impl Compiled {
    /// The joined batch: `target` (in the table's schema) beside `source` rows.
    pub(crate) fn join(&self, target: &RecordBatch, source: &RecordBatch) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = target.columns().to_vec();
        columns.extend(source.columns().iter().cloned());
        let options = deltalake::arrow::array::RecordBatchOptions::new().with_row_count(Some(target.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.joined_schema.clone(), columns, &options)?)
    }

    /// Null target columns for `rows` rows.
    pub(crate) fn null_target(&self, rows: usize) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> =
            self.table_schema.fields().iter().map(|f| new_null_array(f.data_type(), rows)).collect();
        let nullable: Vec<_> =
            self.table_schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let options = deltalake::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(nullable)), columns, &options)?)
    }

    /// The value of `expr` on `joined`, in the type of table column `index`.
    pub(crate) fn value(&self, expr: &PExpr, joined: &RecordBatch, index: usize) -> Result<ArrayRef> {
        let value = expr.evaluate(joined)?.into_array(joined.num_rows())?;
        let field = self.table_schema.field(index);
        if value.data_type() == field.data_type() {
            return Ok(value);
        }
        let strict = deltalake::arrow::compute::CastOptions { safe: false, ..Default::default() };
        deltalake::arrow::compute::cast_with_options(&value, field.data_type(), &strict).map_err(|e| {
            Error::invalid(format!(
                "cannot set `{}` ({}) to a value of type {}: {e}",
                field.name(),
                field.data_type(),
                value.data_type()
            ))
        })
    }
}

/// A condition's mask over `joined` (no condition: all true), null counted as false.
pub(crate) fn condition_mask(condition: &Option<PExpr>, joined: &RecordBatch) -> Result<BooleanArray> {
    match condition {
        Some(expr) => Predicate::mask(expr, joined),
        None => Ok(BooleanArray::from(vec![true; joined.num_rows()])),
    }
}
