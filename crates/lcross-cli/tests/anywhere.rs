//! lcross outside its source tree: the built binary copied into an empty directory, run
//! with a fresh HOME (as after `cargo install` on a new machine), finds no build-tree
//! path, fetches the data into its own cache and runs on it; a missing dataset names the
//! fetch command. Also the hook-point flags of `hidden`, `extract` and `steer`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{json, lcross, skip, test_data_dir, tmp};
use serde_json::Value;

/// Run the copied binary in `cwd` with only PATH, HOME and `extra` set.
fn run_isolated(bin: &Path, cwd: &Path, home: &Path, extra: &[(&str, &Path)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("HOME", home).current_dir(cwd).args(args);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_binary_runs_outside_its_source_tree() {
    let d = tmp("anywhere");
    let (bin_dir, home, work) = (d.join("bin"), d.join("home"), d.join("work"));
    for p in [&bin_dir, &home, &work] {
        std::fs::create_dir_all(p).unwrap();
    }
    let bin = bin_dir.join("lcross");
    std::fs::copy(env!("CARGO_BIN_EXE_lcross"), &bin).unwrap();

    // No path of the tree it was built in is baked into it.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap().canonicalize().unwrap();
    let bytes = std::fs::read(&bin).unwrap();
    let needle = workspace.to_string_lossy().into_owned();
    assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "the binary contains the build tree's path {needle}");

    // No data yet: a dataset is an error that names the fetch command.
    let (ok, _, err) = run_isolated(&bin, &work, &home, &[], &["data", "list", "--json"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run_isolated(&bin, &work, &home, &[], &["extract", "-m", "/nonexistent.gguf", "-d", "caa:refusal", "-l", "1", "-o", "x.safetensors"]);
    assert!(!ok);
    assert!(err.contains("lcross data fetch") && err.contains(".cache/lcross/data"), "{err}");

    // Fetch from the local mirror into ~/.cache/lcross/data of the fresh HOME.
    let mirror = test_data_dir();
    let (ok, out, err) = run_isolated(&bin, &work, &home, &[], &["data", "fetch", "--from", mirror.to_str().unwrap(), "--json"]);
    assert!(ok, "data fetch --from failed: {err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report.as_array().unwrap().len(), lcross_core::data::DATA_FILES.len());
    let (ok, out, _) = run_isolated(&bin, &work, &home, &[], &["data", "list", "--json"]);
    assert!(ok);
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert!(rows.as_array().unwrap().iter().all(|r| r["state"] == "verified"), "{rows}");
    assert!(home.join(".cache/lcross/data/caa/refusal/generate_dataset.json").is_file());

    if skip() {
        return;
    }
    // A real run on the fetched data: the models directory is the user's.
    let models = lcross_model::registry::models_dir();
    let sv = work.join("sv.safetensors");
    let args = ["extract", "-m", "smollm2-135m-instruct", "-d", "caa:refusal", "-l", "3", "--limit", "4", "--no-cache", "-o", sv.to_str().unwrap(), "--json"];
    let (ok, _, err) = run_isolated(&bin, &work, &home, &[("LCROSS_MODELS", &models)], &args);
    assert!(ok, "extract on the fetched data failed: {err}");
    assert!(sv.is_file());
    let (ok, out, err) = run_isolated(&bin, &work, &home, &[("LCROSS_MODELS", &models)], &["tokenize", "-m", "smollm2-135m-instruct", "hello", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"ids\""), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_missing_dataset_names_the_fetch_command() {
    let empty = tmp("no-data");
    for concept in ["harmfulness", "happiness", "caa:sycophancy"] {
        let (ok, _, err) = lcross(&["extract", "-d", concept, "--data-dir", empty.to_str().unwrap(), "-l", "1", "-o", "never.safetensors"]);
        assert!(!ok, "{concept}");
        assert!(err.contains("lcross data fetch") && err.contains(empty.to_str().unwrap()), "{concept}: {err}");
    }
}

#[test]
fn hook_points_and_interventions_from_the_command_line() {
    if skip() {
        return;
    }
    let d = tmp("hooks");
    let sv = d.join("attn.safetensors");
    let svp = sv.to_str().unwrap();
    json(&["extract", "-d", "builtin:optimism", "-l", "10", "--limit", "8", "--hook", "attn_out", "-o", svp, "--json"]);
    let shown = json(&["vector", "show", svp, "--json"]);
    assert_eq!(shown["metadata"]["hook"], "attn_out", "the vector records where it was read");
    let u: Vec<f64> = {
        let v: Vec<f64> = shown["layers"]["10"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect()
    };
    let proj = |h: &Value| -> f64 { h["hidden"].as_array().unwrap().iter().zip(&u).map(|(x, u)| x.as_f64().unwrap() * u).sum() };
    // Read at the vector's own point: plain, then with the direction ablated (projection 0).
    let plain = json(&["hidden", "-l", "10", "--hook", "attn_out", "The weather today", "--json"]);
    assert_eq!(plain["hook"], "attn_out");
    let ablated = json(&["hidden", "-l", "10", "--hook", "attn_out", "--vector", svp, "--intervention", "ablate", "The weather today", "--json"]);
    assert!(proj(&plain).abs() > 1e-3, "no projection to remove: {}", proj(&plain));
    assert!(proj(&ablated).abs() < 1e-3, "projection after ablate: {}", proj(&ablated));
    let capped = json(&["hidden", "-l", "10", "--hook", "attn_out", "--vector", svp, "--intervention", "cap", "--beta", "-1", "The weather today", "--json"]);
    assert!(proj(&capped) <= -1.0 + 1e-3, "projection after cap at -1: {}", proj(&capped));
    // resid_post is the default and is not printed.
    let post = json(&["hidden", "-l", "10", "The weather today", "--json"]);
    assert!(post.get("hook").is_none());
    // steer at the vector's point and with an explicit other one; a bad name is a clear error.
    let a = json(&["steer", "--vector", svp, "--beta", "4", "--max-tokens", "4", "Hello", "--json"]);
    let b = json(&["steer", "--vector", svp, "--beta", "4", "--hook", "mlp_out", "--max-tokens", "4", "Hello", "--json"]);
    assert!(a["ids"].is_array() && b["ids"].is_array());
    let (ok, _, err) = lcross(&["steer", "--vector", svp, "--beta", "4", "--hook", "resid_mid", "Hello"]);
    assert!(!ok && err.contains("resid_mid") && err.contains("resid_pre, attn_out, mlp_out or resid_post"), "{err}");
    let (ok, _, err) = lcross(&["steer", "--vector", svp, "--beta", "4", "--intervention", "scale", "Hello"]);
    assert!(!ok && err.contains("add, ablate or cap"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// `--model ORG/NAME` finds a model in the Hugging Face hub cache given by `$HF_HOME`
/// (copied from a tiny checkpoint in the `models--ORG--NAME/snapshots/<commit>` layout),
/// and names where it looked when the model is not there.
#[test]
fn models_are_found_in_the_hugging_face_cache() {
    let d = tmp("hf-home");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let repo = d.join("hub").join("models--lcross-tests--tiny-qwen3");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf/tiny-qwen3");
    for e in std::fs::read_dir(&fixture).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, snapshot.join(p.file_name().unwrap())).unwrap();
    }
    let run = |model: &str| {
        common::lcross_command().env("HF_HOME", &d).env_remove("HF_HUB_CACHE").args(["tokenize", "-m", model, "Steering vectors", "--json"]).output().unwrap()
    };
    let from_cache = run("lcross-tests/tiny-qwen3");
    assert!(from_cache.status.success(), "{}", String::from_utf8_lossy(&from_cache.stderr));
    let from_dir = run(fixture.to_str().unwrap());
    let (a, b): (Value, Value) = (serde_json::from_slice(&from_cache.stdout).unwrap(), serde_json::from_slice(&from_dir.stdout).unwrap());
    assert_eq!(a["ids"], b["ids"]);
    let missing = run("lcross-tests/absent");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && err.contains("models--lcross-tests--absent") && err.contains("never downloads"), "{err}");
}
