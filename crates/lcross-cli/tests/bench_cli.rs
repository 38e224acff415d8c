//! `lcross bench` measures the model where and how it is asked to run (`--device`,
//! `--dtype` reach the measured process), on the tiny checkpoint.

mod common;

use common::json;

#[test]
fn bench_measures_in_the_asked_dtype() {
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures/hf/tiny-llama").display().to_string();
    let size = ["--modes", "f32", "--repeat", "1", "--prompt-tokens", "8", "--decode-tokens", "2"];
    let f32_run = json(&[&["--json", "bench", "-m", &tiny][..], &size].concat());
    assert_eq!(f32_run["rows"][0]["mode"], "f32", "{f32_run}");
    let bf16_run = json(&[&["--json", "bench", "-m", &tiny, "--dtype", "bf16"][..], &size].concat());
    assert_eq!(bf16_run["rows"][0]["mode"], "f32, bf16 on cpu", "{bf16_run}");
    assert!(bf16_run["rows"][0]["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
}
