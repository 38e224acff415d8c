//! Errors of the evaluation layer.

use std::path::PathBuf;

/// What can go wrong while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An experiment file or profile is not one lcross can run (`origin`: the file or experiment).
    #[error("{origin}: {reason}")]
    Config { origin: String, reason: String },
    /// A run directory holds something else than this run (another experiment, numerics,
    /// shard), or run directories to merge do not belong together.
    #[error("{}: {reason}", path.display())]
    Incompatible { path: PathBuf, reason: String },
    /// A cell of a grid could not be computed as planned.
    #[error("cell {cell}: {reason}")]
    Cell { cell: String, reason: String },
    /// A model (or judge model) could not be loaded.
    #[error("cannot load model `{model}`: {reason}")]
    Load { model: String, reason: String },
    /// A judge cannot score with its labels or tokens.
    #[error("judge: {0}")]
    Judge(String),
    /// Something an evaluation needs was not given (`what` needs `needs`).
    #[error("{what} needs {needs}")]
    MissingInput { what: String, needs: String },
    /// Fewer items than a step needs (e.g. a dev and a test split of at least 2 each).
    #[error("{what}: at least {needed} needed, got {got}")]
    TooFew { what: String, needed: usize, got: usize },
    /// A judged metric was run without a judge.
    #[error("metric `{metric}` scores answers with a judge, and none was given")]
    NoJudge { metric: String },
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
    /// A file could not be read or written.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Core(lcross_core::CoreError::Io { path: path.into(), source })
    }
    /// A value a user gave is not one lcross takes.
    pub(crate) fn bad_value(what: impl Into<String>, value: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::Core(lcross_core::CoreError::BadValue { what: what.into(), value: value.into(), expected: expected.into() })
    }
    pub(crate) fn parse(path: impl Into<PathBuf>, line: Option<usize>, reason: impl Into<String>) -> Self {
        Self::Parse { path: path.into(), line, reason: reason.into() }
    }
}
