//! Hooks, KV cache and input checks on a real model (SmolLM2-135M).

mod common;

use common::load_known;
use lcross_model::{CapturePositions, GenerateOptions, Hooks, Logits, Model, Positions, Sampling, Tensor};

const MODEL: &str = "smollm2-135m-instruct";

fn steering_vector(model: &Model, seed: u32) -> Tensor {
    let h = model.config().hidden_size;
    let v: Vec<f32> = (0..h).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0).collect();
    model.vector_tensor(&v).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Logits at every position of `ids`, from one pass and from token-by-token decoding
/// with the cache (prompt of `prompt_len` tokens first).
fn logits_both_ways(model: &Model, ids: &[u32], prompt_len: usize, hooks: &Hooks) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut h = hooks.clone();
    h.prompt_len = Some(prompt_len);
    let full: Vec<Vec<f32>> = model.forward(ids, None, &h, Logits::All).unwrap().logits.unwrap().to_vec2().unwrap();
    let mut cache = model.new_cache();
    let mut inc = Vec::new();
    let first = model.forward(&ids[..prompt_len], Some(&mut cache), &h, Logits::Last).unwrap();
    inc.push(first.logits.unwrap().to_vec1().unwrap());
    for &t in &ids[prompt_len..] {
        inc.push(model.forward(&[t], Some(&mut cache), &h, Logits::Last).unwrap().logits.unwrap().to_vec1().unwrap());
    }
    (full[prompt_len - 1..].to_vec(), inc)
}

#[test]
fn interventions_give_the_same_logits_with_and_without_the_kv_cache() {
    let Some(model) = load_known(MODEL) else { return };
    let prompt = model.prompt("Name three colours.", true, None).unwrap();
    let mut ids = prompt.ids.clone();
    let prompt_len = ids.len();
    ids.extend(model.tokenizer().encode("Red, green and blue.", false).unwrap());
    let v = steering_vector(&model, 1);
    for positions in [Positions::All, Positions::Generated, Positions::PromptLast, Positions::PromptLastAndGenerated, Positions::From(3)] {
        let hooks = Hooks::none().with_intervention(10, v.clone(), 8.0, positions).with_intervention(20, v.clone(), -3.0, positions);
        let (full, inc) = logits_both_ways(&model, &ids, prompt_len, &hooks);
        let (plain_full, _) = logits_both_ways(&model, &ids, prompt_len, &Hooks::none());
        let mut moved = 0.0f32;
        for (a, b) in full.iter().zip(&inc) {
            let d = max_abs_diff(a, b);
            assert!(d < 2e-3, "{positions:?}: cached and uncached logits differ by {d}");
        }
        for (a, b) in full.iter().zip(&plain_full) {
            moved = moved.max(max_abs_diff(a, b));
        }
        assert!(moved > 0.1, "{positions:?}: the intervention changed nothing ({moved})");
    }
}

#[test]
fn intervention_only_touches_its_positions() {
    let Some(model) = load_known(MODEL) else { return };
    let ids = model.prompt("Hello there, how are you?", true, None).unwrap().ids;
    let v = steering_vector(&model, 2);
    let k = 5;
    let cap = Hooks::none().with_capture(12, CapturePositions::All);
    let base: Vec<Vec<f32>> = model.forward(&ids, None, &cap, Logits::None).unwrap().captures[&lcross_model::HookName::resid_post(12)].to_vec2().unwrap();
    let mut hooks = cap.clone().with_intervention(12, v.clone(), 1.0, Positions::From(k));
    hooks.prompt_len = None;
    let steered: Vec<Vec<f32>> = model.forward(&ids, None, &hooks, Logits::None).unwrap().captures[&lcross_model::HookName::resid_post(12)].to_vec2().unwrap();
    let vv: Vec<f32> = v.to_vec1().unwrap();
    for (p, (b, s)) in base.iter().zip(&steered).enumerate() {
        let expected: Vec<f32> = if p >= k { b.iter().zip(&vv).map(|(x, y)| x + y).collect() } else { b.clone() };
        assert!(max_abs_diff(&expected, s) < 1e-4, "position {p}");
    }
}

#[test]
fn early_exit_gives_the_same_states_as_a_full_pass() {
    let Some(model) = load_known(MODEL) else { return };
    let ids = model.prompt("What is two plus two?", true, None).unwrap().ids;
    let hooks = Hooks::capture_last(&[3, 7]);
    let early = model.forward(&ids, None, &hooks, Logits::None).unwrap();
    let full = model.forward(&ids, None, &hooks, Logits::Last).unwrap();
    assert!(early.logits.is_none());
    for l in [3, 7] {
        let a: Vec<f32> = early.captures[&lcross_model::HookName::resid_post(l)].flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = full.captures[&lcross_model::HookName::resid_post(l)].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "layer {l}");
    }
    // A cache filled by an early-exit pass cannot serve a deeper one.
    let mut cache = model.new_cache();
    model.forward(&ids, Some(&mut cache), &hooks, Logits::None).unwrap();
    let e = model.forward(&[ids[0]], Some(&mut cache), &Hooks::none(), Logits::Last).unwrap_err().to_string();
    assert!(e.contains("KV cache covers layers 0..8"), "{e}");
}

#[test]
fn seeded_sampling_is_reproducible_and_differs_from_greedy() {
    let Some(model) = load_known(MODEL) else { return };
    let ids = model.prompt("Tell me a story about a cat.", true, None).unwrap().ids;
    let run = |sampling| {
        let opts = GenerateOptions { max_tokens: 12, sampling, stop_tokens: model.stop_tokens().to_vec() };
        model.generate(&ids, &opts, &Hooks::none(), |_| Ok(())).unwrap()
    };
    let s = Sampling::Sample { temperature: 1.5, top_p: 0.95, seed: 42 };
    assert_eq!(run(s), run(s));
    let others: Vec<Vec<u32>> = (0..3).map(|seed| run(Sampling::Sample { temperature: 1.5, top_p: 0.95, seed })).collect();
    assert!(others.iter().any(|o| *o != run(Sampling::Greedy)), "sampling at T=1.5 never left the greedy path");
}

#[test]
fn bad_forward_inputs_are_clear_errors() {
    let Some(model) = load_known(MODEL) else { return };
    let n = model.config().num_layers;
    let err = |r: lcross_model::Result<lcross_model::ForwardOutput>| r.unwrap_err().to_string();
    let e = err(model.forward(&[1, 2], None, &Hooks::capture_last(&[n]), Logits::None));
    assert!(e.contains(&format!("layer {n} is out of range")), "{e}");
    let e = err(model.forward(&[], None, &Hooks::none(), Logits::Last));
    assert!(e.contains("empty input"), "{e}");
    let e = err(model.forward(&[u32::MAX], None, &Hooks::none(), Logits::Last));
    assert!(e.contains("outside the vocabulary"), "{e}");
    let too_long = vec![1u32; model.config().max_position_embeddings + 1];
    let e = err(model.forward(&too_long, None, &Hooks::none(), Logits::Last));
    assert!(e.contains("longer than the model's context"), "{e}");
    let e = model.vector_tensor(&[1.0; 7]).unwrap_err().to_string();
    assert!(e.contains("hidden size 576"), "{e}");
    let mut v = vec![0.0f32; 576];
    v[3] = f32::NAN;
    let e = model.vector_tensor(&v).unwrap_err().to_string();
    assert!(e.contains("not finite"), "{e}");
    let e = model.prompt("", false, None).unwrap_err().to_string();
    assert!(e.contains("empty prompt"), "{e}");
}
