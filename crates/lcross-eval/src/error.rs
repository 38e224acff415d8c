//! Errors of the evaluation layer.

use std::path::PathBuf;

/// What can go wrong while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Inputs that do not fit together (no prompts, a beta that is not finite...).
    #[error("{0}")]
    Invalid(String),
    /// A prompts / judge-input file is malformed; `line` is 1-based.
    #[error("{path}{}: {reason}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse { path: PathBuf, line: Option<usize>, reason: String },
    /// An HTTP judge could not be reached or answered with an error status.
    #[error("judge at {url}: {reason}")]
    Http { url: String, reason: String },
    /// A dataset file could not be downloaded (status, connection, timeout).
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    /// A fetched file's bytes are not the pinned ones: nothing was written for it.
    #[error("{file} from {from}: sha256 mismatch: expected {expected}, got {got}; the file was not written")]
    Checksum { file: String, from: String, expected: String, got: String },
    #[error(transparent)]
    Core(#[from] lcross_core::CoreError),
    #[error(transparent)]
    Model(#[from] lcross_model::ModelError),
    /// A record could not be written or read as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Candle(#[from] lcross_model::candle_core::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, EvalError>;

impl EvalError {
    pub(crate) fn parse(path: impl Into<PathBuf>, line: Option<usize>, reason: impl Into<String>) -> Self {
        Self::Parse { path: path.into(), line, reason: reason.into() }
    }
}
