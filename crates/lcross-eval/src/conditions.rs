//! Steering conditions of an evaluation: a vector (or none) and a beta.

use std::sync::Arc;

use lcross_core::eval::{steering_hooks, Steering};
use lcross_core::steering::{Method, SteeringVector};
use lcross_model::{Hooks, Model, Positions};
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};

/// One way of running the model: unsteered, or `beta * vector` at `positions`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// `none`, or the vector's label (its file name).
    pub label: String,
    pub vector: Option<Arc<SteeringVector>>,
    pub beta: f64,
    pub positions: Positions,
}

/// Where a vector is added unless told: everywhere for CAA (mean-difference) vectors,
/// the last prompt token and generated tokens for RepE (PCA) vectors; transferred
/// vectors follow the method of their source (recorded in the provenance), else CAA's.
pub fn default_positions(sv: &SteeringVector) -> Positions {
    let source_method = sv.metadata.provenance.as_ref().and_then(|p| p.pointer("/source_vector/method")).and_then(|m| m.as_str()).map(String::from);
    match (sv.metadata.method, source_method.as_deref()) {
        (Method::Pca, _) | (Method::Transferred, Some("pca")) => Positions::PromptLastAndGenerated,
        _ => Positions::All,
    }
}

impl Condition {
    /// The unsteered model.
    pub fn none() -> Self {
        Self { label: "none".into(), vector: None, beta: 0.0, positions: Positions::All }
    }

    /// Hooks that apply this condition.
    pub fn hooks(&self, model: &Model) -> Result<Hooks> {
        Ok(match &self.vector {
            None => Hooks::none(),
            Some(v) => steering_hooks(model, Some(&Steering { vector: v, beta: self.beta, positions: self.positions }))?,
        })
    }

    /// What makes this condition's numbers, for cache keys: the vector's values (not
    /// its file name), beta and positions.
    pub fn key(&self) -> String {
        match &self.vector {
            None => "none".into(),
            Some(v) => {
                let mut h = Sha256::new();
                for (l, vals) in &v.layers {
                    h.update((*l as u64).to_le_bytes());
                    for x in vals {
                        h.update(x.to_le_bytes());
                    }
                }
                format!("vector={};beta={:?};positions={:?}", hex::encode(h.finalize()), self.beta, self.positions)
            }
        }
    }

    /// Whether the model runs unsteered.
    pub fn is_none(&self) -> bool {
        self.vector.is_none() || self.beta == 0.0
    }
}

/// A beta as given on the command line: a number, or `auto` (the calibrated beta stored
/// in each vector's metadata by `lcross calibrate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Beta {
    Value(f64),
    Auto,
}

impl Beta {
    /// Parse a number or `auto`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Self::Value(v)),
            _ => Err(EvalError::Invalid(format!("beta `{s}` is neither a finite number nor `auto`"))),
        }
    }

    /// The number for `vector` (`auto` reads its calibration).
    pub fn resolve(&self, vector: Option<&SteeringVector>) -> Result<f64> {
        match (self, vector) {
            (Self::Value(v), _) => Ok(*v),
            (Self::Auto, Some(sv)) => Ok(sv.metadata.calibrated_beta()?),
            (Self::Auto, None) => Err(EvalError::Invalid("beta `auto` needs a steering vector".into())),
        }
    }
}

/// Parse `1,2,auto` (already split on commas).
pub fn parse_betas(items: &[String]) -> Result<Vec<Beta>> {
    items.iter().map(|s| Beta::parse(s)).collect()
}

/// Every (vector, beta), plus the unsteered model once when a beta is 0 or no vector is
/// given; `auto` is each vector's own calibrated beta. `positions` overrides each
/// vector's default.
pub fn build_conditions_auto(vectors: &[(String, Arc<SteeringVector>)], betas: &[Beta], positions: Option<Positions>) -> Result<Vec<Condition>> {
    if vectors.is_empty() {
        let plain: Vec<f64> = betas.iter().map(|b| b.resolve(None)).collect::<Result<_>>()?;
        return build_conditions(vectors, &plain, positions);
    }
    let mut out: Vec<Condition> = Vec::new();
    for v in vectors {
        let plain: Vec<f64> = betas.iter().map(|b| b.resolve(Some(&v.1))).collect::<Result<_>>()?;
        for c in build_conditions(std::slice::from_ref(v), &plain, positions)? {
            if !(c.vector.is_none() && out.iter().any(|o| o.vector.is_none())) && !out.iter().any(|o| o.label == c.label && o.beta == c.beta) {
                out.push(c);
            }
        }
    }
    // The unsteered row first, as build_conditions orders it.
    out.sort_by_key(|c| c.vector.is_some());
    Ok(out)
}

/// Every (vector, beta), plus the unsteered model once when a beta is 0 or no vector is
/// given. `positions` overrides each vector's default.
pub fn build_conditions(vectors: &[(String, Arc<SteeringVector>)], betas: &[f64], positions: Option<Positions>) -> Result<Vec<Condition>> {
    if let Some(b) = betas.iter().find(|b| !b.is_finite()) {
        return Err(EvalError::Invalid(format!("beta {b} is not finite")));
    }
    if vectors.is_empty() {
        if betas.iter().any(|&b| b != 0.0) {
            return Err(EvalError::Invalid("betas other than 0 need a steering vector (--vector)".into()));
        }
        return Ok(vec![Condition::none()]);
    }
    let mut out = Vec::new();
    if betas.contains(&0.0) {
        out.push(Condition::none());
    }
    for (label, v) in vectors {
        for &beta in betas.iter().filter(|&&b| b != 0.0) {
            out.push(Condition { label: label.clone(), vector: Some(v.clone()), beta, positions: positions.unwrap_or_else(|| default_positions(v)) });
        }
    }
    if out.is_empty() {
        return Err(EvalError::Invalid("no conditions to evaluate (give --betas)".into()));
    }
    Ok(out)
}
