//! Which files a merge must open, decided before any data file is read, and what it
//! declares it read for conflict checks.

use deltalake::arrow::array::Array;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::common::tree_node::{Transformed, TreeNode};
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::logical_expr::{Expr, col, lit};
use deltalake::datafusion::physical_optimizer::pruning::PruningStatistics;
use deltalake::kernel::Add;

use super::TARGET;
use super::clauses::BySourceClause;
use super::source::MergeSource;
use crate::error::Result;
use crate::table::Table;

/// The files that may hold a source key, and the number of live files. With
/// not-matched-by-source clauses, the files they may change are candidates too.
pub(super) fn candidates(
    table: &Table,
    source: &MergeSource,
    by_source: &[BySourceClause],
) -> Result<(Vec<Add>, usize)> {
    let state = table.state()?;
    let log = state.log_data();
    let total = log.num_containers();
    let mut keep = vec![true; total];
    let by_source_files = by_source_files(table, by_source)?;
    if by_source_files.as_ref().is_none_or(|files| files.iter().any(|f| !f)) {
        for keys in &source.sorted_keys {
            let column = Column::from_name(&keys.column);
            let key_type = keys.min.data_type().clone();
            let bound = |values: Option<deltalake::arrow::array::ArrayRef>| {
                values.filter(|v| v.len() == total).and_then(|v| {
                    if v.data_type() == &key_type {
                        Some(v)
                    } else {
                        deltalake::arrow::compute::cast(&v, &key_type).ok()
                    }
                })
            };
            let (Some(mins), Some(maxs)) = (bound(log.min_values(&column)), bound(log.max_values(&column))) else {
                continue;
            };
            let lo = keys.converter.convert_columns(std::slice::from_ref(&mins))?;
            let hi = keys.converter.convert_columns(std::slice::from_ref(&maxs))?;
            // Timestamp statistics are truncated to milliseconds: a max may lie below the
            // file's largest value, so only the lower bound is trusted.
            let trust_max = !matches!(key_type, DataType::Timestamp(_, _));
            for (i, keep) in keep.iter_mut().enumerate() {
                if *keep {
                    let lo = (!mins.is_null(i)).then(|| lo.row(i));
                    let hi = (trust_max && !maxs.is_null(i)).then(|| hi.row(i));
                    *keep = keys.any_between(lo, hi);
                }
            }
        }
        // Files a not-matched-by-source clause may change are read whatever their keys.
        if let Some(files) = by_source_files {
            for (keep, by_source) in keep.iter_mut().zip(files) {
                *keep |= by_source;
            }
        }
    }
    Ok((crate::scan::selected_adds(state, &keep), total))
}

/// Which files not-matched-by-source clauses may change (`None` without such
/// clauses): the files whose partition values satisfy a clause's condition when every
/// condition mentions only partition columns, else every file.
fn by_source_files(table: &Table, clauses: &[BySourceClause]) -> Result<Option<Vec<bool>>> {
    if clauses.is_empty() {
        return Ok(None);
    }
    let files = table.files()?;
    let all = || Ok(Some(vec![true; files.len()]));
    let schema = table.arrow_schema()?;
    let partition_columns = table.partition_columns()?;
    let df_schema = deltalake::datafusion::common::DFSchema::try_from_qualified_schema(TARGET, &schema)?;
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    let mut touched = vec![false; files.len()];
    for clause in clauses {
        let Some(sql) = &clause.condition else { return all() };
        // Already checked by the clause compiler; anything unexpected reads every file.
        let Ok(expr) = ctx.parse_sql_expr(sql, &df_schema) else { return all() };
        let unqualified = expr
            .transform_up(|e| {
                Ok(match e {
                    Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
                    other => Transformed::no(other),
                })
            })?
            .data;
        if !unqualified.column_refs().iter().all(|c| partition_columns.contains(&c.name)) {
            return all();
        }
        let matches = crate::predicate::Predicate::match_partitions(&unqualified, &files, &schema, &partition_columns)?;
        for (t, m) in touched.iter_mut().zip(matches) {
            *t |= m;
        }
    }
    Ok(Some(touched))
}

/// `k >= min AND k <= max` over every key whose bounds can be written as SQL; `None`
/// (the whole table was read) when none can.
pub(super) fn read_predicate(source: &MergeSource) -> Option<String> {
    let mut parts: Vec<Expr> = Vec::new();
    for keys in &source.sorted_keys {
        if matches!(keys.min.data_type(), DataType::Timestamp(_, _)) || keys.min.is_empty() {
            continue;
        }
        let (Ok(min), Ok(max)) = (ScalarValue::try_from_array(&keys.min, 0), ScalarValue::try_from_array(&keys.max, 0))
        else {
            continue;
        };
        parts.push(col(keys.column.as_str()).gt_eq(lit(min)).and(col(keys.column.as_str()).lt_eq(lit(max))));
    }
    let expr = parts.into_iter().reduce(Expr::and)?;
    deltalake::delta_datafusion::expr::fmt_expr_to_sql(&expr).ok()
}
