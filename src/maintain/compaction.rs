//! Compaction of a table: the root crate's glue around `sediment-compactor`.
//!
//! [`Table::compaction_plan`] turns the snapshot into file views, keeps the
//! partitions matching an optional filter and asks the planner for a plan;
//! [`Table::compact`] checks that the table can be written, plans and runs the plan
//! with the executor, and leaves the handle at the version of its last commit (the
//! newest, when it committed nothing).
//!
//! ```no_run
//! # async fn example() -> sediment::Result<()> {
//! use sediment::{CompactOptions, Table};
//! let mut table = Table::open("s3://lake/bronze/events").await?;
//! let report = table.compact(CompactOptions::default().filter("event_date >= '2024-05-01'")).await?;
//! println!("{} files into {}", report.files_removed, report.files_added);
//! # Ok(()) }
//! ```

pub use sediment_compactor::executor::{AbandonedBin, CommitGuard, ProgressFn};
pub use sediment_compactor::{
    Clustering, CompactionPlan, CompactionReport, ExecutorSettings, FileView, PartitionKey, PlannerSettings,
    TableHealth,
};
use sediment_compactor::{CompactionError, CompactionExecutor, planner};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sediment_compactor::executor::OutputClassFn;
use tracing::instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::maintain::tiering::{CLASS_TAG, ObjectClasses, StorageClass, archive};
use crate::read::predicate::Predicate;
use crate::table::Table;
use crate::table::features;
use crate::table::info::VersionParts;
use crate::table::log_files::LogView;

/// What to compact and how.
#[derive(Clone, Default)]
pub struct CompactOptions {
    /// Target file size; `None` uses the table's `delta.targetFileSize`, else 128 MiB.
    pub target_file_size: Option<u64>,
    /// Fewest files per bin (default 2).
    pub min_input_files: Option<usize>,
    /// Most input bytes to rewrite in this run.
    pub max_bytes: Option<u64>,
    /// Only partitions matching this SQL expression over partition columns.
    pub filter: Option<String>,
    /// Row order within rewritten files.
    pub clustering: Option<Clustering>,
    /// Rewrite files whose deletion vectors delete more than this share of their rows
    /// (default 0.05, as Delta's `OPTIMIZE`).
    pub max_deleted_rows_ratio: Option<f64>,
    /// Executor knobs (parallelism, memory, commit cadence).
    pub executor: ExecutorSettings,
    /// Called before every commit: a fence that may refuse it (the service's lease
    /// check), or fault injection.
    pub before_commit: Option<CommitGuard>,
    /// Called as bins finish.
    pub progress: Option<ProgressFn>,
    /// Also rewrite files in infrequent-access and archive classes (by default they
    /// are left alone: rewriting them pays retrieval and early-deletion charges). The
    /// outputs of a bin with cold inputs go into the coldest of its inputs' classes.
    pub include_cold: bool,
}

impl CompactOptions {
    /// Compact only partitions matching `sql` (partition columns only).
    pub fn filter(mut self, sql: impl Into<String>) -> Self {
        self.filter = Some(sql.into());
        self
    }

    /// Aim for files of `bytes`.
    pub fn target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = Some(bytes);
        self
    }
}

impl From<CompactionError> for Error {
    fn from(err: CompactionError) -> Self {
        let kind = match &err {
            CompactionError::Invalid(_) => ErrorKind::InvalidInput,
            CompactionError::Unsupported(_) => ErrorKind::Unsupported,
            CompactionError::Storage(_) => ErrorKind::Unavailable,
            CompactionError::Conflict(_) => ErrorKind::Conflict,
            CompactionError::Data(_) => ErrorKind::Data,
        };
        Error::new(kind, err.to_string())
    }
}

/// Moves a cold bin's outputs into its class (server-side copies in place) and tags
/// their `add`s with it, so the compaction commit records the class.
fn output_class_hook(classes: ObjectClasses) -> OutputClassFn {
    Arc::new(move |adds: Vec<deltalake::kernel::Add>, class: String| {
        let classes = classes.clone();
        Box::pin(async move {
            let class: StorageClass = class.parse().map_err(|e: sediment_catalog::CatalogError| e.to_string())?;
            let mut out = Vec::with_capacity(adds.len());
            for mut add in adds {
                classes.set_class(&add.path, add.size.max(0) as u64, class).await.map_err(|e| e.to_string())?;
                add.tags.get_or_insert_with(HashMap::new).insert(CLASS_TAG.to_string(), Some(class.as_str().into()));
                out.push(add);
            }
            Ok(out)
        })
    })
}

/// A compaction plan over `parts` (a version's files and metadata), each file in the
/// class `classes` records for it (STANDARD when absent).
fn plan_of(
    parts: &VersionParts<'_>,
    classes: &HashMap<String, StorageClass>,
    options: &CompactOptions,
) -> Result<CompactionPlan> {
    let settings = PlannerSettings {
        target_file_size: match options.target_file_size {
            Some(t) => t,
            None => parts.target_file_size(),
        },
        min_input_files: options.min_input_files.unwrap_or(2),
        max_bytes: options.max_bytes,
        clustering: options.clustering.clone(),
        max_deleted_rows_ratio: options
            .max_deleted_rows_ratio
            .unwrap_or(sediment_compactor::planner::DEFAULT_MAX_DELETED_ROWS_RATIO),
    };
    let files = parts.files;
    let mut views = parts.views();
    let class = |path: &str| classes.get(path).copied().unwrap_or(StorageClass::Standard);
    if let Some(sql) = &options.filter {
        let schema = &parts.schema;
        let partition_columns = &parts.partition_columns;
        let predicate = Predicate::parse(sql, schema)?;
        if !predicate.only_mentions(partition_columns) {
            return Err(Error::invalid(format!(
                "compaction filter {sql:?} may only mention partition columns ({})",
                partition_columns.join(", ")
            )));
        }
        let keep = Predicate::match_partitions(predicate.expr(), files, schema, partition_columns)?;
        let mut keep = keep.into_iter();
        views.retain(|_| keep.next().unwrap_or(false));
    }
    if !options.include_cold {
        views.retain(|v| !class(&v.path).is_cold());
    }
    let mut plan = planner::plan(&views, &settings)?;
    for bin in plan.partitions.iter_mut().flat_map(|p| p.bins.iter_mut()) {
        let coldest = bin.inputs.iter().map(|f| class(&f.path)).max().unwrap_or(StorageClass::Standard);
        bin.storage_class = coldest.is_cold().then(|| coldest.as_str().to_string());
    }
    Ok(plan)
}

impl LogView {
    /// Plan a compaction of this version, as [`Table::compaction_plan`] does, from the
    /// files read off the log.
    pub fn compaction_plan(&self, options: &CompactOptions) -> Result<CompactionPlan> {
        // Only the files off the standard class: a table of hundreds of thousands of
        // files plans without a second copy of every path.
        let classes: HashMap<String, StorageClass> = self
            .files()
            .iter()
            .zip(self.class_tags())
            .map(|(f, tag)| (f, archive::class_from_tag(tag.as_deref())))
            .filter(|(_, class)| *class != StorageClass::Standard)
            .map(|(f, class)| (f.path.clone(), class))
            .collect();
        plan_of(&self.parts(), &classes, options)
    }
}

impl Table {
    /// Plan a compaction of this version (no I/O beyond the loaded snapshot).
    pub fn compaction_plan(&self, options: &CompactOptions) -> Result<CompactionPlan> {
        let files = self.files()?;
        let classes: HashMap<String, StorageClass> = self
            .tier_files()?
            .into_iter()
            .filter(|f| f.storage_class != StorageClass::Standard)
            .map(|f| (f.path, f.storage_class))
            .collect();
        plan_of(&self.parts(&files)?, &classes, options)
    }

    /// Plan and run a compaction; the handle moves to the version of its last commit.
    #[instrument(skip_all, fields(table = %self.uri()))]
    pub async fn compact(&mut self, options: CompactOptions) -> Result<CompactionReport> {
        let plan = self.compaction_plan(&options)?;
        self.execute_compaction(&plan, options).await
    }

    /// Run a plan made from this version.
    pub async fn execute_compaction(
        &mut self,
        plan: &CompactionPlan,
        options: CompactOptions,
    ) -> Result<CompactionReport> {
        features::check_writable(self.uri(), self.state()?)?;
        let settings = ExecutorSettings { engine_info: crate::table::commit::engine_info(), ..options.executor };
        let mut executor = CompactionExecutor::new(self.delta().clone(), settings);
        if let Some(hook) = options.before_commit {
            executor = executor.with_before_commit(hook);
        }
        if let Some(progress) = options.progress {
            executor = executor.with_progress(progress);
        }
        if plan.bins().any(|b| b.storage_class.is_some()) {
            let cold_inputs: HashSet<&str> = plan
                .bins()
                .filter(|b| b.storage_class.is_some())
                .flat_map(|b| b.inputs.iter().map(|f| f.path.as_str()))
                .collect();
            let adds: Vec<deltalake::kernel::Add> =
                self.plan_scan(None)?.files.into_iter().filter(|a| cold_inputs.contains(a.path.as_str())).collect();
            archive::ensure_readable(self, "compact", &adds).await?;
            let classes = ObjectClasses::for_table(self.uri(), self.storage_options()).await?.ok_or_else(|| {
                Error::invalid(format!("table {} records storage classes but is not on S3", self.uri()))
            })?;
            executor = executor.with_output_class(output_class_hook(classes));
        }
        let (report, delta) =
            executor.execute(plan).await.map_err(|e| Error::from(e).context(format!("table {}", self.uri())))?;
        match delta.snapshot() {
            // The snapshot of its last commit: no listing of the log.
            Ok(state) if !report.versions.is_empty() => self.set_state(state.clone()),
            _ => self.refresh().await?,
        }
        Ok(report)
    }
}
