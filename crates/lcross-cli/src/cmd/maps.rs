//! `lcross align`, `lcross transfer`, `lcross compare-maps`, `lcross vector export|import`.

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
