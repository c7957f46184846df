//! Predicates: SQL-like boolean expressions over a table's columns.
//!
//! A predicate is parsed with DataFusion's SQL parser against the table schema
//! (`date >= '2024-01-01' AND user_id IN (1, 2)`), so unknown columns and type errors
//! are reported before any data is read. It is used three ways:
//! - *partition pruning*: the conjuncts that mention only partition columns are
//!   evaluated exactly on each file's partition values;
//! - *statistics skipping*: the whole predicate is checked against each file's
//!   min/max/null-count statistics (a file is kept when it *may* hold a matching row);
//! - *row filtering*: evaluated on the rows that are read or written.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::logical_expr::utils::{conjunction, split_conjunction};
use deltalake::datafusion::logical_expr::{Expr, ExprSchemable};
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::table::DataFile;

/// A parsed boolean expression bound to a schema.
#[derive(Debug, Clone)]
pub struct Predicate {
    sql: String,
    expr: Expr,
    schema: SchemaRef,
}

impl Predicate {
    /// Parse `sql` against `schema`. Errors name the expression and what is wrong.
    pub fn parse(sql: &str, schema: &SchemaRef) -> Result<Self> {
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let ctx = SessionContext::new();
        let expr = ctx
            .parse_sql_expr(sql, &df_schema)
            .map_err(|e| Error::invalid(format!("invalid expression {sql:?}: {e}")))?;
        let data_type =
            expr.get_type(&df_schema).map_err(|e| Error::invalid(format!("invalid expression {sql:?}: {e}")))?;
        if data_type != DataType::Boolean {
            return Err(Error::invalid(format!(
                "expression {sql:?} is of type {data_type}, expected a boolean condition"
            )));
        }
        // Planning the physical form checks column references and types now.
        ctx.create_physical_expr(expr.clone(), &df_schema)
            .map_err(|e| Error::invalid(format!("invalid expression {sql:?}: {e}")))?;
        Ok(Self { sql: sql.to_string(), expr, schema: schema.clone() })
    }

    /// The expression as the user wrote it.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The logical DataFusion expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether every column the predicate mentions is one of `columns`.
    pub fn only_mentions(&self, columns: &[String]) -> bool {
        self.expr.column_refs().iter().all(|c| columns.contains(&c.name))
    }

    /// The conjuncts that mention only `partition_columns`, if any.
    pub fn partition_part(&self, partition_columns: &[String]) -> Option<Expr> {
        let parts: Vec<Expr> = split_conjunction(&self.expr)
            .into_iter()
            .filter(|e| {
                let refs = e.column_refs();
                !refs.is_empty() && refs.iter().all(|c| partition_columns.contains(&c.name))
            })
            .cloned()
            .collect();
        conjunction(parts)
    }

    /// The physical form of `expr` over `schema`.
    pub(crate) fn physical(expr: &Expr, schema: &SchemaRef) -> Result<Arc<dyn PhysicalExpr>> {
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        Ok(SessionContext::new().create_physical_expr(expr.clone(), &df_schema)?)
    }

    /// Evaluate `expr` on `batch`: one boolean per row, null counted as false.
    pub(crate) fn evaluate(expr: &Expr, batch: &RecordBatch) -> Result<BooleanArray> {
        Self::mask(&Self::physical(expr, &batch.schema())?, batch)
    }

    /// Evaluate a compiled boolean expression on `batch`, null counted as false.
    /// Compile once with [`Self::physical`] for a stream of batches of one schema.
    pub(crate) fn mask(physical: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
        let value = physical.evaluate(batch)?.into_array(batch.num_rows())?;
        let mask = value
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| Error::internal("predicate did not evaluate to booleans"))?;
        Ok(mask.iter().map(|v| Some(v.unwrap_or(false))).collect())
    }

    /// Evaluate this predicate on `batch` (which must hold the columns it mentions).
    pub fn matches(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        Self::evaluate(&self.expr, batch)
    }

    /// For each file, whether its partition values satisfy `expr` (which must mention
    /// only partition columns). Exact, not an estimate.
    pub(crate) fn match_partitions(
        expr: &Expr,
        files: &[DataFile],
        table_schema: &SchemaRef,
        partition_columns: &[String],
    ) -> Result<Vec<bool>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let batch = partition_values_batch(files, table_schema, partition_columns)?;
        let mask = Self::evaluate(expr, &batch)?;
        Ok((0..mask.len()).map(|i| mask.value(i)).collect())
    }

    /// The table schema this predicate was parsed against.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// One row per file holding its partition values, typed as in the table schema.
fn partition_values_batch(
    files: &[DataFile],
    table_schema: &SchemaRef,
    partition_columns: &[String],
) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for name in partition_columns {
        let field = table_schema.field_with_name(name).map_err(|_| {
            Error::new(crate::ErrorKind::Data, format!("partition column `{name}` is not in the table schema"))
        })?;
        let raw: StringArray = files.iter().map(|f| f.partition_values.get(name).cloned().flatten()).collect();
        let typed = if field.data_type() == &DataType::Utf8 {
            Arc::new(raw) as ArrayRef
        } else {
            cast(&raw, field.data_type()).map_err(|e| {
                Error::new(
                    crate::ErrorKind::Data,
                    format!("partition values of `{name}` do not parse as {}: {e}", field.data_type()),
                )
            })?
        };
        fields.push(Field::new(name, field.data_type().clone(), true));
        columns.push(typed);
    }
    let options = deltalake::arrow::array::RecordBatchOptions::new().with_row_count(Some(files.len()));
    Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
}

/// `sql` over `df_schema` as a physical expression: parsed, coerced and simplified as
/// a query's projection would be (DataFusion's `create_physical_expr` only coerces,
/// and some functions, `COALESCE` among them, exist only in simplified form).
pub(crate) fn physical_expr(
    ctx: &SessionContext,
    sql: &str,
    df_schema: &DFSchema,
) -> deltalake::datafusion::common::Result<Arc<dyn PhysicalExpr>> {
    use deltalake::datafusion::logical_expr::simplify::SimplifyContext;
    use deltalake::datafusion::optimizer::simplify_expressions::ExprSimplifier;
    let expr = ctx.parse_sql_expr(sql, df_schema)?;
    let state = ctx.state();
    let simplify = SimplifyContext::builder()
        .with_schema(Arc::new(df_schema.clone()))
        .with_config_options(Arc::clone(state.config_options()))
        .with_query_execution_start_time(state.execution_props().query_execution_start_time)
        .build();
    let simplifier = ExprSimplifier::new(simplify);
    let expr = simplifier.simplify(simplifier.coerce(expr, df_schema)?)?;
    ctx.create_physical_expr(expr, df_schema)
}
