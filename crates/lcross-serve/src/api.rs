//! OpenAI wire format: request bodies (strict: an unknown field is a 400, so a typo
//! never silently changes nothing) and response bodies, plus lcross's `steering` field.

use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<usize>,
    /// OpenAI's newer name for `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub n: Option<usize>,
    pub user: Option<String>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// lcross: vectors to add, each with its beta (see [`SteeringSpec`]).
    pub steering: Option<Vec<SteeringSpec>>,
}

/// `POST /v1/completions` (plain text, no chat template).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptSpec,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Number of most likely tokens to report per position (0..=20); presence turns
    /// log-probabilities on.
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub n: Option<usize>,
    pub user: Option<String>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub steering: Option<Vec<SteeringSpec>>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: MessageContent,
    pub name: Option<String>,
}

/// A message's content: a string or a list of text parts.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of {\"type\": \"text\", \"text\": ...} parts")]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A part of a message's content; only text parts are served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// The completions prompt: a string, or an array holding one string.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum PromptSpec {
    One(String),
    Many(Vec<String>),
}

/// `stop`: a string or up to four strings.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

impl StopSpec {
    /// The stop strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSpec::One(s) => vec![s],
            StopSpec::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and no choices) before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// lcross's extension: add a registered vector with a beta.
///
/// `{"vector": "refusal", "beta": -1.5}`; `"beta": "auto"` takes the vector's
/// calibrated beta; `"positions"`: `all`, `prompt-last`, `generated`,
/// `prompt-last+generated` or `from:N` (default: the vector's own).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringSpec {
    pub vector: String,
    pub beta: BetaSpec,
    pub positions: Option<String>,
    /// Hook point: `resid_pre`, `attn_out`, `mlp_out` or `resid_post` (default).
    pub hook: Option<String>,
    /// `add` (default), `ablate` or `cap`.
    pub intervention: Option<String>,
}

/// A number or `"auto"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged, expecting = "a number or \"auto\"")]
pub enum BetaSpec {
    Value(f64),
    Named(String),
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Tokens the model produced, the end-of-turn token included.
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// A token and its log-probability (chat format).
#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// One generated token's log-probabilities (chat format).
#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprobOut {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// `choices[].logprobs` of a chat completion.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprobOut>,
}

/// `choices[].logprobs` of a (legacy) completion.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
    pub text_offset: Vec<usize>,
}

/// Steering applied to a request, echoed in the response (`lcross.steering`) with
/// betas resolved.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedSteering {
    pub vector: String,
    pub beta: f64,
    pub positions: String,
    pub hook: String,
    pub intervention: String,
}

/// The `lcross` extension object of a response.
#[derive(Debug, Clone, Serialize)]
pub struct LcrossInfo {
    pub steering: Vec<AppliedSteering>,
}
