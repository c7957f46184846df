//! Putting a commit at the next version without delta-rs's pre-put listing.
//!
//! delta-rs's commit path lists `_delta_log` for versions newer than the one read
//! before it puts the entry (a round trip on every commit, 30-60 ms on S3), although
//! the put is conditional (put-if-absent) and detects a lost race by itself.
//! [`commit`] puts the entry at `read version + 1` straight away; only when that
//! version is taken (or there is no version yet, or a checkpoint is due, which
//! delta-rs's post-commit hook writes) does it go through delta-rs's path, with its
//! listing, conflict checker and retries as `properties` say. Every writer of
//! Sediment (the table's commits and the compactor's) commits through here.

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference, TransactionError};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaResult, DeltaTable};

/// Commit `actions` on top of the version `table` is at (or create version 0 when it
/// has none), put-if-absent at the next version first, delta-rs's path after a lost
/// race or when a checkpoint is due with this version; `table` moves to the version
/// committed, which is returned. An `Err` means nothing was committed.
pub async fn commit(
    table: &mut DeltaTable,
    properties: CommitProperties,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> DeltaResult<u64> {
    let log_store = table.log_store();
    let snapshot = table.snapshot().ok();
    // The version this commit takes if nobody committed since the read, unless a
    // checkpoint is due with it (delta-rs's post-commit hook writes those).
    let direct = snapshot.and_then(|s| {
        let next = s.version() + 1;
        let interval = s.table_config().checkpoint_interval.map_or(100, |n| n.get());
        (!(next + 1).is_multiple_of(interval)).then_some(next)
    });
    let prepared = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(snapshot.map(|s| s as &dyn TableReference), log_store.clone(), operation)
        .into_prepared_commit_future()
        .await?;
    if let Some(version) = direct {
        let entry = prepared.commit_or_bytes().clone();
        let operation_id = uuid::Uuid::new_v4();
        match log_store.write_commit_entry(version, entry.clone(), operation_id).await {
            Ok(()) => {
                drop(prepared);
                advance(table, version).await;
                return Ok(version);
            }
            Err(TransactionError::VersionAlreadyExists(_)) => {
                tracing::debug!(version, "version taken by another writer; checking for conflicts");
            }
            Err(e) => {
                let _ = log_store.abort_commit_entry(version, entry, operation_id).await;
                return Err(e.into());
            }
        }
    }
    // Past this await the commit has landed; what follows (a due checkpoint, the new
    // snapshot) may fail without undoing it.
    let landed = prepared.await?;
    let version = landed.version;
    match landed.await {
        Ok(finalized) => {
            // The commit's own snapshot (delta-rs brings it to the new version after
            // the commit): no second listing and reading of the log.
            table.state = Some(finalized.snapshot());
        }
        Err(e) => {
            tracing::warn!(version, error = %e, "committed, but the work after the commit failed");
            advance(table, version).await;
        }
    }
    Ok(version)
}

/// Move `table` to `version`, which this process committed. A commit that landed must
/// not look failed because reading it back did (a writer that gives up deletes its
/// files, which the log now references): on failure the handle stays at the version
/// it read, and the next commit finds this one and goes through delta-rs's path.
async fn advance(table: &mut DeltaTable, version: u64) {
    if let Err(e) = table.update_incremental(Some(version as _)).await {
        tracing::warn!(version, error = %e, "committed, but the log could not be read back");
    }
}
