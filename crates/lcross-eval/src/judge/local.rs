//! A judge run by lcross itself: the label probabilities read from the model's logits.

use std::collections::BTreeMap;

use lcross_core::store::numerics_key;
use lcross_model::{Hooks, Message, Model};

use super::labels::{expected_value, LabelTree, PrefixProbabilities};
use super::{Judge, JudgeRequest, Judgement, Scale, MIN_COVERAGE};
use crate::continuation::{for_each_continuation_logits, log_sum_exp, ContinuationRow};
use crate::error::{EvalError, Result};

/// Default local judge: the strongest local instruct model of the known set.
pub const DEFAULT_JUDGE_MODEL: &str = "qwen2.5-coder-1.5b-instruct";

/// A local model as judge.
pub struct LocalJudge {
    model: std::sync::Arc<Model>,
    id: String,
    rows_per_pass: usize,
}

impl LocalJudge {
    /// Wrap a loaded model (owned, or shared with other callers).
    pub fn new(model: impl Into<std::sync::Arc<Model>>) -> Result<Self> {
        let model = model.into();
        let id = format!("local:{};{}", model.id(), numerics_key(&model)?);
        Ok(Self { model, id, rows_per_pass: 4 })
    }

    /// The judge's model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Token ids of the judge prompt: system and user message through the chat
    /// template, with the generation prompt (plain text for models without one).
    pub fn prompt_ids(&self, r: &JudgeRequest) -> Result<Vec<u32>> {
        let tmpl = self.model.chat_template();
        if tmpl.has_template() {
            let messages: Vec<Message> = r.messages.iter().map(|(role, content)| Message::new(role, content)).collect();
            let text = tmpl.render(&messages, true)?;
            Ok(self.model.tokenizer().encode(&text, false)?)
        } else {
            let text: Vec<&str> = r.messages.iter().map(|(_, c)| c.as_str()).collect();
            Ok(self.model.prompt(&text.join("\n\n"), true, None)?.ids)
        }
    }

    /// The scale's labels as token sequences of this model.
    fn label_tree(&self, scale: &Scale) -> Result<LabelTree> {
        let seqs = scale
            .labels
            .iter()
            .map(|(l, _)| {
                let ids = self.model.tokenizer().encode(l, false)?;
                if ids.is_empty() {
                    return Err(EvalError::Judge(format!("label `{l}` has no tokens in {}", self.model.id())));
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        LabelTree::new(seqs)
    }
}

impl Judge for LocalJudge {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn judge(&self, requests: &[JudgeRequest]) -> Result<Vec<Judgement>> {
        let mut trees: Vec<(Scale, LabelTree)> = Vec::new();
        let mut tree_of = Vec::with_capacity(requests.len());
        for r in requests {
            match trees.iter().position(|(s, _)| *s == r.scale) {
                Some(i) => tree_of.push(i),
                None => {
                    trees.push((r.scale.clone(), self.label_tree(&r.scale)?));
                    tree_of.push(trees.len() - 1);
                }
            }
        }
        let prompts: Vec<Vec<u32>> = requests.iter().map(|r| self.prompt_ids(r)).collect::<Result<_>>()?;
        // One row per (request, chain); the chain is followed by one more token so that
        // the distribution after its last token is read too.
        let mut row_keys: Vec<(usize, Vec<u32>)> = Vec::new();
        let mut continuations: Vec<Vec<u32>> = Vec::new();
        for (i, &t) in tree_of.iter().enumerate() {
            let tree = &trees[t].1;
            let filler = *tree.needed().values().next().and_then(|s| s.iter().next()).expect("a label tree has a root");
            for chain in tree.chains() {
                let mut c = chain.clone();
                c.push(filler);
                row_keys.push((i, chain));
                continuations.push(c);
            }
        }
        let none = Hooks::none();
        let rows: Vec<ContinuationRow<'_>> =
            row_keys.iter().zip(&continuations).map(|((i, _), c)| ContinuationRow { prefix: &prompts[*i], continuation: c, hooks: &none }).collect();
        let mut probs: Vec<PrefixProbabilities> = vec![BTreeMap::new(); requests.len()];
        for_each_continuation_logits(&self.model, &rows, self.rows_per_pass, |row, j, logits| {
            let (i, chain) = &row_keys[row];
            let prefix = chain[..j].to_vec();
            let tree = &trees[tree_of[*i]].1;
            if let Some(tokens) = tree.needed().get(&prefix) {
                let z = log_sum_exp(logits);
                let entry = probs[*i].entry(prefix).or_default();
                for &t in tokens {
                    let l = logits.get(t as usize).copied().ok_or_else(|| EvalError::Judge(format!("label token {t} is outside the judge's vocabulary")))?;
                    entry.insert(t, (l as f64 - z).exp());
                }
            }
            Ok(())
        })?;
        requests
            .iter()
            .zip(&tree_of)
            .zip(&probs)
            .map(|((r, &t), p)| {
                let label_probs = trees[t].1.probabilities(p)?;
                let values: Vec<f64> = r.scale.labels.iter().map(|(_, v)| *v).collect();
                let (score, coverage) = expected_value(&label_probs, &values);
                tracing::debug!(judge = %self.id, ?label_probs, ?score, coverage, "label probabilities");
                Ok(if coverage < MIN_COVERAGE || score.is_none() {
                    Judgement {
                        score: None,
                        coverage: Some(coverage),
                        failure: Some(format!("the judge put {coverage:.3} of its probability on the scale's labels (< {MIN_COVERAGE})")),
                        reply: None,
                    }
                } else {
                    Judgement { score, coverage: Some(coverage), failure: None, reply: None }
                })
            })
            .collect()
    }
}
