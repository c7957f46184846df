//! Writing a checkpoint now: `sediment checkpoint URI`.
//!
//! Commits already write one every `delta.checkpointInterval` versions (delta-rs's
//! post-commit hook); this writes one at the table's current version on demand, so a
//! reader (or a log cleanup to come) can start there. The checkpoint is written by
//! delta-rs (classic, single-part Parquet) with `_last_checkpoint` updated.

use serde::Serialize;
use tracing::instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::features;

/// What writing a checkpoint did.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// The version the checkpoint describes.
    pub version: u64,
    /// Live files it lists.
    pub files: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl Table {
    /// Write a checkpoint of the current version.
    #[instrument(skip_all, fields(table = %self.uri(), version = ?self.version()))]
    pub async fn checkpoint(&self) -> Result<CheckpointReport> {
        let started = std::time::Instant::now();
        let version = self
            .version()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no delta table at {}", self.uri())))?;
        features::check_writable(self.uri(), self.state()?)?;
        deltalake::checkpoints::create_checkpoint(self.delta(), None).await.map_err(|e| {
            Error::delta(e).context(format!("writing a checkpoint of table {} at version {version}", self.uri()))
        })?;
        Ok(CheckpointReport {
            version,
            files: self.state()?.log_data().num_files(),
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}
