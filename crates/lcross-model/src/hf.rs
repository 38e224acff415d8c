//! Hugging Face model directories: `config.json`, `tokenizer.json`,
//! `tokenizer_config.json` and `*.safetensors` (f32, f16 or bf16).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::{Activation, Architecture, LayerAttention, ModelConfig, QkNorm, RopeScaling};
use crate::error::{ModelError, Result};

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::InvalidFile { path: path.to_path_buf(), format: "JSON", reason: e.to_string() })
}

/// The safetensors files of a directory: the shards `model.safetensors.index.json` maps
/// the weights to (each must be there), else `model.safetensors`, else every
/// `*.safetensors` file. (Mistral's repositories also hold `consolidated.safetensors`
/// with other names; the index keeps it out.)
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let index = read_json(&index_path)?;
        let map = index.get("weight_map").and_then(Value::as_object).ok_or_else(|| ModelError::field(&index_path, "weight_map", "missing or not an object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for (tensor, file) in map {
            let name = file.as_str().ok_or_else(|| ModelError::field(&index_path, format!("weight_map.{tensor}"), "not a file name"))?;
            if name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(ModelError::field(&index_path, format!("weight_map.{tensor}"), format!("`{name}` is not a file of this directory")));
            }
            let path = dir.join(name);
            if !files.contains(&path) {
                if !path.is_file() {
                    return Err(ModelError::field(&index_path, format!("weight_map.{tensor}"), format!("shard `{name}` is not in the directory")));
                }
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(ModelError::field(&index_path, "weight_map", "is empty"));
        }
        return Ok(files);
    }
    if dir.join("model.safetensors").is_file() {
        return Ok(vec![dir.join("model.safetensors")]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::ModelNotFound { spec: dir.display().to_string(), reason: "no *.safetensors file".into() });
    }
    Ok(files)
}

/// The parsed JSON files of a HF directory.
pub struct HfFiles {
    pub config_path: PathBuf,
    pub config: Value,
    pub tokenizer_json: PathBuf,
    pub tokenizer_config: Value,
    pub safetensors: Vec<PathBuf>,
}

impl HfFiles {
    /// Find and parse the files of `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let tokenizer_json = dir.join("tokenizer.json");
        if !tokenizer_json.is_file() {
            return Err(ModelError::ModelNotFound { spec: dir.display().to_string(), reason: "no tokenizer.json".into() });
        }
        let tc_path = dir.join("tokenizer_config.json");
        let tokenizer_config = if tc_path.is_file() { read_json(&tc_path)? } else { Value::Object(Default::default()) };
        let safetensors = weight_files(dir)?;
        Ok(Self { config_path, config, tokenizer_json, tokenizer_config, safetensors })
    }

    /// The chat template from tokenizer_config.json (or chat_template.jinja).
    pub fn chat_template(&self, dir: &Path) -> Option<String> {
        if let Some(s) = self.tokenizer_config.get("chat_template").and_then(|v| v.as_str()) {
            return Some(s.to_string());
        }
        std::fs::read_to_string(dir.join("chat_template.jinja")).ok()
    }

    /// A special token's string from tokenizer_config.json (`"<s>"` or `{"content": "<s>"}`).
    pub fn special_token(&self, name: &str) -> Option<String> {
        match self.tokenizer_config.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
            _ => None,
        }
    }

    /// The decoder configuration.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let p = &self.config_path;
        let c = &self.config;
        let f = |k: &str| ModelError::field(p, k, "missing or not a number");
        let usize_of = |k: &str| -> Result<usize> { c.get(k).and_then(Value::as_u64).map(|x| x as usize).ok_or_else(|| f(k)) };
        let f64_of = |k: &str| c.get(k).and_then(Value::as_f64);
        let model_type = c.get("model_type").and_then(Value::as_str).ok_or_else(|| ModelError::field(p, "model_type", "missing"))?;
        let architecture =
            Architecture::parse(model_type).ok_or_else(|| ModelError::UnsupportedArchitecture { path: p.clone(), arch: model_type.to_string() })?;
        let hidden_size = usize_of("hidden_size")?;
        let num_heads = usize_of("num_attention_heads")?;
        if num_heads == 0 {
            return Err(ModelError::field(p, "num_attention_heads", "is 0"));
        }
        let num_layers = usize_of("num_hidden_layers")?;
        // Checked before anything is sized by it (a per-layer list of 2^32 entries).
        if num_layers > crate::config::MAX_MODEL_LAYERS {
            return Err(ModelError::field(p, "num_hidden_layers", format!("{num_layers} is implausibly large (at most {})", crate::config::MAX_MODEL_LAYERS)));
        }
        let head_dim = c.get("head_dim").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(hidden_size / num_heads);
        // rope: transformers 5 writes `rope_parameters`, older files `rope_theta` + `rope_scaling`.
        let rope_params = c.get("rope_parameters");
        let rope_global = rope_params.and_then(|r| r.get("full_attention").or(Some(r)));
        let rope_theta = rope_global.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64).or(f64_of("rope_theta")).unwrap_or(10_000.0);
        let scaling_obj = c.get("rope_scaling").filter(|v| !v.is_null()).or(rope_global);
        let rope_scaling = match scaling_obj.and_then(|s| s.get("rope_type").or(s.get("type"))).and_then(Value::as_str) {
            Some("llama3") => {
                let s = scaling_obj.unwrap_or(&Value::Null);
                let g = |k: &str| s.get(k).and_then(Value::as_f64).ok_or_else(|| ModelError::field(p, format!("rope_scaling.{k}"), "missing"));
                Some(RopeScaling::Llama3 {
                    factor: g("factor")?,
                    low_freq_factor: g("low_freq_factor")?,
                    high_freq_factor: g("high_freq_factor")?,
                    original_max_position_embeddings: g("original_max_position_embeddings")?,
                })
            }
            Some("linear") => {
                let s = scaling_obj.unwrap_or(&Value::Null);
                Some(RopeScaling::Linear {
                    factor: s.get("factor").and_then(Value::as_f64).ok_or_else(|| ModelError::field(p, "rope_scaling.factor", "missing"))?,
                })
            }
            // Phi-3 writes LongRoPE as "longrope" (older files: "su", "yarn").
            Some("longrope" | "su" | "yarn") if architecture == Architecture::Phi3 => {
                let s = scaling_obj.unwrap_or(&Value::Null);
                let short_factor: Vec<f64> = s
                    .get("short_factor")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_f64).collect())
                    .ok_or_else(|| ModelError::field(p, "rope_scaling.short_factor", "missing or not a list of numbers"))?;
                let original = s
                    .get("original_max_position_embeddings")
                    .or(c.get("original_max_position_embeddings"))
                    .and_then(Value::as_u64)
                    .ok_or_else(|| f("original_max_position_embeddings"))? as usize;
                let max = usize_of("max_position_embeddings")?;
                let factor = s.get("factor").and_then(Value::as_f64).unwrap_or(max as f64 / original as f64);
                let attention_factor = match s.get("attention_factor").and_then(Value::as_f64) {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                Some(RopeScaling::LongRope { short_factor, attention_factor, original_max_position_embeddings: original })
            }
            Some("default") | None => None,
            Some(other) => return Err(ModelError::field(p, "rope_scaling", format!("unsupported rope type `{other}` for {}", architecture.as_str()))),
        };
        let partial_rotary = rope_global.and_then(|r| r.get("partial_rotary_factor")).or(c.get("partial_rotary_factor")).and_then(Value::as_f64);
        if partial_rotary.is_some_and(|f| f != 1.0) {
            return Err(ModelError::field(p, "partial_rotary_factor", "rotary embeddings on part of each head are not supported"));
        }
        let gemma = architecture.is_gemma();
        // Fields that change the numbers and that lcross does not implement: refused, never ignored.
        let refuse = |k: &str, why: &str| Err(ModelError::field(p, k, why.to_string()));
        if c.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return refuse("mlp_bias", "MLP biases are not supported");
        }
        if architecture != Architecture::Gemma2 && c.get("attn_logit_softcapping").is_some_and(|v| !v.is_null()) {
            return refuse("attn_logit_softcapping", "soft-capping of attention scores is only supported for gemma2");
        }
        if c.get("use_bidirectional_attention").and_then(Value::as_bool) == Some(true) {
            return refuse("use_bidirectional_attention", "only causal attention is supported");
        }
        // Llama-style `attention_bias` also puts a bias on o_proj, which lcross does not load.
        if c.get("attention_bias").and_then(Value::as_bool) == Some(true) {
            return refuse("attention_bias", "attention projection biases are only supported as qwen2 has them (q, k, v)");
        }
        let expected_act = if gemma { "gelu_pytorch_tanh" } else { "silu" };
        for k in ["hidden_act", "hidden_activation"] {
            if let Some(a) = c.get(k).and_then(Value::as_str) {
                if a != expected_act {
                    return refuse(k, &format!("`{a}` is not supported for {} (expected {expected_act})", architecture.as_str()));
                }
            }
        }
        // Mistral and Phi-3 apply `sliding_window` (when set) on every layer.
        let window_everywhere = model_type == "mistral" || architecture == Architecture::Phi3;
        let window_of = |k: &str| c.get(k).filter(|v| !v.is_null()).map(|v| v.as_u64().map(|x| x as usize).filter(|&x| x > 0).ok_or_else(|| f(k))).transpose();
        if matches!(architecture, Architecture::Qwen2 | Architecture::Qwen3) && c.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return refuse("use_sliding_window", "Qwen's per-layer sliding window is not supported");
        }
        if !gemma && !window_everywhere {
            if let Some(types) = c.get("layer_types").and_then(Value::as_array) {
                if types.iter().any(|t| t.as_str() != Some("full_attention")) {
                    return refuse("layer_types", "sliding-window layers are only supported for gemma2, gemma3, mistral and phi3");
                }
            }
        }
        let layer_attention = match (gemma, c.get("layer_types").and_then(Value::as_array)) {
            (false, _) if window_everywhere => match window_of("sliding_window")? {
                Some(window) => vec![LayerAttention::Sliding { window }; num_layers],
                None => vec![LayerAttention::Global; num_layers],
            },
            (true, Some(types)) => {
                let window = usize_of("sliding_window")?;
                if types.len() != num_layers {
                    return refuse("layer_types", &format!("{} entries for {num_layers} layers", types.len()));
                }
                let mut kinds = Vec::with_capacity(num_layers);
                for t in types {
                    kinds.push(match t.as_str() {
                        Some("sliding_attention") => LayerAttention::Sliding { window },
                        Some("full_attention") => LayerAttention::Global,
                        _ => return refuse("layer_types", &format!("unknown layer type {t}")),
                    });
                }
                kinds
            }
            // Gemma 2 before `layer_types`: even layers slide, odd layers are global.
            (true, None) if architecture == Architecture::Gemma2 => {
                let window = usize_of("sliding_window")?;
                (0..num_layers).map(|i| if i % 2 == 0 { LayerAttention::Sliding { window } } else { LayerAttention::Global }).collect()
            }
            (true, None) => {
                let window = usize_of("sliding_window")?;
                (0..num_layers).map(|i| if (i + 1) % 6 == 0 { LayerAttention::Global } else { LayerAttention::Sliding { window } }).collect()
            }
            (false, _) => vec![LayerAttention::Global; num_layers],
        };
        let rope_local_theta = if architecture == Architecture::Gemma3 {
            Some(
                rope_params
                    .and_then(|r| r.get("sliding_attention"))
                    .and_then(|r| r.get("rope_theta"))
                    .and_then(Value::as_f64)
                    .or(f64_of("rope_local_base_freq"))
                    .unwrap_or(10_000.0),
            )
        } else {
            None
        };
        let config = ModelConfig {
            architecture,
            vocab_size: usize_of("vocab_size")?,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads: c.get("num_key_value_heads").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: f64_of("rms_norm_eps").ok_or_else(|| f("rms_norm_eps"))?,
            rope_theta,
            rope_local_theta,
            rope_scaling,
            rope_interleaved: false,
            max_position_embeddings: usize_of("max_position_embeddings").unwrap_or(4096),
            layer_attention,
            activation: if gemma { Activation::GeluTanh } else { Activation::Silu },
            qkv_bias: architecture == Architecture::Qwen2 || c.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
            qk_norm: match architecture {
                Architecture::Gemma3 | Architecture::Qwen3 => QkNorm::PerHead,
                Architecture::Olmo2 => QkNorm::Whole,
                _ => QkNorm::None,
            },
            pre_norms: architecture != Architecture::Olmo2,
            sandwich_norms: gemma || architecture == Architecture::Olmo2,
            scale_embeddings: gemma,
            attention_scale: match f64_of("query_pre_attn_scalar") {
                Some(s) if gemma => 1.0 / s.sqrt(),
                _ => 1.0 / (head_dim as f64).sqrt(),
            },
            tied_embeddings: c.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(gemma),
            final_logit_softcapping: f64_of("final_logit_softcapping"),
            attn_logit_softcapping: if architecture == Architecture::Gemma2 { f64_of("attn_logit_softcapping") } else { None },
        };
        config.validate().map_err(|reason| ModelError::field(p, "(config)", reason))?;
        Ok(config)
    }
}
