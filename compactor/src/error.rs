//! Errors of compaction.

/// What went wrong while compacting.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// The settings or plan are not usable (bad knob, column not in the table).
    #[error("invalid compaction request: {0}")]
    Invalid(String),
    /// The table uses something compaction cannot preserve.
    #[error("cannot compact table: {0}")]
    Unsupported(String),
    /// Storage failed (after retries).
    #[error("storage error while compacting: {0}")]
    Storage(String),
    /// Another writer won every commit attempt.
    #[error("commit conflict while compacting: {0}")]
    Conflict(String),
    /// A data file could not be read or written.
    #[error("data error while compacting: {0}")]
    Data(String),
}

impl CompactionError {
    /// A failed read of data file `path`: storage trouble (retry later) when the
    /// object store failed, else a damaged file.
    pub fn reading(path: &str, e: deltalake::parquet::errors::ParquetError) -> Self {
        use deltalake::parquet::errors::ParquetError as P;
        match e {
            P::External(inner) if inner.downcast_ref::<object_store::Error>().is_some() => {
                CompactionError::Storage(format!("reading {path}: {inner}"))
            }
            other => CompactionError::Data(format!("cannot read data file {path}: {other}")),
        }
    }
}

/// Shorthand for compaction results.
pub type Result<T, E = CompactionError> = std::result::Result<T, E>;

impl From<deltalake::DeltaTableError> for CompactionError {
    fn from(err: deltalake::DeltaTableError) -> Self {
        use deltalake::DeltaTableError as E;
        use deltalake::kernel::transaction::TransactionError as T;
        match &err {
            e if crate::retry::is_conflict(e) => CompactionError::Conflict(crate::retry::describe(e)),
            E::ObjectStore { .. } | E::Transaction { source: T::ObjectStore { .. } } => {
                CompactionError::Storage(err.to_string())
            }
            E::Transaction { source: T::UnsupportedTableFeatures(_) | T::TableFeaturesRequired(_) } => {
                CompactionError::Unsupported(crate::retry::describe(&err))
            }
            _ => CompactionError::Data(crate::retry::describe(&err)),
        }
    }
}

impl From<deltalake::arrow::error::ArrowError> for CompactionError {
    fn from(err: deltalake::arrow::error::ArrowError) -> Self {
        CompactionError::Data(err.to_string())
    }
}

impl From<deltalake::parquet::errors::ParquetError> for CompactionError {
    fn from(err: deltalake::parquet::errors::ParquetError) -> Self {
        CompactionError::Data(err.to_string())
    }
}

impl From<object_store::Error> for CompactionError {
    fn from(err: object_store::Error) -> Self {
        CompactionError::Storage(err.to_string())
    }
}
