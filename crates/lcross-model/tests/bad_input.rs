//! Bad input is a clear error naming the file and the problem, never a panic.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::fixtures;
use lcross_model::{LoadOptions, Model};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lcross-bad-input-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn load_err(path: &Path) -> String {
    match Model::load(path.to_str().unwrap(), &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A minimal GGUF v3 writer for crafted test files.
struct Gguf {
    kvs: Vec<u8>,
    n_kv: u64,
    tensors: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

impl Gguf {
    fn new() -> Self {
        Self { kvs: vec![], n_kv: 0, tensors: vec![], n_tensors: 0, data: vec![] }
    }
    fn s(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }
    fn kv_str(mut self, k: &str, v: &str) -> Self {
        Self::s(&mut self.kvs, k);
        self.kvs.extend(8u32.to_le_bytes());
        Self::s(&mut self.kvs, v);
        self.n_kv += 1;
        self
    }
    fn kv_u32(mut self, k: &str, v: u32) -> Self {
        Self::s(&mut self.kvs, k);
        self.kvs.extend(4u32.to_le_bytes());
        self.kvs.extend(v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    fn kv_f32(mut self, k: &str, v: f32) -> Self {
        Self::s(&mut self.kvs, k);
        self.kvs.extend(6u32.to_le_bytes());
        self.kvs.extend(v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    fn kv_str_array(mut self, k: &str, items: &[&str]) -> Self {
        Self::s(&mut self.kvs, k);
        self.kvs.extend(9u32.to_le_bytes());
        self.kvs.extend(8u32.to_le_bytes());
        self.kvs.extend((items.len() as u64).to_le_bytes());
        for it in items {
            Self::s(&mut self.kvs, it);
        }
        self.n_kv += 1;
        self
    }
    /// An f32 tensor; `dims` in GGUF order (innermost first); data written only if `data`.
    fn tensor_f32(mut self, name: &str, dims: &[u64], data: bool) -> Self {
        Self::s(&mut self.tensors, name);
        self.tensors.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend(d.to_le_bytes());
        }
        self.tensors.extend(0u32.to_le_bytes()); // F32
        self.tensors.extend((self.data.len() as u64).to_le_bytes());
        if data {
            let n: u64 = dims.iter().product();
            self.data.extend(std::iter::repeat_n(0u8, (n * 4) as usize));
        }
        self.n_tensors += 1;
        self
    }
    fn write(self, path: &Path) {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(self.kvs);
        out.extend(self.tensors);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(self.data);
        std::fs::File::create(path).unwrap().write_all(&out).unwrap();
    }
}

fn llama_header() -> Gguf {
    Gguf::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.embedding_length", 8)
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.feed_forward_length", 16)
        .kv_u32("llama.attention.head_count", 2)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
}

#[test]
fn random_bytes_are_not_a_gguf() {
    let d = tmpdir("random");
    let p = d.join("random.gguf");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&p, bytes).unwrap();
    let e = load_err(&p);
    assert!(e.contains("random.gguf") && e.contains("not a valid GGUF"), "{e}");
}

#[test]
fn empty_file_is_not_a_gguf() {
    let d = tmpdir("empty");
    let p = d.join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    let e = load_err(&p);
    assert!(e.contains("empty.gguf") && e.contains("GGUF"), "{e}");
}

#[test]
fn truncated_real_model_is_an_error() {
    let Some(src) = common::known_model_path("smollm2-135m-instruct") else { return };
    let d = tmpdir("truncated");
    let p = d.join("truncated.gguf");
    // Keep the header and the start of the tensor data only.
    let mut f = std::fs::File::open(&src).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    std::io::Read::read_exact(&mut f, &mut buf).unwrap();
    std::fs::write(&p, &buf).unwrap();
    let e = load_err(&p);
    assert!(e.contains("truncated.gguf") && e.contains("runs past the end of the file"), "{e}");
    // Cut inside the metadata, too.
    std::fs::write(&p, &buf[..100_000]).unwrap();
    let e = load_err(&p);
    assert!(e.contains("truncated.gguf") && e.contains("not a valid GGUF"), "{e}");
}

#[test]
fn absurd_tensor_shape_is_an_error_not_an_allocation() {
    let d = tmpdir("absurd");
    let p = d.join("absurd.gguf");
    llama_header().kv_str_array("tokenizer.ggml.tokens", &["a", "b"]).tensor_f32("token_embd.weight", &[1 << 31, 1 << 31], false).write(&p);
    let e = load_err(&p);
    assert!(e.contains("absurd.gguf") && e.contains("token_embd.weight"), "{e}");
}

#[test]
fn unknown_architecture_is_named() {
    let d = tmpdir("arch");
    let p = d.join("mamba.gguf");
    Gguf::new().kv_str("general.architecture", "mamba").write(&p);
    let e = load_err(&p);
    assert!(e.contains("mamba.gguf") && e.contains("unsupported architecture `mamba`"), "{e}");
}

#[test]
fn missing_tokenizer_metadata_is_named() {
    let d = tmpdir("notok");
    let p = d.join("notok.gguf");
    llama_header().tensor_f32("token_embd.weight", &[8, 2], true).write(&p);
    let e = load_err(&p);
    assert!(e.contains("notok.gguf") && e.contains("tokenizer.ggml.tokens"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let d = tmpdir("notensor");
    let p = d.join("notensor.gguf");
    llama_header()
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "ab"])
        .kv_str_array("tokenizer.ggml.merges", &["a b"])
        .tensor_f32("token_embd.weight", &[8, 3], true)
        .write(&p);
    let e = load_err(&p);
    assert!(e.contains("notensor.gguf") && e.contains("blk.0."), "{e}");
}

#[test]
fn bad_metadata_type_is_named() {
    let d = tmpdir("badtype");
    let p = d.join("badtype.gguf");
    Gguf::new().kv_str("general.architecture", "llama").kv_str("llama.embedding_length", "eight").write(&p);
    let e = load_err(&p);
    assert!(e.contains("badtype.gguf") && e.contains("llama.embedding_length"), "{e}");
}

#[test]
fn zero_heads_is_an_error_not_a_division_by_zero() {
    let d = tmpdir("zeroheads");
    let p = d.join("zero.gguf");
    Gguf::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.embedding_length", 8)
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.feed_forward_length", 16)
        .kv_u32("llama.attention.head_count", 0)
        .write(&p);
    let e = load_err(&p);
    assert!(e.contains("zero.gguf") && e.contains("head_count"), "{e}");
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncated_safetensors_is_named() {
    let d = tmpdir("st-trunc");
    copy_dir(&fixtures().join("hf/tiny-llama"), &d);
    let st = d.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&d);
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn random_safetensors_is_named() {
    let d = tmpdir("st-random");
    copy_dir(&fixtures().join("hf/tiny-llama"), &d);
    std::fs::write(d.join("model.safetensors"), vec![0xffu8; 1000]).unwrap();
    let e = load_err(&d);
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn absurd_safetensors_header_is_an_error() {
    let d = tmpdir("st-absurd");
    copy_dir(&fixtures().join("hf/tiny-llama"), &d);
    let header = r#"{"model.embed_tokens.weight":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 16]);
    std::fs::write(d.join("model.safetensors"), bytes).unwrap();
    let e = load_err(&d);
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn unknown_hf_architecture_is_named() {
    let d = tmpdir("hf-arch");
    copy_dir(&fixtures().join("hf/tiny-llama"), &d);
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"llama\"", "\"falcon\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let e = load_err(&d);
    assert!(e.contains("config.json") && e.contains("unsupported architecture `falcon`"), "{e}");
}

#[test]
fn malformed_config_json_is_named() {
    let d = tmpdir("hf-json");
    copy_dir(&fixtures().join("hf/tiny-llama"), &d);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    let e = load_err(&d);
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
}

#[test]
fn unknown_model_spec_lists_known_ids() {
    let e = match Model::load("no-such-model", &LoadOptions::default()) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("no-such-model") && e.contains("smollm2-135m-instruct"), "{e}");
}

/// A steering whose added norm overflows f32's squared range (here |scale x v| = 1e30,
/// which f32 holds but whose square it does not: every RMSNorm would return zeros and
/// the model its end-of-text token with finite logits) is refused before it runs.
#[test]
fn a_steering_beyond_f32s_squared_range_is_refused_up_front() {
    use lcross_model::{GenerateOptions, Hooks, ModelError, Positions, Sampling, MAX_STEERING_NORM};
    let dir = fixtures().join("hf").join("tiny-llama");
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let h = model.config().hidden_size;
    let mut unit = vec![0.0; h];
    unit[0] = 1.0;
    let opts = GenerateOptions { max_tokens: 4, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let prompt = model.prompt("hello there", false, None).unwrap().ids;
    for scale in [1e30, -1e30, MAX_STEERING_NORM * 1.01] {
        let hooks = Hooks::none().with_intervention(1, model.vector_tensor(&unit).unwrap(), scale, Positions::All);
        let err = model.generate(&prompt, &opts, &hooks, |_| Ok(())).unwrap_err();
        assert!(matches!(err, ModelError::InvalidInput(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("resid_post") && msg.contains("layer 1") && msg.contains("lower beta"), "{msg}");
    }
    // Just below the bound the run goes through (the check is not stricter than f32).
    let hooks = Hooks::none().with_intervention(1, model.vector_tensor(&unit).unwrap(), MAX_STEERING_NORM * 0.5, Positions::All);
    if let Err(e) = model.generate(&prompt, &opts, &hooks, |_| Ok(())) {
        panic!("{e}")
    }
}

/// A steering that overflows the compute dtype (here f16, whose largest value is 65504)
/// stops the generation with an error naming the steering; it never returns the tokens
/// NaN logits would pick, and the same model answers normally afterwards.
#[test]
fn non_finite_logits_stop_generation_with_an_error() {
    use lcross_model::{GenerateOptions, GenerationRequest, Hooks, ModelError, Positions, Sampling};
    let dir = fixtures().join("hf").join("tiny-llama");
    let f16 = LoadOptions::parse("f32", "cpu", "f16").unwrap();
    let model = Model::load(dir.to_str().unwrap(), &f16).unwrap();
    let h = model.config().hidden_size;
    let v = model.vector_tensor(&vec![0.5; h]).unwrap();
    let opts = GenerateOptions { max_tokens: 4, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let prompt = model.prompt("hello there", false, None).unwrap().ids;
    let hooks = Hooks::none().with_intervention(1, v, 1e6, Positions::All);
    let err = model.generate(&prompt, &opts, &hooks, |_| Ok(())).unwrap_err();
    assert!(matches!(err, ModelError::NonFinite { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("not finite") && msg.contains("layer 1") && msg.contains("scale 1e6") && msg.contains("lower beta"), "{msg}");
    // In a batch, the bad row is named and the error is returned (no half answer).
    let requests: Vec<GenerationRequest> =
        [Hooks::none(), hooks.clone()].into_iter().map(|hooks| GenerationRequest { prompt: prompt.clone(), hooks, options: opts.clone() }).collect();
    let err = model.generate_batch(&requests, 2, |_, _| Ok(())).unwrap_err().to_string();
    assert!(err.contains("request 1"), "{err}");
    assert_eq!(model.generate(&prompt, &opts, &Hooks::none(), |_| Ok(())).unwrap().len(), 4);
}

/// `general.alignment = 0` made candle's reader divide by zero (a panic); it is refused with
/// the file and key named, as is an alignment that is not a power of two. A valid alignment
/// declared after a tokenizer-sized string array still loads as far as the missing tensors.
#[test]
fn a_zero_or_odd_alignment_is_an_error_not_a_panic() {
    let dir = tmpdir("alignment");
    for (tag, alignment) in [("zero", 0u32), ("odd", 24)] {
        let path = dir.join(format!("{tag}.gguf"));
        llama_header()
            .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c"])
            .kv_u32("general.alignment", alignment)
            .tensor_f32("token_embd.weight", &[8, 3], true)
            .write(&path);
        let err = load_err(&path);
        assert!(
            err.contains("general.alignment") && err.contains(&format!("{alignment} is not a power of two")) && err.contains(&format!("{tag}.gguf")),
            "{err}"
        );
    }
    let path = dir.join("fine.gguf");
    let tokens: Vec<String> = (0..5000).map(|i| format!("token{i}")).collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    llama_header().kv_str_array("tokenizer.ggml.tokens", &refs).kv_u32("general.alignment", 32).tensor_f32("token_embd.weight", &[8, 5000], true).write(&path);
    let err = load_err(&path);
    assert!(!err.contains("general.alignment"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Integer weights (a GPTQ/AWQ-style checkpoint, or a bad conversion) are refused naming
/// the tensor: converted to floats they would run and answer nonsense (norms of 1e8).
#[test]
fn integer_weights_in_a_hf_folder_are_refused() {
    let d = tmpdir("st-int");
    copy_dir(&fixtures().join("hf/tiny-llama"), &d);
    let st = d.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // I32 has F32's width: the offsets stay valid, only the meaning of the bytes changes.
    header["model.layers.0.mlp.up_proj.weight"]["dtype"] = "I32".into();
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(n, b' ');
    let mut out = bytes[..8].to_vec();
    out.extend(&text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(&st, out).unwrap();
    let e = load_err(&d);
    assert!(e.contains("model.layers.0.mlp.up_proj.weight") && e.contains("I32") && e.contains("float weights"), "{e}");
}
