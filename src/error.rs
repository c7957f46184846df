//! Errors of the Sediment library.
//!
//! Every error carries an [`ErrorKind`] a caller can act on: retry a
//! [`ErrorKind::Conflict`] or [`ErrorKind::Unavailable`], fix the request on
//! [`ErrorKind::InvalidInput`], and so on. Messages are lowercase and name the
//! table, file, column or version involved.

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::TransactionError;

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Another writer committed first in a way that cannot be reconciled: retry.
    Conflict,
    /// The request is wrong (bad expression, schema that does not fit, bad option): fix it.
    InvalidInput,
    /// The table, version or file does not exist.
    NotFound,
    /// The table uses a protocol feature Sediment cannot honour.
    Unsupported,
    /// Storage could not be reached or answered with a transient error: retry later.
    Unavailable,
    /// The table is damaged (broken log, unreadable file).
    Data,
    /// A bug or an unexpected state inside Sediment or its dependencies.
    Internal,
}

impl ErrorKind {
    /// The process exit code the CLI uses for this kind (stable, for scripts).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::InvalidInput => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::Conflict => 4,
            ErrorKind::Unsupported => 5,
            ErrorKind::Unavailable => 6,
            ErrorKind::Data => 7,
            ErrorKind::Internal => 1,
        }
    }
}

/// The error type of every Sediment operation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand for results of Sediment operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// An [`ErrorKind::Conflict`] error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// An [`ErrorKind::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// What a caller can do about this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message alone (what `Display` prints).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with context (a table, a file), keeping the kind.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Wrap a delta-rs error, classifying it.
    pub fn delta(err: DeltaTableError) -> Self {
        let kind = classify_delta(&err);
        let message = match &err {
            DeltaTableError::NotATable(path) => format!("no delta table at {path}"),
            // One sentence, not delta-rs's chain of "Transaction failed: ...".
            other => sediment_compactor::retry::describe(other),
        };
        Self { kind, message, source: Some(Box::new(err)) }
    }
}

fn classify_delta(err: &DeltaTableError) -> ErrorKind {
    use DeltaTableError as E;
    match err {
        E::NotATable(_) | E::InvalidVersion(_) => ErrorKind::NotFound,
        e if sediment_compactor::retry::is_conflict(e) => ErrorKind::Conflict,
        E::Transaction { source } => match source {
            TransactionError::UnsupportedTableFeatures(_) | TransactionError::TableFeaturesRequired(_) => {
                ErrorKind::Unsupported
            }
            TransactionError::DeltaTableAppendOnly => ErrorKind::InvalidInput,
            TransactionError::ObjectStore { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        E::ObjectStore { source } => match source {
            deltalake::ObjectStoreError::NotFound { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Unavailable,
        },
        E::InvalidJsonLog { .. }
        | E::InvalidStatsJson { .. }
        | E::InvalidData { .. }
        | E::Parquet { .. }
        | E::KernelError(_)
        | E::Kernel { .. }
        | E::MetadataError(_)
        | E::NoSchema => ErrorKind::Data,
        E::SchemaMismatch { .. }
        | E::InvalidPartitionFilter { .. }
        | E::InvalidDateTimeString { .. }
        | E::InvalidTableLocation(_)
        | E::PartitionError { .. } => ErrorKind::InvalidInput,
        E::UnsupportedColumnMapping { .. } | E::MissingFeature { .. } => ErrorKind::Unsupported,
        _ => ErrorKind::Internal,
    }
}

/// The path of a file that a storage error anywhere in `err`'s chain says is missing.
pub(crate) fn missing_file(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(object_store::Error::NotFound { path, .. }) = e.downcast_ref::<object_store::Error>() {
            return Some(path.clone());
        }
        // A deletion-vector file the kernel could not find.
        if let Some(delta_kernel::Error::FileNotFound(path)) = e.downcast_ref::<delta_kernel::Error>() {
            return Some(path.clone());
        }
        current = e.source();
    }
    // The parquet reader and the kernel turn storage errors into text: their wordings.
    let text = err.to_string();
    if let Some(start) = text.find("Object at location ").map(|i| i + "Object at location ".len())
        && let Some(end) = text[start..].find(" not found")
    {
        return Some(text[start..start + end].to_string());
    }
    let start = text.find("File not found: ")? + "File not found: ".len();
    Some(text[start..].lines().next().unwrap_or_default().trim().to_string())
}

/// Whether a storage error anywhere in `err`'s chain is S3 refusing to read an
/// archived object (GLACIER, DEEP_ARCHIVE) that is not restored.
pub(crate) fn archived_object(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.to_string().contains("InvalidObjectState") {
            return true;
        }
        current = e.source();
    }
    false
}

impl From<DeltaTableError> for Error {
    fn from(err: DeltaTableError) -> Self {
        Error::delta(err)
    }
}

impl From<deltalake::kernel::Error> for Error {
    fn from(err: deltalake::kernel::Error) -> Self {
        Error::delta(DeltaTableError::from(err))
    }
}

impl From<deltalake::arrow::error::ArrowError> for Error {
    fn from(err: deltalake::arrow::error::ArrowError) -> Self {
        Self { kind: ErrorKind::InvalidInput, message: err.to_string(), source: Some(Box::new(err)) }
    }
}

impl From<deltalake::parquet::errors::ParquetError> for Error {
    fn from(err: deltalake::parquet::errors::ParquetError) -> Self {
        use deltalake::parquet::errors::ParquetError as P;
        // Storage failures reach the parquet reader as external errors.
        let kind = match &err {
            P::External(inner) if inner.downcast_ref::<object_store::Error>().is_some() => ErrorKind::Unavailable,
            _ => ErrorKind::Data,
        };
        Self { kind, message: err.to_string(), source: Some(Box::new(err)) }
    }
}

impl From<deltalake::datafusion::error::DataFusionError> for Error {
    fn from(err: deltalake::datafusion::error::DataFusionError) -> Self {
        use deltalake::datafusion::error::DataFusionError as D;
        let kind = match &err {
            D::SQL(..) | D::Plan(_) | D::SchemaError(..) => ErrorKind::InvalidInput,
            D::ObjectStore(_) | D::IoError(_) => ErrorKind::Unavailable,
            D::ParquetError(_) => ErrorKind::Data,
            _ => ErrorKind::Internal,
        };
        Self { kind, message: err.to_string(), source: Some(Box::new(err)) }
    }
}

#[cfg(test)]
mod tests {
    use super::missing_file;

    #[test]
    fn missing_files_are_found_in_the_readers_wordings() {
        let store = object_store::Error::NotFound { path: "a/b.parquet".into(), source: "gone".into() };
        assert_eq!(missing_file(&store).as_deref(), Some("a/b.parquet"));
        let kernel = delta_kernel::Error::FileNotFound("/t/deletion_vector_x.bin".into());
        assert_eq!(missing_file(&kernel).as_deref(), Some("/t/deletion_vector_x.bin"));
        let text = std::io::Error::other("External error: Kernel error: File not found: /t/deletion_vector_y.bin");
        assert_eq!(missing_file(&text).as_deref(), Some("/t/deletion_vector_y.bin"));
        let text = std::io::Error::other("Parquet error: Object at location /t/p.parquet not found: No such file");
        assert_eq!(missing_file(&text).as_deref(), Some("/t/p.parquet"));
        assert_eq!(missing_file(&std::io::Error::other("permission denied")), None);
    }
}
