//! Helpers of the server tests: models, vectors, a small HTTP client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lcross_core::steering::{SteeringVector, VectorMetadata};
use lcross_model::{registry, LoadOptions, Model};
use serde_json::Value;

/// The tiny random Llama checkpoint of lcross-model's fixtures (no chat template,
/// context 256): protocol tests that need no real model.
pub fn tiny_model() -> Arc<Model> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf/tiny-llama");
    Arc::new(Model::load(dir.to_str().unwrap(), &LoadOptions::default()).expect("loading tiny-llama"))
}

/// A real model, or None (said loudly) when `LCROSS_SKIP_MODEL_TESTS` is set.
pub fn real_model(id: &str) -> Option<Model> {
    if std::env::var_os("LCROSS_SKIP_MODEL_TESTS").is_some() {
        eprintln!("SKIPPED: LCROSS_SKIP_MODEL_TESTS is set, real-model test of {id} not run");
        return None;
    }
    let path = registry::known_path(&registry::models_dir(), id);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models {id}", path.display());
    Some(Model::load(id, &LoadOptions::default()).unwrap_or_else(|e| panic!("loading {id}: {e}")))
}

/// A fresh temporary directory.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lcross-serve-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Metadata of a hand-made vector of `model`.
pub fn metadata(model: &Model, layers: &[usize], concept: &str, calibrated: Option<f64>) -> VectorMetadata {
    let mut m = VectorMetadata::made_by_hand(model.id(), &model.file_sha256().unwrap(), model.config().hidden_size, layers.to_vec(), concept, "test");
    m.calibration = calibrated.map(lcross_core::steering::Calibration::with_beta);
    m
}

/// A seeded pseudo-random direction of `norm`.
pub fn direction(dim: usize, seed: u64, norm: f32) -> Vec<f32> {
    lcross_core::steering::pseudo_random_direction(dim, seed, norm)
}

/// Write a vector of `model` at `layer` and return its path.
pub fn write_vector(model: &Model, dir: &Path, name: &str, layer: usize, values: Vec<f32>, calibrated: Option<f64>) -> PathBuf {
    let sv = SteeringVector { metadata: metadata(model, &[layer], name, calibrated), layers: BTreeMap::from([(layer, values)]) };
    let path = dir.join(format!("{name}.safetensors"));
    sv.save(&path).unwrap();
    path
}

/// A blocking client with a generous timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(300)).build().unwrap()
}

/// POST JSON text (sent as is, so malformed bodies can be tested): status and body.
pub fn post_raw(c: &reqwest::blocking::Client, url: &str, body: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = c.post(url).header("content-type", "application/json").body(body.to_string()).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: reply is not JSON ({e}): {text}"));
    (status, v, headers)
}

/// POST a JSON value: status and body.
pub fn post(c: &reqwest::blocking::Client, url: &str, body: &Value) -> (u16, Value) {
    let (s, v, _) = post_raw(c, url, &body.to_string());
    (s, v)
}

/// GET: status and body.
pub fn get(c: &reqwest::blocking::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

/// POST a streaming request and read every `data:` event (the final `[DONE]` as a
/// string value).
pub fn stream(c: &reqwest::blocking::Client, url: &str, body: &Value) -> Vec<Value> {
    let r = c.post(url).json(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "streaming request failed");
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    let text = r.text().unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| if d == "[DONE]" { Value::String(d.into()) } else { serde_json::from_str(d).unwrap_or_else(|e| panic!("event is not JSON ({e}): {d}")) })
        .collect()
}

/// The text of a chat stream's events.
pub fn stream_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect()
}

/// Resident memory of this process in bytes (Linux).
pub fn rss_bytes() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: usize = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
