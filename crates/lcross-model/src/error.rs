//! Errors of the model runtime.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Variants name the file and the field at fault so that a user can act on the
/// message without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid model file (bad magic, truncated, absurd header...).
    #[error("{path}: not a valid {format} file: {reason}")]
    InvalidFile { path: PathBuf, format: &'static str, reason: String },
    /// A metadata / config field is missing or has the wrong type or value.
    #[error("{path}: field `{field}`: {reason}")]
    Field { path: PathBuf, field: String, reason: String },
    /// A tensor is missing or has the wrong shape.
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor { path: PathBuf, tensor: String, reason: String },
    /// The architecture named in the file is not one lcross runs.
    #[error("{path}: unsupported architecture `{arch}` (supported: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, olmo2)")]
    UnsupportedArchitecture { path: PathBuf, arch: String },
    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A model spec (`--model`) names nothing lcross can load.
    #[error("model `{spec}`: {reason}")]
    ModelNotFound { spec: String, reason: String },
    /// The caller stopped the work before a forward pass (e.g. Ctrl-C in Python; see
    /// [`crate::interrupt`]).
    #[error("interrupted")]
    Interrupted,
    /// Numbers became NaN or infinite while running (a steering too strong for the compute
    /// dtype, or broken weights): never an answer made of them.
    #[error(
        "{what} are not finite (NaN or infinity) with {steering}: the numbers overflowed the compute dtype; lower beta (or check the vector and the model)"
    )]
    NonFinite { what: String, steering: String },
    /// A caller asked for something out of range or inconsistent with the model.
    #[error("{0}")]
    InvalidInput(String),
    /// An error from candle during the forward pass.
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the runtime.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn field(path: impl Into<PathBuf>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Field { path: path.into(), field: field.into(), reason: reason.into() }
    }
    pub(crate) fn tensor(path: impl Into<PathBuf>, tensor: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Tensor { path: path.into(), tensor: tensor.into(), reason: reason.into() }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
