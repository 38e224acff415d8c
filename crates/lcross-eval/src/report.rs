//! The one shape every evaluation reports, and its files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conditions::Condition;
use crate::error::{EvalError, Result};
use crate::stats;

/// One condition's result: mean and standard error of the metric over `n` items, plus
/// metric-specific fields (`harmful_rate`, `refusal_rate`, `perplexity`, `drift_kl`...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRow {
    pub condition: String,
    pub beta: f64,
    pub mean: f64,
    pub stderr: f64,
    pub n: usize,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl EvalRow {
    /// Mean and standard error of `values` for `condition`.
    pub fn of(condition: &Condition, values: &[f64]) -> Self {
        Self {
            condition: condition.label.clone(),
            beta: condition.beta,
            mean: stats::mean(values),
            stderr: stats::stderr(values),
            n: values.len(),
            extra: BTreeMap::new(),
        }
    }

    /// Add a metric-specific field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

/// `{"metric": NAME, "rows": [...]}` plus what was evaluated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub metric: String,
    pub rows: Vec<EvalRow>,
    /// Model evaluated, judge, data and settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub about: BTreeMap<String, Value>,
}

/// One evaluated item (an answer and its score) for the items file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemRecord {
    pub condition: String,
    pub beta: f64,
    pub prompt: String,
    pub answer: String,
    /// The item's value for the metric (None: a recorded judge failure).
    pub score: Option<f64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

impl EvalReport {
    /// A Markdown table: condition, beta, mean ± stderr, n and every extra field.
    pub fn to_markdown(&self) -> String {
        let keys: Vec<String> = self.rows.iter().flat_map(|r| r.extra.keys().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let mut s = format!("| condition | beta | {} | stderr | n |", self.metric);
        for k in &keys {
            s.push_str(&format!(" {k} |"));
        }
        s.push_str("\n|---|---:|---:|---:|---:|");
        s.push_str(&"---:|".repeat(keys.len()));
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} | {} | {} | {} | {} |", r.condition, r.beta, fmt(r.mean), fmt(r.stderr), r.n));
            for k in &keys {
                let v = match r.extra.get(k) {
                    Some(Value::Number(n)) => n.as_f64().map_or("-".into(), fmt),
                    Some(Value::Null) | None => "-".into(),
                    Some(other) => other.to_string(),
                };
                s.push_str(&format!(" {v} |"));
            }
            s.push('\n');
        }
        s
    }

    /// Write `summary.json`, `summary.md` and `items.jsonl` into `dir` (each atomically).
    pub fn write_dir(&self, dir: &Path, items: &[ItemRecord]) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        let json = serde_json::to_vec_pretty(self)?;
        write_atomic(&dir.join("summary.json"), &json)?;
        write_atomic(&dir.join("summary.md"), self.to_markdown().as_bytes())?;
        let mut lines = Vec::new();
        for it in items {
            serde_json::to_writer(&mut lines, it)?;
            lines.push(b'\n');
        }
        write_atomic(&dir.join("items.jsonl"), &lines)
    }
}

/// Write `bytes` to `path` with lcross's one atomic writer.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(lcross_core::artifact::write_atomic(path, bytes)?)
}
