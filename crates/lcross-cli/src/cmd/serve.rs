//! `lcross serve`: the model behind an OpenAI-compatible HTTP API with per-request
//! steering (see the lcross-serve crate).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_model::DEFAULT_MODEL;
use lcross_serve::{parse_vector_arg, Limits, ServeOptions, VectorRegistry};

use crate::common::Context;

#[derive(Args)]
pub struct ServeArgs {
    /// Model: a known id, a .gguf file or a Hugging Face model directory.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// A steering vector requests may use, as NAME=PATH (repeatable). It must belong to
    /// the served model (own or transferred to it); anything else is refused at start-up.
    #[arg(long = "vector", value_name = "NAME=PATH")]
    vectors: Vec<String>,
    /// Address to listen on (loopback by default; the API has no authentication).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Rows decoded together (default: what fits this machine, at most 32).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Requests that may wait for a row; more get 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 2048)]
    max_tokens_limit: usize,
    /// max_tokens of a chat request that gives none.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Longest prompt in tokens (default: the model's context).
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds a client has to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a client has to send a whole request body (408 past it).
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// Connections open at once at most (more wait in the listen backlog).
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// The name clients give as `model` (default: the model's id).
    #[arg(long)]
    served_model_name: Option<String>,
}

pub fn run(ctx: &Context, a: ServeArgs) -> Result<()> {
    if a.max_tokens_limit == 0 || a.default_max_tokens == 0 || a.max_connections == 0 {
        bail!("--max-tokens-limit, --default-max-tokens and --max-connections must be at least 1");
    }
    let model = ctx.load(&a.model)?;
    let mut registry = VectorRegistry::new();
    for arg in &a.vectors {
        let (name, path) = parse_vector_arg(arg)?;
        registry.register(&name, &path, &model).with_context(|| format!("cannot serve --vector {arg}"))?;
    }
    let context = model.decoder().max_sequence();
    let batch_rows = match a.batch_size {
        Some(0) => bail!("--batch-size must be at least 1"),
        Some(n) => n,
        None => model.rows_that_fit(a.max_tokens_limit.min(context)),
    };
    let opts = ServeOptions {
        addr: SocketAddr::new(a.host, a.port),
        batch_rows,
        max_queue: a.max_queue,
        model_name: a.served_model_name,
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            max_prompt_tokens: a.max_prompt_tokens.unwrap_or(context).min(context),
            max_tokens_limit: a.max_tokens_limit,
            default_max_tokens: a.default_max_tokens.min(a.max_tokens_limit),
            header_timeout: seconds("--header-timeout", a.header_timeout)?,
            body_timeout: seconds("--body-timeout", a.body_timeout)?,
            max_connections: a.max_connections,
        },
    };
    tracing::info!(rows = batch_rows, queue = a.max_queue, "batching");
    lcross_serve::run_blocking(Arc::new(model), registry, &opts)?;
    Ok(())
}

/// A timeout flag in seconds: positive, finite, at most a day.
fn seconds(flag: &str, s: f64) -> Result<std::time::Duration> {
    if !(s > 0.0 && s <= 86_400.0) {
        bail!("{flag} {s}: expected seconds between 0 and 86400");
    }
    Ok(std::time::Duration::from_secs_f64(s))
}
