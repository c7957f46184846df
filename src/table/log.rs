//! Reading commits for what they did to the table's files: the files each commit
//! adds and removes (with their deletion vectors) and the change-data files it
//! writes, and when it was made.
//!
//! Vacuum reads the commits of its retention window this way: every file a version
//! inside the window can need is live in the newest version, or was added or removed
//! by a commit of the window. Commits are read several at once (one GET each).

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::Path;
use deltalake::kernel::DeletionVectorDescriptor;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;
use crate::table::paths::{log_path, vector_file};

/// Commits read at once.
const COMMITS_IN_FLIGHT: usize = 32;

/// The files one commit touched, as store paths relative to the table root.
#[derive(Debug, Clone, Default)]
pub struct CommitFiles {
    pub version: u64,
    /// `inCommitTimestamp`, else `commitInfo.timestamp`, in milliseconds; `None` when
    /// the commit records neither.
    pub timestamp: Option<i64>,
    /// Data files added or removed, and the files of their deletion vectors.
    pub data: HashSet<Path>,
    pub vectors: HashSet<Path>,
    /// `_change_data` files.
    pub change_data: HashSet<Path>,
}

#[derive(Deserialize)]
struct Line {
    add: Option<FileRef>,
    remove: Option<FileRef>,
    cdc: Option<FileRef>,
    #[serde(rename = "commitInfo")]
    commit_info: Option<CommitTime>,
}

#[derive(Deserialize)]
struct FileRef {
    path: String,
    #[serde(rename = "deletionVector")]
    deletion_vector: Option<DeletionVectorDescriptor>,
}

#[derive(Deserialize)]
struct CommitTime {
    timestamp: Option<i64>,
    #[serde(rename = "inCommitTimestamp")]
    in_commit_timestamp: Option<i64>,
}

impl CommitFiles {
    /// Parse commit `version` of the table rooted at `root`.
    pub fn parse(version: u64, bytes: &[u8], root: &url::Url) -> Result<Self> {
        let mut files = CommitFiles { version, ..Default::default() };
        for line in commit_actions::<Line>(version, bytes)? {
            for file in [line.add, line.remove].into_iter().flatten() {
                files.data.extend(log_path(&file.path));
                if let Some(dv) = &file.deletion_vector {
                    files.vectors.extend(vector_file(root, dv));
                }
            }
            if let Some(cdc) = line.cdc {
                files.change_data.extend(log_path(&cdc.path));
            }
            if let Some(info) = line.commit_info {
                files.timestamp = info.in_commit_timestamp.or(info.timestamp);
            }
        }
        Ok(files)
    }
}

/// The actions of commit `version`, one JSON object a line (blank lines skipped); an
/// error naming the commit and line that does not parse.
pub(crate) fn commit_actions<T: serde::de::DeserializeOwned>(version: u64, bytes: &[u8]) -> Result<Vec<T>> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(n, line)| {
            serde_json::from_slice(line).map_err(|e| {
                Error::new(ErrorKind::Data, format!("commit {version} line {} is not valid json: {e}", n + 1))
            })
        })
        .collect()
}

impl Table {
    /// The commits from the table's version down to the first one made before
    /// `since_ms` (included: it is the version that was current at `since_ms`), or to
    /// the oldest commit still in the log. Newest first.
    pub async fn commits_since(&self, since_ms: i64) -> Result<Vec<CommitFiles>> {
        let Some(latest) = self.version() else {
            return Ok(Vec::new());
        };
        commits_since_in(self.object_store(), self.delta().table_url(), latest, since_ms, self.uri()).await
    }
}

/// [`Table::commits_since`] of the table rooted at `root` (`store` rooted there too)
/// whose newest version is `latest`.
pub(crate) async fn commits_since_in(
    store: Arc<dyn ObjectStore>,
    root: &url::Url,
    latest: u64,
    since_ms: i64,
    uri: &str,
) -> Result<Vec<CommitFiles>> {
    let mut commits = Vec::new();
    let mut next = Some(latest);
    while let Some(top) = next {
        let bottom = top.saturating_sub(COMMITS_IN_FLIGHT as u64 - 1);
        let batch: Vec<Option<CommitFiles>> = futures::stream::iter((bottom..=top).rev())
            .map(|version| {
                let store = store.clone();
                async move {
                    let path = Path::from(format!("_delta_log/{version:020}.json"));
                    match store.get(&path).await {
                        Ok(got) => {
                            let bytes = got.bytes().await.map_err(|e| Error::delta(e.into()))?;
                            CommitFiles::parse(version, &bytes, root).map(Some)
                        }
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(Error::delta(e.into())),
                    }
                }
            })
            .buffered(COMMITS_IN_FLIGHT)
            .try_collect()
            .await
            .map_err(|e: Error| e.context(format!("reading the log of table {uri}")))?;
        next = if bottom == 0 { None } else { Some(bottom - 1) };
        for commit in batch {
            // A missing commit: log cleanup removed it and everything older.
            let Some(commit) = commit else {
                return Ok(commits);
            };
            let before = commit.timestamp.is_some_and(|t| t < since_ms);
            commits.push(commit);
            if before {
                return Ok(commits);
            }
        }
    }
    Ok(commits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_names_its_files_vectors_and_time() {
        let root = url::Url::parse("file:///lake/t/").unwrap();
        let commit = br#"{"commitInfo":{"timestamp":1700000000000,"operation":"MERGE"}}
{"add":{"path":"date=a%20b/part-1.parquet","size":1,"partitionValues":{},"modificationTime":0,"dataChange":true,"deletionVector":{"storageType":"u","pathOrInlineDv":"ab^-aqEH.-t@S}K{vb[*k^","offset":1,"sizeInBytes":34,"cardinality":2}}}
{"remove":{"path":"part-0.parquet","dataChange":true,"deletionTimestamp":1}}
{"cdc":{"path":"_change_data/cdc-0.parquet","size":1,"partitionValues":{},"dataChange":false}}
"#;
        let files = CommitFiles::parse(4, commit, &root).unwrap();
        assert_eq!(files.timestamp, Some(1_700_000_000_000));
        let data: HashSet<&str> = files.data.iter().map(|p| p.as_ref()).collect();
        assert_eq!(data, HashSet::from(["date=a b/part-1.parquet", "part-0.parquet"]));
        assert_eq!(files.vectors.len(), 1);
        assert!(files.vectors.iter().next().unwrap().as_ref().starts_with("ab/deletion_vector_"));
        assert_eq!(files.change_data.iter().next().unwrap().as_ref(), "_change_data/cdc-0.parquet");
        let err = CommitFiles::parse(5, b"{not json\n", &root).unwrap_err();
        assert!(err.to_string().contains("commit 5 line 1"), "{err}");
    }
}
