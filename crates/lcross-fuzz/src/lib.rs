//! Fuzz targets: each feeds arbitrary bytes to one of lcross's readers exactly as a user's
//! file or request reaches it. A target returns on any `Err` (a clear error is the right
//! answer to bad bytes) and panics only where lcross would (a panic, an overflow with
//! debug assertions, an abort): that is what the fuzzer looks for.
//!
//! `scripts/fuzz` runs them coverage-guided; `tests/replay.rs` replays every corpus and
//! regression input through them in the ordinary test run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A fuzz target: bytes in, a panic only on a defect.
pub type Target = fn(&[u8]);

/// The targets by name.
pub const TARGETS: &[(&str, Target)] =
    &[("gguf", gguf), ("hf_config", hf_config), ("artifact", artifact), ("dataset", dataset), ("experiment", experiment), ("request", request)];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// A directory of this process for the files the targets write (a RAM disk when there
/// is one: every input is a file, as users' inputs are).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let d = base.join(format!("lcross-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory");
        d
    })
}

/// Write `data` to `name` in the scratch directory.
fn file(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("writing the input");
    p
}

/// The fixtures of lcross-model (tiny random checkpoints).
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lcross-model/tests/fixtures")
}

/// A GGUF file loaded as `lcross --model FILE.gguf` loads it: header, metadata,
/// configuration, tokenizer, chat template, tensors.
pub fn gguf(data: &[u8]) {
    let p = file("model.gguf", data);
    let _ = lcross_model::Model::load(p.to_str().unwrap(), &lcross_model::LoadOptions::default());
}

/// A Hugging Face `config.json` beside the tiny Llama's tokenizer and weights, loaded as
/// a model folder.
pub fn hf_config(data: &[u8]) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = scratch().join("hf");
        std::fs::create_dir_all(&d).unwrap();
        for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(fixtures().join("hf/tiny-llama").join(f), d.join(f)).unwrap();
        }
        d
    });
    std::fs::write(dir.join("config.json"), data).unwrap();
    let _ = lcross_model::Model::load(dir.to_str().unwrap(), &lcross_model::LoadOptions::default());
}

/// A safetensors artifact read as a steering vector and as a map.
pub fn artifact(data: &[u8]) {
    let p = file("artifact.safetensors", data);
    let _ = lcross_core::steering::SteeringVector::load(&p);
    let _ = lcross_core::maps::LinearMap::load(&p);
}

/// A dataset file read by every dataset reader: CAA A/B items and open-ended
/// questions, pairs (JSON array and JSONL, chat and raw), lists of scenarios.
pub fn dataset(data: &[u8]) {
    use lcross_core::dataset::*;
    let json = file("concept.json", data);
    let jsonl = file("concept.jsonl", data);
    let _ = load_caa_pairs(&json);
    let _ = load_ab_items(&json);
    let _ = load_open_ended(&json);
    let _ = load_pairs(&json, false);
    let _ = load_pairs(&jsonl, true);
    let _ = load_string_list(&jsonl);
    let _ = scenario_pairs("concept", &json, &jsonl, "Consider: {scenario}", false);
}

/// An experiment file: parsed, each profile resolved, its plan counted over 7 shards.
pub fn experiment(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = lcross_eval::reproduce::config::ExperimentFile::parse(text, "fuzz.toml") else { return };
    let _ = lcross_eval::reproduce::runner::plan_summary(&file, None, Some(7));
    for name in file.profiles.keys() {
        let _ = lcross_eval::reproduce::runner::plan_summary(&file, Some(name), None);
    }
}

/// A request body sent to both completion endpoints of a server of the tiny Llama (one
/// vector, `push`, registered; at most 4 new tokens).
pub fn request(data: &[u8]) {
    use tower::ServiceExt;
    struct Server {
        runtime: tokio::runtime::Runtime,
        router: axum::Router,
    }
    static SERVER: OnceLock<Server> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let model = std::sync::Arc::new(
            lcross_model::Model::load(fixtures().join("hf/tiny-llama").to_str().unwrap(), &lcross_model::LoadOptions::default()).expect("tiny-llama"),
        );
        let mut vectors = lcross_serve::VectorRegistry::new();
        let h = model.config().hidden_size;
        let meta = lcross_core::steering::VectorMetadata::made_by_hand(model.id(), &model.file_sha256().unwrap(), h, vec![1], "push", "fuzz");
        let sv = lcross_core::steering::SteeringVector { metadata: meta, layers: [(1usize, vec![0.25f32; h])].into_iter().collect() };
        let path = scratch().join("push.safetensors");
        sv.save(&path).unwrap();
        vectors.register("push", &path, &model).unwrap();
        let opts = lcross_serve::ServeOptions {
            batch_rows: 4,
            max_queue: 8,
            limits: lcross_serve::Limits { max_tokens_limit: 4, default_max_tokens: 4, max_prompt_tokens: 64, ..lcross_serve::Limits::default() },
            ..lcross_serve::ServeOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = lcross_serve::build_state(model, vectors, &opts);
        Server { runtime, router: lcross_serve::router(state) }
    });
    for uri in ["/v1/chat/completions", "/v1/completions"] {
        let request = axum::http::Request::post(uri).header("content-type", "application/json").body(axum::body::Body::from(data.to_vec())).unwrap();
        server.runtime.block_on(async {
            let response = server.router.clone().oneshot(request).await.expect("the router answers");
            // Read the whole answer (a stream included) as a client would.
            let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        });
    }
}
