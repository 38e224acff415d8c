//! `lcross demo`: the built-in cross-model demo (lcross_eval::demo), narrated.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lcross_eval::demo::{run_demo, DemoOptions, DemoReport, DEMO_PROMPT};

use crate::common::Context;
use crate::output::print_fit;

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

pub fn run(ctx: &Context, a: DemoArgs) -> Result<()> {
    let src = ctx.load(&a.source)?;
    let tgt = ctx.load(&a.target)?;
    let opts = DemoOptions { source_layer: a.source_layer, target_layer: a.target_layer, beta: a.beta, max_tokens: a.max_tokens, out: a.out.clone() };
    let mut report = run_demo(src, &tgt, &opts)?;
    (report.source, report.target) = (a.source.clone(), a.target.clone());
    ctx.print(&report, || narrate(&report, &a))
}

/// The demo's steps in words.
fn narrate(r: &DemoReport, a: &DemoArgs) {
    let ((ls, lt), (ns, nt)) = (r.layers, r.norms);
    println!("1. Concept `optimism` (built in, {} training pairs, {} held-out questions).", r.n_pairs, r.n_questions);
    println!("2. Steering vectors: {} layer {ls} (norm {ns:.3}), {} layer {lt} (its own, norm {nt:.3}).", r.map.source_model_id, r.map.target_model_id);
    println!("3. Linear map T ({} x {}) by least squares:", r.map_shape.0, r.map_shape.1);
    print_fit(&r.map);
    let half = r.n_pairs / 2;
    println!("   Held-out check: vectors of pairs 1-{half} only, map fitted on pairs {}-{} only:", half + 1, r.n_pairs);
    println!(
        "   held-out R^2 {}, cosine(transferred, native) = {:.4}",
        r.heldout_map.diagnostics.heldout_r2.map_or("-".into(), |x| format!("{x:.4}")),
        r.cosine_heldout
    );
    println!("4. A/B metric on {} (mean p(optimistic answer), {} questions, beta {}):", r.map.target_model_id, r.n_questions, r.beta);
    println!("   no modulation {:.4} | self modulation {:.4} | L-Cross from {} {:.4}", r.ab_none, r.ab_self, a.source, r.ab_lcross);
    println!("   L-Cross through the held-out map (first-half vector, second-half map) {:.4}", r.ab_lcross_heldout);
    println!("5. \"{DEMO_PROMPT}\"");
    side_by_side("unsteered", &r.unsteered, &format!("L-Cross, beta {}", r.beta), &r.steered);
    println!("Artifacts in {}/ (vectors, map: safetensors with JSON metadata).", a.out.display());
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
