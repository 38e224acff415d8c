//! Steering vectors on a real model (SmolLM2-135M) and real data (CAA refusal),
//! against the transformers + numpy reference (`scripts/reference/make_sv_fixtures.py`).

use std::path::PathBuf;

use lcross_core::activations::{ExtractOptions, Extractor};
use lcross_core::dataset::{self, load_caa_pairs};
use lcross_core::eval::{evaluate_ab, evaluate_ab_conditions, Steering};
use lcross_core::steering::{cosine, extract, ExtractSpec, Method, SteeringVector, VectorMetadata};
use lcross_core::store::Store;
use lcross_core::texts::pair_ids;
use lcross_model::{registry, LoadOptions, Model, Positions};

const MODEL: &str = "smollm2-135m-instruct";

fn model() -> Option<Model> {
    if std::env::var_os("LCROSS_SKIP_MODEL_TESTS").is_some() {
        eprintln!("SKIPPED: LCROSS_SKIP_MODEL_TESTS is set, real-model test not run");
        return None;
    }
    let path = registry::known_path(&registry::models_dir(), MODEL);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models", path.display());
    Some(Model::load(MODEL, &LoadOptions::default()).unwrap())
}

fn data() -> PathBuf {
    let d = test_data_dir();
    assert!(d.join("caa").is_dir(), "{} is missing: the tests read ../shared/data", d.display());
    d
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lcross-core-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn states(
    model: &Model,
    n: usize,
    opts: ExtractOptions,
    cache: Option<Store>,
) -> Vec<(lcross_core::activations::LayerStates, lcross_core::activations::LayerStates)> {
    let ds = load_caa_pairs(&data().join("caa/refusal/generate_dataset.json")).unwrap().limit(Some(n));
    let ids: Vec<_> = ds.pairs.iter().map(|p| pair_ids(model, p).unwrap()).collect();
    Extractor::new(model, &[12], cache, opts).unwrap().pairs(&ids, "test").unwrap()
}

#[test]
fn mean_diff_and_pca_match_the_transformers_reference() {
    let Some(model) = model() else { return };
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sv-smollm2-refusal-l12.json")).unwrap())
            .unwrap();
    let n = fx["n_pairs"].as_u64().unwrap() as usize;
    let ds = load_caa_pairs(&data().join("caa/refusal/generate_dataset.json")).unwrap().limit(Some(n));
    let (first_pos, _) = pair_ids(&model, &ds.pairs[0]).unwrap();
    let want_ids: Vec<u32> = fx["first_positive_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    assert_eq!(first_pos, want_ids, "A/B text convention differs from the reference");
    let st = states(&model, n, ExtractOptions::default(), None);
    let vec_of = |k: &str| -> Vec<f32> { fx[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect() };
    for (method, key) in [(Method::MeanDiff, "mean_diff"), (Method::Pca, "pca")] {
        let spec = ExtractSpec { method, normalize: false, balance_letters: false };
        let (v, _) = extract(&st, &[12], None, &spec).unwrap();
        let c = cosine(&v[&12], &vec_of(key));
        eprintln!("{key}: cosine to reference {c:.6}");
        assert!(c >= 0.999, "{key}: cosine {c} < 0.999");
    }
}

#[test]
fn prefix_sharing_and_early_exit_do_not_change_states() {
    let Some(model) = model() else { return };
    let fast = states(&model, 6, ExtractOptions::default(), None);
    let slow = states(&model, 6, ExtractOptions { prefix_sharing: false, early_exit: false, batch_size: 1, ..ExtractOptions::default() }, None);
    for ((a, b), (c, d)) in fast.iter().zip(&slow) {
        for (x, y) in [(a, c), (b, d)] {
            let diff = x[&12].iter().zip(&y[&12]).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            // Batched with prefix sharing vs one text at a time: float rounding only.
            assert!(diff < 1e-4, "prefix sharing / batching changed a state by {diff}");
        }
    }
}

#[test]
fn stored_activations_resume_to_identical_states() {
    let Some(model) = model() else { return };
    let dir = tmp("store");
    let opts = ExtractOptions { batch_size: 4, ..ExtractOptions::default() };
    let ds = load_caa_pairs(&data().join("caa/refusal/generate_dataset.json")).unwrap().limit(Some(6));
    let ids: Vec<_> = ds.pairs.iter().map(|p| pair_ids(&model, p).unwrap()).collect();
    let store = |name: &str| Some(Store::open(&dir.join(name)).unwrap());
    // A run interrupted after its first batch, then resumed, against one uninterrupted run.
    // Batches are chunks of the pairs sorted by their longer text: the first batch of the
    // whole run is its 4 shortest pairs.
    let order = lcross_core::activations::length_order(ids.iter().map(|(p, n)| p.len().max(n.len())));
    let first: Vec<_> = order[..4].iter().map(|&i| ids[i].clone()).collect();
    Extractor::new(&model, &[12], store("a.sqlite"), opts).unwrap().pairs(&first, "first").unwrap();
    assert_eq!(Store::open(&dir.join("a.sqlite")).unwrap().count("activation").unwrap(), 8, "4 pairs x 2 texts x 1 layer");
    let resumed = Extractor::new(&model, &[12], store("a.sqlite"), opts).unwrap().pairs(&ids, "resumed").unwrap();
    let whole = Extractor::new(&model, &[12], store("b.sqlite"), opts).unwrap().pairs(&ids, "whole").unwrap();
    let again = Extractor::new(&model, &[12], store("b.sqlite"), opts).unwrap().pairs(&ids, "again").unwrap();
    for (i, (((a, b), (c, d)), (e, f))) in resumed.iter().zip(&whole).zip(&again).enumerate() {
        assert_eq!(a[&12], c[&12], "pair {i}: resumed != uninterrupted");
        assert_eq!(b[&12], d[&12], "pair {i}: resumed != uninterrupted");
        assert_eq!((c, d), (e, f), "pair {i}: read back != computed");
    }
    assert_eq!(Store::open(&dir.join("b.sqlite")).unwrap().count("activation").unwrap(), 12);
    // Other weights are another key: a quantized model does not read f32 states.
    let q = Model::load(MODEL, &LoadOptions { weight_mode: lcross_model::WeightMode::Quantized, ..LoadOptions::default() }).unwrap();
    Extractor::new(&q, &[12], store("b.sqlite"), opts).unwrap().pairs(&ids[..1], "quantized").unwrap();
    assert_eq!(Store::open(&dir.join("b.sqlite")).unwrap().count("activation").unwrap(), 14, "quantized states are stored apart");
    let _ = std::fs::remove_dir_all(&dir);
}

fn sample_vector(model: &Model) -> SteeringVector {
    let st = states(model, 8, ExtractOptions::default(), None);
    let (layers, stab) = extract(&st, &[12], None, &ExtractSpec { method: Method::MeanDiff, normalize: false, balance_letters: false }).unwrap();
    SteeringVector {
        metadata: VectorMetadata {
            lcross_version: lcross_core::VERSION.into(),
            model_id: model.id().into(),
            model_sha256: model.file_sha256().unwrap(),
            hidden_size: 576,
            layers: vec![12],
            concept: "refusal".into(),
            dataset: "test".into(),
            dataset_sha256: "0".repeat(64),
            method: Method::MeanDiff,
            n_pairs: 8,
            normalized: false,
            letter_balance: None,
            balanced_letters: false,
            half_split_cosine: stab,
            hook: Default::default(),
            calibration: None,
            provenance: None,
        },
        layers,
    }
}

#[test]
fn vector_files_round_trip_and_refuse_the_wrong_model() {
    let Some(model) = model() else { return };
    let sv = sample_vector(&model);
    let dir = tmp("vec");
    let p = dir.join("v.safetensors");
    sv.save(&p).unwrap();
    let back = SteeringVector::load(&p).unwrap();
    assert_eq!(back.layers, sv.layers);
    back.check_model(&model, false).unwrap();
    // Another model id: refused, unless forced.
    let mut other = back.clone();
    other.metadata.model_id = "qwen2.5-coder-0.5b-instruct".into();
    let e = other.check_model(&model, false).unwrap_err().to_string();
    assert!(e.contains("--force"), "{e}");
    other.check_model(&model, true).unwrap();
    // Wrong size: refused even with force.
    let mut wrong = back.clone();
    wrong.metadata.hidden_size = 896;
    wrong.layers.insert(12, vec![0.0; 896]);
    let e = wrong.check_model(&model, true).unwrap_err().to_string();
    assert!(e.contains("hidden size 896"), "{e}");
    // Corrupt files name the file.
    std::fs::write(&p, b"garbage").unwrap();
    let e = SteeringVector::load(&p).unwrap_err().to_string();
    assert!(e.contains("v.safetensors"), "{e}");
    // NaN in a vector is refused at save.
    let mut nan = sv.clone();
    nan.layers.get_mut(&12).unwrap()[0] = f32::NAN;
    assert!(nan.save(&dir.join("nan.safetensors")).is_err());
    assert!(!dir.join("nan.safetensors").exists(), "no partial artifact");
}

#[test]
fn ab_evaluation_moves_with_beta_on_the_builtin_concept() {
    let Some(model) = model() else { return };
    let items = dataset::builtin_test("optimism").unwrap();
    let sv = sample_vector(&model);
    let base = evaluate_ab(&model, &items, None).unwrap();
    assert_eq!(base.n, items.len());
    assert!(base.per_item.iter().all(|p| (0.0..=1.0).contains(p)));
    let steered = evaluate_ab(&model, &items, Some(&Steering::add(&sv, 4.0, Positions::All))).unwrap();
    let moved: f64 = base.per_item.iter().zip(&steered.per_item).map(|(a, b)| (a - b).abs()).sum();
    assert!(moved > 1e-3, "steering with beta 4 changed nothing");
    // beta 0 runs the intervention (adding exact zeros at layer 12): same numbers.
    let zero = evaluate_ab(&model, &items, Some(&Steering::add(&sv, 0.0, Positions::All))).unwrap();
    assert_eq!(zero.per_item, base.per_item, "beta 0 must equal no steering");
    // Conditions evaluated together (layers below 12 shared, forked per condition) equal
    // each condition evaluated alone.
    let conditions = [None, Some(Steering::add(&sv, 4.0, Positions::All)), Some(Steering::add(&sv, -4.0, Positions::All))];
    let together = evaluate_ab_conditions(&model, &items, &conditions).unwrap();
    for (c, t) in conditions.iter().zip(&together) {
        let alone = evaluate_ab(&model, &items, c.as_ref()).unwrap();
        let worst = alone.per_item.iter().zip(&t.per_item).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "beta {}: together vs alone differ by {worst}", alone.beta);
    }
    assert!((together[1].mean_prob_matching - together[2].mean_prob_matching).abs() > 1e-3, "+4 and -4 gave the same metric");
}

/// The data the tests read: `$LCROSS_DATA` when set, else the local mirror `../shared/data`.
fn test_data_dir() -> std::path::PathBuf {
    match std::env::var_os("LCROSS_DATA").filter(|d| !d.is_empty()) {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}
