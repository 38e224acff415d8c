//! # lcross-core
//!
//! The science of lcross on top of the runtime: concept datasets and their text
//! conventions, activation extraction with an on-disk cache, steering vectors (CAA mean
//! difference, RepE PCA), A/B evaluation, and the artifact format.

pub mod activations;
pub mod analyses;
pub mod artifact;
pub mod controlvec;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod maps;
pub mod steering;
pub mod store;
pub mod texts;
pub mod tsne;

pub use error::{CoreError, Result};

/// Version recorded in artifacts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default data directory: `$LCROSS_DATA`, else `../shared/data` relative to the
/// workspace (where the project's tests and benchmarks read it).
pub fn default_data_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("LCROSS_DATA").filter(|d| !d.is_empty()) {
        return d.into();
    }
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}
