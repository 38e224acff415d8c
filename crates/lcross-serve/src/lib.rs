//! `lcross-serve`: a steered model behind the OpenAI API.
//!
//! - `GET /health`, `GET /v1/models`, `GET /v1/vectors` (registered vectors and their
//!   provenance), `POST /v1/chat/completions`, `POST /v1/completions` (plain JSON or
//!   `stream: true` as server-sent events, with `usage`, `logprobs`, `seed`, `stop`, ...).
//! - Per-request steering through an extra body field,
//!   `"steering": [{"vector": "refusal", "beta": -1.5}]` (several vectors add up;
//!   `"beta": "auto"` is the calibrated beta). Only vectors registered at start-up by
//!   name can be used, and each is checked against the served model then.
//! - Continuous batching: one engine thread drives the batched runtime
//!   ([`lcross_model::BatchGenerator`]); requests with different steering share decode
//!   steps, join between steps and leave when done; a client that goes away frees its
//!   row at the next step.
//!
//! Layout: [`api`] (wire types), [`routes`] (handlers), [`engine`] (the batching
//! thread), [`transcript`] (tokens to text, stop strings, logprobs), [`vectors`]
//! (the registry), [`state`] (shared state and limits), [`error`].

pub mod api;
pub mod engine;
pub mod error;
pub mod listen;
pub mod routes;
pub mod state;
pub mod transcript;
pub mod vectors;

use std::net::SocketAddr;
use std::sync::Arc;

use lcross_model::Model;

pub use engine::Engine;
pub use error::{ApiError, ServeError};
pub use routes::router;
pub use state::{AppState, Limits};
pub use vectors::{parse_vector_arg, VectorRegistry};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// Rows decoded together at most.
    pub batch_rows: usize,
    /// Requests that may wait for a row; past that a request gets a 429.
    pub max_queue: usize,
    /// Name clients give as `model` (default: the model's id).
    pub model_name: Option<String>,
    pub limits: Limits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 8080)), batch_rows: 16, max_queue: 64, model_name: None, limits: Limits::default() }
    }
}

/// The shared state of a server for `model` and its vectors (starts the engine).
pub fn build_state(model: Arc<Model>, vectors: VectorRegistry, opts: &ServeOptions) -> Arc<AppState> {
    let engine = Engine::start(model.clone(), opts.batch_rows, opts.max_queue);
    let name = opts.model_name.clone().unwrap_or_else(|| model.id().to_string());
    Arc::new(AppState::new(model, name, vectors, engine, opts.limits.clone()))
}

/// Serve until `shutdown` resolves (then finish open responses and return); see
/// [`listen::serve`] for the timeouts and the connection cap.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve(listener, state, shutdown).await
}

/// A server running on its own threads (tests, benchmarks, embedding).
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state (engine counters, limits).
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Bind `opts.addr` and serve on a background runtime.
    pub fn start(model: Arc<Model>, vectors: VectorRegistry, opts: &ServeOptions) -> Result<Self, ServeError> {
        let state = build_state(model, vectors, opts);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("lcross-http").enable_all().build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(opts.addr)).map_err(|source| ServeError::Bind { addr: opts.addr, source })?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new().name("lcross-server".into()).spawn(move || {
            runtime.block_on(serve(listener, thread_state, async {
                let _ = rx.await;
            }))
        })?;
        Ok(Self { addr, state, shutdown: Some(tx), thread: Some(thread) })
    }

    /// `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stop accepting, finish open responses, and join the server thread.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Serve in the foreground until Ctrl-C (the CLI's `lcross serve`).
pub fn run_blocking(model: Arc<Model>, vectors: VectorRegistry, opts: &ServeOptions) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("lcross-http").enable_all().build()?;
    let state = build_state(model, vectors, opts);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.addr).await.map_err(|source| ServeError::Bind { addr: opts.addr, source })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, model = state.model_name, vectors = state.vectors.len(), "serving");
        eprintln!("lcross serve: {} on http://{addr}/v1 ({} vectors: {})", state.model_name, state.vectors.len(), state.vectors.names().join(", "));
        serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("lcross serve: shutting down");
        })
        .await?;
        Ok::<(), ServeError>(())
    })
}
