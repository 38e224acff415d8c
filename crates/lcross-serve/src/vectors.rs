//! Vectors registered at start-up by name: the only ones a request can use (a request
//! never names a path). Each is checked against the served model when registered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lcross_core::steer::{default_positions, parse_hook, parse_intervention, parse_positions, Steering};
use lcross_core::steering::SteeringVector;
use lcross_model::{Hooks, Model, Positions};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{AppliedSteering, BetaSpec, SteeringSpec};
use crate::error::{ApiError, ServeError};

/// Most vectors one request may combine.
pub const MAX_VECTORS_PER_REQUEST: usize = 8;

/// One registered vector.
#[derive(Debug)]
pub struct RegisteredVector {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub vector: Arc<SteeringVector>,
}

/// What `GET /v1/vectors` says about a vector.
#[derive(Debug, Serialize)]
pub struct VectorInfo {
    pub id: String,
    pub object: &'static str,
    pub concept: String,
    pub method: Value,
    pub model: String,
    pub layers: Vec<usize>,
    pub hidden_size: usize,
    /// Calibrated beta (`"beta": "auto"`), if the vector was calibrated.
    pub calibrated_beta: Option<f64>,
    pub default_positions: String,
    /// For transferred vectors: the model the vector was extracted from.
    pub source_model: Option<String>,
    /// For transferred vectors: the map's file, hash, estimator and layers.
    pub map: Option<Value>,
    pub file: String,
    pub sha256: String,
}

/// The vectors a server may use, by name.
#[derive(Debug, Default)]
pub struct VectorRegistry {
    vectors: BTreeMap<String, RegisteredVector>,
}

/// Split `NAME=PATH` (a bare PATH is named after its file stem).
pub fn parse_vector_arg(arg: &str) -> Result<(String, PathBuf), ServeError> {
    let (name, path) = match arg.split_once('=') {
        Some((n, p)) => (n.trim().to_string(), PathBuf::from(p)),
        None => {
            let p = PathBuf::from(arg);
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (stem, p)
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(ServeError::Invalid(format!("--vector {arg}: the name must be letters, digits, `-`, `_`, `.` or `:` (NAME=PATH)")));
    }
    Ok((name, path))
}

impl VectorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Load `path` as `name`, refusing a vector whose model, hidden size or layers do
    /// not fit `model`.
    pub fn register(&mut self, name: &str, path: &Path, model: &Model) -> Result<(), ServeError> {
        let err = |reason: String| ServeError::Vector { name: name.to_string(), path: path.display().to_string(), reason };
        if self.vectors.contains_key(name) {
            return Err(err("the name is registered twice".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        let sv = SteeringVector::load(path).map_err(|e| err(e.to_string()))?;
        sv.check_model(model, false)
            .map_err(|e| err(format!("{e}; the server only serves vectors of its own model (transfer others with `lcross transfer`)")))?;
        self.vectors.insert(
            name.to_string(),
            RegisteredVector { name: name.to_string(), path: path.to_path_buf(), sha256: hex::encode(Sha256::digest(&bytes)), vector: Arc::new(sv) },
        );
        Ok(())
    }

    /// Names in order.
    pub fn names(&self) -> Vec<&str> {
        self.vectors.keys().map(String::as_str).collect()
    }

    /// A vector by name.
    pub fn get(&self, name: &str) -> Option<&RegisteredVector> {
        self.vectors.get(name)
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// `GET /v1/vectors` entries.
    pub fn infos(&self) -> Vec<VectorInfo> {
        self.vectors
            .values()
            .map(|r| {
                let m = &r.vector.metadata;
                let prov = m.provenance.as_ref();
                let map = prov.and_then(|p| p.get("map")).map(|map| {
                    let meta = map.get("metadata");
                    serde_json::json!({
                        "path": map.get("path"),
                        "sha256": map.get("sha256"),
                        "estimator": meta.and_then(|x| x.get("estimator")),
                        "source_layer": meta.and_then(|x| x.get("source_layer")),
                        "target_layer": meta.and_then(|x| x.get("target_layer")),
                    })
                });
                VectorInfo {
                    id: r.name.clone(),
                    object: "steering_vector",
                    concept: m.concept.clone(),
                    method: serde_json::to_value(m.method).unwrap_or(Value::Null),
                    model: m.model_id.clone(),
                    layers: m.layers.clone(),
                    hidden_size: m.hidden_size,
                    calibrated_beta: m.calibrated_beta().ok(),
                    default_positions: positions_name(default_positions(&r.vector)),
                    source_model: prov.and_then(|p| p.pointer("/source_vector/model_id")).and_then(Value::as_str).map(String::from),
                    map,
                    file: r.path.display().to_string(),
                    sha256: r.sha256.clone(),
                }
            })
            .collect()
    }

    /// Hooks for a request's `steering` field, and what was applied (betas resolved).
    /// Unknown names, bad betas and positions are 400s naming the entry.
    pub fn hooks(&self, model: &Model, specs: &[SteeringSpec]) -> Result<(Hooks, Vec<AppliedSteering>), ApiError> {
        if specs.len() > MAX_VECTORS_PER_REQUEST {
            return Err(ApiError::field("steering", format!("at most {MAX_VECTORS_PER_REQUEST} vectors per request, got {}", specs.len())));
        }
        let mut hooks = Hooks::none();
        let mut applied = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let param = format!("steering[{i}]");
            let reg = self.get(&s.vector).ok_or_else(|| {
                let known = if self.is_empty() {
                    "none is registered (start the server with --vector NAME=PATH)".to_string()
                } else {
                    format!("registered: {}", self.names().join(", "))
                };
                ApiError::field(&format!("{param}.vector"), format!("unknown steering vector `{}`; {known}", s.vector)).with_code("vector_not_found")
            })?;
            let sv = &reg.vector;
            let beta = match &s.beta {
                BetaSpec::Value(b) if b.is_finite() => *b,
                BetaSpec::Value(b) => return Err(ApiError::field(&format!("{param}.beta"), format!("beta must be finite, got {b}"))),
                BetaSpec::Named(n) if n.eq_ignore_ascii_case("auto") => {
                    sv.metadata.calibrated_beta().map_err(|e| ApiError::field(&format!("{param}.beta"), format!("`auto`: {e}")))?
                }
                BetaSpec::Named(n) => return Err(ApiError::field(&format!("{param}.beta"), format!("beta must be a number or \"auto\", got {n:?}"))),
            };
            let field = |name: &str, e: lcross_core::CoreError| ApiError::field(&format!("{param}.{name}"), e.to_string());
            let positions = match &s.positions {
                None => default_positions(sv),
                Some(p) => parse_positions(p).map_err(|e| field("positions", e))?,
            };
            let point = s.hook.as_deref().map(parse_hook).transpose().map_err(|e| field("hook", e))?.unwrap_or(sv.metadata.hook);
            let intervention = s.intervention.as_deref().map(parse_intervention).transpose().map_err(|e| field("intervention", e))?.unwrap_or_default();
            let steering = Steering::add(sv, beta, positions).at(point).with_intervention(intervention);
            // Checked here, before the request is queued: a bad beta or a projection
            // without a direction is the request's fault (400), a tensor failure ours (500).
            let these = steering.hooks(model).and_then(|h| model.decoder().check_hooks(&h).map(|_| h).map_err(Into::into)).map_err(|e| match e {
                lcross_core::CoreError::Model(lcross_model::ModelError::Candle(e)) => {
                    ApiError::server(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }
                e => ApiError::field(&param, e.to_string()),
            })?;
            hooks.interventions.extend(these.interventions);
            applied.push(AppliedSteering {
                vector: s.vector.clone(),
                beta,
                positions: positions_name(positions),
                hook: point.to_string(),
                intervention: intervention.to_string(),
            });
        }
        Ok((hooks, applied))
    }
}

/// The name `Positions::parse` reads back.
pub fn positions_name(p: Positions) -> String {
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_args() {
        assert_eq!(parse_vector_arg("refusal=/x/y.safetensors").unwrap(), ("refusal".to_string(), PathBuf::from("/x/y.safetensors")));
        assert_eq!(parse_vector_arg("/x/happy.safetensors").unwrap().0, "happy");
        assert!(parse_vector_arg("bad name=/x").is_err());
        assert!(parse_vector_arg("=/x").is_err());
    }

    #[test]
    fn positions_round_trip() {
        for p in [Positions::All, Positions::PromptLast, Positions::Generated, Positions::PromptLastAndGenerated, Positions::From(7)] {
            assert_eq!(Positions::parse(&positions_name(p)), Some(p));
        }
    }
}
