//! Logits of a model along given continuations: the distributions that predicted each
//! token of `continuation` after `prefix`. The judge (probabilities of score labels),
//! fluency (perplexity of answers) and drift (KL between steered and unsteered
//! next-token distributions) all read them.
//!
//! Each chunk of rows runs its prefixes once into a KV cache (logits of the last prefix
//! position only), then the continuations with logits at every position: the LM head
//! never runs over the prefixes.

use lcross_model::{BatchRow, Hooks, KvCache, Logits, Model};

use crate::error::Result;

/// One row: a prefix, its continuation, and the hooks (steering) of the row.
#[derive(Debug, Clone)]
pub struct ContinuationRow<'a> {
    pub prefix: &'a [u32],
    pub continuation: &'a [u32],
    /// Steering of this row; its `prompt_len` is set to the prefix length.
    pub hooks: &'a Hooks,
}

/// Rows per forward pass of [`for_each_continuation_logits`].
pub const CONTINUATION_ROWS_PER_PASS: usize = 8;

/// Calls `visit(row, j, logits)` with the logits that predict `continuation[j]` of each
/// row (after `prefix` and `continuation[..j]`), for every `j`, rows in chunks of
/// `rows_per_pass`.
pub fn for_each_continuation_logits(
    model: &Model,
    rows: &[ContinuationRow<'_>],
    rows_per_pass: usize,
    mut visit: impl FnMut(usize, usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let per_pass = rows_per_pass.max(1);
    for (c, chunk) in rows.chunks(per_pass).enumerate() {
        let base = c * per_pass;
        let hooks: Vec<Hooks> = chunk
            .iter()
            .map(|r| {
                let mut h = r.hooks.clone();
                h.prompt_len = Some(r.prefix.len());
                h
            })
            .collect();
        let mut cache = KvCache::with_rows(model.config().num_layers, chunk.len());
        let first: Vec<BatchRow<'_>> = chunk.iter().zip(&hooks).map(|(r, h)| BatchRow { tokens: r.prefix, hooks: h }).collect();
        let outs = model.forward_batch(&first, Some(&mut cache), Logits::Last)?;
        for (i, (r, o)) in chunk.iter().zip(outs).enumerate() {
            if !r.continuation.is_empty() {
                let l: Vec<f32> = o.logits.expect("asked for logits").to_vec1()?;
                visit(base + i, 0, &l)?;
            }
        }
        if chunk.iter().all(|r| r.continuation.len() < 2) {
            continue;
        }
        // Rows with nothing left to predict still need a token in the pass; it is run
        // and its logits ignored.
        let rest: Vec<&[u32]> = chunk
            .iter()
            .map(|r| if r.continuation.len() >= 2 { &r.continuation[..r.continuation.len() - 1] } else { &r.prefix[r.prefix.len() - 1..] })
            .collect();
        let second: Vec<BatchRow<'_>> = rest.iter().zip(&hooks).map(|(t, h)| BatchRow { tokens: t, hooks: h }).collect();
        let outs = model.forward_batch(&second, Some(&mut cache), Logits::All)?;
        for (i, (r, o)) in chunk.iter().zip(outs).enumerate() {
            if r.continuation.len() < 2 {
                continue;
            }
            let logits = o.logits.expect("asked for logits");
            for j in 0..r.continuation.len() - 1 {
                let l: Vec<f32> = logits.get(j)?.to_vec1()?;
                visit(base + i, j + 1, &l)?;
            }
        }
    }
    Ok(())
}

/// `log sum exp` of logits (f64).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln()
}

/// KL(p || q) of the softmaxes of two logit vectors, in nats.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let (zp, zq) = (log_sum_exp(p_logits), log_sum_exp(q_logits));
    p_logits
        .iter()
        .zip(q_logits)
        .map(|(&a, &b)| {
            let lp = a as f64 - zp;
            let lq = b as f64 - zq;
            let p = lp.exp();
            if p == 0.0 {
                0.0
            } else {
                p * (lp - lq)
            }
        })
        .sum::<f64>()
        .max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_softmaxes() {
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).abs() < 1e-12);
        // shifting logits does not change the distribution
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]).abs() < 1e-12);
        // p = (0.5, 0.5), q = (0.8, 0.2): 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)
        let q = [0.8f32.ln(), 0.2f32.ln()];
        let want = 0.5 * (0.5f64 / 0.8).ln() + 0.5 * (0.5f64 / 0.2).ln();
        assert!((kl_divergence(&[0.0, 0.0], &q) - want).abs() < 1e-6);
        assert!((log_sum_exp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-12);
    }
}
