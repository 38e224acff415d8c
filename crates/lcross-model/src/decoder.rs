//! The decoder-only transformer shared by llama, qwen2 and gemma3.
//!
//! One readable forward pass; the families differ only in the switches of
//! [`ModelConfig`]. After each block the residual stream passes the hook point
//! `resid_post(layer)` where [`Hooks`] add steering vectors and capture states.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::cache::KvCache;
use crate::config::{Activation, LayerAttention, ModelConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::hooks::{CapturePositions, Hooks};
use candle_core::quantized::QMatMul;

use crate::weights::{requantize, Linear, WeightMode, WeightSource};

/// RMS normalisation with an effective per-channel multiplier (gemma's `1 + w` folded in).
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(src: &mut WeightSource, name: &str, dim: usize, eps: f64, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self { weight: src.dense(name, &[dim], dtype, device)?, eps: eps as f32 })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// Gated MLP: `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    activation: Activation,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = self.gate.forward(x)?;
        let gate = match self.activation {
            Activation::Silu => candle_nn::ops::silu(&gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        self.down.forward(&(gate * self.up.forward(x)?)?)
    }
}

/// Cosine/sine tables for the positions of one forward call.
struct RotaryTables {
    cos: Tensor,
    sin: Tensor,
}

/// Inverse rotary frequencies for a base, with the model's scaling applied.
fn inverse_frequencies(head_dim: usize, base: f64, scaling: Option<&RopeScaling>) -> Vec<f64> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let inv = 1.0 / base.powf((2 * i) as f64 / head_dim as f64);
            match scaling {
                None => inv,
                Some(RopeScaling::Linear { factor }) => inv / factor,
                Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
                    let low_wavelen = original_max_position_embeddings / low_freq_factor;
                    let high_wavelen = original_max_position_embeddings / high_freq_factor;
                    let wavelen = 2.0 * std::f64::consts::PI / inv;
                    if wavelen < high_wavelen {
                        inv
                    } else if wavelen > low_wavelen {
                        inv / factor
                    } else {
                        let smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * inv / factor + smooth * inv
                    }
                }
            }
        })
        .collect()
}

impl RotaryTables {
    fn new(inv_freq: &[f64], start: usize, len: usize, dtype: DType, device: &Device) -> Result<Self> {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for f in inv_freq {
                // f32 product as in the reference, then cos/sin.
                let angle = (p as f32 * *f as f32) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?,
        })
    }

    fn apply(&self, x: &Tensor, interleaved: bool) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        if interleaved {
            candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin)
        } else {
            candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin)
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    kind: LayerAttention,
    interleaved: bool,
}

impl Attention {
    /// `x`: `(b, t, hidden)` for positions `offset..offset + t`.
    fn forward(&self, x: &Tensor, rope: &RotaryTables, layer: usize, offset: usize, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> { y.reshape((b, t, n, self.head_dim))?.transpose(1, 2) };
        let mut q = heads(self.q.forward(x)?, self.num_heads)?;
        let mut k = heads(self.k.forward(x)?, self.num_kv_heads)?;
        let v = heads(self.v.forward(x)?, self.num_kv_heads)?.contiguous()?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let q = rope.apply(&q, self.interleaved)?;
        let k = rope.apply(&k, self.interleaved)?;
        let (k, v) = match cache {
            Some(c) => c.append(layer, k, v)?,
            None => (k, v),
        };
        let total = k.dim(2)?;
        let group = self.num_heads / self.num_kv_heads;
        let (k, v) = if group > 1 {
            let rep = |y: &Tensor| -> candle_core::Result<Tensor> {
                let (b, n, s, d) = y.dims4()?;
                y.unsqueeze(2)?.expand((b, n, group, s, d))?.reshape((b, n * group, s, d))
            };
            (rep(&k)?, rep(&v)?)
        } else {
            (k, v)
        };
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let scores = match causal_mask(t, offset, total, self.kind, x.device())? {
            Some(mask) => scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v.contiguous()?)?;
        let y = y.transpose(1, 2)?.reshape((b, t, self.num_heads * self.head_dim))?;
        Ok(self.o.forward(&y)?)
    }
}

/// Additive mask `(t, total)`: `-inf` where query `offset + i` may not see key `j`.
/// `None` when nothing is masked (one query that sees the whole context).
fn causal_mask(t: usize, offset: usize, total: usize, kind: LayerAttention, device: &Device) -> Result<Option<Tensor>> {
    let window = match kind {
        LayerAttention::Global => None,
        LayerAttention::Sliding { window } => Some(window),
    };
    let hidden = |i: usize, j: usize| {
        let q = offset + i;
        j > q || window.is_some_and(|w| q >= j + w)
    };
    if (0..t).all(|i| (0..total).all(|j| !hidden(i, j))) {
        return Ok(None);
    }
    let mut m = Vec::with_capacity(t * total);
    for i in 0..t {
        for j in 0..total {
            m.push(if hidden(i, j) { f32::NEG_INFINITY } else { 0.0 });
        }
    }
    Ok(Some(Tensor::from_vec(m, (t, total), device)?))
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    mlp: Mlp,
    post_ffn_norm: Option<RmsNorm>,
}

impl Block {
    fn forward(&self, x: &Tensor, rope: &RotaryTables, layer: usize, offset: usize, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let mut h = self.attn.forward(&self.attn_norm.forward(x)?, rope, layer, offset, cache)?;
        if let Some(n) = &self.post_attn_norm {
            h = n.forward(&h)?;
        }
        let x = (x + h)?;
        let mut h = self.mlp.forward(&self.ffn_norm.forward(&x)?)?;
        if let Some(n) = &self.post_ffn_norm {
            h = n.forward(&h)?;
        }
        Ok((x + h)?)
    }
}

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None: the pass may stop after the deepest hooked layer.
    None,
    /// Logits of the last position, shape `(vocab,)`.
    Last,
    /// Logits of every position, shape `(t, vocab)`.
    All,
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Logits as requested (f32).
    pub logits: Option<Tensor>,
    /// Captured `resid_post(layer)`: shape `(1, hidden)` for last-token captures,
    /// `(t, hidden)` for all-position captures (f32).
    pub captures: BTreeMap<usize, Tensor>,
}

/// The decoder with its weights.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: ModelConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    lm_head: Linear,
    inv_freq_global: Vec<f64>,
    inv_freq_local: Vec<f64>,
    dtype: DType,
    device: Device,
}

impl Decoder {
    /// Load every weight from `src` for `config`.
    pub fn load(config: ModelConfig, src: &mut WeightSource, dtype: DType, device: &Device) -> Result<Self> {
        let c = &config;
        let h = c.hidden_size;
        let (q_dim, kv_dim) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let embed = src.dense("token_embd.weight", &[c.vocab_size, h], dtype, device)?;
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let norm = |src: &mut WeightSource, s: &str, dim: usize| RmsNorm::load(src, &n(s), dim, c.rms_norm_eps, dtype, device);
            let attn = Attention {
                q: src.linear(&n("attn_q"), q_dim, h, c.qkv_bias, dtype, device)?,
                k: src.linear(&n("attn_k"), kv_dim, h, c.qkv_bias, dtype, device)?,
                v: src.linear(&n("attn_v"), kv_dim, h, c.qkv_bias, dtype, device)?,
                o: src.linear(&n("attn_output"), h, q_dim, false, dtype, device)?,
                q_norm: if c.qk_norm { Some(norm(src, "attn_q_norm.weight", c.head_dim)?) } else { None },
                k_norm: if c.qk_norm { Some(norm(src, "attn_k_norm.weight", c.head_dim)?) } else { None },
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                scale: c.attention_scale,
                kind: c.layer_attention[i],
                interleaved: c.rope_interleaved,
            };
            blocks.push(Block {
                attn_norm: norm(src, "attn_norm.weight", h)?,
                attn,
                post_attn_norm: if c.sandwich_norms { Some(norm(src, "post_attention_norm.weight", h)?) } else { None },
                ffn_norm: norm(src, "ffn_norm.weight", h)?,
                mlp: Mlp {
                    gate: src.linear(&n("ffn_gate"), c.intermediate_size, h, false, dtype, device)?,
                    up: src.linear(&n("ffn_up"), c.intermediate_size, h, false, dtype, device)?,
                    down: src.linear(&n("ffn_down"), h, c.intermediate_size, false, dtype, device)?,
                    activation: c.activation,
                },
                post_ffn_norm: if c.sandwich_norms { Some(norm(src, "post_ffw_norm.weight", h)?) } else { None },
            });
        }
        let final_norm = RmsNorm::load(src, "output_norm.weight", h, c.rms_norm_eps, dtype, device)?;
        let lm_head = match (c.tied_embeddings, src.mode()) {
            (false, _) => src.linear("output", c.vocab_size, h, false, dtype, device)?,
            (true, WeightMode::F32) => Linear::new(QMatMul::Tensor(embed.clone()), None),
            (true, WeightMode::Quantized) => Linear::new(requantize(&embed)?, None),
        };
        let inv_freq_global = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling.as_ref());
        let inv_freq_local = inverse_frequencies(c.head_dim, c.rope_local_theta.unwrap_or(c.rope_theta), None);
        Ok(Self { config, embed, blocks, final_norm, lm_head, inv_freq_global, inv_freq_local, dtype, device: device.clone() })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Run `tokens` (positions `cache.len()..`) through the model.
    ///
    /// With a cache, keys/values are appended to it. Without logits the pass stops
    /// after the deepest hooked layer (and a cache then only covers layers up to it).
    pub fn forward(&self, tokens: &[u32], cache: Option<&mut KvCache>, hooks: &Hooks, logits: Logits) -> Result<ForwardOutput> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(ModelError::InvalidInput("empty input: at least one token is needed".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::InvalidInput(format!("token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
        }
        for l in hooks.captures.iter().map(|c| c.layer).chain(hooks.interventions.iter().map(|i| i.layer)) {
            if l >= c.num_layers {
                return Err(ModelError::InvalidInput(format!("layer {l} is out of range: the model has layers 0..={}", c.num_layers - 1)));
            }
        }
        for iv in &hooks.interventions {
            if iv.vector.dims() != [c.hidden_size] {
                return Err(ModelError::InvalidInput(format!(
                    "steering vector for layer {} has shape {:?}, the model's hidden size is {}", iv.layer, iv.vector.dims(), c.hidden_size)));
            }
        }
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let t = tokens.len();
        if offset + t > c.max_position_embeddings {
            return Err(ModelError::InvalidInput(format!(
                "sequence of {} tokens is longer than the model's context of {}", offset + t, c.max_position_embeddings)));
        }
        let last_layer = match logits {
            Logits::None => hooks.deepest_layer().ok_or_else(|| ModelError::InvalidInput("forward pass with no logits and no hooks does nothing".into()))?,
            _ => c.num_layers - 1,
        };
        let mut cache = cache;
        if let Some(kv) = cache.as_deref() {
            if !kv.is_empty() && last_layer >= kv.valid_layers() {
                return Err(ModelError::InvalidInput(format!(
                    "the KV cache covers layers 0..{} only (filled by a pass that stopped early); layer {last_layer} is needed",
                    kv.valid_layers())));
            }
        }
        let prompt_len = hooks.prompt_len.unwrap_or(offset + t);

        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.embedding(&ids.squeeze(0)?)?.unsqueeze(0)?;
        if c.scale_embeddings {
            // The reference multiplies by sqrt(hidden) rounded to the compute dtype.
            x = (x * ((c.hidden_size as f32).sqrt() as f64))?;
        }
        let rope_global = RotaryTables::new(&self.inv_freq_global, offset, t, self.dtype, &self.device)?;
        let rope_local = match c.rope_local_theta {
            Some(_) => Some(RotaryTables::new(&self.inv_freq_local, offset, t, self.dtype, &self.device)?),
            None => None,
        };
        let mut captures = BTreeMap::new();
        for (layer, block) in self.blocks.iter().enumerate().take(last_layer + 1) {
            let rope = match (block.attn.kind, &rope_local) {
                (LayerAttention::Sliding { .. }, Some(local)) => local,
                _ => &rope_global,
            };
            x = block.forward(&x, rope, layer, offset, cache.as_deref_mut())?;
            for iv in hooks.interventions.iter().filter(|iv| iv.layer == layer) {
                let mask: Vec<f32> = (offset..offset + t).map(|p| if iv.positions.contains(p, prompt_len) { 1.0 } else { 0.0 }).collect();
                if mask.iter().all(|&m| m == 0.0) {
                    continue;
                }
                let mask = Tensor::from_vec(mask, (1, t, 1), &self.device)?.to_dtype(self.dtype)?;
                let delta = mask.broadcast_mul(&(iv.vector.to_dtype(self.dtype)? * iv.scale)?.reshape((1, 1, c.hidden_size))?)?;
                x = (x + delta)?;
            }
            for cap in hooks.captures.iter().filter(|cap| cap.layer == layer) {
                let state = match cap.positions {
                    CapturePositions::Last => x.narrow(1, t - 1, 1)?,
                    CapturePositions::All => x.clone(),
                };
                captures.insert(layer, state.squeeze(0)?.to_dtype(DType::F32)?);
            }
        }
        if let Some(kv) = cache.as_deref_mut() {
            kv.advance(t, last_layer + 1);
        }
        let logits = match logits {
            Logits::None => None,
            Logits::Last | Logits::All => {
                let x = if logits == Logits::Last { x.narrow(1, t - 1, 1)? } else { x };
                let x = self.final_norm.forward(&x)?;
                let mut out = self.lm_head.forward(&x)?;
                if let Some(cap) = c.final_logit_softcapping {
                    out = ((out / cap)?.tanh()? * cap)?;
                }
                let out = out.squeeze(0)?.to_dtype(DType::F32)?;
                Some(if logits == Logits::Last { out.squeeze(0)? } else { out })
            }
        };
        Ok(ForwardOutput { logits, captures })
    }
}
