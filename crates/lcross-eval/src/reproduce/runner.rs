//! Runs an experiment's cells: one group (target, source, concept, vector kind) at a
//! time, every finished cell appended to `cells.jsonl` as it is done, so a rerun skips
//! it; `run.json` records the version, the experiment, the numerics and the model hashes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use lcross_core::analyses::{compare, random_like};
use lcross_core::artifact::write_atomic;
use lcross_core::eval::{evaluate_ab_cached, Steering};
use lcross_core::maps::{Estimator, LinearMap};
use lcross_core::steering::{cosine, Method, SteeringVector};
use lcross_core::store::Store;
use lcross_core::tsne::{tsne, TsneOptions};
use lcross_model::{Model, Positions, Sampling};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cells::{merge, CellLog, CellRecord};
use super::config::{is_repe, metric_direction, Beta, ConditionKind, Experiment, ExperimentFile, VectorKind, DEFAULT_JUDGE, GENERATED};
use super::grid::{groups, plan, CellKey, Group, Shard, EMOTION, FAIR, HARM, MAP_SIMILARITY, OPEN_ENDED, TSNE};
use super::report::{self, BETA_CHOSEN};
use crate::answers::GenerationSettings;
use crate::calibrate::{self, CalibrateOptions, Direction, Part, SweepSetup, DEFAULT_DRIFT_BUDGET, DEFAULT_MAX_PERPLEXITY_RATIO};
use crate::conditions::Condition;
use crate::error::{EvalError, Result};
use crate::judge::local::LocalJudge;
use crate::judge::{Judge, JudgeFormat};
use crate::metrics::{fair, harm, judged, Metric, Setup};
use crate::pipeline::{self, Corpus, VectorRecipe};
use crate::report::EvalRow;
use crate::rubric;

/// Prompt tokens a generated metric's row is sized for (its answer tokens come on top).
const PROMPT_TOKENS_HINT: usize = 64;

/// Loads a model by id (the caller's choice of weights, dtype and device); the error is
/// shown as it is.
pub type ModelLoader<'a> = dyn Fn(&str) -> std::result::Result<Model, String> + 'a;

/// What a run directory records about how it was made (`run.json`).
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct RunInfo {
    pub lcross_version: String,
    pub experiment: serde_json::Value,
    /// sha256 of the resolved experiment and numerics: shards with the same one can be
    /// merged.
    pub experiment_sha256: String,
    /// sha256 of what changes a cell's numbers (sizes, seed, layers, data, numerics) but
    /// not which cells there are: a run whose grid grew or shrank keeps its finished cells.
    #[serde(default)]
    pub numbers_sha256: String,
    pub config_file: Option<String>,
    pub config_text: Option<String>,
    /// Weights, dtype, device, runtime revision.
    pub numerics: String,
    pub shard: Option<Shard>,
    /// Model id -> file sha256, for the models this run loaded.
    pub models: BTreeMap<String, String>,
    #[serde(default)]
    pub merged_from: Vec<String>,
}

/// Where the experiment comes from.
pub enum ExperimentSource<'a> {
    /// A TOML file (its text is kept in run.json).
    File(&'a Path),
    /// Built in code (e.g. by `lcross experiment cross` from its flags), with a line
    /// saying how, kept in run.json as the config file.
    Built(Box<ExperimentFile>, String),
}

/// A run to make: the experiment, its profile and shard, where to write.
pub struct RunRequest<'a> {
    pub experiment: ExperimentSource<'a>,
    pub profile: Option<&'a str>,
    pub shard: Option<Shard>,
    /// Default: results/<name>[-<profile>], plus shard-i-of-n/ with a shard.
    pub out: Option<PathBuf>,
    /// The loader's numerics (weights, dtype, device, runtime revision): part of the
    /// run's identity, so a directory never mixes numbers of two numerics.
    pub numerics: String,
}

/// What a run or merge wrote.
#[derive(Serialize)]
pub struct RunSummary {
    pub out: PathBuf,
    pub cells: usize,
    pub grid_cells: usize,
    /// report.md as written.
    #[serde(skip)]
    pub report: String,
}

fn experiment_sha(e: &Experiment, numerics: &str) -> String {
    let v = serde_json::to_string(e).unwrap_or_default();
    hex::encode(Sha256::digest(format!("{v}\n{numerics}").as_bytes()))
}

fn numbers_sha(e: &Experiment, numerics: &str) -> String {
    let mut v = serde_json::json!({"seed": e.seed, "layers": e.layers, "sizes": e.sizes, "data_dir": e.data_dir, "numerics": numerics});
    if let Some(j) = &e.judge {
        v["judge"] = j.clone().into();
    }
    if e.rescale_transfers {
        v["rescale_transfers"] = true.into();
    }
    if !e.auto_betas.is_empty() {
        v["auto_betas"] = e.auto_betas.clone().into();
    }
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

fn io(path: &Path, e: std::io::Error) -> EvalError {
    EvalError::io(path, e)
}

/// What a grid holds, without running it (`lcross reproduce --plan`): to size a Slurm job
/// array or a profile before spending hours.
#[derive(Serialize)]
pub struct PlanSummary {
    pub name: String,
    pub cells: usize,
    pub groups: usize,
    /// Cells per metric.
    pub per_metric: BTreeMap<String, usize>,
    /// Cells per target model (t-SNE cells count for their model).
    pub per_target: BTreeMap<String, usize>,
    /// With `--shard i/n`: the cells of each of the n shards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_shard: Vec<usize>,
}

/// The grid of `file` with `profile`, counted (nothing is loaded or run).
pub fn plan_summary(file: &ExperimentFile, profile: Option<&str>, shards: Option<usize>) -> Result<PlanSummary> {
    let e = file.resolve(profile)?;
    e.check_models()?;
    let cells = plan(&e);
    let gs = groups(&cells);
    let mut per_metric = BTreeMap::new();
    let mut per_target = BTreeMap::new();
    for c in &cells {
        *per_metric.entry(c.metric.clone()).or_insert(0) += 1;
        *per_target.entry(c.target.clone()).or_insert(0) += 1;
    }
    let per_shard = match shards {
        Some(n) if n > super::grid::MAX_SHARDS => return Err(EvalError::bad_value("--shard", n.to_string(), "at most 100000 shards")),
        Some(n) => {
            let mut counts = vec![0; n];
            for (g, cs) in &gs {
                counts[g.shard(n)] += cs.len();
            }
            counts
        }
        None => Vec::new(),
    };
    Ok(PlanSummary { name: e.run_name(), cells: cells.len(), groups: gs.len(), per_metric, per_target, per_shard })
}

/// Run (or resume) the cells of `req`'s shard, writing cells, CSV and report as they come.
pub fn run(req: RunRequest, load: &ModelLoader) -> Result<RunSummary> {
    let (file, config_file, config_text) = match req.experiment {
        ExperimentSource::File(path) => (ExperimentFile::load(path)?, path.display().to_string(), std::fs::read_to_string(path).ok()),
        ExperimentSource::Built(file, how) => (*file, how, None),
    };
    let e = file.resolve(req.profile)?;
    e.check_models()?;
    let out = match (&req.out, req.shard) {
        (Some(o), _) => o.clone(),
        (None, None) => PathBuf::from("results").join(e.run_name()),
        (None, Some(s)) => PathBuf::from("results").join(e.run_name()).join(format!("shard-{}-of-{}", s.index, s.count)),
    };
    std::fs::create_dir_all(&out).map_err(|x| io(&out, x))?;
    let mut info = RunInfo {
        lcross_version: lcross_core::VERSION.into(),
        experiment: serde_json::to_value(&e)?,
        experiment_sha256: experiment_sha(&e, &req.numerics),
        numbers_sha256: numbers_sha(&e, &req.numerics),
        config_file: Some(config_file),
        config_text,
        numerics: req.numerics.clone(),
        shard: req.shard,
        models: BTreeMap::new(),
        merged_from: Vec::new(),
    };
    let info_path = out.join("run.json");
    if let Ok(text) = std::fs::read_to_string(&info_path) {
        let prev: RunInfo =
            serde_json::from_str(&text).map_err(|x| EvalError::Parse { path: info_path.clone(), line: None, reason: format!("not a run record: {x}") })?;
        // run.json written before numbers_sha256 existed: derive it from its experiment
        let prev_numbers = match prev.numbers_sha256.is_empty() {
            true => experiment_from_json(&prev.experiment).map(|pe| numbers_sha(&pe, &prev.numerics)).unwrap_or_default(),
            false => prev.numbers_sha256.clone(),
        };
        let same_numbers = prev.experiment_sha256 == info.experiment_sha256 || (!prev_numbers.is_empty() && prev_numbers == info.numbers_sha256);
        if !same_numbers || prev.shard != info.shard {
            return Err(EvalError::Incompatible {
                path: out.to_path_buf(),
                reason: "it holds a run with other sizes, seed, layers, data, numerics or shard: its cells would not be comparable; choose another --out (or delete it)".into(),
            });
        }
        if prev.experiment_sha256 != info.experiment_sha256 {
            eprintln!(
                "note: the grid of {} changed (models, concepts, conditions, betas or evaluations); its finished cells that are still in the grid are kept",
                out.display()
            );
        }
        info.models = prev.models;
    }
    write_atomic(&info_path, serde_json::to_string_pretty(&info)?.as_bytes())?;

    let mut log = CellLog::open(&out)?;
    let all = plan(&e);
    let shard = req.shard.unwrap_or_else(Shard::all);
    let mine: Vec<(Group, Vec<CellKey>)> = groups(&all).into_iter().filter(|(g, _)| shard.owns(g)).collect();
    let pending: usize = mine.iter().flat_map(|(_, cs)| cs).filter(|c| !log.contains(&c.id())).count();
    let total: usize = mine.iter().map(|(_, cs)| cs.len()).sum();
    eprintln!("{}: {total} cells in this shard ({} of the grid's {}), {} to run; results in {}", e.run_name(), total, all.len(), pending, out.display());
    let bar = lcross_core::activations::progress(pending as u64, "cells");
    let mut runner = Runner {
        e: &e,
        load,
        models: HashMap::new(),
        judge: None,
        pair_counts: HashMap::new(),
        store: Store::open_default()?,
        data_dir: e.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir),
    };
    for (group, cells) in &mine {
        let todo: Vec<&CellKey> = cells.iter().filter(|c| !log.contains(&c.id())).collect();
        if todo.is_empty() {
            continue;
        }
        bar.set_message(group.id());
        runner.run_group(group, &todo, &mut log, &bar)?;
        for (id, sha) in runner.model_hashes()? {
            info.models.insert(id, sha);
        }
        write_atomic(&info_path, serde_json::to_string_pretty(&info)?.as_bytes())?;
        write_outputs(&out, &e, &info, &in_grid(log.cells(), &all))?;
    }
    bar.finish_and_clear();
    let cells = in_grid(log.cells(), &all);
    let report = write_outputs(&out, &e, &info, &cells)?;
    Ok(RunSummary { out, cells: cells.len(), grid_cells: all.len(), report })
}

/// The finished cells that belong to the grid `all` (a grid that shrank keeps the others
/// in cells.jsonl, out of the report).
fn in_grid(cells: &BTreeMap<String, CellRecord>, all: &[CellKey]) -> BTreeMap<String, CellRecord> {
    let ids: std::collections::HashSet<String> = all.iter().map(CellKey::id).collect();
    cells.iter().filter(|(id, _)| ids.contains(*id)).map(|(id, c)| (id.clone(), c.clone())).collect()
}

/// Write report.md and cells.csv; returns the report.
fn write_outputs(out: &Path, e: &Experiment, info: &RunInfo, cells: &BTreeMap<String, CellRecord>) -> Result<String> {
    let models: Vec<String> = info.models.iter().map(|(m, h)| format!("{m} (sha256 {}…)", &h[..h.len().min(12)])).collect();
    let header = format!(
        "lcross {}; numerics {}; experiment sha256 {}…; shard {}; models: {}.\nSizes: {} extraction pairs per vector and map corpus, {} A/B test questions per concept, {} held-out pairs; betas [{}]{}.",
        info.lcross_version,
        info.numerics,
        &info.experiment_sha256[..12],
        info.shard.map_or("all".into(), |s| format!("{}/{}", s.index, s.count)),
        if models.is_empty() { "-".into() } else { models.join(", ") },
        e.sizes.extract_pairs,
        e.sizes.test_questions,
        e.sizes.heldout_pairs,
        e.betas.iter().map(|b| b.key_text()).collect::<Vec<_>>().join(", "),
        if e.auto_betas.is_empty() { String::new() } else { format!(" (`auto` chooses among {:?})", e.auto_betas) }
    );
    let md = report::markdown(e, cells, &header);
    for f in report::sweep_figures(e, cells) {
        crate::plots::line_plot(&out.join(&f.path), &f.title, "beta", "A/B: P(matching answer)", (0.0, 1.0), &f.series)?;
    }
    let points = report::tsne_points(e, cells);
    if !points.is_empty() {
        crate::plots::scatter_panels(&out.join(report::TSNE_FIGURE), &points, &e.concepts)?;
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    write_atomic(&out.join("cells.csv"), report::csv(cells).as_bytes())?;
    Ok(md)
}

/// Join shard directories into `out` (default: `merged/` beside the first): cells,
/// run.json, CSV and report, as a single-machine run would have written them.
pub fn merge_runs(dirs: &[PathBuf], out: Option<&Path>) -> Result<RunSummary> {
    let first_dir = dirs.first().ok_or_else(|| EvalError::MissingInput { what: "merging".into(), needs: "the run directories to merge".into() })?;
    let infos: Vec<RunInfo> = dirs
        .iter()
        .map(|d| {
            let p = d.join("run.json");
            let text = std::fs::read_to_string(&p)
                .map_err(|x| EvalError::Incompatible { path: d.clone(), reason: format!("no run.json ({x}): is it a run directory?") })?;
            serde_json::from_str(&text).map_err(|x| EvalError::Parse { path: p.clone(), line: None, reason: format!("not a run record: {x}") })
        })
        .collect::<Result<_>>()?;
    let first = &infos[0];
    if let Some((d, _)) = dirs.iter().zip(&infos).find(|(_, i)| i.experiment_sha256 != first.experiment_sha256) {
        return Err(EvalError::Incompatible {
            path: d.clone(),
            reason: format!("a run of another experiment, profile or numerics than {}", first_dir.display()),
        });
    }
    let e = experiment_from_json(&first.experiment)?;
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => first_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")).join("merged"),
    };
    let cells = in_grid(&merge(dirs)?, &plan(&e));
    std::fs::create_dir_all(&out).map_err(|x| io(&out, x))?;
    let mut lines = String::new();
    for c in cells.values() {
        lines.push_str(&serde_json::to_string(c)?);
        lines.push('\n');
    }
    write_atomic(&out.join("cells.jsonl"), lines.as_bytes())?;
    let mut info = first.clone();
    info.shard = None;
    info.models = infos.iter().flat_map(|i| i.models.clone()).collect();
    info.merged_from = dirs.iter().map(|d| d.display().to_string()).collect();
    write_atomic(&out.join("run.json"), serde_json::to_string_pretty(&info)?.as_bytes())?;
    let report = write_outputs(&out, &e, &info, &cells)?;
    let grid = plan(&e).len();
    if cells.len() < grid {
        eprintln!("note: {} of the grid's {grid} cells are present (shards missing or unfinished)", cells.len());
    }
    Ok(RunSummary { out, cells: cells.len(), grid_cells: grid, report })
}

/// The resolved experiment stored in run.json, read back (through the file format, so
/// the same checks apply) for merges.
fn experiment_from_json(v: &serde_json::Value) -> Result<Experiment> {
    // Every field of the resolved experiment is a field of the file but `profile` (the file
    // refuses unknown fields, so a field added to one and not the other fails loudly here
    // instead of being dropped: a hand-kept list once lost `per_vector` and `per_evaluation`,
    // and merged shards were read against a grid without their scopes).
    let object = v.as_object().ok_or_else(|| EvalError::Config { origin: "run.json".into(), reason: "its `experiment` is not an object".into() })?;
    let fields: serde_json::Map<String, serde_json::Value> =
        object.iter().filter(|(k, x)| k.as_str() != "profile" && !x.is_null()).map(|(k, x)| (k.clone(), x.clone())).collect();
    let file: ExperimentFile = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|x| EvalError::Config { origin: "run.json".into(), reason: format!("an unreadable experiment: {x}") })?;
    let mut e = file.resolve(None)?;
    e.profile = v.get("profile").and_then(|p| p.as_str()).map(String::from);
    Ok(e)
}

/// Neighbours of the k-NN purity of `tsne` cells.
const TSNE_NEIGHBOURS: usize = 10;

/// Steering conditions evaluated in one batched A/B pass (their questions' unsteered
/// layers run once per pass: with 16 conditions steered at layer 14 of Qwen 0.5B's 24 the
/// shared part is 8% of the pass's blocks, 15% with 8). Each pass is stored as it ends.
const CONDITIONS_PER_PASS: usize = 16;

/// Dev questions per behaviour for the steerability scan of `lcross-autolayer-steer`.
const DEV_QUESTIONS: usize = 10;

/// Computes cells, keeping loaded models between groups.
struct Runner<'a> {
    e: &'a Experiment,
    load: &'a ModelLoader<'a>,
    models: HashMap<String, Model>,
    /// The local judge of `open-ended` cells (model id, judge), loaded when first needed.
    judge: Option<(String, LocalJudge)>,
    /// Training pairs per concept (read once: every condition of every group asks).
    pair_counts: HashMap<String, usize>,
    store: Store,
    data_dir: PathBuf,
}

/// A steering vector for the target and what to record about it.
struct Prepared {
    vector: Option<SteeringVector>,
    skipped: Option<String>,
    map: Option<LinearMap>,
    saw_vector_pairs: Option<bool>,
    /// The vector equals the target's own up to float rounding (an interpolating map gives
    /// exactly that): the cell steers with the own vector, so the evaluation caches answer
    /// it from the self cell, and the record says so (`steered_as_native`).
    as_native: bool,
    /// Named values for the cell record (e.g. the layer pair an automatic scan chose).
    values: BTreeMap<String, f64>,
}

/// The beta a cell steers with: its own, or the one its `auto` choice recorded.
fn steering_beta(key: &CellKey, values: &BTreeMap<String, f64>) -> Result<f64> {
    match key.beta {
        Beta::Value(b) => Ok(b),
        Beta::Auto => values.get(BETA_CHOSEN).copied().ok_or_else(|| EvalError::Cell { cell: key.id(), reason: "no chosen beta".into() }),
    }
}

/// Where a vector of `concept` steers generated answers: RepE vectors the last prompt
/// token and the generated ones (as RepE's code), CAA vectors every position.
fn generated_positions(concept: &str) -> Positions {
    if is_repe(concept) {
        Positions::PromptLastAndGenerated
    } else {
        Positions::All
    }
}

/// What an `auto` cell chose on its dev items: its beta (None: no candidate qualifies,
/// `why_none` says why) and the sweep's numbers for the record.
struct AutoChoice {
    beta: Option<f64>,
    values: BTreeMap<String, f64>,
    why_none: String,
}

impl AutoChoice {
    fn nothing(why: String) -> Self {
        Self { beta: None, values: BTreeMap::new(), why_none: why }
    }
}

/// Equal up to float rounding: relative L2 difference at most 1e-4 (a steering change that
/// small moves the A/B metric far below its reported precision).
fn same_vector(a: &[f32], b: &[f32]) -> bool {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    a.len() == b.len() && diff <= 1e-4 * norm.max(f64::MIN_POSITIVE)
}

/// `rescale_transfers`: the vector at `layer` scaled to the norm of the target's own
/// vector there (its direction kept); the norm it had is recorded as `norm_before_rescale`.
fn rescale_to_native(p: &mut Prepared, native: &SteeringVector, layer: usize) {
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let Some(own) = native.layers.get(&layer).map(|v| norm(v)) else { return };
    if let Some(v) = p.vector.as_mut().and_then(|v| v.layers.get_mut(&layer)) {
        let before = norm(v);
        if before > 0.0 {
            v.iter_mut().for_each(|x| *x = (*x as f64 * own / before) as f32);
        }
        p.values.insert("norm_before_rescale".into(), before);
    }
}

impl Runner<'_> {
    fn model(&mut self, id: &str) -> Result<&Model> {
        if !self.models.contains_key(id) {
            let m = (self.load)(id).map_err(|x| EvalError::Load { model: id.to_string(), reason: x.to_string() })?;
            self.models.insert(id.to_string(), m);
        }
        Ok(&self.models[id])
    }

    fn model_hashes(&self) -> Result<Vec<(String, String)>> {
        self.models.iter().map(|(id, m)| Ok((id.clone(), m.file_sha256()?))).collect()
    }

    fn layer(&mut self, id: &str) -> Result<usize> {
        match self.e.layers.get(id) {
            Some(&l) => Ok(l),
            None => Ok(pipeline::default_layer(self.model(id)?)),
        }
    }

    fn file(&self, concept: &str, name: &str) -> String {
        pipeline::caa_file(&self.data_dir, concept, name)
    }

    /// The dataset spec of a concept's training pairs.
    fn pairs_spec(&self, concept: &str) -> String {
        pipeline::concept_pairs_spec(&self.data_dir, concept)
    }

    /// Pairs of `concept` left for held-out maps after the vector's first `extract_pairs`
    /// (RepE concepts have 128-150 training pairs, CAA behaviours hundreds more).
    fn heldout_left(&mut self, concept: &str) -> Result<usize> {
        let total = match self.pair_counts.get(concept) {
            Some(&n) => n,
            None => {
                let n = lcross_core::dataset::load_concept(&self.pairs_spec(concept), &self.data_dir)?.pairs.len();
                self.pair_counts.insert(concept.to_string(), n);
                n
            }
        };
        Ok(total.saturating_sub(self.e.sizes.extract_pairs).min(self.e.sizes.heldout_pairs))
    }

    /// Vectors as the paper makes them: CAA's mean difference (letter-balanced on request)
    /// for behaviours, RepE's first principal component for RepE concepts.
    fn extract(&mut self, model_id: &str, concept: &str, layer: usize, kind: VectorKind) -> Result<SteeringVector> {
        self.extract_at(model_id, concept, vec![layer], kind)
    }

    /// [`Self::extract`] at several layers in one pass over the pairs.
    fn extract_at(&mut self, model_id: &str, concept: &str, layers: Vec<usize>, kind: VectorKind) -> Result<SteeringVector> {
        let ds = lcross_core::dataset::load_concept(&self.pairs_spec(concept), &self.data_dir)?.limit(Some(self.e.sizes.extract_pairs));
        let recipe = match is_repe(concept) {
            true => VectorRecipe { method: Method::Pca, ..VectorRecipe::mean_diff(layers) },
            false => VectorRecipe { balance_letters: kind == VectorKind::Balanced, ..VectorRecipe::mean_diff(layers) },
        };
        let model = self.model(model_id)?;
        Ok(pipeline::extract_vector(model, &ds, &recipe)?.0)
    }

    /// A map `src` -> `tgt` on `limit` pairs of `concept` after the first `skip`.
    #[allow(clippy::too_many_arguments)] // each is one setting of the cell's map; a struct would only rename them
    fn align(&mut self, src: &str, tgt: &str, layers: (usize, usize), concept: &str, estimator: &str, skip: usize, limit: usize) -> Result<LinearMap> {
        let est = Estimator::parse(estimator).ok_or_else(|| {
            EvalError::bad_value(
                "estimator",
                estimator,
                "ols, ridge[:LAMBDA], procrustes, reduced-rank[:RANK], affine, mlp[:HIDDEN], embedding, random[:SEED] or identity",
            )
        })?;
        self.model(src)?;
        self.model(tgt)?;
        if est == Estimator::Embedding {
            // The same map for every concept and split: the two vocabularies' embeddings.
            return pipeline::align_embeddings(&self.models[src], &self.models[tgt], layers, None);
        }
        let corpus = Corpus::load(&self.pairs_spec(concept), &self.data_dir, skip, Some(limit))?;
        pipeline::align(&self.models[src], &self.models[tgt], layers, &corpus, est, true)
    }

    /// Dev questions of a CAA behaviour for choosing a layer: the generate-dataset items
    /// after the vector's pairs and the held-out map's (never a test question, never a
    /// pair a vector or map of the cell saw), at most [`DEV_QUESTIONS`].
    fn dev_questions(&mut self, concept: &str, heldout: usize) -> Result<Vec<lcross_core::dataset::AbItem>> {
        let skip = self.e.sizes.extract_pairs + heldout;
        Ok(pipeline::load_ab(&self.pairs_spec(concept), None)?.into_iter().skip(skip).take(DEV_QUESTIONS).collect())
    }

    /// How far the target's own vector, extracted and added at each of `layers` alone,
    /// moves the A/B metric on `dev` at `beta`, in beta's direction (steered minus
    /// unsteered mean probability of the matching answer, times the sign of beta).
    fn steerability(
        &mut self,
        target: &str,
        concept: &str,
        layers: &[usize],
        kind: VectorKind,
        beta: f64,
        dev: &[lcross_core::dataset::AbItem],
    ) -> Result<Vec<(usize, f64)>> {
        let own = self.extract_at(target, concept, layers.to_vec(), kind)?;
        let single: Vec<SteeringVector> = layers
            .iter()
            .map(|l| {
                let mut v = own.clone();
                v.layers.retain(|k, _| k == l);
                v.metadata.layers = vec![*l];
                v
            })
            .collect();
        let mut conditions = vec![None];
        conditions.extend(single.iter().map(|v| Some(Steering::add(v, beta, Positions::All))));
        let results = evaluate_ab_cached(&self.models[target], dev, &conditions, &mut self.store)?;
        let base = results[0].mean_prob_matching;
        let sign = if beta < 0.0 { -1.0 } else { 1.0 };
        Ok(layers.iter().zip(&results[1..]).map(|(&l, r)| (l, sign * (r.mean_prob_matching - base))).collect())
    }

    /// An `auto` cell's beta: the candidate of `auto_betas` that raises the A/B metric most
    /// over no modulation on `concept`'s dev questions ([`Self::dev_questions`]) when
    /// `vector` steers `target` at every position (ties: the first candidate), with each
    /// candidate's gain (`dev_gain:<beta>`) for the record; no beta without dev questions.
    /// Cached like every A/B evaluation: an interpolating transfer, which steers with the
    /// target's own vector, reads the self cell's sweep back.
    fn choose_beta(&mut self, target: &str, concept: &str, vector: &SteeringVector) -> Result<AutoChoice> {
        let heldout = self.heldout_left(concept)?;
        let dev = self.dev_questions(concept, heldout)?;
        if dev.is_empty() {
            return Ok(AutoChoice::nothing(format!(
                "{concept} has no dev questions to choose an `auto` beta (generate-dataset items after the vector's and the held-out map's pairs)"
            )));
        }
        let e = self.e;
        let mut conditions = vec![None];
        conditions.extend(e.auto_betas.iter().map(|&beta| Some(Steering::add(vector, beta, Positions::All))));
        self.model(target)?;
        let results = evaluate_ab_cached(&self.models[target], &dev, &conditions, &mut self.store)?;
        let base = results[0].mean_prob_matching;
        let mut values = BTreeMap::new();
        let mut best: Option<(f64, f64)> = None;
        for (&b, r) in e.auto_betas.iter().zip(&results[1..]) {
            let gain = r.mean_prob_matching - base;
            values.insert(format!("dev_gain:{b}"), gain);
            if best.is_none_or(|(_, g)| gain > g) {
                best = Some((b, gain));
            }
        }
        let (b, gain) = best.ok_or_else(|| EvalError::Config { origin: format!("experiment `{}`", self.e.name), reason: "`auto_betas` is empty".into() })?;
        values.insert(BETA_CHOSEN.into(), b);
        values.insert("dev_gain_chosen".into(), gain);
        values.insert("dev_questions".into(), dev.len() as f64);
        Ok(AutoChoice { beta: Some(b), values, why_none: String::new() })
    }

    /// An `auto` cell's beta for a generated metric (HARM, FAIR, emotion: the RepE concepts,
    /// which have no A/B dev questions): the sweep of `lcross calibrate` over `auto_betas` on
    /// the metric's dev prompts - the [`Experiment::eval_prompts`] held-out prompts after the
    /// test ones (FAIR: the samples after the test samples' seeds) - keeping the candidates
    /// whose drift on neutral prompts and perplexity ratio stay within `lcross calibrate`'s
    /// default budget, and choosing the one that moves the metric most in its direction
    /// (up; down for FAIR). Each candidate's gain, drift and perplexity ratio go to the
    /// record; no admissible candidate that moves the metric: no beta, and why.
    fn choose_beta_generated(&mut self, group: &Group, metric: &str, vector: &SteeringVector) -> Result<AutoChoice> {
        let n = self.e.eval_prompts();
        let prompts: Vec<String> = match metric {
            HARM => harm::harm_prompts(&self.data_dir)?.into_iter().skip(n).take(n).collect(),
            EMOTION => judged::emotion_scenarios(&self.data_dir)?.into_iter().skip(n).take(n).collect(),
            FAIR => Vec::new(),
            other => {
                return Err(EvalError::Cell {
                    cell: format!("{}|{other}", group.concept),
                    reason: format!("`auto` betas of `{other}` cells are chosen on A/B dev questions"),
                })
            }
        };
        if metric != FAIR && prompts.is_empty() {
            return Ok(AutoChoice::nothing(format!(
                "`{metric}` has no held-out prompts after the {n} test ones to choose an `auto` beta on (lower `sizes.eval_prompts`)"
            )));
        }
        if metric != FAIR {
            self.judge()?;
        }
        self.model(&group.target)?;
        let e = self.e;
        let direction = if metric_direction(metric) < 0.0 { Direction::Decrease } else { Direction::Increase };
        let opts =
            CalibrateOptions { betas: e.auto_betas.clone(), drift_budget: DEFAULT_DRIFT_BUDGET, max_perplexity_ratio: DEFAULT_MAX_PERPLEXITY_RATIO, direction };
        // dev FAIR vignettes: samples n .. 2n of the seed's sequence (the test cells use 0 .. n)
        let sampling = if metric == FAIR {
            Sampling::Sample { temperature: fair::FAIR_TEMPERATURE, top_p: 1.0, seed: e.seed.wrapping_add(n as u64) }
        } else {
            Sampling::Greedy
        };
        let model = &self.models[&group.target];
        let max_tokens = e.sizes.answer_tokens.unwrap_or(64);
        let settings = GenerationSettings { max_tokens, sampling, rows_in_flight: model.rows_that_fit(PROMPT_TOKENS_HINT.saturating_add(max_tokens)) };
        let judge = self.judge.as_ref().map(|(_, j)| j);
        let mut setup = Setup { model, conditions: Vec::new(), settings, store: Some(Store::open_default()?), neutral_prompts: None };
        let neutral = setup.chat_ids(&crate::side_effects::neutral_prompts(&self.data_dir)?)?;
        let rows_in_flight = setup.settings.rows_in_flight;
        let dev_items = if metric == FAIR { n } else { prompts.len() };
        let dev = match metric {
            HARM => Metric::Harm { prompts, threshold: harm::HARMFUL_THRESHOLD },
            EMOTION => Metric::Emotion { prompts, rubric: rubric::emotion_rubric(&group.concept), format: JudgeFormat::Auto },
            _ => Metric::Fair { samples: dev_items, first: 0 },
        };
        let mut evaluate = |conditions: &[Condition], _: Part| -> Result<Vec<EvalRow>> {
            setup.conditions = conditions.to_vec();
            dev.rows(&mut setup, judge.map(|j| j as &dyn Judge))
        };
        let positions = generated_positions(&group.concept);
        let sweep = SweepSetup {
            model,
            vector: ("auto".into(), Arc::new(vector.clone())),
            positions,
            point: Default::default(),
            intervention: Default::default(),
            neutral: &neutral,
            opts: &opts,
            rows_in_flight,
        };
        let dev = calibrate::sweep(&sweep, Some(&mut self.store), &mut evaluate)?;
        let mut values = BTreeMap::new();
        for p in dev.iter().filter(|p| p.beta != 0.0) {
            values.insert(format!("dev_gain:{}", p.beta), p.effect);
            values.insert(format!("dev_drift:{}", p.beta), p.drift_kl);
            values.insert(format!("dev_perplexity_ratio:{}", p.beta), p.perplexity_ratio);
        }
        values.insert("dev_prompts".into(), dev_items as f64);
        let Some(b) = calibrate::choose(&dev) else {
            let why = format!(
                "no candidate of `auto_betas` moves `{metric}` {} on the {dev_items} dev prompts within the side-effect budget (drift <= {DEFAULT_DRIFT_BUDGET} nats, perplexity ratio <= {DEFAULT_MAX_PERPLEXITY_RATIO}): see dev_gain:<beta>, dev_drift:<beta>",
                if direction == Direction::Decrease { "down" } else { "up" }
            );
            return Ok(AutoChoice { beta: None, values, why_none: why });
        };
        values.insert(BETA_CHOSEN.into(), b);
        values.insert("dev_gain_chosen".into(), dev.iter().find(|p| p.beta == b).map_or(f64::NAN, |p| p.effect));
        Ok(AutoChoice { beta: Some(b), values, why_none: String::new() })
    }

    /// The vector a condition steers with (maps fitted as needed).
    fn prepare(&mut self, key: &CellKey, native: &SteeringVector, layers: (usize, usize), source_vector: Option<&SteeringVector>) -> Result<Prepared> {
        let (src, tgt, concept) = (key.source.clone().unwrap_or_default(), key.target.clone(), key.concept.clone());
        let none = Prepared { vector: None, skipped: None, map: None, saw_vector_pairs: None, as_native: false, values: BTreeMap::new() };
        let n = self.e.sizes.extract_pairs;
        let need_source = || source_vector.ok_or_else(|| EvalError::Cell { cell: key.id(), reason: "a transfer needs the source vector".into() });
        let transfer = |sv: &SteeringVector, map: LinearMap, saw: Option<bool>| -> Result<Prepared> {
            let label = format!("{} map of lcross reproduce ({})", key.condition.name(), key.group().id());
            let v = pipeline::transfer_vector(sv, &map, &label, &pipeline::map_fingerprint(&map), false)?;
            Ok(Prepared { vector: Some(v), skipped: None, map: Some(map), saw_vector_pairs: saw, as_native: false, values: BTreeMap::new() })
        };
        let heldout = self.heldout_left(&concept)?;
        if heldout == 0
            && matches!(
                key.condition,
                ConditionKind::LcrossHeldout | ConditionKind::Consensus | ConditionKind::LcrossAutoLayer | ConditionKind::LcrossAutoSteer
            )
        {
            return Ok(Prepared { skipped: Some(format!("{concept} has no pairs left for a held-out map after the vector's first {n}")), ..none });
        }
        Ok(match key.condition {
            ConditionKind::None => none,
            ConditionKind::Consensus => {
                let mut moved: Vec<SteeringVector> = Vec::new();
                for s in self.e.sources.iter().filter(|s| **s != tgt).cloned().collect::<Vec<_>>() {
                    let ls = self.layer(&s)?;
                    let sv = self.extract(&s, &concept, ls, key.vector)?;
                    let map = self.align(&s, &tgt, (ls, layers.1), &concept, "ols", n, heldout)?;
                    moved.push(pipeline::transfer_vector(&sv, &map, "held-out map of lcross reproduce (consensus)", &pipeline::map_fingerprint(&map), false)?);
                }
                let Some(first) = moved.first() else {
                    return Ok(Prepared { skipped: Some(format!("no source model other than {tgt}")), ..none });
                };
                let d = first.layers[&layers.1].len();
                let mut mean = vec![0.0f32; d];
                for v in &moved {
                    for (m, x) in mean.iter_mut().zip(&v.layers[&layers.1]) {
                        *m += x / moved.len() as f32;
                    }
                }
                let mut v = first.clone();
                v.metadata.provenance = Some(serde_json::json!({"consensus_of": moved.iter().map(|m| m.metadata.provenance.clone()).collect::<Vec<_>>()}));
                v.layers = [(layers.1, mean)].into_iter().collect();
                Prepared { vector: Some(v), saw_vector_pairs: Some(false), ..none }
            }
            ConditionKind::SelfModulation => Prepared { vector: Some(native.clone()), ..none },
            ConditionKind::Lcross => {
                let est = key.estimator.clone().unwrap_or_else(|| "ols".into());
                transfer(need_source()?, self.align(&src, &tgt, layers, &concept, &est, 0, n)?, Some(true))?
            }
            ConditionKind::LcrossUnrelated => {
                let i = self.e.concepts.iter().position(|c| *c == concept).unwrap_or(0);
                let other = self.e.concepts[(i + 1) % self.e.concepts.len()].clone();
                transfer(need_source()?, self.align(&src, &tgt, layers, &other, "ols", 0, n)?, Some(false))?
            }
            ConditionKind::LcrossAutoLayer => {
                need_source()?;
                let (ns, nt) = (self.model(&src)?.config().num_layers, self.model(&tgt)?.config().num_layers);
                let (cs, ct) = (pipeline::candidate_layers(ns, layers.0), pipeline::candidate_layers(nt, layers.1));
                let corpus = Corpus::load(&self.pairs_spec(&concept), &self.data_dir, n, Some(heldout))?;
                let fits = pipeline::scan_layer_pairs(&self.models[&src], &self.models[&tgt], &cs, &ct, &corpus)?;
                let best = fits.first().cloned().ok_or_else(|| EvalError::Cell { cell: key.id(), reason: "no layer pair to scan".into() })?;
                let fixed = fits.iter().find(|f| f.source_layer == layers.0 && f.target_layer == layers.1).map(|f| f.heldout_r2);
                let sv = self.extract(&src, &concept, best.source_layer, key.vector)?;
                let map = self.align(&src, &tgt, (best.source_layer, best.target_layer), &concept, "ols", n, heldout)?;
                let mut p = transfer(&sv, map, Some(false))?;
                p.values.insert("source_layer".into(), best.source_layer as f64);
                p.values.insert("target_layer".into(), best.target_layer as f64);
                p.values.insert("scan_r2_best".into(), best.heldout_r2);
                p.values.insert("scan_pairs".into(), fits.len() as f64);
                if let Some(r2) = fixed {
                    p.values.insert("scan_r2_fixed".into(), r2);
                }
                p
            }
            ConditionKind::LcrossAutoSteer => {
                need_source()?;
                if !key.condition.applies_to(&concept) {
                    return Ok(Prepared {
                        skipped: Some(format!("{concept}: steerability is measured on A/B questions, which a RepE concept does not have")),
                        ..none
                    });
                }
                let dev = self.dev_questions(&concept, heldout)?;
                if dev.is_empty() {
                    return Ok(Prepared {
                        skipped: Some(format!("{concept} has no generate-dataset items left for dev questions after {} + {heldout} pairs", n)),
                        ..none
                    });
                }
                let (ns, nt) = (self.model(&src)?.config().num_layers, self.model(&tgt)?.config().num_layers);
                let (cs, ct) = (pipeline::candidate_layers(ns, layers.0), pipeline::candidate_layers(nt, layers.1));
                // an `auto` cell scans at the beta the target's own vector chooses at the fixed layer
                let scan_beta = match key.beta {
                    Beta::Value(b) => b,
                    Beta::Auto => match self.choose_beta(&tgt, &concept, native)? {
                        AutoChoice { beta: Some(b), .. } => b,
                        AutoChoice { why_none, .. } => return Ok(Prepared { skipped: Some(why_none), ..none }),
                    },
                };
                let effects = self.steerability(&tgt, &concept, &ct, key.vector, scan_beta, &dev)?;
                let (target_layer, effect) = effects
                    .iter()
                    .copied()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .ok_or_else(|| EvalError::Cell { cell: key.id(), reason: "no target layer to scan".into() })?;
                let corpus = Corpus::load(&self.pairs_spec(&concept), &self.data_dir, n, Some(heldout))?;
                let mut scanned = vec![target_layer, layers.1];
                scanned.dedup();
                let fits = pipeline::scan_layer_pairs(&self.models[&src], &self.models[&tgt], &cs, &scanned, &corpus)?;
                let best = fits
                    .iter()
                    .find(|f| f.target_layer == target_layer)
                    .cloned()
                    .ok_or_else(|| EvalError::Cell { cell: key.id(), reason: "no source layer to scan".into() })?;
                let fixed_r2 = fits.iter().find(|f| f.source_layer == layers.0 && f.target_layer == layers.1).map(|f| f.heldout_r2);
                let sv = self.extract(&src, &concept, best.source_layer, key.vector)?;
                let map = self.align(&src, &tgt, (best.source_layer, target_layer), &concept, "ols", n, heldout)?;
                let mut p = transfer(&sv, map, Some(false))?;
                p.values.insert("source_layer".into(), best.source_layer as f64);
                p.values.insert("target_layer".into(), target_layer as f64);
                p.values.insert("scan_r2_best".into(), best.heldout_r2);
                p.values.insert("steer_effect_chosen".into(), effect);
                if let Some(r2) = fixed_r2 {
                    p.values.insert("scan_r2_fixed".into(), r2);
                }
                p.values.insert("dev_questions".into(), dev.len() as f64);
                if let Some(&(_, e)) = effects.iter().find(|(l, _)| *l == layers.1) {
                    p.values.insert("steer_effect_fixed".into(), e);
                }
                for (l, e) in &effects {
                    p.values.insert(format!("steer_effect:{l}"), *e);
                }
                p
            }
            ConditionKind::LcrossHeldout => transfer(need_source()?, self.align(&src, &tgt, layers, &concept, "ols", n, heldout)?, Some(false))?,
            ConditionKind::LcrossPooled => {
                let sv = need_source()?;
                self.model(&src)?;
                self.model(&tgt)?;
                let map = pipeline::pooled_map(&self.models[&src], &self.models[&tgt], layers, &self.e.concepts, &self.data_dir, n)?;
                transfer(sv, map, Some(true))?
            }
            ConditionKind::RandomT => transfer(need_source()?, self.align(&src, &tgt, layers, &concept, &format!("random:{}", self.e.seed), 0, n)?, None)?,
            ConditionKind::Identity => {
                let sv = need_source()?;
                let (ds, dt) = (self.model(&src)?.config().hidden_size, self.model(&tgt)?.config().hidden_size);
                if ds != dt {
                    return Ok(Prepared { skipped: Some(format!("no T needs equal hidden sizes; {src} has {ds}, {tgt} has {dt}")), ..none });
                }
                let mut v = sv.clone();
                v.metadata.model_id = tgt.clone();
                v.metadata.model_sha256 = self.models[&tgt].file_sha256()?;
                v.metadata.layers = vec![layers.1];
                let values = sv.layers.get(&layers.0).ok_or_else(|| lcross_core::CoreError::MissingLayer {
                    what: format!("the {src} vector"),
                    layer: layers.0,
                    layers: sv.metadata.layers.clone(),
                })?;
                v.layers = [(layers.1, values.clone())].into_iter().collect();
                Prepared { vector: Some(v), ..none }
            }
        })
    }

    /// A `map-similarity` cell: the OLS map of the cell's concept against the OLS maps of
    /// the grid's other concepts (same models, layers and corpus size) and against a
    /// random map of the same shape and entry statistics (Table 4).
    fn map_similarity(&mut self, key: &CellKey) -> Result<CellRecord> {
        let started = Instant::now();
        let src = key.source.clone().ok_or_else(|| EvalError::Cell { cell: key.id(), reason: "no source model".into() })?;
        let layers = (self.layer(&src)?, self.layer(&key.target)?);
        let n = self.e.sizes.extract_pairs;
        let own = self.align(&src, &key.target, layers, &key.concept, "ols", 0, n)?;
        let mut values = BTreeMap::new();
        let mut per_other = Vec::new();
        let (mut me, mut frob) = (Vec::new(), Vec::new());
        for other in self.e.concepts.iter().filter(|c| **c != key.concept).cloned().collect::<Vec<_>>() {
            let m = self.align(&src, &key.target, layers, &other, "ols", 0, n)?;
            let c = compare(&own.t, &m.t)?;
            values.insert(format!("ssim:{other}"), c.ssim);
            values.insert(format!("spectral:{other}"), c.spectral_mean_abs_diff);
            values.insert(format!("frobenius:{other}"), c.frobenius);
            per_other.push(c.ssim);
            me.push(c.spectral_mean_abs_diff);
            frob.push(c.frobenius);
        }
        let r = compare(&own.t, &random_like(&own.t, self.e.seed))?;
        values.insert("ssim_other".into(), crate::stats::mean(&per_other));
        values.insert("spectral_other".into(), crate::stats::mean(&me));
        values.insert("frobenius_other".into(), crate::stats::mean(&frob));
        values.insert("ssim_random".into(), r.ssim);
        values.insert("spectral_random".into(), r.spectral_mean_abs_diff);
        values.insert("frobenius_random".into(), r.frobenius);
        values.insert("frobenius_own".into(), own.t.norm_l2());
        let d = &own.metadata.diagnostics;
        Ok(CellRecord {
            mean: Some(crate::stats::mean(&per_other)),
            stderr: Some(crate::stats::stderr(&per_other)),
            n: per_other.len(),
            per_item: per_other,
            train_r2: Some(d.train_r2),
            heldout_r2: d.heldout_r2,
            interpolating: Some(d.interpolating),
            map_saw_vector_pairs: Some(true),
            map_n: Some(d.n),
            values,
            eval_s: started.elapsed().as_secs_f64(),
            ..CellRecord::empty(key.clone())
        })
    }

    /// The local judge, loaded when first needed.
    fn judge(&mut self) -> Result<&LocalJudge> {
        let judge_id = self.e.judge.clone().unwrap_or_else(|| DEFAULT_JUDGE.to_string());
        if self.judge.as_ref().is_none_or(|(id, _)| *id != judge_id) {
            let model = (self.load)(&judge_id).map_err(|x| EvalError::Load { model: judge_id.clone(), reason: format!("the judge: {x}") })?;
            self.judge = Some((judge_id.clone(), LocalJudge::new(model)?));
        }
        Ok(&self.judge.as_ref().expect("loaded above").1)
    }

    /// Cells of an evaluation that generates answers (`open-ended`, `harm`, `fair`,
    /// `emotion`): every cell's condition generates its answers in one batched pass
    /// (stored, so a rerun reads them back), then they are scored: `open-ended` and
    /// `emotion` 0-10 by the local judge with the concept's rubric, `harm` by the judge's
    /// harmful probability (plus the harmful and refusal rates), `fair` by the female words
    /// per seeded vignette. A cell with judge failures keeps its mean over the judged
    /// answers but no per-item values (the paired test needs every item).
    fn evaluate_generated(
        &mut self,
        group: &Group,
        metric: &str,
        cells: &[(CellKey, Option<Arc<SteeringVector>>, CellRecord)],
        log: &mut CellLog,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let started = Instant::now();
        let positions = generated_positions(&group.concept);
        let conditions: Vec<Condition> = cells
            .iter()
            .map(|(k, v, r)| match v {
                Some(v) if k.condition != ConditionKind::None => {
                    // an `auto` cell's label says so: its chosen beta may equal a numeric cell's
                    let auto = if k.beta.is_auto() { "|auto" } else { "" };
                    let label = format!("{}|{}|{}{auto}", k.condition.name(), k.source.as_deref().unwrap_or("-"), k.estimator.as_deref().unwrap_or("-"));
                    Ok(Condition { label, vector: Some(v.clone()), beta: steering_beta(k, &r.values)?, positions, ..Condition::none() })
                }
                _ => Ok(Condition::none()),
            })
            .collect::<Result<_>>()?;
        let n = self.e.eval_prompts();
        // FAIR samples its vignettes (seed + sample index, the same under every condition)
        let sampling = if metric == FAIR { Sampling::Sample { temperature: fair::FAIR_TEMPERATURE, top_p: 1.0, seed: self.e.seed } } else { Sampling::Greedy };
        let prompts: Vec<String> = match metric {
            OPEN_ENDED => {
                let mut q = lcross_core::dataset::load_open_ended(Path::new(&self.file(&group.concept, "test_dataset_open_ended.json")))?;
                q.truncate(self.e.sizes.open_ended_questions.unwrap_or(0));
                q
            }
            HARM => harm::harm_prompts(&self.data_dir)?.into_iter().take(n).collect(),
            EMOTION => judged::emotion_scenarios(&self.data_dir)?.into_iter().take(n).collect(),
            _ => Vec::new(),
        };
        let format = JudgeFormat::Auto;
        let measured = match metric {
            OPEN_ENDED => Metric::OpenEnded { prompts, rubric: rubric::rubric_for(&group.concept), format },
            HARM => Metric::Harm { prompts, threshold: harm::HARMFUL_THRESHOLD },
            EMOTION => Metric::Emotion { prompts, rubric: rubric::emotion_rubric(&group.concept), format },
            FAIR => Metric::Fair { samples: n, first: 0 },
            other => {
                return Err(EvalError::Cell { cell: format!("{}|{other}", group.concept), reason: format!("evaluation `{other}` does not generate answers") })
            }
        };
        if measured.needs_judge() {
            self.judge()?;
        }
        self.model(&group.target)?;
        let model = &self.models[&group.target];
        let max_tokens = self.e.sizes.answer_tokens.unwrap_or(64);
        let settings = GenerationSettings { max_tokens, sampling, rows_in_flight: model.rows_that_fit(PROMPT_TOKENS_HINT.saturating_add(max_tokens)) };
        let judge = self.judge.as_ref().map(|(_, j)| j as &dyn Judge);
        let mut setup = Setup { model, conditions, settings, store: Some(Store::open_default()?), neutral_prompts: None };
        let (report, items) = measured.evaluate(&mut setup, judge)?;
        let each = started.elapsed().as_secs_f64() / cells.len().max(1) as f64;
        for ((_, _, record), row) in cells.iter().zip(&report.rows) {
            let scores: Vec<Option<f64>> = items.iter().filter(|it| it.condition == row.condition && it.beta == row.beta).map(|it| it.score).collect();
            let failures = scores.iter().filter(|s| s.is_none()).count();
            let per_item: Vec<f64> = if failures == 0 { scores.iter().flatten().copied().collect() } else { Vec::new() };
            let mut values = record.values.clone();
            if metric != FAIR {
                values.insert("judge_failures".to_string(), failures as f64);
            }
            // the row's other numbers (harmful_rate, refusal_rate, male_words, ...)
            for (name, v) in &row.extra {
                if let Some(x) = v.as_f64() {
                    values.insert(name.clone(), x);
                }
            }
            log.append(CellRecord {
                mean: row.mean.is_finite().then_some(row.mean),
                stderr: row.stderr.is_finite().then_some(row.stderr),
                n: row.n,
                per_item,
                values,
                eval_s: each,
                ..record.clone()
            })?;
            bar.inc(1);
        }
        Ok(())
    }

    /// A `tsne` cell: the pair differences of every concept of the grid in the model
    /// (letter component removed for balanced vectors), embedded by t-SNE (coordinates in
    /// `per_item`, x then y per point, concepts in grid order with `points:<concept>` each),
    /// and how well the concepts separate: k-NN purity in the hidden space (`mean`) and in
    /// the plane, against chance.
    fn tsne_cell(&mut self, key: &CellKey) -> Result<CellRecord> {
        let started = Instant::now();
        let layer = self.layer(&key.target)?;
        let mut diffs = Vec::new();
        let mut labels = Vec::new();
        let mut values = BTreeMap::new();
        for (ci, c) in self.e.concepts.clone().iter().enumerate() {
            let ds = lcross_core::dataset::load_concept(&self.pairs_spec(c), &self.data_dir)?.limit(Some(self.e.sizes.extract_pairs));
            let d = pipeline::pair_differences(self.model(&key.target)?, &ds, layer, key.vector == VectorKind::Balanced && !is_repe(c))?;
            values.insert(format!("points:{c}"), d.len() as f64);
            labels.extend(std::iter::repeat_n(ci, d.len()));
            diffs.extend(d);
        }
        let plane = tsne(&diffs, &TsneOptions { seed: self.e.seed, ..Default::default() })?;
        let plane_points: Vec<Vec<f64>> = plane.iter().map(|p| p.to_vec()).collect();
        let n = diffs.len() as f64;
        let chance: f64 = (0..self.e.concepts.len()).map(|c| (labels.iter().filter(|&&l| l == c).count() as f64 / n).powi(2)).sum();
        let hidden = crate::stats::knn_purity(&diffs, &labels, TSNE_NEIGHBOURS);
        values.insert("knn_purity_hidden".into(), hidden);
        values.insert("knn_purity_tsne".into(), crate::stats::knn_purity(&plane_points, &labels, TSNE_NEIGHBOURS));
        values.insert("knn_chance".into(), chance);
        values.insert("layer".into(), layer as f64);
        Ok(CellRecord {
            mean: Some(hidden),
            n: diffs.len(),
            per_item: plane.iter().flat_map(|p| [p[0], p[1]]).collect(),
            values,
            eval_s: started.elapsed().as_secs_f64(),
            ..CellRecord::empty(key.clone())
        })
    }

    fn run_group(&mut self, group: &Group, cells: &[&CellKey], log: &mut CellLog, bar: &indicatif::ProgressBar) -> Result<()> {
        let (map_cells, cells): (Vec<&CellKey>, Vec<&CellKey>) = cells.iter().partition(|c| c.metric == MAP_SIMILARITY || c.metric == TSNE);
        for k in map_cells {
            let record = if k.metric == TSNE { self.tsne_cell(k)? } else { self.map_similarity(k)? };
            log.append(record)?;
            bar.inc(1);
        }
        if cells.is_empty() {
            return Ok(());
        }
        let cells = &cells[..];
        let started = Instant::now();
        let lt = self.layer(&group.target)?;
        let native = self.extract(&group.target.clone(), &group.concept.clone(), lt, group.vector)?;
        let (source_vector, ls) = match &group.source {
            Some(s) => {
                let ls = self.layer(s)?;
                (Some(self.extract(&s.clone(), &group.concept.clone(), ls, group.vector)?), ls)
            }
            None => (None, 0),
        };
        // Prepare every vector first (maps are shared by the betas of a condition).
        let mut prepared: Vec<(&CellKey, Rc<Prepared>)> = Vec::new();
        let mut by_condition: HashMap<(ConditionKind, Option<String>), Rc<Prepared>> = HashMap::new();
        for &k in cells {
            let id = (k.condition, k.estimator.clone());
            let p = match by_condition.get(&id) {
                Some(p) => p.clone(),
                None => {
                    let mut p = self.prepare(k, &native, (ls, lt), source_vector.as_ref())?;
                    if self.e.rescale_transfers && !matches!(k.condition, ConditionKind::None | ConditionKind::SelfModulation) {
                        rescale_to_native(&mut p, &native, lt);
                    }
                    p.as_native = k.condition != ConditionKind::SelfModulation
                        && p.vector.as_ref().and_then(|v| v.layers.get(&lt)).is_some_and(|v| same_vector(v, &native.layers[&lt]));
                    let p = Rc::new(p);
                    by_condition.insert(id, p.clone());
                    p
                }
            };
            prepared.push((k, p));
        }
        // `auto` cells: each steered one chooses its beta on the dev questions
        // (A/B dev questions for the behaviours; the metric's own dev prompts for RepE concepts)
        let mut chosen: Vec<Option<AutoChoice>> = Vec::with_capacity(prepared.len());
        for (k, p) in &prepared {
            chosen.push(match (&p.vector, &p.skipped) {
                (Some(v), None) if k.beta.is_auto() && k.condition != ConditionKind::None => {
                    let v = if p.as_native { &native } else { v };
                    Some(match is_repe(&group.concept) {
                        true => self.choose_beta_generated(group, &k.metric, v)?,
                        false => self.choose_beta(&group.target, &group.concept, v)?,
                    })
                }
                _ => None,
            });
        }
        let prepare_s = started.elapsed().as_secs_f64();
        let native_values = &native.layers[&lt];
        let records: Vec<CellRecord> = prepared
            .iter()
            .zip(&chosen)
            .map(|((k, p), chosen)| CellRecord {
                skipped: match chosen {
                    Some(AutoChoice { beta: None, why_none, .. }) => Some(why_none.clone()),
                    _ => p.skipped.clone(),
                },
                cosine_to_native: p.vector.as_ref().and_then(|v| v.layers.get(&lt)).map(|v| cosine(v, native_values)),
                train_r2: p.map.as_ref().map(|m| m.metadata.diagnostics.train_r2),
                heldout_r2: p.map.as_ref().and_then(|m| m.metadata.diagnostics.heldout_r2),
                interpolating: p.map.as_ref().map(|m| m.metadata.diagnostics.interpolating),
                map_saw_vector_pairs: p.saw_vector_pairs,
                map_n: p.map.as_ref().map(|m| m.metadata.diagnostics.n),
                values: {
                    let mut v = p.values.clone();
                    if p.as_native {
                        v.insert("steered_as_native".into(), 1.0);
                    }
                    if let Some(x) = p.vector.as_ref().and_then(|v| v.layers.get(&lt)) {
                        v.insert("vector_norm".into(), x.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt());
                    }
                    if let Some(choice) = chosen {
                        v.extend(choice.values.clone());
                    }
                    v
                },
                prepare_s,
                ..CellRecord::empty((*k).clone())
            })
            .collect();
        // Skipped cells are done at once; the others are evaluated together, a few
        // conditions per batched pass (the questions' unsteered prefix is shared), each
        // chunk stored as it finishes so an interruption loses at most one chunk.
        let mut evaluate: Vec<usize> = Vec::new();
        let mut generated: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            if r.skipped.is_some() {
                log.append(r.clone())?;
                bar.inc(1);
            } else if let Some(m) = GENERATED.iter().find(|m| **m == r.key.metric) {
                generated.entry(m).or_default().push(i);
            } else {
                evaluate.push(i);
            }
        }
        self.model(&group.target)?;
        for (metric, indices) in generated {
            let cells: Vec<(CellKey, Option<Arc<SteeringVector>>, CellRecord)> = indices
                .iter()
                .map(|&i| {
                    (
                        prepared[i].0.clone(),
                        if prepared[i].1.as_native { Some(native.clone()) } else { prepared[i].1.vector.clone() }.map(Arc::new),
                        records[i].clone(),
                    )
                })
                .collect();
            self.evaluate_generated(group, metric, &cells, log, bar)?;
        }
        let items = match evaluate.is_empty() {
            true => Vec::new(),
            false => pipeline::load_ab(&self.file(&group.concept, "test_dataset_ab.json"), Some(self.e.sizes.test_questions))?,
        };
        for chunk in evaluate.chunks(CONDITIONS_PER_PASS) {
            let t = Instant::now();
            let mut steering = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let (k, p) = &prepared[i];
                let beta = steering_beta(k, &records[i].values)?;
                steering.push(match (k.condition, &p.vector) {
                    (ConditionKind::None, _) => None,
                    (_, Some(_)) if p.as_native => Some(Steering::add(&native, beta, Positions::All)),
                    (_, Some(v)) => Some(Steering::add(v, beta, Positions::All)),
                    (_, None) => return Err(EvalError::Cell { cell: k.id(), reason: "no vector".into() }),
                });
            }
            let results = evaluate_ab_cached(&self.models[&group.target], &items, &steering, &mut self.store)?;
            let each = t.elapsed().as_secs_f64() / chunk.len() as f64;
            for (&i, r) in chunk.iter().zip(results) {
                let record = CellRecord {
                    mean: Some(r.mean_prob_matching),
                    stderr: Some(crate::stats::stderr(&r.per_item)),
                    n: r.n,
                    per_item: r.per_item,
                    eval_s: each,
                    ..records[i].clone()
                };
                log.append(record)?;
                bar.inc(1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{experiment_from_json, plan, same_vector, ExperimentFile};

    #[test]
    fn run_records_give_back_the_experiment_of_every_shipped_profile() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/paper-local.toml");
        let f = ExperimentFile::load(&path).unwrap();
        let names = std::iter::once(None).chain(f.profiles.keys().map(|p| Some(p.as_str())));
        for name in names {
            let e = f.resolve(name).unwrap();
            let back = experiment_from_json(&serde_json::to_value(&e).unwrap()).unwrap_or_else(|x| panic!("profile {name:?}: {x}"));
            assert_eq!(back, e, "profile {name:?}");
            assert_eq!(plan(&back), plan(&e), "profile {name:?}: the merged grid differs from the run's");
        }
    }

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
