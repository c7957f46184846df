//! Restore: one new commit (operation RESTORE) that makes an older version's files,
//! deletion vectors and metadata the table's again.
//!
//! The commit removes every live file the target version does not have (or has with
//! another deletion vector) and adds back every file of the target the current
//! version lacks, all with `dataChange = true`, so readers of the change data feed
//! see the difference as deletes and inserts. The protocol is never lowered. Before
//! committing, every data file it adds back is checked to still exist; when vacuum
//! removed one, the restore names them and commits nothing. A concurrent commit is
//! handled like every writer's: planned again on the newest version under the shared
//! retry policy.

use std::collections::HashSet;

use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use object_store::ObjectStoreExt as _;
use serde::Serialize;
use tracing::instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::commit::{CommitRequest, commit, remove_action, stored_rows};
use crate::table::conflict::{RetryBudget, RetrySettings, gave_up};
use crate::table::features;
use crate::table::paths::{log_path, vector_file};
use crate::{OpenOptions, Tag};

/// Which version to restore.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    Version(u64),
    /// The newest version committed at or before this time.
    AsOf(chrono::DateTime<chrono::Utc>),
    /// The version a tag names.
    Tag(String),
}

/// What a restore did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// The version restored.
    pub restored_version: u64,
    /// The version committed (`None`: a dry run, or nothing to change).
    pub version: Option<u64>,
    pub files_added: usize,
    pub files_removed: usize,
    /// Rows of the files added back and removed (from their statistics, less their
    /// deletion vectors).
    pub rows_added: u64,
    pub rows_removed: u64,
    /// Whether the table's metadata (schema, properties) goes back too.
    pub metadata_restored: bool,
    pub retries: usize,
    pub duration_ms: u64,
}

impl Table {
    /// Make `target`'s files and metadata the table's again, in one commit.
    #[instrument(skip_all, fields(table = %self.uri(), ?target, dry_run))]
    pub async fn restore(&mut self, target: RestoreTarget, dry_run: bool) -> Result<RestoreReport> {
        let started = std::time::Instant::now();
        let settings = RetrySettings::default();
        let mut budget = RetryBudget::new(&settings);
        let old = self.open_target(&target).await?;
        let restored_version = old.version().unwrap_or_default();
        let target_files = old.plan_scan(None)?.files;
        loop {
            features::check_writable(self.uri(), self.state()?)?;
            let read_version = self.version();
            let current = self.plan_scan(None)?.files;
            let key = |a: &Add| {
                (
                    a.path.clone(),
                    a.deletion_vector.as_ref().map(|d| (d.path_or_inline_dv.clone(), d.offset, d.size_in_bytes)),
                )
            };
            let current_keys: HashSet<_> = current.iter().map(key).collect();
            let target_keys: HashSet<_> = target_files.iter().map(key).collect();
            let removes: Vec<&Add> = current.iter().filter(|a| !target_keys.contains(&key(a))).collect();
            let adds: Vec<Add> = target_files
                .iter()
                .filter(|a| !current_keys.contains(&key(a)))
                .map(|a| Add {
                    data_change: true,
                    modification_time: chrono::Utc::now().timestamp_millis(),
                    ..a.clone()
                })
                .collect();
            let metadata_changed = old.state()?.metadata() != self.state()?.metadata();
            let live_rows = |a: &Add| {
                stored_rows(a)
                    .unwrap_or(0)
                    .saturating_sub(a.deletion_vector.as_ref().map_or(0, |d| d.cardinality.max(0) as u64))
            };
            let mut report = RestoreReport {
                restored_version,
                files_added: adds.len(),
                files_removed: removes.len(),
                rows_added: adds.iter().map(live_rows).sum(),
                rows_removed: removes.iter().map(|a| live_rows(a)).sum(),
                metadata_restored: metadata_changed,
                retries: budget.retries(),
                ..Default::default()
            };
            self.check_present(&adds, restored_version).await?;
            if dry_run || (adds.is_empty() && removes.is_empty() && !metadata_changed) {
                report.duration_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }
            let needed: HashSet<String> = removes.iter().map(|a| a.path.clone()).collect();
            let mut actions: Vec<Action> = Vec::new();
            if metadata_changed {
                actions.push(Action::Metadata(old.state()?.metadata().clone()));
            }
            actions.extend(removes.iter().map(|a| Action::Remove(remove_action(a))));
            actions.extend(adds.into_iter().map(Action::Add));
            let request = CommitRequest {
                operation: DeltaOperation::Restore { version: Some(restored_version), datetime: None },
                metrics: vec![
                    ("numRestoredFiles", report.files_added as u64),
                    ("numRemovedFiles", report.files_removed as u64),
                    ("restoredFilesRows", report.rows_added),
                    ("removedFilesRows", report.rows_removed),
                ],
                blind_append: false,
                max_retries: 0,
                app_transactions: Vec::new(),
                extra: Default::default(),
            };
            match commit(self, actions, request).await {
                Ok(version) => {
                    report.version = Some(version);
                    report.duration_ms = started.elapsed().as_millis() as u64;
                    return Ok(report);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    if !budget.retry().await {
                        let _ = self.refresh().await;
                        return Err(gave_up(self, "restore", &budget, read_version, &needed, &e).await);
                    }
                    self.refresh().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The table at `target`, through the same store.
    async fn open_target(&self, target: &RestoreTarget) -> Result<Table> {
        let options = OpenOptions::new()
            .storage_options(self.storage_options().clone())
            .object_store(self.delta().log_store().root_object_store(None));
        let options = match target {
            RestoreTarget::Version(v) => {
                let latest = self.version().unwrap_or_default();
                if *v > latest {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("cannot restore table {} to version {v}: its newest version is {latest}", self.uri()),
                    ));
                }
                options.version(*v)
            }
            RestoreTarget::AsOf(ts) => options.as_of(*ts),
            RestoreTarget::Tag(name) => {
                let tag: Option<Tag> = self.tag(name).await?;
                let tag = tag.ok_or_else(|| {
                    Error::new(ErrorKind::NotFound, format!("table {} has no tag {name:?}", self.uri()))
                })?;
                options.version(tag.version)
            }
        };
        Table::open_with(self.uri(), options).await
    }

    /// Refuse, naming them, when files `adds` needs (data files and the files of
    /// their deletion vectors) are gone (vacuumed).
    async fn check_present(&self, adds: &[Add], version: u64) -> Result<()> {
        let store = self.object_store();
        let root = self.delta().table_url().clone();
        let mut paths: Vec<deltalake::Path> =
            adds.iter().map(|a| log_path(&a.path).unwrap_or_else(|| deltalake::Path::from(a.path.as_str()))).collect();
        let mut vectors: Vec<deltalake::Path> =
            adds.iter().filter_map(|a| vector_file(&root, a.deletion_vector.as_ref()?)).collect();
        vectors.sort();
        vectors.dedup();
        paths.extend(vectors);
        let missing: Vec<String> = futures::stream::iter(paths)
            .map(|location| {
                let store = store.clone();
                async move {
                    match store.head(&location).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(Some(location.to_string())),
                        Err(e) => Err(Error::delta(deltalake::DeltaTableError::from(e))),
                        Ok(_) => Ok(None),
                    }
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter_map(|r| r.transpose())
            .collect::<Result<Vec<_>>>()?;
        if missing.is_empty() {
            return Ok(());
        }
        let mut shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        shown.sort();
        let more = missing.len().saturating_sub(5);
        Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "cannot restore table {} to version {version}: {} of its files are gone (vacuumed?): {}{}; nothing was committed",
                self.uri(),
                missing.len(),
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ),
        ))
    }
}
