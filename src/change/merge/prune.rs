//! Which files a merge must open, decided before any data file is read, and what it
//! declares it read for conflict checks.

use deltalake::arrow::array::Array;
use deltalake::arrow::array::ArrayRef;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::row::{OwnedRow, Row, Rows};
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
    let (adds, total, _) = candidates_with_bounds(table, source, by_source, false)?;
    Ok((adds, total))
}

/// A candidate's range of a single key column, encoded as the source's keys are
/// (`None`: unbounded on that side).
pub(super) type KeyBounds = (Option<OwnedRow>, Option<OwnedRow>);

/// [`candidates`], and with `with_bounds` each candidate's key range when the merge
/// has a single key column and every file has statistics for it.
pub(super) fn candidates_with_bounds(
    table: &Table,
    source: &MergeSource,
    by_source: &[BySourceClause],
    with_bounds: bool,
) -> Result<(Vec<Add>, usize, Option<Vec<KeyBounds>>)> {
    let state = table.state()?;
    let log = state.log_data();
    let total = log.num_containers();
    let mut keep = vec![true; total];
    // The single key's bounds, kept to give the candidates' ranges once they are known.
    let mut single: Option<FileBounds> = None;
    let by_source_files = by_source_files(table, by_source)?;
    if by_source_files.as_ref().is_none_or(|files| files.iter().any(|f| !f)) {
        for keys in &source.sorted_keys {
            let column = Column::from_name(&keys.column);
            let key_type = keys.min.data_type().clone();
            let bound = |values: Option<ArrayRef>| {
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
            let bounds = FileBounds {
                lo: keys.converter.convert_columns(std::slice::from_ref(&mins))?,
                hi: keys.converter.convert_columns(std::slice::from_ref(&maxs))?,
                mins,
                maxs,
                trust_max: !matches!(key_type, DataType::Timestamp(_, _)),
            };
            for (i, keep) in keep.iter_mut().enumerate() {
                if *keep {
                    let (lo, hi) = bounds.range(i);
                    *keep = keys.any_between(&source.index, lo, hi);
                }
            }
            if with_bounds && source.sorted_keys.len() == 1 {
                single = Some(bounds);
            }
        }
        // Files a not-matched-by-source clause may change are read whatever their keys.
        if let Some(files) = by_source_files {
            for (keep, by_source) in keep.iter_mut().zip(files) {
                *keep |= by_source;
            }
        }
    }
    let bounds = single.map(|bounds| {
        (0..total)
            .filter(|i| keep[*i])
            .map(|i| {
                let (lo, hi) = bounds.range(i);
                (lo.map(|r| r.owned()), hi.map(|r| r.owned()))
            })
            .collect()
    });
    Ok((crate::read::scan::selected_adds(state, &keep), total, bounds))
}

/// Every file's statistics bounds of one key column, encoded as the source's keys are.
struct FileBounds {
    lo: Rows,
    hi: Rows,
    mins: ArrayRef,
    maxs: ArrayRef,
    /// Timestamp statistics are truncated to milliseconds: a max may lie below the
    /// file's largest value, so only the lower bound is trusted.
    trust_max: bool,
}

impl FileBounds {
    /// File `i`'s range (`None`: unbounded on that side).
    fn range(&self, i: usize) -> (Option<Row<'_>>, Option<Row<'_>>) {
        let lo = (!self.mins.is_null(i)).then(|| self.lo.row(i));
        let hi = (self.trust_max && !self.maxs.is_null(i)).then(|| self.hi.row(i));
        (lo, hi)
    }
}

/// A key range as encoded bytes (`None`: unbounded on that side).
type EncodedRange<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// The source rows whose key lies outside every candidate's range (`bounds`, from
/// [`candidates_with_bounds`]): no target row can match them, so they can be
/// inserted before any file is read. Ascending row ids.
pub(super) fn surely_unmatched(source: &MergeSource, bounds: &[KeyBounds]) -> Vec<u32> {
    // The ranges, sorted and merged into disjoint ones (an unbounded side stays so).
    let mut ranges: Vec<EncodedRange<'_>> = bounds
        .iter()
        .map(|(lo, hi)| (lo.as_ref().map(|r| r.row().data()), hi.as_ref().map(|r| r.row().data())))
        .collect();
    ranges.sort_by(|a, b| match (a.0, b.0) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, _) => std::cmp::Ordering::Less,
        (_, None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y),
    });
    let mut merged: Vec<EncodedRange<'_>> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            // Overlapping or touching the previous range (its end is unbounded or at
            // least this start): extend it.
            Some(last) if last.1.is_none() || lo.is_none_or(|lo| last.1.is_some_and(|end| lo <= end)) => {
                last.1 = match (last.1, hi) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => merged.push((lo, hi)),
        }
    }
    let inside = |key: &[u8]| {
        // The last range starting at or before `key` is the only one that may hold it.
        let after = merged.partition_point(|(lo, _)| lo.is_none_or(|lo| lo <= key));
        after > 0 && merged[after - 1].1.is_none_or(|hi| key <= hi)
    };
    if source.duplicates_dropped == 0 {
        // Every row kept: walk the keys in order rather than look each one up.
        return source.index.all_keys().filter(|(_, key)| !inside(key.data())).map(|(id, _)| id).collect();
    }
    source.row_ids().into_iter().filter(|id| !inside(source.index.key(*id).data())).collect()
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
        let matches =
            crate::read::predicate::Predicate::match_partitions(&unqualified, &files, &schema, &partition_columns)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn rows_outside_every_candidates_range_are_surely_unmatched() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let keys: ArrayRef = Arc::new(Int64Array::from(vec![30, 1, 5, 10, 20, 11, 4, -7]));
        let batch = RecordBatch::try_new(schema.clone(), vec![keys]).unwrap();
        let source =
            MergeSource::prepare(std::iter::once(Ok(batch)), &["k".to_string()], None, &schema, None, None).unwrap();
        let converter = &source.sorted_keys[0].converter;
        let bound = |v: i64| {
            let array: ArrayRef = Arc::new(Int64Array::from(vec![v]));
            Some(converter.convert_columns(&[array]).unwrap().row(0).owned())
        };
        // Row ids of the keys outside the ranges, ascending.
        let outside = |bounds: Vec<KeyBounds>| surely_unmatched(&source, &bounds);
        // [4, 8] and [6, 11] overlap into [4, 11]; [25, ..) is open above.
        assert_eq!(outside(vec![(bound(25), None), (bound(6), bound(11)), (bound(4), bound(8))]), vec![1, 4, 7]);
        // Open below: everything up to 5 may match.
        assert_eq!(outside(vec![(None, bound(5))]), vec![0, 3, 4, 5]);
        // Touching ranges, and a single-value range.
        assert_eq!(outside(vec![(bound(1), bound(5)), (bound(5), bound(10)), (bound(20), bound(20))]), vec![0, 5, 7]);
        // No candidate: every row; one unbounded candidate: none.
        assert_eq!(outside(Vec::new()), (0..8).collect::<Vec<u32>>());
        assert!(outside(vec![(None, None)]).is_empty());

        // With rows deduplication dropped: only the kept row of a key counts.
        let keys: ArrayRef = Arc::new(Int64Array::from(vec![30, 1, 30, 5]));
        let batch = RecordBatch::try_new(schema.clone(), vec![keys]).unwrap();
        let deduped =
            MergeSource::prepare(std::iter::once(Ok(batch)), &["k".to_string()], Some("k"), &schema, None, None)
                .unwrap();
        assert_eq!(deduped.duplicates_dropped, 1);
        assert_eq!(surely_unmatched(&deduped, &[(bound(4), bound(6))]), vec![1, 2]);
    }
}
