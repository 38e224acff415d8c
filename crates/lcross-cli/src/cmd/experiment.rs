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
use lcross_core::eval::{evaluate_ab_cached, Steering};
use lcross_core::store::Store;
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
    /// L-Cross on CAA behaviours for model pairs: no / self / L-Cross (concept-specific T,
    /// concept-unrelated T) / random T / identity, cosines to the native vector, and the
    /// similarity of maps fitted on different concepts (RQ1, RQ2, RQ3 and Table 4).
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

/// One row of the cross-model results.
#[derive(Serialize, Deserialize, Clone)]
pub struct CrossRow {
    pub source: String,
    pub target: String,
    pub behaviour: String,
    /// none | self | lcross-specific | lcross-unrelated | lcross-heldout | lcross-pooled | random-T | identity
    pub method: String,
    /// Corpus of the map (for L-Cross rows).
    pub map_corpus: Option<String>,
    pub beta: f64,
    pub mean_prob_matching: f64,
    pub cosine_to_native: Option<f64>,
    pub train_r2: Option<f64>,
    pub heldout_r2: Option<f64>,
    pub interpolating: Option<bool>,
    /// Texts the map was fitted on.
    #[serde(default)]
    pub map_n: Option<usize>,
    /// Set when the metric was not re-evaluated because the steering was identical to a row
    /// already measured (same target, behaviour and vector): which row.
    #[serde(default)]
    pub copied_from: Option<String>,
    /// Settings that change the number (pairs, test questions, held-out pairs, pooled,
    /// weights, dtype, device, runtime revision): part of the resume key.
    #[serde(default)]
    pub settings: String,
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
    /// Everything else that changes the number (pairs, test questions, weights, dtype,
    /// device, runtime revision): part of the resume key, so a rerun with other settings
    /// never reuses this cell.
    #[serde(default)]
    pub settings: String,
}

fn key(c: &Cell) -> String {
    format!("{}|{}|{}|{}|{}|{}", c.model, c.behaviour, c.layer, c.beta, c.balanced_letters, c.settings)
}

/// The settings part of a resume key.
fn grid_settings(ctx: &Context, grid: &GridArgs, extra: &str) -> String {
    format!("limit={};test_limit={};balance_letters={};{};{extra}", grid.limit, grid.test_limit, grid.balance_letters, ctx.numerics())
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
    let settings = grid_settings(ctx, grid, "");
    for (model_spec, behaviour, layer, betas) in plan {
        let todo: Vec<f64> = betas
            .iter()
            .copied()
            .filter(|&b| {
                let probe = Cell { model: model_spec.clone(), behaviour: behaviour.clone(), layer: *layer, beta: b, mean_prob_matching: 0.0, n: 0, n_pairs: 0, balanced_letters: grid.balance_letters, half_split_cosine: None, vector_norm: 0.0, settings: settings.clone() };
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
            custom: Default::default(),
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
        let conditions: Vec<Option<Steering>> = todo.iter().map(|&beta| Some(Steering { vector: &sv, beta, positions: Positions::All })).collect();
        let results = evaluate_ab_cached(model, &items, &conditions, &mut Store::open_default()?)?;
        for (beta, r) in todo.into_iter().zip(results) {
            let cell = Cell {
                model: model_spec.clone(), behaviour: behaviour.clone(), layer: *layer, beta, mean_prob_matching: r.mean_prob_matching, n: r.n,
                n_pairs: sv.metadata.n_pairs, balanced_letters: grid.balance_letters, half_split_cosine: sv.metadata.half_split_cosine.get(layer).copied(), vector_norm: norm,
                settings: settings.clone(),
            };
            eprintln!("{model_spec} {behaviour} layer {layer} beta {beta}: {:.4}", cell.mean_prob_matching);
            append_cell(&jsonl, &cell)?;
            cells.push(cell);
            write_tables(&grid.out, &cells)?;
        }
    }
    Ok(cells)
}

pub(crate) fn default_layer(ctx: &Context, spec: &str, overrides: &[String]) -> Result<usize> {
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
    Ok(lcross_model::registry::default_steering_layer(spec, n))
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
        ExperimentCommand::Cross(a) => run_cross(ctx, &a),
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

fn cross_key(r: &CrossRow) -> String {
    format!("{}|{}|{}|{}|{}|{}", r.source, r.target, r.behaviour, r.method, r.beta, r.settings)
}

fn write_cross_tables(dir: &Path, rows: &[CrossRow], maps: &[(String, String, String, lcross_core::analyses::MapComparison)]) -> Result<()> {
    let mut csv = String::from("source,target,behaviour,method,map_corpus,beta,mean_prob_matching,cosine_to_native,train_r2,heldout_r2,interpolating\n");
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.4}"));
    for r in rows {
        csv.push_str(&format!("{},{},{},{},{},{},{:.6},{},{},{},{}\n", r.source, r.target, r.behaviour, r.method, r.map_corpus.clone().unwrap_or_default(), r.beta,
            r.mean_prob_matching, opt(r.cosine_to_native), opt(r.train_r2), opt(r.heldout_r2), r.interpolating.map_or(String::new(), |b| b.to_string())));
    }
    write_atomic(&dir.join("cross.csv"), csv.as_bytes())?;
    let methods = ["none", "self", "lcross-specific", "lcross-unrelated", "lcross-heldout", "lcross-pooled", "random-T", "identity"];
    let mut md = String::from("| source -> target | behaviour | beta | none | self | L-Cross (specific T) | L-Cross (unrelated T) | L-Cross (held-out T) | L-Cross (pooled T) | random T | identity | cos specific / unrelated / held-out / pooled | held-out R^2 specific / unrelated / held-out / pooled |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    let mut groups: BTreeMap<(String, String, String, String), Vec<&CrossRow>> = BTreeMap::new();
    for r in rows {
        if r.method != "none" {
            groups.entry((r.source.clone(), r.target.clone(), r.behaviour.clone(), format!("{}", r.beta))).or_default().push(r);
        }
    }
    let lcross = ["lcross-specific", "lcross-unrelated", "lcross-heldout", "lcross-pooled"];
    for ((s, t, b, beta), rs) in &groups {
        let none = rows.iter().find(|r| r.source == *s && r.target == *t && r.behaviour == *b && r.method == "none");
        let get = |m: &str| -> Option<&CrossRow> { if m == "none" { none } else { rs.iter().copied().find(|r| r.method == m) } };
        let cells: Vec<String> = methods.iter().map(|m| get(m).map_or("-".into(), |r| format!("{:.3}", r.mean_prob_matching))).collect();
        let cos: Vec<String> = lcross.iter().map(|m| get(m).and_then(|r| r.cosine_to_native).map_or("-".into(), |c| format!("{c:.2}"))).collect();
        let r2: Vec<String> = lcross.iter().map(|m| get(m).and_then(|r| r.heldout_r2).map_or("-".into(), |c| format!("{c:.2}"))).collect();
        md.push_str(&format!("| {s} -> {t} | {b} | {beta} | {} | {} | {} |\n", cells.join(" | "), cos.join(" / "), r2.join(" / ")));
    }
    md.push_str("\nMaps: specific and unrelated T are fitted on 2 x --limit texts of a behaviour; held-out T on the next --heldout-pairs pairs of the same concept (the vector's pairs are not in its corpus); pooled T on all behaviours' corpora together.");
    // Which conditions interpolate (n <= d_s, X T = Y exactly) depends on the models and
    // limits of this run: say it from the rows.
    let interpolating: Vec<String> = lcross
        .iter()
        .filter_map(|m| {
            let fitted: Vec<&CrossRow> = rows.iter().filter(|r| r.method == *m && r.interpolating.is_some()).collect();
            let yes = fitted.iter().filter(|r| r.interpolating == Some(true)).count();
            (!fitted.is_empty()).then(|| format!("{m} {yes}/{}", fitted.len()))
        })
        .collect();
    md.push_str(&format!(" Rows whose map interpolates its corpus (n <= d_s, X T = Y exactly): {}.\n", interpolating.join(", ")));
    if !maps.is_empty() {
        md.push_str("\nMaps fitted on different concepts (Table 4):\n\n| pair | map A | map B | SSIM | mean abs spectral diff | Frobenius |\n|---|---|---|---:|---:|---:|\n");
        for (pair, a, b, c) in maps {
            md.push_str(&format!("| {pair} | {a} | {b} | {:.4} | {:.4} | {:.4} |\n", c.ssim, c.spectral_mean_abs_diff, c.frobenius));
        }
    }
    write_atomic(&dir.join("cross.md"), md.as_bytes())?;
    Ok(())
}

fn run_cross(ctx: &Context, a: &CrossArgs) -> Result<()> {
    use crate::cmd::maps::{align_models, transfer_vector, AlignArgs};
    use lcross_core::analyses::{compare, random_like};
    use lcross_core::steering::cosine;
    let out = &a.grid.out;
    std::fs::create_dir_all(out)?;
    let jsonl = out.join("cross.jsonl");
    let mut rows: Vec<CrossRow> = if jsonl.exists() { std::fs::read_to_string(&jsonl)?.lines().filter_map(|l| serde_json::from_str(l).ok()).collect() } else { vec![] };
    let data_dir = a.grid.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let mut store = Store::open_default()?;
    let mut map_rows = Vec::new();
    for pair in &a.pairs {
        let (src_id, tgt_id) = pair.split_once(':').with_context(|| format!("--pairs {pair}: expected SOURCE:TARGET"))?;
        let src = ctx.load(src_id)?;
        let tgt = ctx.load(tgt_id)?;
        let ls = default_layer(ctx, src_id, &a.layer)?;
        let lt = default_layer(ctx, tgt_id, &a.layer)?;
        let mut specific_maps: Vec<(String, faer::Mat<f64>)> = Vec::new();
        let pooled = if a.no_pooled {
            None
        } else {
            let vdir = out.join("vectors");
            std::fs::create_dir_all(&vdir)?;
            let path = vdir.join(format!("map.{src_id}.{tgt_id}.pooled.safetensors"));
            let m = pooled_map(&src, &tgt, (ls, lt), &a.behaviours, &data_dir, a.grid.limit)?;
            m.save(&path)?;
            Some((m, path))
        };
        for (k, w1) in a.behaviours.iter().enumerate() {
            let w2 = &a.behaviours[(k + 1) % a.behaviours.len()];
            let file = |w: &str, f: &str| data_dir.join("caa").join(w).join(f).display().to_string();
            let ex = |model: &str, layer: usize| ExtractArgs {
                custom: Default::default(),
                model: model.into(), dataset: file(w1, "generate_dataset.json"), layers: layer.to_string(), method: "mean-diff".into(), limit: Some(a.grid.limit),
                normalize: false, balance_letters: a.grid.balance_letters, data_dir: Some(data_dir.clone()), no_cache: false, no_prefix_sharing: false, no_early_exit: false, output: PathBuf::new(),
            };
            let (sv_s, _) = extract_vector(&src, &ex(src_id, ls))?;
            let (sv_t, _) = extract_vector(&tgt, &ex(tgt_id, lt))?;
            let vdir = out.join("vectors");
            std::fs::create_dir_all(&vdir)?;
            let sv_s_path = vdir.join(format!("{src_id}.{w1}.safetensors"));
            sv_s.save(&sv_s_path)?;
            let align = |corpus: &str, est: &str, skip: usize, limit: usize, name: &str| -> Result<(lcross_core::maps::LinearMap, PathBuf)> {
                let args = AlignArgs {
                    source: src_id.into(), source_layer: ls, target: tgt_id.into(), target_layer: lt, corpus: corpus.into(), limit: Some(limit), skip,
                    estimator: est.into(), vector: None, native: None, data_dir: Some(data_dir.clone()), no_cache: false, output: vdir.join(name),
                };
                let m = align_models(&src, &tgt, &args)?;
                m.save(&args.output)?;
                Ok((m, args.output))
            };
            let limit = a.grid.limit;
            let (m_spec, p_spec) = align(&file(w1, "generate_dataset.json"), "ols", 0, limit, &format!("map.{src_id}.{tgt_id}.{w1}.safetensors"))?;
            let (m_unrel, p_unrel) = align(&file(w2, "generate_dataset.json"), "ols", 0, limit, &format!("map.{src_id}.{tgt_id}.{w2}-for-{w1}.safetensors"))?;
            let (m_rand, p_rand) = align(&file(w1, "generate_dataset.json"), "random", 0, limit, &format!("map.{src_id}.{tgt_id}.random.safetensors"))?;
            let heldout = if a.heldout_pairs > 0 {
                Some(align(&file(w1, "generate_dataset.json"), "ols", limit, a.heldout_pairs, &format!("map.{src_id}.{tgt_id}.{w1}-heldout.safetensors"))?)
            } else {
                None
            };
            specific_maps.push((w1.clone(), m_spec.t.clone()));
            let native = &sv_t.layers[&lt];
            let mut conditions: Vec<(String, Option<String>, lcross_core::steering::SteeringVector, Option<&lcross_core::maps::MapMetadata>)> = vec![("self".into(), None, sv_t.clone(), None)];
            conditions.push(("lcross-specific".into(), Some(w1.clone()), transfer_vector(&sv_s, &m_spec, &p_spec, false)?, Some(&m_spec.metadata)));
            conditions.push(("lcross-unrelated".into(), Some(w2.clone()), transfer_vector(&sv_s, &m_unrel, &p_unrel, false)?, Some(&m_unrel.metadata)));
            if let Some((m, p)) = &heldout {
                conditions.push(("lcross-heldout".into(), Some(m.metadata.corpus.clone()), transfer_vector(&sv_s, m, p, false)?, Some(&m.metadata)));
            }
            if let Some((m, p)) = &pooled {
                conditions.push(("lcross-pooled".into(), Some(m.metadata.corpus.clone()), transfer_vector(&sv_s, m, p, false)?, Some(&m.metadata)));
            }
            conditions.push(("random-T".into(), Some(w1.clone()), transfer_vector(&sv_s, &m_rand, &p_rand, false)?, Some(&m_rand.metadata)));
            if src.config().hidden_size == tgt.config().hidden_size {
                let mut id = sv_s.clone();
                id.metadata.model_id = tgt_id.into();
                id.metadata.model_sha256 = tgt.file_sha256()?;
                id.layers = [(lt, sv_s.layers[&ls].clone())].into_iter().collect();
                id.metadata.layers = vec![lt];
                conditions.push(("identity".into(), None, id, None));
            }
            let items = load_ab(&file(w1, "test_dataset_ab.json"), Some(a.grid.test_limit))?;
            let push = |row: CrossRow, rows: &mut Vec<CrossRow>| -> Result<()> {
                eprintln!("{} -> {} {} {} beta {}: {:.4}", row.source, row.target, row.behaviour, row.method, row.beta, row.mean_prob_matching);
                append_line(&jsonl, &row)?;
                rows.push(row);
                Ok(())
            };
            let base = CrossRow { source: src_id.into(), target: tgt_id.into(), behaviour: w1.clone(), method: "none".into(), map_corpus: None, beta: 0.0,
                mean_prob_matching: 0.0, cosine_to_native: None, train_r2: None, heldout_r2: None, interpolating: None, map_n: None, copied_from: None,
                settings: grid_settings(ctx, &a.grid, &format!("heldout_pairs={};pooled={}", a.heldout_pairs, !a.no_pooled)) };
            // The unsteered and self-steered rows recur for every pair with this target: the
            // evaluation cache answers them after the first time.
            if !rows.iter().any(|r| cross_key(r) == cross_key(&base)) {
                let r = evaluate_ab_cached(&tgt, &items, &[None], &mut store)?.remove(0);
                push(CrossRow { mean_prob_matching: r.mean_prob_matching, ..base.clone() }, &mut rows)?;
            }
            for &beta in &a.betas {
                for (method, corpus, v, meta) in &conditions {
                    let row = CrossRow {
                        method: method.clone(), map_corpus: corpus.clone(), beta,
                        cosine_to_native: Some(cosine(&v.layers[&lt], native)),
                        train_r2: meta.map(|m| m.diagnostics.train_r2), heldout_r2: meta.and_then(|m| m.diagnostics.heldout_r2),
                        interpolating: meta.map(|m| m.diagnostics.interpolating), map_n: meta.map(|m| m.diagnostics.n), ..base.clone()
                    };
                    if rows.iter().any(|r| cross_key(r) == cross_key(&row)) {
                        continue;
                    }
                    // A vector equal to the native one (the interpolation regime gives exactly
                    // that) steers exactly as self modulation: copy that row.
                    let self_row = || rows.iter().find(|r| r.target == tgt_id && r.behaviour == *w1 && r.method == "self" && r.beta == beta).cloned();
                    if let Some(prev) = self_row().filter(|_| method != "self" && same_vector(&v.layers[&lt], native)) {
                        push(CrossRow { mean_prob_matching: prev.mean_prob_matching, copied_from: Some(cross_key(&prev)), ..row }, &mut rows)?;
                        continue;
                    }
                    let r = evaluate_ab_cached(&tgt, &items, &[Some(Steering { vector: v, beta, positions: Positions::All })], &mut store)?.remove(0);
                    push(CrossRow { mean_prob_matching: r.mean_prob_matching, ..row }, &mut rows)?;
                }
            }
            write_cross_tables(out, &rows, &map_rows)?;
        }
        for i in 0..specific_maps.len() {
            for j in i + 1..specific_maps.len() {
                map_rows.push((pair.clone(), specific_maps[i].0.clone(), specific_maps[j].0.clone(), compare(&specific_maps[i].1, &specific_maps[j].1)?));
            }
            let rnd = random_like(&specific_maps[i].1, i as u64);
            map_rows.push((pair.clone(), specific_maps[i].0.clone(), "random (same shape and scale)".into(), compare(&specific_maps[i].1, &rnd)?));
        }
        write_cross_tables(out, &rows, &map_rows)?;
    }
    let md = std::fs::read_to_string(out.join("cross.md")).unwrap_or_default();
    ctx.print(&rows, || print!("{md}"))
}

/// Equal up to float rounding (relative L2 difference below 1e-4: a steering difference
/// that small moves the A/B metric by far less than its 3-decimal precision).
fn same_vector(a: &[f32], b: &[f32]) -> bool {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    a.len() == b.len() && diff <= 1e-4 * norm.max(f64::MIN_POSITIVE)
}

/// One OLS map fitted on the first `limit` pairs of every behaviour's corpus together (the
/// non-interpolating regime once 2 x limit x behaviours > d_s). States come from the
/// activation cache, so behaviours already extracted cost nothing.
pub(crate) fn pooled_map(src: &lcross_model::Model, tgt: &lcross_model::Model, layers: (usize, usize), behaviours: &[String], data_dir: &Path, limit: usize) -> Result<lcross_core::maps::LinearMap> {
    Ok(lcross_eval::pipeline::pooled_map(src, tgt, layers, behaviours, data_dir, limit)?)
}

fn append_line<T: Serialize>(path: &Path, row: &T) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(row)?)?;
    f.sync_data()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::same_vector;

    #[test]
    fn same_vector_accepts_rounding_only() {
        let a = vec![1.0f32, -2.0, 3.0];
        assert!(same_vector(&a, &a));
        assert!(same_vector(&[1.00001, -2.0, 3.0], &a));
        assert!(!same_vector(&[1.01, -2.0, 3.0], &a));
        assert!(!same_vector(&[2.0, -4.0, 6.0], &a), "a scaled vector steers differently");
        assert!(!same_vector(&a[..2], &a));
    }
}
