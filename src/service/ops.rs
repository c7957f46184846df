//! Catalog operations, one library call each, that `sediment tables ...` and the HTTP
//! API share: register (checking the location holds a Delta table and the policy is
//! valid), describe (entry, effective policy, health, last jobs, tags), discover every
//! Delta table under a prefix, start a job, and the tag and restore calls that keep
//! the catalog's tag mirror in step with the table's own `_sediment/tags`.

use sediment_catalog::{Job, JobFilter, NewJob, NewTable, Policy, TableEntry, TagEntry};
use serde::Serialize;

use super::Service;
use super::execute::JobRequest;
use crate::error::{Error, ErrorKind, Result};
use crate::maintain::{RestoreReport, RestoreTarget, TableHealth};
use crate::table::tags::Tag;
use crate::table::{OpenOptions, Table};

/// Open a registered table with its storage profile.
pub async fn open_table(service: &Service, entry: &TableEntry) -> Result<Table> {
    Table::open_with(&entry.location, open_options(service, &entry.location, entry.storage_options.as_deref())?)
        .await
        .map_err(|e| e.context(format!("table {}", entry.name)))
}

/// `entry` at its latest version, from the daemon's shared handles: the handle the
/// scheduler (or an earlier job) left is cloned and refreshed, one log listing from
/// the version it was at, instead of a fresh open that reads the whole log again (200
/// GETs for a table of 200 commits and no checkpoint). The newest handle is kept.
pub async fn latest_table(service: &Service, entry: &TableEntry) -> Result<Table> {
    let cached = lock_tables(service)
        .get(&entry.name)
        .filter(|(location, _)| location == &entry.location)
        .map(|(_, table)| table.clone());
    let table = match cached {
        Some(mut table) => {
            table.refresh().await.map_err(|e| e.context(format!("table {}", entry.name)))?;
            table
        }
        None => open_table(service, entry).await?,
    };
    remember_table(service, entry, &table);
    Ok(table)
}

/// Keep `table` as `entry`'s shared handle unless a newer one is kept already.
pub fn remember_table(service: &Service, entry: &TableEntry, table: &Table) {
    let mut tables = lock_tables(service);
    let keep = match tables.get(&entry.name) {
        Some((location, kept)) => location != &entry.location || kept.version() <= table.version(),
        None => true,
    };
    if keep {
        tables.insert(entry.name.clone(), (entry.location.clone(), table.clone()));
    }
}

/// Drop the shared handles of tables no longer in `names`.
pub fn retain_tables(service: &Service, names: &std::collections::HashSet<&str>) {
    lock_tables(service).retain(|name, _| names.contains(name.as_str()));
}

fn lock_tables(service: &Service) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, Table)>> {
    service.inner().tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a table at `location` opens: on the injected store for it, else with its
/// storage profile's options.
pub(crate) fn open_options(service: &Service, location: &str, profile: Option<&str>) -> Result<OpenOptions> {
    if let Some(store) = service.inner().stores.as_ref().and_then(|resolve| resolve(location)) {
        return Ok(OpenOptions::new().object_store(store));
    }
    Ok(OpenOptions::new().storage_options(service.settings().storage_options(profile)?))
}

/// Register a table: the name, layer, policy and storage profile are checked, and the
/// location must hold a Delta table; its tags are mirrored.
pub async fn register_table(service: &Service, table: NewTable) -> Result<TableEntry> {
    sediment_catalog::validate_table_name(&table.name)?;
    if let Some(profile) = &table.storage_options
        && !service.settings().storage.contains_key(profile)
    {
        return Err(Error::invalid(format!(
            "storage_options: no storage profile {profile:?} in the daemon's settings (storage profiles are named, never secrets)"
        )));
    }
    service
        .inner()
        .policies
        .get(table.layer)
        .with_overrides(table.policy.as_ref().unwrap_or(&serde_json::Value::Null))?;
    let options = open_options(service, &table.location, table.storage_options.as_deref())?;
    let mut opened = Table::open_with(&table.location, options)
        .await
        .map_err(|e| e.context(format!("location {}", table.location)))?;
    ensure_constraints(&mut opened, &table.name, &table.constraints).await?;
    let now = service.inner().clock.now();
    let entry = service.catalog().register_table(table, now).await?;
    remember_table(service, &entry, &opened);
    mirror_tags(service, &entry.name, &opened).await;
    Ok(entry)
}

/// Add the `declared` CHECK constraints `table` (catalog name `name`) lacks: each
/// checks every live row first. One it has under another condition is an error: the
/// declaration and the table disagree. Constraints it has and the declaration does not
/// name are left alone (another writer's).
pub async fn ensure_constraints(
    table: &mut Table,
    name: &str,
    declared: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    for (constraint, expression) in declared {
        table
            .add_constraint(constraint, expression)
            .await
            .map_err(|e| e.context(format!("table {name}: declared constraint {constraint}")))?;
    }
    Ok(())
}

/// What `describe` shows of a table.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TableDescription {
    #[schema(value_type = Object)]
    pub table: TableEntry,
    /// The policy in force: the layer's default with the table's overrides.
    #[schema(value_type = Object)]
    pub policy: Policy,
    /// The current version, when the table could be read.
    pub version: Option<u64>,
    pub files: Option<usize>,
    pub bytes: Option<u64>,
    pub rows: Option<u64>,
    /// Health at the policy's target size.
    #[schema(value_type = Option<Object>)]
    pub health: Option<TableHealth>,
    /// Bytes and files per storage class, the estimated monthly cost by class and by
    /// partition range, and what the tiering policy would save (tables on S3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<crate::maintain::tiering::CostReport>,
    /// Why the table could not be read, when it could not.
    pub error: Option<String>,
    /// The newest jobs, newest first.
    #[schema(value_type = Vec<Object>)]
    pub last_jobs: Vec<Job>,
    #[schema(value_type = Vec<Object>)]
    pub tags: Vec<TagEntry>,
}

/// Describe a registered table.
pub async fn describe_table(service: &Service, name: &str) -> Result<TableDescription> {
    let catalog = service.catalog();
    let entry = catalog.table(name).await?;
    let policy = service.inner().policies.get(entry.layer).with_overrides(&entry.policy)?;
    let last_jobs =
        catalog.list_jobs(&JobFilter { table: Some(name.into()), limit: Some(10), ..Default::default() }).await?;
    let tags = catalog.tags(name).await?;
    let mut description = TableDescription {
        table: entry.clone(),
        policy: policy.clone(),
        version: None,
        files: None,
        bytes: None,
        rows: None,
        health: None,
        storage: None,
        error: None,
        last_jobs,
        tags,
    };
    let prices = service.settings().storage_prices;
    let now = service.inner().clock.now();
    match open_table(service, &entry).await.and_then(|table| {
        let files = table.files()?;
        let health = table.health_of(&files, policy.compaction.target_file_size.as_u64())?;
        let storage = match crate::maintain::tiering::has_storage_classes(&entry.location)? {
            true => {
                Some(table.storage_cost(&prices, Some(&policy.tiering.steps), policy.tiering.column.as_deref(), now)?)
            }
            false => None,
        };
        Ok((table.version(), files, health, storage))
    }) {
        Ok((version, files, health, storage)) => {
            description.storage = storage;
            description.version = version;
            description.files = Some(files.len());
            description.bytes = Some(files.iter().map(|f| f.size).sum());
            description.rows = health.rows;
            description.health = Some(health);
        }
        Err(e) => description.error = Some(e.to_string()),
    }
    Ok(description)
}

/// A registered table by its name or its location.
pub async fn find_table(service: &Service, name_or_location: &str) -> Result<TableEntry> {
    let catalog = service.catalog();
    match catalog.table(name_or_location).await {
        Ok(entry) => return Ok(entry),
        Err(e) if e.kind() != sediment_catalog::CatalogErrorKind::NotFound => return Err(e.into()),
        Err(_) => {}
    }
    let wanted = name_or_location.trim_end_matches('/');
    catalog.list_tables().await?.into_iter().find(|t| t.location.trim_end_matches('/') == wanted).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("no table named or located at {name_or_location:?} in the catalog (register it, or give the steps with --policy)"),
        )
    })
}

/// Tier a registered table now by its policy (or by `steps`), as a `tier` job would,
/// without a job: the CLI's `sediment tier NAME`.
pub async fn tier_table(
    service: &Service,
    entry: &TableEntry,
    steps: Option<&str>,
    column: Option<String>,
    dry_run: bool,
) -> Result<crate::maintain::TierReport> {
    let inner = service.inner();
    let policy = inner.policies.get(entry.layer).with_overrides(&entry.policy)?;
    let options = super::execute::tier_options(&policy, &entry.name, steps, column)?
        .dry_run(dry_run)
        .with_clock(inner.clock.clone());
    let mut table = latest_table(service, entry).await?;
    let report = table.tier(options).await.map_err(|e| e.context(format!("table {}", entry.name)))?;
    remember_table(service, entry, &table);
    Ok(report)
}

/// Unregister a table (the data stays).
pub async fn unregister_table(service: &Service, name: &str) -> Result<TableEntry> {
    let entry = service.catalog().unregister_table(name, service.inner().clock.now()).await?;
    lock_tables(service).remove(name);
    Ok(entry)
}

/// Start a job now; a conflict when one of that table and kind is already active.
pub async fn start_job(service: &Service, table: &str, request: JobRequest) -> Result<Job> {
    let inner = service.inner();
    inner.catalog.table(table).await?;
    let now = inner.clock.now();
    let options = serde_json::to_value(&request).map_err(|e| Error::internal(e.to_string()))?;
    let job = NewJob {
        table: table.into(),
        kind: request.kind(),
        reason: "request".into(),
        options,
        run_after: now,
        max_attempts: inner.settings.workers.max_attempts,
        unless_succeeded_after: None,
    };
    inner.catalog.enqueue(job, now).await?.ok_or_else(|| {
        Error::new(
            ErrorKind::Conflict,
            format!("table {table} has a {} job scheduled or running already", request.kind()),
        )
    })
}

/// A table found by [`discover`].
#[derive(Debug, Clone, Serialize)]
pub struct Discovered {
    pub name: String,
    pub location: String,
    /// `registered`, `already registered`, or why it could not be.
    pub status: String,
}

/// Find every Delta table under `prefix` (a folder holding `_delta_log/`, at most
/// `max_depth` folders down) and register each as `namespace.<folder>` in `layer`.
pub async fn discover(
    service: &Service,
    prefix: &str,
    namespace: &str,
    layer: sediment_catalog::Layer,
    storage_profile: Option<String>,
    max_depth: usize,
) -> Result<Vec<Discovered>> {
    let options = service.settings().storage_options(storage_profile.as_deref())?;
    let store = crate::table::storage::store_at(prefix, options)?;
    let mut found = Vec::new();
    let mut level: Vec<Option<object_store::path::Path>> = vec![None];
    for _ in 0..=max_depth {
        let mut next = Vec::new();
        for dir in level {
            let listing = store.list_with_delimiter(dir.as_ref()).await.map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("listing {prefix}/{}: {e}", dir.as_ref().map_or("", |d| d.as_ref())),
                )
            })?;
            if listing.common_prefixes.iter().any(|p| p.filename() == Some("_delta_log")) {
                found.push(dir.map(|d| d.to_string()).unwrap_or_default());
                continue;
            }
            next.extend(
                listing
                    .common_prefixes
                    .into_iter()
                    .filter(|p| {
                        p.filename()
                            .is_some_and(|name| !name.starts_with('_') && !name.starts_with('.') && !name.contains('='))
                    })
                    .map(Some),
            );
        }
        level = next;
    }
    let base = prefix.trim_end_matches('/');
    let mut out = Vec::new();
    for relative in found {
        let relative = relative.trim_matches('/');
        let location = if relative.is_empty() { base.to_string() } else { format!("{base}/{relative}") };
        let leaf = relative.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or("table");
        let table_part: String =
            leaf.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        let name = format!("{namespace}.{table_part}");
        let mut new = NewTable::new(name.clone(), layer, location.clone());
        new.storage_options = storage_profile.clone();
        let status = match register_table(service, new).await {
            Ok(_) => "registered".to_string(),
            Err(e) if e.kind() == ErrorKind::Conflict => "already registered".to_string(),
            Err(e) => e.to_string(),
        };
        out.push(Discovered { name, location, status });
    }
    Ok(out)
}

/// Copy a table's tags into the catalog's mirror (best effort: the table stays the truth).
pub async fn mirror_tags(service: &Service, name: &str, table: &Table) {
    let result: Result<()> = async {
        let tags = table.tags().await?;
        let entries = tags.into_iter().map(|t| tag_entry(name, t)).collect();
        service.catalog().replace_tags(name, entries).await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(table = %name, error = %e, "cannot mirror the table's tags");
    }
}

fn tag_entry(table: &str, tag: Tag) -> TagEntry {
    TagEntry {
        table: table.into(),
        name: tag.name,
        version: tag.version,
        created_at: Some(tag.created_at),
        expires_at: tag.expires_at,
        description: tag.note,
    }
}

/// The tags of a registered table, read from the table (and mirrored).
pub async fn list_tags(service: &Service, name: &str) -> Result<Vec<Tag>> {
    let entry = service.catalog().table(name).await?;
    let table = open_table(service, &entry).await?;
    let tags = table.tags().await?;
    mirror_tags(service, name, &table).await;
    Ok(tags)
}

/// Tag a version (the current one when `None`) of a registered table.
pub async fn create_tag(
    service: &Service,
    name: &str,
    tag: &str,
    version: Option<u64>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    note: Option<String>,
) -> Result<Tag> {
    let entry = service.catalog().table(name).await?;
    let table = open_table(service, &entry).await?;
    let version = match version.or(table.version()) {
        Some(v) => v,
        None => return Err(Error::new(ErrorKind::NotFound, format!("table {name} has no version to tag"))),
    };
    let created = table.create_tag(tag, version, expires_at, note).await?;
    mirror_tags(service, name, &table).await;
    Ok(created)
}

/// Delete a tag of a registered table.
pub async fn delete_tag(service: &Service, name: &str, tag: &str) -> Result<Tag> {
    let entry = service.catalog().table(name).await?;
    let table = open_table(service, &entry).await?;
    let deleted = table.delete_tag(tag).await?;
    mirror_tags(service, name, &table).await;
    Ok(deleted)
}

/// The CHECK constraints of a registered table.
pub async fn list_constraints(service: &Service, name: &str) -> Result<Vec<crate::Constraint>> {
    let entry = service.catalog().table(name).await?;
    open_table(service, &entry).await?.constraints()
}

/// Add a CHECK constraint to a registered table (every live row is checked first).
pub async fn add_constraint(
    service: &Service,
    name: &str,
    constraint: &str,
    expression: &str,
) -> Result<crate::AddConstraintReport> {
    let entry = service.catalog().table(name).await?;
    let mut table = open_table(service, &entry).await?;
    table.add_constraint(constraint, expression).await
}

/// Drop a CHECK constraint of a registered table; the version that dropped it.
pub async fn drop_constraint(service: &Service, name: &str, constraint: &str) -> Result<Option<u64>> {
    let entry = service.catalog().table(name).await?;
    let mut table = open_table(service, &entry).await?;
    table.drop_constraint(constraint, false).await
}

/// Restore a registered table to an older version, tag or time.
pub async fn restore(service: &Service, name: &str, target: RestoreTarget, dry_run: bool) -> Result<RestoreReport> {
    let entry = service.catalog().table(name).await?;
    let mut table = open_table(service, &entry).await?;
    table.restore(target, dry_run).await
}
