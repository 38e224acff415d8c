//! Reading GGUF files: header validation, metadata -> [`ModelConfig`], tensors.
//!
//! candle's `gguf_file` reader does the parsing; this module adds the checks that turn a
//! truncated file or an absurd header into an error naming the file and the field, and
//! maps llama.cpp's metadata keys onto the decoder's config.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::config::{Activation, Architecture, LayerAttention, ModelConfig, QkNorm, RopeScaling};
use crate::error::{ModelError, Result};

type Metadata = HashMap<String, gguf_file::Value>;

/// An opened, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Open and validate the header and the tensor table of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let file_size = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        check_alignment(path, &mut reader, file_size)?;
        let content =
            gguf_file::Content::read(&mut reader).map_err(|e| ModelError::InvalidFile { path: path.to_path_buf(), format: "GGUF", reason: e.to_string() })?;
        // Every tensor must have a sane shape and lie inside the file.
        for (name, info) in &content.tensor_infos {
            let dims = info.shape.dims();
            let mut elems: u64 = 1;
            for &d in dims {
                elems =
                    elems.checked_mul(d as u64).filter(|&e| e <= 1 << 40).ok_or_else(|| ModelError::tensor(path, name, format!("absurd shape {dims:?}")))?;
            }
            let block = info.ggml_dtype.block_size() as u64;
            if !elems.is_multiple_of(block) {
                return Err(ModelError::tensor(path, name, format!("{elems} elements is not a multiple of the {:?} block size {block}", info.ggml_dtype)));
            }
            let bytes = elems / block * info.ggml_dtype.type_size() as u64;
            let start = content.tensor_data_offset.saturating_add(info.offset);
            if start.saturating_add(bytes) > file_size {
                return Err(ModelError::tensor(
                    path,
                    name,
                    format!("data ({bytes} bytes at offset {start}) runs past the end of the file ({file_size} bytes): truncated file?"),
                ));
            }
        }
        Ok(Self { path: path.to_path_buf(), content, reader })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key/values.
    pub fn metadata(&self) -> &Metadata {
        &self.content.metadata
    }

    /// candle's parsed content.
    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    /// Whether a tensor is present.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Storage type of a tensor.
    pub fn tensor_dtype(&self, name: &str) -> Option<GgmlDType> {
        self.content.tensor_infos.get(name).map(|i| i.ggml_dtype)
    }

    /// The most common storage type among 2-D weights (the "quantization" of the file).
    pub fn dominant_dtype(&self) -> Option<GgmlDType> {
        let mut counts: HashMap<String, (usize, GgmlDType)> = HashMap::new();
        for info in self.content.tensor_infos.values() {
            if info.shape.rank() == 2 {
                let e = counts.entry(format!("{:?}", info.ggml_dtype)).or_insert((0, info.ggml_dtype));
                e.0 += 1;
            }
        }
        counts.into_values().max_by_key(|(n, _)| *n).map(|(_, d)| d)
    }

    /// Read one tensor (quantized as stored) with its expected shape checked.
    pub fn qtensor(&mut self, name: &str, expected_shape: &[usize], device: &Device) -> Result<QTensor> {
        let info = self.content.tensor_infos.get(name).ok_or_else(|| ModelError::tensor(&self.path, name, "missing"))?;
        if info.shape.dims() != expected_shape {
            return Err(ModelError::tensor(&self.path, name, format!("shape {:?}, expected {:?}", info.shape.dims(), expected_shape)));
        }
        info.read(&mut self.reader, self.content.tensor_data_offset, device).map_err(|e| ModelError::tensor(&self.path, name, e.to_string()))
    }

    /// The decoder configuration described by the metadata (and, for Phi-3's LongRoPE,
    /// the `rope_factors_short` tensor).
    pub fn config(&mut self) -> Result<ModelConfig> {
        let mut config = config_from_metadata(&self.path, &self.content, |n| self.has_tensor(n))?;
        if config.architecture == Architecture::Phi3 && self.has_tensor("rope_factors_short.weight") {
            let half = config.head_dim / 2;
            let short: Vec<f32> = self.qtensor("rope_factors_short.weight", &[half], &Device::Cpu)?.dequantize(&Device::Cpu)?.to_vec1()?;
            let md = &self.content.metadata;
            let original = meta_usize(&self.path, md, "phi3.rope.scaling.original_context_length")?;
            let factor = config.max_position_embeddings as f64 / original as f64;
            let attention_factor = match md.contains_key("phi3.rope.scaling.attn_factor") {
                true => meta_f64(&self.path, md, "phi3.rope.scaling.attn_factor")?,
                false if factor <= 1.0 => 1.0,
                false => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
            };
            config.rope_scaling = Some(RopeScaling::LongRope {
                short_factor: short.into_iter().map(f64::from).collect(),
                attention_factor,
                original_max_position_embeddings: original,
            });
            config.validate().map_err(|reason| ModelError::field(&self.path, "rope_factors_short.weight", reason))?;
        }
        Ok(config)
    }
}

/// candle's reader divides by `general.alignment` (a zero panics) before lcross can look at
/// the metadata: walk the key-value section first and refuse an alignment of 0 (or one that is
/// not a power of two, which llama.cpp refuses too) with the file and key named. Values are
/// skipped, not read; every length is checked against the file's size; whatever else is wrong
/// with the header (truncation, v1's 32-bit lengths, unknown types) is left to candle's
/// reader, which says what. The reader is rewound afterwards.
fn check_alignment(path: &Path, r: &mut BufReader<File>, file_size: u64) -> Result<()> {
    let found = declared_alignment(r, file_size);
    r.rewind().map_err(|e| ModelError::io(path, e))?;
    match found {
        Some(a) if a == 0 || !a.is_power_of_two() => Err(ModelError::field(path, "general.alignment", format!("{a} is not a power of two"))),
        _ => Ok(()),
    }
}

/// `general.alignment` when the header declares it as a u32 and can be walked to it.
fn declared_alignment(r: &mut BufReader<File>, file_size: u64) -> Option<u64> {
    /// A reader that counts what it consumed and skips within its buffer.
    struct Walk<'a> {
        r: &'a mut BufReader<File>,
        pos: u64,
        size: u64,
    }
    impl Walk<'_> {
        fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
            let mut b = [0u8; N];
            self.r.read_exact(&mut b).ok()?;
            self.pos += N as u64;
            Some(b)
        }
        fn u32(&mut self) -> Option<u32> {
            self.bytes::<4>().map(u32::from_le_bytes)
        }
        fn u64(&mut self) -> Option<u64> {
            self.bytes::<8>().map(u64::from_le_bytes)
        }
        fn skip(&mut self, n: u64) -> Option<()> {
            let to = self.pos.checked_add(n).filter(|&to| to <= self.size)?;
            self.r.seek_relative(i64::try_from(n).ok()?).ok()?;
            self.pos = to;
            Some(())
        }
    }
    // Bytes of a fixed-size value type (None: a string, an array or unknown).
    let fixed = |t: u32| match t {
        0 | 1 | 7 => Some(1u64),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    };
    let mut w = Walk { r, pos: 0, size: file_size };
    if w.u32()? != 0x4655_4747 || w.u32()? < 2 {
        return None;
    }
    let _tensors = w.u64()?;
    let kvs = w.u64()?;
    for _ in 0..kvs {
        let key_len = w.u64()?;
        if key_len > 1 << 16 || w.pos + key_len > file_size {
            return None;
        }
        let mut key = vec![0u8; key_len as usize];
        w.r.read_exact(&mut key).ok()?;
        w.pos += key_len;
        let kind = w.u32()?;
        if key == b"general.alignment" {
            return if kind == 4 { w.u32().map(u64::from) } else { None };
        }
        match (fixed(kind), kind) {
            (Some(n), _) => w.skip(n)?,
            (None, 8) => {
                let n = w.u64()?;
                w.skip(n)?
            }
            (None, 9) => {
                let elem = w.u32()?;
                let count = w.u64()?;
                match (fixed(elem), elem) {
                    (Some(n), _) => w.skip(count.checked_mul(n)?)?,
                    (None, 8) => {
                        for _ in 0..count {
                            let n = w.u64()?;
                            w.skip(n)?;
                        }
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    None
}

fn wrong_type(path: &Path, key: &str, want: &str, v: &gguf_file::Value) -> ModelError {
    ModelError::field(path, key, format!("expected {want}, found {:?}", v.value_type()))
}

fn get<'a>(path: &Path, md: &'a Metadata, key: &str) -> Result<&'a gguf_file::Value> {
    md.get(key).ok_or_else(|| ModelError::field(path, key, "missing"))
}

/// A string metadata value.
pub(crate) fn meta_string(path: &Path, md: &Metadata, key: &str) -> Result<String> {
    let v = get(path, md, key)?;
    v.to_string().cloned().map_err(|_| wrong_type(path, key, "a string", v))
}

/// An array-of-strings metadata value.
pub(crate) fn meta_string_array(path: &Path, md: &Metadata, key: &str) -> Result<Vec<String>> {
    let v = get(path, md, key)?;
    let arr = v.to_vec().map_err(|_| wrong_type(path, key, "an array", v))?;
    arr.iter().enumerate().map(|(i, x)| x.to_string().cloned().map_err(|_| ModelError::field(path, key, format!("element {i} is not a string")))).collect()
}

/// A non-negative integer metadata value that fits u32.
pub(crate) fn meta_u32(path: &Path, md: &Metadata, key: &str) -> Result<u32> {
    let v = get(path, md, key)?;
    let n: i128 = match v {
        gguf_file::Value::U8(x) => *x as i128,
        gguf_file::Value::I8(x) => *x as i128,
        gguf_file::Value::U16(x) => *x as i128,
        gguf_file::Value::I16(x) => *x as i128,
        gguf_file::Value::U32(x) => *x as i128,
        gguf_file::Value::I32(x) => *x as i128,
        gguf_file::Value::U64(x) => *x as i128,
        gguf_file::Value::I64(x) => *x as i128,
        _ => return Err(wrong_type(path, key, "an integer", v)),
    };
    u32::try_from(n).map_err(|_| ModelError::field(path, key, format!("{n} is out of range")))
}

fn meta_usize(path: &Path, md: &Metadata, key: &str) -> Result<usize> {
    meta_u32(path, md, key).map(|x| x as usize)
}

/// A floating-point metadata value (integers accepted).
pub(crate) fn meta_f64(path: &Path, md: &Metadata, key: &str) -> Result<f64> {
    let v = get(path, md, key)?;
    match v {
        gguf_file::Value::F32(x) => Ok(*x as f64),
        gguf_file::Value::F64(x) => Ok(*x),
        _ => meta_u32(path, md, key).map(|x| x as f64).map_err(|_| wrong_type(path, key, "a number", v)),
    }
}

/// A boolean metadata value.
pub(crate) fn meta_bool(path: &Path, md: &Metadata, key: &str) -> Result<bool> {
    let v = get(path, md, key)?;
    v.to_bool().map_err(|_| wrong_type(path, key, "a bool", v))
}

fn config_from_metadata(path: &Path, content: &gguf_file::Content, has_tensor: impl Fn(&str) -> bool) -> Result<ModelConfig> {
    let md = &content.metadata;
    let arch_name = meta_string(path, md, "general.architecture")?;
    let architecture =
        Architecture::parse(&arch_name).ok_or_else(|| ModelError::UnsupportedArchitecture { path: path.to_path_buf(), arch: arch_name.clone() })?;
    let p = arch_name.as_str();
    let key = |k: &str| format!("{p}.{k}");
    let hidden_size = meta_usize(path, md, &key("embedding_length"))?;
    let num_layers = meta_usize(path, md, &key("block_count"))?;
    // Checked before anything is sized by it (found by fuzzing: a block count of 2^32 - 2
    // made a per-layer list of 64 GB).
    if num_layers > crate::config::MAX_MODEL_LAYERS {
        return Err(ModelError::field(path, key("block_count"), format!("{num_layers} is implausibly large (at most {})", crate::config::MAX_MODEL_LAYERS)));
    }
    let intermediate_size = meta_usize(path, md, &key("feed_forward_length"))?;
    let num_heads = meta_usize(path, md, &key("attention.head_count"))?;
    if num_heads == 0 {
        return Err(ModelError::field(path, key("attention.head_count"), "is 0"));
    }
    let num_kv_heads = if md.contains_key(&key("attention.head_count_kv")) { meta_usize(path, md, &key("attention.head_count_kv"))? } else { num_heads };
    let head_dim = if md.contains_key(&key("attention.key_length")) { meta_usize(path, md, &key("attention.key_length"))? } else { hidden_size / num_heads };
    let rms_norm_eps = meta_f64(path, md, &key("attention.layer_norm_rms_epsilon"))?;
    let rope_theta = if md.contains_key(&key("rope.freq_base")) { meta_f64(path, md, &key("rope.freq_base"))? } else { 10_000.0 };
    let max_position_embeddings = if md.contains_key(&key("context_length")) { meta_usize(path, md, &key("context_length"))? } else { 4096 };
    let vocab_size = match md.get("tokenizer.ggml.tokens") {
        Some(v) => v.to_vec().map(|a| a.len()).map_err(|_| wrong_type(path, "tokenizer.ggml.tokens", "an array", v))?,
        None => return Err(ModelError::field(path, "tokenizer.ggml.tokens", "missing: the file has no tokenizer")),
    };
    let rope_scaling = match md.get(&key("rope.scaling.type")).and_then(|v| v.to_string().ok()).map(|s| s.as_str()) {
        Some("linear") => Some(RopeScaling::Linear { factor: meta_f64(path, md, &key("rope.scaling.factor"))? }),
        Some("none") | None => None,
        Some(other) => return Err(ModelError::field(path, key("rope.scaling.type"), format!("unsupported rope scaling `{other}`"))),
    };
    // llama.cpp stores Llama-3.1's rope scaling as per-frequency factors in a tensor.
    let rope_scaling = match (rope_scaling, has_tensor("rope_freqs.weight")) {
        (None, true) => Some(RopeScaling::FreqFactors),
        (Some(_), true) => {
            return Err(ModelError::field(path, key("rope.scaling.type"), "set together with a rope_freqs tensor: which applies is not defined"))
        }
        (s, false) => s,
    };
    let window_key = key("attention.sliding_window");
    if md.contains_key(&window_key) && !matches!(architecture, Architecture::Gemma3 | Architecture::Gemma2 | Architecture::Phi3) {
        return Err(ModelError::field(
            path,
            window_key,
            "a sliding window is only supported for gemma2, gemma3 and phi3 GGUF files (use the Hugging Face folder)",
        ));
    }
    let window = if md.contains_key(&window_key) { Some(meta_usize(path, md, &window_key)?) } else { None };
    let softcap = |k: &str| -> Result<Option<f64>> {
        if md.contains_key(&key(k)) {
            meta_f64(path, md, &key(k)).map(Some)
        } else {
            Ok(None)
        }
    };
    let mut attention_scale = 1.0 / (head_dim as f64).sqrt();
    if md.contains_key(&key("rope.dimension_count")) && meta_usize(path, md, &key("rope.dimension_count"))? != head_dim {
        return Err(ModelError::field(path, key("rope.dimension_count"), "rotary embeddings on part of each head are not supported"));
    }
    let tied_embeddings = !has_tensor("output.weight");
    let (activation, qkv_bias, qk_norm, sandwich_norms, scale_embeddings, rope_local_theta, layer_attention, rope_interleaved) = match architecture {
        Architecture::Llama => (Activation::Silu, false, QkNorm::None, false, false, None, vec![LayerAttention::Global; num_layers], true),
        Architecture::Qwen2 => (Activation::Silu, true, QkNorm::None, false, false, None, vec![LayerAttention::Global; num_layers], false),
        Architecture::Qwen3 => (Activation::Silu, false, QkNorm::PerHead, false, false, None, vec![LayerAttention::Global; num_layers], false),
        Architecture::Gemma3 => {
            let window = if md.contains_key(&key("attention.sliding_window")) { meta_usize(path, md, &key("attention.sliding_window"))? } else { 512 };
            // Gemma 3: five sliding-window layers, then one global layer.
            let layers = (0..num_layers).map(|i| if (i + 1) % 6 == 0 { LayerAttention::Global } else { LayerAttention::Sliding { window } }).collect();
            (Activation::GeluTanh, false, QkNorm::PerHead, true, true, Some(10_000.0), layers, false)
        }
        Architecture::Gemma2 => {
            let window =
                window.ok_or_else(|| ModelError::field(path, key("attention.sliding_window"), "missing (gemma2 alternates sliding and global layers)"))?;
            // Even layers slide, odd layers are global (transformers and llama.cpp alike).
            let layers = (0..num_layers).map(|i| if i % 2 == 0 { LayerAttention::Sliding { window } } else { LayerAttention::Global }).collect();
            // GGUF has no query_pre_attn_scalar: llama.cpp uses hidden / heads for the 27B
            // model (46 layers) and head_dim otherwise, which is what the published
            // configs set.
            if num_layers == 46 {
                attention_scale = 1.0 / ((hidden_size / num_heads) as f64).sqrt();
            }
            (Activation::GeluTanh, false, QkNorm::None, true, true, None, layers, false)
        }
        Architecture::Phi3 => {
            let layers = match window.filter(|&w| w > 0) {
                Some(window) => vec![LayerAttention::Sliding { window }; num_layers],
                None => vec![LayerAttention::Global; num_layers],
            };
            (Activation::Silu, false, QkNorm::None, false, false, None, layers, false)
        }
        Architecture::Olmo2 => (Activation::Silu, false, QkNorm::Whole, true, false, None, vec![LayerAttention::Global; num_layers], false),
    };
    let config = ModelConfig {
        architecture,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_local_theta,
        rope_scaling,
        rope_interleaved,
        max_position_embeddings,
        layer_attention,
        activation,
        qkv_bias,
        qk_norm,
        pre_norms: architecture != Architecture::Olmo2,
        sandwich_norms,
        scale_embeddings,
        attention_scale,
        tied_embeddings,
        final_logit_softcapping: if architecture == Architecture::Gemma2 { softcap("final_logit_softcapping")? } else { None },
        attn_logit_softcapping: if architecture == Architecture::Gemma2 { softcap("attn_logit_softcapping")? } else { None },
    };
    config.validate().map_err(|reason| ModelError::field(path, format!("{p}.*"), reason))?;
    Ok(config)
}
