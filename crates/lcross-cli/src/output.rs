//! What several commands print: streamed generations, batch rows, map fits.

use std::io::Write;

use anyhow::{bail, Result};
use lcross_core::maps::MapMetadata;
use lcross_eval::answers::{GenerationSettings, RowSpec};
use lcross_model::{GenerateOptions, Hooks, Model, Sampling, TextStream};
use serde::Serialize;

use crate::common::Context;

/// One generated row of a batch.
#[derive(Serialize)]
pub struct RowOut {
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    pub text: String,
    pub tokens: usize,
    pub ids: Vec<u32>,
}

/// Generate every (prompt, beta, hooks) row in batches with a progress bar.
pub fn generate_rows(
    model: &Model,
    rows: &[(String, lcross_model::Prompt, Option<f64>, Hooks)],
    max_tokens: usize,
    sampling: Sampling,
    batch_size: Option<usize>,
) -> Result<Vec<RowOut>> {
    let longest = rows.iter().map(|r| r.1.ids.len()).max().unwrap_or(0);
    let batch = batch_size.unwrap_or_else(|| model.rows_that_fit(longest.saturating_add(max_tokens)));
    if batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    // Row i samples with seed + i.
    let specs: Vec<RowSpec<'_>> = rows.iter().enumerate().map(|(i, (_, p, _, h))| RowSpec { prompt: &p.ids, hooks: h, seed_offset: i }).collect();
    let settings = GenerationSettings { max_tokens, sampling, rows_in_flight: batch };
    let bar = lcross_core::activations::progress(rows.len().saturating_mul(max_tokens) as u64, &format!("generating {} rows, {batch} at a time", rows.len()));
    let answers = lcross_eval::answers::generate_rows(model, &specs, &settings, |_, _| {
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(rows
        .iter()
        .zip(answers)
        .map(|((text, _, beta, _), a)| RowOut { prompt: text.clone(), beta: *beta, text: a.text, tokens: a.ids.len(), ids: a.ids })
        .collect())
}

/// Print batch rows: `{"rows": [...]}` with --json, else each answer under its prompt.
pub fn print_rows(ctx: &Context, rows: &[RowOut]) -> Result<()> {
    #[derive(Serialize)]
    struct Rows<'a> {
        rows: &'a [RowOut],
    }
    ctx.print(&Rows { rows }, || {
        for r in rows {
            match r.beta {
                Some(b) => println!("=== {} (beta {b})", r.prompt),
                None => println!("=== {}", r.prompt),
            }
            println!("{}\n", r.text.trim_end());
        }
    })
}

#[derive(Serialize)]
pub struct GenerateOut {
    pub prompt: String,
    pub ids: Vec<u32>,
    pub text: String,
    pub tokens_per_second: f64,
}

/// Generate with `hooks`, streaming to stdout unless `json`.
pub fn generate_with(ctx: &Context, model: &Model, prompt: &lcross_model::Prompt, max_tokens: usize, sampling: Sampling, hooks: &Hooks) -> Result<GenerateOut> {
    let opts = GenerateOptions { max_tokens, sampling, stop_tokens: model.stop_tokens().to_vec() };
    let mut stream = TextStream::new();
    let start = std::time::Instant::now();
    let stdout = std::io::stdout();
    let ids = model.generate(&prompt.ids, &opts, hooks, |id| {
        if !ctx.json && !model.stop_tokens().contains(&id) {
            if let Some(piece) = stream.push(id, |ids| model.tokenizer().decode(ids, true))? {
                let mut out = stdout.lock();
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
        }
        Ok(())
    })?;
    if !ctx.json {
        println!();
    }
    let secs = start.elapsed().as_secs_f64();
    let text = model.tokenizer().decode(&ids, true)?;
    Ok(GenerateOut { prompt: prompt.text.clone(), tokens_per_second: ids.len() as f64 / secs.max(1e-9), ids, text })
}

/// Human summary of a fit.
pub fn print_fit(m: &MapMetadata) {
    let d = &m.diagnostics;
    println!(
        "{} L{} ({}) -> {} L{} ({}): {:?} on {} {} of {}",
        m.source_model_id,
        m.source_layer,
        d.source_dim,
        m.target_model_id,
        m.target_layer,
        d.target_dim,
        m.estimator,
        d.n,
        if m.estimator == lcross_core::maps::Estimator::Embedding { "rows" } else { "texts" },
        m.corpus
    );
    println!(
        "  train R^2 {:.4}, held-out R^2 {}, rank(X) {}{}, {} parameters, {:.2} s",
        d.train_r2,
        d.heldout_r2.map_or("-".into(), |r| format!("{r:.4}")),
        d.rank,
        d.lambda.map_or(String::new(), |l| format!(", lambda {l:.3e}")),
        d.parameters,
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
