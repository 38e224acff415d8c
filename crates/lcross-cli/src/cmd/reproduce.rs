//! `lcross reproduce CONFIG`: run an experiment grid (docs/REPRODUCTION.md) with
//! progress, resume and shards; `lcross reproduce --merge DIR...` joins shards.
//!
//! The grid, cells, shards and report live in `lcross_eval::reproduce`; this runner
//! computes the cells with the extraction, alignment and A/B code of the CLI.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_core::artifact::write_atomic;
use lcross_core::eval::{evaluate_ab_cached, Steering};
use lcross_core::maps::LinearMap;
use lcross_core::steering::{cosine, SteeringVector};
use lcross_core::store::Store;
use lcross_eval::reproduce::cells::{merge, CellLog, CellRecord};
use lcross_eval::reproduce::config::{ConditionKind, Experiment, ExperimentFile, VectorKind};
use lcross_eval::reproduce::grid::{groups, plan, CellKey, Group, Shard};
use lcross_eval::reproduce::report;
use lcross_model::{Model, Positions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cmd::maps::{align_models, map_fingerprint, transfer_vector_described, AlignArgs};
use crate::cmd::vectors::{extract_vector, load_ab, ExtractArgs};
use crate::common::Context;

#[derive(Args)]
pub struct ReproduceArgs {
    /// Experiment file (TOML; see docs/REPRODUCTION.md and experiments/).
    #[arg(required_unless_present = "merge")]
    config: Option<PathBuf>,
    /// A profile of the file (e.g. tiny, quick) overriding its sizes and lists.
    #[arg(long)]
    profile: Option<String>,
    /// Run one shard of the grid: i/n, 0 <= i < n (groups of cells are assigned by a hash
    /// of their models and concept, so every machine agrees without talking).
    #[arg(long)]
    shard: Option<String>,
    /// Results directory (default results/<name>[-<profile>], plus shard-i-of-n/ with --shard).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Join these shard directories into --out (default: their common parent).
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with_all = ["config", "profile", "shard"])]
    merge: Vec<PathBuf>,
}

/// What a run directory records about how it was made (`run.json`).
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct RunInfo {
    pub lcross_version: String,
    pub experiment: serde_json::Value,
    /// sha256 of the resolved experiment: runs and shards with the same one can share
    /// a directory and be merged.
    pub experiment_sha256: String,
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

fn experiment_sha(e: &Experiment, numerics: &str) -> String {
    let v = serde_json::to_string(e).unwrap_or_default();
    hex::encode(Sha256::digest(format!("{v}\n{numerics}").as_bytes()))
}

pub fn run(ctx: &Context, a: ReproduceArgs) -> Result<()> {
    if !a.merge.is_empty() {
        return merge_cmd(ctx, &a.merge, a.out.as_deref());
    }
    let path = a.config.as_ref().context("give an experiment file")?;
    let file = ExperimentFile::load(path)?;
    let e = file.resolve(a.profile.as_deref())?;
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    let out = match (&a.out, shard) {
        (Some(o), _) => o.clone(),
        (None, None) => PathBuf::from("results").join(e.run_name()),
        (None, Some(s)) => PathBuf::from("results").join(e.run_name()).join(format!("shard-{}-of-{}", s.index, s.count)),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let numerics = ctx.numerics();
    let mut info = RunInfo {
        lcross_version: lcross_core::VERSION.into(),
        experiment: serde_json::to_value(&e)?,
        experiment_sha256: experiment_sha(&e, &numerics),
        config_file: Some(path.display().to_string()),
        config_text: std::fs::read_to_string(path).ok(),
        numerics,
        shard,
        models: BTreeMap::new(),
        merged_from: Vec::new(),
    };
    let info_path = out.join("run.json");
    if let Ok(text) = std::fs::read_to_string(&info_path) {
        let prev: RunInfo = serde_json::from_str(&text).with_context(|| format!("{} is not a run record", info_path.display()))?;
        if prev.experiment_sha256 != info.experiment_sha256 || prev.shard != info.shard {
            bail!("{} holds a run of another experiment, profile, shard or numerics: choose another --out (or delete it)", out.display());
        }
        info.models = prev.models;
    }
    write_atomic(&info_path, serde_json::to_string_pretty(&info)?.as_bytes())?;

    let mut log = CellLog::open(&out)?;
    let all = plan(&e);
    let shard = shard.unwrap_or_else(Shard::all);
    let mine: Vec<(Group, Vec<CellKey>)> = groups(&all).into_iter().filter(|(g, _)| shard.owns(g)).collect();
    let pending: usize = mine.iter().flat_map(|(_, cs)| cs).filter(|c| !log.contains(&c.id())).count();
    let total: usize = mine.iter().map(|(_, cs)| cs.len()).sum();
    eprintln!("{}: {total} cells in this shard ({} of the grid's {}), {} to run; results in {}", e.run_name(), total, all.len(), pending, out.display());
    let bar = lcross_core::activations::progress(pending as u64, "cells");
    let mut runner = Runner { ctx, e: &e, models: HashMap::new(), store: Store::open_default()?, data_dir: e.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir) };
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
        write_report(&out, &e, &info, log.cells())?;
    }
    bar.finish_and_clear();
    write_report(&out, &e, &info, log.cells())?;
    let md = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
    ctx.print(&serde_json::json!({"out": out, "cells": log.cells().len(), "grid_cells": all.len()}), || print!("{md}"))
}

fn write_report(out: &Path, e: &Experiment, info: &RunInfo, cells: &BTreeMap<String, CellRecord>) -> Result<()> {
    let models: Vec<String> = info.models.iter().map(|(m, h)| format!("{m} (sha256 {}…)", &h[..h.len().min(12)])).collect();
    let header = format!(
        "lcross {}; numerics {}; experiment sha256 {}…; shard {}; models: {}.\nSizes: {} extraction pairs per vector and map corpus, {} A/B test questions per concept, {} held-out pairs; betas {:?}.",
        info.lcross_version,
        info.numerics,
        &info.experiment_sha256[..12],
        info.shard.map_or("all".into(), |s| format!("{}/{}", s.index, s.count)),
        if models.is_empty() { "-".into() } else { models.join(", ") },
        e.sizes.extract_pairs,
        e.sizes.test_questions,
        e.sizes.heldout_pairs,
        e.betas
    );
    write_atomic(&out.join("report.md"), report::markdown(e, cells, &header).as_bytes())?;
    write_atomic(&out.join("cells.csv"), report::csv(cells).as_bytes())?;
    Ok(())
}

fn merge_cmd(ctx: &Context, dirs: &[PathBuf], out: Option<&Path>) -> Result<()> {
    let infos: Vec<RunInfo> = dirs
        .iter()
        .map(|d| {
            let p = d.join("run.json");
            let text = std::fs::read_to_string(&p).with_context(|| format!("{} has no run.json: is it a run directory?", d.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not a run record", p.display()))
        })
        .collect::<Result<_>>()?;
    let first = &infos[0];
    if let Some((d, _)) = dirs.iter().zip(&infos).find(|(_, i)| i.experiment_sha256 != first.experiment_sha256) {
        bail!("{} is a run of another experiment, profile or numerics than {}", d.display(), dirs[0].display());
    }
    let e = experiment_from_json(&first.experiment)?;
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => dirs[0].parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")).join("merged"),
    };
    let cells = merge(dirs)?;
    std::fs::create_dir_all(&out)?;
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
    write_report(&out, &e, &info, &cells)?;
    let grid = plan(&e).len();
    if cells.len() < grid {
        eprintln!("note: {} of the grid's {grid} cells are present (shards missing or unfinished)", cells.len());
    }
    ctx.print(&serde_json::json!({"out": out, "cells": cells.len(), "grid_cells": grid}), || println!("merged {} cells of {} shard(s) into {}", cells.len(), dirs.len(), out.display()))
}

/// The resolved experiment stored in run.json, read back (through the file format, so
/// the same checks apply) for merges.
fn experiment_from_json(v: &serde_json::Value) -> Result<Experiment> {
    let mut fields = serde_json::Map::new();
    for k in ["name", "targets", "sources", "concepts", "conditions", "estimators", "betas", "vectors", "evaluations", "seed", "layers", "sizes", "data_dir"] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            fields.insert(k.into(), x.clone());
        }
    }
    let file: ExperimentFile = serde_json::from_value(serde_json::Value::Object(fields)).context("run.json holds an unreadable experiment")?;
    let mut e = file.resolve(None)?;
    e.profile = v.get("profile").and_then(|p| p.as_str()).map(String::from);
    Ok(e)
}

/// Steering conditions evaluated in one batched A/B pass.
const CONDITIONS_PER_PASS: usize = 8;

/// Computes cells, keeping loaded models between groups.
struct Runner<'a> {
    ctx: &'a Context,
    e: &'a Experiment,
    models: HashMap<String, Model>,
    store: Store,
    data_dir: PathBuf,
}

/// A steering vector for the target and what to record about it.
struct Prepared {
    vector: Option<SteeringVector>,
    skipped: Option<String>,
    map: Option<LinearMap>,
    saw_vector_pairs: Option<bool>,
}

impl Runner<'_> {
    fn model(&mut self, id: &str) -> Result<&Model> {
        if !self.models.contains_key(id) {
            let m = self.ctx.load(id)?;
            self.models.insert(id.to_string(), m);
        }
        Ok(&self.models[id])
    }

    fn model_hashes(&self) -> Result<Vec<(String, String)>> {
        self.models.iter().map(|(id, m)| Ok((id.clone(), m.file_sha256()?))).collect()
    }

    fn layer(&self, id: &str) -> Result<usize> {
        match self.e.layers.get(id) {
            Some(&l) => Ok(l),
            None => crate::cmd::experiment::default_layer(self.ctx, id, &[]),
        }
    }

    fn file(&self, concept: &str, name: &str) -> String {
        self.data_dir.join("caa").join(concept).join(name).display().to_string()
    }

    fn extract(&mut self, model_id: &str, concept: &str, layer: usize, kind: VectorKind) -> Result<SteeringVector> {
        let args = ExtractArgs {
            custom: Default::default(),
            model: model_id.into(),
            dataset: self.file(concept, "generate_dataset.json"),
            layers: layer.to_string(),
            method: "mean-diff".into(),
            limit: Some(self.e.sizes.extract_pairs),
            normalize: false,
            balance_letters: kind == VectorKind::Balanced,
            data_dir: Some(self.data_dir.clone()),
            no_cache: false,
            no_prefix_sharing: false,
            no_early_exit: false,
            output: PathBuf::new(),
        };
        let model = self.model(model_id)?;
        Ok(extract_vector(model, &args)?.0)
    }

    fn align(&mut self, src: &str, tgt: &str, layers: (usize, usize), corpus: String, estimator: &str, skip: usize, limit: usize) -> Result<LinearMap> {
        let args = AlignArgs {
            source: src.into(),
            source_layer: layers.0,
            target: tgt.into(),
            target_layer: layers.1,
            corpus,
            limit: Some(limit),
            skip,
            estimator: estimator.into(),
            vector: None,
            native: None,
            data_dir: Some(self.data_dir.clone()),
            no_cache: false,
            output: PathBuf::new(),
        };
        self.model(src)?;
        self.model(tgt)?;
        align_models(&self.models[src], &self.models[tgt], &args)
    }

    /// The vector a condition steers with (maps fitted as needed).
    fn prepare(&mut self, key: &CellKey, native: &SteeringVector, layers: (usize, usize), source_vector: Option<&SteeringVector>) -> Result<Prepared> {
        let none = Prepared { vector: None, skipped: None, map: None, saw_vector_pairs: None };
        let (src, tgt, concept) = (key.source.clone().unwrap_or_default(), key.target.clone(), key.concept.clone());
        let n = self.e.sizes.extract_pairs;
        let transfer = |sv: &SteeringVector, map: LinearMap, saw: Option<bool>| -> Result<Prepared> {
            let label = format!("{} map of lcross reproduce ({})", key.condition.name(), key.group().id());
            let v = transfer_vector_described(sv, &map, &label, &map_fingerprint(&map), false)?;
            Ok(Prepared { vector: Some(v), skipped: None, map: Some(map), saw_vector_pairs: saw })
        };
        Ok(match key.condition {
            ConditionKind::None => none,
            ConditionKind::SelfModulation => Prepared { vector: Some(native.clone()), ..none },
            ConditionKind::Lcross => {
                let sv = source_vector.context("a transfer needs the source vector")?;
                let est = key.estimator.clone().unwrap_or_else(|| "ols".into());
                transfer(sv, self.align(&src, &tgt, layers, self.file(&concept, "generate_dataset.json"), &est, 0, n)?, Some(true))?
            }
            ConditionKind::LcrossUnrelated => {
                let sv = source_vector.context("a transfer needs the source vector")?;
                let i = self.e.concepts.iter().position(|c| *c == concept).unwrap_or(0);
                let other = self.e.concepts[(i + 1) % self.e.concepts.len()].clone();
                transfer(sv, self.align(&src, &tgt, layers, self.file(&other, "generate_dataset.json"), "ols", 0, n)?, Some(false))?
            }
            ConditionKind::LcrossHeldout => {
                let sv = source_vector.context("a transfer needs the source vector")?;
                transfer(sv, self.align(&src, &tgt, layers, self.file(&concept, "generate_dataset.json"), "ols", n, self.e.sizes.heldout_pairs)?, Some(false))?
            }
            ConditionKind::LcrossPooled => {
                let sv = source_vector.context("a transfer needs the source vector")?;
                self.model(&src)?;
                self.model(&tgt)?;
                let map = crate::cmd::experiment::pooled_map(&self.models[&src], &self.models[&tgt], layers, &self.e.concepts, &self.data_dir, n)?;
                transfer(sv, map, Some(true))?
            }
            ConditionKind::RandomT => {
                let sv = source_vector.context("a transfer needs the source vector")?;
                transfer(sv, self.align(&src, &tgt, layers, self.file(&concept, "generate_dataset.json"), &format!("random:{}", self.e.seed), 0, n)?, None)?
            }
            ConditionKind::Identity => {
                let sv = source_vector.context("a transfer needs the source vector")?;
                let (ds, dt) = (self.models[&src].config().hidden_size, self.models[&tgt].config().hidden_size);
                if ds != dt {
                    return Ok(Prepared { skipped: Some(format!("no T needs equal hidden sizes; {src} has {ds}, {tgt} has {dt}")), ..none });
                }
                let mut v = sv.clone();
                v.metadata.model_id = tgt.clone();
                v.metadata.model_sha256 = self.models[&tgt].file_sha256()?;
                v.metadata.layers = vec![layers.1];
                v.layers = [(layers.1, sv.layers[&layers.0].clone())].into_iter().collect();
                Prepared { vector: Some(v), ..none }
            }
        })
    }

    fn run_group(&mut self, group: &Group, cells: &[&CellKey], log: &mut CellLog, bar: &indicatif::ProgressBar) -> Result<()> {
        let started = Instant::now();
        let lt = self.layer(&group.target)?;
        let native = self.extract(&group.target.clone(), &group.concept.clone(), lt, group.vector)?;
        let items = load_ab(&self.file(&group.concept, "test_dataset_ab.json"), Some(self.e.sizes.test_questions))?;
        let (source_vector, ls) = match &group.source {
            Some(s) => {
                let ls = self.layer(s)?;
                (Some(self.extract(&s.clone(), &group.concept.clone(), ls, group.vector)?), ls)
            }
            None => (None, 0),
        };
        // Prepare every vector first (maps are shared by the betas of a condition).
        let mut prepared: Vec<(&CellKey, std::rc::Rc<Prepared>)> = Vec::new();
        let mut by_condition: HashMap<(ConditionKind, Option<String>), std::rc::Rc<Prepared>> = HashMap::new();
        for &k in cells {
            let id = (k.condition, k.estimator.clone());
            let p = match by_condition.get(&id) {
                Some(p) => p.clone(),
                None => {
                    let p = std::rc::Rc::new(self.prepare(k, &native, (ls, lt), source_vector.as_ref())?);
                    by_condition.insert(id, p.clone());
                    p
                }
            };
            prepared.push((k, p));
        }
        let prepare_s = started.elapsed().as_secs_f64();
        let native_values = &native.layers[&lt];
        let records: Vec<CellRecord> = prepared
            .iter()
            .map(|(k, p)| CellRecord {
                id: k.id(),
                key: (*k).clone(),
                mean: None,
                stderr: None,
                n: 0,
                per_item: Vec::new(),
                skipped: p.skipped.clone(),
                cosine_to_native: p.vector.as_ref().and_then(|v| v.layers.get(&lt)).map(|v| cosine(v, native_values)),
                train_r2: p.map.as_ref().map(|m| m.metadata.diagnostics.train_r2),
                heldout_r2: p.map.as_ref().and_then(|m| m.metadata.diagnostics.heldout_r2),
                interpolating: p.map.as_ref().map(|m| m.metadata.diagnostics.interpolating),
                map_saw_vector_pairs: p.saw_vector_pairs,
                map_n: p.map.as_ref().map(|m| m.metadata.diagnostics.n),
                prepare_s,
                eval_s: 0.0,
            })
            .collect();
        // Skipped cells are done at once; the others are evaluated together, a few
        // conditions per batched pass (the questions' unsteered prefix is shared), each
        // chunk stored as it finishes so an interruption loses at most one chunk.
        let mut evaluate: Vec<usize> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if r.skipped.is_some() {
                log.append(r.clone())?;
                bar.inc(1);
            } else {
                evaluate.push(i);
            }
        }
        self.model(&group.target)?;
        for chunk in evaluate.chunks(CONDITIONS_PER_PASS) {
            let t = Instant::now();
            let mut steering = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let (k, p) = &prepared[i];
                steering.push(match (k.condition, &p.vector) {
                    (ConditionKind::None, _) => None,
                    (_, Some(v)) => Some(Steering { vector: v, beta: k.beta, positions: Positions::All }),
                    (_, None) => bail!("cell {} has no vector", k.id()),
                });
            }
            let results = evaluate_ab_cached(&self.models[&group.target], &items, &steering, &mut self.store)?;
            let each = t.elapsed().as_secs_f64() / chunk.len() as f64;
            for (&i, r) in chunk.iter().zip(results) {
                let record = CellRecord { mean: Some(r.mean_prob_matching), stderr: Some(lcross_eval::stats::stderr(&r.per_item)), n: r.n, per_item: r.per_item, eval_s: each, ..records[i].clone() };
                log.append(record)?;
                bar.inc(1);
            }
        }
        Ok(())
    }
}
