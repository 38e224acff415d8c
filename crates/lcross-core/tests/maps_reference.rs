//! Linear maps against numpy (`scripts/reference/make_map_fixtures.py`): pinv OLS,
//! ridge and Procrustes on synthetic overdetermined data, and OLS + transfer on real
//! paired states of SmolLM2 (layer 12) and Qwen2.5-Coder-0.5B (layer 10) from
//! transformers, which lcross's own states must also reproduce.

use std::path::PathBuf;

use faer::Mat;
use lcross_core::activations::{ExtractOptions, Extractor};
use lcross_core::dataset::load_caa_pairs;
use lcross_core::maps::{apply, fit, Estimator, Rows};
use lcross_core::steering::cosine;
use lcross_core::texts::pair_ids;
use lcross_model::{registry, LoadOptions, Model};
use serde_json::Value;

fn fixture() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/maps-reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

fn matrix64(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

fn max_diff(t: &Mat<f64>, want: &[Vec<f64>]) -> f64 {
    let mut m = 0.0f64;
    for (i, row) in want.iter().enumerate() {
        for (j, w) in row.iter().enumerate() {
            m = m.max((t[(i, j)] - w).abs());
        }
    }
    m
}

#[test]
fn estimators_match_numpy_on_overdetermined_data() {
    let fx = fixture();
    let s = &fx["synthetic"];
    let x = Rows::from_f32(&matrix(&s["X"])).unwrap();
    let y = Rows::from_f32(&matrix(&s["Y"])).unwrap();
    // The fixture's inputs are rounded to 1e-7 and stored through f32 here, so allow 1e-4.
    for (est, key) in [(Estimator::Ols, "ols"), (Estimator::Ridge { lambda: Some(1.0) }, "ridge_lambda_1"), (Estimator::Procrustes, "procrustes")] {
        let (t, diag) = fit(&x, &y, &est).unwrap();
        let d = max_diff(&t, &matrix64(&s[key]));
        eprintln!("{key}: max abs difference to numpy {d:.2e}");
        assert!(d < 1e-4, "{key}: differs from numpy by {d}");
        assert!(!diag.interpolating);
        assert!(diag.heldout_r2.is_some());
    }
}

#[test]
fn ols_and_transfer_match_numpy_on_real_states() {
    let fx = fixture();
    let r = &fx["real"];
    let xs = matrix(&r["X"]);
    let ys = matrix(&r["Y"]);
    let (t, diag) = fit(&Rows::from_f32(&xs).unwrap(), &Rows::from_f32(&ys).unwrap(), &Estimator::Ols).unwrap();
    assert!(diag.interpolating, "16 texts < 576 dims must be flagged as interpolating");
    assert!(diag.train_r2 > 0.9999);
    let row0: Vec<f32> = (0..t.ncols()).map(|j| t[(0, j)] as f32).collect();
    let want_row0: Vec<f32> = r["T_row0"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let c = cosine(&row0, &want_row0);
    assert!(c >= 0.999, "T row 0 cosine to numpy {c}");
    let fro = t.norm_l2();
    let want_fro = r["T_frobenius"].as_f64().unwrap();
    assert!((fro - want_fro).abs() / want_fro < 1e-3, "Frobenius {fro} vs numpy {want_fro}");
    let n = xs[0].len();
    let sv: Vec<f32> = (0..n).map(|j| (0..8).map(|p| xs[2 * p][j] - xs[2 * p + 1][j]).sum::<f32>() / 8.0).collect();
    let moved = apply(&t, &sv).unwrap();
    let want: Vec<f32> = r["transferred_mean_diff"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let c = cosine(&moved, &want);
    eprintln!("transferred vector cosine to numpy {c:.6}");
    assert!(c >= 0.999, "transferred vector cosine {c}");
}

#[test]
fn lcross_states_are_the_reference_paired_states() {
    if std::env::var_os("LCROSS_SKIP_MODEL_TESTS").is_some() {
        eprintln!("SKIPPED: LCROSS_SKIP_MODEL_TESTS is set, real-model test not run");
        return;
    }
    let fx = fixture();
    let r = &fx["real"];
    let data = test_data_dir();
    let ds = load_caa_pairs(&data.join("caa/refusal/generate_dataset.json")).unwrap().limit(Some(8));
    for (model_key, layer_key, rows_key) in [("source", "source_layer", "X"), ("target", "target_layer", "Y")] {
        let id = r[model_key].as_str().unwrap();
        assert!(registry::known_path(&registry::models_dir(), id).is_file(), "run scripts/fetch-models {id}");
        let model = Model::load(id, &LoadOptions::default()).unwrap();
        let layer = r[layer_key].as_u64().unwrap() as usize;
        let ids: Vec<_> = ds.pairs.iter().map(|p| pair_ids(&model, p).unwrap()).collect();
        let states = Extractor::new(&model, &[layer], None, ExtractOptions::default()).unwrap().pairs(&ids, "test").unwrap();
        let want = matrix(&r[rows_key]);
        for (k, (p, n)) in states.iter().enumerate() {
            for (which, got) in [(2 * k, &p[&layer]), (2 * k + 1, &n[&layer])] {
                let c = cosine(got, &want[which]);
                assert!(c >= 0.999, "{id} text {which}: cosine {c}");
            }
        }
    }
}

/// The data the tests read: `$LCROSS_DATA` when set, else the local mirror `../shared/data`.
fn test_data_dir() -> std::path::PathBuf {
    match std::env::var_os("LCROSS_DATA").filter(|d| !d.is_empty()) {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}
