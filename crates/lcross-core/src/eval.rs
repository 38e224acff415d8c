//! A/B evaluation: the probability a model gives to the answer letter that matches the
//! behaviour, normalised over the two letters, with and without steering.

use lcross_model::{Hooks, Logits, Model, Positions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Where finished A/B evaluations are remembered: next to the activation cache.
pub fn eval_cache_dir() -> PathBuf {
    crate::activations::cache_dir().with_file_name("ab-evals")
}

/// The key of one evaluation: lcross version, model file, questions, and the exact steering
/// (vector values, beta, positions). Any difference gives another key.
fn eval_key(model_sha256: &str, items: &[AbItem], steering: Option<&Steering<'_>>) -> String {
    let mut h = Sha256::new();
    h.update(crate::VERSION.as_bytes());
    h.update(model_sha256.as_bytes());
    h.update(serde_json::to_vec(items).unwrap_or_default());
    if let Some(s) = steering {
        h.update(s.beta.to_le_bytes());
        h.update(format!("{:?}", s.positions).as_bytes());
        for (layer, v) in &s.vector.layers {
            h.update((*layer as u64).to_le_bytes());
            for x in v {
                h.update(x.to_le_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

#[derive(Serialize, Deserialize)]
struct CachedEval {
    key: String,
    result: AbResult,
}

/// [`evaluate_ab`], remembered in `dir` (one JSONL file per model): an evaluation already
/// done with the same model file, questions and steering is read back instead of recomputed,
/// so experiments that share a condition (e.g. the unsteered model) pay for it once.
pub fn evaluate_ab_cached(model: &Model, items: &[AbItem], steering: Option<&Steering<'_>>, dir: &Path) -> Result<AbResult> {
    let sha = model.file_sha256()?;
    let key = eval_key(&sha, items, steering);
    let file = dir.join(format!("{sha}.jsonl"));
    if let Ok(text) = std::fs::read_to_string(&file) {
        // Lines cut by an interrupted write do not parse and are skipped.
        if let Some(hit) = text.lines().filter_map(|l| serde_json::from_str::<CachedEval>(l).ok()).find(|c| c.key == key) {
            return Ok(hit.result);
        }
    }
    let result = evaluate_ab(model, items, steering)?;
    let line = serde_json::to_string(&CachedEval { key, result: result.clone() }).map_err(|e| CoreError::Invalid(e.to_string()))? + "\n";
    let io = |e: std::io::Error| CoreError::io(&file, e);
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    // One write call of the whole line in append mode: concurrent writers do not interleave.
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&file).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_key_depends_on_everything_that_changes_the_result() {
        let items = vec![AbItem { question: "Q?".into(), matching_letter: 'A', other_letter: 'B' }];
        let metadata = crate::steering::VectorMetadata {
            lcross_version: crate::VERSION.into(), model_id: "m".into(), model_sha256: "m".into(), hidden_size: 8, layers: vec![3],
            concept: "c".into(), dataset: "d".into(), dataset_sha256: "0".repeat(64), method: crate::steering::Method::MeanDiff, n_pairs: 1,
            normalized: false, letter_balance: None, balanced_letters: false, half_split_cosine: Default::default(), provenance: None,
        };
        let mut v = SteeringVector { metadata, layers: [(3, vec![0.5f32; 8])].into_iter().collect() };
        let base = eval_key("m", &items, None);
        assert_eq!(base, eval_key("m", &items, None));
        assert_ne!(base, eval_key("other", &items, None));
        let s1 = eval_key("m", &items, Some(&Steering { vector: &v, beta: 1.0, positions: Positions::All }));
        assert_ne!(s1, base);
        assert_ne!(s1, eval_key("m", &items, Some(&Steering { vector: &v, beta: 2.0, positions: Positions::All })));
        assert_ne!(s1, eval_key("m", &items, Some(&Steering { vector: &v, beta: 1.0, positions: Positions::PromptLast })));
        v.layers.get_mut(&3).unwrap()[0] += 1e-6;
        assert_ne!(s1, eval_key("m", &items, Some(&Steering { vector: &v, beta: 1.0, positions: Positions::All })));
        let other_items = vec![AbItem { question: "Q?".into(), matching_letter: 'B', other_letter: 'A' }];
        assert_ne!(base, eval_key("m", &other_items, None));
    }
}
