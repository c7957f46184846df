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

use deltalake::DeltaResult;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{
    CommitBuilder, CommitProperties, FinalizedCommit, TableReference, TransactionError,
};
use deltalake::logstore::LogStoreRef;
use deltalake::protocol::DeltaOperation;
use deltalake::table::state::DeltaTableState;

/// How a commit landed.
pub enum Committed {
    /// Put at this version straight away: the caller's snapshot is still at the
    /// version before (advance it with `DeltaTable::update_incremental`).
    Direct(u64),
    /// Through delta-rs's path, with its snapshot at the new version.
    Finalized(FinalizedCommit),
}

impl Committed {
    /// The version committed.
    pub fn version(&self) -> u64 {
        match self {
            Committed::Direct(version) => *version,
            Committed::Finalized(finalized) => finalized.version(),
        }
    }
}

/// Commit `actions` on top of `snapshot` (`None`: create version 0) through
/// `log_store`: put-if-absent at the next version first, delta-rs's path after a lost
/// race or when a checkpoint is due with this version.
pub async fn commit(
    snapshot: Option<&DeltaTableState>,
    log_store: LogStoreRef,
    properties: CommitProperties,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> DeltaResult<Committed> {
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
            Ok(()) => return Ok(Committed::Direct(version)),
            Err(TransactionError::VersionAlreadyExists(_)) => {
                tracing::debug!(version, "version taken by another writer; checking for conflicts");
            }
            Err(e) => {
                let _ = log_store.abort_commit_entry(version, entry, operation_id).await;
                return Err(e.into());
            }
        }
    }
    Ok(Committed::Finalized(prepared.await?.await?))
}
