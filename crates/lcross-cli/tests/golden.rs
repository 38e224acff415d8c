//! Golden outputs: the JSON of the documented commands on the tiny Hugging Face
//! checkpoints (random weights, made by transformers: crates/lcross-model/tests/fixtures/hf),
//! compared with the files under tests/golden/. They pin what every command prints while
//! the code under it moves into the libraries. Timings and paths are left out; numbers
//! compare within 1e-4 relative (batch composition moves f32 results at ~1e-6), the rest
//! exactly. `LCROSS_BLESS=1 cargo test --release -p lcross-cli --test golden` rewrites
//! the files (review the diff: a change there is a change users see);
//! `LCROSS_GOLDEN_BIN=path/to/lcross` runs another build (an older commit's) against them.

mod common;

use std::path::{Path, PathBuf};

use common::{lcross_command, tmp};
use serde_json::Value;

/// Keys whose values depend on the machine or the clock: timings, and `sha256`, the hash
/// of a map file, whose metadata holds its fitting time.
const VOLATILE: &[&str] =
    &["seconds", "pairs_per_second", "tokens_per_second", "fit_seconds", "load_seconds", "diagnostics_seconds", "lcross_version", "sha256"];

fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf").join(name)
}

/// Drop the volatile keys and write `needle` (a temporary or fixture path) as `label`.
fn normalise(v: &mut Value, needle: &str, label: &str) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !VOLATILE.contains(&k.as_str()));
            for x in m.values_mut() {
                normalise(x, needle, label);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalise(x, needle, label)),
        Value::String(s) if s.contains(needle) => *s = s.replace(needle, label),
        _ => {}
    }
}

fn same(a: &Value, b: &Value, at: &str, diffs: &mut Vec<String>) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() > 1e-6 + 1e-4 * x.abs().max(y.abs()) {
                diffs.push(format!("{at}: {x} != {y}"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let (kx, ky): (Vec<_>, Vec<_>) = (x.keys().collect(), y.keys().collect());
            if kx != ky {
                diffs.push(format!("{at}: keys {kx:?} != {ky:?}"));
                return;
            }
            for k in x.keys() {
                same(&x[k], &y[k], &format!("{at}.{k}"), diffs);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                diffs.push(format!("{at}: {} items != {}", x.len(), y.len()));
                return;
            }
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same(p, q, &format!("{at}[{i}]"), diffs);
            }
        }
        _ if a != b => diffs.push(format!("{at}: {a} != {b}")),
        _ => {}
    }
}

#[test]
fn commands_print_what_they_printed() {
    let d = tmp("golden");
    let dir = d.to_str().unwrap().to_string();
    let (llama, qwen) = (tiny("tiny-llama"), tiny("tiny-qwen2"));
    let (llama, qwen) = (llama.to_str().unwrap(), qwen.to_str().unwrap());
    std::fs::write(d.join("prompts.txt"), "Hello there\nThe sea is\n").unwrap();
    let f = |name: &str| format!("{dir}/{name}");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("tokenize", vec!["tokenize".into(), "-m".into(), llama.into(), "Hello world, 2025!".into()]),
        ("hidden", vec!["hidden".into(), "-m".into(), llama.into(), "-l".into(), "1".into(), "Hello world".into()]),
        ("generate", vec!["generate".into(), "-m".into(), llama.into(), "--max-tokens".into(), "8".into(), "Hello".into()]),
        ("generate-prompts", vec!["generate".into(), "-m".into(), llama.into(), "--max-tokens".into(), "6".into(), "--prompts".into(), f("prompts.txt")]),
        (
            "extract",
            ["extract", "-m", llama, "-d", "builtin:optimism", "-l", "1,2", "--limit", "8", "--no-cache", "-o", &f("sv.safetensors")]
                .map(String::from)
                .to_vec(),
        ),
        ("vector-show", ["vector", "show", &f("sv.safetensors")].map(String::from).to_vec()),
        (
            "steer-rows",
            ["steer", "-m", llama, "--vector", &f("sv.safetensors"), "--betas=-2,0,2", "--prompts", &f("prompts.txt"), "--max-tokens", "6"]
                .map(String::from)
                .to_vec(),
        ),
        ("steer", ["steer", "-m", llama, "--vector", &f("sv.safetensors"), "--beta", "3", "--max-tokens", "6", "Hi"].map(String::from).to_vec()),
        (
            "eval-ab",
            ["eval", "ab", "-m", llama, "-d", "builtin:optimism", "--vector", &f("sv.safetensors"), "--betas=-2,0,2", "--limit", "6", "--no-cache"]
                .map(String::from)
                .to_vec(),
        ),
        (
            "align",
            [
                "align",
                "--source",
                llama,
                "--source-layer",
                "1",
                "--target",
                qwen,
                "--target-layer",
                "1",
                "--corpus",
                "builtin:optimism",
                "--limit",
                "8",
                "--no-cache",
                "-o",
                &f("T.safetensors"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        ("transfer", ["transfer", "--vector", &f("sv.safetensors"), "--map", &f("T.safetensors"), "-o", &f("moved.safetensors")].map(String::from).to_vec()),
    ];
    let bless = std::env::var_os("LCROSS_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, args) in &cases {
        let mut cmd = match std::env::var_os("LCROSS_GOLDEN_BIN") {
            // Another build's binary (e.g. of an older commit) against the same files.
            Some(bin) => {
                let mut c = std::process::Command::new(bin);
                c.env("LCROSS_DATA", common::test_data_dir());
                c
            }
            None => lcross_command(),
        };
        let out = cmd.env("LCROSS_CACHE", d.join("cache")).args(args).arg("--json").output().unwrap();
        assert!(out.status.success(), "lcross {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut got: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: not JSON ({e})"));
        normalise(&mut got, &dir, "{dir}");
        normalise(&mut got, llama, "{tiny-llama}");
        normalise(&mut got, qwen, "{tiny-qwen2}");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.json"));
        if bless {
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap();
        let mut diffs = Vec::new();
        same(&got, &want, name, &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{name} ({}):\n  {}", path.display(), diffs.into_iter().take(10).collect::<Vec<_>>().join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "outputs moved from the golden files:\n{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&d);
}
