//! Deleting many files: in batches through the store's bulk delete (one
//! `DeleteObjects` request per 1,000 keys on S3, several batches in flight; the local
//! file system deletes files one by one, ten at a time), retried, and reported.
//!
//! A file that is already gone counts as deleted (a rerun after a crash finds some
//! files gone). A file whose delete fails is tried again after a backoff, up to
//! [`ATTEMPTS`] times, then reported with the last error; nothing else waits for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::{ObjectStore, Path};
use futures::StreamExt;
use serde::Serialize;

/// Attempts per file.
pub const ATTEMPTS: usize = 4;
/// Paths handed to the store per call of its bulk delete.
const BATCH: usize = 10_000;

/// A file that could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedDelete {
    pub path: String,
    pub error: String,
}

/// Delete `paths`; returns the ones deleted (or already gone) and the failures.
pub async fn delete_all(store: Arc<dyn ObjectStore>, paths: Vec<Path>) -> (HashSet<Path>, Vec<FailedDelete>) {
    let mut deleted = HashSet::new();
    let mut pending: Vec<Path> = paths;
    let mut errors: HashMap<Path, String> = HashMap::new();
    for attempt in 0..ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
        }
        let mut failed = Vec::new();
        for batch in pending.chunks(BATCH) {
            let (done, batch_errors) = delete_batch(store.clone(), batch.to_vec()).await;
            for path in batch {
                if done.contains(path) {
                    deleted.insert(path.clone());
                    errors.remove(path);
                } else {
                    failed.push(path.clone());
                }
            }
            for (path, error) in batch_errors {
                errors.insert(path, error);
            }
        }
        pending = failed;
    }
    let mut failures: Vec<FailedDelete> = pending
        .into_iter()
        .map(|path| {
            let error = errors.get(&path).cloned().unwrap_or_else(|| "the store did not confirm the delete".into());
            FailedDelete { path: path.to_string(), error }
        })
        .collect();
    failures.sort_by(|a, b| a.path.cmp(&b.path));
    (deleted, failures)
}

/// One pass over `paths`: the ones the store confirmed (or reported missing), and
/// the errors it named a path for.
async fn delete_batch(store: Arc<dyn ObjectStore>, paths: Vec<Path>) -> (HashSet<Path>, Vec<(Path, String)>) {
    let batch: HashSet<Path> = paths.iter().cloned().collect();
    let locations = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
    let mut results = store.delete_stream(locations);
    let mut done = HashSet::new();
    let mut errors = Vec::new();
    let mut unattributed = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(path) => {
                done.insert(path);
            }
            // A store behind a prefix names the full path in its errors.
            Err(object_store::Error::NotFound { path, .. }) => {
                let gone = batch.iter().filter(|p| path.ends_with(p.as_ref())).max_by_key(|p| p.as_ref().len());
                done.extend(gone.cloned());
            }
            Err(e) => {
                let message = e.to_string();
                match batch.iter().find(|p| message.contains(p.as_ref())) {
                    Some(path) => errors.push((path.clone(), message)),
                    None => unattributed = Some(message),
                }
            }
        }
    }
    if let Some(message) = unattributed {
        errors.extend(batch.iter().filter(|p| !done.contains(*p)).map(|p| (p.clone(), message.clone())));
    }
    (done, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt as _;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn deletes_what_is_there_and_counts_what_is_gone() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for name in ["a.parquet", "b.parquet"] {
            store.put(&Path::from(name), bytes::Bytes::from_static(b"x").into()).await.unwrap();
        }
        let paths = vec![Path::from("a.parquet"), Path::from("b.parquet"), Path::from("gone.parquet")];
        let (deleted, failed) = delete_all(store.clone(), paths).await;
        assert_eq!(deleted.len(), 3, "a missing file is as good as deleted");
        assert!(failed.is_empty());
        assert!(store.head(&Path::from("a.parquet")).await.is_err());
    }
}
