//! What a vacuum plans from: a table's newest version, read through delta-rs's
//! snapshot ([`Table`]) or from the log alone ([`LogView`], which a dry run of a
//! table with hundreds of thousands of files uses). Both give the same plan; the
//! conformance tests compare them on foreign tables.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use delta_kernel::table_properties::TableProperties;
use deltalake::Path;
use deltalake::kernel::Protocol;
use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::error::{Error, Result};
use crate::table::Table;
use crate::table::log::{CommitFiles, commits_since_in};
use crate::table::paths::vector_file;
use crate::{LogView, OpenOptions, Tag};

/// A `remove` of the newest version's log.
pub(crate) struct Removed {
    /// The path as delta-rs's tombstone view gives it (URL-decoded once).
    pub decoded: String,
    pub deletion_timestamp: Option<i64>,
    pub size: Option<i64>,
}

/// A table's newest version as vacuum reads it.
pub(crate) trait Source {
    fn uri(&self) -> &str;
    /// The object store rooted at the table's folder.
    fn store(&self) -> Arc<dyn ObjectStore>;
    fn root(&self) -> &url::Url;
    /// The newest version (`None`: no version yet).
    fn version(&self) -> Option<u64>;
    fn protocol(&self) -> Result<&Protocol>;
    fn properties(&self) -> Result<&TableProperties>;
    fn configuration(&self) -> Result<HashMap<String, String>>;
    fn partition_columns(&self) -> Result<Vec<String>>;
    /// Store paths of the newest version's files and of their deletion vectors.
    fn live(&self) -> Result<HashSet<Path>>;
    /// The `remove`s of the newest version's log.
    async fn tombstones(&self) -> Result<Vec<Removed>>;
    /// Options that open another version of the table through the same store.
    fn open_options(&self) -> OpenOptions;
    /// The table that commits and deletes, when this source can write (a dry run needs none).
    fn writer(&mut self) -> Option<&mut Table>;

    /// The live tags, newest state of `_sediment/tags`.
    async fn tags(&self) -> Result<Vec<Tag>> {
        crate::table::tags::tags_in(self.store().as_ref(), self.uri()).await
    }

    /// [`Table::commits_since`] from the newest version.
    async fn commits_since(&self, since_ms: i64) -> Result<Vec<CommitFiles>> {
        match self.version() {
            Some(latest) => commits_since_in(self.store(), self.root(), latest, since_ms, self.uri()).await,
            None => Ok(Vec::new()),
        }
    }
}

impl Source for Table {
    fn uri(&self) -> &str {
        Table::uri(self)
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.object_store()
    }

    fn root(&self) -> &url::Url {
        self.delta().table_url()
    }

    fn version(&self) -> Option<u64> {
        Table::version(self)
    }

    fn protocol(&self) -> Result<&Protocol> {
        Ok(self.state()?.protocol())
    }

    fn properties(&self) -> Result<&TableProperties> {
        Ok(self.state()?.table_config())
    }

    fn configuration(&self) -> Result<HashMap<String, String>> {
        Table::configuration(self)
    }

    fn partition_columns(&self) -> Result<Vec<String>> {
        Table::partition_columns(self)
    }

    fn live(&self) -> Result<HashSet<Path>> {
        let root = self.delta().table_url();
        let mut live = HashSet::new();
        // delta-rs hands out its paths URL-decoded already: decoding them again would
        // miss a file whose folder name holds an escape (`ts=10%3A00`) and delete it.
        for add in &self.plan_scan(None)?.files {
            if !add.path.contains("://") {
                live.insert(store_path(&add.path));
            }
            if let Some(dv) = &add.deletion_vector {
                live.extend(vector_file(root, dv));
            }
        }
        Ok(live)
    }

    async fn tombstones(&self) -> Result<Vec<Removed>> {
        let log_store = self.delta().log_store();
        self.state()?
            .all_tombstones(log_store.as_ref())
            .map_ok(|t| Removed {
                decoded: t.path().to_string(),
                deletion_timestamp: t.deletion_timestamp(),
                size: t.size(),
            })
            .try_collect()
            .await
            .map_err(Error::delta)
    }

    fn open_options(&self) -> OpenOptions {
        OpenOptions::new()
            .storage_options(self.storage_options().clone())
            .object_store(self.delta().log_store().root_object_store(None))
    }

    fn writer(&mut self) -> Option<&mut Table> {
        Some(self)
    }
}

impl Source for LogView {
    fn uri(&self) -> &str {
        LogView::uri(self)
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.object_store()
    }

    fn root(&self) -> &url::Url {
        LogView::root(self)
    }

    fn version(&self) -> Option<u64> {
        Some(LogView::version(self))
    }

    fn protocol(&self) -> Result<&Protocol> {
        Ok(LogView::protocol(self))
    }

    fn properties(&self) -> Result<&TableProperties> {
        Ok(self.table_properties())
    }

    fn configuration(&self) -> Result<HashMap<String, String>> {
        Ok(self.metadata().configuration().clone())
    }

    fn partition_columns(&self) -> Result<Vec<String>> {
        Ok(self.metadata().partition_columns().to_vec())
    }

    fn live(&self) -> Result<HashSet<Path>> {
        let root = LogView::root(self);
        let mut live = HashSet::new();
        for (file, dv) in self.files().iter().zip(self.deletion_vectors()) {
            if !file.path.contains("://") {
                live.insert(store_path(&file.path));
            }
            if let Some(dv) = dv {
                live.extend(vector_file(root, dv));
            }
        }
        Ok(live)
    }

    async fn tombstones(&self) -> Result<Vec<Removed>> {
        Ok(LogView::tombstones(self)
            .iter()
            .map(|t| Removed { decoded: t.path.clone(), deletion_timestamp: t.deletion_timestamp, size: t.size })
            .collect())
    }

    fn open_options(&self) -> OpenOptions {
        LogView::open_options(self)
    }

    fn writer(&mut self) -> Option<&mut Table> {
        None
    }
}

/// The store path of a log path that is URL-decoded already.
pub(crate) fn store_path(decoded: &str) -> Path {
    Path::parse(decoded).unwrap_or_else(|_| Path::from(decoded))
}
