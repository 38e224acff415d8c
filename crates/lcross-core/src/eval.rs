//! A/B evaluation: the probability a model gives to the answer letter that matches the
//! behaviour, normalised over the two letters, with and without steering.

use lcross_model::{Hooks, Logits, Model, Positions};
use serde::Serialize;

use crate::dataset::AbItem;
use crate::error::{CoreError, Result};
use crate::steering::SteeringVector;
use crate::texts::ab_choice_tokens;

/// Steering applied during evaluation or generation.
#[derive(Debug, Clone)]
pub struct Steering<'a> {
    pub vector: &'a SteeringVector,
    pub beta: f64,
    pub positions: Positions,
}

/// Hooks that add `beta * sv[layer]` at every layer of the vector.
pub fn steering_hooks(model: &Model, steering: Option<&Steering<'_>>) -> Result<Hooks> {
    let mut hooks = Hooks::none();
    if let Some(s) = steering {
        if s.beta != 0.0 {
            for (&layer, v) in &s.vector.layers {
                hooks = hooks.with_intervention(layer, model.vector_tensor(v)?, s.beta, s.positions);
            }
        }
    }
    Ok(hooks)
}

/// Result of an A/B evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct AbResult {
    /// Mean over questions of p(matching) / (p(matching) + p(other)).
    pub mean_prob_matching: f64,
    pub n: usize,
    pub beta: f64,
    /// Per question, the normalised probability of the matching letter.
    pub per_item: Vec<f64>,
}

/// Evaluate `items` with optional steering (positions from `steering`).
pub fn evaluate_ab(model: &Model, items: &[AbItem], steering: Option<&Steering<'_>>) -> Result<AbResult> {
    if items.is_empty() {
        return Err(CoreError::Invalid("no A/B items to evaluate".into()));
    }
    let hooks = steering_hooks(model, steering)?;
    let bar = crate::activations::progress(items.len() as u64, "A/B eval");
    let mut per_item = Vec::with_capacity(items.len());
    for it in items {
        let (prefix, tok_m, tok_o) = ab_choice_tokens(model, &it.question, it.matching_letter, it.other_letter)?;
        let logits: Vec<f32> = model
            .forward(&prefix, None, &hooks, Logits::Last)?
            .logits
            .ok_or_else(|| CoreError::Invalid("no logits".into()))?
            .to_vec1()
            .map_err(lcross_model::ModelError::from)?;
        let (lm, lo) = (logits[tok_m as usize] as f64, logits[tok_o as usize] as f64);
        let mx = lm.max(lo);
        let (em, eo) = ((lm - mx).exp(), (lo - mx).exp());
        per_item.push(em / (em + eo));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mean = per_item.iter().sum::<f64>() / per_item.len() as f64;
    Ok(AbResult { mean_prob_matching: mean, n: per_item.len(), beta: steering.map_or(0.0, |s| s.beta), per_item })
}
