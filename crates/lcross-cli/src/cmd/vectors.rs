//! `lcross extract`, `lcross vector show`, `lcross steer`, `lcross eval ab`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use lcross_core::steer::{parse_betas, Beta};
use lcross_core::steering::{SteeringVector, VectorMetadata};
use lcross_eval::pipeline::{self};
use lcross_model::Sampling;
use serde::Serialize;

use crate::args::{BatchArgs, ExtractArgs, PromptArgs, SiteArgs};
use crate::common::Context;
use crate::output::{generate_rows, generate_with, print_rows};

#[derive(Serialize)]
struct ExtractOut<'a> {
    output: &'a Path,
    metadata: &'a VectorMetadata,
    norms: BTreeMap<usize, f64>,
    seconds: f64,
    pairs_per_second: f64,
}

pub fn extract_cmd(ctx: &Context, a: ExtractArgs) -> Result<()> {
    let (ds, recipe) = a.inputs()?;
    let model = ctx.load(&a.model)?;
    let (sv, secs) = pipeline::extract_vector(&model, &ds, &recipe)?;
    sv.save(&a.output)?;
    let norms = sv.layers.iter().map(|(l, v)| (*l, v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt())).collect();
    let out = ExtractOut { output: &a.output, metadata: &sv.metadata, norms, seconds: secs, pairs_per_second: sv.metadata.n_pairs as f64 / secs.max(1e-9) };
    ctx.print(&out, || {
        let m = &sv.metadata;
        println!(
            "{} vector of `{}` from {} pairs of {} on {} -> {}",
            serde_json::to_value(m.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            m.concept,
            m.n_pairs,
            m.dataset,
            m.model_id,
            a.output.display()
        );
        if let Some((x, y)) = m.letter_balance {
            println!("letters: {x} pairs match with (A), {y} with (B){}", if m.balanced_letters { " (groups averaged separately)" } else { "" });
        }
        for (l, n) in &out.norms {
            let stab = m.half_split_cosine.get(l).map_or("-".into(), |c| format!("{c:.3}"));
            println!("  layer {l:>3}: norm {n:.4}, cosine between halves {stab}");
        }
        println!("{:.1} s, {:.2} pairs/s", out.seconds, out.pairs_per_second);
    })
}

#[derive(Subcommand)]
pub enum VectorCommand {
    /// Print a vector's metadata and values.
    Show {
        /// Vector file.
        path: PathBuf,
    },
    /// Write a vector as a llama.cpp control vector (GGUF, tensors direction.<layer>).
    Export {
        /// Vector file.
        path: PathBuf,
        /// Output .gguf.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Read a llama.cpp control vector into an lcross vector for MODEL.
    Import {
        /// Control-vector .gguf.
        path: PathBuf,
        /// The model it is for (checked against the vector size).
        #[arg(long, short)]
        model: String,
        /// Output vector file.
        #[arg(long, short)]
        output: PathBuf,
    },
}

pub fn vector_cmd(ctx: &Context, c: VectorCommand) -> Result<()> {
    match c {
        VectorCommand::Export { path, output } => {
            let sv = SteeringVector::load(&path)?;
            lcross_core::controlvec::export_vector(&output, &sv)?;
            ctx.print(&serde_json::json!({"output": output, "layers": sv.metadata.layers}), || {
                println!("wrote {} (layers {:?}); use it with llama-cli --control-vector {}", output.display(), sv.metadata.layers, output.display())
            })
        }
        VectorCommand::Import { path, model, output } => {
            let m = ctx.load(&model)?;
            let sv = lcross_core::controlvec::import_vector(&path, &m)?;
            sv.save(&output)?;
            ctx.print(&sv.metadata, || println!("imported {} layers -> {}", sv.layers.len(), output.display()))
        }
        VectorCommand::Show { path } => {
            let sv = SteeringVector::load(&path)?;
            #[derive(Serialize)]
            struct Out<'a> {
                metadata: &'a VectorMetadata,
                layers: BTreeMap<String, &'a Vec<f32>>,
            }
            let out = Out { metadata: &sv.metadata, layers: sv.layers.iter().map(|(l, v)| (l.to_string(), v)).collect() };
            ctx.print(&out, || {
                println!("{}", serde_json::to_string_pretty(&sv.metadata).unwrap_or_default());
                for (l, v) in &sv.layers {
                    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.4}")).collect();
                    println!("layer {l}: {} values, norm {n:.4}: [{}, ...]", v.len(), head.join(", "));
                }
            })
        }
    }
}

#[derive(Args)]
pub struct SteerArgs {
    #[command(flatten)]
    prompt: PromptArgs,
    /// Steering vector file.
    #[arg(long)]
    vector: PathBuf,
    /// Multiplier of the vector, or `auto` (its calibrated beta, `lcross calibrate`).
    #[arg(long, allow_hyphen_values = true, required_unless_present = "betas")]
    beta: Option<String>,
    /// Several multipliers: every (prompt, beta) is a row of one batch, e.g. -4,0,4.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ',')]
    betas: Vec<String>,
    #[command(flatten)]
    site: SiteArgs,
    /// Use a vector made for another model of the same size.
    #[arg(long)]
    force: bool,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    #[command(flatten)]
    batch: BatchArgs,
    /// The text (or --prompts FILE).
    #[arg(required_unless_present = "prompts", conflicts_with = "prompts")]
    text: Option<String>,
}

pub fn steer_cmd(ctx: &Context, a: SteerArgs) -> Result<()> {
    let model = ctx.load(&a.prompt.model)?;
    let sv = SteeringVector::load(&a.vector)?;
    sv.check_model(&model, a.force)?;
    let site = a.site.site()?;
    if a.batch.prompts.is_some() || !a.betas.is_empty() {
        let texts = match &a.batch.prompts {
            Some(file) => lcross_eval::inputs::read_prompts(file, "prompt")?,
            None => vec![a.text.clone().unwrap_or_default()],
        };
        let given = if a.betas.is_empty() { vec![a.beta.clone().unwrap_or_else(|| "0".into())] } else { a.betas.clone() };
        let betas: Vec<f64> = parse_betas(&given)?.iter().map(|b| b.resolve(Some(&sv))).collect::<lcross_core::Result<_>>()?;
        let mut rows = Vec::with_capacity(texts.len() * betas.len());
        for t in &texts {
            let prompt = a.prompt.build(&model, t)?;
            for &beta in &betas {
                let hooks = site.steer(&sv, beta).hooks(&model)?;
                rows.push((t.clone(), prompt.clone(), Some(beta), hooks));
            }
        }
        let out = generate_rows(&model, &rows, a.max_tokens, Sampling::Greedy, a.batch.batch_size)?;
        return print_rows(ctx, &out);
    }
    let beta = Beta::parse(a.beta.as_deref().unwrap_or("0"))?.resolve(Some(&sv))?;
    let hooks = site.steer(&sv, beta).hooks(&model)?;
    let prompt = a.prompt.build(&model, a.text.as_deref().unwrap_or_default())?;
    let out = generate_with(ctx, &model, &prompt, a.max_tokens, Sampling::Greedy, &hooks)?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
