//! `lcross bench --workload NAME`: one timed piece of the work the experiments do, on
//! one model, with nothing cached, so `scripts/bench/peers.py` can run it alternately
//! with the Python stack (`scripts/bench/peer_workloads.py` does the same work).
//!
//! Workloads (CAA refusal data from the data directory; the steering vector is the same
//! deterministic vector on both sides, scaled to norm 4):
//! - `extract`: last-token states of N pairs at the layer;
//! - `ab`: A/B metric of N test questions at 5 betas;
//! - `generate`: N open-ended prompts (chat) x T new tokens, greedy, steered, one batch;
//! - `generate-serial`: the same prompts one at a time;
//! - `decode`: single-stream steered decode tokens/s.

use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use lcross_core::activations::{ExtractOptions, Extractor};
use lcross_core::dataset;
use lcross_core::eval::{evaluate_ab_conditions, Steering};
use lcross_core::steering::{SteeringVector, VectorMetadata};
use lcross_core::texts::pair_ids;
use lcross_model::{GenerateOptions, GenerationRequest, Hooks, Model, Positions, Sampling};
use serde::Serialize;

use crate::bench::floors::{self, Floor};
use crate::common::Context;

/// Sizes of a workload run.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSize {
    pub items: usize,
    pub new_tokens: usize,
}

/// What one workload run measured.
#[derive(Serialize)]
pub struct WorkloadRow {
    pub engine: String,
    pub workload: String,
    pub model: String,
    pub layer: usize,
    pub items: usize,
    pub seconds: f64,
    /// Units of work per second (pairs, question x beta rows, or new tokens).
    pub per_second: f64,
    pub unit: String,
    /// The work's floor on this machine, measured in the same run.
    #[serde(flatten)]
    pub floor: Floor,
    /// `floor_s / seconds`: 1.0 would be the machine's best.
    pub of_floor: f64,
}

/// The steering vector both sides use: a deterministic pattern scaled to norm 4.
pub fn bench_vector(hidden: usize) -> Vec<f32> {
    let v: Vec<f64> = (0..hidden).map(|i| ((i * 7919 % 1000) as f64 / 500.0) - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (4.0 * x / norm) as f32).collect()
}

/// The betas of the A/B workload.
pub const AB_BETAS: [f64; 5] = [-2.0, -1.0, 0.0, 1.0, 2.0];

fn sv_for(model: &Model, layer: usize) -> SteeringVector {
    let h = model.config().hidden_size;
    SteeringVector {
        metadata: {
            let mut m = VectorMetadata::made_by_hand(model.id(), "", h, vec![layer], "bench", "bench");
            m.dataset_sha256 = "0".repeat(64);
            m
        },
        layers: [(layer, bench_vector(h))].into_iter().collect(),
    }
}

/// Run `workload` once and time it.
pub fn run_workload(ctx: &Context, spec: &str, layer: usize, workload: &str, size: WorkloadSize) -> Result<WorkloadRow> {
    let model = ctx.load(spec)?;
    if layer >= model.config().num_layers {
        bail!("--layer {layer} is out of range for {spec}");
    }
    let data_dir = lcross_core::default_data_dir();
    let data = |name: &str| lcross_core::data::data_file(&data_dir, &format!("caa/refusal/{name}"));
    let sv = sv_for(&model, layer);
    let steer = Hooks::none().with_intervention(layer, model.vector_tensor(&sv.layers[&layer])?, 1.0, Positions::All);
    let gen_prompts = || -> Result<Vec<Vec<u32>>> {
        let text = std::fs::read_to_string(data("test_dataset_open_ended.json")?).context("reading the open-ended refusal questions")?;
        let qs: Vec<serde_json::Value> = serde_json::from_str(&text)?;
        qs.iter().take(size.items).map(|q| Ok(model.prompt(q["question"].as_str().context("question is not a string")?, true, None)?.ids)).collect()
    };
    let (mut flop_before, mut bytes_before) = (lcross_model::flops::executed(), lcross_model::flops::weight_bytes_read());
    let greedy = |n| GenerateOptions { max_tokens: n, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let (seconds, units, unit) = match workload {
        "extract" => {
            let ds = dataset::load_caa_pairs(&data("generate_dataset.json")?)?.limit(Some(size.items));
            let ids: Vec<_> = ds.pairs.iter().map(|p| pair_ids(&model, p)).collect::<lcross_core::Result<_>>()?;
            let start = Instant::now();
            Extractor::new(&model, &[layer], None, ExtractOptions::default())?.pairs(&ids, "extract")?;
            (start.elapsed().as_secs_f64(), ids.len(), "pairs")
        }
        "ab" => {
            let mut items = dataset::load_ab_items(&data("test_dataset_ab.json")?)?;
            items.truncate(size.items);
            let conditions: Vec<Option<Steering>> = AB_BETAS.iter().map(|&beta| Some(Steering::add(&sv, beta, Positions::All))).collect();
            let start = Instant::now();
            evaluate_ab_conditions(&model, &items, &conditions)?;
            (start.elapsed().as_secs_f64(), items.len() * AB_BETAS.len(), "question-betas")
        }
        "generate" | "generate-serial" => {
            let prompts = gen_prompts()?;
            let requests: Vec<GenerationRequest> =
                prompts.iter().map(|p| GenerationRequest { prompt: p.clone(), hooks: steer.clone(), options: greedy(size.new_tokens) }).collect();
            let rows = if workload == "generate" { requests.len() } else { 1 };
            let start = Instant::now();
            let out = model.generate_batch(&requests, rows, |_, _| Ok(()))?;
            (start.elapsed().as_secs_f64(), out.iter().map(|o| o.len()).sum(), "new tokens")
        }
        "decode" => {
            let prompt = gen_prompts()?.into_iter().next().context("no prompt")?;
            // Time decoding only: the first token comes from the prefill.
            let mut first: Option<Instant> = None;
            let out = model.generate(&prompt, &greedy(size.new_tokens), &steer, |_| {
                if first.is_none() {
                    (flop_before, bytes_before) = (lcross_model::flops::executed(), lcross_model::flops::weight_bytes_read());
                    first = Some(Instant::now());
                }
                Ok(())
            })?;
            (first.map_or(0.0, |t| t.elapsed().as_secs_f64()), out.len().saturating_sub(1), "new tokens")
        }
        other => bail!("unknown workload `{other}`: extract, ab, generate, generate-serial or decode"),
    };
    let (flop, bytes) = (lcross_model::flops::executed() - flop_before, lcross_model::flops::weight_bytes_read() - bytes_before);
    let floor = Floor::new(flop, bytes, floors::matmul_gflops(&model)?, floors::memory_gbps());
    Ok(WorkloadRow {
        engine: format!("lcross {} ({})", lcross_core::VERSION, ctx.numerics()),
        workload: workload.into(),
        model: spec.into(),
        layer,
        items: size.items,
        seconds,
        per_second: units as f64 / seconds.max(1e-9),
        unit: unit.into(),
        floor,
        of_floor: floor.floor_s / seconds.max(1e-9),
    })
}
