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

/// `--source-layers all --target-layers all`: every layer pair, a CSV, a JSON and a
/// heatmap per metric; the diagonal of a model with itself is 1 on every metric.
#[test]
fn layer_grids_write_a_heatmap_per_metric() {
    let llama = tiny("tiny-llama");
    let out = std::env::temp_dir().join(format!("lcross-sim-grid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let grid = json(&[
        "--json",
        "similarity",
        "--corpus",
        "builtin:optimism",
        "--limit",
        "12",
        "--cca-dim",
        "4",
        "--topk",
        "5",
        "--no-cache",
        "--source",
        &llama,
        "--source-layers",
        "all",
        "--target",
        &llama,
        "--target-layers",
        "0,2",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(grid["source_layers"], serde_json::json!([0, 1, 2]), "{grid}");
    let cells = grid["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    for c in cells {
        if c["source_layer"] == c["target_layer"] {
            for m in ["mutual_knn", "cka", "unbiased_cka", "cknna", "svcca"] {
                assert!((c[m].as_f64().unwrap() - 1.0).abs() < 1e-6, "{c}");
            }
        }
    }
    let csv = std::fs::read_to_string(out.join("similarity.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(csv.starts_with("source_layer,target_layer,mutual_knn,cka,unbiased_cka,cknna,svcca,n"));
    for m in ["mutual_knn", "cka", "unbiased_cka", "cknna", "svcca"] {
        let svg = std::fs::read_to_string(out.join(format!("similarity-{m}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.matches("<rect").count() >= 6, "{m}");
    }
    let err =
        fails(&["similarity", "--corpus", "builtin:optimism", "--source", &llama, "--source-layers", "0-9", "--target", &llama, "--target-layers", "all"]);
    assert!(err.contains("layer 3 is out of range"), "{err}");
}

/// `align --estimator embedding` needs no corpus: a model mapped onto itself through its
/// token embeddings gets the identity (its vocabulary has more rows than dimensions), so
/// its own vector transfers to itself; other estimators still ask for a corpus.
#[test]
fn embedding_maps_fit_on_the_shared_vocabulary() {
    let llama = tiny("tiny-llama");
    let d = std::env::temp_dir().join(format!("lcross-emb-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let v = d.join("v.safetensors");
    json(&["--json", "extract", "-m", &llama, "-d", "builtin:optimism", "--limit", "8", "-l", "1", "--no-cache", "-o", v.to_str().unwrap()]);
    let m = d.join("m.safetensors");
    let fit = json(&[
        "--json",
        "align",
        "--source",
        &llama,
        "--source-layer",
        "1",
        "--target",
        &llama,
        "--target-layer",
        "1",
        "--estimator",
        "embedding",
        "--vector",
        v.to_str().unwrap(),
        "--native",
        v.to_str().unwrap(),
        "-o",
        m.to_str().unwrap(),
    ]);
    let diag = &fit["diagnostics"];
    assert!(diag["n"].as_u64().unwrap() > 64 && diag["train_r2"].as_f64().unwrap() > 1.0 - 1e-9, "{fit}");
    assert!(fit["corpus"].as_str().unwrap().contains("vocabulary strings shared"), "{fit}");
    assert!((fit["native_cosine"].as_f64().unwrap() - 1.0).abs() < 1e-5, "{fit}");
    let err = fails(&["align", "--source", &llama, "--source-layer", "1", "--target", &llama, "--target-layer", "1", "-o", m.to_str().unwrap()]);
    assert!(err.contains("--corpus") && err.contains("embedding"), "{err}");
}

/// `align --estimator mlp:H`: the autoencoder map is saved with its weights and anchors;
/// `transfer` through the saved file gives what the fit gave (the native cosine), and the
/// same command fits the same map again (seeded).
#[test]
fn mlp_maps_save_and_transfer_deterministically() {
    let (llama, qwen) = (tiny("tiny-llama"), tiny("tiny-qwen2"));
    let d = std::env::temp_dir().join(format!("lcross-mlp-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let (v, n) = (d.join("v.safetensors"), d.join("n.safetensors"));
    json(&["--json", "extract", "-m", &llama, "-d", "builtin:optimism", "--limit", "8", "-l", "1", "--no-cache", "-o", v.to_str().unwrap()]);
    json(&["--json", "extract", "-m", &qwen, "-d", "builtin:optimism", "--limit", "8", "-l", "1", "--no-cache", "-o", n.to_str().unwrap()]);
    let fit = |out: &std::path::Path| {
        json(&[
            "--json",
            "align",
            "--source",
            &llama,
            "--source-layer",
            "1",
            "--target",
            &qwen,
            "--target-layer",
            "1",
            "--corpus",
            "builtin:optimism",
            "--limit",
            "24",
            "--no-cache",
            "--estimator",
            "mlp:32",
            "--vector",
            v.to_str().unwrap(),
            "--native",
            n.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let (m1, m2) = (d.join("m1.safetensors"), d.join("m2.safetensors"));
    let (a, b) = (fit(&m1), fit(&m2));
    assert_eq!(a["estimator"], serde_json::json!({"name": "mlp", "hidden": 32}), "{a}");
    let r2 = a["diagnostics"]["train_r2"].as_f64().unwrap();
    assert!(r2 > 0.5 && a["diagnostics"]["heldout_r2"].as_f64().is_some(), "{a}");
    let (l1, l2) = (lcross_core::maps::LinearMap::load(&m1).unwrap(), lcross_core::maps::LinearMap::load(&m2).unwrap());
    let (p1, p2) = (l1.mlp.unwrap(), l2.mlp.unwrap());
    assert!(p1.w1 == p2.w1 && p1.w2 == p2.w2 && p1.anchors == p2.anchors, "seeded: the same map twice");
    assert_eq!(a["native_cosine"], b["native_cosine"]);
    let moved = d.join("moved.safetensors");
    json(&["--json", "transfer", "--vector", v.to_str().unwrap(), "--map", m1.to_str().unwrap(), "-o", moved.to_str().unwrap()]);
    let sv = lcross_core::steering::SteeringVector::load(&moved).unwrap();
    let native = lcross_core::steering::SteeringVector::load(&n).unwrap();
    let c = lcross_core::steering::cosine(&sv.layers[&1], &native.layers[&1]);
    assert!((c - a["native_cosine"].as_f64().unwrap()).abs() < 1e-5, "transfer through the saved map {c} vs at fit time {a}");
}
