//! Reading the change data feed: the rows each commit inserted, deleted or updated,
//! over a range of versions.
//!
//! Each row has the table's columns (in its newest schema) and
//! - `_change_type`: `insert`, `delete`, `update_preimage` or `update_postimage`;
//! - `_commit_version` and `_commit_timestamp`: the commit that made the change.
//!
//! A commit's rows come from its `cdc` files when it has any, and otherwise from its
//! `add` (inserts) and `remove` (deletes) actions with `dataChange = true`, as the
//! protocol says and as Spark's `table_changes` and delta-rs's `load_cdf` read them
//! (delta-rs's reader does the work; compaction commits, `dataChange = false`, add
//! nothing). Rows come grouped by the file they were read from, not ordered: each
//! carries its `_commit_version` (`sediment changes` prints them in version order).
//!
//! The range must lie inside what the log still holds: a version whose commit was
//! cleaned up fails with an error naming the oldest version left, as does a range on
//! a table that did not record changes at its start.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use deltalake::DeltaTableError;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use futures::{Stream, StreamExt};
use tracing::instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::read::scan::{decode_dictionaries, plain_schema};
use crate::table::Table;

/// The columns every change row has besides the table's.
pub const CHANGE_COLUMNS: [&str; 3] = ["_change_type", "_commit_version", "_commit_timestamp"];

impl Table {
    /// The change data feed from `from_version` to `to_version` (both included; the
    /// table's version when `None`). See [the module doc](crate::read::changes).
    #[instrument(skip_all, fields(table = %self.uri(), from_version, to_version))]
    pub async fn changes(&self, from_version: u64, to_version: Option<u64>) -> Result<Changes> {
        let latest = self
            .version()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no delta table at {}", self.uri())))?;
        let to = to_version.unwrap_or(latest);
        for version in [from_version, to] {
            if version > latest {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("version {version} of table {} does not exist (its newest is {latest})", self.uri()),
                ));
            }
        }
        if from_version > to {
            return Err(Error::invalid(format!(
                "a range of changes runs forward: it starts at version {from_version}, after its end at {to}"
            )));
        }
        self.check_in_log(from_version).await?;
        let builder = self.delta().clone().scan_cdf().with_starting_version(from_version).with_ending_version(to);
        let provider = DeltaCdfTableProvider::try_new(builder).map_err(Error::delta)?;
        let ctx = SessionContext::new();
        self.delta().update_datafusion_session(&ctx.state())?;
        let stream = ctx.read_table(Arc::new(provider))?.execute_stream().await.map_err(|e| feed_error(self, e))?;
        Ok(Changes { schema: plain_schema(&stream.schema()), stream, from_version, to_version: to })
    }

    /// Fail with a clear error when the commit of `version` is no longer in the log.
    async fn check_in_log(&self, version: u64) -> Result<()> {
        let log_store = self.delta().log_store();
        if log_store.read_commit_entry(version).await.map_err(Error::delta)?.is_some() {
            return Ok(());
        }
        let oldest = oldest_commit(self).await?;
        Err(Error::new(
            ErrorKind::NotFound,
            match oldest {
                Some(oldest) => format!(
                    "the changes of version {version} of table {} are no longer available: its log starts at version {oldest} (older commits were cleaned up by log retention)",
                    self.uri()
                ),
                None => format!("version {version} of table {} is not in its log", self.uri()),
            },
        ))
    }
}

/// The oldest commit (JSON) still in the table's log.
async fn oldest_commit(table: &Table) -> Result<Option<u64>> {
    let store = table.delta().log_store().object_store(None);
    let prefix = deltalake::Path::from("_delta_log");
    let mut listing = store.list(Some(&prefix));
    let mut oldest: Option<u64> = None;
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| Error::delta(DeltaTableError::from(e)))?;
        let name = meta.location.filename().unwrap_or_default();
        if let Some(stem) = name.strip_suffix(".json")
            && let Ok(version) = stem.parse::<u64>()
        {
            oldest = Some(oldest.map_or(version, |o: u64| o.min(version)));
        }
    }
    Ok(oldest)
}

/// The error of a feed read, with delta-rs's change-data errors made plain.
fn feed_error(table: &Table, err: deltalake::datafusion::error::DataFusionError) -> Error {
    use deltalake::datafusion::error::DataFusionError as D;
    let delta = match &err {
        D::External(inner) => inner.downcast_ref::<DeltaTableError>(),
        _ => None,
    };
    match delta {
        Some(DeltaTableError::ChangeDataNotEnabled { version }) => Error::invalid(format!(
            "table {} did not record changes at version {version}: delta.enableChangeDataFeed was not set",
            table.uri()
        )),
        Some(DeltaTableError::ChangeDataNotRecorded { version, .. }) => Error::invalid(format!(
            "table {} did not record changes at version {version} (delta.enableChangeDataFeed was off): start the range after it was turned on",
            table.uri()
        )),
        _ => Error::from(err).context(format!("reading the change data feed of table {}", table.uri())),
    }
}

/// A running read of the change data feed: a stream of record batches.
pub struct Changes {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    from_version: u64,
    to_version: u64,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("from_version", &self.from_version)
            .field("to_version", &self.to_version)
            .finish()
    }
}

impl Changes {
    /// The schema of the batches: the table's columns and [`CHANGE_COLUMNS`].
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The versions read, both included.
    pub fn versions(&self) -> (u64, u64) {
        (self.from_version, self.to_version)
    }

    /// Every batch, collected.
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(batch) = self.next().await {
            out.push(batch?);
        }
        Ok(out)
    }
}

impl Stream for Changes {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let schema = self.schema.clone();
        self.stream.poll_next_unpin(cx).map(|batch| {
            batch.map(|batch| match batch {
                Ok(batch) => decode_dictionaries(batch, &schema),
                Err(e) => Err(Error::from(e).context("reading the change data feed")),
            })
        })
    }
}
