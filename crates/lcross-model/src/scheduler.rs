//! Batched generation: many sequences decode together, each with its own prompt,
//! sampling, stop tokens and steering; rows finish on their own and new rows join
//! between decode steps (continuous batching, the loop a server drives).

use std::collections::VecDeque;

use crate::cache::KvCache;
use crate::decoder::{BatchRow, Decoder, Logits};
use crate::error::{ModelError, Result};
use crate::generate::{GenerateOptions, Sampler};
use crate::hooks::Hooks;

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt token ids (at least one).
    pub prompt: Vec<u32>,
    /// Steering and captures of this row; `prompt_len` is set to the prompt's length.
    pub hooks: Hooks,
    /// Length limit, sampling (with its own seed) and stop tokens of this row.
    pub options: GenerateOptions,
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It produced one of its stop tokens (included in its output).
    Stop,
    /// It reached its `max_tokens`.
    Length,
    /// It was cancelled.
    Cancelled,
    /// Its logits were not finite (NaN or infinity): its steering (or the model) overflowed
    /// the compute dtype. No token was produced for that step.
    NonFinite,
}

/// Something that happened to a row in one [`BatchGenerator::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// The id [`BatchGenerator::submit`] returned.
    pub id: u64,
    /// The new token, if one was produced.
    pub token: Option<u32>,
    /// Log-probabilities of the new token's distribution, when the row asked for them
    /// ([`BatchGenerator::keep_logprobs`]): the chosen token's and the top ones.
    pub logprob: Option<TokenLogprob>,
    /// Set when the row is done.
    pub finished: Option<FinishReason>,
}

/// The log-probability of a chosen token and of the most likely ones.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

struct ActiveRow {
    id: u64,
    hooks: Hooks,
    sampler: Sampler,
    options: GenerateOptions,
    produced: usize,
    last: u32,
    top_logprobs: Option<usize>,
}

struct PendingRow {
    id: u64,
    request: GenerationRequest,
    top_logprobs: Option<usize>,
}

/// Continuous-batching generator over one model.
///
/// `submit` queues rows; each `step` first admits queued rows up to `max_rows` (their
/// prompts run together in one prefill pass) and decodes one token for every row that
/// was already running (one batched pass). Rows leave when they stop; their KV slots
/// are reused.
pub struct BatchGenerator<'m> {
    model: &'m Decoder,
    max_rows: usize,
    cache: KvCache,
    active: Vec<ActiveRow>,
    pending: VecDeque<PendingRow>,
    next_id: u64,
}

impl<'m> BatchGenerator<'m> {
    /// A generator over `model` (a [`crate::Model`] or its [`Decoder`]) that keeps at
    /// most `max_rows` rows in flight.
    pub fn new<M: AsRef<Decoder> + ?Sized>(model: &'m M, max_rows: usize) -> Self {
        let model = model.as_ref();
        let layers = model.config().num_layers;
        Self { model, max_rows: max_rows.max(1), cache: KvCache::with_rows(layers, 0), active: Vec::new(), pending: VecDeque::new(), next_id: 0 }
    }

    /// Queue a row; returns its id. The request is checked now (empty prompt, bad
    /// sampling parameters, prompt plus `max_tokens` past the context).
    pub fn submit(&mut self, request: GenerationRequest) -> Result<u64> {
        self.submit_with_logprobs(request, None)
    }

    /// [`Self::submit`], and report the log-probabilities of each produced token with
    /// the `top` most likely ones when `top` is Some.
    pub fn submit_with_logprobs(&mut self, request: GenerationRequest, top: Option<usize>) -> Result<u64> {
        if request.prompt.is_empty() {
            return Err(ModelError::InvalidInput("empty prompt: it has no tokens".into()));
        }
        Sampler::new(request.options.sampling)?;
        let vocab = self.model.config().vocab_size;
        if let Some(&bad) = request.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::InvalidInput(format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        // A bad row is refused here, before it could fail a whole batched step.
        self.model.check_hooks(&request.hooks)?;
        let max = self.model.max_sequence();
        if request.prompt.len().saturating_add(request.options.max_tokens) > max {
            return Err(ModelError::InvalidInput(format!(
                "prompt of {} tokens plus {} new tokens is longer than the model's context of {max}",
                request.prompt.len(),
                request.options.max_tokens
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.push_back(PendingRow { id, request, top_logprobs: top });
        Ok(id)
    }

    /// Stop a row (queued or running) now; it yields a `Cancelled` event at once.
    pub fn cancel(&mut self, id: u64) -> Result<Option<StepEvent>> {
        if let Some(p) = self.pending.iter().position(|p| p.id == id) {
            self.pending.remove(p);
            return Ok(Some(StepEvent { id, token: None, logprob: None, finished: Some(FinishReason::Cancelled) }));
        }
        if let Some(i) = self.active.iter().position(|r| r.id == id) {
            self.remove_active(i)?;
            return Ok(Some(StepEvent { id, token: None, logprob: None, finished: Some(FinishReason::Cancelled) }));
        }
        Ok(None)
    }

    /// Rows running now.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Rows waiting for a slot.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is queued or running.
    pub fn is_idle(&self) -> bool {
        self.active.is_empty() && self.pending.is_empty()
    }

    /// Bytes held by the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Free the KV cache's buffers when no row is running (they keep the capacity of
    /// the largest batch otherwise); a long-running server calls this when it goes idle.
    /// Returns whether anything was freed.
    pub fn release_cache(&mut self) -> bool {
        if !self.active.is_empty() || self.cache.bytes() == 0 {
            return false;
        }
        self.cache = KvCache::with_rows(self.model.config().num_layers, 0);
        true
    }

    fn remove_active(&mut self, i: usize) -> Result<()> {
        self.cache.swap_remove_row(i)?;
        self.active.swap_remove(i);
        Ok(())
    }

    /// Decode one token for every running row, then admit queued rows (prefill and
    /// their first token). Returns one event per produced token or finished row.
    pub fn step(&mut self) -> Result<Vec<StepEvent>> {
        let mut events = Vec::new();
        if !self.active.is_empty() {
            let inputs: Vec<[u32; 1]> = self.active.iter().map(|r| [r.last]).collect();
            let rows: Vec<BatchRow<'_>> = self.active.iter().zip(&inputs).map(|(r, t)| BatchRow { tokens: t, hooks: &r.hooks }).collect();
            let outs = self.model.forward_batch(&rows, Some(&mut self.cache), Logits::Last)?;
            let logits: Vec<Vec<f32>> = outs.into_iter().map(|o| o.logits.expect("asked for logits").to_vec1()).collect::<candle_core::Result<_>>()?;
            let mut finished = Vec::new();
            for (i, l) in logits.iter().enumerate() {
                let (ev, done) = Self::emit(&mut self.active[i], l);
                events.push(ev);
                if done {
                    finished.push(i);
                }
            }
            for &i in finished.iter().rev() {
                self.remove_active(i)?;
            }
        }
        self.admit(&mut events)?;
        Ok(events)
    }

    /// Prefill queued rows that fit and produce their first token.
    fn admit(&mut self, events: &mut Vec<StepEvent>) -> Result<()> {
        let room = self.max_rows.saturating_sub(self.active.len());
        let n = room.min(self.pending.len());
        if n == 0 {
            return Ok(());
        }
        let joining: Vec<PendingRow> = self.pending.drain(..n).collect();
        let mut rows: Vec<ActiveRow> = Vec::with_capacity(n);
        for p in &joining {
            let mut hooks = p.request.hooks.clone();
            hooks.prompt_len = Some(p.request.prompt.len());
            rows.push(ActiveRow {
                id: p.id,
                hooks,
                sampler: Sampler::new(p.request.options.sampling)?,
                options: p.request.options.clone(),
                produced: 0,
                last: 0,
                top_logprobs: p.top_logprobs,
            });
        }
        // Prompts of similar length are prefilled together, in as few passes as keep
        // padding (computed work) small; rows join the cache group by group.
        let lengths: Vec<usize> = joining.iter().map(|p| p.request.prompt.len()).collect();
        let mut rows: Vec<Option<ActiveRow>> = rows.into_iter().map(Some).collect();
        for group in prefill_groups(&lengths) {
            let mut fresh = KvCache::with_rows(self.model.config().num_layers, group.len());
            let batch: Vec<BatchRow<'_>> = group
                .iter()
                .map(|&i| BatchRow { tokens: &joining[i].request.prompt, hooks: &rows[i].as_ref().expect("each row is in one group").hooks })
                .collect();
            let outs = self.model.forward_batch(&batch, Some(&mut fresh), Logits::Last)?;
            let logits: Vec<Vec<f32>> = outs.into_iter().map(|o| o.logits.expect("asked for logits").to_vec1()).collect::<candle_core::Result<_>>()?;
            // Row r of the cache is row r of `active`: the group joins both, and rows
            // that finish on their first token leave both only after the whole group
            // has joined (removing one moves the last row into its place).
            debug_assert_eq!(self.cache.rows(), self.active.len());
            self.cache.extend_rows(&fresh)?;
            let mut finished = Vec::new();
            for (&i, l) in group.iter().zip(&logits) {
                let mut row = rows[i].take().expect("each row is in one group");
                let (ev, done) = Self::emit(&mut row, l);
                events.push(ev);
                if done {
                    finished.push(self.active.len());
                }
                self.active.push(row);
            }
            for &i in finished.iter().rev() {
                self.remove_active(i)?;
            }
        }
        Ok(())
    }

    /// Choose a row's next token from its logits.
    fn emit(row: &mut ActiveRow, logits: &[f32]) -> (StepEvent, bool) {
        if logits.iter().any(|x| !x.is_finite()) {
            return (StepEvent { id: row.id, token: None, logprob: None, finished: Some(FinishReason::NonFinite) }, true);
        }
        let token = row.sampler.next(logits);
        row.produced += 1;
        row.last = token;
        let logprob = row.top_logprobs.map(|top| token_logprob(logits, token, top));
        let finished = if row.options.stop_tokens.contains(&token) {
            Some(FinishReason::Stop)
        } else if row.produced >= row.options.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        (StepEvent { id: row.id, token: Some(token), logprob, finished }, finished.is_some())
    }
}

/// Padding a prefill pass may carry, as a share of its real tokens, before the prompts
/// joining in one step are split into another pass.
const PREFILL_PADDING_SHARE: f64 = 0.1;

/// Real tokens below which a prefill pass takes more prompts whatever their padding (a
/// separate pass for a few short prompts costs more than their padding).
const PREFILL_MIN_TOKENS: usize = 256;

/// The prompts of these lengths as prefill passes: shortest first (ties in input order),
/// a pass closing when the next prompt would push its padding past
/// [`PREFILL_PADDING_SHARE`] of its real tokens and it already holds
/// [`PREFILL_MIN_TOKENS`]. Every index appears in exactly one pass.
fn prefill_groups(lengths: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut real = 0usize;
    for i in order {
        let len = lengths[i];
        // Sorted, so `len` is the longest of the pass if the prompt joins it.
        let padding = (current.len() + 1) * len - (real + len);
        if !current.is_empty() && real >= PREFILL_MIN_TOKENS && padding as f64 > PREFILL_PADDING_SHARE * (real + len) as f64 {
            groups.push(std::mem::take(&mut current));
            real = 0;
        }
        current.push(i);
        real += len;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Log-softmax of `token` and of the `top` most likely tokens (ties: lower id first).
pub fn token_logprob(logits: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_z = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    let lp = |i: usize| (logits[i] as f64 - log_z) as f32;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let k = top.min(logits.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    }
    let mut best: Vec<usize> = order[..k].to_vec();
    best.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    TokenLogprob { token, logprob: lp(token as usize), top: best.into_iter().map(|i| (i as u32, lp(i))).collect() }
}

/// Generate every request with at most `max_rows` in flight; `on_token(i, token)` is
/// called for request `i` as its tokens arrive. Returns each request's new tokens (a
/// stop token included), in request order.
pub fn generate_batch(
    model: &Decoder,
    requests: &[GenerationRequest],
    max_rows: usize,
    mut on_token: impl FnMut(usize, u32) -> Result<()>,
) -> Result<Vec<Vec<u32>>> {
    if max_rows == 0 && !requests.is_empty() {
        return Err(ModelError::InvalidInput("--batch-size must be at least 1".into()));
    }
    let mut generator = BatchGenerator::new(model, max_rows);
    let mut index = std::collections::HashMap::new();
    for (i, r) in requests.iter().enumerate() {
        if r.options.max_tokens == 0 {
            continue;
        }
        let id = generator.submit(r.clone()).map_err(|e| match e {
            ModelError::InvalidInput(m) if requests.len() > 1 => ModelError::InvalidInput(format!("request {i}: {m}")),
            other => other,
        })?;
        index.insert(id, i);
    }
    let mut out = vec![Vec::new(); requests.len()];
    while !generator.is_idle() {
        for ev in generator.step()? {
            let i = index[&ev.id];
            if let Some(tok) = ev.token {
                out[i].push(tok);
                on_token(i, tok)?;
            }
            if ev.finished == Some(FinishReason::NonFinite) {
                return Err(ModelError::NonFinite {
                    what: format!(
                        "{}the logits after {} generated tokens",
                        if requests.len() > 1 { format!("request {i}: ") } else { String::new() },
                        out[i].len()
                    ),
                    steering: requests[i].hooks.describe_steering(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_groups_cover_every_prompt_once_and_bound_padding() {
        assert!(prefill_groups(&[]).is_empty());
        // Few tokens: one pass whatever the padding.
        assert_eq!(prefill_groups(&[5, 90, 7]), vec![vec![0, 2, 1]]);
        let lengths: Vec<usize> = (0..40).map(|i| 30 + (i * 37) % 50).collect();
        let groups = prefill_groups(&lengths);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert!(groups.len() > 1, "40 prompts of 30-79 tokens need more than one pass");
        for g in &groups {
            let longest = g.iter().map(|&i| lengths[i]).max().unwrap();
            let real: usize = g.iter().map(|&i| lengths[i]).sum();
            let padding = g.len() * longest - real;
            // The last prompt that joined may carry the group over the share only while
            // the group is below the token minimum.
            assert!(padding as f64 <= PREFILL_PADDING_SHARE * real as f64 || real - longest < PREFILL_MIN_TOKENS, "{g:?}");
        }
    }

    #[test]
    fn token_logprob_is_a_log_softmax_with_sorted_top() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let lp = token_logprob(&logits, 2, 3);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        assert!((lp.logprob as f64 - (2.0 - z.ln())).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let total: f64 = (0..4).map(|i| token_logprob(&logits, i, 0).logprob as f64).map(f64::exp).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
