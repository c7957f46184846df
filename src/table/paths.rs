//! Paths of a table's files as the log writes them and as the store lists them.
//!
//! The log holds paths relative to the table root, percent-encoded (a partition value
//! with a space is `date=a%20b`); a store lists [`Path`]s. Everything that compares
//! the two (vacuum, restore, orphan reports) turns log paths into store paths here.
//! Deletion vectors kept in files name them by a UUID (and a random prefix) that
//! [`vector_file`] resolves.

use deltalake::Path;
use deltalake::kernel::DeletionVectorDescriptor;
use url::Url;

/// The store path of a file the log names `path` (relative, percent-encoded);
/// `None` for an absolute URL (a file outside the table's folder).
pub fn log_path(path: &str) -> Option<Path> {
    if path.contains("://") {
        return None;
    }
    Some(Path::from_url_path(path).unwrap_or_else(|_| Path::from(path)))
}

/// The store path (relative to `root`) of the file holding the deletion vector
/// `descriptor`; `None` for an inline vector or a file outside the table's folder.
pub fn vector_file(root: &Url, descriptor: &DeletionVectorDescriptor) -> Option<Path> {
    let descriptor =
        delta_kernel::actions::deletion_vector::DeletionVectorDescriptor::try_from(descriptor.clone()).ok()?;
    let url = descriptor.absolute_path(root).ok()??;
    let relative = root.make_relative(&url)?;
    if relative.starts_with("../") {
        return None;
    }
    Path::from_url_path(relative).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_are_decoded_into_store_paths() {
        assert_eq!(log_path("date=a%20b/part-0.parquet").unwrap().as_ref(), "date=a b/part-0.parquet");
        assert_eq!(log_path("part-0.parquet").unwrap().as_ref(), "part-0.parquet");
        assert!(log_path("s3://other/part-0.parquet").is_none());
    }
}
