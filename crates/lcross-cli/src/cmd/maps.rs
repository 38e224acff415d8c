//! `lcross align`, `lcross transfer`, `lcross compare-maps`, `lcross similarity`, `lcross vector export|import`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lcross_core::analyses::{compare, random_like, MapComparison};
use lcross_core::maps::LinearMap;
use lcross_core::steering::SteeringVector;
use lcross_eval::pipeline::{self};
use serde::Serialize;

use crate::args::AlignArgs;
use crate::common::Context;
use crate::output::print_fit;

pub fn align_cmd(ctx: &Context, a: AlignArgs) -> Result<()> {
    let src = ctx.load(&a.source)?;
    let tgt = ctx.load(&a.target)?;
    let map = a.fit(&src, &tgt)?;
    map.save(&a.output)?;
    ctx.print(&map.metadata, || {
        print_fit(&map.metadata);
        println!("  -> {}", a.output.display());
    })
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
    let out = pipeline::transfer_vector_file(&sv, &map, &a.map, a.force)?;
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

#[derive(Args)]
pub struct SimilarityArgs {
    /// Source model.
    #[arg(long)]
    source: String,
    /// Source layer (0-based).
    #[arg(long, required_unless_present = "source_layers", conflicts_with = "source_layers")]
    source_layer: Option<usize>,
    /// Target model.
    #[arg(long)]
    target: String,
    /// Target layer.
    #[arg(long, required_unless_present = "target_layers", conflicts_with = "target_layers")]
    target_layer: Option<usize>,
    /// Several source layers (`all`, or e.g. 0-29 or 4,8,12): with --target-layers, every
    /// pair is measured and a heatmap per metric written to --out.
    #[arg(long, requires = "target_layers")]
    source_layers: Option<String>,
    /// Several target layers (`all` or a list), with --source-layers.
    #[arg(long, requires = "source_layers")]
    target_layers: Option<String>,
    /// Directory of the layer-by-layer results (similarity.csv, similarity.json,
    /// similarity-METRIC.svg); default similarity-SOURCE-TARGET.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Hook point of the states on both sides: resid_post (default), resid_pre, attn_out, mlp_out.
    #[arg(long, default_value = "resid_post")]
    hook: String,
    /// Corpus, read as `align` reads it: a concept dataset (both texts of each pair) or a
    /// .txt file with one text a line.
    #[arg(long)]
    corpus: String,
    /// First N items of the corpus, after --skip.
    #[arg(long)]
    limit: Option<usize>,
    /// Skip the first N items.
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Neighbours per text for mutual k-NN and CKNNA.
    #[arg(long, default_value_t = 10)]
    topk: usize,
    /// Singular directions per side for SVCCA.
    #[arg(long, default_value_t = 10)]
    cca_dim: usize,
    /// Data directory for RepE concepts.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not use the activation cache.
    #[arg(long)]
    no_cache: bool,
}

/// `lcross similarity`: how alike two models' states of the same texts are.
pub fn similarity_cmd(ctx: &Context, a: SimilarityArgs) -> Result<()> {
    let src = ctx.load(&a.source)?;
    let tgt = ctx.load(&a.target)?;
    let data_dir = a.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let corpus = lcross_eval::pipeline::Corpus::load(&a.corpus, &data_dir, a.skip, a.limit)?;
    let point = lcross_core::steer::parse_hook(&a.hook)?;
    let opts = lcross_core::similarity::SimilarityOptions { topk: a.topk, cca_dim: a.cca_dim };
    let (Some(source_layer), Some(target_layer)) = (a.source_layer, a.target_layer) else {
        let sl = pipeline::layers_of(a.source_layers.as_deref().unwrap_or("all"), &src)?;
        let tl = pipeline::layers_of(a.target_layers.as_deref().unwrap_or("all"), &tgt)?;
        let grid = pipeline::similarity_grid(&src, &tgt, &sl, &tl, (point, point), &corpus, &opts, !a.no_cache)?;
        let dir = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("similarity-{}-{}", src.id(), tgt.id())));
        let files = grid.write(&dir)?;
        return ctx.print(&grid, || {
            println!("{} x {} layer pairs of {} and {} on {} texts:", sl.len(), tl.len(), src.id(), tgt.id(), grid.n);
            for metric in pipeline::SIMILARITY_METRICS {
                if let Some(c) = grid.best(metric) {
                    println!("  {metric:>13}: highest {:.4} at L{} / L{}", pipeline::SimilarityGrid::value(c, metric), c.source_layer, c.target_layer);
                }
            }
            for f in &files {
                println!("  wrote {}", f.display());
            }
        });
    };
    let m = pipeline::similarity_at(&src, &tgt, (source_layer, target_layer), (point, point), &corpus, &opts, !a.no_cache)?;
    ctx.print(&m, || {
        println!("{} L{} vs {} L{} on {} texts:", src.id(), source_layer, tgt.id(), target_layer, m.n);
        println!("  mutual k-NN (k = {}) {:.4}", a.topk, m.mutual_knn);
        println!("  CKA {:.4}, unbiased CKA {:.4}, CKNNA {:.4}", m.cka, m.unbiased_cka, m.cknna);
        println!("  SVCCA ({} directions) {:.4}", a.cca_dim, m.svcca);
    })
}
