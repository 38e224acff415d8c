//! `lcross serve` as a user runs it: a steered answer over HTTP equals `lcross steer`'s,
//! and a vector of another model is refused at start-up.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use common::*;
use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct";

/// A `lcross serve` child process and the base URL it printed.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Served {
    let mut child = lcross_command().arg("serve").args(args).args(["--port", "0"]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("lcross serve exited before listening").unwrap();
        if let Some(rest) = line.split(" on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Served { child, base }
}

#[test]
fn a_steered_answer_over_http_equals_lcross_steer() {
    if skip() {
        return;
    }
    let d = tmp("serve");
    let sv = d.join("optimism.safetensors");
    json(&["extract", "-m", MODEL, "-d", "builtin:optimism", "-l", "12", "--limit", "8", "-o", sv.to_str().unwrap(), "--json"]);
    let served = serve(&["-m", MODEL, "--vector", &format!("optimism={}", sv.display())]);
    let c = reqwest::blocking::Client::new();
    let v: Value = c.get(format!("{}/vectors", served.base)).send().unwrap().json().unwrap();
    assert_eq!(v["data"][0]["id"], "optimism");
    assert_eq!(v["data"][0]["concept"], "optimism");
    let prompt = "Describe the weather tomorrow.";
    for beta in [0.0, 6.0] {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 24,
                          "steering": [{"vector": "optimism", "beta": beta}]});
        let r: Value = c.post(format!("{}/chat/completions", served.base)).json(&body).send().unwrap().json().unwrap();
        let served_text = r["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
        let steer =
            json(&["steer", "-m", MODEL, "--chat", "--vector", sv.to_str().unwrap(), "--beta", &beta.to_string(), "--max-tokens", "24", "--json", prompt]);
        assert_eq!(served_text, steer["text"].as_str().unwrap().trim_end_matches("<|im_end|>"), "beta {beta}");
    }
    drop(served);

    // A vector of another model (here: another hidden size) stops the server at start-up.
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf/tiny-llama");
    let err = fails(&["serve", "-m", tiny.to_str().unwrap(), "--vector", &format!("optimism={}", sv.display()), "--port", "0"]);
    assert!(err.contains("vector `optimism`") && err.contains("hidden size"), "{err}");
}
