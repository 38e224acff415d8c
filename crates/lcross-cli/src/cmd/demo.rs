//! `lcross demo`: the built-in cross-model demo.
//!
//! The built-in concept (optimism, written for lcross) is extracted from the source model
//! (SmolLM2-135M), a map is fitted to the target (Qwen2.5-Coder-0.5B) on the concept's
//! own texts, and the target is steered with the transferred vector: fit diagnostics,
//! cosine to the target's own vector, the A/B metric with no / self / L-Cross
//! modulation, and one unsteered and one steered answer side by side. Because that map
//! interpolates the vectors' own texts (cosine 1 by construction), the demo also transfers
//! a vector of the first half of the pairs through a map fitted on the second half only.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lcross_core::dataset;
use lcross_core::eval::{evaluate_ab, steering_hooks, Steering};
use lcross_core::steering::cosine;
use lcross_model::{Positions, Sampling};
use serde::Serialize;

use crate::cmd::maps::{align_models, print_fit, transfer_vector, AlignArgs};
use crate::cmd::run::generate_with;
use crate::cmd::vectors::{extract_vector, ExtractArgs};
use crate::common::Context;

#[derive(Args)]
pub struct DemoArgs {
    /// Source model.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    source: String,
    /// Source layer (default: the model's measured steering layer, else 40% depth).
    #[arg(long)]
    source_layer: Option<usize>,
    /// Target model.
    #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct")]
    target: String,
    /// Target layer (default: the model's measured steering layer, else 40% depth).
    #[arg(long)]
    target_layer: Option<usize>,
    /// Steering strength for self and L-Cross modulation.
    #[arg(long, default_value_t = 4.0, allow_hyphen_values = true)]
    beta: f64,
    /// Tokens per answer in the side-by-side.
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Where the demo's vectors and map are written.
    #[arg(long, default_value = "lcross-demo")]
    out: PathBuf,
}

const PROMPT: &str = "My flight was cancelled and I will miss the first day of my holiday. How do you see it?";

#[derive(Serialize)]
struct DemoOut {
    source: String,
    target: String,
    map: lcross_core::maps::MapMetadata,
    cosine_transferred_native: f64,
    /// Map fitted on the second half of the pairs only.
    heldout_map: lcross_core::maps::MapMetadata,
    /// Cosine of the first-half source vector through the held-out map to the target's own first-half vector.
    cosine_heldout: f64,
    ab_none: f64,
    ab_self: f64,
    ab_lcross: f64,
    /// A/B metric steered by the first-half vector through the held-out map.
    ab_lcross_heldout: f64,
    beta: f64,
    n_questions: usize,
    unsteered: String,
    steered: String,
}

pub fn run(ctx: &Context, a: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let say = |s: String| {
        if !ctx.json {
            println!("{s}")
        }
    };
    let src = ctx.load(&a.source)?;
    let tgt = ctx.load(&a.target)?;
    let ls = a.source_layer.unwrap_or_else(|| lcross_model::registry::default_steering_layer(src.id(), src.config().num_layers));
    let lt = a.target_layer.unwrap_or_else(|| lcross_model::registry::default_steering_layer(tgt.id(), tgt.config().num_layers));
    let n_pairs = dataset::builtin_pairs("optimism")?.pairs.len();
    let items = dataset::builtin_test("optimism")?;
    say(format!("1. Concept `optimism` (built in, {n_pairs} training pairs, {} held-out questions).", items.len()));
    let extract = |model: &str, layer: usize, limit: Option<usize>, name: &str| ExtractArgs {
        custom: Default::default(),
        model: model.into(),
        dataset: "builtin:optimism".into(),
        hook: "resid_post".into(),
        layers: layer.to_string(),
        method: "mean-diff".into(),
        limit,
        normalize: false,
        balance_letters: false,
        data_dir: None,
        no_cache: false,
        no_prefix_sharing: false,
        no_early_exit: false,
        output: a.out.join(name),
    };
    let ex_s = extract(&a.source, ls, None, "source.safetensors");
    let (sv_s, _) = extract_vector(&src, &ex_s)?;
    sv_s.save(&ex_s.output)?;
    let ex_t = extract(&a.target, lt, None, "native.safetensors");
    let (sv_t, _) = extract_vector(&tgt, &ex_t)?;
    sv_t.save(&ex_t.output)?;
    say(format!(
        "2. Steering vectors: {} layer {ls} (norm {:.3}), {} layer {lt} (its own, norm {:.3}).",
        src.id(),
        norm(&sv_s.layers[&ls]),
        tgt.id(),
        norm(&sv_t.layers[&lt])
    ));
    let align = AlignArgs {
        hook: "resid_post".into(),
        source: a.source.clone(),
        source_layer: ls,
        target: a.target.clone(),
        target_layer: lt,
        corpus: "builtin:optimism".into(),
        limit: None,
        skip: 0,
        estimator: "ols".into(),
        vector: Some(ex_s.output.clone()),
        native: Some(ex_t.output.clone()),
        data_dir: None,
        no_cache: false,
        output: a.out.join("map.safetensors"),
    };
    let map = align_models(&src, &tgt, &align)?;
    map.save(&align.output)?;
    if !ctx.json {
        println!("3. Linear map T ({} x {}) by least squares:", map.t.nrows(), map.t.ncols());
        print_fit(&map.metadata);
    }
    let moved = transfer_vector(&sv_s, &map, &align.output, false)?;
    moved.save(&a.out.join("transferred.safetensors"))?;
    let cos = cosine(&moved.layers[&lt], &sv_t.layers[&lt]);
    // The map above interpolates the very texts the vectors come from, so its cosine of 1 is
    // by construction. The held-out check splits the pairs: vectors from the first half, a
    // map fitted only on the second half.
    let half = n_pairs / 2;
    let ex_s_half = extract(&a.source, ls, Some(half), "source-first-half.safetensors");
    let (sv_s_half, _) = extract_vector(&src, &ex_s_half)?;
    sv_s_half.save(&ex_s_half.output)?;
    let ex_t_half = extract(&a.target, lt, Some(half), "native-first-half.safetensors");
    let (sv_t_half, _) = extract_vector(&tgt, &ex_t_half)?;
    sv_t_half.save(&ex_t_half.output)?;
    let align_heldout = AlignArgs {
        skip: half,
        vector: Some(ex_s_half.output.clone()),
        native: Some(ex_t_half.output.clone()),
        output: a.out.join("map-second-half.safetensors"),
        ..align
    };
    let map_heldout = align_models(&src, &tgt, &align_heldout)?;
    map_heldout.save(&align_heldout.output)?;
    let moved_heldout = transfer_vector(&sv_s_half, &map_heldout, &align_heldout.output, false)?;
    let cos_heldout = cosine(&moved_heldout.layers[&lt], &sv_t_half.layers[&lt]);
    if !ctx.json {
        println!("   Held-out check: vectors of pairs 1-{half} only, map fitted on pairs {}-{n_pairs} only:", half + 1);
        println!(
            "   held-out R^2 {}, cosine(transferred, native) = {cos_heldout:.4}",
            map_heldout.metadata.diagnostics.heldout_r2.map_or("-".into(), |r| format!("{r:.4}"))
        );
    }
    drop(src);
    let steer = |v| Steering::add(v, a.beta, Positions::All);
    let none = evaluate_ab(&tgt, &items, None)?.mean_prob_matching;
    let own = evaluate_ab(&tgt, &items, Some(&steer(&sv_t)))?.mean_prob_matching;
    let lc = evaluate_ab(&tgt, &items, Some(&steer(&moved)))?.mean_prob_matching;
    let lc_heldout = evaluate_ab(&tgt, &items, Some(&steer(&moved_heldout)))?.mean_prob_matching;
    say(format!("4. A/B metric on {} (mean p(optimistic answer), {} questions, beta {}):", tgt.id(), items.len(), a.beta));
    say(format!("   no modulation {none:.4} | self modulation {own:.4} | L-Cross from {} {lc:.4}", a.source));
    say(format!("   L-Cross through the held-out map (first-half vector, second-half map) {lc_heldout:.4}"));
    let quiet = Context { json: true, weights: ctx.weights, device: ctx.device.clone(), dtype: ctx.dtype.clone() };
    let prompt = tgt.prompt(PROMPT, true, None)?;
    let plain = generate_with(&quiet, &tgt, &prompt, a.max_tokens, Sampling::Greedy, &lcross_model::Hooks::none())?;
    let hooks = steering_hooks(&tgt, Some(&steer(&moved)))?;
    let steered = generate_with(&quiet, &tgt, &prompt, a.max_tokens, Sampling::Greedy, &hooks)?;
    if !ctx.json {
        println!("5. \"{PROMPT}\"");
        side_by_side("unsteered", &plain.text, &format!("L-Cross, beta {}", a.beta), &steered.text);
        println!("Artifacts in {}/ (vectors, map: safetensors with JSON metadata).", a.out.display());
    }
    let out = DemoOut {
        source: a.source.clone(),
        target: a.target.clone(),
        map: map.metadata.clone(),
        cosine_transferred_native: cos,
        heldout_map: map_heldout.metadata.clone(),
        cosine_heldout: cos_heldout,
        ab_none: none,
        ab_self: own,
        ab_lcross: lc,
        ab_lcross_heldout: lc_heldout,
        beta: a.beta,
        n_questions: items.len(),
        unsteered: plain.text,
        steered: steered.text,
    };
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Two texts in two columns.
fn side_by_side(ha: &str, a: &str, hb: &str, b: &str) {
    const W: usize = 46;
    let wrap = |s: &str| -> Vec<String> {
        let mut lines = vec![String::new()];
        for word in s.split_whitespace() {
            let cur = lines.last_mut().expect("non-empty");
            if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > W {
                lines.push(word.to_string());
            } else {
                if !cur.is_empty() {
                    cur.push(' ');
                }
                cur.push_str(word);
            }
        }
        lines
    };
    let (la, lb) = (wrap(a), wrap(b));
    println!("   {ha:<W$} | {hb}");
    println!("   {:-<W$}-+-{:-<W$}", "", "");
    for i in 0..la.len().max(lb.len()) {
        let l = la.get(i).map_or("", |s| s.as_str());
        let r = lb.get(i).map_or("", |s| s.as_str());
        println!("   {l:<W$} | {r}");
    }
}
