//! Opening a table and looking at one version of it: [`Table`], [`OpenOptions`]
//! (storage settings, time travel by version or timestamp) and the live file list
//! ([`DataFile`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::table::state::DeltaTableState;
use deltalake::{DeltaTable, DeltaTableBuilder};
use tracing::instrument;
use url::Url;

use crate::error::{Error, ErrorKind, Result};
use crate::table::features;
use crate::table::log_cache::LogCacheStore;
use crate::table::storage::{StorageOptions, parse_table_uri};

/// How to open a table: storage options and, for time travel, a version or a timestamp.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    storage_options: StorageOptions,
    version: Option<u64>,
    as_of: Option<DateTime<Utc>>,
    tag: Option<String>,
    object_store: Option<Arc<dyn deltalake::ObjectStore>>,
    new_table_properties: Vec<(String, String)>,
}

impl OpenOptions {
    /// Whether these options ask for a version other than the latest.
    pub(crate) fn time_travels(&self) -> bool {
        self.version.is_some() || self.as_of.is_some() || self.tag.is_some()
    }

    /// The storage settings.
    pub(crate) fn storage(&self) -> (&StorageOptions, Option<Arc<dyn deltalake::ObjectStore>>) {
        (&self.storage_options, self.object_store.clone())
    }

    /// Options that open the latest version with storage settings from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set one storage option (for example `aws_endpoint` or `aws_region`).
    pub fn storage_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.storage_options.insert(key.into(), value.into());
        self
    }

    /// Replace all storage options.
    pub fn storage_options(mut self, options: StorageOptions) -> Self {
        self.storage_options = options;
        self
    }

    /// Read and write through this object store instead of one built from the URI.
    /// `store` is rooted at the root of the storage (the bucket, or `/` for local
    /// files), not at the table. Used to add caching, metering or fault injection.
    pub fn object_store(mut self, store: Arc<dyn deltalake::ObjectStore>) -> Self {
        self.object_store = Some(store);
        self
    }

    /// A table property the table gets if [`Table::open_or_new_with`] finds no table
    /// and a write creates it (for example `delta.constraints.<name>`: a CHECK
    /// constraint its first rows are checked against). Ignored for existing tables.
    pub fn new_table_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.new_table_properties.push((key.into(), value.into()));
        self
    }

    /// Open the table as it was at `version`.
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// Open the version that tag `name` names ([`crate::table::tags`]).
    pub fn tag(mut self, name: impl Into<String>) -> Self {
        self.tag = Some(name.into());
        self
    }

    /// Open the table as it was at `timestamp`: the newest version committed at or before it.
    pub fn as_of(mut self, timestamp: DateTime<Utc>) -> Self {
        self.as_of = Some(timestamp);
        self
    }
}

/// A Delta table at one version.
#[derive(Debug, Clone)]
pub struct Table {
    uri: String,
    url: Url,
    storage_options: StorageOptions,
    delta: DeltaTable,
    /// Properties the first write gives the table when it creates it.
    new_table_properties: Vec<(String, String)>,
}

/// One data file of a snapshot, as the log describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DataFile {
    /// Path relative to the table root, as written in the log.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Row count from the file's statistics, when the writer recorded them.
    pub rows: Option<u64>,
    /// Partition values (`None` is a null partition value).
    pub partition_values: BTreeMap<String, Option<String>>,
    /// When the file was written, in milliseconds since the epoch.
    pub modification_time: i64,
    /// Whether some of the file's rows are deleted by a deletion vector.
    pub has_deletion_vector: bool,
    /// Rows of the file that its deletion vector deletes (0 without one).
    pub deleted_rows: u64,
}

impl Table {
    /// Open the latest version of an existing table.
    pub async fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, OpenOptions::new()).await
    }

    /// Open an existing table with `options` (storage settings, time travel).
    #[instrument(skip_all, fields(table = %uri))]
    pub async fn open_with(uri: &str, options: OpenOptions) -> Result<Self> {
        let url = parse_table_uri(uri, false)?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|_| Error::invalid(format!("bad table path {uri}")))?;
            if !path.exists() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no delta table at {uri}: the directory does not exist"),
                ));
            }
        }
        let cache = log_cache(&url, &options.storage_options, options.object_store.clone())?;
        if !options.time_travels() {
            cache.prefetch_checkpoint();
        }
        let unloaded = || builder_over(&url, &options.storage_options, &cache);
        let mut builder = unloaded()?;
        if let Some(name) = &options.tag {
            crate::table::tags::validate_name(name)?;
            // The tag record sits in the table's folder: read it through the same store.
            let store = unloaded()?.build()?.object_store();
            let tag = crate::table::tags::read_tag(store.as_ref(), name, uri)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("table {uri} has no tag {name:?}")))?;
            builder = builder.with_version(tag.version);
        }
        if let Some(version) = options.version {
            builder = builder.with_version(version);
        }
        if let Some(ts) = options.as_of {
            builder = builder.with_timestamp(ts);
        }
        let delta = builder.load().await.map_err(|e| open_error(uri, &options, e));
        cache.release();
        let delta = delta?;
        if let (Some(ts), Some(version)) = (options.as_of, delta.version()) {
            // delta-rs falls back to the first version for a time before it; that
            // version did not exist then.
            let committed = delta.snapshot().ok().and_then(|s| s.version_timestamp(version));
            if let Some(committed) = committed
                && committed > ts.timestamp_millis()
            {
                let first = chrono::DateTime::from_timestamp_millis(committed).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "table {uri} has no version at or before {ts}: its oldest available version {version} was committed at {first}"
                    ),
                ));
            }
        }
        let table = Self {
            uri: uri.to_string(),
            url,
            storage_options: options.storage_options,
            delta,
            new_table_properties: Vec::new(),
        };
        features::check_readable(uri, table.state()?)?;
        Ok(table)
    }

    /// Open a table for writing: the latest version if it exists, else a handle with no
    /// version that the first write creates.
    pub async fn open_or_new(uri: &str, storage_options: StorageOptions) -> Result<Self> {
        Self::open_or_new_with(uri, OpenOptions::new().storage_options(storage_options)).await
    }

    /// [`Table::open_or_new`] with storage settings or an object store from `options`
    /// (its time travel fields do not apply).
    #[instrument(skip_all, fields(table = %uri))]
    pub async fn open_or_new_with(uri: &str, options: OpenOptions) -> Result<Self> {
        let url = parse_table_uri(uri, true)?;
        let storage_options = options.storage_options;
        let cache = log_cache(&url, &storage_options, options.object_store)?;
        let mut delta = builder_over(&url, &storage_options, &cache)?.build()?;
        let exists = delta
            .log_store()
            .is_delta_table_location()
            .await
            .map_err(|e| Error::delta(e).context(format!("table {uri}")))?;
        if exists {
            cache.prefetch_checkpoint();
            let loaded = delta.load().await;
            cache.release();
            loaded.map_err(|e| Error::delta(e).context(format!("table {uri}")))?;
        }
        Ok(Self {
            uri: uri.to_string(),
            url,
            storage_options,
            delta,
            new_table_properties: options.new_table_properties,
        })
    }

    /// Properties the first write gives the table when it creates it
    /// ([`OpenOptions::new_table_property`]).
    pub fn new_table_properties(&self) -> &[(String, String)] {
        &self.new_table_properties
    }

    /// The location as the user gave it.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The normalized table URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The storage options this handle was opened with.
    pub fn storage_options(&self) -> &StorageOptions {
        &self.storage_options
    }

    /// Whether the table exists (has at least version 0).
    pub fn exists(&self) -> bool {
        self.delta.version().is_some()
    }

    /// The version this handle looks at, or `None` for a table not created yet.
    pub fn version(&self) -> Option<u64> {
        self.delta.version()
    }

    /// The underlying delta-rs table, for operations Sediment does not wrap.
    pub fn delta(&self) -> &DeltaTable {
        &self.delta
    }

    /// The loaded snapshot.
    pub fn state(&self) -> Result<&DeltaTableState> {
        self.delta.snapshot().map_err(|_| Error::new(ErrorKind::NotFound, format!("no delta table at {}", self.uri)))
    }

    /// The table's schema as Arrow sees it (partition columns included).
    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        Ok(self.state()?.snapshot().arrow_schema())
    }

    /// The table's partition columns, in order.
    pub fn partition_columns(&self) -> Result<Vec<String>> {
        Ok(self.state()?.metadata().partition_columns().to_vec())
    }

    /// The table properties (`delta.*` and user keys).
    pub fn configuration(&self) -> Result<std::collections::HashMap<String, String>> {
        Ok(self.state()?.metadata().configuration().clone())
    }

    /// Take `state`, the snapshot a commit of this table returned (its own version,
    /// no listing of the log).
    pub(crate) fn set_state(&mut self, state: deltalake::table::state::DeltaTableState) {
        self.delta.state = Some(state);
    }

    /// The delta-rs table, to commit through (it moves to the committed version).
    pub(crate) fn delta_mut(&mut self) -> &mut DeltaTable {
        &mut self.delta
    }

    /// Move this handle to the latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        if self.exists() {
            self.delta.update_state().await?;
        } else if self.delta.log_store().is_delta_table_location().await? {
            self.delta.load().await?;
        }
        Ok(())
    }

    /// The live data files of this snapshot.
    pub fn files(&self) -> Result<Vec<DataFile>> {
        let state = self.state()?;
        Ok(state
            .log_data()
            .iter()
            .map(|f| DataFile {
                path: f.path().to_string(),
                size: f.size().max(0) as u64,
                rows: f.num_records().map(|n| n as u64),
                partition_values: f.partition_values_map().into_iter().collect(),
                modification_time: f.modification_time(),
                has_deletion_vector: f.deletion_vector_descriptor().is_some(),
                deleted_rows: f.deletion_vector_descriptor().map_or(0, |dv| dv.cardinality.max(0) as u64),
            })
            .collect())
    }

    /// The object store rooted at the table directory.
    pub fn object_store(&self) -> Arc<dyn deltalake::ObjectStore> {
        self.delta.object_store()
    }
}

/// The log cache over the root store delta-rs would use for the table at `url` (the
/// one given, or the one its factories make for the URL's scheme); release it once the
/// table is loaded.
pub(crate) fn log_cache(
    url: &Url,
    storage_options: &StorageOptions,
    store: Option<deltalake::logstore::ObjectStoreRef>,
) -> Result<Arc<LogCacheStore>> {
    let root = match store {
        Some(store) => store,
        None => DeltaTableBuilder::from_url(url.clone())?
            .with_storage_options(storage_options.clone())
            .build_storage()?
            .root_object_store(None),
    };
    Ok(Arc::new(LogCacheStore::new(root)))
}

/// A builder for the table at `url` whose reads and writes go through `cache`.
pub(crate) fn builder_over(
    url: &Url,
    storage_options: &StorageOptions,
    cache: &Arc<LogCacheStore>,
) -> Result<DeltaTableBuilder> {
    Ok(DeltaTableBuilder::from_url(url.clone())?
        .with_storage_options(storage_options.clone())
        .with_storage_backend(cache.clone(), url.clone()))
}

pub(crate) fn open_error(uri: &str, options: &OpenOptions, err: deltalake::DeltaTableError) -> Error {
    use deltalake::DeltaTableError as E;
    match (&err, options.version, options.as_of) {
        (E::InvalidVersion(v), _, _) => Error::new(ErrorKind::NotFound, format!("table {uri} has no version {v}")),
        (E::NotATable(_), _, _) => Error::new(ErrorKind::NotFound, format!("no delta table at {uri}")),
        (_, Some(v), _) => {
            let message = err.to_string();
            let kind = match Error::delta(err).kind() {
                ErrorKind::Unavailable => ErrorKind::Unavailable,
                _ => ErrorKind::NotFound,
            };
            Error::new(kind, format!("table {uri} has no readable version {v}: {message}"))
        }
        (_, _, Some(ts)) => {
            let message = err.to_string();
            Error::new(ErrorKind::NotFound, format!("table {uri} has no version at or before {ts}: {message}"))
        }
        _ => Error::delta(err).context(format!("table {uri}")),
    }
}
