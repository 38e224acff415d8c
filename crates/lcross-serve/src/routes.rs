//! HTTP routes: health, models, vectors, chat completions and completions (plain JSON
//! or server-sent events).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use lcross_model::{FinishReason, GenerateOptions, GenerationRequest, Message, Sampling};
use serde_json::{json, Value};

use crate::api::{
    AppliedSteering, ChatCompletionRequest, CompletionRequest, LcrossInfo, MessageContent, PromptSpec, SteeringSpec, StopSpec, StreamOptions, Usage,
};
use crate::engine::{EngineEvent, Ticket};
use crate::error::ApiError;
use crate::state::{now, AppState};
use crate::transcript::Transcript;

/// Most stop strings per request (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// Most alternatives per position in `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The router of a server.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/vectors", get(vectors))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), read_body_in_time))
        .with_state(state)
}

/// Read the whole request body before any handler runs: a body announced larger than
/// the limit is refused at once (413, without reading it), one that does not arrive
/// within `body_timeout` gets a 408; both close the connection.
async fn read_body_in_time(State(st): State<Arc<AppState>>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let limit = st.limits.max_body_bytes;
    let announced = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return closing(ApiError::too_large(limit).into_response());
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(st.limits.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => closing(ApiError::body_timeout(st.limits.body_timeout).into_response()),
        Ok(Err(e)) => {
            let over = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let err = if over { ApiError::too_large(limit) } else { ApiError::invalid(format!("cannot read the request body: {e}")) };
            closing(err.into_response())
        }
        Ok(Ok(bytes)) => next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await,
    }
}

/// A response after which the connection is closed (its request body was not read).
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {uri}: see GET /v1/models, /v1/vectors, POST /v1/chat/completions, /v1/completions"), "unknown_url")
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError { status: StatusCode::METHOD_NOT_ALLOWED, ..ApiError::invalid(format!("{method} is not allowed on {uri}")) }
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.stats();
    let alive = s.alive.load(Ordering::SeqCst);
    // Row counts before the cache size: the engine publishes them in the opposite order.
    let active = s.active.load(Ordering::SeqCst);
    let queued = s.queued.load(Ordering::SeqCst);
    let cache_bytes = s.cache_bytes.load(Ordering::SeqCst);
    let body = json!({
        "status": if alive { "ok" } else { "engine stopped" },
        "model": st.model_name,
        "vectors": st.vectors.len(),
        "active": active,
        "queued": queued,
        "in_flight": st.engine.in_flight(),
        "capacity": st.engine.capacity(),
        "cache_bytes": cache_bytes,
        "steps": s.steps.load(Ordering::Relaxed),
        "tokens_generated": s.tokens.load(Ordering::Relaxed),
    });
    let status = if alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": st.model_name, "object": "model", "created": st.started, "owned_by": "lcross"}]}))
}

async fn vectors(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "model": st.model_name, "data": st.vectors.infos()}))
}

/// Read a JSON body: 413 past the size limit, 400 with serde's message otherwise.
fn parse_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::invalid(format!("cannot read the request body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("the request body is empty: send a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

/// What both endpoints share once parsed and checked.
struct Prepared {
    request: GenerationRequest,
    top_logprobs: Option<usize>,
    stops: Vec<String>,
    stream: bool,
    include_usage: bool,
    applied: Vec<AppliedSteering>,
    prompt_tokens: usize,
}

/// Fields both endpoints share.
struct Common<'a> {
    model: &'a str,
    n: Option<usize>,
    max_tokens: Option<usize>,
    default_max_tokens: usize,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    stop: Option<StopSpec>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    top_logprobs: Option<usize>,
    steering: Option<&'a [SteeringSpec]>,
}

fn prepare(st: &AppState, c: Common<'_>, prompt: Vec<u32>) -> Result<Prepared, ApiError> {
    if c.model != st.model_name {
        return Err(ApiError::not_found(format!("the model `{}` is not served here; this server serves `{}`", c.model, st.model_name), "model_not_found"));
    }
    if c.n.unwrap_or(1) != 1 {
        return Err(ApiError::field("n", "only n = 1 is served (send several requests: they are batched)"));
    }
    for (name, v) in [("presence_penalty", c.presence_penalty), ("frequency_penalty", c.frequency_penalty)] {
        if v.unwrap_or(0.0) != 0.0 {
            return Err(ApiError::field(name, format!("{name} is not supported (only 0)")));
        }
    }
    let max_tokens = c.max_tokens.unwrap_or(c.default_max_tokens);
    if max_tokens == 0 {
        return Err(ApiError::field("max_tokens", "max_tokens must be at least 1"));
    }
    if max_tokens > st.limits.max_tokens_limit {
        return Err(ApiError::field("max_tokens", format!("max_tokens is {max_tokens}; this server allows at most {}", st.limits.max_tokens_limit)));
    }
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt has no tokens"));
    }
    if prompt.len() > st.limits.max_prompt_tokens {
        return Err(ApiError::invalid(format!("the prompt has {} tokens; this server allows at most {}", prompt.len(), st.limits.max_prompt_tokens))
            .with_code("context_length_exceeded"));
    }
    let context = st.model.decoder().max_sequence();
    if prompt.len().saturating_add(max_tokens) > context {
        return Err(ApiError::invalid(format!(
            "the prompt ({} tokens) plus max_tokens ({max_tokens}) is longer than the model's context of {context} tokens",
            prompt.len()
        ))
        .with_code("context_length_exceeded"));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::field("temperature", format!("temperature must be in [0, 2], got {temperature}")));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::field("top_p", format!("top_p must be in (0, 1], got {top_p}")));
    }
    let sampling = if temperature == 0.0 {
        Sampling::Greedy
    } else {
        // Without a seed each request draws its own (not reproducible, as OpenAI's API).
        let seed = c.seed.map(|s| s as u64).unwrap_or_else(|| st.fresh_seed());
        Sampling::Sample { temperature, top_p, seed }
    };
    let stops = c.stop.map(StopSpec::into_vec).unwrap_or_default();
    if stops.len() > MAX_STOP_STRINGS {
        return Err(ApiError::field("stop", format!("at most {MAX_STOP_STRINGS} stop strings, got {}", stops.len())));
    }
    if let Some(k) = c.top_logprobs {
        if k > MAX_TOP_LOGPROBS {
            return Err(ApiError::field("top_logprobs", format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {k}")));
        }
    }
    let (hooks, applied) = st.vectors.hooks(&st.model, c.steering.unwrap_or_default())?;
    let stream = c.stream.unwrap_or(false);
    if c.stream_options.is_some() && !stream {
        return Err(ApiError::field("stream_options", "stream_options is only allowed with stream: true"));
    }
    let include_usage = c.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let prompt_tokens = prompt.len();
    let request = GenerationRequest { prompt, hooks, options: GenerateOptions { max_tokens, sampling, stop_tokens: st.model.stop_tokens().to_vec() } };
    Ok(Prepared { request, top_logprobs: c.top_logprobs, stops, stream, include_usage, applied, prompt_tokens })
}

/// Render chat messages with the model's template and tokenize them.
fn chat_prompt(st: &AppState, req: &ChatCompletionRequest) -> Result<Vec<u32>, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::field("messages", "messages must hold at least one message"));
    }
    let mut msgs = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => return Err(ApiError::field(&format!("messages[{i}].role"), format!("unknown role `{other}` (system, developer, user, assistant)"))),
        };
        let content = match &m.content {
            MessageContent::Text(t) => t.clone(),
            MessageContent::Parts(parts) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        ("text", None) => return Err(ApiError::field(&format!("messages[{i}].content[{j}].text"), "a text part needs `text`")),
                        (other, _) => {
                            return Err(ApiError::field(
                                &format!("messages[{i}].content[{j}].type"),
                                format!("content parts of type `{other}` are not served (text only)"),
                            ))
                        }
                    }
                }
                text
            }
        };
        msgs.push(Message::new(role, &content));
    }
    let tmpl = st.model.chat_template();
    let rendered = tmpl.render(&msgs, true).map_err(|e| ApiError::field("messages", format!("the chat template cannot render these messages: {e}")))?;
    // With a template the rendered text carries its special tokens (as transformers'
    // apply_chat_template); the plain fallback gets the model's default ones.
    st.model.tokenizer().encode(&rendered, !tmpl.has_template()).map_err(|e| ApiError::invalid(format!("cannot tokenize the messages: {e}")))
}

async fn chat_completions(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: ChatCompletionRequest = match parse_body(body, st.limits.max_body_bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.top_logprobs.is_some() && req.logprobs != Some(true) {
        return ApiError::field("top_logprobs", "top_logprobs needs logprobs: true").into_response();
    }
    let top = if req.logprobs == Some(true) { Some(req.top_logprobs.unwrap_or(0)) } else { None };
    let prompt = match chat_prompt(&st, &req) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let common = Common {
        model: &req.model,
        n: req.n,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        default_max_tokens: st.limits.default_max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stop: req.stop,
        stream: req.stream,
        stream_options: req.stream_options,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        top_logprobs: top,
        steering: req.steering.as_deref(),
    };
    run(st.clone(), prepare(&st, common, prompt), Kind::Chat).await
}

async fn completions(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: CompletionRequest = match parse_body(body, st.limits.max_body_bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.echo == Some(true) {
        return ApiError::field("echo", "echo is not supported").into_response();
    }
    let text = match &req.prompt {
        PromptSpec::One(s) => s.clone(),
        PromptSpec::Many(v) if v.len() == 1 => v[0].clone(),
        PromptSpec::Many(v) => {
            return ApiError::field("prompt", format!("one prompt per request (got {}); send several requests: they are batched", v.len())).into_response()
        }
    };
    if text.is_empty() {
        return ApiError::field("prompt", "the prompt is empty").into_response();
    }
    let prompt = match st.model.tokenizer().encode(&text, true) {
        Ok(p) => p,
        Err(e) => return ApiError::invalid(format!("cannot tokenize the prompt: {e}")).into_response(),
    };
    let common = Common {
        model: &req.model,
        n: req.n,
        max_tokens: req.max_tokens,
        // OpenAI's default for this endpoint.
        default_max_tokens: 16,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stop: req.stop,
        stream: req.stream,
        stream_options: req.stream_options,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        top_logprobs: req.logprobs,
        steering: req.steering.as_deref(),
    };
    run(st.clone(), prepare(&st, common, prompt), Kind::Completion).await
}

/// Which endpoint's wire format.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
        FinishReason::NonFinite => "error",
    }
}

/// What a request whose logits became NaN or infinite is answered (never an answer made of them).
fn non_finite(p: &Prepared, produced: usize) -> ApiError {
    let steering: Vec<String> = p.applied.iter().map(|a| format!("{} x {} ({} at {})", a.beta, a.vector, a.intervention, a.hook)).collect();
    let with = if steering.is_empty() { "without steering".to_string() } else { format!("with steering {}", steering.join(", ")) };
    ApiError::non_finite(format!(
        "the logits became NaN or infinite after {produced} generated tokens {with}: the steering overflows the model's numbers; lower beta"
    ))
}

/// Admit, submit, and answer in full or as a stream.
async fn run(st: Arc<AppState>, prepared: Result<Prepared, ApiError>, kind: Kind) -> Response {
    let p = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let permit = match st.engine.admit() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let ticket = match st.engine.submit(p.request.clone(), p.top_logprobs, permit) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let id = st.response_id(kind == Kind::Chat);
    let started = Instant::now();
    if p.stream {
        return stream_response(st, p, ticket, id, kind).into_response();
    }
    match collect(&st, &p, ticket).await {
        Err(e) => e.into_response(),
        Ok((transcript, finish)) => {
            let usage = Usage::new(p.prompt_tokens, transcript.produced);
            tracing::info!(
                id,
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                finish,
                seconds = started.elapsed().as_secs_f64(),
                steered = !p.applied.is_empty(),
                "request done"
            );
            let lcross = LcrossInfo { steering: p.applied.clone() };
            let body = match kind {
                Kind::Chat => {
                    let logprobs = p.top_logprobs.map(|_| json!({"content": transcript.chat_logprobs(0)}));
                    json!({
                        "id": id, "object": "chat.completion", "created": now(), "model": st.model_name,
                        "system_fingerprint": st.fingerprint,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": transcript.text()}, "logprobs": logprobs, "finish_reason": finish}],
                        "usage": usage, "lcross": lcross,
                    })
                }
                Kind::Completion => {
                    let logprobs = p.top_logprobs.map(|_| json!(transcript.completion_logprobs(0, 0)));
                    json!({
                        "id": id, "object": "text_completion", "created": now(), "model": st.model_name,
                        "system_fingerprint": st.fingerprint,
                        "choices": [{"index": 0, "text": transcript.text(), "logprobs": logprobs, "finish_reason": finish}],
                        "usage": usage, "lcross": lcross,
                    })
                }
            };
            Json(body).into_response()
        }
    }
}

/// Read a request's events to the end (or to a stop string).
async fn collect(st: &Arc<AppState>, p: &Prepared, mut ticket: Ticket) -> Result<(Transcript, &'static str), ApiError> {
    let mut transcript = Transcript::new(st.model.clone(), p.stops.clone());
    loop {
        match ticket.events.recv().await {
            Some(EngineEvent::Token { id, logprob }) => {
                let d =
                    transcript.push(id, logprob).map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot decode the answer: {e}")))?;
                if d.stopped {
                    // Dropping the ticket cancels the row before the next step.
                    return Ok((transcript, "stop"));
                }
            }
            Some(EngineEvent::Finished(FinishReason::NonFinite)) => return Err(non_finite(p, transcript.produced)),
            Some(EngineEvent::Finished(r)) => {
                transcript.finish();
                return Ok((transcript, finish_name(r)));
            }
            Some(EngineEvent::Rejected(why)) => return Err(ApiError::invalid(why)),
            Some(EngineEvent::Failed(why)) => return Err(ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, why)),
            None => return Err(ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "the generation engine stopped")),
        }
    }
}

/// Server-sent events of one request; dropping the stream (client gone) cancels it.
fn stream_response(st: Arc<AppState>, p: Prepared, ticket: Ticket, id: String, kind: Kind) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let state = StreamState {
        transcript: Transcript::new(st.model.clone(), p.stops.clone()),
        st,
        p,
        ticket: Some(ticket),
        id,
        kind,
        phase: Phase::Start,
        sent_logprobs: 0,
        sent_bytes: 0,
        started: Instant::now(),
        created: now(),
    };
    let events =
        stream::unfold(state, |mut s| async move { s.next().await.map(|evs| (evs, s)) }).flat_map(|evs| stream::iter(evs.into_iter().map(Ok::<_, Infallible>)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[derive(PartialEq)]
enum Phase {
    Start,
    Running,
    Done,
}

struct StreamState {
    st: Arc<AppState>,
    p: Prepared,
    ticket: Option<Ticket>,
    transcript: Transcript,
    id: String,
    kind: Kind,
    phase: Phase,
    sent_logprobs: usize,
    sent_bytes: usize,
    started: Instant,
    /// `created` of every chunk (one value per response, as OpenAI sends).
    created: u64,
}

impl StreamState {
    /// One chunk object with `text` (or the role, for the chat's first chunk).
    fn chunk(&mut self, text: Option<&str>, finish: Option<&str>, first: bool) -> Event {
        let with_logprobs = self.p.top_logprobs.is_some() && !first && self.transcript.logprobs.len() > self.sent_logprobs;
        let created = self.created;
        let body = match self.kind {
            Kind::Chat => {
                let delta = match (first, text) {
                    (true, _) => json!({"role": "assistant", "content": ""}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                let logprobs = with_logprobs.then(|| json!({"content": self.transcript.chat_logprobs(self.sent_logprobs)}));
                json!({"id": self.id, "object": "chat.completion.chunk", "created": created, "model": self.st.model_name,
                       "system_fingerprint": self.st.fingerprint,
                       "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]})
            }
            Kind::Completion => {
                let logprobs = with_logprobs.then(|| json!(self.transcript.completion_logprobs(self.sent_logprobs, self.sent_bytes)));
                json!({"id": self.id, "object": "text_completion", "created": created, "model": self.st.model_name,
                       "system_fingerprint": self.st.fingerprint,
                       "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish}]})
            }
        };
        if with_logprobs {
            self.sent_logprobs = self.transcript.logprobs.len();
        }
        self.sent_bytes += text.map_or(0, str::len);
        Event::default().data(body.to_string())
    }

    /// The closing events: the last text with the finish reason, usage, `[DONE]`.
    fn close(&mut self, rest: String, finish: &str) -> Vec<Event> {
        self.ticket = None;
        self.phase = Phase::Done;
        let mut out = vec![self.chunk(if rest.is_empty() { None } else { Some(&rest) }, Some(finish), false)];
        let usage = Usage::new(self.p.prompt_tokens, self.transcript.produced);
        tracing::info!(
            id = self.id,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            finish,
            seconds = self.started.elapsed().as_secs_f64(),
            steered = !self.p.applied.is_empty(),
            "stream done"
        );
        if self.p.include_usage {
            let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
            let body = json!({"id": self.id, "object": object, "created": self.created, "model": self.st.model_name, "system_fingerprint": self.st.fingerprint,
                              "choices": [], "usage": usage, "lcross": LcrossInfo { steering: self.p.applied.clone() }});
            out.push(Event::default().data(body.to_string()));
        }
        out.push(Event::default().data("[DONE]"));
        out
    }

    async fn next(&mut self) -> Option<Vec<Event>> {
        match self.phase {
            Phase::Done => None,
            Phase::Start => {
                self.phase = Phase::Running;
                Some(if self.kind == Kind::Chat { vec![self.chunk(None, None, true)] } else { Vec::new() })
            }
            Phase::Running => loop {
                let ev = self.ticket.as_mut()?.events.recv().await;
                match ev {
                    Some(EngineEvent::Token { id, logprob }) => match self.transcript.push(id, logprob) {
                        Err(e) => return Some(self.fail(format!("cannot decode the answer: {e}"))),
                        Ok(d) if d.stopped => return Some(self.close(d.text, "stop")),
                        Ok(d) => {
                            let new_logprobs = self.p.top_logprobs.is_some() && self.transcript.logprobs.len() > self.sent_logprobs;
                            if !d.text.is_empty() || new_logprobs {
                                return Some(vec![self.chunk(Some(&d.text), None, false)]);
                            }
                        }
                    },
                    Some(EngineEvent::Finished(FinishReason::NonFinite)) => {
                        let error = non_finite(&self.p, self.transcript.produced);
                        return Some(self.fail_with(error));
                    }
                    Some(EngineEvent::Finished(r)) => {
                        let rest = self.transcript.finish();
                        return Some(self.close(rest, finish_name(r)));
                    }
                    Some(EngineEvent::Failed(why)) | Some(EngineEvent::Rejected(why)) => return Some(self.fail(why)),
                    None => return Some(self.fail("the generation engine stopped".into())),
                }
            },
        }
    }

    /// A server error object as the last event (the status line is already sent).
    fn fail(&mut self, why: String) -> Vec<Event> {
        self.fail_with(ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, why))
    }

    /// An error object as the last event.
    fn fail_with(&mut self, error: ApiError) -> Vec<Event> {
        self.ticket = None;
        self.phase = Phase::Done;
        tracing::warn!(id = self.id, error = %error.message, "stream failed");
        vec![Event::default().data(error.body().to_string()), Event::default().data("[DONE]")]
    }
}
