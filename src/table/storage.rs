//! Where tables live: parsing a user's table URI and the storage options that go with it.
//!
//! Sediment accepts local paths (relative or absolute), `file://` URLs, `memory://NAME/`
//! and `s3://bucket/prefix`. S3 settings come from the usual `AWS_*` environment
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...) or from explicit
//! storage options, which win. Commits on S3 use conditional puts (`If-None-Match`), so
//! several writers may commit concurrently without an external lock service.
//!
//! `memory://` tables live in a process-wide store keyed by the URL's host, so a table
//! created through one handle can be opened again through another in the same process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once, OnceLock};

use deltalake::logstore::{ObjectStoreFactory, ObjectStoreRef, StorageConfig, object_store_factories};
use deltalake::{DeltaResult, Path};
use url::Url;

use crate::error::{Error, Result};

/// The I/O discipline every data-file read follows (requests in flight bounded and
/// counted, a byte budget for what is fetched ahead); see `sediment_compactor::io`.
pub use sediment_compactor::io::{BoundedStore, IoLimiter, IoReport, IoSettings};

/// Storage options passed to the object store (`aws_endpoint`, `aws_region`, ...).
pub type StorageOptions = HashMap<String, String>;

/// Parse a user's table location into a URL, making local paths absolute.
///
/// Local directories are created when `create_local_dir` is set (the table is about to
/// be written); otherwise a missing local path is reported as not found by the caller.
pub fn parse_table_uri(uri: &str, create_local_dir: bool) -> Result<Url> {
    register_memory_store();
    if uri.trim().is_empty() {
        return Err(Error::invalid("table uri is empty"));
    }
    let has_scheme = uri.contains("://");
    if has_scheme {
        let url = Url::parse(uri).map_err(|e| Error::invalid(format!("table uri {uri:?} is not a valid url: {e}")))?;
        match url.scheme() {
            "s3" | "s3a" | "memory" => {}
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| Error::invalid(format!("table uri {uri:?} is not a valid file url")))?;
                return local_path_url(&path, uri, create_local_dir);
            }
            other => {
                return Err(Error::invalid(format!(
                    "table uri {uri:?} has unsupported scheme {other:?}; expected a local path, file://, memory:// or s3://"
                )));
            }
        }
        let mut url = url;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        return Ok(url);
    }
    local_path_url(std::path::Path::new(uri), uri, create_local_dir)
}

fn local_path_url(path: &std::path::Path, uri: &str, create: bool) -> Result<Url> {
    if create && !path.exists() {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::invalid(format!("cannot create table directory {uri:?}: {e}")))?;
    }
    let absolute = if path.exists() {
        std::fs::canonicalize(path).map_err(|e| Error::invalid(format!("cannot resolve table path {uri:?}: {e}")))?
    } else {
        std::path::absolute(path).map_err(|e| Error::invalid(format!("cannot resolve table path {uri:?}: {e}")))?
    };
    Url::from_directory_path(&absolute)
        .map_err(|_| Error::invalid(format!("table path {uri:?} cannot be expressed as a url")))
}

/// Make `memory://` URLs share one in-memory store per host for the whole process.
pub(crate) fn register_memory_store() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let url = Url::parse("memory://").expect("static url parses");
        object_store_factories().insert(url, Arc::new(SharedMemoryFactory));
    });
}

#[derive(Debug)]
struct SharedMemoryFactory;

impl ObjectStoreFactory for SharedMemoryFactory {
    fn parse_url_opts(&self, url: &Url, _config: &StorageConfig) -> DeltaResult<(ObjectStoreRef, Path)> {
        static STORES: OnceLock<Mutex<HashMap<String, ObjectStoreRef>>> = OnceLock::new();
        let host = url.host_str().unwrap_or_default().to_string();
        let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let store = stores
            .entry(host)
            .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()) as ObjectStoreRef)
            .clone();
        Ok((store, Path::from_url_path(url.path())?))
    }
}

/// A store rooted at `uri` (a table's folder or any prefix), built the way tables
/// are opened: paths given to it are relative to `uri`.
pub fn store_at(uri: &str, options: StorageOptions) -> Result<Arc<dyn deltalake::ObjectStore>> {
    let url = parse_table_uri(uri, false)?;
    let table = deltalake::DeltaTableBuilder::from_url(url)
        .map_err(|e| Error::delta(e).context(format!("location {uri}")))?
        .with_storage_options(options)
        .build()
        .map_err(|e| Error::delta(e).context(format!("location {uri}")))?;
    Ok(table.object_store())
}
