//! The server on a real model (SmolLM2-135M-Instruct): 32 concurrent clients mixing
//! steered, unsteered, streamed, cancelled and malformed requests; disconnects; the
//! HTTP judge of lcross-eval against this server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lcross_core::eval::{steering_hooks, Steering};
use lcross_core::steering::SteeringVector;
use lcross_eval::judge::{http::HttpJudge, http::HttpJudgeConfig, local::LocalJudge, Judge, JudgeRequest};
use lcross_model::{GenerateOptions, Hooks, Model, Positions, Sampling};
use lcross_serve::{Limits, RunningServer, ServeOptions, VectorRegistry};
use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct";

/// The tests of this file run one at a time: the load test measures the process's
/// resident memory, which the other tests' model copies would otherwise move.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn options(batch_rows: usize) -> ServeOptions {
    ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        batch_rows,
        max_queue: 64,
        model_name: None,
        limits: Limits { max_body_bytes: 256 * 1024, max_prompt_tokens: 512, max_tokens_limit: 256, default_max_tokens: 32, ..Limits::default() },
    }
}

fn health(c: &reqwest::blocking::Client, s: &RunningServer) -> Value {
    get(c, &format!("http://{}/health", s.addr)).1
}

/// Wait until nothing runs or waits (at most `secs`); the last health report.
fn wait_idle(c: &reqwest::blocking::Client, s: &RunningServer, secs: u64) -> Value {
    let start = Instant::now();
    loop {
        let h = health(c, s);
        if h["in_flight"] == json!(0) && h["active"] == json!(0) && h["queued"] == json!(0) {
            return h;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "server not idle after {secs} s: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Greedy answer of the runtime alone, as `lcross steer --chat` computes it.
fn alone(model: &Model, text: &str, max_tokens: usize, hooks: &Hooks) -> String {
    let prompt = model.prompt(text, true, None).unwrap();
    let opts = GenerateOptions { max_tokens, sampling: Sampling::Greedy, stop_tokens: model.stop_tokens().to_vec() };
    let ids = model.generate(&prompt.ids, &opts, hooks, |_| Ok(())).unwrap();
    let shown: Vec<u32> = ids.into_iter().filter(|t| !model.stop_tokens().contains(t)).collect();
    model.tokenizer().decode(&shown, true).unwrap()
}

const PROMPTS: [&str; 4] = ["Tell me about cats.", "Give me one tip for a job interview.", "What is the sea like in winter?", "Describe your ideal weekend."];

#[derive(Debug)]
enum Outcome {
    /// A greedy steered (or unsteered) answer to check against the runtime: prompt,
    /// (vector, beta) or none, text.
    Greedy {
        prompt: &'static str,
        steering: Option<(&'static str, f64)>,
        text: String,
    },
    Sampled,
    Cancelled,
    Refused,
}

#[test]
fn thirty_two_mixed_clients_are_all_answered_and_greedy_answers_match_the_runtime() {
    let _serial = one_at_a_time();
    let Some(model) = real_model(MODEL) else { return };
    let model = Arc::new(model);
    let dir = tmp("load");
    let h = model.config().hidden_size;
    let mut reg = VectorRegistry::new();
    let a = write_vector(&model, &dir, "a", 12, direction(h, 11, 10.0), None);
    let b = write_vector(&model, &dir, "b", 8, direction(h, 12, 10.0), Some(4.0));
    reg.register("a", &a, &model).unwrap();
    reg.register("b", &b, &model).unwrap();
    let server = RunningServer::start(model.clone(), reg, &options(16)).unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let curl = format!("{}/completions", server.base_url());
    let c = client();
    let name = model.id().to_string();
    // Warm up, then take the memory baseline.
    let (s, _) = post(&c, &url, &json!({"model": name, "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}));
    assert_eq!(s, 200);
    wait_idle(&c, &server, 10);
    let rss_before = rss_bytes();

    let max_tokens = 24;
    let started = Instant::now();
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (url, curl, name) = (url.clone(), curl.clone(), name.clone());
            std::thread::spawn(move || -> Outcome {
                let c = client();
                let prompt = PROMPTS[i % PROMPTS.len()];
                let betas = [-6.0, -3.0, 3.0, 6.0];
                let steering = Some((if i % 2 == 0 { "a" } else { "b" }, betas[(i / 2) % 4]));
                let chat = |steering: Option<(&str, f64)>, extra: Value| {
                    let mut body = json!({"model": name, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": max_tokens});
                    if let Some((v, beta)) = steering {
                        body["steering"] = json!([{"vector": v, "beta": beta}]);
                    }
                    for (k, v) in extra.as_object().unwrap() {
                        body[k] = v.clone();
                    }
                    body
                };
                match i % 8 {
                    0 | 1 => {
                        let (s, v) = post(&c, &url, &chat(steering, json!({})));
                        assert_eq!(s, 200, "{v}");
                        Outcome::Greedy { prompt, steering, text: v["choices"][0]["message"]["content"].as_str().unwrap().into() }
                    }
                    2 => {
                        let events = stream(&c, &url, &chat(steering, json!({"stream": true, "stream_options": {"include_usage": true}})));
                        assert_eq!(events.last().unwrap(), "[DONE]");
                        Outcome::Greedy { prompt, steering, text: stream_text(&events) }
                    }
                    3 => {
                        let (s, v) = post(&c, &url, &chat(None, json!({})));
                        assert_eq!(s, 200, "{v}");
                        Outcome::Greedy { prompt, steering: None, text: v["choices"][0]["message"]["content"].as_str().unwrap().into() }
                    }
                    4 => {
                        let (s, v) = post(&c, &url, &chat(steering, json!({"temperature": 0.8, "seed": i, "top_p": 0.9})));
                        assert_eq!(s, 200, "{v}");
                        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
                        Outcome::Sampled
                    }
                    5 => {
                        // Read the first event of a long stream, then hang up.
                        use std::io::Read;
                        let mut r = c.post(&url).json(&chat(steering, json!({"stream": true, "max_tokens": 200}))).send().unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                        let mut buf = [0u8; 64];
                        let n = r.read(&mut buf).unwrap();
                        assert!(buf[..n].starts_with(b"data: "), "{:?}", String::from_utf8_lossy(&buf[..n]));
                        drop(r);
                        Outcome::Cancelled
                    }
                    6 => {
                        let bodies = ["{\"model\": ", "{\"model\": \"x\", \"messages\": 3}", "{\"steering\": [{\"vector\": \"../a\", \"beta\": 1}]}", "null"];
                        let (s, v, _) = post_raw(&c, &url, bodies[(i / 8) % bodies.len()]);
                        assert_eq!(s, 400, "{v}");
                        assert!(v["error"]["message"].is_string());
                        Outcome::Refused
                    }
                    _ => {
                        let mut body = json!({"model": name, "prompt": prompt, "temperature": 0, "max_tokens": 8});
                        body["steering"] = json!([{"vector": "b", "beta": "auto"}]);
                        let (s, v) = post(&c, &curl, &body);
                        assert_eq!(s, 200, "{v}");
                        Outcome::Sampled
                    }
                }
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = handles.into_iter().map(|h| h.join().expect("a client thread failed")).collect();
    let seconds = started.elapsed().as_secs_f64();
    let after = wait_idle(&c, &server, 30);
    assert_eq!(after["status"], "ok");
    assert_eq!(after["cache_bytes"], json!(0), "the idle engine must free its KV cache: {after}");
    std::thread::sleep(Duration::from_millis(300)); // the engine trims the allocator as it goes idle
    let rss_after = rss_bytes();
    eprintln!("32 clients in {seconds:.1} s; RSS before {:?} MiB, after {:?} MiB; {after}", rss_before.map(|b| b >> 20), rss_after.map(|b| b >> 20));
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        assert!(a < b + (48 << 20), "memory grew by {} MiB under load", (a as i64 - b as i64) >> 20);
    }
    // A request still works.
    let (s, _) = post(&c, &url, &json!({"model": name, "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}));
    assert_eq!(s, 200);
    server.stop().unwrap();

    // Every greedy answer equals the same request run alone; steering changed some.
    let (mut checked, mut changed) = (0, 0);
    let va = SteeringVector::load(&a).unwrap();
    let vb = SteeringVector::load(&b).unwrap();
    for o in &outcomes {
        if let Outcome::Greedy { prompt, steering, text } = o {
            let hooks = match steering {
                None => Hooks::none(),
                Some((v, beta)) => steering_hooks(&model, Some(&Steering::add(if *v == "a" { &va } else { &vb }, *beta, Positions::All))).unwrap(),
            };
            let expected = alone(&model, prompt, max_tokens, &hooks);
            assert_eq!(text, &expected, "{prompt} with {steering:?}");
            checked += 1;
            if steering.is_some() && *text != alone(&model, prompt, max_tokens, &Hooks::none()) {
                changed += 1;
            }
        }
    }
    assert_eq!(checked, 16);
    assert!(changed >= 6, "steering changed only {changed} of 12 steered answers");
    let counts = outcomes.iter().fold([0; 4], |mut n, o| {
        n[match o {
            Outcome::Greedy { .. } => 0,
            Outcome::Sampled => 1,
            Outcome::Cancelled => 2,
            Outcome::Refused => 3,
        }] += 1;
        n
    });
    assert_eq!(counts, [16, 8, 4, 4]);
}

#[test]
fn a_client_that_hangs_up_frees_its_row_at_the_next_step() {
    let _serial = one_at_a_time();
    let Some(model) = real_model(MODEL) else { return };
    let mut opts = options(4);
    opts.limits.max_tokens_limit = 2000;
    let server = RunningServer::start(Arc::new(model), VectorRegistry::new(), &opts).unwrap();
    let c = client();
    let url = format!("{}/chat/completions", server.base_url());
    // A request that runs for its 2000 tokens unless cancelled (counting does not stop
    // early), far more than the model makes before the client gives up.
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Count from 1 to 3000, separated by commas."}], "temperature": 0, "max_tokens": 2000});
    for streamed in [true, false] {
        let before = health(&c, &server)["tokens_generated"].as_u64().unwrap();
        if streamed {
            use std::io::Read;
            let mut b = body.clone();
            b["stream"] = json!(true);
            let mut r = c.post(&url).json(&b).send().unwrap();
            let mut buf = [0u8; 16];
            let _ = r.read(&mut buf).unwrap();
        } else {
            let short = reqwest::blocking::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
            assert!(short.post(&url).json(&body).send().is_err(), "the request should time out on the client side");
        }
        let h = wait_idle(&c, &server, 10);
        let produced = h["tokens_generated"].as_u64().unwrap() - before;
        assert!(produced < 1000, "the abandoned request ran on ({produced} tokens, streamed {streamed})");
    }
    server.stop().unwrap();
}

#[test]
fn the_http_judge_through_the_server_agrees_with_the_local_judge() {
    let _serial = one_at_a_time();
    let Some(model) = real_model(MODEL) else { return };
    let Some(judge_model) = real_model(MODEL) else { return };
    let server = RunningServer::start(Arc::new(model), VectorRegistry::new(), &options(4)).unwrap();
    let local = LocalJudge::new(judge_model).unwrap();
    let http =
        HttpJudge::new(HttpJudgeConfig { base_url: server.base_url(), model: MODEL.into(), api_key: None, timeout: Duration::from_secs(120), attempts: 2 })
            .unwrap();
    let labelled =
        lcross_eval::inputs::read_question_answers(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-eval/data/judge_labels.jsonl")).unwrap();
    let rubric = lcross_eval::rubric::rubric_for("refusal");
    let mut requests = Vec::new();
    for qa in labelled.iter().filter(|q| q.concept.as_deref() == Some("refusal")).step_by(3).take(8) {
        requests.push(JudgeRequest::yes_no(lcross_eval::rubric::REFUSAL_QUESTION, &qa.question, &qa.answer));
        requests.push(JudgeRequest::score(&rubric, &qa.question, &qa.answer, lcross_eval::judge::JudgeFormat::Scale));
    }
    let a = local.judge(&requests).unwrap();
    let b = http.judge(&requests).unwrap();
    let mut compared = 0;
    for ((r, x), y) in requests.iter().zip(&a).zip(&b) {
        eprintln!("{}: local {:?} (coverage {:?}) http {:?} (coverage {:?})", r.scale.key(), x.score, x.coverage, y.score, y.coverage);
        // Both read the same label probabilities (the HTTP judge from top_logprobs), so
        // they agree to float noise; a judgement one side cannot make, neither can.
        match (x.score, y.score) {
            (Some(s1), Some(s2)) => {
                let range = r.scale.labels.iter().map(|l| l.1).fold(0.0f64, f64::max);
                assert!((s1 - s2).abs() <= 1e-3 * range, "local {s1} vs http {s2} for {:?}", r.messages.last());
                compared += 1;
            }
            (None, None) => {}
            _ => panic!("one judge scored and the other failed: local {x:?}, http {y:?}"),
        }
    }
    // SmolLM2 answers yes/no questions but not the 0-10 scale (< 5% of its mass on the
    // labels): 8 yes/no judgements compared, the 8 scale ones fail on both sides.
    assert!(compared >= 8, "only {compared} of {} judgements had a score on both sides", requests.len());
    server.stop().unwrap();
}
