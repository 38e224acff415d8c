//! `lcross tsne`: t-SNE of the difference vectors of several concepts in several models
//! (the paper's Figure 3), as an SVG scatter with one panel per model.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use lcross_core::activations::{ExtractOptions, Extractor};
use lcross_core::store::Store;
use lcross_core::artifact::write_atomic;
use lcross_core::dataset;
use lcross_core::texts::pair_ids;
use lcross_core::tsne::{tsne, TsneOptions};
use plotters::prelude::*;
use serde::Serialize;

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

#[derive(Serialize)]
struct Point {
    model: String,
    concept: String,
    x: f64,
    y: f64,
}

pub fn run(ctx: &Context, a: TsneArgs) -> Result<()> {
    let data_dir = a.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let mut points: Vec<Point> = Vec::new();
    for spec in &a.models {
        let model = ctx.load(spec)?;
        let n = model.config().num_layers;
        let layer = a.layer.iter().find_map(|o| o.split_once('=').filter(|(m, _)| m == spec).and_then(|(_, l)| l.parse().ok())).unwrap_or_else(|| lcross_model::registry::default_steering_layer(spec, n));
        let cache = Store::open_default()?;
        let mut ex = Extractor::new(&model, &[layer], Some(cache), ExtractOptions::default())?;
        let mut diffs = Vec::new();
        let mut labels = Vec::new();
        for c in &a.concepts {
            let caa = data_dir.join("caa").join(c).join("generate_dataset.json");
            let ds = if caa.is_file() { dataset::load_caa_pairs(&caa)? } else { dataset::load_concept(c, &data_dir)? }.limit(Some(a.limit));
            let ids: Vec<_> = ds.pairs.iter().map(|p| pair_ids(&model, p)).collect::<lcross_core::Result<_>>()?;
            let mut concept_diffs: Vec<Vec<f64>> = ex
                .pairs(&ids, &format!("{c} on {spec}"))?
                .into_iter()
                .map(|(p, q)| p[&layer].iter().zip(&q[&layer]).map(|(x, y)| (*x - *y) as f64).collect())
                .collect();
            if a.remove_letter {
                let letters: Vec<Option<char>> = ds.pairs.iter().map(|p| match p {
                    dataset::ContrastPair::AbQuestion { positive_letter, .. } => Some(*positive_letter),
                    dataset::ContrastPair::Prompts { .. } | dataset::ContrastPair::RawTexts { .. } => None,
                }).collect();
                remove_letter_component(&mut concept_diffs, &letters);
            }
            for d in concept_diffs {
                diffs.push(d);
                labels.push(c.clone());
            }
        }
        let y = tsne(&diffs, &TsneOptions { seed: a.seed, ..Default::default() })?;
        for (p, l) in y.iter().zip(labels) {
            points.push(Point { model: format!("{spec} (layer {layer})"), concept: l, x: p[0], y: p[1] });
        }
    }
    plot(&a.output, &points, &a.concepts)?;
    let json = a.output.with_extension("json");
    write_atomic(&json, serde_json::to_string_pretty(&points)?.as_bytes())?;
    ctx.print(&serde_json::json!({"svg": a.output, "points": json, "n": points.len()}), || {
        println!("t-SNE of {} difference vectors -> {} (coordinates in {})", points.len(), a.output.display(), json.display())
    })
}

/// Centre each letter group on its own mean, keeping the overall mean.
fn remove_letter_component(diffs: &mut [Vec<f64>], letters: &[Option<char>]) {
    let dim = diffs.first().map_or(0, |d| d.len());
    let mean_of = |idx: &[usize], diffs: &[Vec<f64>]| -> Vec<f64> {
        (0..dim).map(|j| idx.iter().map(|&i| diffs[i][j]).sum::<f64>() / idx.len().max(1) as f64).collect()
    };
    let all: Vec<usize> = (0..diffs.len()).collect();
    let overall = mean_of(&all, diffs);
    let mut groups: std::collections::BTreeMap<char, Vec<usize>> = Default::default();
    for (i, l) in letters.iter().enumerate() {
        if let Some(l) = l {
            groups.entry(*l).or_default().push(i);
        }
    }
    for idx in groups.values() {
        let m = mean_of(idx, diffs);
        for &i in idx {
            for j in 0..dim {
                diffs[i][j] += overall[j] - m[j];
            }
        }
    }
}

fn plot(path: &std::path::Path, points: &[Point], concepts: &[String]) -> Result<()> {
    let mut models: Vec<&str> = points.iter().map(|p| p.model.as_str()).collect();
    models.dedup();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (480 * models.len() as u32, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, models.len()));
        for (panel, m) in panels.iter().zip(&models) {
            let pts: Vec<&Point> = points.iter().filter(|p| p.model == *m).collect();
            let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.x), b.max(p.x)));
            let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.y), b.max(p.y)));
            let pad = |a: f64, b: f64| ((b - a) * 0.05).max(1e-6);
            let mut chart = ChartBuilder::on(panel)
                .caption(*m, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(20)
                .y_label_area_size(30)
                .build_cartesian_2d((x0 - pad(x0, x1))..(x1 + pad(x0, x1)), (y0 - pad(y0, y1))..(y1 + pad(y0, y1)))?;
            chart.configure_mesh().disable_mesh().draw()?;
            for (k, c) in concepts.iter().enumerate() {
                let color = Palette99::pick(k).to_rgba();
                chart
                    .draw_series(pts.iter().filter(|p| p.concept == *c).map(|p| Circle::new((p.x, p.y), 3, color.filled())))?
                    .label(c.clone())
                    .legend(move |(x, y)| Circle::new((x + 5, y), 4, color.filled()));
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }
        root.present()?;
    }
    write_atomic(path, svg.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
