//! `lcross tsne`: t-SNE of the difference vectors of several concepts in several models
//! (the paper's Figure 3), as an SVG scatter with one panel per model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lcross_core::artifact::write_atomic;
use lcross_core::dataset;
use lcross_core::tsne::{tsne, TsneOptions};
use lcross_eval::pipeline::pair_differences;
use lcross_eval::plots::{scatter_panels, ScatterPoint};

use crate::common::Context;

#[derive(Args)]
pub struct TsneArgs {
    /// Models (one panel each).
    #[arg(long, value_delimiter = ',', default_value = "smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct")]
    models: Vec<String>,
    /// Concepts: CAA behaviour names (read from --data-dir/caa/NAME/generate_dataset.json) or dataset specs.
    #[arg(long, value_delimiter = ',', default_value = "refusal,sycophancy,survival-instinct,hallucination,myopic-reward")]
    concepts: Vec<String>,
    /// Pairs per concept.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Layer per model as MODEL=LAYER (default: the model's measured steering layer, else 40% depth).
    #[arg(long, value_delimiter = ',')]
    layer: Vec<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Remove the answer-letter component of A/B differences: within each concept, centre
    /// the A-matching and the B-matching pairs on their own means, then add back the
    /// concept's mean difference.
    #[arg(long)]
    remove_letter: bool,
    /// Seed of t-SNE.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output .svg (a .json with the coordinates is written beside it).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(ctx: &Context, a: TsneArgs) -> Result<()> {
    let data_dir = a.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let mut points: Vec<ScatterPoint> = Vec::new();
    for spec in &a.models {
        let model = ctx.load(spec)?;
        let n = model.config().num_layers;
        let layer = a
            .layer
            .iter()
            .find_map(|o| o.split_once('=').filter(|(m, _)| m == spec).and_then(|(_, l)| l.parse().ok()))
            .unwrap_or_else(|| lcross_model::registry::default_steering_layer(spec, n));
        let mut diffs = Vec::new();
        let mut labels = Vec::new();
        for c in &a.concepts {
            let caa = data_dir.join("caa").join(c).join("generate_dataset.json");
            let ds = if caa.is_file() { dataset::load_caa_pairs(&caa)? } else { dataset::load_concept(c, &data_dir)? }.limit(Some(a.limit));
            for d in pair_differences(&model, &ds, layer, a.remove_letter)? {
                diffs.push(d);
                labels.push(c.clone());
            }
        }
        let y = tsne(&diffs, &TsneOptions { seed: a.seed, ..Default::default() })?;
        for (p, l) in y.iter().zip(labels) {
            points.push(ScatterPoint { panel: format!("{spec} (layer {layer})"), group: l, x: p[0], y: p[1] });
        }
    }
    scatter_panels(&a.output, &points, &a.concepts)?;
    let json = a.output.with_extension("json");
    write_atomic(&json, serde_json::to_string_pretty(&points)?.as_bytes())?;
    ctx.print(&serde_json::json!({"svg": a.output, "points": json, "n": points.len()}), || {
        println!("t-SNE of {} difference vectors -> {} (coordinates in {})", points.len(), a.output.display(), json.display())
    })
}
