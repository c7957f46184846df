//! Deletes that rewrite only what they must.
//!
//! `DELETE WHERE predicate` is planned like a scan: partition pruning and statistics
//! skipping pick the *candidate* files before anything is read. Then:
//! - when the predicate mentions only partition columns, the candidates are removed
//!   whole, without being read (partition matching is exact);
//! - otherwise each candidate is read alone (deletion vectors applied), its rows that
//!   do not match are streamed into a new file, and the old file is removed. A
//!   candidate with no matching row is left untouched; one whose rows all match is
//!   removed without a new file.
//!
//! Memory holds one file's batches in flight, never the table. One commit removes and
//! adds everything; if another writer removed a file the delete read, the delete is
//! planned again on the newest version (bounded, reported) and the result is as if it
//! ran after that writer.

use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::{filter_record_batch, not};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use serde::Serialize;
use tracing::instrument;

use crate::commit::{CommitRequest, commit};
use crate::error::{Error, ErrorKind, Result};
use crate::features;
use crate::predicate::Predicate;
use crate::schema::SchemaMode;
use crate::sink::FileSink;
use crate::table::Table;

/// How many times a delete that lost a race is planned again.
const MAX_ATTEMPTS: usize = 10;

/// What a delete did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteReport {
    /// The version committed (`None` when no row matched).
    pub version: Option<u64>,
    /// Live files in the snapshot.
    pub files_considered: usize,
    /// Files skipped by partition pruning and statistics, never read.
    pub files_pruned: usize,
    /// Files read to find matching rows.
    pub files_read: usize,
    /// Files removed whole (every row matched, or a partition-only predicate).
    pub files_removed: usize,
    /// Files rewritten without their matching rows.
    pub files_rewritten: usize,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Rows copied into rewritten files.
    pub rows_copied: u64,
    /// Bytes of new files.
    pub bytes_written: u64,
    /// Times the delete was planned again after losing a race.
    pub retries: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// One candidate file's fate.
enum FileOutcome {
    Untouched,
    Removed { rows: u64 },
    Rewritten { adds: Vec<Add>, deleted: u64, copied: u64 },
}

impl Table {
    /// Delete the rows matching `predicate` (a SQL boolean expression).
    #[instrument(skip_all, fields(table = %self.uri(), predicate))]
    pub async fn delete(&mut self, predicate: &str) -> Result<DeleteReport> {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let mut report = self.delete_once(predicate).await?;
            match report.version {
                Some(Err(e)) if e.kind() == ErrorKind::Conflict && retries + 1 < MAX_ATTEMPTS => {
                    retries += 1;
                    tracing::info!(retries, error = %e, "delete lost a race; planning again on the newest version");
                    self.refresh().await?;
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(version)) => {
                    report.report.version = Some(version);
                    report.report.retries = retries;
                    report.report.duration_ms = started.elapsed().as_millis() as u64;
                    return Ok(report.report);
                }
                None => {
                    report.report.retries = retries;
                    report.report.duration_ms = started.elapsed().as_millis() as u64;
                    return Ok(report.report);
                }
            }
        }
    }

    async fn delete_once(&mut self, sql: &str) -> Result<DeleteAttempt> {
        let state = self.state()?;
        features::check_writable(self.uri(), state)?;
        if features::is_append_only(state) {
            return Err(Error::invalid(format!(
                "table {} is append-only (delta.appendOnly = true); rows cannot be deleted",
                self.uri()
            )));
        }
        let plan = self.plan_scan(Some(sql))?;
        let predicate = plan.predicate.clone().ok_or_else(|| Error::internal("a delete plan has a predicate"))?;
        let partition_columns = self.partition_columns()?;
        let mut report = DeleteReport {
            files_considered: plan.report.files_in_snapshot,
            files_pruned: plan.report.files_in_snapshot - plan.files.len(),
            ..Default::default()
        };
        let whole_files = predicate.only_mentions(&partition_columns);
        let mut actions: Vec<Action> = Vec::new();
        let mut written: Vec<Add> = Vec::new();
        let removes: std::collections::HashMap<String, deltalake::kernel::Remove> =
            state.log_data().iter().map(|f| (f.path().to_string(), f.remove_action(true))).collect();
        for add in &plan.files {
            let outcome = if whole_files {
                FileOutcome::Removed { rows: add_rows(add) }
            } else {
                report.files_read += 1;
                match self.rewrite_without(add, &predicate).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        FileSink::abort(self, &written).await;
                        return Err(e);
                    }
                }
            };
            match outcome {
                FileOutcome::Untouched => {}
                FileOutcome::Removed { rows } => {
                    report.files_removed += 1;
                    report.rows_deleted += rows;
                    actions.push(Action::Remove(removes[&add.path].clone()));
                }
                FileOutcome::Rewritten { adds, deleted, copied } => {
                    report.files_rewritten += 1;
                    report.rows_deleted += deleted;
                    report.rows_copied += copied;
                    report.bytes_written += adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
                    actions.push(Action::Remove(removes[&add.path].clone()));
                    written.extend(adds);
                }
            }
        }
        if actions.is_empty() {
            return Ok(DeleteAttempt { report, version: None });
        }
        actions.extend(written.iter().cloned().map(Action::Add));
        let request = CommitRequest {
            operation: DeltaOperation::Delete { predicate: Some(sql.to_string()) },
            metrics: vec![
                ("numRemovedFiles", (report.files_removed + report.files_rewritten) as u64),
                ("numAddedFiles", written.len() as u64),
                ("numDeletedRows", report.rows_deleted),
                ("numCopiedRows", report.rows_copied),
            ],
            blind_append: false,
            max_retries: 0,
            app_transaction: None,
        };
        let result = commit(self, actions, request).await;
        if result.is_err() {
            FileSink::abort(self, &written).await;
        }
        Ok(DeleteAttempt { report, version: Some(result) })
    }

    /// Read one file and write its rows that do not match `predicate` to a new file.
    async fn rewrite_without(&self, add: &Add, predicate: &Predicate) -> Result<FileOutcome> {
        let ctx = SessionContext::new();
        self.delta().update_datafusion_session(&ctx.state())?;
        let provider = self.delta().table_provider().with_adds([add.clone()]).build().await?;
        let mut stream = ctx.read_table(Arc::new(provider))?.execute_stream().await?;
        let plain = crate::scan::plain_schema(&stream.schema());
        let schema = self.arrow_schema()?;
        let mut sink =
            FileSink::new(self, schema, self.partition_columns()?, SchemaMode::Strict, self.target_file_size()?)?;
        let (mut deleted, mut copied) = (0u64, 0u64);
        let result: Result<()> = async {
            while let Some(batch) = stream.next().await {
                let batch: RecordBatch = crate::scan::decode_dictionaries(batch?, &plain)?;
                let matches = predicate.matches(&batch)?;
                let keep = filter_record_batch(&batch, &not(&matches)?)?;
                deleted += (batch.num_rows() - keep.num_rows()) as u64;
                copied += keep.num_rows() as u64;
                if keep.num_rows() > 0 {
                    let fitted = sink.fit(&keep)?;
                    sink.write_fitted(fitted).await?;
                }
            }
            Ok(())
        }
        .await;
        let adds = sink.finish().await;
        match (result, adds) {
            (Ok(()), Ok(adds)) => {
                if deleted == 0 {
                    FileSink::abort(self, &adds).await;
                    Ok(FileOutcome::Untouched)
                } else if copied == 0 {
                    FileSink::abort(self, &adds).await;
                    Ok(FileOutcome::Removed { rows: deleted })
                } else {
                    Ok(FileOutcome::Rewritten { adds, deleted, copied })
                }
            }
            (Err(e), Ok(adds)) => {
                FileSink::abort(self, &adds).await;
                Err(e.context(format!("rewriting {}", add.path)))
            }
            (_, Err(e)) => Err(e.context(format!("rewriting {}", add.path))),
        }
    }
}

/// Rows of a file removed whole: from its statistics, less its deletion vector.
fn add_rows(add: &Add) -> u64 {
    let rows = add
        .stats
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("numRecords").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    let deleted = add.deletion_vector.as_ref().map_or(0, |dv| dv.cardinality.max(0) as u64);
    rows.saturating_sub(deleted)
}

struct DeleteAttempt {
    report: DeleteReport,
    /// `None`: nothing matched; else the commit's outcome.
    version: Option<Result<u64>>,
}
