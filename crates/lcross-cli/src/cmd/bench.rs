//! `lcross bench`: load time, prefill and decode speed, peak memory, per model and
//! weight mode, each measured in a fresh child process so peak RSS is its own. With
//! `--peer PYTHON`, the same measurements from transformers (f32) in the same run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_model::registry::{known_path, models_dir, KNOWN_MODELS};
use lcross_model::{Hooks, LoadOptions, Logits, Model, WeightMode};
use serde::{Deserialize, Serialize};

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

#[derive(Serialize, Deserialize, Clone)]
pub struct BenchRow {
    pub engine: String,
    pub model: String,
    pub mode: String,
    pub load_seconds: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub peak_rss_mib: f64,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A prompt of exactly `n` tokens made of ordinary English.
fn bench_prompt(model: &Model, n: usize) -> Result<Vec<u32>> {
    let text = "The history of science is the study of how people came to understand the natural world, from early astronomy and medicine to modern physics and biology. ";
    let mut ids = model.tokenizer().encode(text, true)?;
    let unit = model.tokenizer().encode(text, false)?;
    while ids.len() < n {
        ids.extend(&unit);
    }
    ids.truncate(n);
    Ok(ids)
}

fn measure_here(spec: &str, mode: WeightMode, a: &BenchArgs) -> Result<BenchRow> {
    let start = Instant::now();
    let model = Model::load(spec, &LoadOptions { weight_mode: mode, ..LoadOptions::default() })?;
    let load_seconds = start.elapsed().as_secs_f64();
    let ids = bench_prompt(&model, a.prompt_tokens)?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..a.repeat.max(1) {
        let mut cache = model.new_cache();
        let t = Instant::now();
        let out = model.forward(&ids, Some(&mut cache), &Hooks::none(), Logits::Last)?;
        prefill.push(ids.len() as f64 / t.elapsed().as_secs_f64());
        let mut next = lcross_model::argmax(&out.logits.expect("logits").to_vec1::<f32>()?) as u32;
        let t = Instant::now();
        for _ in 0..a.decode_tokens {
            let out = model.forward(&[next], Some(&mut cache), &Hooks::none(), Logits::Last)?;
            next = lcross_model::argmax(&out.logits.expect("logits").to_vec1::<f32>()?) as u32;
        }
        decode.push(a.decode_tokens as f64 / t.elapsed().as_secs_f64());
    }
    Ok(BenchRow {
        engine: "lcross".into(),
        model: model.id().to_string(),
        mode: format!("{mode:?}").to_lowercase(),
        load_seconds,
        prefill_tokens_per_second: median(prefill),
        decode_tokens_per_second: median(decode),
        peak_rss_mib: peak_rss_mib(),
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0));
    format!("{cpu}, {cores} cores, {mem} RAM")
}

/// The transformers peer (scripts/bench/peer_transformers.py, embedded in the binary so
/// it runs outside the source tree).
fn peer_script() -> Result<PathBuf> {
    embedded_script("peer_transformers.py", include_str!("../../../../scripts/bench/peer_transformers.py"))
}

/// Write an embedded script to a file of this process in the temporary directory.
fn embedded_script(name: &str, text: &str) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("lcross-{}-{name}", std::process::id()));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Time fitting T on synthetic data of the size, per estimator.
fn bench_fit(ctx: &Context, a: &BenchArgs) -> Result<()> {
    use lcross_core::maps::{fit, Estimator, Rows};
    use rand::{Rng, SeedableRng};
    let (n, ds, dt) = (2000usize, 896usize, 1536usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<Vec<f32>> = (0..n).map(|_| (0..ds).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
    let y: Vec<Vec<f32>> = (0..n).map(|_| (0..dt).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
    let (xr, yr) = (Rows::from_f32(&x)?, Rows::from_f32(&y)?);
    #[derive(Serialize)]
    struct Row {
        estimator: String,
        fit_seconds: f64,
        with_diagnostics_seconds: f64,
        /// The numpy peer's fit of the same estimator, when measured.
        numpy_seconds: Option<f64>,
    }
    let mut rows = Vec::new();
    let peer = match &a.peer {
        Some(py) => Some(numpy_fit_peer(py, (n, ds, dt), a.repeat)?),
        None => None,
    };
    // (label, estimator, the peer's time for the same estimator if it has one)
    let estimators = [
        ("OLS", Estimator::Ols, peer.as_ref().and_then(|p| p.ols_seconds)),
        ("ridge (lambda chosen on held-out)", Estimator::Ridge { lambda: None }, None),
        ("Procrustes", Estimator::Procrustes, peer.as_ref().and_then(|p| p.procrustes_seconds)),
    ];
    for (label, est, numpy_seconds) in estimators {
        let mut times = Vec::new();
        let mut total = Vec::new();
        for _ in 0..a.repeat.max(1) {
            let t = Instant::now();
            let (_, d) = fit(&xr, &yr, &est)?;
            total.push(t.elapsed().as_secs_f64());
            times.push(d.seconds);
        }
        rows.push(Row { estimator: label.into(), fit_seconds: median(times), with_diagnostics_seconds: median(total), numpy_seconds });
    }
    let machine = machine();
    let out = serde_json::json!({ "machine": machine, "n": n, "d_s": ds, "d_t": dt, "rows": rows, "numpy": peer.as_ref().map(|p| p.numpy.clone()) });
    ctx.print(&out, || {
        println!("Machine: {machine}. Fit T: n = {n}, d_s = {ds}, d_t = {dt}, f64, median of {}.", a.repeat);
        if let Some(p) = &peer {
            println!("Peer: numpy {} in the same run (OLS = pinv(X) @ Y, Procrustes = SVD of X^T Y; same shapes).", p.numpy);
        }
        println!("\n| estimator | fit T, s | fit + train/held-out R^2, s | numpy fit, s |\n|---|---:|---:|---:|");
        for r in &rows {
            let np = r.numpy_seconds.map_or("-".into(), |s| format!("{s:.2}"));
            println!("| {} | {:.2} | {:.2} | {np} |", r.estimator, r.fit_seconds, r.with_diagnostics_seconds);
        }
    })
}

/// What `scripts/bench/peer_numpy_fit.py` prints.
#[derive(Deserialize)]
struct NumpyFit {
    numpy: String,
    ols_seconds: Option<f64>,
    procrustes_seconds: Option<f64>,
}

/// Time numpy fitting maps of the same shapes with `python`.
fn numpy_fit_peer(python: &std::path::Path, (n, ds, dt): (usize, usize, usize), repeat: usize) -> Result<NumpyFit> {
    let script = embedded_script("peer_numpy_fit.py", include_str!("../../../../scripts/bench/peer_numpy_fit.py"))?;
    let out = Command::new(python)
        .arg(&script)
        .args([n.to_string(), ds.to_string(), dt.to_string(), repeat.max(1).to_string()])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("numpy peer ({}): {}", python.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("numpy peer output: {last}"))
}

pub fn run(ctx: &Context, a: BenchArgs) -> Result<()> {
    if a.fit {
        return bench_fit(ctx, &a);
    }
    if a.serve {
        let model = a.models.first().map_or(lcross_model::DEFAULT_MODEL, String::as_str);
        let args = crate::cmd::bench_serve::ServeBenchArgs {
            model,
            clients: &a.clients,
            requests_per_client: a.requests_per_client.max(1),
            new_tokens: a.new_tokens,
            batch_size: a.batch_size,
            peer_url: a.peer_url.as_deref(),
            peer_model: a.peer_model.as_deref(),
        };
        return crate::cmd::bench_serve::run(ctx, &args, a.out.as_deref(), &machine());
    }
    if let Some(w) = &a.workload {
        let spec = a.models.first().context("--workload needs one --models")?;
        let size = crate::cmd::workload::WorkloadSize { items: a.items, new_tokens: a.new_tokens };
        let row = crate::cmd::workload::run_workload(ctx, spec, a.layer, w, size)?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let modes: Vec<WeightMode> = a.modes.iter().map(|m| WeightMode::parse(m).with_context(|| format!("unknown weight mode `{m}`"))).collect::<Result<_>>()?;
    if a.single {
        let spec = a.models.first().context("--single needs one --models")?;
        let row = measure_here(spec, modes[0], &a)?;
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
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    let bar = indicatif::ProgressBar::new((models.len() * (modes.len() + a.peer.is_some() as usize)) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("static template"));
    for m in &models {
        for mode in &modes {
            bar.set_message(format!("{m} ({mode:?})"));
            let out = Command::new(&exe)
                .args(["--weights", if *mode == WeightMode::F32 { "f32" } else { "quantized" }, "bench", "--single", "--models", m])
                .args(["--modes", if *mode == WeightMode::F32 { "f32" } else { "quantized" }])
                .args(["--prompt-tokens", &a.prompt_tokens.to_string(), "--decode-tokens", &a.decode_tokens.to_string(), "--repeat", &a.repeat.to_string()])
                .output()?;
            if !out.status.success() {
                bail!("measuring {m}: {}", String::from_utf8_lossy(&out.stderr));
            }
            rows.push(serde_json::from_slice::<BenchRow>(&out.stdout).with_context(|| format!("bench output of {m}"))?);
            bar.inc(1);
        }
        if let Some(py) = &a.peer {
            bar.set_message(format!("{m} (transformers)"));
            let out = Command::new(py)
                .arg(peer_script()?)
                .args([m.as_str(), &a.prompt_tokens.to_string(), &a.decode_tokens.to_string(), &a.repeat.to_string()])
                .output()
                .with_context(|| format!("running {}", py.display()))?;
            if !out.status.success() {
                bail!("peer on {m}: {}", String::from_utf8_lossy(&out.stderr));
            }
            let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
            rows.push(serde_json::from_str::<BenchRow>(&last).with_context(|| format!("peer output of {m}: {last}"))?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let machine = machine();
    let mut md = format!(
        "Machine: {machine}. Prompt {} tokens, decode {} tokens, median of {}.\n\n| engine | model | weights | load s | prefill tok/s | decode tok/s | peak RSS MiB |\n|---|---|---|---:|---:|---:|---:|\n",
        a.prompt_tokens, a.decode_tokens, a.repeat
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.0} |\n",
            r.engine, r.model, r.mode, r.load_seconds, r.prefill_tokens_per_second, r.decode_tokens_per_second, r.peak_rss_mib
        ));
    }
    if let Some(path) = &a.out {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    #[derive(Serialize)]
    struct Out<'a> {
        machine: String,
        rows: &'a [BenchRow],
    }
    ctx.print(&Out { machine, rows: &rows }, || print!("{md}"))
}
