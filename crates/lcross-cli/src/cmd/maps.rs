//! `lcross align`, `lcross transfer`, `lcross compare-maps`, `lcross vector export|import`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use lcross_core::analyses::{compare, random_like, MapComparison};
use lcross_core::maps::{apply, Estimator, LinearMap, MapMetadata};
use lcross_core::steering::{cosine, SteeringVector};
use lcross_eval::pipeline::{self, Corpus};
use lcross_model::Model;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::common::Context;

#[derive(Args)]
pub struct AlignArgs {
    /// Source model.
    #[arg(long)]
    pub source: String,
    /// Source layer (0-based).
    #[arg(long)]
    pub source_layer: usize,
    /// Hook point of the states on both sides: resid_post (default), resid_pre, attn_out, mlp_out.
    #[arg(long, default_value = "resid_post")]
    pub hook: String,
    /// Target model.
    #[arg(long)]
    pub target: String,
    /// Target layer.
    #[arg(long)]
    pub target_layer: usize,
    /// Corpus: a concept dataset (CAA file, builtin:NAME, RepE concept) whose pair texts are
    /// used, or a .txt file with one text a line.
    #[arg(long)]
    pub corpus: String,
    /// First N items of the corpus (pairs: both texts of each), after --skip.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the first N items (e.g. the pairs the vector was extracted from, to fit the map
    /// on held-out pairs).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// ols (default, the paper's pseudo-inverse), ridge[:LAMBDA], procrustes, random[:SEED], identity.
    #[arg(long, default_value = "ols")]
    pub estimator: String,
    /// A source-model vector to transfer at fit time (with --native: cosine reported).
    #[arg(long)]
    pub vector: Option<PathBuf>,
    /// The target model's own vector of the same concept.
    #[arg(long)]
    pub native: Option<PathBuf>,
    /// Data directory for RepE concepts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not use the activation cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Output map file.
    #[arg(long, short)]
    pub output: PathBuf,
}

/// Fit a map between two loaded models as `lcross align` does.
pub fn align_models(src: &Model, tgt: &Model, a: &AlignArgs) -> Result<LinearMap> {
    let est = Estimator::parse(&a.estimator).with_context(|| format!("unknown estimator `{}`", a.estimator))?;
    let data_dir = a.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let corpus = Corpus::load(&a.corpus, &data_dir, a.skip, a.limit)?;
    let point = lcross_core::steer::parse_hook(&a.hook)?;
    let mut map = pipeline::align_at(src, tgt, (a.source_layer, a.target_layer), (point, point), &corpus, est, !a.no_cache)?;
    let metadata = &mut map.metadata;
    if let (Some(v), Some(n)) = (&a.vector, &a.native) {
        let sv = SteeringVector::load(v)?;
        let native = SteeringVector::load(n)?;
        let sv_layer = sv.layers.get(&a.source_layer).with_context(|| format!("{} has no layer {}", v.display(), a.source_layer))?;
        let nat = native.layers.get(&a.target_layer).with_context(|| format!("{} has no layer {}", n.display(), a.target_layer))?;
        let moved = apply(&map.t, sv_layer)?;
        metadata.native_cosine = Some(cosine(&moved, nat));
        metadata.native_vector = Some(n.display().to_string());
    }
    Ok(map)
}

/// Human summary of a fit.
pub fn print_fit(m: &MapMetadata) {
    let d = &m.diagnostics;
    println!(
        "{} L{} ({}) -> {} L{} ({}): {:?} on {} texts of {}",
        m.source_model_id, m.source_layer, d.source_dim, m.target_model_id, m.target_layer, d.target_dim, m.estimator, d.n, m.corpus
    );
    println!(
        "  train R^2 {:.4}, held-out R^2 {}, rank(X) {}{}, {:.2} s",
        d.train_r2,
        d.heldout_r2.map_or("-".into(), |r| format!("{r:.4}")),
        d.rank,
        d.lambda.map_or(String::new(), |l| format!(", lambda {l:.3e}")),
        d.seconds
    );
    if d.interpolating {
        println!("  interpolation regime: n = {} <= d_s = {} and X has full row rank, so X T = Y exactly and a vector", d.n, d.source_dim);
        println!("  built from these texts transfers to exactly the target's vector of the same texts (METHOD.md).");
    }
    if let Some(c) = m.native_cosine {
        println!("  cosine(transferred, native) = {c:.4}");
    }
}

pub fn align_cmd(ctx: &Context, a: AlignArgs) -> Result<()> {
    let src = ctx.load(&a.source)?;
    let tgt = ctx.load(&a.target)?;
    let map = align_models(&src, &tgt, &a)?;
    map.save(&a.output)?;
    ctx.print(&map.metadata, || {
        print_fit(&map.metadata);
        println!("  -> {}", a.output.display());
    })
}

/// Transfer `sv` through `map` read from `map_path` (refusing a vector of another model
/// unless `force`); the provenance records the file and its sha256.
pub fn transfer_vector(sv: &SteeringVector, map: &LinearMap, map_path: &Path, force: bool) -> Result<SteeringVector> {
    let map_bytes = std::fs::read(map_path).with_context(|| format!("reading {}", map_path.display()))?;
    Ok(pipeline::transfer_vector(sv, map, &map_path.display().to_string(), &hex::encode(Sha256::digest(&map_bytes)), force)?)
}

#[derive(Args)]
pub struct TransferArgs {
    /// Source-model vector.
    #[arg(long)]
    vector: PathBuf,
    /// Map file.
    #[arg(long)]
    map: PathBuf,
    /// Transfer a vector of another model with the same hidden size.
    #[arg(long)]
    force: bool,
    /// Output vector.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn transfer_cmd(ctx: &Context, a: TransferArgs) -> Result<()> {
    let sv = SteeringVector::load(&a.vector)?;
    let map = LinearMap::load(&a.map)?;
    let out = transfer_vector(&sv, &map, &a.map, a.force)?;
    out.save(&a.output)?;
    let norm = out.layers.values().next().map_or(0.0, |v| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt());
    ctx.print(&out.metadata, || {
        println!(
            "{} L{} -> {} L{}: transferred `{}` vector, norm {norm:.4} -> {}",
            sv.metadata.model_id,
            map.metadata.source_layer,
            out.metadata.model_id,
            map.metadata.target_layer,
            out.metadata.concept,
            a.output.display()
        )
    })
}

#[derive(Args)]
pub struct CompareArgs {
    /// First map.
    a: PathBuf,
    /// Second map.
    b: PathBuf,
    /// Seed of the random baseline maps.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Serialize)]
struct CompareOut {
    a_vs_b: MapComparison,
    a_vs_random: MapComparison,
    b_vs_random: MapComparison,
}

pub fn compare_cmd(ctx: &Context, a: CompareArgs) -> Result<()> {
    let ma = LinearMap::load(&a.a)?;
    let mb = LinearMap::load(&a.b)?;
    let out = CompareOut {
        a_vs_b: compare(&ma.t, &mb.t)?,
        a_vs_random: compare(&ma.t, &random_like(&ma.t, a.seed))?,
        b_vs_random: compare(&mb.t, &random_like(&mb.t, a.seed.wrapping_add(1)))?,
    };
    ctx.print(&out, || {
        println!("| pair | SSIM | mean abs spectral diff | Frobenius |\n|---|---:|---:|---:|");
        for (name, c) in [("A vs B", &out.a_vs_b), ("A vs random", &out.a_vs_random), ("B vs random", &out.b_vs_random)] {
            println!("| {name} | {:.4} | {:.4} | {:.4} |", c.ssim, c.spectral_mean_abs_diff, c.frobenius);
        }
    })
}
