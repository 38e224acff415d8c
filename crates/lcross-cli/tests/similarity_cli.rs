//! `lcross similarity` on the tiny checkpoints: a model against itself is aligned on every
//! metric, two different random models much less, and bad options are clear errors.

mod common;

use common::{fails, json};

fn tiny(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf").join(name).display().to_string()
}

#[test]
fn similarity_prints_every_metric() {
    let (llama, qwen) = (tiny("tiny-llama"), tiny("tiny-qwen2"));
    let base = ["--json", "similarity", "--corpus", "builtin:optimism", "--limit", "16", "--cca-dim", "4", "--no-cache"];
    let same = json(&[&base[..], &["--source", &llama, "--source-layer", "1", "--target", &llama, "--target-layer", "1", "--topk", "5"]].concat());
    assert_eq!(same["n"], 32, "both texts of 16 pairs: {same}");
    for metric in ["mutual_knn", "cka", "unbiased_cka", "cknna", "svcca"] {
        let v = same[metric].as_f64().unwrap();
        assert!((v - 1.0).abs() < 1e-6, "{metric} of a model with itself: {v}");
    }
    let other = json(&[&base[..], &["--source", &llama, "--source-layer", "1", "--target", &qwen, "--target-layer", "1", "--topk", "5"]].concat());
    let cka = other["cka"].as_f64().unwrap();
    assert!(cka.is_finite() && cka < 0.999, "two random models: {other}");
    let err = fails(&[&base[..], &["--source", &llama, "--source-layer", "1", "--target", &qwen, "--target-layer", "1", "--topk", "40"]].concat());
    assert!(err.contains("topk") && err.contains("2 <= topk < n = 32"), "{err}");
}
