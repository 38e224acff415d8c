//! What steering costs: fluency of the steered answers (their perplexity under the
//! unsteered model) and drift on neutral prompts (mean KL divergence between the
//! steered and the unsteered next-token distributions along the first tokens the
//! steered model generates).

use std::path::Path;

use lcross_core::store::Store;
use lcross_model::{Hooks, Model, Sampling};

use crate::answers::{generate_answers, Answer, GenerationSettings};
use crate::conditions::Condition;
use crate::continuation::{for_each_continuation_logits, kl_divergence, log_sum_exp, ContinuationRow, CONTINUATION_ROWS_PER_PASS};
use crate::error::{EvalError, Result};

/// Neutral prompts for drift: the last harmless instructions of
/// `instructions/seed_tasks.jsonl` (rows the harmfulness pairs never use).
pub const NEUTRAL_PROMPTS: usize = 20;

/// Generated tokens over which drift is measured.
pub const DRIFT_TOKENS: usize = 20;

/// The neutral prompts (the last [`NEUTRAL_PROMPTS`] harmless instructions).
pub fn neutral_prompts(data_dir: &Path) -> Result<Vec<String>> {
    let all = lcross_core::dataset::harmless_instructions(data_dir)?;
    let used = lcross_core::dataset::HARM_TRAIN_ROWS;
    if all.len() < used + NEUTRAL_PROMPTS {
        return Err(EvalError::TooFew {
            what: format!("harmless instructions (drift's neutral prompts come after the {used} the harmfulness pairs use)"),
            needed: used + NEUTRAL_PROMPTS,
            got: all.len(),
        });
    }
    Ok(all[all.len() - NEUTRAL_PROMPTS..].to_vec())
}

/// Perplexity of answers under the unsteered model: exp of the mean negative
/// log-likelihood per answer token (stop tokens left out), and the token count.
pub fn perplexity(model: &Model, prompts: &[Vec<u32>], answers: &[Answer]) -> Result<(f64, usize)> {
    let content: Vec<Vec<u32>> = answers.iter().map(|a| a.content_ids(model)).collect();
    let none = Hooks::none();
    let rows: Vec<ContinuationRow<'_>> = prompts.iter().zip(&content).map(|(p, c)| ContinuationRow { prefix: p, continuation: c, hooks: &none }).collect();
    let (mut nll, mut n) = (0.0f64, 0usize);
    for_each_continuation_logits(model, &rows, CONTINUATION_ROWS_PER_PASS, |row, j, logits| {
        let t = content[row][j] as usize;
        nll += log_sum_exp(logits) - logits[t] as f64;
        n += 1;
        Ok(())
    })?;
    Ok(if n == 0 { (f64::NAN, 0) } else { ((nll / n as f64).exp(), n) })
}

/// What a condition does on neutral prompts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeutralEffects {
    /// Mean KL(steered || unsteered), nats per token, over the first [`DRIFT_TOKENS`]
    /// greedy tokens the steered model generates (0 for the unsteered model).
    pub drift_kl: f64,
    /// Perplexity of those tokens under the unsteered model (fluency of the steered
    /// continuation).
    pub perplexity: f64,
}

/// Mean KL(steered || unsteered) in nats over the first [`DRIFT_TOKENS`] greedy tokens
/// the steered model generates for each neutral prompt. 0 for the unsteered model.
pub fn drift_kl(model: &Model, neutral: &[Vec<u32>], condition: &Condition, rows_in_flight: usize, store: Option<&mut Store>) -> Result<f64> {
    if condition.is_none() {
        return Ok(0.0);
    }
    Ok(neutral_effects(model, neutral, condition, rows_in_flight, store)?.drift_kl)
}

/// Drift and fluency of `condition` on neutral prompts, from one pass over the steered
/// greedy continuations (steered and unsteered rows side by side).
pub fn neutral_effects(model: &Model, neutral: &[Vec<u32>], condition: &Condition, rows_in_flight: usize, store: Option<&mut Store>) -> Result<NeutralEffects> {
    let settings = GenerationSettings { max_tokens: DRIFT_TOKENS, sampling: Sampling::Greedy, rows_in_flight };
    let answers = generate_answers(model, neutral, std::slice::from_ref(condition), &settings, store, "neutral prompts")?.pop().unwrap_or_default();
    if condition.is_none() {
        let (ppl, _) = perplexity(model, neutral, &answers)?;
        return Ok(NeutralEffects { drift_kl: 0.0, perplexity: ppl });
    }
    let steered = condition.hooks(model)?;
    let none = Hooks::none();
    let content: Vec<Vec<u32>> = answers.iter().map(|a| a.content_ids(model)).collect();
    // Rows in pairs (steered, unsteered) along the same tokens.
    let mut rows = Vec::with_capacity(2 * neutral.len());
    for (p, c) in neutral.iter().zip(&content) {
        rows.push(ContinuationRow { prefix: p, continuation: c, hooks: &steered });
        rows.push(ContinuationRow { prefix: p, continuation: c, hooks: &none });
    }
    // Steered logits wait for their unsteered partner (visited later, same position).
    let mut waiting: std::collections::HashMap<(usize, usize), Vec<f32>> = std::collections::HashMap::new();
    let (mut total, mut nll, mut n) = (0.0, 0.0, 0usize);
    for_each_continuation_logits(model, &rows, CONTINUATION_ROWS_PER_PASS, |row, j, logits| {
        let pair = row / 2;
        if row % 2 == 0 {
            waiting.insert((pair, j), logits.to_vec());
        } else {
            let p = waiting
                .remove(&(pair, j))
                .ok_or_else(|| EvalError::Cell { cell: format!("drift pair {pair}"), reason: "the unsteered row came before its steered row".into() })?;
            total += kl_divergence(&p, logits);
            nll += log_sum_exp(logits) - logits[content[pair][j] as usize] as f64;
            n += 1;
        }
        Ok(())
    })?;
    Ok(if n == 0 {
        NeutralEffects { drift_kl: f64::NAN, perplexity: f64::NAN }
    } else {
        NeutralEffects { drift_kl: total / n as f64, perplexity: (nll / n as f64).exp() }
    })
}
