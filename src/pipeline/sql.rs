//! A sql run: a DataFusion query over the source tables (by their catalog names, each
//! at the version the run consumes), written to the target.
//!
//! Which target partitions a run recomputes: the values of the target's partition
//! columns among the source rows that changed since the last run (the rows of files
//! the source's commits added and removed, or the partitions those files belong to
//! when the source is partitioned by those columns). The query then runs over only
//! those source rows' partitions (sources that have the target's partition columns are
//! filtered to the affected values; the others, dimension tables, are read whole), and
//! its rows replace the affected partitions (`overwrite_partitions`) or are merged on
//! the key, target rows of the affected partitions the query no longer produces being
//! deleted (`merge`). This is right when a target partition's rows come from source
//! rows with the same partition values (a `GROUP BY day` of the sources' `day`), which
//! is what a partitioned gold table usually is. The first run computes everything.

use std::collections::BTreeSet;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::catalog::MemorySchemaProvider;
use deltalake::datafusion::common::TableReference;
use deltalake::datafusion::execution::object_store::ObjectStoreUrl;
use deltalake::datafusion::prelude::SessionContext;

use crate::change::{MatchedAction, NotMatchedAction, NotMatchedBySourceAction};
use crate::error::{Error, Result};
use crate::pipeline::increment::{IncrementKind, IncrementPlan};
use crate::pipeline::quality::{self, RowRules, RunIdentity};
use crate::pipeline::rules::quote;
use crate::pipeline::spec::{PipelineSpec, SqlWriteMode};
use crate::pipeline::{PipelineRunReport, SourceTable};
use crate::table::Table;
use crate::table::storage::{BoundedStore, IoLimiter, IoSettings};

/// One partition of the target: its values (Delta's text form; `None`: null), in the
/// order of the spec's `partition_by`.
pub(crate) type PartitionKey = Vec<Option<String>>;

/// The partitions of the target that changed rows of `source` fall in.
pub(crate) async fn affected(
    spec: &PipelineSpec,
    plan: &mut IncrementPlan,
    source: &Table,
) -> Result<BTreeSet<PartitionKey>> {
    let columns = &spec.partition_by;
    let mut keys = BTreeSet::new();
    if plan.increment.increment == IncrementKind::NoDataChange || columns.is_empty() {
        return Ok(keys);
    }
    let source_partitions = source.partition_columns()?;
    if columns.iter().all(|c| source_partitions.contains(c)) {
        for p in &plan.increment.touched_partitions {
            keys.insert(columns.iter().map(|c| p.get(c).cloned().flatten()).collect());
        }
        return Ok(keys);
    }
    let schema = source.arrow_schema()?;
    if !columns.iter().all(|c| schema.field_with_name(c).is_ok()) {
        // A source without the partition columns (a dimension): its changes touch
        // every partition; the caller recomputes everything.
        return Err(Error::invalid("no partition columns"));
    }
    let mut rows = plan.read(source).await?;
    let what = format!("the files the commits of source {} removed", plan.increment.table);
    let removed = std::mem::take(&mut plan.removed);
    rows.extend(crate::read::scan::read_files(source, removed, &what).await?.0);
    for batch in &rows {
        let texts: Vec<deltalake::arrow::array::StringArray> = columns
            .iter()
            .map(|c| {
                let column = batch.column_by_name(c).ok_or_else(|| Error::internal(format!("column {c}")))?;
                let text = deltalake::arrow::compute::cast(column, &DataType::Utf8)?;
                text.as_any()
                    .downcast_ref::<deltalake::arrow::array::StringArray>()
                    .cloned()
                    .ok_or_else(|| Error::internal(format!("column {c} as text")))
            })
            .collect::<Result<_>>()?;
        for r in 0..batch.num_rows() {
            keys.insert(
                texts
                    .iter()
                    .map(|t| (!deltalake::arrow::array::Array::is_null(t, r)).then(|| t.value(r).to_string()))
                    .collect(),
            );
        }
    }
    Ok(keys)
}

/// A SQL condition selecting `partitions` of `columns`, each column name prefixed by
/// `qualifier` (`target.`, or empty).
pub(crate) fn partition_predicate(columns: &[String], partitions: &BTreeSet<PartitionKey>, qualifier: &str) -> String {
    if partitions.is_empty() {
        return "FALSE".into();
    }
    partitions
        .iter()
        .map(|key| {
            let parts: Vec<String> = columns
                .iter()
                .zip(key)
                .map(|(c, v)| match v {
                    Some(v) => format!("{qualifier}{} = '{}'", quote(c), v.replace('\'', "''")),
                    None => format!("{qualifier}{} IS NULL", quote(c)),
                })
                .collect();
            format!("({})", parts.join(" AND "))
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Run the query with each source registered under its catalog name (filtered by
/// `filter` when given and the source has the partition columns).
pub(crate) async fn query(
    spec: &PipelineSpec,
    sources: &[SourceTable<'_>],
    filter: Option<&str>,
) -> Result<(Vec<RecordBatch>, deltalake::arrow::datatypes::SchemaRef)> {
    let ctx = SessionContext::new();
    let limiter = IoLimiter::new(&IoSettings::default());
    for (i, source) in sources.iter().enumerate() {
        let table = source.table;
        let url = table.url();
        let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
        let root = table.delta().log_store().root_object_store(None);
        ctx.runtime_env().register_object_store(store_url.as_ref(), Arc::new(BoundedStore::new(root, limiter.clone())));
        let provider = table.delta().table_provider().build().await?;
        let hidden = format!("__sediment_source_{i}");
        ctx.register_table(hidden.as_str(), Arc::new(provider))?;
        let schema = table.arrow_schema()?;
        let mut frame = ctx.table(hidden.as_str()).await?;
        if let Some(filter) = filter
            && spec.partition_by.iter().all(|c| schema.field_with_name(c).is_ok())
        {
            let expr = frame.parse_sql_expr(filter)?;
            frame = frame.filter(expr)?;
        }
        let (namespace, name) = source.name.split_once('.').unwrap_or(("public", source.name));
        let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::internal("no default catalog"))?;
        if catalog.schema(namespace).is_none() {
            catalog.register_schema(namespace, Arc::new(MemorySchemaProvider::new()))?;
        }
        ctx.register_table(TableReference::partial(namespace, name), frame.into_view())?;
    }
    let query = spec.query.as_deref().unwrap_or_default();
    let sql = match filter {
        Some(filter) => format!("SELECT * FROM ({query}) AS __sediment_query WHERE {filter}"),
        None => query.to_string(),
    };
    let frame = ctx
        .sql(&sql)
        .await
        .map_err(|e| Error::invalid(format!("pipeline {}: the query does not fit its sources: {e}", spec.name)))?;
    let schema: deltalake::arrow::datatypes::SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(|e| Error::from(e).context(format!("pipeline {}: running the query", spec.name)))?;
    Ok((batches.into_iter().filter(|b| b.num_rows() > 0).collect(), schema))
}

/// Check the query's rows, then write them: replacing `partitions` (all when `None`)
/// or merging on the key. Returns the quarantined rows for the caller to commit first.
pub(crate) async fn check(
    spec: &PipelineSpec,
    rows: Vec<RecordBatch>,
    who: &RunIdentity<'_>,
    trailing: &[u64],
    report: &mut PipelineRunReport,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    report.rows_read = rows.iter().map(|b| b.num_rows() as u64).sum();
    if rows.is_empty() {
        let set = quality::check_set(&[], 0, &spec.rules, trailing, who).await?;
        report.rules = set;
        return Ok((Vec::new(), Vec::new()));
    }
    let row_rules = RowRules::compile(&spec.rules, &rows[0].schema(), &spec.name)?;
    let checked = quality::check_rows(rows, &row_rules, None, who)?;
    report.rules = checked.results;
    report.rows_quarantined = checked.quarantined.iter().map(|b| b.num_rows() as u64).sum();
    let kept: Vec<RecordBatch> = checked.kept.into_iter().filter(|b| b.num_rows() > 0).collect();
    let set = quality::check_set(&kept, report.rows_read, &spec.rules, trailing, who).await?;
    report.rules.extend(set);
    Ok((kept, checked.quarantined))
}

/// Write the checked rows to the target.
pub(crate) async fn commit(
    spec: &PipelineSpec,
    (mut rows, schema): (Vec<RecordBatch>, deltalake::arrow::datatypes::SchemaRef),
    target: &mut Table,
    partitions: Option<&BTreeSet<PartitionKey>>,
    txns: &[(String, i64)],
    lineage: serde_json::Value,
    report: &mut PipelineRunReport,
) -> Result<()> {
    let merge = spec.write == SqlWriteMode::Merge && target.exists();
    if !merge {
        let mut options = match partitions {
            Some(p) if target.exists() => {
                crate::write::WriteOptions::append().replace_where(partition_predicate(&spec.partition_by, p, ""))
            }
            _ => crate::write::WriteOptions::overwrite(),
        };
        options = options.partition_by(spec.partition_by.clone());
        for (app, version) in txns {
            options = options.app_transaction(app.clone(), *version);
        }
        options.commit_info.push((crate::pipeline::LINEAGE_KEY.to_string(), lineage));
        if target.already_committed(&options).await? {
            report.replayed = true;
            return Ok(());
        }
        // No rows (the partitions' source rows are all gone): still a commit, which
        // replaces them with nothing and records the txns.
        options.commit_empty = true;
        rows.push(RecordBatch::new_empty(schema));
        let written = target
            .write(rows, options)
            .await
            .map_err(|e| e.context(format!("pipeline {}: writing {}", spec.name, target.uri())))?;
        report.rows_inserted = written.rows_written;
        report.target_version = written.version;
        report.committed = written.version.is_some();
        return Ok(());
    }
    if rows.is_empty() {
        // The merge learns the source's columns from a batch, even an empty one.
        rows.push(RecordBatch::new_empty(schema));
    }
    let mut merge = target
        .merge(rows)
        .on(spec.keys.clone())
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched(NotMatchedAction::InsertAll);
    merge = match partitions {
        Some(p) => merge.when_not_matched_by_source_if(
            partition_predicate(&spec.partition_by, p, "target."),
            NotMatchedBySourceAction::Delete,
        ),
        None => merge.when_not_matched_by_source(NotMatchedBySourceAction::Delete),
    };
    for (app, version) in txns {
        merge = merge.app_transaction(app.clone(), *version);
    }
    let merged = merge.commit_info(crate::pipeline::LINEAGE_KEY, lineage.clone()).execute().await?;
    if merged.replayed {
        report.replayed = true;
        return Ok(());
    }
    let mut version = merged.version;
    if version.is_none() {
        // Nothing changed: the consumed versions are recorded all the same.
        let empty = RecordBatch::new_empty(crate::pipeline::upsert::plain_schema(target)?);
        version = target.write([empty], crate::pipeline::upsert::progress_options(spec, txns, lineage)).await?.version;
    }
    report.rows_inserted = merged.rows_inserted;
    report.rows_updated = merged.rows_updated + merged.rows_unchanged;
    report.rows_replaced = merged.rows_deleted;
    report.target_version = version;
    report.committed = version.is_some();
    Ok(())
}
