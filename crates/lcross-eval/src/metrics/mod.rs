//! The evaluations: each generates answers under every condition (batched, stored,
//! resumable), scores them, and reports one [`EvalRow`] per condition with the side
//! effects next to the effect.

pub mod fair;
pub mod harm;
pub mod judged;
pub mod metric;

pub use metric::{Metric, MetricInputs, METRIC_NAMES};

use std::collections::BTreeMap;
use std::path::PathBuf;

use lcross_core::store::{key_of, Store};
use lcross_model::Model;

use crate::answers::{generate_answers, Answer, GenerationSettings};
use crate::conditions::Condition;
use crate::error::{EvalError, Result};
use crate::judge::{Judge, JudgeRequest, Judgement};
use crate::report::{EvalRow, ItemRecord};
use crate::side_effects::{drift_kl, perplexity};

/// What every evaluation needs: the model, the conditions, how to generate, where to
/// keep results, and the neutral prompts for drift (None: no side effects).
pub struct Setup<'a> {
    pub model: &'a Model,
    pub conditions: Vec<Condition>,
    pub settings: GenerationSettings,
    pub store: Option<Store>,
    /// Neutral prompts (as user messages) for the drift measurement; None skips the
    /// side effects (perplexity and drift).
    pub neutral_prompts: Option<Vec<String>>,
}

/// How an evaluation generates and what it keeps: the CLI's `--max-tokens`,
/// `--temperature`, `--top-p`, `--seed`, `--batch-size`, `--no-side-effects`,
/// `--no-cache`, `--data-dir`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub max_tokens: usize,
    /// None: the metric's default (greedy, or FAIR's temperature).
    pub temperature: Option<f64>,
    pub top_p: f64,
    pub seed: u64,
    /// Rows decoding together (None: what fits this machine, at most 32).
    pub batch_size: Option<usize>,
    /// Measure perplexity and drift on neutral prompts beside the metric.
    pub side_effects: bool,
    /// Read and write the result store.
    pub use_cache: bool,
    pub data_dir: PathBuf,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            temperature: None,
            top_p: 1.0,
            seed: 0,
            batch_size: None,
            side_effects: true,
            use_cache: true,
            data_dir: lcross_core::default_data_dir(),
        }
    }
}

impl<'a> Setup<'a> {
    /// The setup of `conditions` on `model` as `run` asks; `default_temperature` is the
    /// metric's ([`Metric::default_temperature`]) and `prompt_tokens` sizes the default batch.
    pub fn build(model: &'a Model, conditions: Vec<Condition>, run: &RunOptions, default_temperature: Option<f64>, prompt_tokens: usize) -> Result<Self> {
        let sampling = match run.temperature.or(default_temperature) {
            None => lcross_model::Sampling::Greedy,
            Some(t) => lcross_model::Sampling::Sample { temperature: t, top_p: run.top_p, seed: run.seed },
        };
        let rows_in_flight = match run.batch_size {
            Some(0) => return Err(EvalError::bad_value("batch size", "0", "at least 1")),
            Some(n) => n,
            None => model.rows_that_fit(prompt_tokens.saturating_add(run.max_tokens)),
        };
        let store = if run.use_cache { Some(Store::open_default()?) } else { None };
        let neutral_prompts = if run.side_effects { Some(crate::side_effects::neutral_prompts(&run.data_dir)?) } else { None };
        Ok(Self { model, conditions, settings: GenerationSettings { max_tokens: run.max_tokens, sampling, rows_in_flight }, store, neutral_prompts })
    }
}

impl Setup<'_> {
    /// Token ids of user messages in the model's chat template.
    pub fn chat_ids(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| Ok(self.model.prompt(t, true, None)?.ids)).collect()
    }

    /// Answers `[condition][prompt]` to user messages.
    pub fn answers(&mut self, texts: &[String], label: &str) -> Result<Vec<Vec<Answer>>> {
        let ids = self.chat_ids(texts)?;
        generate_answers(self.model, &ids, &self.conditions, &self.settings, self.store.as_mut(), label)
    }

    /// Add `perplexity` (of each condition's answers under the unsteered model) and
    /// `drift_kl` (on the neutral prompts) to the rows, when side effects are on.
    pub fn add_side_effects(&mut self, rows: &mut [EvalRow], texts: &[String], answers: &[Vec<Answer>]) -> Result<()> {
        let Some(neutral) = self.neutral_prompts.clone() else { return Ok(()) };
        let prompt_ids = self.chat_ids(texts)?;
        let neutral_ids = self.chat_ids(&neutral)?;
        let bar = lcross_core::activations::progress(rows.len() as u64, "side effects (perplexity, drift)");
        for ((row, cond), ans) in rows.iter_mut().zip(&self.conditions).zip(answers) {
            let (ppl, _) = perplexity(self.model, &prompt_ids, ans)?;
            let kl = drift_kl(self.model, &neutral_ids, cond, self.settings.rows_in_flight, self.store.as_mut())?;
            row.extra.insert("perplexity".into(), finite_or_null(ppl));
            row.extra.insert("drift_kl".into(), finite_or_null(kl));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }
}

/// A JSON number, or null for NaN / infinities.
pub fn finite_or_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

/// Judgements read from and written to the store (successful ones only: a failure may
/// be transient), in chunks with a progress bar.
pub fn judge_cached(judge: &dyn Judge, requests: &[JudgeRequest], mut store: Option<&mut Store>, label: &str) -> Result<Vec<Judgement>> {
    const KIND: &str = "judgement";
    let id = judge.id();
    let keys: Vec<_> = requests.iter().map(|r| key_of(&[id.as_bytes(), r.key().as_bytes()])).collect();
    let mut out: Vec<Option<Judgement>> = keys
        .iter()
        .map(|k| match store.as_deref() {
            Some(s) => Ok(s.get(KIND, k)?.and_then(|b| serde_json::from_slice(&b).ok())),
            None => Ok(None),
        })
        .collect::<Result<_>>()?;
    let missing: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
    if !missing.is_empty() {
        let bar = lcross_core::activations::progress(missing.len() as u64, &format!("{label}: judging"));
        for chunk in missing.chunks(8) {
            let reqs: Vec<JudgeRequest> = chunk.iter().map(|&i| requests[i].clone()).collect();
            let js = judge.judge(&reqs)?;
            if js.len() != reqs.len() {
                return Err(lcross_core::CoreError::SizeMismatch {
                    what: "judgements of the judge (one per request)".into(),
                    expected: reqs.len(),
                    got: js.len(),
                }
                .into());
            }
            let mut entries = Vec::new();
            for (&i, j) in chunk.iter().zip(js) {
                if j.score.is_some() {
                    entries.push((keys[i], serde_json::to_vec(&j)?));
                }
                out[i] = Some(j);
            }
            if let Some(s) = store.as_deref_mut() {
                s.put_many(KIND, &entries)?;
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
    }
    Ok(out.into_iter().map(|j| j.expect("judged or found")).collect())
}

/// Item records of one condition's judged answers.
pub fn judged_items(cond: &Condition, prompts: &[String], answers: &[Answer], judgements: &[Judgement]) -> Vec<ItemRecord> {
    prompts
        .iter()
        .zip(answers)
        .zip(judgements)
        .map(|((p, a), j)| {
            let mut extra = BTreeMap::new();
            if let Some(c) = j.coverage {
                extra.insert("judge_coverage".into(), serde_json::json!(c));
            }
            if let Some(f) = &j.failure {
                extra.insert("judge_failure".into(), serde_json::json!(f));
            }
            ItemRecord { condition: cond.label.clone(), beta: cond.beta, prompt: p.clone(), answer: a.text.clone(), score: j.score, extra }
        })
        .collect()
}

/// Scores of the judgements that succeeded, and how many failed.
pub fn scored(judgements: &[Judgement]) -> (Vec<f64>, usize) {
    let s: Vec<f64> = judgements.iter().filter_map(|j| j.score).collect();
    let failed = judgements.len() - s.len();
    (s, failed)
}
