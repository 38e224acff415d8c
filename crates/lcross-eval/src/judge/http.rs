//! A judge behind an OpenAI-compatible HTTP API (`POST {base}/chat/completions`).
//!
//! Asks for greedy decoding with `logprobs` and `top_logprobs`; when the reply carries
//! them, the score is the expected value over the labels' probabilities (labels that
//! the server splits into two tokens, like `10` into `1`,`0`, are read through the
//! second position). Without them, the reply text must be a label. HTTP failures
//! (unreachable, error status after retries, a body that is not a chat completion) are
//! errors; a reply off the scale is a recorded failure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Judge, JudgeRequest, Judgement, Scale, MIN_COVERAGE};
use crate::error::{EvalError, Result};

/// Where and how to reach the judge.
#[derive(Debug, Clone)]
pub struct HttpJudgeConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Model name sent in each request.
    pub model: String,
    /// Bearer token, if the server needs one.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts for 429 / 5xx / connection errors.
    pub attempts: usize,
}

impl HttpJudgeConfig {
    /// From flags, falling back to `LCROSS_JUDGE_URL` / `OPENAI_BASE_URL`,
    /// `LCROSS_JUDGE_MODEL`, `LCROSS_JUDGE_API_KEY` / `OPENAI_API_KEY`.
    pub fn from_flags_or_env(url: Option<&str>, model: Option<&str>, key: Option<&str>) -> Result<Self> {
        let env = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
        let base_url = url
            .map(String::from)
            .or_else(|| env(&["LCROSS_JUDGE_URL", "OPENAI_BASE_URL"]))
            .ok_or_else(|| EvalError::MissingInput { what: "an HTTP judge".into(), needs: "a base URL (--judge-url or LCROSS_JUDGE_URL)".into() })?;
        let model = model
            .map(String::from)
            .or_else(|| env(&["LCROSS_JUDGE_MODEL"]))
            .ok_or_else(|| EvalError::MissingInput { what: "an HTTP judge".into(), needs: "a model name (--judge-model or LCROSS_JUDGE_MODEL)".into() })?;
        let api_key = key.map(String::from).or_else(|| env(&["LCROSS_JUDGE_API_KEY", "OPENAI_API_KEY"]));
        Ok(Self { base_url: base_url.trim_end_matches('/').to_string(), model, api_key, timeout: Duration::from_secs(120), attempts: 3 })
    }
}

/// An OpenAI-compatible judge.
pub struct HttpJudge {
    config: HttpJudgeConfig,
    client: reqwest::blocking::Client,
}

impl HttpJudge {
    pub fn new(config: HttpJudgeConfig) -> Result<Self> {
        let client = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EvalError::Http { url: config.base_url.clone(), reason: e.to_string() })?;
        Ok(Self { config, client })
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.config.base_url)
    }

    /// POST one request, retrying 429, 5xx and connection failures.
    fn post(&self, body: &Value) -> Result<Value> {
        let url = self.url();
        let mut last = String::new();
        for attempt in 0..self.config.attempts.max(1) {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            let mut req = self.client.post(&url).json(body);
            if let Some(k) = &self.config.api_key {
                req = req.bearer_auth(k);
            }
            match req.send() {
                Err(e) => last = format!("request failed: {e}"),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().unwrap_or_default();
                    if status.is_success() {
                        return serde_json::from_str(&text)
                            .map_err(|e| EvalError::Http { url: url.clone(), reason: format!("reply is not JSON ({e}): {}", snippet(&text)) });
                    }
                    last = format!("HTTP {status}: {}", snippet(&text));
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        break;
                    }
                }
            }
        }
        Err(EvalError::Http { url, reason: last })
    }

    fn judge_one(&self, r: &JudgeRequest) -> Result<Judgement> {
        let body = json!({
            "model": self.config.model,
            "messages": r.messages.iter().map(|(role, content)| json!({"role": role, "content": content})).collect::<Vec<_>>(),
            "temperature": 0.0,
            "max_tokens": 4,
            "logprobs": true,
            "top_logprobs": 20,
        });
        let reply = self.post(&body)?;
        judgement_from_completion(&reply, &r.scale).map_err(|reason| EvalError::Http { url: self.url(), reason })
    }
}

fn snippet(s: &str) -> String {
    let s: String = s.chars().take(300).collect();
    s.replace('\n', " ")
}

/// Probabilities of the trimmed tokens of one `top_logprobs` list (equal trimmed
/// tokens summed: `7` and ` 7`).
fn position_probs(pos: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for t in pos.get("top_logprobs").and_then(Value::as_array).into_iter().flatten() {
        if let (Some(tok), Some(lp)) = (t.get("token").and_then(Value::as_str), t.get("logprob").and_then(Value::as_f64)) {
            *out.entry(tok.trim().to_string()).or_insert(0.0) += lp.exp();
        }
    }
    out
}

/// Read a judgement out of a chat completion. `Err` only when the body is not a chat
/// completion at all; a reply off the scale is a recorded failure.
pub fn judgement_from_completion(reply: &Value, scale: &Scale) -> std::result::Result<Judgement, String> {
    let choice = reply.get("choices").and_then(|c| c.get(0)).ok_or_else(|| format!("no `choices[0]` in the reply: {}", snippet(&reply.to_string())))?;
    let text = choice.get("message").and_then(|m| m.get("content")).and_then(Value::as_str).map(String::from);
    let positions: Vec<&Value> =
        choice.get("logprobs").and_then(|l| l.get("content")).and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    if let Some(first) = positions.first() {
        let p1 = position_probs(first);
        let first_token = first.get("token").and_then(Value::as_str).map(|t| t.trim().to_string());
        let p2 = positions.get(1).map(|p| position_probs(p));
        let mut probs: Vec<f64> = Vec::with_capacity(scale.labels.len());
        for (label, _) in &scale.labels {
            let mut p = p1.get(label.as_str()).copied().unwrap_or(0.0);
            if p == 0.0 {
                // A label split in two tokens: its head must be the sampled first token
                // so that the second position is conditioned on it.
                if let (Some(ft), Some(p2)) = (&first_token, &p2) {
                    if label.len() > ft.len() && label.starts_with(ft.as_str()) && !ft.is_empty() {
                        p = p1.get(ft.as_str()).copied().unwrap_or(0.0) * p2.get(&label[ft.len()..]).copied().unwrap_or(0.0);
                    }
                }
            } else if let (Some(ft), Some(p2)) = (&first_token, &p2) {
                // A label that is the head of a longer one keeps only the mass that stops.
                if ft == label {
                    let longer: f64 = scale
                        .labels
                        .iter()
                        .filter(|(l, _)| l.len() > label.len() && l.starts_with(label.as_str()) && !p1.contains_key(l.as_str()))
                        .map(|(l, _)| p2.get(&l[label.len()..]).copied().unwrap_or(0.0))
                        .sum();
                    p *= (1.0 - longer).max(0.0);
                }
            }
            probs.push(p);
        }
        let values: Vec<f64> = scale.labels.iter().map(|(_, v)| *v).collect();
        let (score, coverage) = super::labels::expected_value(&probs, &values);
        if coverage >= MIN_COVERAGE {
            return Ok(Judgement { score, coverage: Some(coverage), failure: None, reply: text });
        }
    }
    match text {
        Some(t) => match scale.parse_reply(&t) {
            Some(v) => Ok(Judgement { score: Some(v), coverage: None, failure: None, reply: Some(t) }),
            None => Ok(Judgement::failed(format!("the reply {:?} is not one of the scale's labels", snippet(&t)), Some(t))),
        },
        None => Ok(Judgement::failed("the reply has no text", None)),
    }
}

impl Judge for HttpJudge {
    fn id(&self) -> String {
        format!("http:{};model={}", self.config.base_url, self.config.model)
    }

    fn judge(&self, requests: &[JudgeRequest]) -> Result<Vec<Judgement>> {
        requests.iter().map(|r| self.judge_one(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(content: &str, logprobs: Option<Value>) -> Value {
        let mut choice = json!({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"});
        if let Some(l) = logprobs {
            choice["logprobs"] = json!({"content": l});
        }
        json!({"choices": [choice]})
    }

    #[test]
    fn expected_value_from_top_logprobs() {
        let lp = json!([{"token": "8", "logprob": 0.5f64.ln(), "top_logprobs": [
            {"token": "8", "logprob": 0.5f64.ln()}, {"token": "6", "logprob": 0.3f64.ln()}, {"token": "The", "logprob": 0.2f64.ln()}]}]);
        let j = judgement_from_completion(&completion("8", Some(lp)), &Scale::zero_to_ten()).unwrap();
        assert!((j.score.unwrap() - (0.5 * 8.0 + 0.3 * 6.0) / 0.8).abs() < 1e-9, "{j:?}");
        assert!((j.coverage.unwrap() - 0.8).abs() < 1e-9);
    }

    #[test]
    fn ten_split_over_two_tokens() {
        // first token "1" (0.8) or "9" (0.2); after "1": "0" with 0.5
        let lp = json!([
            {"token": "1", "logprob": 0.8f64.ln(), "top_logprobs": [{"token": "1", "logprob": 0.8f64.ln()}, {"token": "9", "logprob": 0.2f64.ln()}]},
            {"token": "0", "logprob": 0.5f64.ln(), "top_logprobs": [{"token": "0", "logprob": 0.5f64.ln()}, {"token": "<|im_end|>", "logprob": 0.5f64.ln()}]}]);
        let j = judgement_from_completion(&completion("10", Some(lp)), &Scale::zero_to_ten()).unwrap();
        // 1: 0.4, 10: 0.4, 9: 0.2
        assert!((j.score.unwrap() - (0.4 * 1.0 + 0.4 * 10.0 + 0.2 * 9.0)).abs() < 1e-9, "{j:?}");
    }

    #[test]
    fn text_only_replies_and_failures() {
        let s = Scale::zero_to_ten();
        assert_eq!(judgement_from_completion(&completion(" 7.", None), &s).unwrap().score, Some(7.0));
        assert_eq!(judgement_from_completion(&completion("Score: 3/10", None), &s).unwrap().score, Some(3.0));
        let bad = judgement_from_completion(&completion("I think it is fine", None), &s).unwrap();
        assert!(bad.score.is_none() && bad.failure.as_deref().unwrap().contains("not one of the scale's labels"), "{bad:?}");
        assert!(judgement_from_completion(&completion("42", None), &s).unwrap().score.is_none());
        let yn = Scale::yes_no();
        assert_eq!(judgement_from_completion(&completion("Yes", None), &yn).unwrap().score, Some(1.0));
        assert_eq!(judgement_from_completion(&completion("no, it refuses", None), &yn).unwrap().score, Some(0.0));
        assert!(judgement_from_completion(&json!({"error": "x"}), &s).is_err());
    }
}
