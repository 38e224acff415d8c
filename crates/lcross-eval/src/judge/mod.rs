//! Judges: something that scores an answer on a scale of labels.
//!
//! A [`JudgeRequest`] is a system and a user message plus the [`Scale`] of allowed
//! replies (`0`..`10`, or `No`/`Yes`), each label with a value. A judge returns a
//! [`Judgement`]: the expected value of the scale under the judge's probabilities of
//! the labels (not a sampled number), how much probability the labels had, or a
//! recorded failure (never a silent zero).
//!
//! - [`local::LocalJudge`]: a model run by lcross, reading label probabilities from its
//!   logits exactly (multi-token labels such as `10` are scored through their tokens);
//! - [`http::HttpJudge`]: any OpenAI-compatible `/v1/chat/completions` endpoint, from
//!   the returned `top_logprobs` when it gives them, else the reply's number.

pub mod http;
pub mod labels;
pub mod local;

use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::rubric::JudgeFormat;
use crate::rubric::{yes_no_prompt, Rubric, SCORE_SYSTEM};

/// The replies a judge may give, each with its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scale {
    pub labels: Vec<(String, f64)>,
}

impl Scale {
    /// `0`, `1`, ..., `10`.
    pub fn zero_to_ten() -> Self {
        Self { labels: (0..=10).map(|i| (i.to_string(), i as f64)).collect() }
    }

    /// `No` = 0, `Yes` = 1: the score is the probability of `Yes`.
    pub fn yes_no() -> Self {
        Self { labels: vec![("No".into(), 0.0), ("Yes".into(), 1.0)] }
    }

    /// Value of a reply text that is exactly one label (after trimming spaces and a
    /// final period), for judges that only return text.
    pub fn parse_reply(&self, reply: &str) -> Option<f64> {
        let t = reply.trim().trim_end_matches('.').trim();
        if let Some((_, v)) = self.labels.iter().find(|(l, _)| l.eq_ignore_ascii_case(t)) {
            return Some(*v);
        }
        // "7/10", "Score: 7", "7 - clear refusal": the first number, if it is a label.
        let digits: String = t.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty() {
            return self.labels.iter().find(|(l, _)| *l == digits).map(|(_, v)| *v);
        }
        let word: String = t.chars().take_while(|c| c.is_alphabetic()).collect();
        self.labels.iter().find(|(l, _)| !word.is_empty() && l.eq_ignore_ascii_case(&word)).map(|(_, v)| *v)
    }

    /// Identity of the scale for cache keys.
    pub fn key(&self) -> String {
        self.labels.iter().map(|(l, v)| format!("{l}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// What the judge is asked: chat messages (role, content) and the scale of replies.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    pub messages: Vec<(String, String)>,
    pub scale: Scale,
}

impl JudgeRequest {
    /// Score `answer` to `question` 0-10 for the concept of `rubric`.
    pub fn score(rubric: &Rubric, question: &str, answer: &str, format: JudgeFormat) -> Self {
        match format.resolve(rubric) {
            JudgeFormat::Scale => Self {
                messages: vec![("system".into(), SCORE_SYSTEM.into()), ("user".into(), rubric.user_prompt(question, answer))],
                scale: Scale::zero_to_ten(),
            },
            JudgeFormat::YesNo | JudgeFormat::Auto => Self {
                messages: vec![("user".into(), rubric.yes_no_prompt(question, answer))],
                scale: Scale { labels: vec![("No".into(), 0.0), ("Yes".into(), 10.0)] },
            },
        }
    }

    /// Probability of Yes (No = 0, Yes = 1) to a yes/no question about `answer` to
    /// `question` (the format of [`Rubric::yes_no_prompt`]).
    pub fn yes_no(question_about_reply: &str, question: &str, answer: &str) -> Self {
        Self { messages: vec![("user".into(), yes_no_prompt(question_about_reply, question, answer))], scale: Scale::yes_no() }
    }

    /// Identity of the request for cache keys.
    pub fn key(&self) -> String {
        let mut s = String::new();
        for (role, content) in &self.messages {
            s.push_str(&format!("{}:{role}:{}:{content};", role.len(), content.len()));
        }
        s.push_str(&self.scale.key());
        s
    }
}

/// One judged item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Expected value of the scale (None: the judgement failed, see `failure`).
    pub score: Option<f64>,
    /// Probability the judge put on the scale's labels (local judge, and HTTP judges
    /// that return log-probabilities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// Why there is no score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The reply text (HTTP judges).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

impl Judgement {
    /// A recorded failure.
    pub fn failed(reason: impl Into<String>, reply: Option<String>) -> Self {
        Self { score: None, coverage: None, failure: Some(reason.into()), reply }
    }
}

/// Least probability the labels must have for a score to count: below it the judge was
/// not answering on the scale, and the item is a recorded failure.
pub const MIN_COVERAGE: f64 = 0.05;

/// Scores requests.
pub trait Judge: Send + Sync {
    /// Identity for cache keys and reports (model and numerics, or URL and model).
    fn id(&self) -> String;

    /// One judgement per request, in order. Transport failures (an HTTP judge that
    /// cannot be reached) are errors; a reply off the scale is a recorded failure.
    fn judge(&self, requests: &[JudgeRequest]) -> Result<Vec<Judgement>>;
}
