//! `lcross align`, `lcross transfer`, `lcross compare-maps`, `lcross vector export|import`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_core::activations::{ExtractOptions, Extractor};
use lcross_core::store::Store;
use lcross_core::analyses::{compare, random_like, MapComparison};
use lcross_core::dataset::{self, ConceptDataset};
use lcross_core::maps::{apply, fit, Estimator, LinearMap, MapMetadata, Rows};
use lcross_core::steering::{cosine, Method, SteeringVector, VectorMetadata};
use lcross_core::texts::pair_ids;
use lcross_model::Model;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::common::Context;

/// A corpus: both texts of every pair of a concept dataset, or the lines of a text file.
pub enum Corpus {
    Pairs(ConceptDataset),
    Lines { source: String, hash: String, lines: Vec<String> },
}

impl Corpus {
    /// Load `--corpus`: a dataset spec (as `extract --dataset`) or a `.txt` file (one text a line).
    /// `skip` items are dropped before `limit` is applied.
    pub fn load(spec: &str, data_dir: &Path, skip: usize, limit: Option<usize>) -> Result<Self> {
        let p = Path::new(spec);
        if p.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {spec}"))?;
            let mut lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).skip(skip).map(String::from).collect();
            if let Some(n) = limit {
                lines.truncate(n);
            }
            if lines.is_empty() {
                bail!("{spec}: no non-empty lines{}", if skip > 0 { format!(" after skipping {skip}") } else { String::new() });
            }
            let hash = hex::encode(Sha256::digest(lines.join("\n").as_bytes()));
            let source = if skip > 0 { format!("{spec} (from line {skip})") } else { spec.to_string() };
            return Ok(Self::Lines { source, hash, lines });
        }
        let d = dataset::load_concept(spec, data_dir)?.skip(skip).limit(limit);
        if d.pairs.is_empty() {
            bail!("{spec}: no pairs left after skipping {skip}");
        }
        Ok(Self::Pairs(d))
    }

    /// Source and content hash.
    pub fn describe(&self) -> (String, String) {
        match self {
            Self::Pairs(d) => (d.source.clone(), d.hash.clone()),
            Self::Lines { source, hash, .. } => (source.clone(), hash.clone()),
        }
    }

    /// Last-token states of every corpus text at `layer` of `model`, in corpus order
    /// (for pairs: positive then negative of each pair).
    pub fn states(&self, model: &Model, layer: usize, use_cache: bool) -> Result<Vec<Vec<f32>>> {
        let cache = if use_cache { Some(Store::open_default()?) } else { None };
        let mut ex = Extractor::new(model, &[layer], cache, ExtractOptions::default())?;
        let label = format!("corpus on {}", model.id());
        Ok(match self {
            Self::Pairs(d) => {
                let ids: Vec<_> = d.pairs.iter().map(|p| pair_ids(model, p)).collect::<lcross_core::Result<_>>()?;
                ex.pairs(&ids, &label)?.into_iter().flat_map(|(a, b)| [a[&layer].clone(), b[&layer].clone()]).collect()
            }
            Self::Lines { lines, .. } => {
                let ids: Vec<Vec<u32>> = lines.iter().map(|l| model.prompt(l, false, None).map(|p| p.ids)).collect::<lcross_model::Result<_>>()?;
                ex.texts(&ids, &label)?.into_iter().map(|s| s[&layer].clone()).collect()
            }
        })
    }
}

#[derive(Args)]
pub struct AlignArgs {
    /// Source model.
    #[arg(long)]
    pub source: String,
    /// Source layer (resid_post, 0-based).
    #[arg(long)]
    pub source_layer: usize,
    /// Target model.
    #[arg(long)]
    pub target: String,
    /// Target layer.
    #[arg(long)]
    pub target_layer: usize,
    /// Corpus: a concept dataset (CAA file, builtin:NAME, RepE concept) whose pair texts are
    /// used, or a .txt file with one text a line.
    #[arg(long)]
    pub corpus: String,
    /// First N items of the corpus (pairs: both texts of each), after --skip.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the first N items (e.g. the pairs the vector was extracted from, to fit the map
    /// on held-out pairs).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// ols (default, the paper's pseudo-inverse), ridge[:LAMBDA], procrustes, random[:SEED], identity.
    #[arg(long, default_value = "ols")]
    pub estimator: String,
    /// A source-model vector to transfer at fit time (with --native: cosine reported).
    #[arg(long)]
    pub vector: Option<PathBuf>,
    /// The target model's own vector of the same concept.
    #[arg(long)]
    pub native: Option<PathBuf>,
    /// Data directory for RepE concepts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not use the activation cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Output map file.
    #[arg(long, short)]
    pub output: PathBuf,
}

/// Fit a map between two loaded models.
pub fn align_models(src: &Model, tgt: &Model, a: &AlignArgs) -> Result<LinearMap> {
    let est = Estimator::parse(&a.estimator).with_context(|| format!("unknown estimator `{}`", a.estimator))?;
    let data_dir = a.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
    let corpus = Corpus::load(&a.corpus, &data_dir, a.skip, a.limit)?;
    let xs = corpus.states(src, a.source_layer, !a.no_cache)?;
    let ys = corpus.states(tgt, a.target_layer, !a.no_cache)?;
    let (source, hash) = corpus.describe();
    let mut map = fit_states(src, tgt, (a.source_layer, a.target_layer), &xs, &ys, est, (source, hash))?;
    let metadata = &mut map.metadata;
    if let (Some(v), Some(n)) = (&a.vector, &a.native) {
        let sv = SteeringVector::load(v)?;
        let native = SteeringVector::load(n)?;
        let sv_layer = sv.layers.get(&a.source_layer).with_context(|| format!("{} has no layer {}", v.display(), a.source_layer))?;
        let nat = native.layers.get(&a.target_layer).with_context(|| format!("{} has no layer {}", n.display(), a.target_layer))?;
        let moved = apply(&map.t, sv_layer)?;
        metadata.native_cosine = Some(cosine(&moved, nat));
        metadata.native_vector = Some(n.display().to_string());
    }
    Ok(map)
}

/// Fit a map on paired states already gathered (`xs[i]` from `src`, `ys[i]` from `tgt`, same
/// text), recording both models, the layers and the corpus `(description, sha256)`.
pub fn fit_states(src: &Model, tgt: &Model, layers: (usize, usize), xs: &[Vec<f32>], ys: &[Vec<f32>], est: Estimator, corpus: (String, String)) -> Result<LinearMap> {
    let (t, diag) = fit(&Rows::from_f32(xs)?, &Rows::from_f32(ys)?, &est)?;
    let metadata = MapMetadata {
        lcross_version: lcross_core::VERSION.into(),
        source_model_id: src.id().into(),
        source_model_sha256: src.file_sha256()?,
        target_model_id: tgt.id().into(),
        target_model_sha256: tgt.file_sha256()?,
        source_layer: layers.0,
        target_layer: layers.1,
        estimator: est,
        corpus: corpus.0,
        corpus_sha256: corpus.1,
        diagnostics: diag,
        native_cosine: None,
        native_vector: None,
    };
    Ok(LinearMap { metadata, t })
}

/// Human summary of a fit.
pub fn print_fit(m: &MapMetadata) {
    let d = &m.diagnostics;
    println!(
        "{} L{} ({}) -> {} L{} ({}): {:?} on {} texts of {}",
        m.source_model_id, m.source_layer, d.source_dim, m.target_model_id, m.target_layer, d.target_dim, m.estimator, d.n, m.corpus
    );
    println!(
        "  train R^2 {:.4}, held-out R^2 {}, rank(X) {}{}, {:.2} s",
        d.train_r2,
        d.heldout_r2.map_or("-".into(), |r| format!("{r:.4}")),
        d.rank,
        d.lambda.map_or(String::new(), |l| format!(", lambda {l:.3e}")),
        d.seconds
    );
    if d.interpolating {
        println!("  interpolation regime: n = {} <= d_s = {} and X has full row rank, so X T = Y exactly and a vector", d.n, d.source_dim);
        println!("  built from these texts transfers to exactly the target's vector of the same texts (METHOD.md).");
    }
    if let Some(c) = m.native_cosine {
        println!("  cosine(transferred, native) = {c:.4}");
    }
}

pub fn align_cmd(ctx: &Context, a: AlignArgs) -> Result<()> {
    let src = ctx.load(&a.source)?;
    let tgt = ctx.load(&a.target)?;
    let map = align_models(&src, &tgt, &a)?;
    map.save(&a.output)?;
    ctx.print(&map.metadata, || {
        print_fit(&map.metadata);
        println!("  -> {}", a.output.display());
    })
}

/// Transfer `sv` through `map` read from `map_path` (refusing a vector of another model
/// unless `force`); the provenance records the file and its sha256.
pub fn transfer_vector(sv: &SteeringVector, map: &LinearMap, map_path: &Path, force: bool) -> Result<SteeringVector> {
    let map_bytes = std::fs::read(map_path).with_context(|| format!("reading {}", map_path.display()))?;
    transfer_vector_described(sv, map, &map_path.display().to_string(), &hex::encode(Sha256::digest(&map_bytes)), force)
}

/// sha256 of a map's metadata and values, for maps that were never written to a file.
pub fn map_fingerprint(map: &LinearMap) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&map.metadata).unwrap_or_default());
    for j in 0..map.t.ncols() {
        for i in 0..map.t.nrows() {
            h.update(map.t[(i, j)].to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// Transfer `sv` through `map`, recording `map_label` and `map_sha256` as its origin.
pub fn transfer_vector_described(sv: &SteeringVector, map: &LinearMap, map_label: &str, map_sha256: &str, force: bool) -> Result<SteeringVector> {
    let m = &map.metadata;
    if sv.metadata.hidden_size != m.diagnostics.source_dim {
        bail!("vector has hidden size {}, the map's source ({}) has {}", sv.metadata.hidden_size, m.source_model_id, m.diagnostics.source_dim);
    }
    if !force && (sv.metadata.model_id != m.source_model_id || sv.metadata.model_sha256 != m.source_model_sha256) {
        bail!("vector is from `{}`, the map's source is `{}`; pass --force to transfer anyway", sv.metadata.model_id, m.source_model_id);
    }
    let v = sv.layers.get(&m.source_layer).with_context(|| format!("vector has no layer {} (the map's source layer); it has {:?}", m.source_layer, sv.metadata.layers))?;
    let moved = apply(&map.t, v)?;
    let metadata = VectorMetadata {
        lcross_version: lcross_core::VERSION.into(),
        model_id: m.target_model_id.clone(),
        model_sha256: m.target_model_sha256.clone(),
        hidden_size: m.diagnostics.target_dim,
        layers: vec![m.target_layer],
        concept: sv.metadata.concept.clone(),
        dataset: sv.metadata.dataset.clone(),
        dataset_sha256: sv.metadata.dataset_sha256.clone(),
        method: Method::Transferred,
        n_pairs: sv.metadata.n_pairs,
        normalized: false,
        letter_balance: sv.metadata.letter_balance,
        balanced_letters: sv.metadata.balanced_letters,
        half_split_cosine: Default::default(),
        calibration: None,
        provenance: Some(serde_json::json!({
            "source_vector": sv.metadata,
            "map": { "path": map_label, "sha256": map_sha256, "metadata": m },
        })),
    };
    Ok(SteeringVector { metadata, layers: [(m.target_layer, moved)].into_iter().collect() })
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
    let out = transfer_vector(&sv, &map, &a.map, a.force)?;
    out.save(&a.output)?;
    let norm = out.layers.values().next().map_or(0.0, |v| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt());
    ctx.print(&out.metadata, || {
        println!(
            "{} L{} -> {} L{}: transferred `{}` vector, norm {norm:.4} -> {}",
            sv.metadata.model_id, map.metadata.source_layer, out.metadata.model_id, map.metadata.target_layer, out.metadata.concept, a.output.display()
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
