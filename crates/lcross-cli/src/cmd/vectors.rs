//! `lcross extract`, `lcross vector show`, `lcross steer`, `lcross eval ab`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use lcross_core::dataset::{self, AbItem};
use lcross_core::steer::{parse_betas, Beta};
use lcross_core::steering::{Method, SteeringVector, VectorMetadata};
use lcross_eval::pipeline::{self, VectorRecipe};
use lcross_model::{Model, Sampling, DEFAULT_MODEL};
use serde::Serialize;

use crate::cmd::run::{generate_with, PromptArgs};
use crate::common::{Context, SiteArgs};

/// Parse `12,13,14` or `12-14`.
pub fn parse_layers(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
            if a > b {
                bail!("layer range {part} is empty");
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().with_context(|| format!("`{part}` is not a layer number"))?);
        }
    }
    if out.is_empty() {
        bail!("no layers given");
    }
    Ok(out)
}

#[derive(Args)]
pub struct ExtractArgs {
    /// Model: a known id, a .gguf file or a HF directory.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A CAA A/B file (generate_dataset.json), a pairs file (JSON array or JSONL of
    /// {"positive": ..., "negative": ...}), builtin:optimism, or a RepE concept
    /// (happiness, fear, fairness, harmfulness) read from --data-dir.
    #[arg(long, short, required_unless_present = "scenarios", conflicts_with = "scenarios", default_value = "")]
    pub dataset: String,
    #[command(flatten)]
    pub custom: CustomConceptArgs,
    /// Layers (0-based), e.g. 12 or 12,13 or 10-14.
    #[arg(long, short)]
    pub layers: String,
    /// Hook point read at each layer: resid_post (default), resid_pre, attn_out, mlp_out.
    /// Recorded in the vector: it is added there unless told otherwise.
    #[arg(long, default_value = "resid_post")]
    pub hook: String,
    /// mean-diff (CAA) or pca (RepE).
    #[arg(long, default_value = "mean-diff")]
    pub method: String,
    /// Use the first N pairs in file order.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Unit-normalise each layer's vector.
    #[arg(long)]
    pub normalize: bool,
    /// Average the A- and B-matching pairs separately (cancels the letter component).
    #[arg(long)]
    pub balance_letters: bool,
    /// Data directory for RepE and caa: concepts (default $LCROSS_DATA, else ~/.cache/lcross/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not read or write the activation cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Run both texts of a pair in full (for measuring what prefix sharing buys).
    #[arg(long, hide = true)]
    pub no_prefix_sharing: bool,
    /// Run every layer and the logits (for measuring what early exit buys).
    #[arg(long, hide = true)]
    pub no_early_exit: bool,
    /// Output vector file (.safetensors).
    #[arg(long, short)]
    pub output: PathBuf,
}

/// A concept of the user's own: raw pair files, or RepE's construction from scenarios.
#[derive(Args, Clone, Default)]
pub struct CustomConceptArgs {
    /// Pairs file texts are used as they are, not wrapped as a user turn of the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Scenarios of the concept (JSON array of strings, or one a line): RepE's
    /// construction, each in --template, paired with a --contrast scenario.
    #[arg(long, requires_all = ["contrast", "template"])]
    pub scenarios: Option<PathBuf>,
    /// Contrasting scenarios (same formats).
    #[arg(long, requires = "scenarios")]
    pub contrast: Option<PathBuf>,
    /// Template with {scenario}, e.g. "Consider the pride of the following scenario:\nScenario: {scenario}\nAnswer: ".
    #[arg(long, requires = "scenarios")]
    pub template: Option<String>,
    /// Concept name (default: the scenarios file's stem).
    #[arg(long)]
    pub concept: Option<String>,
}

impl CustomConceptArgs {
    /// The dataset: scenarios, a raw pairs file, or the `--dataset` spec.
    pub fn load(&self, spec: &str, data_dir: &Path) -> Result<dataset::ConceptDataset> {
        let mut ds = match (&self.scenarios, &self.contrast, &self.template) {
            (Some(s), Some(c), Some(t)) => {
                let name = self.concept.clone().or_else(|| s.file_stem().map(|x| x.to_string_lossy().into_owned())).unwrap_or_else(|| "concept".into());
                dataset::scenario_pairs(&name, s, c, &t.replace("\\n", "\n"), self.raw)?
            }
            _ if self.raw => dataset::load_pairs(Path::new(spec), true)?,
            _ => dataset::load_concept(spec, data_dir)?,
        };
        if let Some(c) = &self.concept {
            ds.concept = c.clone();
        }
        Ok(ds)
    }
}

#[derive(Serialize)]
struct ExtractOut<'a> {
    output: &'a Path,
    metadata: &'a VectorMetadata,
    norms: BTreeMap<usize, f64>,
    seconds: f64,
    pairs_per_second: f64,
}

/// Extract a vector as `lcross extract` does; shared with `demo` and `experiment`.
pub fn extract_vector(model: &Model, a: &ExtractArgs) -> Result<(SteeringVector, f64)> {
    let (ds, recipe) = extract_inputs(a)?;
    Ok(pipeline::extract_vector(model, &ds, &recipe)?)
}

/// The dataset and recipe of `lcross extract`, read and checked before any model loads.
fn extract_inputs(a: &ExtractArgs) -> Result<(lcross_core::dataset::ConceptDataset, VectorRecipe)> {
    let method = Method::parse(&a.method).with_context(|| format!("unknown method `{}` (mean-diff or pca)", a.method))?;
    let data_dir = a.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let ds = a.custom.load(&a.dataset, &data_dir)?.limit(a.limit);
    let recipe = VectorRecipe {
        layers: parse_layers(&a.layers)?,
        method,
        normalize: a.normalize,
        balance_letters: a.balance_letters,
        use_cache: !a.no_cache,
        prefix_sharing: !a.no_prefix_sharing,
        early_exit: !a.no_early_exit,
        point: lcross_core::steer::parse_hook(&a.hook)?,
    };
    Ok((ds, recipe))
}

pub fn extract_cmd(ctx: &Context, a: ExtractArgs) -> Result<()> {
    let (ds, recipe) = extract_inputs(&a)?;
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
            let hint = lcross_model::resolve(&sv.metadata.model_id)
                .ok()
                .and_then(|loc| lcross_model::gguf::GgufFile::open(loc.path()).ok())
                .and_then(|f| f.config().ok())
                .map_or("llama".to_string(), |c| c.architecture.as_str().to_string());
            lcross_core::controlvec::export(&output, &sv.layers, &hint)?;
            ctx.print(&serde_json::json!({"output": output, "layers": sv.metadata.layers}), || {
                println!("wrote {} (layers {:?}); use it with llama-cli --control-vector {}", output.display(), sv.metadata.layers, output.display())
            })
        }
        VectorCommand::Import { path, model, output } => {
            let (layers, _hint) = lcross_core::controlvec::import(&path)?;
            let m = ctx.load(&model)?;
            let h = m.config().hidden_size;
            if let Some((l, v)) = layers.iter().find(|(_, v)| v.len() != h) {
                bail!("{}: direction.{l} has {} values, {} has hidden size {h}", path.display(), v.len(), m.id());
            }
            let bytes = std::fs::read(&path)?;
            let concept = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let mut metadata = VectorMetadata::made_by_hand(
                m.id(),
                &m.file_sha256()?,
                h,
                layers.keys().copied().collect(),
                &concept,
                &format!("llama.cpp control vector {}", path.display()),
            );
            metadata.dataset_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            metadata.provenance = Some(serde_json::json!({"imported_from": path.display().to_string()}));
            let sv = SteeringVector { metadata, layers };
            sv.check_model(&m, false)?;
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
    batch: crate::cmd::run::BatchArgs,
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
            Some(file) => crate::cmd::run::read_prompts(file)?,
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
        let out = crate::cmd::run::generate_rows(&model, &rows, a.max_tokens, Sampling::Greedy, a.batch.batch_size)?;
        return crate::cmd::run::print_rows(ctx, &out);
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

/// A/B items from a file or a built-in concept.
pub fn load_ab(spec: &str, limit: Option<usize>) -> Result<Vec<AbItem>> {
    Ok(pipeline::load_ab(spec, limit)?)
}
