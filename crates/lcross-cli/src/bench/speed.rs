//! Speed of the runtime (load, prefill, decode, peak memory) and of fitting maps, with
//! the peers (transformers, numpy) measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use lcross_model::{Hooks, LoadOptions, Logits, Model, WeightMode};
use serde::{Deserialize, Serialize};

/// Prompt and decode lengths of a speed measurement and its repetitions.
pub struct SpeedSize {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeat: usize,
    /// Where the model runs (`--device`) and in which compute dtype (`--dtype`).
    pub device: String,
    pub dtype: String,
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

pub fn median(mut v: Vec<f64>) -> f64 {
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

/// Load `spec` in this process and time prefill and decode (medians of `size.repeat`).
pub fn measure_here(spec: &str, mode: WeightMode, size: &SpeedSize) -> Result<BenchRow> {
    let a = size;
    let start = Instant::now();
    let opts = LoadOptions { weight_mode: mode, device: lcross_model::parse_device(&a.device)?, dtype: lcross_model::parse_dtype(&a.dtype)? };
    let model = Model::load(spec, &opts)?;
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
        mode: match (a.dtype.as_str(), a.device.as_str()) {
            ("f32", "cpu") => format!("{mode:?}").to_lowercase(),
            (dtype, device) => format!("{mode:?}, {dtype} on {device}").to_lowercase(),
        },
        load_seconds,
        prefill_tokens_per_second: median(prefill),
        decode_tokens_per_second: median(decode),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// CPU, cores and memory of this machine, for the tables.
pub fn machine() -> String {
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

/// One estimator's fit times of [`fit_timings`].
#[derive(Serialize)]
pub struct FitRow {
    pub estimator: String,
    pub fit_seconds: f64,
    pub with_diagnostics_seconds: f64,
    /// The numpy peer's fit of the same estimator, when measured.
    pub numpy_seconds: Option<f64>,
}

/// What `lcross bench --fit` measured.
#[derive(Serialize)]
pub struct FitReport {
    pub machine: String,
    pub n: usize,
    pub d_s: usize,
    pub d_t: usize,
    pub rows: Vec<FitRow>,
    /// The numpy version of the peer, when measured.
    pub numpy: Option<String>,
}

/// Time fitting T on synthetic data of the size, per estimator (medians of
/// `repeat`), with numpy's fits of the same shapes when `peer` (a Python) is given.
pub fn fit_timings(repeat: usize, peer: Option<&Path>) -> Result<FitReport> {
    use lcross_core::maps::{fit, Estimator, Rows};
    use rand::{Rng, SeedableRng};
    let (n, ds, dt) = (2000usize, 896usize, 1536usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<Vec<f32>> = (0..n).map(|_| (0..ds).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
    let y: Vec<Vec<f32>> = (0..n).map(|_| (0..dt).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
    let (xr, yr) = (Rows::from_f32(&x)?, Rows::from_f32(&y)?);
    let peer = match peer {
        Some(py) => Some(numpy_fit_peer(py, (n, ds, dt), repeat)?),
        None => None,
    };
    // (label, estimator, the peer's time for the same estimator if it has one)
    let estimators = [
        ("OLS", Estimator::Ols, peer.as_ref().and_then(|p| p.ols_seconds)),
        ("ridge (lambda chosen on held-out)", Estimator::Ridge { lambda: None }, None),
        ("Procrustes", Estimator::Procrustes, peer.as_ref().and_then(|p| p.procrustes_seconds)),
    ];
    let mut rows = Vec::new();
    for (label, est, numpy_seconds) in estimators {
        let mut times = Vec::new();
        let mut total = Vec::new();
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let (_, d) = fit(&xr, &yr, &est)?;
            total.push(t.elapsed().as_secs_f64());
            times.push(d.seconds);
        }
        rows.push(FitRow { estimator: label.into(), fit_seconds: median(times), with_diagnostics_seconds: median(total), numpy_seconds });
    }
    Ok(FitReport { machine: machine(), n, d_s: ds, d_t: dt, rows, numpy: peer.map(|p| p.numpy) })
}

/// What `scripts/bench/peer_numpy_fit.py` prints.
#[derive(Deserialize)]
struct NumpyFit {
    numpy: String,
    ols_seconds: Option<f64>,
    procrustes_seconds: Option<f64>,
}

/// Time numpy fitting maps of the same shapes with `python`.
fn numpy_fit_peer(python: &Path, (n, ds, dt): (usize, usize, usize), repeat: usize) -> Result<NumpyFit> {
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

/// [`measure_here`] in a fresh child process of this binary, so that peak RSS is the
/// model's own.
pub fn measure_in_child(spec: &str, mode: WeightMode, size: &SpeedSize) -> Result<BenchRow> {
    let exe = std::env::current_exe()?;
    let weights = if mode == WeightMode::F32 { "f32" } else { "quantized" };
    let out = Command::new(&exe)
        .args(["--weights", weights, "bench", "--single", "--models", spec, "--modes", weights])
        .args(["--prompt-tokens", &size.prompt_tokens.to_string(), "--decode-tokens", &size.decode_tokens.to_string(), "--repeat", &size.repeat.to_string()])
        .args(["--device", &size.device, "--dtype", &size.dtype])
        .output()?;
    if !out.status.success() {
        bail!("measuring {spec}: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice::<BenchRow>(&out.stdout).with_context(|| format!("bench output of {spec}"))
}

/// The same measurement by transformers (f32) with `python`.
pub fn measure_transformers(python: &Path, spec: &str, size: &SpeedSize) -> Result<BenchRow> {
    let out = Command::new(python)
        .arg(peer_script()?)
        .args([spec, &size.prompt_tokens.to_string(), &size.decode_tokens.to_string(), &size.repeat.to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("peer on {spec}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
    serde_json::from_str::<BenchRow>(&last).with_context(|| format!("peer output of {spec}: {last}"))
}

/// The Markdown table of speed rows.
pub fn speed_table(machine: &str, size: &SpeedSize, rows: &[BenchRow]) -> String {
    let mut md = format!(
        "Machine: {machine}. Prompt {} tokens, decode {} tokens, median of {}.\n\n| engine | model | weights | load s | prefill tok/s | decode tok/s | peak RSS MiB |\n|---|---|---|---:|---:|---:|---:|\n",
        size.prompt_tokens, size.decode_tokens, size.repeat
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.0} |\n",
            r.engine, r.model, r.mode, r.load_seconds, r.prefill_tokens_per_second, r.decode_tokens_per_second, r.peak_rss_mib
        ));
    }
    md
}
