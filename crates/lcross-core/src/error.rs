//! Errors of the science layer.

use std::path::PathBuf;

/// What can go wrong with datasets, activations, vectors and maps.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset or artifact file is malformed; `item` is the 0-based entry index.
    #[error("{path}{}: {reason}", item.map(|i| format!(", item {i}")).unwrap_or_default())]
    Parse { path: PathBuf, item: Option<usize>, reason: String },
    /// Inputs that do not fit together (sizes, models, layers...).
    #[error("{0}")]
    Invalid(String),
    /// A numerical routine failed (e.g. SVD did not converge).
    #[error("numerical: {0}")]
    Numerical(String),
    /// The result store (SQLite) failed.
    #[error("result store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] lcross_model::ModelError),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, CoreError>;

impl CoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
    pub(crate) fn parse(path: impl Into<PathBuf>, item: Option<usize>, reason: impl Into<String>) -> Self {
        Self::Parse { path: path.into(), item, reason: reason.into() }
    }
}
