//! `lcross bench --serve`: tokens/s of the OpenAI-compatible server with 1, 4, 8, 16
//! concurrent clients, each steered its own way (own beta), against one client; with
//! `--peer-url`, the same clients against another OpenAI-compatible server (llama.cpp's,
//! unsteered: it cannot steer per request) in the same run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use lcross_core::steering::{pseudo_random_direction, SteeringVector, VectorMetadata};
use lcross_model::Model;
use lcross_serve::{Limits, RunningServer, ServeOptions, VectorRegistry};
use serde::Serialize;
use serde_json::{json, Value};

use crate::common::Context;

/// Prompts that invite long answers (text written for lcross).
const PROMPTS: [&str; 8] = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how bread rises, step by step, for a curious child.",
    "Describe a walk through a city market early in the morning.",
    "Write a letter from a gardener to the next owner of her garden.",
    "Tell the history of a fictional mountain village over three centuries.",
    "Explain why the sky changes colour at sunset.",
    "Describe the life of a river from its source to the sea.",
    "Write a diary entry of a ship's cook on a long voyage.",
];

/// One measured concurrency level of one engine.
#[derive(Serialize, Clone)]
pub struct ServeBenchRow {
    pub engine: String,
    pub clients: usize,
    pub steered: bool,
    pub requests: usize,
    pub completion_tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    /// Against the same engine with one client.
    pub speedup: f64,
    /// Median seconds from sending a request to its last token.
    pub median_latency_s: f64,
}

/// What the serve benchmark needs from `lcross bench`'s arguments.
pub struct ServeBenchArgs<'a> {
    pub model: &'a str,
    pub clients: &'a [usize],
    pub requests_per_client: usize,
    pub new_tokens: usize,
    pub batch_size: Option<usize>,
    pub peer_url: Option<&'a str>,
    pub peer_model: Option<&'a str>,
}

/// A unit-norm pseudo-random direction at the middle layer: steering costs the same
/// whatever the vector, and each client uses its own beta.
fn bench_vector(model: &Model) -> Result<SteeringVector> {
    let c = model.config();
    let layer = c.num_layers / 2;
    let mut metadata = VectorMetadata::made_by_hand(model.id(), &model.file_sha256()?, c.hidden_size, vec![layer], "bench", "pseudo-random unit direction");
    metadata.normalized = true;
    let v = pseudo_random_direction(c.hidden_size, 1, 1.0);
    Ok(SteeringVector { metadata, layers: BTreeMap::from([(layer, v)]) })
}

/// Run `clients` clients, each sending `per_client` requests one after another; total
/// completion tokens, wall seconds, median latency.
fn drive(base: &str, model_name: &str, clients: usize, per_client: usize, new_tokens: usize, steered: bool) -> Result<(usize, f64, f64)> {
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (base, name) = (base.to_string(), model_name.to_string());
            std::thread::spawn(move || -> Result<(usize, Vec<f64>)> {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(1800)).build()?;
                let mut tokens = 0;
                let mut latencies = Vec::new();
                for r in 0..per_client {
                    let prompt = PROMPTS[(i * per_client + r) % PROMPTS.len()];
                    let mut body = json!({"model": name, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": new_tokens});
                    if steered {
                        // Each client its own beta (small: the cost does not depend on it).
                        body["steering"] = json!([{"vector": "bench", "beta": (i as f64 - clients as f64 / 2.0) * 0.25}]);
                    }
                    let t = Instant::now();
                    let resp = client.post(format!("{base}/chat/completions")).json(&body).send()?;
                    let status = resp.status();
                    let v: Value = resp.json()?;
                    if !status.is_success() {
                        bail!("{base}: HTTP {status}: {v}");
                    }
                    latencies.push(t.elapsed().as_secs_f64());
                    tokens += v["usage"]["completion_tokens"].as_u64().with_context(|| format!("no usage in {v}"))? as usize;
                }
                Ok((tokens, latencies))
            })
        })
        .collect();
    let mut tokens = 0;
    let mut latencies = Vec::new();
    for h in handles {
        let (t, l) = h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        tokens += t;
        latencies.extend(l);
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((tokens, seconds, latencies[latencies.len() / 2]))
}

fn rows_for(engine: &str, base: &str, model_name: &str, a: &ServeBenchArgs<'_>, steered: bool) -> Result<Vec<ServeBenchRow>> {
    // Warm-up (first-call costs are not throughput).
    drive(base, model_name, 1, 1, 4, steered)?;
    let mut rows: Vec<ServeBenchRow> = Vec::new();
    for &n in a.clients {
        eprintln!("{engine}: {n} client(s) x {} request(s) x {} tokens", a.requests_per_client, a.new_tokens);
        let (tokens, seconds, latency) = drive(base, model_name, n, a.requests_per_client, a.new_tokens, steered)?;
        let tps = tokens as f64 / seconds;
        let single = rows.iter().find(|r| r.clients == 1).map_or(tps, |r| r.tokens_per_second);
        rows.push(ServeBenchRow {
            engine: engine.into(),
            clients: n,
            steered,
            requests: n * a.requests_per_client,
            completion_tokens: tokens,
            seconds,
            tokens_per_second: tps,
            speedup: tps / single,
            median_latency_s: latency,
        });
    }
    Ok(rows)
}

/// Measure lcross's server (in this process) and, optionally, a peer server.
pub fn run(ctx: &Context, a: &ServeBenchArgs<'_>, out: Option<&std::path::Path>, machine: &str) -> Result<()> {
    if a.clients.is_empty() || a.clients.contains(&0) {
        bail!("--clients needs counts of at least 1, e.g. 1,4,8,16");
    }
    if a.clients[0] != 1 {
        bail!("--clients must start with 1 (the single-client baseline)");
    }
    let model = Arc::new(ctx.load(a.model)?);
    let dir = std::env::temp_dir().join(format!("lcross-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.safetensors");
    bench_vector(&model)?.save(&path)?;
    let mut registry = VectorRegistry::new();
    registry.register("bench", &path, &model)?;
    let most = *a.clients.iter().max().unwrap_or(&1);
    let opts = ServeOptions {
        addr: "127.0.0.1:0".parse()?,
        batch_rows: a.batch_size.unwrap_or(most.max(1)),
        max_queue: most * 2,
        model_name: None,
        limits: Limits { max_tokens_limit: a.new_tokens.max(4), ..Limits::default() },
    };
    let server = RunningServer::start(model.clone(), registry, &opts)?;
    let mut rows = rows_for("lcross", &server.base_url(), model.id(), a, true)?;
    server.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(url) = a.peer_url {
        let name = a.peer_model.unwrap_or(model.id());
        rows.extend(rows_for("peer", url.trim_end_matches('/'), name, a, false)?);
    }
    let mut md = format!(
        "Serving {} ({}), {} new tokens per request (greedy; usage counts), {} requests per client, on {machine}.\n\n| engine | clients | steered | tokens | seconds | tokens/s | vs 1 client | median latency (s) |\n|---|---|---|---|---|---|---|---|\n",
        model.id(), ctx.numerics(), a.new_tokens, a.requests_per_client);
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2}x | {:.1} |\n",
            r.engine,
            r.clients,
            if r.steered { "each its own beta" } else { "no" },
            r.completion_tokens,
            r.seconds,
            r.tokens_per_second,
            r.speedup,
            r.median_latency_s
        ));
    }
    if let Some(p) = out {
        lcross_core::artifact::write_atomic(p, md.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    ctx.print(&json!({"rows": rows}), || println!("{md}"))
}
