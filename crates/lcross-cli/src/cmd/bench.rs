//! `lcross bench`: load time, prefill and decode speed, peak memory, per model and
//! weight mode, each measured in a fresh child process so peak RSS is its own. With
//! `--peer PYTHON`, the same measurements from transformers (f32) in the same run.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_model::registry::{known_path, models_dir, KNOWN_MODELS};
use lcross_model::WeightMode;
use serde::Serialize;

use crate::bench::serve::ServeBenchArgs;
use crate::bench::speed::{fit_timings, machine, measure_here, measure_in_child, measure_transformers, speed_table, BenchRow, SpeedSize};
use crate::bench::workload::{run_workload, WorkloadSize};
use crate::common::Context;

#[derive(Args)]
pub struct BenchArgs {
    /// Models to measure (default: every fetched known model).
    #[arg(long, short, value_delimiter = ',')]
    models: Vec<String>,
    /// Weight modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "f32,quantized")]
    modes: Vec<String>,
    /// Prompt length for prefill.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens to decode.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also measure the peer with this Python: transformers (needs torch + transformers),
    /// or with --fit numpy (needs numpy).
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Write the Markdown table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure fitting maps instead (d_s = 896, d_t = 1536, n = 2000, synthetic data).
    #[arg(long)]
    fit: bool,
    /// Internal: measure one model in this process.
    #[arg(long, hide = true)]
    single: bool,
    /// Time one workload on the first --models instead (extract, ab, generate,
    /// generate-serial, decode); prints one JSON row. Driven by scripts/bench/peers.py.
    #[arg(long)]
    workload: Option<String>,
    /// Layer of the workload (captures and steering).
    #[arg(long, default_value_t = 14)]
    layer: usize,
    /// Items of the workload: pairs, questions or prompts.
    #[arg(long, default_value_t = 32)]
    items: usize,
    /// New tokens per prompt of the generation workloads (and per request with --serve).
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Measure the HTTP server instead: tokens/s of --clients concurrent steered clients
    /// (each its own beta) on the first --models.
    #[arg(long)]
    serve: bool,
    /// Concurrent clients to measure with --serve (must start with 1).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    clients: Vec<usize>,
    /// Requests each client sends one after another (--serve).
    #[arg(long, default_value_t = 2)]
    requests_per_client: usize,
    /// Rows the server decodes together (--serve; default: the most clients).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Also drive this OpenAI-compatible server (base URL with /v1), e.g. llama.cpp's
    /// (scripts/bench/serve_peer.sh starts one).
    #[arg(long)]
    peer_url: Option<String>,
    /// Model name to send to the peer (default: the model's id).
    #[arg(long)]
    peer_model: Option<String>,
}

pub fn run(ctx: &Context, a: BenchArgs) -> Result<()> {
    if a.fit {
        let r = fit_timings(a.repeat, a.peer.as_deref())?;
        return ctx.print(&r, || {
            println!("Machine: {}. Fit T: n = {}, d_s = {}, d_t = {}, f64, median of {}.", r.machine, r.n, r.d_s, r.d_t, a.repeat);
            if let Some(numpy) = &r.numpy {
                println!("Peer: numpy {numpy} in the same run (OLS = pinv(X) @ Y, Procrustes = SVD of X^T Y; same shapes).");
            }
            println!("\n| estimator | fit T, s | fit + train/held-out R^2, s | numpy fit, s |\n|---|---:|---:|---:|");
            for row in &r.rows {
                let np = row.numpy_seconds.map_or("-".into(), |s| format!("{s:.2}"));
                println!("| {} | {:.2} | {:.2} | {np} |", row.estimator, row.fit_seconds, row.with_diagnostics_seconds);
            }
        });
    }
    if a.serve {
        let model = a.models.first().map_or(lcross_model::DEFAULT_MODEL, String::as_str);
        let args = ServeBenchArgs {
            model,
            clients: &a.clients,
            requests_per_client: a.requests_per_client.max(1),
            new_tokens: a.new_tokens,
            batch_size: a.batch_size,
            peer_url: a.peer_url.as_deref(),
            peer_model: a.peer_model.as_deref(),
        };
        return crate::bench::serve::run(ctx, &args, a.out.as_deref(), &machine());
    }
    if let Some(w) = &a.workload {
        let spec = a.models.first().context("--workload needs one --models")?;
        let size = WorkloadSize { items: a.items, new_tokens: a.new_tokens };
        let row = run_workload(ctx, spec, a.layer, w, size)?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let modes: Vec<WeightMode> = a.modes.iter().map(|m| WeightMode::parse(m).with_context(|| format!("unknown weight mode `{m}`"))).collect::<Result<_>>()?;
    let size =
        SpeedSize { prompt_tokens: a.prompt_tokens, decode_tokens: a.decode_tokens, repeat: a.repeat, device: ctx.device.clone(), dtype: ctx.dtype.clone() };
    if a.single {
        let spec = a.models.first().context("--single needs one --models")?;
        let row = measure_here(spec, modes[0], &size)?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let models: Vec<String> = if a.models.is_empty() {
        KNOWN_MODELS.iter().filter(|m| known_path(&models_dir(), m.id).is_file()).map(|m| m.id.to_string()).collect()
    } else {
        a.models.clone()
    };
    if models.is_empty() {
        bail!("no models to measure: fetch them with `lcross models fetch`");
    }
    let mut rows = Vec::new();
    let bar = indicatif::ProgressBar::new((models.len() * (modes.len() + a.peer.is_some() as usize)) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("static template"));
    for m in &models {
        for mode in &modes {
            bar.set_message(format!("{m} ({mode:?})"));
            rows.push(measure_in_child(m, *mode, &size)?);
            bar.inc(1);
        }
        if let Some(py) = &a.peer {
            bar.set_message(format!("{m} (transformers)"));
            rows.push(measure_transformers(py, m, &size)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let machine = machine();
    let md = speed_table(&machine, &size, &rows);
    if let Some(path) = &a.out {
        lcross_fs::write_atomic(path, md.as_bytes())?;
    }
    #[derive(Serialize)]
    struct Out<'a> {
        machine: String,
        rows: &'a [BenchRow],
    }
    ctx.print(&Out { machine, rows: &rows }, || print!("{md}"))
}
