//! The engine: one thread that owns the model's [`BatchGenerator`] and drives it step
//! by step (continuous batching). Requests arrive over a channel and join the running
//! batch between decode steps; each gets its tokens back over its own channel. A
//! request whose receiver is gone (the client disconnected, or a stop string ended it)
//! is cancelled before the next step, so its slot is free at once.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use lcross_model::{BatchGenerator, FinishReason, GenerationRequest, Model, TokenLogprob};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// What a request hears from the engine.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A new token (with its log-probabilities when asked for).
    Token { id: u32, logprob: Option<TokenLogprob> },
    /// The row is done.
    Finished(FinishReason),
    /// The runtime refused the request when it was submitted (its fault: a 400).
    Rejected(String),
    /// The request failed in a step (the server's fault: a 500).
    Failed(String),
}

enum Command {
    Submit { request: GenerationRequest, top_logprobs: Option<usize>, events: UnboundedSender<EngineEvent> },
    Shutdown,
}

/// Counters the engine keeps for `/health`.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub active: AtomicUsize,
    pub queued: AtomicUsize,
    pub steps: AtomicUsize,
    pub tokens: AtomicUsize,
    pub cache_bytes: AtomicUsize,
    pub alive: AtomicBool,
}

/// Handle to the engine thread.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    admission: Arc<Semaphore>,
    capacity: usize,
    stats: Arc<EngineStats>,
    thread: Option<JoinHandle<()>>,
}

/// A submitted request: its events, and its place in the server (released on drop).
pub struct Ticket {
    pub events: UnboundedReceiver<EngineEvent>,
    pub permit: OwnedSemaphorePermit,
}

impl Engine {
    /// Start the engine thread: at most `batch_rows` rows decode together, and up to
    /// `max_queue` more requests wait; past that `admit` refuses (429).
    pub fn start(model: Arc<Model>, batch_rows: usize, max_queue: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        stats.alive.store(true, Ordering::SeqCst);
        let thread_stats = stats.clone();
        let rows = batch_rows.max(1);
        let thread =
            std::thread::Builder::new().name("lcross-engine".into()).spawn(move || run(&model, rows, rx, &thread_stats)).expect("spawning the engine thread");
        let capacity = rows + max_queue;
        Self { commands: tx, admission: Arc::new(Semaphore::new(capacity)), capacity, stats, thread: Some(thread) }
    }

    /// Requests running or waiting at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Requests running or waiting now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }

    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Take a place for a request, or 429 when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.admission.clone().try_acquire_owned().map_err(|_| ApiError::busy(self.capacity))
    }

    /// Hand a request to the engine.
    pub fn submit(&self, request: GenerationRequest, top_logprobs: Option<usize>, permit: OwnedSemaphorePermit) -> Result<Ticket, ApiError> {
        let (tx, rx) = unbounded_channel();
        self.commands
            .send(Command::Submit { request, top_logprobs, events: tx })
            .map_err(|_| ApiError::server(axum::http::StatusCode::SERVICE_UNAVAILABLE, "the generation engine has stopped"))?;
        Ok(Ticket { events: rx, permit })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The engine loop.
fn run(model: &Model, rows: usize, commands: mpsc::Receiver<Command>, stats: &EngineStats) {
    let mut generator = BatchGenerator::new(model, rows);
    let mut routes: HashMap<u64, UnboundedSender<EngineEvent>> = HashMap::new();
    'serve: loop {
        // Wait for work when idle; otherwise take whatever arrived since the last step.
        if generator.is_idle() {
            match commands.recv() {
                Ok(c) => {
                    if !accept(&mut generator, &mut routes, c) {
                        break 'serve;
                    }
                }
                Err(_) => break 'serve,
            }
        }
        loop {
            match commands.try_recv() {
                Ok(c) => {
                    if !accept(&mut generator, &mut routes, c) {
                        break 'serve;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => break 'serve,
            }
        }
        // Free the slots of requests nobody listens to any more.
        let gone: Vec<u64> = routes.iter().filter(|(_, tx)| tx.is_closed()).map(|(&id, _)| id).collect();
        for id in gone {
            routes.remove(&id);
            if let Err(e) = generator.cancel(id) {
                tracing::warn!(id, error = %e, "cancelling a row failed; restarting the batch");
                fail_all(&mut routes, &format!("internal error: {e}"));
                generator = BatchGenerator::new(model, rows);
            }
        }
        if !generator.is_idle() {
            match std::panic::catch_unwind(AssertUnwindSafe(|| generator.step())) {
                Ok(Ok(events)) => {
                    stats.steps.fetch_add(1, Ordering::Relaxed);
                    for ev in events {
                        if let Some(id) = ev.token {
                            stats.tokens.fetch_add(1, Ordering::Relaxed);
                            if let Some(tx) = routes.get(&ev.id) {
                                let _ = tx.send(EngineEvent::Token { id, logprob: ev.logprob });
                            }
                        }
                        if let Some(reason) = ev.finished {
                            if let Some(tx) = routes.remove(&ev.id) {
                                let _ = tx.send(EngineEvent::Finished(reason));
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "a batched step failed; failing its rows");
                    fail_all(&mut routes, &format!("generation failed: {e}"));
                    generator = BatchGenerator::new(model, rows);
                }
                Err(panic) => {
                    let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    tracing::error!(panic = %what, "a batched step panicked; failing its rows");
                    fail_all(&mut routes, &format!("internal error in generation: {what}"));
                    generator = BatchGenerator::new(model, rows);
                }
            }
        }
        // An idle engine gives its KV cache back before it says it is idle: the cache
        // size is published before the row counts (all SeqCst, read in the opposite order
        // by `/health`), so a reader that sees no rows also sees the freed cache.
        if generator.is_idle() && generator.release_cache() {
            return_freed_memory();
        }
        stats.cache_bytes.store(generator.cache_bytes(), Ordering::SeqCst);
        stats.queued.store(generator.queued(), Ordering::SeqCst);
        stats.active.store(generator.active(), Ordering::SeqCst);
    }
    stats.alive.store(false, Ordering::SeqCst);
    fail_all(&mut routes, "the server is shutting down");
}

/// Take one command; false on shutdown.
fn accept(generator: &mut BatchGenerator<'_>, routes: &mut HashMap<u64, UnboundedSender<EngineEvent>>, command: Command) -> bool {
    match command {
        Command::Shutdown => false,
        Command::Submit { request, top_logprobs, events } => {
            if events.is_closed() {
                return true;
            }
            match generator.submit_with_logprobs(request, top_logprobs) {
                Ok(id) => {
                    routes.insert(id, events);
                }
                Err(e) => {
                    let _ = events.send(EngineEvent::Rejected(e.to_string()));
                }
            }
            true
        }
    }
}

/// Hand memory the allocator kept after a busy period back to the OS (glibc keeps
/// freed blocks in its arenas, so a server's resident size would stay at its peak).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn fail_all(routes: &mut HashMap<u64, UnboundedSender<EngineEvent>>, why: &str) {
    for (_, tx) in routes.drain() {
        let _ = tx.send(EngineEvent::Failed(why.to_string()));
    }
}
