//! # lcross-core
//!
//! The science of lcross on top of the runtime: concept datasets and their text
//! conventions, activation extraction with an on-disk cache, steering vectors (CAA mean
//! difference, RepE PCA), A/B evaluation, and the artifact format.

pub mod activations;
pub mod analyses;
pub mod artifact;
pub mod controlvec;
pub mod data;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod maps;
pub mod mlp_map;
pub mod similarity;
pub mod steer;
pub mod steering;
pub mod store;
pub mod texts;
pub mod tsne;

pub use error::{CoreError, Result};

/// Version recorded in artifacts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use data::default_data_dir;
