//! The built-in cross-model demo (`lcross demo`, the README's first command).
//!
//! The built-in concept (optimism, written for lcross) is extracted from the source model,
//! a map is fitted to the target on the concept's own texts, and the target is steered with
//! the transferred vector: fit diagnostics, cosine to the target's own vector, the A/B
//! metric with no / self / L-Cross modulation, and one unsteered and one steered answer.
//! Because that map interpolates the vectors' own texts (cosine 1 by construction), the
//! demo also transfers a vector of the first half of the pairs through a map fitted on the
//! second half only.

use std::path::{Path, PathBuf};

use lcross_core::dataset;
use lcross_core::eval::{evaluate_ab, Steering};
use lcross_core::maps::{Estimator, MapMetadata};
use lcross_core::steering::{cosine, SteeringVector};
use lcross_model::{GenerateOptions, Hooks, Model, Positions, Sampling};
use serde::Serialize;

use crate::error::Result;
use crate::pipeline::{self, Corpus, VectorRecipe};

/// The demo's built-in concept.
pub const DEMO_CONCEPT: &str = "optimism";
/// The user message answered unsteered and steered.
pub const DEMO_PROMPT: &str = "My flight was cancelled and I will miss the first day of my holiday. How do you see it?";

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Source and target layers (None: the model's measured steering layer, else 40% depth).
    pub source_layer: Option<usize>,
    pub target_layer: Option<usize>,
    /// Steering strength of self and L-Cross modulation.
    pub beta: f64,
    /// Tokens per answer.
    pub max_tokens: usize,
    /// Where the vectors and maps are written.
    pub out: PathBuf,
}

/// What the demo found (`lcross demo --json` prints the serialised fields).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub source: String,
    pub target: String,
    pub map: MapMetadata,
    pub cosine_transferred_native: f64,
    /// The map fitted on the second half of the pairs only.
    pub heldout_map: MapMetadata,
    /// Cosine of the first-half source vector through the held-out map to the target's own first-half vector.
    pub cosine_heldout: f64,
    pub ab_none: f64,
    pub ab_self: f64,
    pub ab_lcross: f64,
    /// A/B metric steered by the first-half vector through the held-out map.
    pub ab_lcross_heldout: f64,
    pub beta: f64,
    pub n_questions: usize,
    pub unsteered: String,
    pub steered: String,
    /// Layers used (source, target).
    #[serde(skip)]
    pub layers: (usize, usize),
    /// Training pairs of the concept.
    #[serde(skip)]
    pub n_pairs: usize,
    /// Norms of the source vector and the target's own vector.
    #[serde(skip)]
    pub norms: (f64, f64),
    /// Shape of the map (source dim x target dim).
    #[serde(skip)]
    pub map_shape: (usize, usize),
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// The concept's vector of `model` at `layer` from the first `limit` pairs, written to `path`.
fn demo_vector(model: &Model, layer: usize, limit: Option<usize>, path: &Path) -> Result<SteeringVector> {
    let ds = dataset::builtin_pairs(DEMO_CONCEPT)?.limit(limit);
    let (sv, _) = pipeline::extract_vector(model, &ds, &VectorRecipe::mean_diff(vec![layer]))?;
    sv.save(path)?;
    Ok(sv)
}

/// Greedy answer of `model` to the demo prompt under `hooks`.
fn answer(model: &Model, max_tokens: usize, hooks: &Hooks) -> Result<String> {
    let prompt = model.prompt(DEMO_PROMPT, true, None)?;
    let opts = GenerateOptions { max_tokens, sampling: Sampling::Greedy, stop_tokens: model.stop_tokens().to_vec() };
    let ids = model.generate(&prompt.ids, &opts, hooks, |_| Ok(()))?;
    Ok(model.tokenizer().decode(&ids, true)?)
}

/// Run the demo from `src` to `tgt` (the source model is dropped once its part is done).
pub fn run_demo(src: Model, tgt: &Model, opts: &DemoOptions) -> Result<DemoReport> {
    std::fs::create_dir_all(&opts.out).map_err(|e| lcross_core::CoreError::Io { path: opts.out.clone(), source: e })?;
    let ls = opts.source_layer.unwrap_or_else(|| lcross_model::registry::default_steering_layer(src.id(), src.config().num_layers));
    let lt = opts.target_layer.unwrap_or_else(|| lcross_model::registry::default_steering_layer(tgt.id(), tgt.config().num_layers));
    let n_pairs = dataset::builtin_pairs(DEMO_CONCEPT)?.pairs.len();
    let items = dataset::builtin_test(DEMO_CONCEPT)?;
    let data_dir = lcross_core::default_data_dir();
    let spec = format!("builtin:{DEMO_CONCEPT}");
    let file = |name: &str| opts.out.join(name);

    let sv_s = demo_vector(&src, ls, None, &file("source.safetensors"))?;
    let sv_t = demo_vector(tgt, lt, None, &file("native.safetensors"))?;
    let fit = |skip: usize, sv: &SteeringVector, native: &SteeringVector, native_path: &Path, path: &Path| -> Result<_> {
        let corpus = Corpus::load(&spec, &data_dir, skip, None)?;
        let mut map = pipeline::align(&src, tgt, (ls, lt), &corpus, Estimator::Ols, true)?;
        pipeline::record_native_cosine(&mut map, sv, native, &native_path.display().to_string())?;
        map.save(path)?;
        let moved = pipeline::transfer_vector_file(sv, &map, path, false)?;
        Ok((map, moved))
    };
    let (map, moved) = fit(0, &sv_s, &sv_t, &file("native.safetensors"), &file("map.safetensors"))?;
    moved.save(&file("transferred.safetensors"))?;
    let cos = cosine(&moved.layers[&lt], &sv_t.layers[&lt]);
    // The held-out check: vectors from the first half of the pairs, a map fitted only on
    // the second half.
    let half = n_pairs / 2;
    let sv_s_half = demo_vector(&src, ls, Some(half), &file("source-first-half.safetensors"))?;
    let sv_t_half = demo_vector(tgt, lt, Some(half), &file("native-first-half.safetensors"))?;
    let (map_heldout, moved_heldout) = fit(half, &sv_s_half, &sv_t_half, &file("native-first-half.safetensors"), &file("map-second-half.safetensors"))?;
    let cos_heldout = cosine(&moved_heldout.layers[&lt], &sv_t_half.layers[&lt]);
    let norms = (norm(&sv_s.layers[&ls]), norm(&sv_t.layers[&lt]));
    let source = src.id().to_string();
    drop(src);

    let steer = |v| Steering::add(v, opts.beta, Positions::All);
    let none = evaluate_ab(tgt, &items, None)?.mean_prob_matching;
    let own = evaluate_ab(tgt, &items, Some(&steer(&sv_t)))?.mean_prob_matching;
    let lc = evaluate_ab(tgt, &items, Some(&steer(&moved)))?.mean_prob_matching;
    let lc_heldout = evaluate_ab(tgt, &items, Some(&steer(&moved_heldout)))?.mean_prob_matching;
    let unsteered = answer(tgt, opts.max_tokens, &Hooks::none())?;
    let steered = answer(tgt, opts.max_tokens, &steer(&moved).hooks(tgt)?)?;
    Ok(DemoReport {
        source,
        target: tgt.id().to_string(),
        map_shape: (map.t.nrows(), map.t.ncols()),
        map: map.metadata,
        cosine_transferred_native: cos,
        heldout_map: map_heldout.metadata,
        cosine_heldout: cos_heldout,
        ab_none: none,
        ab_self: own,
        ab_lcross: lc,
        ab_lcross_heldout: lc_heldout,
        beta: opts.beta,
        n_questions: items.len(),
        unsteered,
        steered,
        layers: (ls, lt),
        n_pairs,
        norms,
    })
}
