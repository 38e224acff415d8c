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
    /// A file of the public datasets is not in the data directory.
    #[error("{} is missing: the public datasets are not in {} (run `lcross data fetch`, or `lcross data fetch --from DIR` for a local mirror; `$LCROSS_DATA` sets the directory)", path.display(), data_dir.display())]
    MissingData { path: PathBuf, data_dir: PathBuf },
    /// A value a user gave (flag, file field, request) is not one lcross takes.
    #[error("{what} `{value}`: expected {expected}")]
    BadValue { what: String, value: String, expected: String },
    /// A vector or map of one model used on another (same size, other id or file hash).
    #[error("{0}")]
    WrongModel(Box<ModelMismatch>),
    /// A vector, state or matrix of the wrong length.
    #[error("{what}: {got} values, expected {expected}")]
    SizeMismatch { what: String, expected: usize, got: usize },
    /// A vector or state with NaN or an infinity in it.
    #[error("{what} has a non-finite value (NaN or infinity)")]
    NonFinite { what: String },
    /// A layer past the model's depth.
    #[error("layer {layer} is out of range: {model} has layers 0..={}", layers.saturating_sub(1))]
    LayerOutOfRange { model: String, layer: usize, layers: usize },
    /// Nothing to work on: no layers, no states, no items, an empty text.
    #[error("no {what}")]
    Empty { what: String },
    /// Fewer items than a method needs (PCA's 2 pairs, t-SNE's 5 points, ...).
    #[error("{what}: at least {needed} needed, got {got}")]
    TooFew { what: String, needed: usize, got: usize },
    /// A vector or set of states has no entry for a layer that is asked for.
    #[error("{what} has no layer {layer}; it has {layers:?}")]
    MissingLayer { what: String, layer: usize, layers: Vec<usize> },
    /// A record could not be encoded (JSON, safetensors, GGUF) for writing.
    #[error("encoding {what}: {reason}")]
    Encode { what: String, reason: String },
    /// `--beta auto` on a vector that was never calibrated.
    #[error("the {concept} vector of {model} has no calibrated beta: run `lcross calibrate` on it first (or give a number)")]
    NotCalibrated { concept: String, model: String },
    /// A vector or map of a model of another hidden size.
    #[error("{what} has hidden size {got} (model {made_for}), but {model} has {expected}: it belongs to another model (transfer it with a map)")]
    HiddenSizeMismatch { what: String, made_for: String, model: String, expected: usize, got: usize },
    /// A numerical routine failed (e.g. SVD did not converge).
    #[error("numerical: {0}")]
    Numerical(String),
    /// The result store (SQLite) failed.
    #[error("result store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    /// The result store's file is not a sound database (a damaged page, not SQLite).
    #[error("result store {path} is damaged ({reason}): {advice}")]
    StoreDamaged { path: PathBuf, reason: String, advice: &'static str },
    /// A file could not be written (or would replace a link or a device).
    #[error(transparent)]
    Write(#[from] lcross_fs::WriteError),
    #[error(transparent)]
    Model(#[from] lcross_model::ModelError),
}

/// Which model an artifact was made for and which it met (see [`CoreError::WrongModel`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelMismatch {
    pub what: String,
    pub made_for: String,
    pub made_for_sha256: String,
    pub model: String,
    pub model_sha256: String,
}

impl std::fmt::Display for ModelMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |h: &str| h.get(..12).unwrap_or(h).to_string();
        // `model` may carry a note after the id ("x (the vector's model)").
        let same_id = self.model.split(' ').next() == Some(self.made_for.as_str());
        if same_id && self.made_for_sha256 != self.model_sha256 {
            write!(
                f,
                "{} was made for another file of `{}` (sha256 {}…), not this one (sha256 {}…): another quantization, revision or conversion of the model; pass --force to use it anyway",
                self.what,
                self.made_for,
                short(&self.made_for_sha256),
                short(&self.model_sha256)
            )
        } else {
            write!(
                f,
                "{} was made for model `{}` (sha256 {}…), not `{}` (sha256 {}…); pass --force to use it anyway",
                self.what,
                self.made_for,
                short(&self.made_for_sha256),
                self.model,
                short(&self.model_sha256)
            )
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_of_files_of_one_id_says_so() {
        let m = ModelMismatch {
            what: "the map's source side".into(),
            made_for: "qwen".into(),
            made_for_sha256: "aaaaaaaaaaaaaaaa".into(),
            model: "qwen (the vector's model)".into(),
            model_sha256: "bbbbbbbbbbbbbbbb".into(),
        };
        let s = m.to_string();
        assert!(s.contains("another file of `qwen`") && s.contains("aaaaaaaaaaaa…") && s.contains("bbbbbbbbbbbb…") && s.contains("--force"), "{s}");
        let other = ModelMismatch { model: "smollm (the vector's model)".into(), ..m };
        assert!(other.to_string().contains("not `smollm (the vector's model)`"), "{other}");
    }
}
