//! Answers of a model to prompts under steering conditions, generated in batches and
//! kept in the result store so an interrupted evaluation resumes where it stopped and a
//! second judge never regenerates them.

use lcross_core::store::{key_of, numerics_key, Store};
use lcross_model::{GenerateOptions, GenerationRequest, Hooks, Model, Sampling};

use crate::conditions::Condition;
use crate::error::{EvalError, Result};

/// How answers are generated.
#[derive(Debug, Clone, Copy)]
pub struct GenerationSettings {
    pub max_tokens: usize,
    /// Greedy, or sampled with `seed + prompt index` per prompt (the same seed under
    /// every condition, so conditions differ only by their steering).
    pub sampling: Sampling,
    /// Rows decoding together at most.
    pub rows_in_flight: usize,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// New token ids, a final stop token included.
    pub ids: Vec<u32>,
    /// The text without stop tokens.
    pub text: String,
}

impl Answer {
    /// The ids without stop tokens.
    pub fn content_ids(&self, model: &Model) -> Vec<u32> {
        self.ids.iter().copied().filter(|t| !model.stop_tokens().contains(t)).collect()
    }
}

const KIND: &str = "answer";

fn sampling_of(s: Sampling, seed_offset: usize) -> Sampling {
    match s {
        Sampling::Sample { temperature, top_p, seed } => Sampling::Sample { temperature, top_p, seed: seed.wrapping_add(seed_offset as u64) },
        g => g,
    }
}

/// One row of a batched generation: a prompt, the hooks it runs with, and the offset
/// added to the sampling seed (sampled rows use `seed + seed_offset`).
#[derive(Debug, Clone, Copy)]
pub struct RowSpec<'a> {
    pub prompt: &'a [u32],
    pub hooks: &'a Hooks,
    pub seed_offset: usize,
}

/// Generate `rows` together, `settings.rows_in_flight` at a time, in row order; every
/// row stops at the model's stop tokens or after `settings.max_tokens`. `on_token(row,
/// token)` is called as tokens arrive (progress). The one generation loop of lcross:
/// [`generate_answers`], `lcross generate --prompts` and `lcross steer --betas` run it.
pub fn generate_rows(
    model: &Model,
    rows: &[RowSpec<'_>],
    settings: &GenerationSettings,
    on_token: impl FnMut(usize, u32) -> lcross_model::Result<()>,
) -> Result<Vec<Answer>> {
    if settings.rows_in_flight == 0 {
        return Err(EvalError::bad_value("rows in flight (--batch-size)", "0", "at least 1"));
    }
    let requests: Vec<GenerationRequest> = rows
        .iter()
        .map(|r| GenerationRequest {
            prompt: r.prompt.to_vec(),
            hooks: r.hooks.clone(),
            options: GenerateOptions {
                max_tokens: settings.max_tokens,
                sampling: sampling_of(settings.sampling, r.seed_offset),
                stop_tokens: model.stop_tokens().to_vec(),
            },
        })
        .collect();
    let outs = model.generate_batch(&requests, settings.rows_in_flight, on_token)?;
    outs.into_iter()
        .map(|ids| {
            let shown: Vec<u32> = ids.iter().copied().filter(|t| !model.stop_tokens().contains(t)).collect();
            Ok(Answer { text: model.tokenizer().decode(&shown, true)?, ids })
        })
        .collect()
}

/// Answers `[condition][prompt]` to token-id prompts. Rows found in `store` are reused;
/// the others are generated `rows_in_flight` at a time and stored chunk by chunk.
pub fn generate_answers(
    model: &Model,
    prompts: &[Vec<u32>],
    conditions: &[Condition],
    settings: &GenerationSettings,
    mut store: Option<&mut Store>,
    label: &str,
) -> Result<Vec<Vec<Answer>>> {
    if prompts.is_empty() {
        return Err(EvalError::TooFew { what: "prompts to answer".into(), needed: 1, got: 0 });
    }
    if settings.max_tokens == 0 || settings.rows_in_flight == 0 {
        return Err(EvalError::bad_value(
            "max tokens and rows in flight",
            format!("{} and {}", settings.max_tokens, settings.rows_in_flight),
            "at least 1 each",
        ));
    }
    let numerics = numerics_key(model)?;
    let stops = format!("{:?}", model.stop_tokens());
    let mut keys = Vec::with_capacity(conditions.len() * prompts.len());
    let mut found: Vec<Option<Vec<u32>>> = Vec::with_capacity(keys.capacity());
    for c in conditions {
        let ckey = c.key();
        for (p, ids) in prompts.iter().enumerate() {
            let prompt_bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
            let sampling = format!("{:?};max_tokens={}", sampling_of(settings.sampling, p), settings.max_tokens);
            let key = key_of(&[numerics.as_bytes(), &prompt_bytes, ckey.as_bytes(), sampling.as_bytes(), stops.as_bytes()]);
            let cached = match store.as_deref() {
                Some(s) => s.get(KIND, &key)?.and_then(|b| serde_json::from_slice::<Vec<u32>>(&b).ok()),
                None => None,
            };
            keys.push(key);
            found.push(cached);
        }
    }
    let missing: Vec<usize> = (0..found.len()).filter(|&i| found[i].is_none()).collect();
    if !missing.is_empty() {
        let hooks: Vec<lcross_model::Hooks> = conditions.iter().map(|c| c.hooks(model)).collect::<Result<_>>()?;
        let bar = lcross_core::activations::progress(missing.len().saturating_mul(settings.max_tokens) as u64, &format!("{label}: {} answers", missing.len()));
        let chunk_rows = settings.rows_in_flight * 2;
        let mut done = 0usize;
        for chunk in missing.chunks(chunk_rows) {
            let rows: Vec<RowSpec<'_>> = chunk
                .iter()
                .map(|&i| {
                    let (c, p) = (i / prompts.len(), i % prompts.len());
                    RowSpec { prompt: &prompts[p], hooks: &hooks[c], seed_offset: p }
                })
                .collect();
            let outs = generate_rows(model, &rows, settings, |_, _| {
                bar.inc(1);
                Ok(())
            })?;
            let mut entries = Vec::with_capacity(chunk.len());
            for (&i, answer) in chunk.iter().zip(outs) {
                entries.push((keys[i], serde_json::to_vec(&answer.ids)?));
                found[i] = Some(answer.ids);
            }
            if let Some(s) = store.as_deref_mut() {
                s.put_many(KIND, &entries)?;
            }
            // Rows that stopped early did not tick every token.
            done += chunk.len();
            bar.set_position((done * settings.max_tokens) as u64);
        }
        bar.finish_and_clear();
    }
    let mut out = Vec::with_capacity(conditions.len());
    let mut all = found.into_iter();
    for _ in conditions {
        let mut row = Vec::with_capacity(prompts.len());
        for _ in prompts {
            let ids = all.next().flatten().expect("every answer was generated or found");
            let shown: Vec<u32> = ids.iter().copied().filter(|t| !model.stop_tokens().contains(t)).collect();
            row.push(Answer { text: model.tokenizer().decode(&shown, true)?, ids });
        }
        out.push(row);
    }
    Ok(out)
}
