//! Tags: named versions of a table, kept with the table.
//!
//! A tag is a small JSON record at `_sediment/tags/<name>.json` in the table's folder
//! (readers and the vacuums of Spark and delta-rs skip `_`-prefixed folders, so tags
//! travel with the table and every Sediment process sees the same ones). It names a
//! version, when it was made, an optional expiry and note. Records are written
//! put-if-absent: of two creators of one name one wins, the other gets an error
//! naming the tag. A tag pins its version against vacuum and log cleanup until it
//! expires; an expired tag still opens its version while the version is readable.
//!
//! Time comes from the caller (`now`), so expiry is testable without sleeping.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;

/// The folder of the tag records, relative to the table root.
pub const TAGS_DIR: &str = "_sediment/tags";

/// A named version of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    pub name: String,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    /// After this the tag no longer pins its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The program that wrote the record (`sediment/<version>`).
    pub created_by: String,
}

impl Tag {
    /// Whether the tag has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Refuse names that would not be one plain file name: 1 to 128 characters from
/// letters, digits, `.`, `_` and `-`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if name.is_empty() || name.len() > 128 || !plain || name.starts_with('.') {
        return Err(Error::invalid(format!(
            "invalid tag name {name:?}: use 1 to 128 letters, digits, '.', '_' or '-' (not starting with '.')"
        )));
    }
    Ok(())
}

fn tag_path(name: &str) -> deltalake::Path {
    deltalake::Path::from(format!("{TAGS_DIR}/{name}.json"))
}

impl Table {
    /// Name `version` of the table `name`, until `expires_at` (never, when `None`).
    /// Refused when the name is taken, the version does not exist or is no longer
    /// readable, or the expiry is not after now.
    pub async fn create_tag(
        &self,
        name: &str,
        version: u64,
        expires_at: Option<DateTime<Utc>>,
        note: Option<String>,
    ) -> Result<Tag> {
        validate_name(name)?;
        let latest = self
            .version()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no delta table at {}", self.uri())))?;
        if version > latest {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("cannot tag version {version} of table {}: its newest version is {latest}", self.uri()),
            ));
        }
        let now = Utc::now();
        if let Some(at) = expires_at
            && at <= now
        {
            return Err(Error::invalid(format!("tag {name:?} would expire at {at}, which is not in the future")));
        }
        // The version must still be readable (its commit or a checkpoint at or after
        // it may have been cleaned up).
        let options = crate::OpenOptions::new()
            .storage_options(self.storage_options().clone())
            .object_store(self.delta().log_store().root_object_store(None))
            .version(version);
        Table::open_with(self.uri(), options).await.map_err(|e| {
            Error::new(
                ErrorKind::NotFound,
                format!("cannot tag version {version} of table {}: {}", self.uri(), e.message()),
            )
        })?;
        let tag = Tag {
            name: name.to_string(),
            version,
            created_at: now,
            expires_at,
            note,
            created_by: crate::table::commit::engine_info(),
        };
        let body = serde_json::to_vec_pretty(&tag).map_err(|e| Error::internal(format!("encoding tag: {e}")))?;
        let store = self.object_store();
        match store.put_opts(&tag_path(name), body.into(), PutMode::Create.into()).await {
            Ok(_) => Ok(tag),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.tag(name).await.ok().flatten().map(|t| format!(" (on version {})", t.version));
                Err(Error::invalid(format!(
                    "tag {name:?} already exists on table {}{}: delete it first to move it",
                    self.uri(),
                    existing.unwrap_or_default()
                )))
            }
            Err(e) => Err(Error::delta(deltalake::DeltaTableError::from(e))),
        }
    }

    /// The tag `name`, or `None`.
    pub async fn tag(&self, name: &str) -> Result<Option<Tag>> {
        validate_name(name)?;
        read_tag(self.object_store().as_ref(), name, self.uri()).await
    }

    /// Every tag of the table, by name.
    pub async fn tags(&self) -> Result<Vec<Tag>> {
        tags_in(self.object_store().as_ref(), self.uri()).await
    }

    /// Delete the tag `name`; an error when there is none.
    pub async fn delete_tag(&self, name: &str) -> Result<Tag> {
        let tag = self
            .tag(name)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("table {} has no tag {name:?}", self.uri())))?;
        self.object_store()
            .delete(&tag_path(name))
            .await
            .map_err(|e| Error::delta(deltalake::DeltaTableError::from(e)))?;
        Ok(tag)
    }
}

/// The record of tag `name` in `store` (rooted at the table), or `None`.
pub(crate) async fn read_tag(store: &dyn ObjectStore, name: &str, uri: &str) -> Result<Option<Tag>> {
    let path = tag_path(name);
    let bytes = match store.get(&path).await {
        Ok(result) => result.bytes().await.map_err(|e| Error::delta(deltalake::DeltaTableError::from(e)))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::delta(deltalake::DeltaTableError::from(e))),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::new(ErrorKind::Data, format!("tag record {path} of table {uri} is damaged: {e}")))
}

/// Every tag under `store` (rooted at the table `uri`), by name.
pub(crate) async fn tags_in(store: &dyn deltalake::ObjectStore, uri: &str) -> Result<Vec<Tag>> {
    let prefix = deltalake::Path::from(TAGS_DIR);
    let mut names = Vec::new();
    let mut listing = store.list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| Error::delta(deltalake::DeltaTableError::from(e)))?;
        if let Some(name) = meta.location.filename().and_then(|f| f.strip_suffix(".json")) {
            names.push(name.to_string());
        }
    }
    names.sort();
    let mut tags = Vec::with_capacity(names.len());
    for name in names {
        if let Some(tag) = read_tag(store, &name, uri).await? {
            tags.push(tag);
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn tag_names_are_plain_file_names() {
        for good in ["v1", "end-of-q3_2026", "release.1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "with space", ".hidden", &"x".repeat(129), "ü"] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.to_string().contains("invalid tag name"), "{bad}: {err}");
        }
    }
}
