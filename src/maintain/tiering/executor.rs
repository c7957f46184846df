//! The tiering executor: a [`TierPlan`]'s moves done (server-side copies in place,
//! many in flight) and each moved file's class recorded in the log.
//!
//! Words: a *move* is one file's copy into its class; a *commit* records a batch of
//! moves by re-adding those files' `add` actions with the tag
//! [`CLASS_TAG`](super::CLASS_TAG) set and `dataChange = false` (the commit style of
//! compaction: readers see the same files and rows, the change data feed sees no
//! change), under the operation name `SET STORAGE CLASS`.
//!
//! - **Concurrency**: a commit is built from the newest snapshot and made with no
//!   rebase inside delta-rs (delta-rs does not count a compaction's `remove` with
//!   `dataChange = false` as a conflict, so a rebased re-add could bring a compacted
//!   file back). When another writer committed first, the batch is rebuilt from the
//!   newest snapshot: a file it removed is not re-added (its copy stays for vacuum), a
//!   file whose deletion vector changed is re-added with the new one.
//! - **Kill safety**: a run killed between its copies and its commit leaves files in
//!   their new class that the log still calls STANDARD; the next run plans them again
//!   and S3 refuses a copy onto itself that changes nothing, which one HeadObject
//!   shows to be a file already in place: it is recorded, not copied again.
//! - **Compaction first**: a partition about to leave the hot tier whose hot files
//!   the compaction planner would merge is compacted before it moves (`compact_first`),
//!   so the cold classes, billed per object with a 128 KB minimum in the
//!   infrequent-access ones, hold a few large files.
//! - **Bounded work**: moves are committed in batches of `files_per_commit`, so a
//!   large plan records its progress as it goes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use serde::Serialize;
use tracing::{info, instrument, warn};

use super::{AgeBy, CLASS_TAG, CopyOutcome, ObjectClasses, StorageClass, TierSteps};
use crate::error::{Error, ErrorKind, Result};
use crate::maintain::compaction::{CommitGuard, CompactOptions, CompactionPlan, CompactionReport};
use crate::table::Table;
use crate::table::clock::{self, Clock};
use crate::table::commit::{CommitExtra, CommitRequest, commit};
use crate::table::conflict::{RetryBudget, RetrySettings};

/// The operation name of a tiering commit.
pub const OPERATION: &str = "SET STORAGE CLASS";

/// How to tier. The clock is injected with [`TierOptions::with_clock`].
#[derive(Clone)]
pub struct TierOptions {
    pub steps: TierSteps,
    /// The partition column to age by; `None`: the first date-like one.
    pub column: Option<String>,
    /// Plan only.
    pub dry_run: bool,
    /// Copies in flight at once.
    pub max_requests_in_flight: usize,
    /// Moves recorded per commit, at most.
    pub files_per_commit: usize,
    /// How often a commit that lost to other writers is rebuilt.
    pub retry: RetrySettings,
    /// Called before every commit: a fence that may refuse it (the service's lease).
    pub before_commit: Option<CommitGuard>,
    /// More `commitInfo` keys (the service names its job here).
    pub commit_info: Vec<(String, serde_json::Value)>,
    /// Compact the partitions about to leave the hot tier first, with these options,
    /// where the compaction planner finds small files to merge (so cold tiers hold a
    /// few large files, each billed once, not thousands of small ones); `None`: not.
    pub compact_first: Option<CompactOptions>,
    clock: Arc<dyn Clock>,
}

impl TierOptions {
    pub fn new(steps: TierSteps) -> Self {
        Self {
            steps,
            column: None,
            dry_run: false,
            max_requests_in_flight: 16,
            files_per_commit: 1000,
            retry: RetrySettings::default(),
            before_commit: None,
            commit_info: Vec::new(),
            compact_first: Some(CompactOptions::default()),
            clock: clock::system(),
        }
    }
    pub fn column(mut self, column: Option<String>) -> Self {
        self.column = column;
        self
    }
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FilesBytes {
    pub files: usize,
    pub bytes: u64,
}

/// What a tiering run did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct TierReport {
    pub dry_run: bool,
    pub age_by: AgeBy,
    /// Partitions (or, unpartitioned, classes) with files due to move.
    pub moves_planned: usize,
    pub files_planned: usize,
    pub bytes_planned: u64,
    /// A dry run's moves, partition by partition (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<super::TierMove>,
    /// Files copied into their class and recorded, per class.
    pub moved: BTreeMap<StorageClass, FilesBytes>,
    /// Files found in their class already (an earlier run's copies), recorded.
    pub files_already_there: usize,
    /// Files another writer removed before their move was recorded (their copy is
    /// left for vacuum).
    pub files_gone: usize,
    pub files_in_place: usize,
    pub files_not_due: usize,
    /// Archived files their age would move colder: a restore first (left).
    pub files_archived: usize,
    /// Partitions leaving the hot tier that were (a dry run: would be) compacted first.
    pub partitions_compacted: usize,
    /// That compaction's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionReport>,
    /// The versions committed.
    pub versions: Vec<u64>,
    pub commit_conflicts: usize,
    /// Requests to S3 (copies and the HeadObjects after refused copies).
    pub requests: u64,
    pub duration_ms: u64,
}

impl TierReport {
    /// Files moved into a colder class (copied or found there), all classes.
    pub fn files_moved(&self) -> usize {
        self.moved.values().map(|m| m.files).sum::<usize>()
    }
}

/// The error of tiering a table that is not on S3.
fn no_classes(uri: &str) -> Error {
    Error::invalid(format!("table {uri} is not on S3: local and memory stores have no storage classes"))
}

/// One file to move.
struct Move {
    path: String,
    size: u64,
    class: StorageClass,
}

enum Moved {
    Copied,
    AlreadyThere,
    Gone,
}

impl Table {
    /// Tier this table by `options.steps` (see the [module docs](crate::maintain::tiering::executor)):
    /// plan from the log, copy every due file into its class, record the classes in
    /// the log. A local or memory table has no classes: an invalid-input error.
    #[instrument(skip_all, fields(table = %self.uri(), dry_run = options.dry_run))]
    pub async fn tier(&mut self, options: TierOptions) -> Result<TierReport> {
        let started = Instant::now();
        self.refresh().await?;
        crate::table::features::check_writable(self.uri(), self.state()?)?;
        let now = options.clock.now();
        let mut plan = self.tier_plan(&options.steps, options.column.as_deref(), now)?;
        if !super::has_storage_classes(self.uri())? {
            return Err(no_classes(self.uri()));
        }
        let mut compacted = None;
        let mut partitions_compacted = 0;
        if let Some(compact) = &options.compact_first {
            let mut first = compact.clone();
            if first.before_commit.is_none() {
                first.before_commit = options.before_commit.clone();
            }
            for (key, value) in &options.commit_info {
                first.executor.commit_info.entry(key.clone()).or_insert_with(|| value.clone());
            }
            let cplan = self.compaction_before_leaving_hot(&plan, &first)?;
            partitions_compacted = cplan.partitions.len();
            if !cplan.is_empty() && !options.dry_run {
                let report = self.execute_compaction(&cplan, first).await?;
                info!(
                    bins = report.bins_committed,
                    files = report.files_removed,
                    "compacted partitions leaving the hot tier"
                );
                compacted = Some(report);
                plan = self.tier_plan(&options.steps, options.column.as_deref(), now)?;
            }
        }
        let mut report = TierReport {
            dry_run: options.dry_run,
            age_by: plan.age_by.clone(),
            moves_planned: plan.moves.len(),
            files_planned: plan.files(),
            bytes_planned: plan.bytes(),
            planned: if options.dry_run { plan.moves.clone() } else { Vec::new() },
            moved: BTreeMap::new(),
            files_already_there: 0,
            files_gone: 0,
            files_in_place: plan.files_in_place,
            files_not_due: plan.files_not_due,
            files_archived: plan.files_archived,
            partitions_compacted,
            compaction: compacted,
            versions: Vec::new(),
            commit_conflicts: 0,
            requests: 0,
            duration_ms: 0,
        };
        if options.dry_run || plan.moves.is_empty() {
            report.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }
        let classes = ObjectClasses::for_table(self.uri(), self.storage_options())
            .await?
            .ok_or_else(|| no_classes(self.uri()))?;
        let sizes: HashMap<String, u64> = self.tier_files()?.into_iter().map(|f| (f.path, f.size)).collect();
        let moves: Vec<Move> = plan
            .moves
            .iter()
            .flat_map(|m| {
                m.files.iter().map(|path| Move {
                    path: path.clone(),
                    size: sizes.get(path).copied().unwrap_or(0),
                    class: m.storage_class,
                })
            })
            .collect();
        for batch in moves.chunks(options.files_per_commit.max(1)) {
            let outcome = self.move_batch(&classes, batch, &options, &mut report).await;
            report.duration_ms = started.elapsed().as_millis() as u64;
            outcome?;
        }
        info!(files = report.files_moved(), versions = ?report.versions, "tiered");
        Ok(report)
    }

    /// The compaction of the partitions `plan` moves out of the hot tier: the bins
    /// of hot files the compaction planner makes there. Only for tables aged by a
    /// partition column (an unpartitioned table's old and young files share one
    /// partition).
    fn compaction_before_leaving_hot(
        &self,
        plan: &super::TierPlan,
        options: &CompactOptions,
    ) -> Result<CompactionPlan> {
        let mut cplan = CompactionPlan {
            target_file_size: 0,
            clustering: None,
            partitions: Vec::new(),
            files_with_deletes: 0,
            deferred_bins: 0,
        };
        if matches!(plan.age_by, AgeBy::AddTime) {
            return Ok(cplan);
        }
        let hot: HashSet<String> =
            self.tier_files()?.into_iter().filter(|f| !f.storage_class.is_cold()).map(|f| f.path).collect();
        let leaving: HashSet<&BTreeMap<String, Option<String>>> = plan
            .moves
            .iter()
            .filter(|m| m.storage_class.is_cold() && m.files.iter().any(|f| hot.contains(f)))
            .map(|m| &m.partition)
            .collect();
        if leaving.is_empty() {
            return Ok(cplan);
        }
        cplan = self.compaction_plan(options)?;
        cplan.partitions.retain(|p| leaving.contains(&p.partition.iter().cloned().collect::<BTreeMap<_, _>>()));
        Ok(cplan)
    }

    /// Copy one batch, then record what was copied (also when some copies failed:
    /// then the first failure is the result, after the record).
    async fn move_batch(
        &mut self,
        classes: &ObjectClasses,
        batch: &[Move],
        options: &TierOptions,
        report: &mut TierReport,
    ) -> Result<()> {
        // Owned futures: a stream of closures borrowing the batch makes the job's
        // future not `Send` for every lifetime (the daemon spawns it).
        let copies: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (classes, path, size, class) = (classes.clone(), m.path.clone(), m.size, m.class);
                async move {
                    match classes.set_class(&path, size, class).await {
                        Ok(CopyOutcome::Copied) => (i, Ok(Moved::Copied), 1),
                        Ok(CopyOutcome::AlreadyThere) => (i, Ok(Moved::AlreadyThere), 2),
                        Err(e) if e.kind() == ErrorKind::NotFound => (i, Ok(Moved::Gone), 2),
                        Err(e) => (i, Err(e), 2),
                    }
                }
            })
            .collect();
        let results: Vec<(usize, Result<Moved>, u64)> =
            futures::stream::iter(copies).buffer_unordered(options.max_requests_in_flight.max(1)).collect().await;
        let mut done: HashMap<String, StorageClass> = HashMap::new();
        let mut failures = Vec::new();
        for (i, result, requests) in results {
            report.requests += requests;
            let m = &batch[i];
            match result {
                Ok(Moved::Copied) => {
                    done.insert(m.path.clone(), m.class);
                }
                Ok(Moved::AlreadyThere) => {
                    report.files_already_there += 1;
                    done.insert(m.path.clone(), m.class);
                }
                // Removed (and vacuumed) by another writer since the plan.
                Ok(Moved::Gone) => report.files_gone += 1,
                Err(e) => failures.push(e),
            }
        }
        self.record_classes(done, options, report).await?;
        match failures.len() {
            0 => Ok(()),
            n => {
                let first = failures.swap_remove(0);
                Err(Error::new(
                    first.kind(),
                    format!(
                        "tiering table {}: {n} of {} copies failed (the others are recorded); the first: {}",
                        self.uri(),
                        batch.len(),
                        first.message()
                    ),
                ))
            }
        }
    }

    /// Re-add the live files among `done` with their new class, on the newest
    /// version; rebuilt from the newest snapshot when another writer commits first.
    async fn record_classes(
        &mut self,
        done: HashMap<String, StorageClass>,
        options: &TierOptions,
        report: &mut TierReport,
    ) -> Result<()> {
        let mut budget = RetryBudget::new(&options.retry);
        loop {
            let mut actions = Vec::new();
            let mut recorded: BTreeMap<StorageClass, FilesBytes> = BTreeMap::new();
            let mut live = 0;
            for file in self.state()?.log_data().iter() {
                // The tags are only reachable through the whole `add` in deltalake 1.1.
                #[allow(deprecated)]
                let mut add = file.add_action();
                let Some(class) = done.get(&add.path) else { continue };
                live += 1;
                let tags = add.tags.get_or_insert_with(HashMap::new);
                if tags.get(CLASS_TAG).cloned().flatten().as_deref() == Some(class.as_str()) {
                    continue; // another run recorded it
                }
                tags.insert(CLASS_TAG.to_string(), Some(class.as_str().to_string()));
                add.data_change = false;
                let entry = recorded.entry(*class).or_default();
                entry.files += 1;
                entry.bytes += add.size.max(0) as u64;
                actions.push(Action::Add(add));
            }
            let gone = done.len() - live;
            if actions.is_empty() {
                report.files_gone += gone;
                return Ok(());
            }
            if let Some(guard) = &options.before_commit {
                guard().map_err(|reason| Error::conflict(format!("tiering commit refused: {reason}")))?;
            }
            let files = actions.len() as u64;
            let bytes: u64 = recorded.values().map(|r| r.bytes).sum();
            let mut parameters = HashMap::new();
            parameters.insert("policy".to_string(), serde_json::Value::String(options.steps.to_string()));
            let request = CommitRequest {
                // The operation delta-rs's conflict checking would see; it is not asked (no rebase).
                operation: DeltaOperation::Optimize { predicate: None, target_size: 0 },
                metrics: vec![("numTieredFiles", files), ("numTieredBytes", bytes)],
                blind_append: false,
                max_retries: 0,
                app_transactions: Vec::new(),
                extra: CommitExtra { operation: Some(OPERATION), parameters, info: options.commit_info.clone() },
            };
            match commit(self, actions, request).await {
                Ok(version) => {
                    report.versions.push(version);
                    report.files_gone += gone;
                    for (class, r) in recorded {
                        let entry = report.moved.entry(class).or_default();
                        entry.files += r.files;
                        entry.bytes += r.bytes;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Conflict && budget.retry().await => {
                    report.commit_conflicts += 1;
                    warn!(attempt = budget.attempts(), error = %e, "tiering commit lost a race; rebuilding it on the newest version");
                    self.refresh().await?;
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    return Err(Error::conflict(format!(
                        "tiering table {} gave up recording {} moves after {}, losing to other writers: {} \
                         (the files are in their new class; the next run records them)",
                        self.uri(),
                        done.len(),
                        budget.summary(),
                        e.message()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
