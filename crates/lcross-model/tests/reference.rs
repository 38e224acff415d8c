//! Faithfulness against transformers (f32, same GGUF dequantized): token ids, chat
//! templates, last-token hidden states, next-token argmax and greedy continuations.
//! Fixtures come from `scripts/reference/make_fixtures.py`.

mod common;

use common::{cosine, fixtures, load_known, rel_l2};
use lcross_model::{BatchRow, GenerateOptions, GenerationRequest, Hooks, Logits, Message, Model, Sampling};
use serde_json::Value;

fn fixture(id: &str) -> Value {
    let path = fixtures().join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check_tokenizer(model: &Model, fx: &Value) {
    let mut failures = Vec::new();
    for case in fx["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = model.tokenizer().encode(text, true).unwrap();
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
            continue;
        }
        let decoded = model.tokenizer().decode(&got, false).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            failures.push(format!("decode {text:?}: want {:?} got {decoded:?}", case["decoded"]));
        }
    }
    assert!(failures.is_empty(), "{}: tokenizer mismatches:\n{}", model.id(), failures.join("\n"));
}

fn check_chat_template(model: &Model, fx: &Value) {
    let cases = fx["chat_template"].as_array().unwrap();
    assert_eq!(model.chat_template().has_template(), !cases.is_empty(), "{}: template presence", model.id());
    for case in cases {
        let mut msgs = Vec::new();
        if let Some(s) = case["system"].as_str() {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", case["user"].as_str().unwrap()));
        let got = model.chat_template().render(&msgs, case["add_generation_prompt"].as_bool().unwrap()).unwrap();
        assert_eq!(got, case["rendered"].as_str().unwrap(), "{}: chat template render", model.id());
    }
}

fn check_forward(model: &Model, fx: &Value) {
    for case in fx["forward"].as_array().unwrap() {
        let prompt_text = case["prompt"].as_str().unwrap();
        let prompt = model.prompt(prompt_text, true, None).unwrap();
        assert_eq!(prompt.text, case["text"].as_str().unwrap(), "{}: rendered prompt", model.id());
        assert_eq!(prompt.ids, ids(&case["ids"]), "{}: prompt ids", model.id());
        let layer = case["layer"].as_u64().unwrap() as usize;
        let out = model.forward(&prompt.ids, None, &Hooks::capture_last(&[layer]), Logits::Last).unwrap();
        let hidden: Vec<f32> = out.captures[&lcross_model::HookName::resid_post(layer)].flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = case["hidden"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let cos = cosine(&hidden, &want);
        let rel = rel_l2(&hidden, &want);
        eprintln!("{} {prompt_text:?}: layer {layer} cosine {cos:.7}, relative L2 error {rel:.2e}", model.id());
        // Measured 3e-7..1.7e-6 (f32 against transformers f32): 1e-4 leaves room for
        // summation order only, not for a wrong operation.
        assert!(rel <= 1e-4, "{}: hidden state relative L2 error {rel:.2e} > 1e-4 for {prompt_text:?}", model.id());
        let logits: Vec<f32> = out.logits.unwrap().to_vec1().unwrap();
        let top = lcross_model::argmax(&logits) as u64;
        assert_eq!(top, case["top5_ids"][0].as_u64().unwrap(), "{}: next-token argmax for {prompt_text:?}", model.id());
        let want_gen = ids(&case["greedy"]);
        let opts = GenerateOptions { max_tokens: want_gen.len(), sampling: Sampling::Greedy, stop_tokens: fx_eos(fx) };
        let got = model.generate(&prompt.ids, &opts, &Hooks::none(), |_| Ok(())).unwrap();
        assert_eq!(
            got,
            want_gen,
            "{}: greedy continuation of {prompt_text:?}:\n want {:?}\n got  {:?}",
            model.id(),
            model.tokenizer().decode(&want_gen, false).unwrap(),
            model.tokenizer().decode(&got, false).unwrap()
        );
    }
}

/// Every forward case of the fixture in one batch (rows of different lengths, padded):
/// hidden states and greedy continuations must match transformers as the single-row
/// path does.
fn check_forward_batched(model: &Model, fx: &Value) {
    let cases = fx["forward"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    let layers: Vec<usize> = cases.iter().map(|c| c["layer"].as_u64().unwrap() as usize).collect();
    let hooks: Vec<Hooks> = layers.iter().map(|&l| Hooks::capture_last(&[l])).collect();
    let rows: Vec<BatchRow> = prompts.iter().zip(&hooks).map(|(p, h)| BatchRow { tokens: p, hooks: h }).collect();
    assert!(prompts.iter().any(|p| p.len() != prompts[0].len()), "the batch must mix lengths");
    let outs = model.forward_batch(&rows, None, Logits::Last).unwrap();
    for ((case, out), &layer) in cases.iter().zip(&outs).zip(&layers) {
        let hidden: Vec<f32> = out.captures[&lcross_model::HookName::resid_post(layer)].flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = case["hidden"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let rel = rel_l2(&hidden, &want);
        assert!(rel <= 1e-4, "{}: batched hidden state relative L2 error {rel:.2e} for {:?}", model.id(), case["prompt"]);
    }
    let requests: Vec<GenerationRequest> = cases
        .iter()
        .zip(&prompts)
        .map(|(c, p)| GenerationRequest {
            prompt: p.clone(),
            hooks: Hooks::none(),
            options: GenerateOptions { max_tokens: ids(&c["greedy"]).len(), sampling: Sampling::Greedy, stop_tokens: fx_eos(fx) },
        })
        .collect();
    let got = model.generate_batch(&requests, 8, |_, _| Ok(())).unwrap();
    for (case, g) in cases.iter().zip(&got) {
        assert_eq!(g, &ids(&case["greedy"]), "{}: batched greedy continuation of {:?}", model.id(), case["prompt"]);
    }
}

/// transformers stops greedy generation at the model's EOS only.
fn fx_eos(fx: &Value) -> Vec<u32> {
    fx["eos_token_id"].as_u64().map(|x| vec![x as u32]).unwrap_or_default()
}

fn check_model(id: &str) {
    let fx = fixture(id);
    let Some(model) = load_known(id) else { return };
    assert_eq!(model.config().num_layers as u64, fx["num_layers"].as_u64().unwrap());
    assert_eq!(model.config().hidden_size as u64, fx["hidden_size"].as_u64().unwrap());
    check_tokenizer(&model, &fx);
    check_chat_template(&model, &fx);
    check_forward(&model, &fx);
    check_forward_batched(&model, &fx);
}

#[test]
fn smollm2_135m_matches_transformers() {
    check_model("smollm2-135m-instruct");
}

#[test]
fn gemma3_270m_matches_transformers() {
    check_model("gemma3-270m");
}

#[test]
fn qwen25_coder_05b_matches_transformers() {
    check_model("qwen2.5-coder-0.5b-instruct");
}

#[test]
fn qwen25_coder_15b_matches_transformers() {
    check_model("qwen2.5-coder-1.5b-instruct");
}

/// The opt-in quantized mode is approximate; this pins its measured error so a change
/// that makes it worse is noticed (numbers in docs/BENCH.md).
fn quantized_error(id: &str) -> (f64, usize, usize) {
    let fx = fixture(id);
    if common::known_model_path(id).is_none() {
        return (1.0, 0, 0);
    }
    let opts = lcross_model::LoadOptions { weight_mode: lcross_model::WeightMode::Quantized, ..Default::default() };
    let model = Model::load(id, &opts).unwrap();
    let mut worst = 1.0f64;
    let mut argmax_agree = 0;
    let cases = fx["forward"].as_array().unwrap();
    for case in cases {
        let layer = case["layer"].as_u64().unwrap() as usize;
        let out = model.forward(&ids(&case["ids"]), None, &Hooks::capture_last(&[layer]), Logits::Last).unwrap();
        let hidden: Vec<f32> = out.captures[&lcross_model::HookName::resid_post(layer)].flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = case["hidden"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        worst = worst.min(cosine(&hidden, &want));
        let logits: Vec<f32> = out.logits.unwrap().to_vec1().unwrap();
        argmax_agree += (lcross_model::argmax(&logits) as u64 == case["top5_ids"][0].as_u64().unwrap()) as usize;
    }
    eprintln!("{id} quantized: worst hidden cosine {worst:.5}, next-token argmax agrees on {argmax_agree}/{}", cases.len());
    (worst, argmax_agree, cases.len())
}

#[test]
fn quantized_mode_error_is_bounded() {
    for id in ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"] {
        let (worst, agree, n) = quantized_error(id);
        assert!(worst >= 0.99, "{id}: quantized hidden cosine {worst} < 0.99");
        assert!(agree + 1 >= n, "{id}: quantized argmax agrees on only {agree}/{n}");
    }
}

/// `--weights quantized` keeps the token embedding quantized (a 7B table is 2.2 GB in f32)
/// and dequantizes the rows a pass looks up: the embeddings it gives are the f32 mode's, bit
/// for bit (Q8_0, Q5_0 and Q4_K tables), and a token past the table is an error, not a panic.
#[test]
fn quantized_embedding_rows_equal_the_dequantized_table() {
    use lcross_model::{CapturePositions, HookName, HookPoint, LoadOptions, WeightMode};
    for id in ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"] {
        if common::known_model_path(id).is_none() {
            continue;
        }
        let dense = Model::load(id, &LoadOptions::default()).unwrap();
        let quantized = Model::load(id, &LoadOptions { weight_mode: WeightMode::Quantized, ..Default::default() }).unwrap();
        let prompt = dense.prompt("Embeddings of a few tokens, some repeated: a a b.", false, None).unwrap().ids;
        let hooks = Hooks::none().with_capture_at(HookName::new(0, HookPoint::ResidPre), CapturePositions::All);
        let rows = |m: &Model| -> Vec<f32> {
            m.forward(&prompt, None, &hooks, Logits::None).unwrap().captures[&HookName::new(0, HookPoint::ResidPre)].flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(rows(&quantized), rows(&dense), "{id}: quantized-mode embeddings differ from the dequantized table's");
        let vocab = quantized.config().vocab_size as u32;
        let err = quantized.forward(&[vocab + 5], None, &Hooks::none(), Logits::Last).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{id}: {err}");
    }
}
