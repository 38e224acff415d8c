//! The architecture description shared by every supported model family.
//!
//! llama, qwen2 and gemma3 are one decoder with a handful of switches; this module
//! states those switches. Loaders (GGUF, Hugging Face directories) fill a
//! [`ModelConfig`] and the decoder reads nothing else.

use serde::Serialize;

/// The most blocks a model may have (the largest today have about 130): a count past it
/// is a broken file, refused before anything is sized by it.
pub const MAX_MODEL_LAYERS: usize = 1024;

/// The model families lcross runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama-2, Llama-3.x, SmolLM2.
    Llama,
    /// Qwen2, Qwen2.5.
    Qwen2,
    /// Qwen3 (dense): Qwen2 without Q/K/V biases, with RMS norms on Q and K per head.
    Qwen3,
    /// Gemma 3 (text).
    Gemma3,
    /// Gemma 2: soft-capped attention scores and logits, alternating sliding and global
    /// layers, sandwich norms.
    Gemma2,
    /// Phi-3: fused q/k/v and gate/up projections, LongRoPE scaling.
    Phi3,
    /// OLMo 2: norms after each branch instead of before, q/k norms over the whole
    /// projection.
    Olmo2,
}

impl Architecture {
    /// Parse the name used by GGUF (`general.architecture`) and HF `model_type`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "gemma3" | "gemma3_text" => Some(Self::Gemma3),
            "gemma2" => Some(Self::Gemma2),
            "phi3" => Some(Self::Phi3),
            "olmo2" => Some(Self::Olmo2),
            _ => None,
        }
    }
    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
            Self::Gemma2 => "gemma2",
            Self::Phi3 => "phi3",
            Self::Olmo2 => "olmo2",
        }
    }
    /// Gemma 2 or 3: (1 + w) norms, scaled embeddings, GELU, sandwich norms.
    pub fn is_gemma(&self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SiLU (llama, qwen2).
    Silu,
    /// GELU, tanh approximation (gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Frequency scaling of rotary embeddings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Llama-3.1 style: low frequencies divided by `factor`, a smooth band between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
    /// All frequencies divided by `factor`.
    Linear { factor: f64 },
    /// Each frequency divided by its own factor, read from the GGUF tensor
    /// `rope_freqs.weight` (how llama.cpp stores Llama-3.1's scaling).
    FreqFactors,
    /// Phi-3's LongRoPE within its original context: frequency `i` divided by
    /// `short_factor[i]`, cosines and sines multiplied by `attention_factor`. Past
    /// `original_max_position_embeddings` transformers switches every position to the
    /// long factors; lcross does not implement that switch and refuses longer sequences.
    LongRope { short_factor: Vec<f64>, attention_factor: f64, original_max_position_embeddings: usize },
}

/// Where a model normalises Q and K before rotary embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    /// No norm.
    None,
    /// An RMS norm of width `head_dim` on each head (qwen3, gemma3).
    PerHead,
    /// An RMS norm over the whole projection, all heads at once (olmo2).
    Whole,
}

/// Which attention a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerAttention {
    /// Causal attention over the whole context.
    Global,
    /// Causal attention over the last `window` positions (gemma3's local layers, every
    /// layer of a mistral with `sliding_window` set).
    Sliding { window: usize },
}

/// Everything the decoder needs to know about a model's shape and arithmetic.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Base of the rotary frequencies for global layers.
    pub rope_theta: f64,
    /// Base for sliding-window layers (gemma3 uses 10 000 there); `None`: same as global.
    pub rope_local_theta: Option<f64>,
    pub rope_scaling: Option<RopeScaling>,
    /// True when Q/K weights are stored in GGUF's interleaved ("normal", GPT-J) rotary
    /// layout; false for the half-split ("neox") layout of HF checkpoints, qwen2 and gemma.
    pub rope_interleaved: bool,
    /// Maximum context the model was trained for.
    pub max_position_embeddings: usize,
    /// Attention per layer (length `num_layers`).
    pub layer_attention: Vec<LayerAttention>,
    pub activation: Activation,
    /// Q, K, V projections have biases (qwen2).
    pub qkv_bias: bool,
    /// RMS norms on Q and K before rotary (qwen3, gemma3 per head; olmo2 whole).
    pub qk_norm: QkNorm,
    /// RMS norms on the input of the attention and MLP branches (every family but olmo2).
    pub pre_norms: bool,
    /// Extra norms after attention and after the MLP, before the residual add (gemma,
    /// olmo2).
    pub sandwich_norms: bool,
    /// Multiply token embeddings by sqrt(hidden_size) (gemma).
    pub scale_embeddings: bool,
    /// Softmax scale of attention scores (1/sqrt(head_dim), or gemma's query_pre_attn_scalar).
    pub attention_scale: f64,
    /// The output projection is the token embedding matrix.
    pub tied_embeddings: bool,
    /// Soft-capping of final logits (gemma2), if any: `cap * tanh(logits / cap)`.
    pub final_logit_softcapping: Option<f64>,
    /// Soft-capping of attention scores (gemma2), if any, before the mask.
    pub attn_logit_softcapping: Option<f64>,
}

impl ModelConfig {
    /// Sanity checks that keep absurd headers from allocating or panicking later.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
            if v > 1 << 24 {
                return Err(format!("{name} = {v} is implausibly large"));
            }
        }
        if self.num_layers > MAX_MODEL_LAYERS {
            return Err(format!("num_layers = {} is implausibly large", self.num_layers));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!("num_heads ({}) is not a multiple of num_kv_heads ({})", self.num_heads, self.num_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim ({}) is odd; rotary embeddings need it even", self.head_dim));
        }
        if self.layer_attention.len() != self.num_layers {
            return Err("layer_attention does not have one entry per layer".into());
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!("rms_norm_eps = {} is not a finite non-negative number", self.rms_norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta = {} is not a positive number", self.rope_theta));
        }
        for (name, cap) in [("final_logit_softcapping", self.final_logit_softcapping), ("attn_logit_softcapping", self.attn_logit_softcapping)] {
            if let Some(c) = cap {
                if !(c.is_finite() && c > 0.0) {
                    return Err(format!("{name} = {c} is not a positive number"));
                }
            }
        }
        if let Some(RopeScaling::LongRope { short_factor, attention_factor, original_max_position_embeddings }) = &self.rope_scaling {
            if short_factor.len() != self.head_dim / 2 {
                return Err(format!("short_factor has {} values, expected head_dim / 2 = {}", short_factor.len(), self.head_dim / 2));
            }
            if let Some(i) = short_factor.iter().position(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(format!("short_factor[{i}] = {} is not a positive number", short_factor[i]));
            }
            if !(attention_factor.is_finite() && *attention_factor > 0.0) || *original_max_position_embeddings == 0 {
                return Err(format!(
                    "longrope attention_factor {attention_factor} / original_max_position_embeddings {original_max_position_embeddings} out of range"
                ));
            }
        }
        Ok(())
    }

    /// The longest sequence (prompt and generated tokens) the model runs as its
    /// reference does: the trained context, or LongRoPE's original context.
    pub fn max_positions(&self) -> usize {
        match &self.rope_scaling {
            Some(RopeScaling::LongRope { original_max_position_embeddings, .. }) => self.max_position_embeddings.min(*original_max_position_embeddings),
            _ => self.max_position_embeddings,
        }
    }

    /// Number of parameters implied by the shapes (embedding counted once when tied).
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_heads * self.head_dim) as u64;
        let kv = (self.num_kv_heads * self.head_dim) as u64;
        let ff = self.intermediate_size as u64;
        let mut per_layer = h * q + 2 * h * kv + q * h + 3 * h * ff + 2 * h;
        if self.qkv_bias {
            per_layer += q + 2 * kv;
        }
        per_layer += match self.qk_norm {
            QkNorm::None => 0,
            QkNorm::PerHead => 2 * self.head_dim as u64,
            QkNorm::Whole => q + kv,
        };
        if !self.pre_norms {
            per_layer -= 2 * h;
        }
        if self.sandwich_norms {
            per_layer += 2 * h;
        }
        let emb = self.vocab_size as u64 * h;
        let head = if self.tied_embeddings { 0 } else { emb };
        emb + head + per_layer * self.num_layers as u64 + h
    }
}
