//! A/B evaluation: the probability a model gives to the answer letter that matches the
//! behaviour, normalised over the two letters, with and without steering.
//!
//! Several steering conditions are evaluated together: per batch of questions, the
//! layers below the shallowest steered layer run once, then each question's state is
//! forked into one row per condition for the remaining layers. The two letters share
//! their prompt (the logits after `(` give both).

use lcross_model::{Hooks, Model, Tensor};

use serde::{Deserialize, Serialize};

use crate::dataset::AbItem;
use crate::error::{CoreError, Result};
use crate::store::{key_of, numerics_key, Store};
use crate::texts::ab_choice_tokens;

pub use crate::steer::{steering_hooks, Steering};

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

/// Rows (questions x conditions) per forward pass of an A/B evaluation.
pub const AB_ROWS_PER_PASS: usize = 32;

/// Evaluate `items` with optional steering (positions from `steering`).
pub fn evaluate_ab(model: &Model, items: &[AbItem], steering: Option<&Steering<'_>>) -> Result<AbResult> {
    Ok(evaluate_ab_conditions(model, items, &[steering.cloned()])?.pop().expect("one condition in, one result out"))
}

/// Evaluate `items` under each condition (None: unsteered); one result per condition.
pub fn evaluate_ab_conditions(model: &Model, items: &[AbItem], conditions: &[Option<Steering<'_>>]) -> Result<Vec<AbResult>> {
    if items.is_empty() {
        return Err(CoreError::Empty { what: "A/B items to evaluate".into() });
    }
    if conditions.is_empty() {
        return Ok(Vec::new());
    }
    let hooks: Vec<Hooks> = conditions.iter().map(|c| steering_hooks(model, c.as_ref())).collect::<Result<_>>()?;
    let layers = model.config().num_layers;
    let split = hooks.iter().filter_map(|h| h.interventions.iter().map(|i| i.layer).min()).min().unwrap_or(layers);
    let questions: Vec<(Vec<u32>, u32, u32)> =
        items.iter().map(|it| ab_choice_tokens(model, &it.question, it.matching_letter, it.other_letter)).collect::<Result<_>>()?;
    let per_pass = (AB_ROWS_PER_PASS / conditions.len()).max(1);
    let decoder = model.decoder();
    let none = Hooks::none();
    let bar = crate::activations::progress((items.len() * conditions.len()) as u64, "A/B eval");
    // Questions of similar length share a pass (padding is computed work: sorting cut the
    // matmul FLOPs of 16 CAA refusal questions at 5 betas by 10%); results go back in
    // item order.
    let order = crate::activations::length_order(questions.iter().map(|q| q.0.len()));
    let mut probs: Vec<Vec<f64>> = vec![vec![f64::NAN; items.len()]; conditions.len()];
    for chunk_order in order.chunks(per_pass) {
        let chunk: Vec<&(Vec<u32>, u32, u32)> = chunk_order.iter().map(|&i| &questions[i]).collect();
        let prompts: Vec<&[u32]> = chunk.iter().map(|q| q.0.as_slice()).collect();
        let mut state = decoder.begin(&prompts)?;
        decoder.run_layers(&mut state, &vec![&none; chunk.len()], split)?;
        let rows: Vec<usize> = (0..chunk.len()).flat_map(|q| std::iter::repeat_n(q, conditions.len())).collect();
        let mut forked = state.fork(&rows)?;
        let row_hooks: Vec<&Hooks> = (0..chunk.len()).flat_map(|_| hooks.iter()).collect();
        decoder.run_layers(&mut forked, &row_hooks, layers)?;
        let logits = decoder.last_logits(&forked)?;
        let letters: Vec<u32> = rows.iter().flat_map(|&q| [chunk[q].1, chunk[q].2]).collect();
        let letters = Tensor::from_vec(letters, (rows.len(), 2), logits.device()).map_err(lcross_model::ModelError::from)?;
        let pairs: Vec<Vec<f32>> = logits.gather(&letters, 1).and_then(|t| t.to_vec2()).map_err(lcross_model::ModelError::from)?;
        for (r, lp) in pairs.iter().enumerate() {
            let (lm, lo) = (lp[0] as f64, lp[1] as f64);
            if !(lm.is_finite() && lo.is_finite()) {
                return Err(lcross_model::ModelError::NonFinite {
                    what: format!("the answer letters' logits of A/B question {}", chunk_order[rows[r]]),
                    steering: row_hooks[r].describe_steering(),
                }
                .into());
            }
            let mx = lm.max(lo);
            let (em, eo) = ((lm - mx).exp(), (lo - mx).exp());
            probs[r % conditions.len()][chunk_order[rows[r]]] = em / (em + eo);
        }
        bar.inc(rows.len() as u64);
    }
    bar.finish_and_clear();
    Ok(probs
        .into_iter()
        .zip(conditions)
        .map(|(per_item, c)| AbResult {
            mean_prob_matching: per_item.iter().sum::<f64>() / per_item.len() as f64,
            n: per_item.len(),
            beta: c.as_ref().map_or(0.0, |s| s.beta),
            per_item,
        })
        .collect())
}

/// Store kind of A/B evaluation entries.
const KIND: &str = "ab-eval";

/// The key of one evaluation: the model's numerics (file, weights, dtype, device,
/// runtime revision), the questions, and the exact steering (the vector's fingerprint,
/// beta, positions, hook point, intervention). Any difference gives another key.
fn eval_key(numerics: &str, items: &[AbItem], steering: Option<&Steering<'_>>) -> [u8; 32] {
    let mut steer = Vec::new();
    if let Some(s) = steering {
        steer.extend_from_slice(&s.beta.to_le_bytes());
        steer.extend_from_slice(s.site_key().as_bytes());
        steer.extend_from_slice(s.vector.fingerprint().as_bytes());
    }
    key_of(&[crate::VERSION.as_bytes(), numerics.as_bytes(), &serde_json::to_vec(items).unwrap_or_default(), &steer])
}

/// [`evaluate_ab_conditions`], remembered in `store`: conditions already evaluated with
/// the same model numerics, questions and steering are read back; the others are
/// evaluated together and stored.
pub fn evaluate_ab_cached(model: &Model, items: &[AbItem], conditions: &[Option<Steering<'_>>], store: &mut Store) -> Result<Vec<AbResult>> {
    let numerics = numerics_key(model)?;
    let keys: Vec<[u8; 32]> = conditions.iter().map(|c| eval_key(&numerics, items, c.as_ref())).collect();
    let mut results: Vec<Option<AbResult>> = Vec::with_capacity(conditions.len());
    for k in &keys {
        results.push(match store.get(KIND, k)? {
            Some(bytes) => {
                Some(serde_json::from_slice(&bytes).map_err(|e| CoreError::Store { path: store.path().to_path_buf(), reason: format!("A/B entry: {e}") })?)
            }
            None => None,
        });
    }
    let missing: Vec<usize> = (0..conditions.len()).filter(|&i| results[i].is_none()).collect();
    if !missing.is_empty() {
        let todo: Vec<Option<Steering<'_>>> = missing.iter().map(|&i| conditions[i].clone()).collect();
        let fresh = evaluate_ab_conditions(model, items, &todo)?;
        let mut entries = Vec::with_capacity(fresh.len());
        for (&i, r) in missing.iter().zip(fresh) {
            entries.push((keys[i], serde_json::to_vec(&r).map_err(|e| CoreError::Encode { what: "an A/B result".into(), reason: e.to_string() })?));
            results[i] = Some(r);
        }
        store.put_many(KIND, &entries)?;
    }
    Ok(results.into_iter().map(|r| r.expect("filled above")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steering::SteeringVector;
    use lcross_model::Positions;

    #[test]
    fn eval_key_depends_on_everything_that_changes_the_result() {
        let items = vec![AbItem { question: "Q?".into(), matching_letter: 'A', other_letter: 'B' }];
        let metadata = crate::steering::VectorMetadata {
            lcross_version: crate::VERSION.into(),
            model_id: "m".into(),
            model_sha256: "m".into(),
            hidden_size: 8,
            layers: vec![3],
            concept: "c".into(),
            dataset: "d".into(),
            dataset_sha256: "0".repeat(64),
            method: crate::steering::Method::MeanDiff,
            n_pairs: 1,
            normalized: false,
            letter_balance: None,
            balanced_letters: false,
            half_split_cosine: Default::default(),
            hook: Default::default(),
            calibration: None,
            provenance: None,
        };
        let mut v = SteeringVector { metadata, layers: [(3, vec![0.5f32; 8])].into_iter().collect() };
        let base = eval_key("m", &items, None);
        assert_ne!(base, eval_key("m;weights=quantized", &items, None), "weight mode is part of the key");
        assert_eq!(base, eval_key("m", &items, None));
        assert_ne!(base, eval_key("other", &items, None));
        let s1 = eval_key("m", &items, Some(&Steering::add(&v, 1.0, Positions::All)));
        assert_ne!(s1, base);
        assert_ne!(s1, eval_key("m", &items, Some(&Steering::add(&v, 2.0, Positions::All))));
        assert_ne!(s1, eval_key("m", &items, Some(&Steering::add(&v, 1.0, Positions::PromptLast))));
        v.layers.get_mut(&3).unwrap()[0] += 1e-6;
        assert_ne!(s1, eval_key("m", &items, Some(&Steering::add(&v, 1.0, Positions::All))));
        let other_items = vec![AbItem { question: "Q?".into(), matching_letter: 'B', other_letter: 'A' }];
        assert_ne!(base, eval_key("m", &other_items, None));
    }
}
