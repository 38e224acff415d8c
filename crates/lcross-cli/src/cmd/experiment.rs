//! `lcross experiment`: resumable grids that reproduce the self-modulation tables.
//!
//! Every finished cell is appended to `results.jsonl` in the output directory; a rerun
//! skips cells already there, so an interrupted run resumes. `results.csv` and
//! `results.md` are rewritten from the JSONL after every cell.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use lcross_core::artifact::write_atomic;
use lcross_core::eval::{evaluate_ab, Steering};
use lcross_model::Positions;
use serde::{Deserialize, Serialize};

use crate::cmd::vectors::{extract_vector, load_ab, parse_layers, ExtractArgs};
use crate::common::Context;

/// The seven CAA behaviours.
pub const BEHAVIOURS: &[&str] = &[
    "coordinate-other-ais", "corrigible-neutral-HHH", "hallucination", "myopic-reward", "survival-instinct", "sycophancy", "refusal",
];

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Self modulation on CAA behaviours: extract each behaviour's vector from the model
    /// and evaluate the A/B metric for several betas.
    SelfModulation(SelfArgs),
    /// Which layer steers best: for one behaviour, the A/B metric at -beta and +beta per layer.
    LayerSweep(LayerSweepArgs),
}

#[derive(Args, Clone)]
pub struct GridArgs {
    /// Models (known ids or paths).
    #[arg(long, value_delimiter = ',', default_value = "smollm2-135m-instruct")]
    models: Vec<String>,
    /// Pairs used for extraction (first N of generate_dataset.json).
    #[arg(long, default_value_t = 128)]
    limit: usize,
    /// Test questions per behaviour (first N of test_dataset_ab.json).
    #[arg(long, default_value_t = 50)]
    test_limit: usize,
    /// Average A- and B-matching pairs separately.
    #[arg(long)]
    balance_letters: bool,
    /// Data directory (default ../shared/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
pub struct SelfArgs {
    #[command(flatten)]
    grid: GridArgs,
    /// Behaviours (default: all seven).
    #[arg(long, value_delimiter = ',')]
    behaviours: Vec<String>,
    /// Layer per model as MODEL=LAYER (default: 40% depth).
    #[arg(long, value_delimiter = ',')]
    layer: Vec<String>,
    /// Multipliers.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_value = "-1,0,1")]
    betas: Vec<f64>,
}

#[derive(Args)]
pub struct LayerSweepArgs {
    #[command(flatten)]
    grid: GridArgs,
    /// Behaviour.
    #[arg(long, default_value = "refusal")]
    behaviour: String,
    /// Layers to try, e.g. 4-16.
    #[arg(long)]
    layers: String,
    /// The sweep evaluates -beta and +beta.
    #[arg(long, default_value_t = 4.0)]
    beta: f64,
}

/// One finished cell.
#[derive(Serialize, Deserialize, Clone)]
pub struct Cell {
    pub model: String,
    pub behaviour: String,
    pub layer: usize,
    pub beta: f64,
    pub mean_prob_matching: f64,
    pub n: usize,
    pub n_pairs: usize,
    pub balanced_letters: bool,
    pub half_split_cosine: Option<f64>,
    pub vector_norm: f64,
}

fn key(c: &Cell) -> String {
    format!("{}|{}|{}|{}|{}", c.model, c.behaviour, c.layer, c.beta, c.balanced_letters)
}

fn read_cells(path: &Path) -> Result<Vec<Cell>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(path)?;
    // A line cut by an interrupted write is skipped.
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn append_cell(path: &Path, c: &Cell) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(c)?)?;
    f.sync_data()?;
    Ok(())
}

fn write_tables(dir: &Path, cells: &[Cell]) -> Result<()> {
    let mut csv = String::from("model,behaviour,layer,beta,mean_prob_matching,n,n_pairs,balanced_letters,half_split_cosine,vector_norm\n");
    for c in cells {
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{},{},{},{},{:.4}\n",
            c.model, c.behaviour, c.layer, c.beta, c.mean_prob_matching, c.n, c.n_pairs, c.balanced_letters,
            c.half_split_cosine.map_or(String::new(), |x| format!("{x:.4}")), c.vector_norm
        ));
    }
    write_atomic(&dir.join("results.csv"), csv.as_bytes())?;
    // Markdown: one table per model, behaviours x betas.
    let mut md = String::new();
    let mut by_model: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
    for c in cells {
        by_model.entry(&c.model).or_default().push(c);
    }
    for (model, cs) in by_model {
        let mut betas: Vec<f64> = cs.iter().map(|c| c.beta).collect();
        betas.sort_by(f64::total_cmp);
        betas.dedup();
        md.push_str(&format!("### {model}\n\n| behaviour | layer | {} | half-split cos |\n|---|---:|{}---:|\n",
            betas.iter().map(|b| format!("beta {b}")).collect::<Vec<_>>().join(" | "), "---:|".repeat(betas.len())));
        let mut rows: BTreeMap<(String, usize, bool), BTreeMap<String, f64>> = BTreeMap::new();
        let mut stab: BTreeMap<(String, usize, bool), Option<f64>> = BTreeMap::new();
        for c in &cs {
            let k = (c.behaviour.clone(), c.layer, c.balanced_letters);
            rows.entry(k.clone()).or_default().insert(format!("{}", c.beta), c.mean_prob_matching);
            stab.insert(k, c.half_split_cosine);
        }
        for ((b, l, bal), vals) in &rows {
            let cells: Vec<String> = betas.iter().map(|x| vals.get(&format!("{x}")).map_or("-".into(), |v| format!("{v:.3}"))).collect();
            let s = stab.get(&(b.clone(), *l, *bal)).copied().flatten().map_or("-".into(), |x| format!("{x:.2}"));
            md.push_str(&format!("| {b}{} | {l} | {} | {s} |\n", if *bal { " (balanced)" } else { "" }, cells.join(" | ")));
        }
        md.push('\n');
    }
    write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(())
}

fn run_cells(ctx: &Context, grid: &GridArgs, plan: &[(String, String, usize, Vec<f64>)]) -> Result<Vec<Cell>> {
    std::fs::create_dir_all(&grid.out)?;
    let jsonl = grid.out.join("results.jsonl");
    let mut cells = read_cells(&jsonl)?;
    let data_dir = grid.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let mut current: Option<lcross_model::Model> = None;
    for (model_spec, behaviour, layer, betas) in plan {
        let todo: Vec<f64> = betas
            .iter()
            .copied()
            .filter(|&b| {
                let probe = Cell { model: model_spec.clone(), behaviour: behaviour.clone(), layer: *layer, beta: b, mean_prob_matching: 0.0, n: 0, n_pairs: 0, balanced_letters: grid.balance_letters, half_split_cosine: None, vector_norm: 0.0 };
                !cells.iter().any(|c| key(c) == key(&probe))
            })
            .collect();
        if todo.is_empty() {
            continue;
        }
        if current.as_ref().map(|m| m.id() != model_spec.as_str()).unwrap_or(true) {
            drop(current.take()); // free the previous model before loading the next
            current = Some(ctx.load(model_spec)?);
        }
        let model = current.as_ref().expect("loaded above");
        let dir = data_dir.join("caa").join(behaviour);
        if !dir.is_dir() {
            bail!("no behaviour folder {}", dir.display());
        }
        let ex = ExtractArgs {
            model: model_spec.clone(),
            dataset: dir.join("generate_dataset.json").display().to_string(),
            layers: layer.to_string(),
            method: "mean-diff".into(),
            limit: Some(grid.limit),
            normalize: false,
            balance_letters: grid.balance_letters,
            data_dir: Some(data_dir.clone()),
            no_cache: false,
            no_prefix_sharing: false,
            no_early_exit: false,
            output: PathBuf::new(),
        };
        let (sv, _) = extract_vector(model, &ex)?;
        let items = load_ab(&dir.join("test_dataset_ab.json").display().to_string(), Some(grid.test_limit))?;
        let norm = sv.layers[layer].iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        for beta in todo {
            let r = evaluate_ab(model, &items, Some(&Steering { vector: &sv, beta, positions: Positions::All }))?;
            let cell = Cell {
                model: model_spec.clone(), behaviour: behaviour.clone(), layer: *layer, beta, mean_prob_matching: r.mean_prob_matching, n: r.n,
                n_pairs: sv.metadata.n_pairs, balanced_letters: grid.balance_letters, half_split_cosine: sv.metadata.half_split_cosine.get(layer).copied(), vector_norm: norm,
            };
            eprintln!("{model_spec} {behaviour} layer {layer} beta {beta}: {:.4}", cell.mean_prob_matching);
            append_cell(&jsonl, &cell)?;
            cells.push(cell);
            write_tables(&grid.out, &cells)?;
        }
    }
    Ok(cells)
}

fn default_layer(ctx: &Context, spec: &str, overrides: &[String]) -> Result<usize> {
    for o in overrides {
        if let Some((m, l)) = o.split_once('=') {
            if m == spec {
                return l.parse().with_context(|| format!("--layer {o}"));
            }
        }
    }
    let n = lcross_model::gguf::GgufFile::open(lcross_model::resolve(spec).map_err(anyhow::Error::msg)?.path())
        .and_then(|f| f.config())
        .map(|c| c.num_layers)
        .or_else(|_| ctx.load(spec).map(|m| m.config().num_layers))?;
    Ok((n as f64 * 0.4).round() as usize)
}

pub fn run(ctx: &Context, c: ExperimentCommand) -> Result<()> {
    match c {
        ExperimentCommand::SelfModulation(a) => {
            let behaviours: Vec<String> = if a.behaviours.is_empty() { BEHAVIOURS.iter().map(|s| s.to_string()).collect() } else { a.behaviours.clone() };
            let mut plan = Vec::new();
            for m in &a.grid.models {
                let layer = default_layer(ctx, m, &a.layer)?;
                for b in &behaviours {
                    plan.push((m.clone(), b.clone(), layer, a.betas.clone()));
                }
            }
            let cells = run_cells(ctx, &a.grid, &plan)?;
            summarize(ctx, &a.grid.out, &cells)
        }
        ExperimentCommand::LayerSweep(a) => {
            let layers = parse_layers(&a.layers)?;
            let mut plan = Vec::new();
            for m in &a.grid.models {
                for &l in &layers {
                    plan.push((m.clone(), a.behaviour.clone(), l, vec![-a.beta, a.beta]));
                }
            }
            let cells = run_cells(ctx, &a.grid, &plan)?;
            summarize(ctx, &a.grid.out, &cells)
        }
    }
}

fn summarize(ctx: &Context, out: &Path, cells: &[Cell]) -> Result<()> {
    let md = std::fs::read_to_string(out.join("results.md")).unwrap_or_default();
    ctx.print(&cells, || print!("{md}"))
}
