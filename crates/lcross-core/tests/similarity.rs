//! The alignment metrics against numpy's (scripts/reference/make_similarity_fixture.py: the
//! matrix form of Huh et al.'s reference code) on two related representations of 30 texts.

use lcross_core::maps::Rows;
use lcross_core::similarity::{alignment, SimilarityOptions};
use serde_json::Value;

fn rows(v: &Value) -> Rows {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
    Rows { n: rows.len(), d: rows[0].len(), data: rows.concat() }
}

#[test]
fn metrics_equal_numpys() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/similarity.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let opts = SimilarityOptions { topk: fx["topk"].as_u64().unwrap() as usize, cca_dim: fx["cca_dim"].as_u64().unwrap() as usize };
    let got = alignment(&rows(&fx["a"]), &rows(&fx["b"]), &opts).unwrap();
    let want = &fx["expected"];
    for (name, value) in [("mutual_knn", got.mutual_knn), ("cka", got.cka), ("unbiased_cka", got.unbiased_cka), ("cknna", got.cknna), ("svcca", got.svcca)] {
        let w = want[name].as_f64().unwrap();
        assert!((value - w).abs() <= 1e-9, "{name}: lcross {value} vs numpy {w}");
    }
    assert_eq!(got.n, 30);
    assert!(got.cka > 0.5 && got.cka < 1.0, "a noisy linear image is aligned but not identical: {got:?}");
}
