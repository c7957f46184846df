//! Committing actions to the Delta log.
//!
//! Every Sediment commit carries a `commitInfo` with the operation, its parameters,
//! the read version, operation metrics and `engineInfo = "sediment/<version>"`.
//! Commits on every store are put-if-absent (`If-None-Match` on S3), so concurrent
//! writers never overwrite each other's log entries; the entry is put at the next
//! version straight away (`sediment_compactor::commit`), and after a lost race
//! delta-rs's conflict checker decides whether it can be rebased over what landed
//! first. Commits write a checkpoint every `delta.checkpointInterval` versions
//! (delta-rs's post-commit hook) but do not clean up expired log files: that listing
//! of the whole log on every commit is left to retention.

use std::collections::HashMap;

use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::protocol::DeltaOperation;
use serde_json::Value;

use crate::error::Result;
use crate::table::Table;

/// The `engineInfo` Sediment writes into every commit.
pub fn engine_info() -> String {
    format!("sediment/{}", env!("CARGO_PKG_VERSION"))
}

/// Everything a commit needs besides its actions.
pub(crate) struct CommitRequest {
    pub operation: DeltaOperation,
    pub metrics: Vec<(&'static str, u64)>,
    pub blind_append: bool,
    pub max_retries: usize,
    /// Delta `txn` actions: an application's batch version, committed with the data.
    pub app_transactions: Vec<Transaction>,
    /// What the commit says beyond delta-rs's operation: another operation name, more
    /// `commitInfo` keys.
    pub extra: CommitExtra,
}

/// The parts of a `commitInfo` an operation delta-rs has no name for sets itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct CommitExtra {
    /// Replaces the operation's name (`commitInfo.operation`).
    pub operation: Option<&'static str>,
    /// Replaces `commitInfo.operationParameters` when not empty.
    pub parameters: HashMap<String, Value>,
    /// More top-level `commitInfo` keys (for example `sediment`).
    pub info: Vec<(String, Value)>,
}

/// Commit `actions` on top of the version `table` is at (or create version 0 when
/// the table does not exist), and move `table` to the committed version.
pub(crate) async fn commit(table: &mut Table, mut actions: Vec<Action>, request: CommitRequest) -> Result<u64> {
    let mut info = request.operation.get_commit_info();
    info.timestamp = Some(chrono::Utc::now().timestamp_millis());
    info.engine_info = Some(engine_info());
    info.read_version = table.version();
    info.is_blind_append = Some(request.blind_append);
    let metrics: HashMap<String, Value> =
        request.metrics.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
    info.info.insert("operationMetrics".into(), Value::Object(metrics.into_iter().collect()));
    info.info.insert("clientVersion".into(), Value::String(engine_info()));
    if let Some(operation) = request.extra.operation {
        info.operation = Some(operation.to_string());
    }
    if !request.extra.parameters.is_empty() {
        info.operation_parameters = Some(request.extra.parameters);
    }
    for (key, value) in request.extra.info {
        info.info.insert(key, value);
    }
    actions.insert(0, Action::CommitInfo(info));

    // No log cleanup after the commit: delta-rs's lists the whole `_delta_log` on
    // every commit (a round trip and more on S3, for every write) and can delete logs
    // time travel still needs; retention is a maintenance job of its own.
    let mut properties =
        CommitProperties::default().with_max_retries(request.max_retries).with_cleanup_expired_logs(Some(false));
    if !request.app_transactions.is_empty() {
        properties = properties.with_application_transactions(request.app_transactions);
    }
    let delta = table.delta_mut();
    Ok(sediment_compactor::commit::commit(delta, properties, actions, request.operation).await?)
}

/// Rows stored in `add`'s file, from its statistics (rows its deletion vector
/// deletes included); `None` without statistics.
pub(crate) fn stored_rows(add: &Add) -> Option<u64> {
    let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref()?).ok()?;
    stats.get("numRecords")?.as_u64()
}

/// The `remove` (dataChange = true) of a live file, carrying what its `add` said.
pub(crate) fn remove_action(add: &Add) -> Remove {
    Remove {
        path: add.path.clone(),
        data_change: true,
        deletion_timestamp: Some(chrono::Utc::now().timestamp_millis()),
        extended_file_metadata: Some(true),
        partition_values: Some(add.partition_values.clone()),
        size: Some(add.size),
        tags: add.tags.clone(),
        deletion_vector: add.deletion_vector.clone(),
        base_row_id: add.base_row_id,
        default_row_commit_version: add.default_row_commit_version,
    }
}
