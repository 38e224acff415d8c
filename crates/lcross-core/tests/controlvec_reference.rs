//! llama.cpp control vectors against gguf-py, llama.cpp's own Python GGUF library
//! (`scripts/reference/make_cvec_fixtures.py`):
//! - a file written by gguf-py's `GGUFWriter` (as repeng and llama.cpp's tools write them)
//!   imports to exactly its values;
//! - `export` reproduces `cvec-lcross.gguf` byte for byte, a file the script has read back
//!   with gguf-py's `GGUFReader` and checked (names, f32, 1-D, values). After a deliberate
//!   format change: `LCROSS_BLESS=1 cargo test -p lcross-core --test controlvec_reference`,
//!   then rerun the script, which must print that it read the new file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lcross_core::controlvec::{export, import};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference_layers() -> BTreeMap<usize, Vec<f32>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("cvec-gguf-py.json")).unwrap()).unwrap();
    v["layers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, xs)| (k.parse().unwrap(), xs.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()))
        .collect()
}

#[test]
fn imports_a_control_vector_written_by_gguf_py() {
    let (layers, hint) = import(&fixtures().join("cvec-gguf-py.gguf")).unwrap();
    let want = reference_layers();
    assert_eq!(layers.keys().collect::<Vec<_>>(), vec![&3, &14]);
    // Exact: the JSON holds the f32 values widened to f64.
    assert_eq!(layers, want);
    assert_eq!(hint.as_deref(), Some("qwen2"));
}

#[test]
fn export_reproduces_the_file_gguf_py_read_back() {
    let dir = std::env::temp_dir().join(format!("lcross-cvec-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ours = dir.join("cvec.gguf");
    export(&ours, &reference_layers(), "qwen2").unwrap();
    let golden = fixtures().join("cvec-lcross.gguf");
    if std::env::var_os("LCROSS_BLESS").is_some() {
        std::fs::copy(&ours, &golden).unwrap();
    }
    let (got, want) = (std::fs::read(&ours).unwrap(), std::fs::read(&golden).unwrap());
    assert!(
        got == want,
        "lcross's control-vector export changed ({} bytes vs {} in {}); if deliberate, bless it and re-check with scripts/reference/make_cvec_fixtures.py",
        got.len(),
        want.len(),
        golden.display()
    );
    let (back, _) = import(&ours).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(back, reference_layers());
}
