//! Self-modulation grids (`lcross experiment self-modulation` and `layer-sweep`): per
//! model, behaviour and layer, the model's own CAA vector evaluated with the A/B metric at
//! several betas. Every finished cell is appended to `results.jsonl` (synced); a rerun
//! skips the cells already there, so an interrupted run resumes. `results.csv` and
//! `results.md` are rewritten from it after every cell.
//!
//! The cross-model study is `lcross reproduce` ([`crate::reproduce`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use lcross_core::artifact::write_atomic;
use lcross_core::eval::{evaluate_ab_cached, Steering};
use lcross_core::store::Store;
use lcross_model::{Model, Positions};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::pipeline::{self, VectorRecipe};
use crate::reproduce::runner::ModelLoader;

/// What every cell of a grid shares.
#[derive(Debug, Clone)]
pub struct GridSettings {
    /// Pairs used for extraction (first N of generate_dataset.json).
    pub limit: usize,
    /// Test questions per behaviour (first N of test_dataset_ab.json).
    pub test_limit: usize,
    /// Average A- and B-matching pairs separately.
    pub balance_letters: bool,
    pub data_dir: PathBuf,
    pub out: PathBuf,
    /// Weights, dtype, device and runtime revision of the loader: part of every cell's
    /// resume key.
    pub numerics: String,
}

/// One cell to run: a model, a behaviour, a layer and its betas.
#[derive(Debug, Clone)]
pub struct PlannedCell {
    pub model: String,
    pub behaviour: String,
    pub layer: usize,
    pub betas: Vec<f64>,
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

fn settings_key(g: &GridSettings) -> String {
    format!("limit={};test_limit={};balance_letters={};{};", g.limit, g.test_limit, g.balance_letters, g.numerics)
}

fn io(path: &Path, e: std::io::Error) -> EvalError {
    EvalError::io(path, e)
}

fn read_cells(path: &Path) -> Result<Vec<Cell>> {
    match std::fs::read_to_string(path) {
        // A line cut by an interrupted write is skipped.
        Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path, e)),
    }
}

fn append_cell(path: &Path, c: &Cell) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(c)?).map_err(|e| io(path, e))?;
    f.sync_data().map_err(|e| io(path, e))
}

/// Run (or resume) `plan`, loading each model as it comes (one at a time).
pub fn run_cells(grid: &GridSettings, plan: &[PlannedCell], load: &ModelLoader) -> Result<Vec<Cell>> {
    std::fs::create_dir_all(&grid.out).map_err(|e| io(&grid.out, e))?;
    let jsonl = grid.out.join("results.jsonl");
    let mut cells = read_cells(&jsonl)?;
    let settings = settings_key(grid);
    let mut current: Option<Model> = None;
    for p in plan {
        let probe = |beta: f64| Cell {
            model: p.model.clone(),
            behaviour: p.behaviour.clone(),
            layer: p.layer,
            beta,
            mean_prob_matching: 0.0,
            n: 0,
            n_pairs: 0,
            balanced_letters: grid.balance_letters,
            half_split_cosine: None,
            vector_norm: 0.0,
            settings: settings.clone(),
        };
        let todo: Vec<f64> = p.betas.iter().copied().filter(|&b| !cells.iter().any(|c| key(c) == key(&probe(b)))).collect();
        if todo.is_empty() {
            continue;
        }
        if current.as_ref().is_none_or(|m| m.id() != p.model.as_str()) {
            drop(current.take()); // free the previous model before loading the next
            current = Some(load(&p.model).map_err(|e| EvalError::Load { model: p.model.clone(), reason: e.to_string() })?);
        }
        let model = current.as_ref().expect("loaded above");
        let file = |name: &str| lcross_core::data::data_file(&grid.data_dir, &format!("caa/{}/{name}", p.behaviour));
        let ds = lcross_core::dataset::load_caa_pairs(&file("generate_dataset.json")?)?.limit(Some(grid.limit));
        let recipe = VectorRecipe { balance_letters: grid.balance_letters, ..VectorRecipe::mean_diff(vec![p.layer]) };
        let (sv, _) = pipeline::extract_vector(model, &ds, &recipe)?;
        let items = pipeline::load_ab(&file("test_dataset_ab.json")?.display().to_string(), Some(grid.test_limit))?;
        let norm = sv.layers[&p.layer].iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let conditions: Vec<Option<Steering>> = todo.iter().map(|&beta| Some(Steering::add(&sv, beta, Positions::All))).collect();
        let results = evaluate_ab_cached(model, &items, &conditions, &mut Store::open_default()?)?;
        for (beta, r) in todo.into_iter().zip(results) {
            let cell = Cell {
                mean_prob_matching: r.mean_prob_matching,
                n: r.n,
                n_pairs: sv.metadata.n_pairs,
                half_split_cosine: sv.metadata.half_split_cosine.get(&p.layer).copied(),
                vector_norm: norm,
                ..probe(beta)
            };
            eprintln!("{} {} layer {} beta {beta}: {:.4}", p.model, p.behaviour, p.layer, cell.mean_prob_matching);
            append_cell(&jsonl, &cell)?;
            cells.push(cell);
            write_tables(&grid.out, &cells)?;
        }
    }
    Ok(cells)
}

/// `results.csv` and `results.md` (one table per model: behaviours x betas).
pub fn write_tables(dir: &Path, cells: &[Cell]) -> Result<()> {
    let mut csv = String::from("model,behaviour,layer,beta,mean_prob_matching,n,n_pairs,balanced_letters,half_split_cosine,vector_norm\n");
    for c in cells {
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{},{},{},{},{:.4}\n",
            c.model,
            c.behaviour,
            c.layer,
            c.beta,
            c.mean_prob_matching,
            c.n,
            c.n_pairs,
            c.balanced_letters,
            c.half_split_cosine.map_or(String::new(), |x| format!("{x:.4}")),
            c.vector_norm
        ));
    }
    write_atomic(&dir.join("results.csv"), csv.as_bytes())?;
    let mut md = String::new();
    let mut by_model: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
    for c in cells {
        by_model.entry(&c.model).or_default().push(c);
    }
    for (model, cs) in by_model {
        let mut betas: Vec<f64> = cs.iter().map(|c| c.beta).collect();
        betas.sort_by(f64::total_cmp);
        betas.dedup();
        md.push_str(&format!(
            "### {model}\n\n| behaviour | layer | {} | half-split cos |\n|---|---:|{}---:|\n",
            betas.iter().map(|b| format!("beta {b}")).collect::<Vec<_>>().join(" | "),
            "---:|".repeat(betas.len())
        ));
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
