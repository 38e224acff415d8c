//! Steering conditions of an evaluation: a vector (or none) and a beta.

use std::sync::Arc;

pub use lcross_core::steer::{default_positions, parse_betas, Beta, Site};
use lcross_core::steer::{HookPoint, InterventionKind, Steering};
use lcross_core::steering::SteeringVector;
use lcross_model::{Hooks, Model, Positions};

use crate::error::{EvalError, Result};

/// One way of running the model: unsteered, or `beta * vector` at `positions` of hook
/// point `point`, by `intervention`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// `none`, or the vector's label (its file name).
    pub label: String,
    pub vector: Option<Arc<SteeringVector>>,
    pub beta: f64,
    pub positions: Positions,
    pub point: HookPoint,
    pub intervention: InterventionKind,
}

impl Condition {
    /// The unsteered model.
    pub fn none() -> Self {
        Self { label: "none".into(), vector: None, beta: 0.0, positions: Positions::All, point: HookPoint::ResidPost, intervention: InterventionKind::Add }
    }

    /// Hooks that apply this condition.
    pub fn hooks(&self, model: &Model) -> Result<Hooks> {
        Ok(match &self.vector {
            None => Hooks::none(),
            Some(v) => self.steering(v).hooks(model)?,
        })
    }

    /// The steering of this condition with `vector`.
    pub fn steering<'a>(&self, vector: &'a SteeringVector) -> Steering<'a> {
        Steering::add(vector, self.beta, self.positions).at(self.point).with_intervention(self.intervention)
    }

    /// What makes this condition's numbers, for cache keys: the vector's values (not
    /// its file name), beta, positions, and the hook point and intervention when they
    /// are not the defaults.
    pub fn key(&self) -> String {
        match &self.vector {
            None => "none".into(),
            Some(v) => format!("vector={};beta={:?};positions={}", v.fingerprint(), self.beta, self.steering(v).site_key()),
        }
    }

    /// Whether the model runs unsteered.
    pub fn is_none(&self) -> bool {
        self.vector.is_none() || self.beta == 0.0
    }
}

/// Every (vector, beta), plus the unsteered model once when a beta is 0 or no vector is
/// given; `auto` is each vector's own calibrated beta. `site` sets the hook point, the
/// intervention and (when given) the positions, which override each vector's default.
pub fn build_conditions_auto(vectors: &[(String, Arc<SteeringVector>)], betas: &[Beta], site: Site) -> Result<Vec<Condition>> {
    if vectors.is_empty() {
        let plain: Vec<f64> = betas.iter().map(|b| b.resolve(None)).collect::<lcross_core::Result<_>>()?;
        return build_conditions(vectors, &plain, site);
    }
    let mut out: Vec<Condition> = Vec::new();
    for v in vectors {
        let plain: Vec<f64> = betas.iter().map(|b| b.resolve(Some(&v.1))).collect::<lcross_core::Result<_>>()?;
        for c in build_conditions(std::slice::from_ref(v), &plain, site)? {
            let second_unsteered = c.vector.is_none() && out.iter().any(|o| o.vector.is_none());
            if !second_unsteered && !out.iter().any(|o| o.label == c.label && o.beta == c.beta) {
                out.push(c);
            }
        }
    }
    // The unsteered row first, as build_conditions orders it.
    out.sort_by_key(|c| c.vector.is_some());
    Ok(out)
}

/// Every (vector, beta), plus the unsteered model once when a beta is 0 or no vector is
/// given. `site` sets the hook point, the intervention and (when given) the positions.
pub fn build_conditions(vectors: &[(String, Arc<SteeringVector>)], betas: &[f64], site: Site) -> Result<Vec<Condition>> {
    if let Some(b) = betas.iter().find(|b| !b.is_finite()) {
        return Err(lcross_core::CoreError::NonFinite { what: format!("beta {b}") }.into());
    }
    if vectors.is_empty() {
        if betas.iter().any(|&b| b != 0.0) {
            return Err(EvalError::MissingInput { what: "betas other than 0".into(), needs: "a steering vector (--vector)".into() });
        }
        return Ok(vec![Condition::none()]);
    }
    let mut out = Vec::new();
    if betas.contains(&0.0) {
        out.push(Condition::none());
    }
    for (label, v) in vectors {
        for &beta in betas.iter().filter(|&&b| b != 0.0) {
            let steering = site.steer(v, beta);
            out.push(Condition {
                label: label.clone(),
                vector: Some(v.clone()),
                beta,
                positions: steering.positions,
                point: steering.point,
                intervention: steering.intervention,
            });
        }
    }
    if out.is_empty() {
        return Err(EvalError::TooFew { what: "conditions to evaluate (give --betas)".into(), needed: 1, got: 0 });
    }
    Ok(out)
}
