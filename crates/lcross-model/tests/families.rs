//! The families added in issue 30 against transformers, on tiny random-weight checkpoints
//! (scripts/reference/make_family_fixtures.py), prompts of 63 tokens: qwen3 (q/k norms,
//! head_dim != hidden / heads), mistral (a sliding window of 5 on every layer), gemma2
//! (soft-capped scores and logits, alternating windows of 5, sandwich norms), phi3 (fused
//! projections, LongRoPE, a window of 7) and olmo2 (post-norms, whole-projection q/k
//! norms, weights in 7 shards with an index).
//! Last-token hidden states after every layer, the top-5 logits and 16 greedy tokens;
//! batched = single; both config spellings (transformers 4 and 5) load to the same
//! numbers; config values lcross does not implement are refused, never ignored.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, rel_l2};
use lcross_model::{BatchRow, CapturePositions, GenerateOptions, GenerationRequest, HookName, Hooks, LoadOptions, Logits, Model, Positions, Sampling};
use serde_json::Value;

/// Relative L2 bound against transformers' f32 numbers (measured ~1e-6).
const TOL: f64 = 1e-4;
const FAMILIES: [&str; 5] = ["tiny-qwen3", "tiny-mistral", "tiny-gemma2", "tiny-phi3", "tiny-olmo2"];

fn dir(name: &str) -> PathBuf {
    fixtures().join("hf").join(name)
}

fn load(dir: &Path) -> Model {
    Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(name).join("reference.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Last-token states after every layer and the last position's logits.
fn states_and_logits(model: &Model, prompt: &[u32]) -> (Vec<Vec<f32>>, Vec<f32>) {
    let n = model.config().num_layers;
    let hooks = (0..n).fold(Hooks::none(), |h, l| h.with_capture(l, CapturePositions::Last));
    let out = model.forward(prompt, None, &hooks, Logits::Last).unwrap();
    let states = (0..n).map(|l| out.captures[&HookName::resid_post(l)].flatten_all().unwrap().to_vec1().unwrap()).collect();
    (states, out.logits.unwrap().to_vec1().unwrap())
}

fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = GenerateOptions { max_tokens: n, sampling: Sampling::Greedy, stop_tokens: vec![] };
    model.generate(prompt, &opts, &Hooks::none(), |_| Ok(())).unwrap()
}

#[test]
fn new_families_match_transformers() {
    for name in FAMILIES {
        let r = reference(name);
        let model = load(&dir(name));
        let prompt = model.prompt(r["text"].as_str().unwrap(), false, None).unwrap().ids;
        assert_eq!(prompt, ids(&r["ids"]), "{name}: token ids differ from transformers'");
        let (states, logits) = states_and_logits(&model, &prompt);
        for (layer, want) in r["hidden_last"].as_object().unwrap() {
            let got = &states[layer.parse::<usize>().unwrap()];
            let rel = rel_l2(got, &floats(want));
            assert!(rel <= TOL, "{name} layer {layer}: relative L2 {rel:.2e} > {TOL:e}");
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top5: Vec<u32> = order[..5].iter().map(|&i| i as u32).collect();
        assert_eq!(top5, ids(&r["top5_ids"]), "{name}: top-5 logits differ");
        for (i, want) in floats(&r["top5_logits"]).iter().enumerate() {
            assert!((logits[top5[i] as usize] - want).abs() <= 1e-3 * want.abs().max(1.0), "{name}: logit {i} {} vs {want}", logits[top5[i] as usize]);
        }
        assert_eq!(greedy(&model, &prompt, 16), ids(&r["greedy"]), "{name}: greedy tokens differ");
    }
}

#[test]
fn new_families_batch_like_single_rows_with_steering() {
    for name in FAMILIES {
        let model = load(&dir(name));
        let h = model.config().hidden_size;
        let v = model.vector_tensor(&(0..h).map(|i| ((i % 7) as f32 - 3.0) / 3.0).collect::<Vec<_>>()).unwrap();
        let long = model.prompt(reference(name)["text"].as_str().unwrap(), false, None).unwrap().ids;
        let short = long[..9].to_vec();
        let steered = Hooks::none().with_intervention(1, v, 2.0, Positions::All);
        let none = Hooks::none();
        let rows = [BatchRow { tokens: &long, hooks: &steered }, BatchRow { tokens: &short, hooks: &none }];
        let batched = model.forward_batch(&rows, None, Logits::Last).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let single = model.forward(row.tokens, None, row.hooks, Logits::Last).unwrap();
            let (got, want): (Vec<f32>, Vec<f32>) = (batched[i].logits.as_ref().unwrap().to_vec1().unwrap(), single.logits.unwrap().to_vec1().unwrap());
            assert!(rel_l2(&got, &want) <= TOL, "{name} row {i}: batched differs from single");
        }
        // Generation in a batch, past the window, equals each row alone.
        let requests: Vec<GenerationRequest> = [long.clone(), short.clone()]
            .into_iter()
            .map(|prompt| GenerationRequest {
                prompt,
                hooks: Hooks::none(),
                options: GenerateOptions { max_tokens: 12, sampling: Sampling::Greedy, stop_tokens: vec![] },
            })
            .collect();
        let alone: Vec<Vec<u32>> = requests.iter().map(|r| greedy(&model, &r.prompt, 12)).collect();
        assert_eq!(model.generate_batch(&requests, 2, |_, _| Ok(())).unwrap(), alone, "{name}: batched generation differs");
    }
}

/// A copy of a fixture directory with its config.json rewritten by `change`.
fn variant(name: &str, tag: &str, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> PathBuf {
    let out = std::env::temp_dir().join(format!("lcross-family-{}-{name}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(dir(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
    }
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    change(config.as_object_mut().unwrap());
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    out
}

#[test]
fn transformers_4_and_5_config_spellings_give_the_same_numbers() {
    for name in FAMILIES {
        // transformers 4: `rope_theta` (and `rope_scaling`) at the top level, no `rope_parameters`.
        let old = variant(name, "v4", |c| {
            let mut params = c.remove("rope_parameters").expect("the fixture is written in the transformers 5 spelling");
            c.insert("rope_theta".into(), params["rope_theta"].clone());
            let scaling = match params["rope_type"].as_str() {
                Some("default") => Value::Null,
                _ => {
                    let p = params.as_object_mut().unwrap();
                    p.remove("rope_theta");
                    p.remove("partial_rotary_factor");
                    p.remove("original_max_position_embeddings"); // top level in transformers 4
                    let kind = p.remove("rope_type").unwrap();
                    p.insert("type".into(), kind);
                    params
                }
            };
            c.insert("rope_scaling".into(), scaling);
            c.remove("layer_types");
        });
        let prompt = load(&dir(name)).prompt("hidden states move", false, None).unwrap().ids;
        let (a, la) = states_and_logits(&load(&dir(name)), &prompt);
        let (b, lb) = states_and_logits(&load(&old), &prompt);
        assert_eq!(a, b, "{name}: states differ between the config spellings");
        assert_eq!(la, lb, "{name}: logits differ between the config spellings");
        let _ = std::fs::remove_dir_all(old);
    }
}

#[test]
fn config_values_lcross_does_not_implement_are_refused() {
    let refused = |name: &str, tag: &str, field: &str, change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let d = variant(name, tag, change);
        let err = Model::load(d.to_str().unwrap(), &LoadOptions::default()).err().unwrap_or_else(|| panic!("{name} with {tag} loaded")).to_string();
        assert!(err.contains(field) && err.contains("config.json"), "{name} {tag}: {err}");
        let _ = std::fs::remove_dir_all(d);
    };
    refused("tiny-qwen3", "qwen-window", "use_sliding_window", &|c| {
        c.insert("use_sliding_window".into(), Value::Bool(true));
    });
    refused("tiny-mistral", "gelu", "hidden_act", &|c| {
        c.insert("hidden_act".into(), "gelu".into());
    });
    refused("tiny-mistral", "mlp-bias", "mlp_bias", &|c| {
        c.insert("mlp_bias".into(), Value::Bool(true));
    });
    refused("tiny-qwen3", "softcap", "attn_logit_softcapping", &|c| {
        c.insert("attn_logit_softcapping".into(), 50.0.into());
    });
    refused("tiny-qwen3", "window-layers", "layer_types", &|c| {
        c.insert("layer_types".into(), serde_json::json!(["sliding_attention", "full_attention", "full_attention"]));
    });
    refused("tiny-mistral", "rope-yarn", "rope", &|c| {
        c.insert("rope_parameters".into(), serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}));
    });
    refused("tiny-mistral", "longrope", "rope", &|c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}),
        );
    });
    refused("tiny-phi3", "partial-rotary", "partial_rotary_factor", &|c| {
        c["rope_parameters"]["partial_rotary_factor"] = 0.5.into();
    });
    refused("tiny-phi3", "short-factors", "short_factor", &|c| {
        c["rope_parameters"]["short_factor"] = serde_json::json!([1.0, 2.0]);
    });
    refused("tiny-olmo2", "o-bias", "attention_bias", &|c| {
        c.insert("attention_bias".into(), Value::Bool(true));
    });
    refused("tiny-gemma2", "bidirectional", "use_bidirectional_attention", &|c| {
        c.insert("use_bidirectional_attention".into(), Value::Bool(true));
    });
    refused("tiny-gemma2", "layer-count", "layer_types", &|c| {
        c.insert("layer_types".into(), serde_json::json!(["sliding_attention", "full_attention"]));
    });
    // A mistral without a window is a plain llama: it loads, and its numbers differ from the windowed one past the window.
    let open = variant("tiny-mistral", "no-window", |c| {
        c.insert("sliding_window".into(), Value::Null);
    });
    let prompt = ids(&reference("tiny-mistral")["ids"]);
    let (_, windowed) = states_and_logits(&load(&dir("tiny-mistral")), &prompt);
    let (_, full) = states_and_logits(&load(&open), &prompt);
    assert!(rel_l2(&windowed, &full) > 0.01, "the window must change the numbers of a 63-token prompt");
    let _ = std::fs::remove_dir_all(open);
}

/// A hub cache layout (`models--ORG--NAME/refs/main`, `snapshots/<commit>/`) built from a
/// tiny checkpoint resolves by `ORG/NAME` and `ORG/NAME@COMMIT`; what is not there is an
/// error naming where lcross looked.
#[test]
fn models_resolve_from_the_hugging_face_cache() {
    use lcross_model::registry::{resolve_in_hub, ModelLocation};
    let hub = std::env::temp_dir().join(format!("lcross-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&hub);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = hub.join("models--lcross-tests--tiny-qwen3");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), format!("{commit}\n")).unwrap();
    for e in std::fs::read_dir(dir("tiny-qwen3")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, snapshot.join(p.file_name().unwrap())).unwrap();
    }
    for spec in ["lcross-tests/tiny-qwen3", &format!("lcross-tests/tiny-qwen3@{commit}")] {
        match resolve_in_hub(spec, &hub).unwrap() {
            ModelLocation::HfDir { id, path } => assert_eq!((id.as_str(), path.as_path()), ("tiny-qwen3", snapshot.as_path()), "{spec}"),
            other => panic!("{spec}: {other:?}"),
        }
    }
    let loc = resolve_in_hub("lcross-tests/tiny-qwen3", &hub).unwrap();
    let model = load(loc.path());
    assert_eq!(greedy(&model, &ids(&reference("tiny-qwen3")["ids"]), 16), ids(&reference("tiny-qwen3")["greedy"]));
    let err = resolve_in_hub("lcross-tests/absent", &hub).unwrap_err();
    assert!(err.contains("models--lcross-tests--absent") && err.contains("never downloads"), "{err}");
    let err = resolve_in_hub("lcross-tests/tiny-qwen3@nobranch", &hub).unwrap_err();
    assert!(err.contains("no config.json"), "{err}");
    let _ = std::fs::remove_dir_all(hub);
}

/// Phi-3's LongRoPE is implemented within its original context (transformers switches
/// every position to the long factors past it): longer sequences are refused, never run
/// with the short factors.
#[test]
fn longrope_sequences_past_the_original_context_are_refused() {
    let model = load(&dir("tiny-phi3"));
    assert_eq!(model.decoder().max_sequence(), 128, "original_max_position_embeddings of the fixture");
    let long: Vec<u32> = (0..129).map(|i| 3 + (i % 300)).collect();
    let err = model.forward(&long, None, &Hooks::none(), Logits::Last).unwrap_err().to_string();
    assert!(err.contains("129") && err.contains("128"), "{err}");
    assert!(model.forward(&long[..128], None, &Hooks::none(), Logits::Last).is_ok());
}

/// Shards come from model.safetensors.index.json: a shard it names that is missing is an
/// error naming the index, the tensor and the file; a stray safetensors file beside the
/// shards (Mistral's consolidated.safetensors) is not read.
#[test]
fn sharded_checkpoints_follow_their_index() {
    let stray = variant("tiny-olmo2", "stray", |_| {});
    std::fs::write(stray.join("consolidated.safetensors"), b"not a safetensors file").unwrap();
    let prompt = ids(&reference("tiny-olmo2")["ids"]);
    assert_eq!(greedy(&load(&stray), &prompt, 16), ids(&reference("tiny-olmo2")["greedy"]));
    std::fs::remove_file(stray.join("model-00003-of-00007.safetensors")).unwrap();
    let err = Model::load(stray.to_str().unwrap(), &LoadOptions::default()).err().expect("a missing shard must not load").to_string();
    assert!(err.contains("model.safetensors.index.json") && err.contains("model-00003-of-00007.safetensors") && err.contains("weight_map."), "{err}");
    let _ = std::fs::remove_dir_all(stray);
}

/// The hook points of every family add up: resid_post(l) = resid_pre(l) + attn_out(l) +
/// mlp_out(l) (the branch outputs after any post-norm: gemma's sandwich, olmo2's), and
/// resid_pre(l + 1) = resid_post(l).
#[test]
fn hook_points_add_up_on_every_family() {
    use lcross_model::HookPoint;
    for name in FAMILIES {
        let model = load(&dir(name));
        let prompt = ids(&reference(name)["ids"]);
        let n = model.config().num_layers;
        let points = [HookPoint::ResidPre, HookPoint::AttnOut, HookPoint::MlpOut, HookPoint::ResidPost];
        let hooks = (0..n).flat_map(|l| points.map(|p| (l, p))).fold(Hooks::none(), |h, (l, p)| h.with_capture_at(HookName::new(l, p), CapturePositions::Last));
        let out = model.forward(&prompt, None, &hooks, Logits::None).unwrap();
        let get = |l: usize, p: HookPoint| -> Vec<f32> { out.captures[&HookName::new(l, p)].flatten_all().unwrap().to_vec1().unwrap() };
        for l in 0..n {
            let sum: Vec<f32> =
                get(l, HookPoint::ResidPre).iter().zip(get(l, HookPoint::AttnOut)).zip(get(l, HookPoint::MlpOut)).map(|((a, b), c)| a + b + c).collect();
            assert!(rel_l2(&sum, &get(l, HookPoint::ResidPost)) <= 1e-5, "{name} layer {l}: the branches do not add up to resid_post");
            if l + 1 < n {
                assert_eq!(get(l + 1, HookPoint::ResidPre), get(l, HookPoint::ResidPost), "{name} layer {l}");
            }
        }
    }
}

/// The same checkpoints as GGUF files written by llama.cpp's own converter
/// (scripts/reference/make_gguf_fixtures.py, f32): the GGUF reader's names, norms (gemma2's
/// stored 1 + w), fused tensors and rope factors (phi3), post-norms (olmo2) and metadata give
/// the numbers of the Hugging Face folder (states after every layer and logits within 1e-5),
/// the tokenizer gives transformers' ids, and greedy tokens equal transformers'. Where GGUF
/// cannot say what the folder says, lcross reads it as llama.cpp does, and the folder is
/// compared with that meaning: gemma2's GGUF has no query_pre_attn_scalar (head_dim is
/// used, as in the published 2B and 9B configs), and llama.cpp's converter writes a mistral
/// as a llama without its sliding window.
#[test]
fn gguf_files_of_the_new_families_equal_their_folders() {
    for name in FAMILIES {
        let gguf = fixtures().join("gguf").join(format!("{name}.gguf"));
        let from_gguf = load(&gguf);
        let folder = match name {
            "tiny-gemma2" => variant(name, "gguf-scale", |c| {
                let head_dim = c["head_dim"].clone();
                c.insert("query_pre_attn_scalar".into(), head_dim);
            }),
            "tiny-mistral" => variant(name, "gguf-window", |c| {
                c.insert("sliding_window".into(), Value::Null);
            }),
            _ => dir(name),
        };
        let from_folder = load(&folder);
        let r = reference(name);
        let prompt = from_gguf.prompt(r["text"].as_str().unwrap(), false, None).unwrap().ids;
        assert_eq!(prompt, ids(&r["ids"]), "{name}: the GGUF tokenizer's ids differ from transformers'");
        let (a, la) = states_and_logits(&from_gguf, &prompt);
        let (b, lb) = states_and_logits(&from_folder, &prompt);
        for (layer, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(rel_l2(x, y) <= 1e-5, "{name} layer {layer}: GGUF {:.2e} from the folder", rel_l2(x, y));
        }
        assert!(rel_l2(&la, &lb) <= 1e-5, "{name}: GGUF logits differ from the folder's");
        if !matches!(name, "tiny-gemma2" | "tiny-mistral") {
            assert_eq!(greedy(&from_gguf, &prompt, 16), ids(&r["greedy"]), "{name}: GGUF greedy tokens differ from transformers'");
        }
        if folder != dir(name) {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

/// Llama 3.x in GGUF: llama.cpp's converter stores the llama3 rope scaling as per-frequency
/// factors (`rope_freqs.weight`) and Q/K in the interleaved rotary layout; the tiny llama3
/// checkpoint converted by it gives its folder's numbers and transformers' greedy tokens.
#[test]
fn llama3_gguf_rope_factors_equal_the_folder() {
    let from_gguf = load(&fixtures().join("gguf").join("tiny-llama.gguf"));
    assert!(matches!(from_gguf.config().rope_scaling, Some(lcross_model::config::RopeScaling::FreqFactors)), "the file's rope_freqs are read");
    let from_folder = load(&dir("tiny-llama"));
    let r = reference("tiny-llama");
    let prompt = ids(&r["ids"]);
    let (a, la) = states_and_logits(&from_gguf, &prompt);
    let (b, lb) = states_and_logits(&from_folder, &prompt);
    for (layer, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(rel_l2(x, y) <= 1e-5, "layer {layer}: GGUF {:.2e} from the folder", rel_l2(x, y));
    }
    assert!(rel_l2(&la, &lb) <= 1e-5);
    assert_eq!(greedy(&from_gguf, &prompt, ids(&r["greedy"]).len()), ids(&r["greedy"]));
}
