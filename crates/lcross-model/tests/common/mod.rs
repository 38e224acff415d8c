//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use lcross_model::{registry, LoadOptions, Model};

/// Load a known model, or panic with the command that fetches it. Set
/// `LCROSS_SKIP_MODEL_TESTS=1` to skip real-model tests on a machine without models
/// (returns None then); CI never sets it.
pub fn load_known(id: &str) -> Option<Model> {
    if std::env::var_os("LCROSS_SKIP_MODEL_TESTS").is_some() {
        eprintln!("SKIPPED: LCROSS_SKIP_MODEL_TESTS is set, real-model test of {id} not run");
        return None;
    }
    let path = registry::known_path(&registry::models_dir(), id);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models {id}", path.display());
    Some(Model::load(id, &LoadOptions::default()).unwrap_or_else(|e| panic!("loading {id}: {e}")))
}

/// The fixture directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Path of a fetched known model, or None when real-model tests are skipped.
pub fn known_model_path(id: &str) -> Option<PathBuf> {
    if std::env::var_os("LCROSS_SKIP_MODEL_TESTS").is_some() {
        return None;
    }
    let path = registry::known_path(&registry::models_dir(), id);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models {id}", path.display());
    Some(path)
}

/// ||a - b|| / ||b|| in f64.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    diff / b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(f64::MIN_POSITIVE)
}
