//! What every request handler shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lcross_model::Model;

use crate::engine::Engine;
use crate::vectors::VectorRegistry;

/// Limits that keep one request from hurting the others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (bytes); larger ones get a 413.
    pub max_body_bytes: usize,
    /// Longest prompt (tokens).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// `max_tokens` of a chat request that gives none.
    pub default_max_tokens: usize,
    /// Longest wait for a request's headers, from the connection's first byte or the end
    /// of its previous response (an idle keep-alive connection is closed after it).
    pub header_timeout: std::time::Duration,
    /// Longest time to receive a whole request body; past it the request gets a 408 and
    /// the connection is closed.
    pub body_timeout: std::time::Duration,
    /// Connections open at once at most; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_prompt_tokens: 4096,
            max_tokens_limit: 2048,
            default_max_tokens: 256,
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// The server's shared state.
pub struct AppState {
    pub model: Arc<Model>,
    /// The name clients use in `model` (the model's id unless renamed).
    pub model_name: String,
    pub vectors: VectorRegistry,
    pub engine: Engine,
    pub limits: Limits,
    /// `system_fingerprint` of every response: lcross version and the runtime's numerics.
    pub fingerprint: String,
    /// Start time (Unix seconds), the `created` of `/v1/models`.
    pub started: u64,
    counter: AtomicU64,
}

impl AppState {
    /// State around a loaded model, its vectors and a started engine.
    pub fn new(model: Arc<Model>, model_name: String, vectors: VectorRegistry, engine: Engine, limits: Limits) -> Self {
        let fingerprint = format!("lcross-{}-{}", lcross_core::VERSION, lcross_model::RUNTIME_REVISION);
        Self { model, model_name, vectors, engine, limits, fingerprint, started: now(), counter: AtomicU64::new(0) }
    }

    /// A new response id.
    pub fn response_id(&self, chat: bool) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}{n:04x}", if chat { "chatcmpl" } else { "cmpl" }, self.started)
    }

    /// A sampling seed for a request that gives none: differs per request and per run.
    pub fn fresh_seed(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        // splitmix64 of time and counter
        let mut z = t ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
