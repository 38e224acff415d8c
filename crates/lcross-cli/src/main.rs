//! `lcross`: cross-model steering of language models.
//!
//! The binary is thin: it parses arguments, calls the libraries and prints human text
//! (or JSON with `--json`).

mod args;
mod bench;
mod cmd;
mod common;
mod output;
mod report;

use clap::{Parser, Subcommand};

/// Cross-model steering of language models (L-Cross Modulation).
#[derive(Parser)]
#[command(name = "lcross", version, about, long_about = None)]
struct Cli {
    /// Print machine-readable JSON instead of human text.
    #[arg(long, global = true)]
    json: bool,
    /// How GGUF weights are held: f32 (dequantized, faithful; default) or quantized
    /// (K-quants/Q4_0/Q8_0 kept quantized: faster, approximate).
    #[arg(long, global = true, default_value = "f32", value_parser = ["f32", "quantized"])]
    weights: String,
    /// Where to compute: cpu, cuda[:N] (build with --features cuda) or metal[:N]
    /// (--features metal).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32 (default; matches the reference), f16 or bf16 (for GPUs).
    #[arg(long, global = true, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    dtype: String,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch and list the known models.
    #[command(subcommand)]
    Models(cmd::models::ModelsCommand),
    /// Fetch and list the public datasets (CAA, RepE, StereoSet, AdvBench, instructions).
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Token ids of a text (or of a chat prompt with --chat).
    Tokenize(cmd::run::TokenizeArgs),
    /// Last-token residual stream after a layer, and the next-token top 5.
    Hidden(cmd::run::HiddenArgs),
    /// Generate text (streamed).
    Generate(cmd::run::GenerateArgs),
    /// Measure load time, prefill and decode speed, and peak memory per model.
    Bench(cmd::bench::BenchArgs),
    /// The built-in demo: a short chat with the default model.
    Demo(cmd::demo::DemoArgs),
    /// Extract a steering vector (CAA mean difference or RepE PCA) from a concept dataset.
    Extract(args::ExtractArgs),
    /// Inspect steering vectors.
    #[command(subcommand)]
    Vector(cmd::vectors::VectorCommand),
    /// Generate with a steering vector added to the residual stream.
    Steer(cmd::vectors::SteerArgs),
    /// Evaluate a model (optionally steered).
    #[command(subcommand)]
    Eval(cmd::evaluate::EvalCommand),
    /// Score (question, answer) pairs with a judge: check a judge before trusting it.
    Judge(cmd::evaluate::JudgeCmdArgs),
    /// Choose beta automatically: the largest effect on a dev split within a drift and fluency budget, checked on a test split; stored for --beta auto.
    Calibrate(cmd::calibrate::CalibrateArgs),
    /// Fit a linear map T between two models' hidden spaces on a shared corpus.
    Align(args::AlignArgs),
    /// Move a steering vector to another model through a map: sv @ T.
    Transfer(cmd::maps::TransferArgs),
    /// Compare two maps (SSIM, spectra, Frobenius), each also against a random map.
    CompareMaps(cmd::maps::CompareArgs),
    /// How alike two models' states of the same texts are: mutual k-NN, CKA, unbiased CKA, CKNNA, SVCCA.
    Similarity(cmd::maps::SimilarityArgs),
    /// t-SNE scatter of the difference vectors of several concepts in several models.
    Tsne(cmd::tsne::TsneArgs),
    /// Serve the model behind an OpenAI-compatible API, steered per request.
    Serve(cmd::serve::ServeArgs),
    /// Run an experiment grid from a TOML file (the paper's study): resumable, shardable, with a report.
    Reproduce(cmd::reproduce::ReproduceArgs),
    /// Resumable experiment grids (self modulation, layer sweeps).
    #[command(subcommand)]
    Experiment(cmd::experiment::ExperimentCommand),
    /// Check or clear the result cache (`lcross cache check [--repair]`, `lcross cache clear`).
    #[command(subcommand)]
    Cache(cmd::cache::CacheCommand),
}

/// Keep freed tensor buffers in the heap. glibc serves allocations over 128 KiB (its
/// threshold then grows only up to the largest freed block) with fresh `mmap`s and
/// unmaps them on free, so every op's output is page-faulted and zero-filled by the
/// kernel anew: 15% of an A/B pass's time was in the kernel (docs/PERFORMANCE.md,
/// "Allocator"). Below 32 MiB (glibc's ceiling) blocks now come from the heap, which is
/// trimmed back to the OS only past 1 GiB of free space at its top.
/// `LCROSS_MALLOC=system` keeps glibc's defaults (to compare, or if memory is tight).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_buffers() {
    if std::env::var_os("LCROSS_MALLOC").is_some_and(|v| v == "system") {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

/// Die quietly on a closed stdout (`lcross ... | head`), as Unix tools do, instead of
/// panicking in `println!`: Rust ignores SIGPIPE, so the write fails with EPIPE. Not for
/// the server, whose writes to sockets that clients closed are ordinary errors.
#[cfg(unix)]
fn quiet_on_closed_stdout() {
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_on_closed_stdout() {}

fn main() {
    keep_freed_buffers();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_on_closed_stdout();
    }
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .init();
    let ctx =
        common::Context { json: cli.json, weights: lcross_model::WeightMode::parse(&cli.weights).unwrap_or_default(), device: cli.device, dtype: cli.dtype };
    let result = match cli.command {
        Command::Models(c) => cmd::models::run(&ctx, c),
        Command::Data(c) => cmd::data::run(&ctx, c),
        Command::Tokenize(a) => cmd::run::tokenize(&ctx, a),
        Command::Hidden(a) => cmd::run::hidden(&ctx, a),
        Command::Generate(a) => cmd::run::generate(&ctx, a),
        Command::Bench(a) => cmd::bench::run(&ctx, a),
        Command::Demo(a) => cmd::demo::run(&ctx, a),
        Command::Extract(a) => cmd::vectors::extract_cmd(&ctx, a),
        Command::Vector(c) => cmd::vectors::vector_cmd(&ctx, c),
        Command::Steer(a) => cmd::vectors::steer_cmd(&ctx, a),
        Command::Eval(c) => cmd::evaluate::eval_cmd(&ctx, c),
        Command::Judge(a) => cmd::evaluate::judge_cmd(&ctx, a),
        Command::Calibrate(a) => cmd::calibrate::run(&ctx, a),
        Command::Align(a) => cmd::maps::align_cmd(&ctx, a),
        Command::Transfer(a) => cmd::maps::transfer_cmd(&ctx, a),
        Command::CompareMaps(a) => cmd::maps::compare_cmd(&ctx, a),
        Command::Similarity(a) => cmd::maps::similarity_cmd(&ctx, a),
        Command::Tsne(a) => cmd::tsne::run(&ctx, a),
        Command::Serve(a) => cmd::serve::run(&ctx, a),
        Command::Reproduce(a) => cmd::reproduce::run(&ctx, a),
        Command::Experiment(c) => cmd::experiment::run(&ctx, c),
        Command::Cache(c) => cmd::cache::run(&ctx, c),
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: lcross's errors already name
/// their cause ("FILE: No such file or directory"), which `{:#}` would repeat.
fn error_message(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}
