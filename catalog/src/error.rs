//! The catalog's error: a kind a caller can act on, and a message naming what was wrong.

/// What a caller can do about a [`CatalogError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CatalogErrorKind {
    /// The request is wrong (a bad name, layer, policy or URL): fix it.
    InvalidInput,
    /// The table or job does not exist.
    NotFound,
    /// It exists already, or another daemon holds it (a table registered twice, a job's
    /// lease lost): look again.
    Conflict,
    /// The catalog's database could not be reached: retry later.
    Unavailable,
    /// The database holds something this version cannot read, or a bug.
    Internal,
}

/// An error of a catalog operation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CatalogError {
    kind: CatalogErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand for results of catalog operations.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

impl CatalogError {
    /// A new error of `kind`.
    pub fn new(kind: CatalogErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// An [`CatalogErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(CatalogErrorKind::InvalidInput, message)
    }

    /// A [`CatalogErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(CatalogErrorKind::NotFound, message)
    }

    /// A [`CatalogErrorKind::Conflict`] error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(CatalogErrorKind::Conflict, message)
    }

    /// What a caller can do about it.
    pub fn kind(&self) -> CatalogErrorKind {
        self.kind
    }

    /// Wrap a database error met while doing `what`.
    pub(crate) fn database(what: impl std::fmt::Display, err: sqlx::Error) -> Self {
        let kind = match &err {
            sqlx::Error::RowNotFound => CatalogErrorKind::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => CatalogErrorKind::Conflict,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => CatalogErrorKind::Unavailable,
            sqlx::Error::Configuration(_) => CatalogErrorKind::InvalidInput,
            _ => CatalogErrorKind::Internal,
        };
        Self { kind, message: format!("catalog: {what}: {err}"), source: Some(Box::new(err)) }
    }
}
