//! `lcross experiment`: self-modulation grids and the cross-model study from flags.
//! `self-modulation` and `layer-sweep` run `lcross_eval::experiments`; `cross` builds an
//! experiment of `lcross reproduce` (docs/REPRODUCTION.md) from its flags and runs it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use lcross_eval::experiments::{self, Cell, GridSettings, PlannedCell};
use lcross_eval::reproduce::config::{CrossPlan, ExperimentFile, CAA_BEHAVIOURS};
use lcross_eval::reproduce::runner::{self, ExperimentSource, RunRequest};

use crate::common::Context;

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Self modulation on CAA behaviours: extract each behaviour's vector from the model
    /// and evaluate the A/B metric for several betas.
    SelfModulation(SelfArgs),
    /// Which layer steers best: for one behaviour, the A/B metric at -beta and +beta per layer.
    LayerSweep(LayerSweepArgs),
    /// L-Cross on CAA behaviours for model pairs: no / self / L-Cross (concept-specific T,
    /// concept-unrelated T, held-out T, pooled T) / random T / identity, cosines to the
    /// native vector, and the similarity of maps fitted on different concepts (RQ1-RQ3,
    /// Table 4). Runs `lcross reproduce` on an experiment made from these flags: one run
    /// directory per pair (report.md, cells.jsonl, cells.csv).
    Cross(CrossArgs),
}

#[derive(Args)]
pub struct CrossArgs {
    #[command(flatten)]
    grid: GridArgs,
    /// SOURCE:TARGET model pairs.
    #[arg(long, value_delimiter = ',', default_value = "smollm2-135m-instruct:qwen2.5-coder-0.5b-instruct")]
    pairs: Vec<String>,
    /// Behaviours; the concept-unrelated map of a behaviour is fitted on the next one in this list.
    #[arg(long, value_delimiter = ',', default_value = "refusal,sycophancy,survival-instinct,corrigible-neutral-HHH")]
    behaviours: Vec<String>,
    /// Layer per model as MODEL=LAYER (default: the model's measured steering layer, else 40% depth).
    #[arg(long, value_delimiter = ',')]
    layer: Vec<String>,
    /// Multipliers for the steered conditions.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_value = "16")]
    betas: Vec<f64>,
    /// Pairs of the same concept, after the --limit pairs the vectors come from, for the
    /// held-out condition (a concept-specific map that did not see the vector's pairs);
    /// 0 turns the condition off.
    #[arg(long, default_value_t = 128)]
    heldout_pairs: usize,
    /// Skip the pooled condition (one map fitted on the corpora of all --behaviours: n > d_s,
    /// so OLS does not interpolate).
    #[arg(long)]
    no_pooled: bool,
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
    /// Data directory (default $LCROSS_DATA, else ~/.cache/lcross/data; `lcross data fetch` fills it).
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
    /// Layer per model as MODEL=LAYER (default: the model's measured steering layer, else 40% depth).
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

impl GridArgs {
    fn settings(&self, ctx: &Context) -> GridSettings {
        GridSettings {
            limit: self.limit,
            test_limit: self.test_limit,
            balance_letters: self.balance_letters,
            data_dir: self.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir),
            out: self.out.clone(),
            numerics: ctx.numerics(),
        }
    }
}

fn run_cells(ctx: &Context, grid: &GridArgs, plan: &[PlannedCell]) -> Result<Vec<Cell>> {
    let load = |id: &str| ctx.load(id).map_err(|e| format!("{e:#}"));
    Ok(experiments::run_cells(&grid.settings(ctx), plan, &load)?)
}

/// The layer of `spec`: a `--layer MODEL=LAYER` override, else its default steering layer.
fn default_layer(spec: &str, overrides: &[String]) -> Result<usize> {
    for o in overrides {
        if let Some((m, l)) = o.split_once('=') {
            if m == spec {
                return l.parse().with_context(|| format!("--layer {o}"));
            }
        }
    }
    Ok(lcross_model::registry::steering_layer_of(spec)?)
}

pub fn run(ctx: &Context, c: ExperimentCommand) -> Result<()> {
    match c {
        ExperimentCommand::SelfModulation(a) => {
            let behaviours: Vec<String> = if a.behaviours.is_empty() { CAA_BEHAVIOURS.iter().map(|s| s.to_string()).collect() } else { a.behaviours.clone() };
            let mut plan = Vec::new();
            for m in &a.grid.models {
                let layer = default_layer(m, &a.layer)?;
                for b in &behaviours {
                    plan.push(PlannedCell { model: m.clone(), behaviour: b.clone(), layer, betas: a.betas.clone() });
                }
            }
            let cells = run_cells(ctx, &a.grid, &plan)?;
            summarize(ctx, &a.grid.out, &cells)
        }
        ExperimentCommand::Cross(a) => run_cross(ctx, &a),
        ExperimentCommand::LayerSweep(a) => {
            let layers = lcross_core::steer::parse_layers(&a.layers)?;
            let mut plan = Vec::new();
            for m in &a.grid.models {
                for &l in &layers {
                    plan.push(PlannedCell { model: m.clone(), behaviour: a.behaviour.clone(), layer: l, betas: vec![-a.beta, a.beta] });
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

fn run_cross(ctx: &Context, a: &CrossArgs) -> Result<()> {
    let mut reports = String::new();
    let mut summaries = Vec::new();
    for pair in &a.pairs {
        let (source, target) = pair.split_once(':').with_context(|| format!("--pairs {pair}: expected SOURCE:TARGET"))?;
        let layers = [source, target].iter().map(|m| Ok((m.to_string(), default_layer(m, &a.layer)?))).collect::<Result<_>>()?;
        let plan = CrossPlan {
            source,
            target,
            behaviours: &a.behaviours,
            betas: &a.betas,
            layers,
            heldout_pairs: a.heldout_pairs,
            pooled: !a.no_pooled,
            balance_letters: a.grid.balance_letters,
            extract_pairs: a.grid.limit,
            test_questions: a.grid.test_limit,
            data_dir: a.grid.data_dir.clone(),
        };
        let file = ExperimentFile::cross(&plan);
        let out = if a.pairs.len() == 1 { a.grid.out.clone() } else { a.grid.out.join(&file.name) };
        let how = format!(
            "lcross experiment cross --pairs {pair} (flags: behaviours {:?}, betas {:?}, limit {}, test-limit {}, held-out pairs {}, pooled {})",
            a.behaviours, a.betas, a.grid.limit, a.grid.test_limit, a.heldout_pairs, !a.no_pooled
        );
        let request =
            RunRequest { experiment: ExperimentSource::Built(Box::new(file), how), profile: None, shard: None, out: Some(out), numerics: ctx.numerics() };
        let load = |id: &str| ctx.load(id).map_err(|e| format!("{e:#}"));
        let s = runner::run(request, &load)?;
        reports.push_str(&s.report);
        summaries.push(s);
    }
    ctx.print(&summaries, || print!("{reports}"))
}
