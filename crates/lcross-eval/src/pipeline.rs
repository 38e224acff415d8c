//! The steps every experiment is made of, on loaded models: extract a steering vector,
//! gather paired states of a corpus, fit a map, transfer a vector through it.
//!
//! The CLI's `extract`, `align`, `transfer`, `demo`, `experiment` and `reproduce` all call
//! these, so a vector or map made by one is the same as one made by another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lcross_core::activations::{ExtractOptions, Extractor};
use lcross_core::dataset::{self, AbItem, ConceptDataset, ContrastPair};
use lcross_core::maps::{fit, Estimator, LinearMap, MapMetadata, Rows};
use lcross_core::steering::{extract, ExtractSpec, Method, SteeringVector, VectorMetadata};
use lcross_core::store::Store;
use lcross_core::texts::pair_ids;
use lcross_model::{HookPoint, Model};
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};

/// How a vector is extracted from a concept's pairs.
#[derive(Debug, Clone)]
pub struct VectorRecipe {
    /// resid_post layers (0-based).
    pub layers: Vec<usize>,
    pub method: Method,
    /// Unit-normalise each layer's vector.
    pub normalize: bool,
    /// Average the A- and B-matching pairs separately (A/B data only).
    pub balance_letters: bool,
    /// Read and write the activation cache.
    pub use_cache: bool,
    /// Run a pair's shared prefix once (off only to measure what it buys).
    pub prefix_sharing: bool,
    /// Stop the forward after the deepest captured layer (off only to measure).
    pub early_exit: bool,
    /// The hook point read at each layer (default `resid_post`); recorded in the vector.
    pub point: HookPoint,
}

impl VectorRecipe {
    /// Mean-difference (CAA) at `layers`, cached, nothing else.
    pub fn mean_diff(layers: Vec<usize>) -> Self {
        Self {
            layers,
            method: Method::MeanDiff,
            normalize: false,
            balance_letters: false,
            use_cache: true,
            prefix_sharing: true,
            early_exit: true,
            point: HookPoint::ResidPost,
        }
    }
}

/// Extract a vector of `ds` from `model`; returns it and the seconds the forwards took.
pub fn extract_vector(model: &Model, ds: &ConceptDataset, r: &VectorRecipe) -> Result<(SteeringVector, f64)> {
    if ds.pairs.is_empty() {
        return Err(lcross_core::CoreError::Empty { what: format!("pairs in dataset {}", ds.source) }.into());
    }
    let cache = if r.use_cache { Some(Store::open_default()?) } else { None };
    let opts = ExtractOptions { prefix_sharing: r.prefix_sharing, early_exit: r.early_exit, point: r.point, ..ExtractOptions::default() };
    let mut ex = Extractor::new(model, &r.layers, cache, opts)?;
    let ids: Vec<(Vec<u32>, Vec<u32>)> = ds.pairs.iter().map(|p| pair_ids(model, p)).collect::<lcross_core::Result<_>>()?;
    let start = Instant::now();
    let states = ex.pairs(&ids, &format!("{} on {}", ds.concept, model.id()))?;
    let secs = start.elapsed().as_secs_f64();
    let letters: Option<Vec<char>> = positive_letters(ds).into_iter().collect();
    if r.balance_letters && letters.is_none() {
        return Err(EvalError::bad_value("dataset of --balance-letters", &ds.source, "A/B data (balancing letters needs answer letters)"));
    }
    let spec = ExtractSpec { method: r.method, normalize: r.normalize, balance_letters: r.balance_letters };
    let (vectors, stability) = extract(&states, &r.layers, letters.as_deref(), &spec)?;
    let metadata = VectorMetadata {
        lcross_version: lcross_core::VERSION.into(),
        model_id: model.id().into(),
        model_sha256: model.file_sha256()?,
        hidden_size: model.config().hidden_size,
        layers: vectors.keys().copied().collect(),
        concept: ds.concept.clone(),
        dataset: ds.source.clone(),
        dataset_sha256: ds.hash.clone(),
        method: r.method,
        n_pairs: ds.pairs.len(),
        normalized: r.normalize,
        letter_balance: ds.letter_balance(),
        balanced_letters: r.balance_letters,
        half_split_cosine: stability,
        hook: r.point,
        calibration: None,
        provenance: None,
    };
    Ok((SteeringVector { metadata, layers: vectors }, secs))
}

/// A corpus for a map: both texts of every pair of a concept dataset, or lines of text.
pub enum Corpus {
    Pairs(ConceptDataset),
    Lines { source: String, hash: String, lines: Vec<String> },
}

impl Corpus {
    /// A dataset spec (as `extract --dataset` takes) or a `.txt` file (one text a line);
    /// `skip` items are dropped before `limit` is applied.
    pub fn load(spec: &str, data_dir: &Path, skip: usize, limit: Option<usize>) -> Result<Self> {
        let p = Path::new(spec);
        if p.extension().is_some_and(|e| e == "txt") {
            let text = lcross_core::data::read_text(p)?;
            let mut lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).skip(skip).map(String::from).collect();
            if let Some(n) = limit {
                lines.truncate(n);
            }
            if lines.is_empty() {
                return Err(lcross_core::CoreError::Empty {
                    what: format!("non-empty lines{} in {spec}", if skip > 0 { format!(" after skipping {skip}") } else { String::new() }),
                }
                .into());
            }
            let hash = hex::encode(Sha256::digest(lines.join("\n").as_bytes()));
            let source = if skip > 0 { format!("{spec} (from line {skip})") } else { spec.to_string() };
            return Ok(Self::Lines { source, hash, lines });
        }
        let d = dataset::load_concept(spec, data_dir)?.skip(skip).limit(limit);
        if d.pairs.is_empty() {
            return Err(lcross_core::CoreError::Empty { what: format!("pairs left after skipping {skip} in {spec}") }.into());
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

    /// Last-token states of every text at each of `layers` (one forward per text), in
    /// corpus order per layer.
    pub fn states_at(&self, model: &Model, layers: &[usize], use_cache: bool) -> Result<std::collections::BTreeMap<usize, Vec<Vec<f32>>>> {
        self.states_at_point(model, layers, HookPoint::ResidPost, use_cache)
    }

    /// [`Corpus::states_at`] at another hook point than `resid_post`.
    pub fn states_at_point(
        &self,
        model: &Model,
        layers: &[usize],
        point: HookPoint,
        use_cache: bool,
    ) -> Result<std::collections::BTreeMap<usize, Vec<Vec<f32>>>> {
        let cache = if use_cache { Some(Store::open_default()?) } else { None };
        let mut ex = Extractor::new(model, layers, cache, ExtractOptions { point, ..ExtractOptions::default() })?;
        let label = format!("corpus on {} ({} layers)", model.id(), layers.len());
        let per_text: Vec<lcross_core::activations::LayerStates> = match self {
            Self::Pairs(d) => {
                let ids: Vec<_> = d.pairs.iter().map(|p| pair_ids(model, p)).collect::<lcross_core::Result<_>>()?;
                ex.pairs(&ids, &label)?.into_iter().flat_map(|(a, b)| [a, b]).collect()
            }
            Self::Lines { lines, .. } => {
                let ids: Vec<Vec<u32>> = lines.iter().map(|l| model.prompt(l, false, None).map(|p| p.ids)).collect::<lcross_model::Result<_>>()?;
                ex.texts(&ids, &label)?
            }
        };
        Ok(layers.iter().map(|l| (*l, per_text.iter().map(|s| s[l].clone()).collect())).collect())
    }

    /// Last-token states of every text at `layer` of `model`, in corpus order (for pairs:
    /// positive then negative of each pair).
    pub fn states(&self, model: &Model, layer: usize, use_cache: bool) -> Result<Vec<Vec<f32>>> {
        self.states_point(model, layer, HookPoint::ResidPost, use_cache)
    }

    /// [`Corpus::states`] at another hook point than `resid_post`.
    pub fn states_point(&self, model: &Model, layer: usize, point: HookPoint, use_cache: bool) -> Result<Vec<Vec<f32>>> {
        Ok(self.states_at_point(model, &[layer], point, use_cache)?.remove(&layer).unwrap_or_default())
    }
}

/// Fit a map `src` layer -> `tgt` layer on the states of `corpus` in both models.
pub fn align(src: &Model, tgt: &Model, layers: (usize, usize), corpus: &Corpus, est: Estimator, use_cache: bool) -> Result<LinearMap> {
    align_at(src, tgt, layers, (HookPoint::ResidPost, HookPoint::ResidPost), corpus, est, use_cache)
}

/// [`align`] on the states of hook points `points` (source, target) instead of
/// `resid_post`; the map records them, and a vector moves through it only from its
/// source point (to its target point).
pub fn align_at(
    src: &Model,
    tgt: &Model,
    layers: (usize, usize),
    points: (HookPoint, HookPoint),
    corpus: &Corpus,
    est: Estimator,
    use_cache: bool,
) -> Result<LinearMap> {
    if est == Estimator::Embedding {
        return Err(EvalError::bad_value(
            "estimator",
            "embedding",
            "a map fitted on states (ols, ridge, ...): `embedding` fits on token embeddings (align_embeddings)",
        ));
    }
    let xs = corpus.states_point(src, layers.0, points.0, use_cache)?;
    let ys = corpus.states_point(tgt, layers.1, points.1, use_cache)?;
    let mut map = fit_states(src, tgt, layers, &xs, &ys, est, corpus.describe())?;
    map.metadata.source_hook = points.0;
    map.metadata.target_hook = points.1;
    Ok(map)
}

/// The alignment metrics (mutual k-NN, CKA, unbiased CKA, CKNNA, SVCCA) of `src` at
/// `layers.0` and `tgt` at `layers.1` on the last-token states of `corpus`, read exactly as
/// [`align_at`] reads them (`lcross similarity`).
pub fn similarity_at(
    src: &Model,
    tgt: &Model,
    layers: (usize, usize),
    points: (HookPoint, HookPoint),
    corpus: &Corpus,
    opts: &lcross_core::similarity::SimilarityOptions,
    use_cache: bool,
) -> Result<lcross_core::similarity::Alignment> {
    let xs = corpus.states_point(src, layers.0, points.0, use_cache)?;
    let ys = corpus.states_point(tgt, layers.1, points.1, use_cache)?;
    Ok(lcross_core::similarity::alignment(&Rows::from_f32(&xs)?, &Rows::from_f32(&ys)?, opts)?)
}

/// The alignment metrics of every (source layer, target layer) pair: `lcross similarity
/// --source-layers all --target-layers all`, the layer-by-layer heatmaps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimilarityGrid {
    pub source: String,
    pub target: String,
    pub source_layers: Vec<usize>,
    pub target_layers: Vec<usize>,
    /// Texts compared per pair.
    pub n: usize,
    /// One per pair, source layer major.
    pub cells: Vec<SimilarityCell>,
}

/// The metrics of one layer pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimilarityCell {
    pub source_layer: usize,
    pub target_layer: usize,
    #[serde(flatten)]
    pub alignment: lcross_core::similarity::Alignment,
}

/// The metric names of [`lcross_core::similarity::Alignment`], in column order.
pub const SIMILARITY_METRICS: [&str; 5] = ["mutual_knn", "cka", "unbiased_cka", "cknna", "svcca"];

impl SimilarityGrid {
    /// One metric of a cell by name.
    pub fn value(cell: &SimilarityCell, metric: &str) -> f64 {
        let a = &cell.alignment;
        match metric {
            "mutual_knn" => a.mutual_knn,
            "cka" => a.cka,
            "unbiased_cka" => a.unbiased_cka,
            "cknna" => a.cknna,
            _ => a.svcca,
        }
    }

    /// The layer pair with the highest value of `metric`.
    pub fn best(&self, metric: &str) -> Option<&SimilarityCell> {
        self.cells.iter().filter(|c| Self::value(c, metric).is_finite()).max_by(|a, b| Self::value(a, metric).total_cmp(&Self::value(b, metric)))
    }

    /// Write `similarity.csv`, `similarity.json` and one heatmap per metric
    /// (`similarity-METRIC.svg`: source layers across, target layers up) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut csv = format!("source_layer,target_layer,{},n\n", SIMILARITY_METRICS.join(","));
        for c in &self.cells {
            let values: Vec<String> = SIMILARITY_METRICS.iter().map(|m| format!("{:.6}", Self::value(c, m))).collect();
            csv.push_str(&format!("{},{},{},{}\n", c.source_layer, c.target_layer, values.join(","), c.alignment.n));
        }
        let mut written = vec![dir.join("similarity.csv"), dir.join("similarity.json")];
        lcross_core::artifact::write_atomic(&written[0], csv.as_bytes())?;
        lcross_core::artifact::write_atomic(&written[1], serde_json::to_string_pretty(self)?.as_bytes())?;
        for metric in SIMILARITY_METRICS {
            let grid: Vec<Vec<f64>> = self
                .source_layers
                .iter()
                .map(|&s| {
                    self.target_layers
                        .iter()
                        .map(|&t| self.cells.iter().find(|c| c.source_layer == s && c.target_layer == t).map_or(f64::NAN, |c| Self::value(c, metric)))
                        .collect()
                })
                .collect();
            let path = dir.join(format!("similarity-{metric}.svg"));
            crate::plots::heatmap(
                &path,
                &format!("{metric}: {} vs {} ({} texts)", self.source, self.target, self.n),
                (&format!("{} layer", self.source), &self.source_layers),
                (&format!("{} layer", self.target), &self.target_layers),
                &grid,
            )?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The vocabulary strings of `model`'s tokenizer, each decoded alone (so byte-level `Ġ`
/// and SentencePiece `▁` spellings of a space agree), with the first id of each; special
/// tokens and strings that decode to nothing or to the replacement character (a partial
/// UTF-8 byte) are left out.
fn vocabulary_strings(model: &Model) -> Result<BTreeMap<String, u32>> {
    let tok = model.tokenizer();
    let n = (tok.vocab_size() as u32).min(model.config().vocab_size as u32);
    let mut out = BTreeMap::new();
    for id in 0..n {
        let s = tok.decode(&[id], true)?;
        if !s.is_empty() && !s.contains('\u{FFFD}') {
            out.entry(s).or_insert(id);
        }
    }
    Ok(out)
}

/// An `embedding` map (Emb2Emb): OLS from `src`'s input token embeddings to `tgt`'s on the
/// vocabulary strings both tokenizers share (the first `limit` of them in the source's id
/// order, when given), recorded for the layers vectors are taken from and added at. No
/// forward pass and no corpus: the residual stream keeps the embeddings' basis.
pub fn align_embeddings(src: &Model, tgt: &Model, layers: (usize, usize), limit: Option<usize>) -> Result<LinearMap> {
    let (a, b) = (vocabulary_strings(src)?, vocabulary_strings(tgt)?);
    let mut shared: Vec<(u32, u32)> = a.iter().filter_map(|(s, &i)| b.get(s).map(|&j| (i, j))).collect();
    shared.sort_unstable();
    if let Some(n) = limit {
        shared.truncate(n);
    }
    if shared.len() < 2 {
        return Err(lcross_core::CoreError::TooFew {
            what: format!("vocabulary strings shared by {} and {}", src.id(), tgt.id()),
            needed: 2,
            got: shared.len(),
        }
        .into());
    }
    let (src_ids, tgt_ids): (Vec<u32>, Vec<u32>) = shared.iter().copied().unzip();
    let xs = src.decoder().token_embeddings(&src_ids)?;
    let ys = tgt.decoder().token_embeddings(&tgt_ids)?;
    let mut h = Sha256::new();
    for (i, j) in &shared {
        h.update(i.to_le_bytes());
        h.update(j.to_le_bytes());
    }
    let corpus = (format!("token embeddings of {} vocabulary strings shared by {} and {}", shared.len(), src.id(), tgt.id()), hex::encode(h.finalize()));
    fit_states(src, tgt, layers, &xs, &ys, Estimator::Embedding, corpus)
}

/// Layers of `model` from a flag: `all`, or a list as [`lcross_core::steer::parse_layers`]
/// reads it, each within the model's depth.
pub fn layers_of(spec: &str, model: &Model) -> Result<Vec<usize>> {
    let n = model.config().num_layers;
    if spec.trim().eq_ignore_ascii_case("all") {
        return Ok((0..n).collect());
    }
    let layers = lcross_core::steer::parse_layers(spec)?;
    match layers.iter().find(|&&l| l >= n) {
        Some(&layer) => Err(lcross_core::CoreError::LayerOutOfRange { model: model.id().into(), layer, layers: n }.into()),
        None => Ok(layers),
    }
}

/// The alignment metrics of every pair of `source_layers` x `target_layers` on the states
/// of `corpus` (each model read once, at all its layers).
#[allow(clippy::too_many_arguments)]
pub fn similarity_grid(
    src: &Model,
    tgt: &Model,
    source_layers: &[usize],
    target_layers: &[usize],
    points: (HookPoint, HookPoint),
    corpus: &Corpus,
    opts: &lcross_core::similarity::SimilarityOptions,
    use_cache: bool,
) -> Result<SimilarityGrid> {
    let xs = corpus.states_at_point(src, source_layers, points.0, use_cache)?;
    let ys = corpus.states_at_point(tgt, target_layers, points.1, use_cache)?;
    let xs: BTreeMap<usize, Rows> = xs.iter().map(|(l, s)| Ok((*l, Rows::from_f32(s)?))).collect::<Result<_>>()?;
    let ys: BTreeMap<usize, Rows> = ys.iter().map(|(l, s)| Ok((*l, Rows::from_f32(s)?))).collect::<Result<_>>()?;
    let bar = lcross_core::activations::progress((source_layers.len() * target_layers.len()) as u64, "layer pairs");
    let mut cells = Vec::with_capacity(source_layers.len() * target_layers.len());
    for &s in source_layers {
        for &t in target_layers {
            lcross_model::interrupt::check()?;
            cells.push(SimilarityCell { source_layer: s, target_layer: t, alignment: lcross_core::similarity::alignment(&xs[&s], &ys[&t], opts)? });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let n = cells.first().map_or(0, |c| c.alignment.n);
    Ok(SimilarityGrid {
        source: src.id().into(),
        target: tgt.id().into(),
        source_layers: source_layers.to_vec(),
        target_layers: target_layers.to_vec(),
        n,
        cells,
    })
}

/// Fit a map on paired states already gathered (`xs[i]` from `src`, `ys[i]` from `tgt`, same
/// text), recording both models, the layers and the corpus `(description, sha256)`.
pub fn fit_states(
    src: &Model,
    tgt: &Model,
    layers: (usize, usize),
    xs: &[Vec<f32>],
    ys: &[Vec<f32>],
    est: Estimator,
    corpus: (String, String),
) -> Result<LinearMap> {
    let side = |model, layer| MapSide { model: Some(model), layer, point: HookPoint::ResidPost };
    fit_rows(&Rows::from_f32(xs)?, &Rows::from_f32(ys)?, est, side(src, layers.0), side(tgt, layers.1), corpus)
}

/// Where one side of a map's states come from: a model (None: unknown, e.g. arrays a
/// user captured elsewhere), its layer and hook point.
#[derive(Clone, Copy)]
pub struct MapSide<'a> {
    pub model: Option<&'a Model>,
    pub layer: usize,
    pub point: HookPoint,
}

impl MapSide<'_> {
    fn id_and_sha(&self) -> Result<(String, String)> {
        match self.model {
            Some(m) => Ok((m.id().into(), m.file_sha256()?)),
            None => Ok(("unknown".into(), String::new())),
        }
    }
}

/// Fit a map on paired rows (`x` row i and `y` row i of the same text), recording where
/// both sides come from and the corpus `(description, sha256)`.
pub fn fit_rows(x: &Rows, y: &Rows, est: Estimator, source: MapSide<'_>, target: MapSide<'_>, corpus: (String, String)) -> Result<LinearMap> {
    let (t, bias, mlp, diag) = match est {
        Estimator::Mlp { hidden } => {
            let (t, mlp, diag) = lcross_core::maps::fit_mlp(x, y, hidden)?;
            (t, None, Some(mlp), diag)
        }
        _ => {
            let (t, bias, diag) = lcross_core::maps::fit_with_bias(x, y, &est)?;
            (t, bias, None, diag)
        }
    };
    let ((source_model_id, source_model_sha256), (target_model_id, target_model_sha256)) = (source.id_and_sha()?, target.id_and_sha()?);
    let metadata = MapMetadata {
        lcross_version: lcross_core::VERSION.into(),
        source_model_id,
        source_model_sha256,
        target_model_id,
        target_model_sha256,
        source_layer: source.layer,
        target_layer: target.layer,
        estimator: est,
        corpus: corpus.0,
        corpus_sha256: corpus.1,
        diagnostics: diag,
        native_cosine: None,
        native_vector: None,
        source_hook: source.point,
        target_hook: target.point,
    };
    Ok(LinearMap { metadata, t, bias, mlp })
}

/// The state at the last token of each text at hook point `point` of block `layer`, in
/// order (texts as they are, or as one user message of the chat template with `chat`);
/// batched, and cached in the result store with `use_cache`.
pub fn last_token_states(model: &Model, texts: &[String], layer: usize, point: HookPoint, chat: bool, use_cache: bool) -> Result<Vec<Vec<f32>>> {
    if texts.is_empty() {
        return Err(lcross_core::CoreError::Empty { what: "texts to read states of".into() }.into());
    }
    let cache = if use_cache { Some(Store::open_default()?) } else { None };
    let mut ex = Extractor::new(model, &[layer], cache, ExtractOptions { point, ..ExtractOptions::default() })?;
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| model.prompt(t, chat, None).map(|p| p.ids)).collect::<lcross_model::Result<_>>()?;
    let states = ex.texts(&ids, &format!("states of {} texts on {}", texts.len(), model.id()))?;
    states
        .into_iter()
        .map(|mut s| {
            s.remove(&layer)
                .ok_or_else(|| lcross_core::CoreError::MissingLayer { what: "the captured states".into(), layer, layers: s.keys().copied().collect() }.into())
        })
        .collect()
}

/// The CAA generation file of a behaviour under `data_dir`.
pub fn caa_file(data_dir: &Path, behaviour: &str, name: &str) -> String {
    data_dir.join("caa").join(behaviour).join(name).display().to_string()
}

/// The training pairs of a grid concept as a dataset spec: a CAA behaviour's
/// `generate_dataset.json`, or `repe:<concept>` for a RepE concept.
pub fn concept_pairs_spec(data_dir: &Path, concept: &str) -> String {
    if crate::reproduce::config::is_repe(concept) {
        format!("repe:{concept}")
    } else {
        caa_file(data_dir, concept, "generate_dataset.json")
    }
}

/// One OLS map on the first `limit` pairs of each concept together (n can exceed d_s,
/// so the map does not interpolate any one behaviour's pairs).
pub fn pooled_map(src: &Model, tgt: &Model, layers: (usize, usize), concepts: &[String], data_dir: &Path, limit: usize) -> Result<LinearMap> {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut hasher = Sha256::new();
    for w in concepts {
        let corpus = Corpus::load(&concept_pairs_spec(data_dir, w), data_dir, 0, Some(limit))?;
        hasher.update(corpus.describe().1.as_bytes());
        xs.extend(corpus.states(src, layers.0, true)?);
        ys.extend(corpus.states(tgt, layers.1, true)?);
    }
    let description = format!("pooled: first {limit} pairs of each of {}", concepts.join(", "));
    fit_states(src, tgt, layers, &xs, &ys, Estimator::Ols, (description, hex::encode(hasher.finalize())))
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
    for b in map.bias.iter().flatten() {
        h.update(b.to_le_bytes());
    }
    if let Some(m) = &map.mlp {
        for x in m.w1.iter().chain(&m.b1).chain(&m.w2).chain(&m.b2).chain(&m.anchors) {
            h.update(x.to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// Transfer `sv` through `map`, recording `map_label` and `map_sha256` as its origin;
/// a vector of another model than the map's source is refused unless `force`.
pub fn transfer_vector(sv: &SteeringVector, map: &LinearMap, map_label: &str, map_sha256: &str, force: bool) -> Result<SteeringVector> {
    let m = &map.metadata;
    if sv.metadata.hidden_size != m.diagnostics.source_dim {
        return Err(lcross_core::CoreError::HiddenSizeMismatch {
            what: "the vector".into(),
            made_for: sv.metadata.model_id.clone(),
            model: format!("{} (the map's source)", m.source_model_id),
            expected: m.diagnostics.source_dim,
            got: sv.metadata.hidden_size,
        }
        .into());
    }
    if !force && (sv.metadata.model_id != m.source_model_id || sv.metadata.model_sha256 != m.source_model_sha256) {
        // Names both hashes: two files of one model id can differ.
        return Err(lcross_core::CoreError::WrongModel(Box::new(lcross_core::error::ModelMismatch {
            what: "the map's source side".into(),
            made_for: m.source_model_id.clone(),
            made_for_sha256: m.source_model_sha256.clone(),
            model: format!("{} (the vector's model)", sv.metadata.model_id),
            model_sha256: sv.metadata.model_sha256.clone(),
        }))
        .into());
    }
    if !force && sv.metadata.hook != m.source_hook {
        return Err(EvalError::bad_value(
            "hook point of the vector",
            sv.metadata.hook.to_string(),
            format!("{}, the map's source states (pass --force to transfer anyway)", m.source_hook),
        ));
    }
    let v = sv.layers.get(&m.source_layer).ok_or_else(|| lcross_core::CoreError::MissingLayer {
        what: "the vector (the map's source layer)".into(),
        layer: m.source_layer,
        layers: sv.metadata.layers.clone(),
    })?;
    let moved = map.move_vector(v)?;
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
        hook: m.target_hook,
        calibration: None,
        provenance: Some(serde_json::json!({
            "source_vector": sv.metadata,
            "map": { "path": map_label, "sha256": map_sha256, "metadata": m },
        })),
    };
    Ok(SteeringVector { metadata, layers: [(m.target_layer, moved)].into_iter().collect() })
}

/// [`transfer_vector`] through the map of file `map_path` (already loaded as `map`): the
/// provenance records the path and the file's sha256.
pub fn transfer_vector_file(sv: &SteeringVector, map: &LinearMap, map_path: &Path, force: bool) -> Result<SteeringVector> {
    let bytes = std::fs::read(map_path).map_err(|e| lcross_core::CoreError::Io { path: map_path.to_path_buf(), source: e })?;
    transfer_vector(sv, map, &map_path.display().to_string(), &hex::encode(Sha256::digest(&bytes)), force)
}

/// Record in `map`'s metadata how close `sv` (a source-model vector) comes through it to
/// `native` (the target's own vector of the concept, labelled `native_label`): the cosine
/// at the map's layers.
pub fn record_native_cosine(map: &mut LinearMap, sv: &SteeringVector, native: &SteeringVector, native_label: &str) -> Result<f64> {
    let (ls, lt) = (map.metadata.source_layer, map.metadata.target_layer);
    let missing = |what: &str, has: &[usize], layer: usize| lcross_core::CoreError::MissingLayer {
        what: format!("{what} (the map's layer)"),
        layer,
        layers: has.to_vec(),
    };
    let v = sv.layers.get(&ls).ok_or_else(|| missing("the source vector", &sv.metadata.layers, ls))?;
    let n = native.layers.get(&lt).ok_or_else(|| missing(native_label, &native.metadata.layers, lt))?;
    let c = lcross_core::steering::cosine(&map.move_vector(v)?, n);
    map.metadata.native_cosine = Some(c);
    map.metadata.native_vector = Some(native_label.to_string());
    Ok(c)
}

/// A/B items from a file or `builtin:NAME`, the first `limit` of them.
pub fn load_ab(spec: &str, limit: Option<usize>) -> Result<Vec<AbItem>> {
    let mut items = match spec.strip_prefix("builtin:") {
        Some(name) => dataset::builtin_test(name)?,
        None => dataset::load_ab_items(Path::new(spec))?,
    };
    if let Some(n) = limit {
        items.truncate(n);
    }
    Ok(items)
}

/// One candidate pair of layers of [`scan_layer_pairs`] and how well a map fits it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerPairFit {
    pub source_layer: usize,
    pub target_layer: usize,
    /// Held-out R^2 of a ridge map (lambda by generalised cross-validation) on a split of
    /// the corpus the map did not see.
    pub heldout_r2: f64,
}

/// Layers to scan in a model of `num_layers`: 25% to 75% of the depth in tenths, plus
/// `fixed` (the configured steering layer).
pub fn candidate_layers(num_layers: usize, fixed: usize) -> Vec<usize> {
    let last = num_layers.saturating_sub(1);
    let mut v: Vec<usize> = [0.25, 0.35, 0.45, 0.55, 0.65, 0.75].iter().map(|f| ((f * last as f64).round() as usize).min(last)).collect();
    v.push(fixed.min(last));
    v.sort_unstable();
    v.dedup();
    v
}

/// Every (source layer, target layer) of the candidates, scored by the held-out R^2 of a
/// ridge map fitted on `corpus`; best first.
pub fn scan_layer_pairs(src: &Model, tgt: &Model, source_layers: &[usize], target_layers: &[usize], corpus: &Corpus) -> Result<Vec<LayerPairFit>> {
    let xs = corpus.states_at(src, source_layers, true)?;
    let ys = corpus.states_at(tgt, target_layers, true)?;
    let mut fits = Vec::new();
    for &ls in source_layers {
        let x = Rows::from_f32(&xs[&ls])?;
        for &lt in target_layers {
            let (_, d) = fit(&x, &Rows::from_f32(&ys[&lt])?, &Estimator::Ridge { lambda: None })?;
            let r2 =
                d.heldout_r2.ok_or_else(|| EvalError::TooFew { what: format!("{}: texts for a held-out R^2", corpus.describe().0), needed: 10, got: d.n })?;
            fits.push(LayerPairFit { source_layer: ls, target_layer: lt, heldout_r2: r2 });
        }
    }
    fits.sort_by(|a, b| b.heldout_r2.total_cmp(&a.heldout_r2));
    Ok(fits)
}

/// The steering layer of a loaded model when a config names none: the registry's choice
/// for known models, else 40% of the depth.
pub fn default_layer(model: &Model) -> usize {
    lcross_model::registry::default_steering_layer(model.id(), model.config().num_layers)
}

/// Per-pair differences (positive minus negative last-token state) of `ds` at `layer`,
/// the points of the paper's Figure 3. With `remove_letter`, A/B pairs are centred on
/// their letter group's mean and the concept's mean is added back, so the points do not
/// also separate by "the answer is A".
pub fn pair_differences(model: &Model, ds: &ConceptDataset, layer: usize, remove_letter: bool) -> Result<Vec<Vec<f64>>> {
    let mut ex = Extractor::new(model, &[layer], Some(Store::open_default()?), ExtractOptions::default())?;
    let ids: Vec<_> = ds.pairs.iter().map(|p| pair_ids(model, p)).collect::<lcross_core::Result<_>>()?;
    let mut diffs: Vec<Vec<f64>> = ex
        .pairs(&ids, &format!("{} on {}", ds.concept, model.id()))?
        .into_iter()
        .map(|(p, q)| p[&layer].iter().zip(&q[&layer]).map(|(x, y)| (*x - *y) as f64).collect())
        .collect();
    if remove_letter {
        remove_letter_component(&mut diffs, &positive_letters(ds));
    }
    Ok(diffs)
}

/// The answer letter of each A/B pair's positive side (None for other kinds of pair).
fn positive_letters(ds: &ConceptDataset) -> Vec<Option<char>> {
    ds.pairs
        .iter()
        .map(|p| match p {
            ContrastPair::AbQuestion { positive_letter, .. } => Some(*positive_letter),
            ContrastPair::Prompts { .. } | ContrastPair::RawTexts { .. } => None,
        })
        .collect()
}

/// Centre each letter group on its own mean, keeping the overall mean.
fn remove_letter_component(diffs: &mut [Vec<f64>], letters: &[Option<char>]) {
    let dim = diffs.first().map_or(0, |d| d.len());
    let mean_of =
        |idx: &[usize], diffs: &[Vec<f64>]| -> Vec<f64> { (0..dim).map(|j| idx.iter().map(|&i| diffs[i][j]).sum::<f64>() / idx.len().max(1) as f64).collect() };
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
