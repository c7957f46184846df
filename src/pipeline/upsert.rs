//! An upsert run: the source's new change events, projected and checked, the newest
//! per key kept, merged into the target by key.
//!
//! Order of events, as in Delta Live Tables' APPLY CHANGES: with `sequence_by`, the
//! event with the largest sequence per key wins within the run (later source commits
//! win ties), and against the target a matched row is updated or deleted only by an
//! event at least as new as the row (`source.seq >= target.seq`): an older event never
//! overwrites a newer row and a late delete removes only what it is newer than. A
//! delete leaves no tombstone: an event older than the delete that arrives in a later
//! run inserts its key again (DLT keeps tombstones for a while for this; we do not
//! yet). Without `sequence_by`, `dedupe_by` (or the source commit) picks the winner
//! and every matched event applies.
//!
//! The target's first run (no table yet) appends the winners that are not deletes.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::prelude::SessionContext;

use crate::change::{MatchedAction, NotMatchedAction};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::increment::{CHANGE_TYPE_COLUMN, VERSION_COLUMN};
use crate::pipeline::quality::{self, RowRules, RunIdentity, register};
use crate::pipeline::rules::quote;
use crate::pipeline::spec::PipelineSpec;
use crate::pipeline::{PipelineRunReport, RunInputs, Written};
use crate::table::Table;
use crate::write::WriteOptions;

/// The column that marks a delete event in the merge source.
pub(crate) const DELETE_COLUMN: &str = "__sediment_delete";
/// The column with each event's source commit (ties of the sequence).
const ORDER_COLUMN: &str = "__sediment_version";

/// Turn the increment's rows into the merge source and apply it; the report's row
/// counts and rule results are filled in.
pub(crate) async fn apply(
    spec: &PipelineSpec,
    rows: Vec<RecordBatch>,
    inputs: &RunInputs<'_>,
    report: &mut PipelineRunReport,
) -> Result<Written> {
    // Projection, renames, derived columns and the delete flag, then the row rules:
    // compiled once, evaluated batch by batch (columns are shared, not copied).
    let projection = Projection::compile(spec, &rows[0].schema(), inputs.source_name)?;
    let projected_schema = projection.schema.clone();
    for key in &spec.keys {
        if projected_schema.field_with_name(key).is_err() {
            return Err(Error::invalid(format!(
                "pipeline {}: key column {key} is not among the columns the source {} gives the target",
                spec.name, inputs.source_name
            )));
        }
    }
    let projected: Vec<RecordBatch> = rows.into_iter().map(|b| projection.apply(&b)).collect::<Result<_>>()?;
    let row_rules = RowRules::compile(&spec.rules, &projected_schema, &spec.name)?;

    // Row rules: fail stops here; quarantined rows leave the stream.
    let who =
        RunIdentity { pipeline: &spec.name, run_id: &report.run_id, source_table: inputs.source_name, now: inputs.now };
    let checked = quality::check_rows(projected, &row_rules, Some(ORDER_COLUMN), &who)?;
    report.rules = checked.results;
    report.rows_quarantined = checked.quarantined.iter().map(|b| b.num_rows() as u64).sum();
    let kept: Vec<RecordBatch> = checked.kept.into_iter().filter(|b| b.num_rows() > 0).collect();
    let kept_rows: u64 = kept.iter().map(|b| b.num_rows() as u64).sum();

    // The newest event per key (SCD type 2: per key and effective time, the later
    // source commit winning).
    let (keys, order) = match spec.effective_at() {
        Some(eff) => (spec.keys.iter().cloned().chain([eff.to_string()]).collect::<Vec<_>>(), None),
        None => (spec.keys.clone(), spec.sequence_by.as_deref().or(spec.dedupe_by.as_deref())),
    };
    let winners = if kept_rows > 0 { newest_per_key(kept, &keys, order)? } else { Vec::new() };
    let winner_rows: u64 = winners.iter().map(|b| b.num_rows() as u64).sum();
    report.rows_dropped_duplicates = kept_rows - winner_rows;

    // Rules on the run as a whole.
    let set = quality::check_set(&winners, report.rows_read, &spec.rules, &inputs.trailing_rows, &who).await?;
    report.rules.extend(set);

    let schema = std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(
        projected_schema.fields().iter().filter(|f| !f.name().starts_with("__sediment")).cloned().collect::<Vec<_>>(),
    ));
    Ok(Written { batches: winners, quarantined: checked.quarantined, schema })
}

/// What an upsert makes of each increment batch: the source columns it keeps (renamed),
/// its derived columns, the delete flag and the source commit of each event.
struct Projection {
    columns: Vec<Column>,
    schema: SchemaRef,
}

enum Column {
    /// A source column, by index.
    Source(usize),
    /// A computed column (a derived column, the delete flag).
    Computed(Arc<dyn PhysicalExpr>),
    /// The constant `false` (no `delete_when`).
    False,
}

impl Projection {
    fn compile(spec: &PipelineSpec, source: &SchemaRef, source_name: &str) -> Result<Self> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            Error::invalid(format!("pipeline {}: {what} does not fit source {source_name}: {e}", spec.name))
        };
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (i, field) in source.fields().iter().enumerate() {
            let name = field.name().as_str();
            if name == CHANGE_TYPE_COLUMN || name == VERSION_COLUMN {
                continue;
            }
            if let Some(target_name) = spec.target_column(name) {
                columns.push(Column::Source(i));
                fields.push(field.as_ref().clone().with_name(target_name));
            }
        }
        // One session for the expressions, only when there are any.
        let mut ctx: Option<(SessionContext, DFSchema)> = None;
        let mut compile = |sql: &str, what: &str| -> Result<Arc<dyn PhysicalExpr>> {
            if ctx.is_none() {
                ctx = Some((SessionContext::new(), DFSchema::try_from(source.as_ref().clone())?));
            }
            let (ctx, df_schema) = ctx.as_ref().expect("made above");
            quality::physical_expr(ctx, sql, df_schema).map_err(|e| invalid(what, &e))
        };
        for (name, sql) in &spec.derived {
            let physical = compile(sql, &format!("derived column {name} ({sql})"))?;
            let data_type = physical.data_type(source).map_err(|e| invalid(&format!("derived column {name}"), &e))?;
            let nullable = physical.nullable(source).unwrap_or(true);
            fields.push(Field::new(name, data_type, nullable));
            columns.push(Column::Computed(physical));
        }
        match spec.delete_when.as_deref() {
            Some(sql) => {
                let what = format!("delete_when ({sql})");
                let physical = compile(&format!("COALESCE(({sql}), FALSE)"), &what)?;
                let data_type = physical.data_type(source).map_err(|e| invalid(&what, &e))?;
                if data_type != DataType::Boolean {
                    return Err(invalid(&what, &format!("it is of type {data_type}, expected a boolean")));
                }
                columns.push(Column::Computed(physical));
            }
            None => columns.push(Column::False),
        }
        fields.push(Field::new(DELETE_COLUMN, DataType::Boolean, false));
        let version = source
            .index_of(VERSION_COLUMN)
            .map_err(|_| Error::internal(format!("the increment of {source_name} has no {VERSION_COLUMN}")))?;
        columns.push(Column::Source(version));
        fields.push(source.field(version).as_ref().clone().with_name(ORDER_COLUMN));
        Ok(Self { columns, schema: Arc::new(Schema::new(fields)) })
    }

    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let columns = self
            .columns
            .iter()
            .map(|c| {
                Ok(match c {
                    Column::Source(i) => batch.column(*i).clone(),
                    Column::Computed(physical) => physical.evaluate(batch)?.into_array(rows)?,
                    Column::False => Arc::new(BooleanArray::from(vec![false; rows])) as ArrayRef,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                // A nullable computed value where nulls are not allowed: the delete flag's
                // COALESCE gives none; a derived column is declared as its expression says.
                if c.data_type() != f.data_type() { deltalake::arrow::compute::cast(&c, f.data_type()) } else { Ok(c) }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// The newest row per key of `rows`: the largest `order` value (nulls the smallest),
/// then the latest source commit, then the later row. One pass with a hash map over
/// Arrow's row encoding of the keys (which also orders the `order` values); batches
/// without a losing row are kept as they are, the others filtered: no sort, and no
/// copy where nothing was superseded.
fn newest_per_key(rows: Vec<RecordBatch>, keys: &[String], order: Option<&str>) -> Result<Vec<RecordBatch>> {
    use deltalake::arrow::compute::SortOptions;
    use deltalake::arrow::row::{RowConverter, SortField};
    let schema = rows[0].schema();
    let total: usize = rows.iter().map(|b| b.num_rows()).sum();
    let field = |name: &str| {
        schema
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .map_err(|_| Error::internal(format!("column {name} of the increment")))
    };
    let mut order_names: Vec<&str> = order.into_iter().collect();
    order_names.push(ORDER_COLUMN);
    let nulls_smallest = SortOptions { descending: false, nulls_first: true };
    let key_converter = RowConverter::new(keys.iter().map(|k| field(k).map(SortField::new)).collect::<Result<_>>()?)?;
    let order_converter = RowConverter::new(
        order_names
            .iter()
            .map(|o| field(o).map(|t| SortField::new_with_options(t, nulls_smallest)))
            .collect::<Result<_>>()?,
    )?;
    let mut key_rows = key_converter.empty_rows(total, total * 8);
    let mut order_rows = order_converter.empty_rows(total, total * 16);
    for batch in &rows {
        let columns = |names: &mut dyn Iterator<Item = &str>| -> Result<Vec<ArrayRef>> {
            names
                .map(|n| {
                    batch
                        .column_by_name(n)
                        .cloned()
                        .ok_or_else(|| Error::internal(format!("column {n} of the increment")))
                })
                .collect()
        };
        key_converter.append(&mut key_rows, &columns(&mut keys.iter().map(String::as_str))?)?;
        order_converter.append(&mut order_rows, &columns(&mut order_names.iter().copied())?)?;
    }
    let mut best: hashbrown::HashMap<&[u8], u32> = hashbrown::HashMap::with_capacity(total);
    for i in 0..total {
        best.entry(key_rows.row(i).data())
            .and_modify(|b| {
                if order_rows.row(i) >= order_rows.row(*b as usize) {
                    *b = i as u32;
                }
            })
            .or_insert(i as u32);
    }
    let mut winner = vec![false; total];
    for i in best.into_values() {
        winner[i as usize] = true;
    }
    drop((key_rows, order_rows));
    // A batch whose rows all win is kept as it is (the common case: a batch of
    // distinct keys copies nothing); the others are filtered.
    let mut kept = Vec::with_capacity(rows.len());
    let mut start = 0;
    for batch in rows {
        let flags = &winner[start..start + batch.num_rows()];
        start += batch.num_rows();
        if flags.iter().all(|w| *w) {
            kept.push(batch);
        } else if flags.iter().any(|w| *w) {
            let mask = BooleanArray::from(flags.to_vec());
            kept.push(deltalake::arrow::compute::filter_record_batch(&batch, &mask)?);
        }
    }
    Ok(kept)
}

/// The rows of `batch` that are not delete events (a null flag is neither: such a row
/// is neither inserted nor counted), and how many were deletes. A batch without the
/// delete flag is all rows.
pub(crate) fn without_deletes(batch: &RecordBatch) -> Result<(RecordBatch, usize)> {
    let Some(flag) = batch.column_by_name(DELETE_COLUMN) else {
        return Ok((batch.clone(), 0));
    };
    let flag = flag
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| Error::internal("the delete flag is not boolean"))?;
    let keep = deltalake::arrow::compute::not(flag)?;
    Ok((deltalake::arrow::compute::filter_record_batch(batch, &keep)?, flag.true_count()))
}

/// Commit the winners into `target` with the run's `txn` and lineage.
pub(crate) async fn commit(
    spec: &PipelineSpec,
    winners: Vec<RecordBatch>,
    schema: deltalake::arrow::datatypes::SchemaRef,
    target: &mut Table,
    txns: &[(String, i64)],
    lineage: serde_json::Value,
    report: &mut PipelineRunReport,
) -> Result<()> {
    let winner_rows: u64 = winners.iter().map(|b| b.num_rows() as u64).sum();
    if !target.exists() {
        // First run: the winners that are not deletes.
        let mut rows = Vec::new();
        let mut deletes = 0u64;
        for batch in winners {
            let (batch, deleted) = without_deletes(&batch)?;
            deletes += deleted as u64;
            rows.push(without_internal(&batch)?);
        }
        // Committed even with no rows: the txn records what was consumed.
        rows.push(RecordBatch::new_empty(schema));
        let written = target.write(rows, progress_options(spec, txns, lineage)).await?;
        report.rows_inserted = written.rows_written;
        report.rows_superseded = deletes;
        report.target_version = written.version;
        report.committed = written.version.is_some();
        return Ok(());
    }
    if winner_rows == 0 {
        // Every event was quarantined or superseded: nothing to merge, the consumed
        // versions are recorded all the same.
        let empty = RecordBatch::new_empty(plain_schema(target)?);
        let written = target.write([empty], progress_options(spec, txns, lineage)).await?;
        report.target_version = written.version;
        report.committed = written.version.is_some();
        return Ok(());
    }
    let guard = spec.sequence_by.as_deref().map(|s| {
        let s = quote(s);
        format!("(source.{s} >= target.{s} OR target.{s} IS NULL)")
    });
    let delete_condition = match &guard {
        Some(g) => format!("source.{} AND {g}", quote(DELETE_COLUMN)),
        None => format!("source.{}", quote(DELETE_COLUMN)),
    };
    // The merge refuses source columns that are neither the table's nor used: the
    // order column did its work in the deduplication.
    // Without delete_when no event deletes: the clauses are the plain upsert's, with
    // no condition to evaluate on joined rows.
    let deletes = spec.delete_when.is_some();
    let winners = winners
        .iter()
        .map(|b| {
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|i| {
                    let name = b.schema().field(*i).name().clone();
                    name != ORDER_COLUMN && (deletes || name != DELETE_COLUMN)
                })
                .collect();
            b.project(&keep)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut merge = target.merge(winners).on(spec.keys.clone());
    if deletes {
        merge = merge.when_matched_if(delete_condition, MatchedAction::Delete);
    }
    merge = match &guard {
        Some(g) => merge.when_matched_if(g.clone(), MatchedAction::UpdateAll),
        None => merge.when_matched(MatchedAction::UpdateAll),
    };
    merge = match deletes {
        true => merge.when_not_matched_if(format!("NOT source.{}", quote(DELETE_COLUMN)), NotMatchedAction::InsertAll),
        false => merge.when_not_matched_insert_all(),
    };
    let Some(merged) = execute_merge(spec, merge, txns, &lineage, report).await? else { return Ok(()) };
    let mut version = merged.version;
    if version.is_none() {
        // Nothing changed (every event superseded, or identical): the consumed versions
        // are recorded all the same, or the next run would read them again.
        let empty = RecordBatch::new_empty(plain_schema(target)?);
        version = target.write([empty], progress_options(spec, txns, lineage)).await?.version;
    }
    report.rows_inserted = merged.rows_inserted;
    report.rows_updated = merged.rows_updated + merged.rows_unchanged;
    report.rows_deleted = merged.rows_deleted;
    let applied = merged.rows_inserted + merged.rows_updated + merged.rows_unchanged + merged.rows_deleted;
    report.rows_superseded = winner_rows.saturating_sub(applied);
    report.target_version = version;
    report.committed = version.is_some();
    Ok(())
}

/// Run a pipeline's merge into its target with the run's txns and lineage; `None`
/// when a racing run had made this commit already (the report says so).
pub(crate) async fn execute_merge(
    spec: &PipelineSpec,
    mut merge: crate::change::Merge<'_>,
    txns: &[(String, i64)],
    lineage: &serde_json::Value,
    report: &mut PipelineRunReport,
) -> Result<Option<crate::change::MergeReport>> {
    for (app, version) in txns {
        merge = merge.app_transaction(app.clone(), *version);
    }
    let merged = merge.commit_info(crate::pipeline::LINEAGE_KEY, lineage.clone()).execute().await.map_err(|e| {
        if e.kind() == ErrorKind::InvalidInput {
            e.context(format!("pipeline {}: merging into {}", spec.name, spec.target))
        } else {
            e
        }
    })?;
    if merged.replayed {
        report.replayed = true;
        return Ok(None);
    }
    Ok(Some(merged))
}

/// An append that commits even without rows, with the run's txns and lineage.
pub(crate) fn progress_options(
    spec: &PipelineSpec,
    txns: &[(String, i64)],
    lineage: serde_json::Value,
) -> WriteOptions {
    let mut options = WriteOptions::append().partition_by(spec.partition_by.clone());
    for (app, version) in txns {
        options = options.app_transaction(app.clone(), *version);
    }
    options.commit_info.push((crate::pipeline::LINEAGE_KEY.to_string(), lineage));
    options.commit_empty = true;
    options
}

/// The table's schema as its scans return it.
pub(crate) fn plain_schema(table: &Table) -> Result<deltalake::arrow::datatypes::SchemaRef> {
    Ok(crate::read::scan::plain_schema(&table.arrow_schema()?))
}

/// The winners without the upserts that a recorded delete of their key is at least as
/// new as (superseded: the key stays deleted), and how many those were.
pub(crate) async fn drop_tombstoned(
    spec: &PipelineSpec,
    winners: Vec<RecordBatch>,
    tombstones: &Table,
) -> Result<(Vec<RecordBatch>, u64)> {
    let (Some(seq), true) = (spec.sequence_by.as_deref(), tombstones.exists()) else {
        return Ok((winners, 0));
    };
    let before: u64 = winners.iter().map(|b| b.num_rows() as u64).sum();
    if before == 0 {
        return Ok((winners, 0));
    }
    let (recorded, _) = tombstones.scan().execute().await?.collect().await?;
    let recorded: Vec<RecordBatch> = recorded.into_iter().filter(|b| b.num_rows() > 0).collect();
    if recorded.is_empty() {
        return Ok((winners, 0));
    }
    let ctx = SessionContext::new();
    register(&ctx, "w", winners)?;
    register(&ctx, "t", recorded)?;
    let on = spec.keys.iter().map(|k| format!("w.{k} = t.{k}", k = quote(k))).collect::<Vec<_>>().join(" AND ");
    let first_key = quote(&spec.keys[0]);
    let seq = quote(seq);
    let sql = format!(
        "SELECT w.* FROM w LEFT JOIN t ON {on} WHERE w.{d} OR t.{first_key} IS NULL OR w.{seq} > t.{seq}",
        d = quote(DELETE_COLUMN)
    );
    let kept: Vec<RecordBatch> = ctx
        .sql(&sql)
        .await
        .map_err(|e| Error::invalid(format!("pipeline {}: reading its tombstones: {e}", spec.name)))?
        .collect()
        .await?;
    let kept: Vec<RecordBatch> = kept.into_iter().filter(|b| b.num_rows() > 0).collect();
    let after: u64 = kept.iter().map(|b| b.num_rows() as u64).sum();
    Ok((kept, before - after))
}

/// Record the run's delete winners (key and sequence) in the tombstones, keeping the
/// newest per key, with the run's txns.
pub(crate) async fn write_tombstones(
    spec: &PipelineSpec,
    winners: &[RecordBatch],
    tombstones: &mut Table,
    txns: &[(String, i64)],
    lineage: &serde_json::Value,
) -> Result<()> {
    let Some(seq) = spec.sequence_by.as_deref() else { return Ok(()) };
    let mut deletes = Vec::new();
    for batch in winners {
        let flag = batch
            .column_by_name(DELETE_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<deltalake::arrow::array::BooleanArray>().cloned())
            .ok_or_else(|| Error::internal("delete flag"))?;
        if flag.true_count() == 0 {
            continue;
        }
        let rows = deltalake::arrow::compute::filter_record_batch(batch, &flag)?;
        let columns: Vec<usize> = spec
            .keys
            .iter()
            .map(String::as_str)
            .chain([seq])
            .map(|c| rows.schema().index_of(c))
            .collect::<std::result::Result<_, _>>()?;
        deletes.push(rows.project(&columns)?);
    }
    if deletes.is_empty() {
        return Ok(());
    }
    let uri = tombstones.uri().to_string();
    let what = |e: Error| e.context(format!("pipeline {}: writing its tombstones {uri}", spec.name));
    if !tombstones.exists() {
        let mut options = WriteOptions::append();
        for (app, version) in txns {
            options = options.app_transaction(app.clone(), *version);
        }
        options.commit_info.push((crate::pipeline::LINEAGE_KEY.to_string(), lineage.clone()));
        tombstones.write(deletes, options).await.map_err(what)?;
        return Ok(());
    }
    let s = quote(seq);
    let mut merge = tombstones
        .merge(deletes)
        .on(spec.keys.clone())
        .when_matched_if(format!("source.{s} > target.{s}"), MatchedAction::UpdateAll)
        .when_not_matched(NotMatchedAction::InsertAll);
    for (app, version) in txns {
        merge = merge.app_transaction(app.clone(), *version);
    }
    merge.commit_info(crate::pipeline::LINEAGE_KEY, lineage.clone()).execute().await.map_err(what)?;
    Ok(())
}

/// `batch` without the run's own columns.
fn without_internal(batch: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> =
        (0..batch.num_columns()).filter(|i| !batch.schema().field(*i).name().starts_with("__sediment")).collect();
    Ok(batch.project(&keep)?)
}
