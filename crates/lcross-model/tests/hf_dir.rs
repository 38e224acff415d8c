//! Hugging Face directories: tiny random-weight llama (f32, llama3 rope scaling),
//! qwen2 (bf16, tied) and gemma3 (sliding window, (1+w) norms) checkpoints saved by
//! transformers, against transformers' own logits (`scripts/reference/make_hf_fixtures.py`).

mod common;

use common::{cosine, fixtures};
use lcross_model::{GenerateOptions, Hooks, LoadOptions, Logits, Model, Sampling};
use serde_json::Value;

fn check(name: &str) {
    let dir = fixtures().join("hf").join(name);
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want_ids: Vec<u32> = reference["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let ids = model.tokenizer().encode(reference["text"].as_str().unwrap(), true).unwrap();
    assert_eq!(ids, want_ids, "{name}: token ids");

    let layer = reference["hidden_layer"].as_u64().unwrap() as usize;
    let out = model.forward(&ids, None, &Hooks::capture_last(&[layer]), Logits::Last).unwrap();
    let logits: Vec<f32> = out.logits.unwrap().to_vec1().unwrap();
    let want_logits: Vec<f32> = reference["logits_last"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let max_diff = logits.iter().zip(&want_logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want_logits.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-4 * scale.max(1.0), "{name}: logits differ by {max_diff} (scale {scale})");
    let hidden: Vec<f32> = out.captures[&lcross_model::HookName::resid_post(layer)].flatten_all().unwrap().to_vec1().unwrap();
    let want_hidden: Vec<f32> = reference["hidden_last"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let cos = cosine(&hidden, &want_hidden);
    assert!(cos > 0.99999, "{name}: hidden cosine {cos}");

    let want_gen: Vec<u32> = reference["greedy"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let opts = GenerateOptions { max_tokens: want_gen.len(), sampling: Sampling::Greedy, stop_tokens: vec![] };
    let got = model.generate(&ids, &opts, &Hooks::none(), |_| Ok(())).unwrap();
    assert_eq!(got, want_gen, "{name}: greedy continuation");
}

#[test]
fn tiny_llama_f32_with_llama3_rope_matches_transformers() {
    check("tiny-llama");
}

#[test]
fn tiny_qwen2_bf16_tied_matches_transformers() {
    check("tiny-qwen2");
}

#[test]
fn tiny_gemma3_sliding_window_matches_transformers() {
    check("tiny-gemma3");
}

#[test]
fn hf_chat_template_comes_from_the_directory() {
    let dir = fixtures().join("hf").join("tiny-qwen2");
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let p = model.prompt("hi", true, None).unwrap();
    assert_eq!(p.text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(p.ids[0], model.tokenizer().token_to_id("<|im_start|>").unwrap());
}
