//! Table history: one entry per commit, newest first.

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;

/// One commit of the table's log.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// The version the commit created.
    pub version: u64,
    /// Commit time in milliseconds since the epoch (`inCommitTimestamp` when present).
    pub timestamp: Option<i64>,
    /// Operation (`WRITE`, `MERGE`, `OPTIMIZE`, ...).
    pub operation: Option<String>,
    /// Operation parameters.
    pub parameters: Value,
    /// Operation metrics (files, rows, bytes).
    pub metrics: Value,
    /// The engine that wrote the commit.
    pub engine: Option<String>,
    /// The version the writer read.
    pub read_version: Option<u64>,
    /// The daemon's job that made the commit (`commitInfo.sediment`: job id, attempt,
    /// daemon, reason), when the service made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Value>,
    /// The pipeline run that made the commit (`commitInfo.sedimentPipeline`: pipeline,
    /// run, source tables and version ranges, row counts), when a pipeline made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<Value>,
}

impl Table {
    /// The commits up to this handle's version, newest first, at most `limit`.
    ///
    /// Stops at the oldest commit still in the log (older ones may have been cleaned up).
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>> {
        let latest = self
            .version()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no delta table at {}", self.uri())))?;
        let log_store = self.delta().log_store();
        let limit = limit.unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        for version in (0..=latest).rev().take(limit) {
            let Some(bytes) = log_store.read_commit_entry(version).await? else {
                break;
            };
            entries.push(parse_commit(version, &bytes).map_err(|e| e.context(format!("table {}", self.uri())))?);
        }
        Ok(entries)
    }
}

fn parse_commit(version: u64, bytes: &[u8]) -> Result<HistoryEntry> {
    let mut entry = HistoryEntry {
        version,
        timestamp: None,
        operation: None,
        parameters: Value::Null,
        metrics: Value::Null,
        engine: None,
        read_version: None,
        job: None,
        pipeline: None,
    };
    for action in crate::table::log::commit_actions::<Value>(version, bytes)? {
        if let Some(info) = action.get("commitInfo") {
            entry.timestamp = info.get("inCommitTimestamp").or_else(|| info.get("timestamp")).and_then(Value::as_i64);
            entry.operation = info.get("operation").and_then(Value::as_str).map(str::to_string);
            entry.parameters = info.get("operationParameters").cloned().unwrap_or(Value::Null);
            entry.metrics = info.get("operationMetrics").cloned().unwrap_or(Value::Null);
            entry.engine = info
                .get("engineInfo")
                .or_else(|| info.get("clientVersion"))
                .and_then(Value::as_str)
                .map(str::to_string);
            entry.read_version = info.get("readVersion").and_then(Value::as_u64);
            entry.job = info.get("sediment").cloned();
            entry.pipeline = info.get(crate::pipeline::LINEAGE_KEY).cloned();
        }
    }
    Ok(entry)
}
