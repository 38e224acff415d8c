//! The wire protocol on the tiny random checkpoint (fast, no real model): endpoints,
//! OpenAI shapes, streaming, logprobs, stop strings, seeds, errors, limits, start-up
//! checks of vectors. Greedy answers are compared with the runtime called directly.

mod common;

use std::sync::Arc;

use common::*;
use lcross_core::eval::{steering_hooks, Steering};
use lcross_core::steering::SteeringVector;
use lcross_model::{GenerateOptions, HookPoint, Hooks, InterventionKind, Model, Positions, Sampling};
use lcross_serve::{Limits, RunningServer, ServeOptions, VectorRegistry};
use serde_json::{json, Value};

fn options(batch_rows: usize, max_queue: usize) -> ServeOptions {
    ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        batch_rows,
        max_queue,
        model_name: None,
        limits: Limits { max_body_bytes: 64 * 1024, max_prompt_tokens: 200, max_tokens_limit: 64, default_max_tokens: 16, ..Limits::default() },
    }
}

/// The tiny server with two vectors: `push` (layer 1, calibrated beta 3) and `pull`
/// (layer 2, not calibrated).
fn tiny_server(batch_rows: usize, max_queue: usize) -> (RunningServer, Arc<Model>, std::path::PathBuf) {
    let model = tiny_model();
    let dir = tmp(&format!("tiny-{batch_rows}-{max_queue}"));
    let h = model.config().hidden_size;
    let push = write_vector(&model, &dir, "push", 1, direction(h, 1, 4.0), Some(3.0));
    let pull = write_vector(&model, &dir, "pull", 2, direction(h, 2, 4.0), None);
    let mut reg = VectorRegistry::new();
    reg.register("push", &push, &model).unwrap();
    reg.register("pull", &pull, &model).unwrap();
    let server = RunningServer::start(model.clone(), reg, &options(batch_rows, max_queue)).unwrap();
    (server, model, dir)
}

/// What the runtime generates alone (greedy) for a plain-format chat prompt.
fn direct(model: &Model, text: &str, max_tokens: usize, hooks: &Hooks) -> String {
    let prompt = model.prompt(text, true, None).unwrap();
    let opts = GenerateOptions { max_tokens, sampling: Sampling::Greedy, stop_tokens: model.stop_tokens().to_vec() };
    let ids = model.generate(&prompt.ids, &opts, hooks, |_| Ok(())).unwrap();
    let shown: Vec<u32> = ids.into_iter().filter(|t| !model.stop_tokens().contains(t)).collect();
    model.tokenizer().decode(&shown, true).unwrap()
}

fn chat(model: &str, text: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 12});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn endpoints_answer_in_openai_shapes_and_match_the_runtime() {
    let (server, model, dir) = tiny_server(4, 4);
    let c = client();
    let base = server.base_url();
    let name = model.id().to_string();

    let (s, h) = get(&c, &format!("http://{}/health", server.addr));
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")), "{h}");
    let (_, m) = get(&c, &format!("{base}/models"));
    assert_eq!(m["data"][0]["id"], json!(name));
    let (_, v) = get(&c, &format!("{base}/vectors"));
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["pull", "push"]);
    assert_eq!(v["data"][1]["calibrated_beta"], json!(3.0));
    assert_eq!(v["data"][1]["layers"], json!([1]));
    assert!(v["data"][0]["calibrated_beta"].is_null());

    // Unsteered and steered greedy answers equal the runtime's.
    let push = SteeringVector::load(&dir.join("push.safetensors")).unwrap();
    let pull = SteeringVector::load(&dir.join("pull.safetensors")).unwrap();
    let url = format!("{base}/chat/completions");
    let (s, plain) = post(&c, &url, &chat(&name, "hello there", json!({})));
    assert_eq!(s, 200, "{plain}");
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["choices"][0]["message"]["role"], "assistant");
    let plain_text = plain["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert_eq!(plain_text, direct(&model, "hello there", 12, &Hooks::none()));
    let prompt_tokens = model.prompt("hello there", true, None).unwrap().ids.len();
    assert_eq!(plain["usage"]["prompt_tokens"], json!(prompt_tokens));
    let u = &plain["usage"];
    assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()));

    let steer = json!({"steering": [{"vector": "push", "beta": "auto"}, {"vector": "pull", "beta": -2.5, "positions": "generated"}]});
    let (s, steered) = post(&c, &url, &chat(&name, "hello there", steer));
    assert_eq!(s, 200, "{steered}");
    let hooks = {
        let a = steering_hooks(&model, Some(&Steering::add(&push, 3.0, Positions::All))).unwrap();
        let b = steering_hooks(&model, Some(&Steering::add(&pull, -2.5, Positions::Generated))).unwrap();
        Hooks { interventions: a.interventions.into_iter().chain(b.interventions).collect(), ..Hooks::none() }
    };
    let steered_text = steered["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(steered_text, direct(&model, "hello there", 12, &hooks));
    assert_ne!(steered_text, plain_text, "steering must change the tiny model's answer");
    assert_eq!(steered["lcross"]["steering"][0], json!({"vector": "push", "beta": 3.0, "positions": "all", "hook": "resid_post", "intervention": "add"}));

    // Another hook point and intervention: the same as the runtime with the same hooks.
    let ablate = json!({"steering": [{"vector": "push", "beta": 0, "hook": "attn_out", "intervention": "ablate"}]});
    let (s, ablated) = post(&c, &url, &chat(&name, "hello there", ablate));
    assert_eq!(s, 200, "{ablated}");
    let hooks = Steering::add(&push, 0.0, Positions::All).at(HookPoint::AttnOut).with_intervention(InterventionKind::Ablate).hooks(&model).unwrap();
    assert_eq!(ablated["choices"][0]["message"]["content"].as_str().unwrap(), direct(&model, "hello there", 12, &hooks));
    assert_eq!(ablated["lcross"]["steering"][0]["hook"], "attn_out");
    assert_eq!(ablated["lcross"]["steering"][0]["intervention"], "ablate");

    // Streaming gives the same text: role first, finish reason, usage, [DONE].
    let events = stream(&c, &url, &chat(&name, "hello there", json!({"stream": true, "stream_options": {"include_usage": true}})));
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&events), plain_text);
    assert_eq!(events.last().unwrap(), &json!("[DONE]"));
    let usage = &events[events.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], plain["usage"]);
    let finish = &events[events.len() - 3]["choices"][0]["finish_reason"];
    assert_eq!(finish, &plain["choices"][0]["finish_reason"]);
    assert!(events.iter().all(|e| e == "[DONE]" || e["object"] == "chat.completion.chunk"));
    assert!(events.iter().all(|e| e == "[DONE]" || e["created"] == events[0]["created"]), "one `created` per response");

    // Log-probabilities: greedy picks the top token; top lists are sorted and sized.
    let (_, lp) = post(&c, &url, &chat(&name, "hello there", json!({"logprobs": true, "top_logprobs": 3})));
    let content = lp["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty());
    for t in content {
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!((top[0]["logprob"].as_f64().unwrap() - t["logprob"].as_f64().unwrap()).abs() < 1e-6, "{t}");
        assert!(top.windows(2).all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()));
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
    }
    let joined: String = content.iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert_eq!(joined, plain_text, "logprob tokens spell the answer");

    // A stop string cuts the answer before it.
    let chars: Vec<char> = plain_text.chars().collect();
    assert!(chars.len() > 6, "answer too short to test stop strings: {plain_text:?}");
    let stop: String = chars[3..5].iter().collect();
    let expected: String = plain_text[..plain_text.find(&stop).unwrap()].to_string();
    let (_, cut) = post(&c, &url, &chat(&name, "hello there", json!({"stop": [stop.clone(), "\u{1}never"]})));
    assert_eq!(cut["choices"][0]["message"]["content"], json!(expected));
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    let events = stream(&c, &url, &chat(&name, "hello there", json!({"stop": stop, "stream": true})));
    assert_eq!(stream_text(&events), expected);

    // Sampling: a seed makes it reproducible.
    let sampled = |seed: i64| {
        let (_, r) = post(&c, &url, &chat(&name, "hello there", json!({"temperature": 1.0, "seed": seed, "max_tokens": 16})));
        r["choices"][0]["message"]["content"].as_str().unwrap().to_string()
    };
    assert_eq!(sampled(7), sampled(7));
    assert!((0..4).map(sampled).collect::<std::collections::BTreeSet<_>>().len() > 1, "different seeds should differ on a random model");

    // Completions: plain prompt, OpenAI's legacy logprobs shape.
    let (s, cmpl) =
        post(&c, &format!("{base}/completions"), &json!({"model": name, "prompt": "hello there", "temperature": 0, "max_tokens": 5, "logprobs": 2}));
    assert_eq!(s, 200, "{cmpl}");
    assert_eq!(cmpl["object"], "text_completion");
    let l = &cmpl["choices"][0]["logprobs"];
    assert_eq!(l["tokens"].as_array().unwrap().len(), l["token_logprobs"].as_array().unwrap().len());
    assert!(l["top_logprobs"][0].as_object().unwrap().len() <= 2);
    let events =
        stream(&c, &format!("{base}/completions"), &json!({"model": name, "prompt": "hello there", "temperature": 0, "max_tokens": 5, "stream": true}));
    let text: String = events.iter().filter_map(|e| e.pointer("/choices/0/text").and_then(Value::as_str)).collect();
    assert_eq!(text, cmpl["choices"][0]["text"].as_str().unwrap());
    server.stop().unwrap();
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_stays_up() {
    let (server, model, _) = tiny_server(2, 2);
    let c = client();
    let url = format!("{}/chat/completions", server.base_url());
    let name = model.id().to_string();
    let ok = chat(&name, "hi", json!({})).to_string();
    let long = "word ".repeat(400);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{bad json".into(), 400, "invalid request body"),
        ("".into(), 400, "empty"),
        ("[1, 2]".into(), 400, "invalid request body"),
        (ok.replace("\"temperature\"", "\"temprature\""), 400, "unknown field `temprature`"),
        (ok.replace("\"max_tokens\":12", "\"max_tokens\":\"ten\""), 400, "invalid type"),
        (chat(&name, "hi", json!({"max_tokens": 65})).to_string(), 400, "at most 64"),
        (chat(&name, "hi", json!({"max_tokens": 0})).to_string(), 400, "at least 1"),
        (chat(&name, "hi", json!({"n": 2})).to_string(), 400, "n = 1"),
        (chat(&name, "hi", json!({"temperature": -1})).to_string(), 400, "temperature"),
        (chat(&name, "hi", json!({"top_p": 0})).to_string(), 400, "top_p"),
        (chat(&name, "hi", json!({"top_logprobs": 2})).to_string(), 400, "logprobs: true"),
        (chat(&name, "hi", json!({"logprobs": true, "top_logprobs": 21})).to_string(), 400, "at most 20"),
        (chat(&name, "hi", json!({"stop": ["a", "b", "c", "d", "e"]})).to_string(), 400, "stop strings"),
        (chat(&name, "hi", json!({"stop": 5})).to_string(), 400, "a string or an array of strings"),
        (chat(&name, "hi", json!({"steering": [{"vector": "nope", "beta": 1}]})).to_string(), 400, "unknown steering vector `nope`; registered: pull, push"),
        (chat(&name, "hi", json!({"steering": [{"vector": "pull", "beta": "auto"}]})).to_string(), 400, "no calibrated beta"),
        (chat(&name, "hi", json!({"steering": [{"vector": "push", "beta": "big"}]})).to_string(), 400, "number or \\\"auto\\\""),
        (chat(&name, "hi", json!({"steering": [{"vector": "push", "beta": 1, "positions": "middle"}]})).to_string(), 400, "positions `middle`"),
        (chat(&name, "hi", json!({"steering": [{"vector": "push", "beta": 1, "hook": "resid_mid"}]})).to_string(), 400, "steering[0].hook"),
        (chat(&name, "hi", json!({"steering": [{"vector": "push", "beta": 1, "intervention": "scale"}]})).to_string(), 400, "add, ablate or cap"),
        (chat(&name, "hi", json!({"steering": [{"vector": "push", "beta": 1e39}]})).to_string(), 400, "beta"),
        (chat(&name, "hi", json!({"steering": [{"vector": "/etc/passwd", "beta": 1}]})).to_string(), 400, "unknown steering vector"),
        (chat(&name, "hi", json!({"steering": [{"vector": "push", "beta": 1, "path": "/x"}]})).to_string(), 400, "unknown field `path`"),
        (chat(&name, "hi", json!({"steering": {"vector": "push", "beta": 1}})).to_string(), 400, "invalid type"),
        (chat(&name, "hi", json!({"messages": []})).to_string(), 400, "at least one message"),
        (chat(&name, "hi", json!({"messages": [{"role": "robot", "content": "x"}]})).to_string(), 400, "unknown role"),
        (chat(&name, "hi", json!({"messages": [{"role": "user", "content": [{"type": "image_url", "text": "x"}]}]})).to_string(), 400, "text only"),
        (chat(&name, &long, json!({})).to_string(), 400, "at most 200"),
        (chat(&name, &"word ".repeat(120), json!({"max_tokens": 64})).to_string(), 400, "context"),
        (chat(&name, "hi", json!({"stream_options": {"include_usage": true}})).to_string(), 400, "only allowed with stream"),
        (chat(&name, "hi", json!({"presence_penalty": 0.5})).to_string(), 400, "not supported"),
        (chat("gpt-4", "hi", json!({})).to_string(), 404, "not served here"),
        (format!("{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}", "x".repeat(70 * 1024)), 413, "larger than"),
    ];
    for (body, status, needle) in &cases {
        let (s, v, _) = post_raw(&c, &url, body);
        let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error object for {}: {v}", &body[..body.len().min(120)]));
        assert_eq!(s, *status, "{}: {v}", &body[..body.len().min(120)]);
        assert!(v.to_string().contains(needle), "{}: expected `{needle}` in {v}", &body[..body.len().min(120)]);
        assert!(v["error"]["type"].is_string() && !msg.is_empty());
    }
    let (s, v) = get(&c, &format!("http://{}/v2/nothing", server.addr));
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("unknown_url")));
    let r = c.get(&url).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // Completions' own checks.
    let curl = format!("{}/completions", server.base_url());
    for (body, needle) in [
        (json!({"model": name, "prompt": ["a", "b"]}), "one prompt per request"),
        (json!({"model": name, "prompt": ""}), "empty"),
        (json!({"model": name, "prompt": "a", "echo": true}), "echo"),
        (json!({"model": name, "prompt": [1, 2]}), "a string or an array of strings"),
    ] {
        let (s, v) = post(&c, &curl, &body);
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains(needle), "{needle}: {v}");
    }
    // Still healthy and answering.
    let (s, v) = post(&c, &url, &chat(&name, "hi", json!({})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(get(&c, &format!("http://{}/health", server.addr)).1["in_flight"], json!(0));
    server.stop().unwrap();
}

#[test]
fn a_full_server_answers_429_with_retry_after() {
    let (server, model, _) = tiny_server(1, 1);
    // Hold both places (one row, one queue place) as two running requests would.
    let a = server.state.engine.admit().unwrap();
    let b = server.state.engine.admit().unwrap();
    let c = client();
    let url = format!("{}/chat/completions", server.base_url());
    let (s, v, headers) = post_raw(&c, &url, &chat(model.id(), "hi", json!({})).to_string());
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "queue_full");
    assert_eq!(headers.get("retry-after").and_then(|h| h.to_str().ok()), Some("1"));
    assert_eq!(get(&c, &format!("http://{}/health", server.addr)).1["in_flight"], json!(2));
    drop((a, b));
    let (s, v) = post(&c, &url, &chat(model.id(), "hi", json!({})));
    assert_eq!(s, 200, "{v}");
    server.stop().unwrap();
}

#[test]
fn vectors_that_do_not_fit_the_model_are_refused_at_start_up() {
    let model = tiny_model();
    let dir = tmp("refuse");
    let h = model.config().hidden_size;
    let mut reg = VectorRegistry::new();
    let wrong_size = dir.join("wide.safetensors");
    let mut meta = metadata(&model, &[1], "wide", None);
    meta.hidden_size = h + 1;
    SteeringVector { metadata: meta, layers: [(1, vec![0.5; h + 1])].into_iter().collect() }.save(&wrong_size).unwrap();
    let e = reg.register("wide", &wrong_size, &model).unwrap_err().to_string();
    assert!(e.contains("vector `wide`") && e.contains("hidden size"), "{e}");
    let deep = write_vector(&model, &dir, "deep", 9, direction(h, 3, 1.0), None);
    let e = reg.register("deep", &deep, &model).unwrap_err().to_string();
    assert!(e.contains("layer 9") && e.contains("out of range"), "{e}");
    let other = write_vector(&model, &dir, "other", 1, direction(h, 4, 1.0), None);
    let mut v = SteeringVector::load(&other).unwrap();
    v.metadata.model_id = "some-other-model".into();
    v.save(&other).unwrap();
    let e = reg.register("other", &other, &model).unwrap_err().to_string();
    assert!(e.contains("some-other-model") && e.contains("transfer"), "{e}");
    let e = reg.register("missing", &dir.join("missing.safetensors"), &model).unwrap_err().to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
    std::fs::write(dir.join("junk.safetensors"), b"not a vector").unwrap();
    let e = reg.register("junk", &dir.join("junk.safetensors"), &model).unwrap_err().to_string();
    assert!(e.contains("vector `junk`"), "{e}");
    let ok = write_vector(&model, &dir, "ok", 1, direction(h, 5, 1.0), None);
    reg.register("ok", &ok, &model).unwrap();
    assert!(reg.register("ok", &ok, &model).unwrap_err().to_string().contains("twice"));
    assert_eq!(reg.names(), ["ok"]);
}

/// Every family of lcross-model's tiny checkpoints behind the server: two requests sent
/// at once (the server may batch them), one steered at layer 1's resid_post and one at its
/// mlp_out, answer what the runtime answers for each alone.
#[test]
fn every_family_serves_steered_requests_like_the_runtime() {
    for family in ["tiny-qwen3", "tiny-mistral", "tiny-gemma2", "tiny-phi3", "tiny-olmo2"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf").join(family);
        let model = Arc::new(Model::load(path.to_str().unwrap(), &lcross_model::LoadOptions::default()).unwrap_or_else(|e| panic!("{family}: {e}")));
        let dir = tmp(&format!("family-{family}"));
        let h = model.config().hidden_size;
        let push = write_vector(&model, &dir, "push", 1, direction(h, 1, 6.0), None);
        let mut reg = VectorRegistry::new();
        reg.register("push", &push, &model).unwrap();
        let server = RunningServer::start(model.clone(), reg, &options(4, 4)).unwrap();
        let url = format!("{}/chat/completions", server.base_url());
        let name = model.id().to_string();
        let sv = SteeringVector::load(&push).unwrap();
        let requests = [
            (json!({"steering": [{"vector": "push", "beta": 4.0}]}), Steering::add(&sv, 4.0, Positions::All).hooks(&model).unwrap()),
            (
                json!({"steering": [{"vector": "push", "beta": 4.0, "hook": "mlp_out"}]}),
                Steering::add(&sv.only_layer(1).unwrap(), 4.0, Positions::All).at(HookPoint::MlpOut).hooks(&model).unwrap(),
            ),
        ];
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> =
                requests.iter().map(|(extra, _)| s.spawn(|| post(&client(), &url, &chat(&name, "tell me about rain", extra.clone())))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ((status, body), (_, hooks)) in answers.iter().zip(&requests) {
            assert_eq!(*status, 200, "{family}: {body}");
            assert_eq!(body["choices"][0]["message"]["content"].as_str().unwrap(), direct(&model, "tell me about rain", 12, hooks), "{family}");
        }
        assert_ne!(
            answers[0].1["choices"][0]["message"]["content"],
            json!(direct(&model, "tell me about rain", 12, &Hooks::none())),
            "{family}: steering changes nothing"
        );
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A steering whose numbers overflow is never answered 200 with empty content: one whose
/// added norm overflows f32's squared range is refused up front (400, naming the field);
/// one that overflows the compute dtype while generating (here f16, largest value 65504)
/// is answered 422 in OpenAI's error shape, streamed or not; the server keeps answering.
#[test]
fn overflowing_steering_is_a_422_not_an_empty_answer() {
    let model = tiny_model();
    let dir = tmp("overflow");
    let h = model.config().hidden_size;
    let huge = write_vector(&model, &dir, "huge", 1, direction(h, 3, 3.0e38), None);
    let mut reg = VectorRegistry::new();
    reg.register("huge", &huge, &model).unwrap();
    let server = RunningServer::start(model.clone(), reg, &options(2, 2)).unwrap();
    let c = client();
    let url = format!("{}/chat/completions", server.base_url());
    let (s, v) = post(&c, &url, &chat(model.id(), "hello there", json!({"steering": [{"vector": "huge", "beta": 1000.0}]})));
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "steering[0]", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("lower beta"), "{v}");
    server.stop().unwrap();

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf/tiny-llama");
    let f16 = Arc::new(Model::load(fixture.to_str().unwrap(), &lcross_model::LoadOptions::parse("f32", "cpu", "f16").unwrap()).unwrap());
    let strong = write_vector(&f16, &dir, "strong", 1, direction(h, 3, 4.0), None);
    let mut reg = VectorRegistry::new();
    reg.register("strong", &strong, &f16).unwrap();
    let server = RunningServer::start(f16.clone(), reg, &options(2, 2)).unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let steer = json!({"steering": [{"vector": "strong", "beta": 1.0e6}]});
    let (s, v) = post(&c, &url, &chat(f16.id(), "hello there", steer.clone()));
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "non_finite_logits", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("strong") && msg.contains("lower beta"), "{msg}");
    let mut streamed = steer.clone();
    streamed["stream"] = json!(true);
    let body = c.post(&url).json(&chat(f16.id(), "hello there", streamed)).send().unwrap().text().unwrap();
    assert!(body.contains("non_finite_logits") && body.contains("[DONE]"), "{body}");
    let (s, v) = post(&c, &url, &chat(f16.id(), "hello there", json!({})));
    assert_eq!(s, 200, "{v}");
    server.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
