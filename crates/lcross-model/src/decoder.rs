//! The decoder-only transformer shared by every family lcross runs (llama, mistral,
//! qwen2, qwen3, gemma2, gemma3, phi3, olmo2).
//!
//! One readable forward pass; the families differ only in the switches of
//! [`ModelConfig`]. After each block the residual stream passes the hook point
//! `resid_post(layer)` where [`Hooks`] add steering vectors and capture states.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::cache::KvCache;
use crate::config::{Activation, Architecture, LayerAttention, ModelConfig, QkNorm, RopeScaling};
use crate::embedding::TokenEmbedding;
use crate::error::{ModelError, Result};
use crate::hooks::{CapturePositions, HookName, HookPoint, Hooks, InterventionKind};
use candle_core::quantized::QMatMul;

use crate::linear::{transposed_input, Linear, SharedInput};
use crate::weights::{requantize, WeightMode, WeightSource};

/// The largest norm an added steering (`|scale| x |v|`) may have: the square root of
/// f32's largest value. Beyond it a hidden state's sum of squares is infinite and every
/// RMSNorm after it returns zeros, so the model would answer its end-of-text token with
/// finite logits (no NaN to catch later).
pub const MAX_STEERING_NORM: f64 = 1.844_674_3e19;

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

/// Gated MLP: `down(act(gate(x)) * up(x))`, with gate and up stacked into one product.
#[derive(Debug, Clone)]
struct Mlp {
    gate_up: SharedInput,
    down: Linear,
    activation: Activation,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = x.elem_count() / self.gate_up.in_dim()?.max(1);
        if self.gate_up.takes_transposed(rows) && self.down.takes_transposed(rows) {
            // Few rows (decoding): the whole MLP in the transposed layout, so only its
            // narrow input and output are transposed, not the wide intermediate.
            let parts = self.gate_up.forward_t(&transposed_input(x)?)?;
            let out_t = self.down.forward_t(&(self.activate(&parts[0])? * &parts[1])?)?;
            return crate::transpose::transposed(&out_t)?.reshape(x.shape());
        }
        let parts = self.gate_up.forward(x)?;
        self.down.forward(&(self.activate(&parts[0])? * &parts[1])?)
    }

    fn activate(&self, gate: &Tensor) -> candle_core::Result<Tensor> {
        match self.activation {
            Activation::Silu => candle_nn::ops::silu(gate),
            Activation::GeluTanh => gate.gelu(),
        }
    }
}

/// Cosine/sine tables of every position up to the model's context, computed once at
/// load; a forward pass takes the rows of its positions.
#[derive(Debug, Clone)]
struct RotaryTables {
    /// `(positions, head_dim / 2)` in the compute dtype.
    cos: Tensor,
    sin: Tensor,
}

/// Positions covered by the rotary tables at most (8 MiB per table at head_dim 64);
/// longer contexts are refused with a clear error.
const ROTARY_TABLE_MAX: usize = 1 << 16;

/// Inverse rotary frequencies for a base, with the model's scaling applied.
fn inverse_frequencies(head_dim: usize, base: f64, scaling: Option<&RopeScaling>) -> Vec<f64> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let inv = 1.0 / base.powf((2 * i) as f64 / head_dim as f64);
            match scaling {
                None => inv,
                Some(RopeScaling::Linear { factor }) => inv / factor,
                // divided by the file's factors when the decoder loads them
                Some(RopeScaling::FreqFactors) => inv,
                Some(RopeScaling::LongRope { short_factor, .. }) => inv / short_factor[i],
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
    /// Tables of `len` positions; cosines and sines are multiplied by `magnitude`
    /// (LongRoPE's attention factor; 1 elsewhere).
    fn new(inv_freq: &[f64], len: usize, magnitude: f64, dtype: DType, device: &Device) -> Result<Self> {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for f in inv_freq {
                // f32 product as in the reference, then cos/sin.
                let angle = (p as f32 * *f as f32) as f64;
                cos.push((angle.cos() * magnitude) as f32);
                sin.push((angle.sin() * magnitude) as f32);
            }
        }
        Ok(Self { cos: Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?, sin: Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)? })
    }

    /// The tables of a pass: `(t, half)` when every row starts at the same offset,
    /// else `(rows, t, half)` gathered per row.
    fn for_pass(&self, offsets: &[usize], t: usize) -> Result<PassRotary> {
        let first = offsets[0];
        let last = self.cos.dim(0)? - 1;
        if offsets.iter().all(|&o| o == first) && first + t <= last + 1 {
            return Ok(PassRotary { cos: self.cos.narrow(0, first, t)?, sin: self.sin.narrow(0, first, t)? });
        }
        // Padded positions past the table are clamped: their outputs are never read.
        let idx: Vec<u32> = offsets.iter().flat_map(|&o| (o..o + t).map(move |p| p.min(last) as u32)).collect();
        let idx = Tensor::from_vec(idx, offsets.len() * t, self.cos.device())?;
        let shape = (offsets.len(), t, self.cos.dim(1)?);
        Ok(PassRotary { cos: self.cos.index_select(&idx, 0)?.reshape(shape)?, sin: self.sin.index_select(&idx, 0)?.reshape(shape)? })
    }
}

/// The rotary rows of one pass.
struct PassRotary {
    cos: Tensor,
    sin: Tensor,
}

impl PassRotary {
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
    /// q, k and v, stacked.
    qkv: SharedInput,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    /// The q/k norms span the whole projection (olmo2), not each head.
    qk_norm_whole: bool,
    /// `cap * tanh(scores / cap)` before the mask (gemma2).
    softcap: Option<f64>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    kind: LayerAttention,
    interleaved: bool,
}

impl Attention {
    /// `x`: `(rows, t, hidden)`; row `i` holds positions `offsets[i]..offsets[i] + t`
    /// (its real tokens first, then padding). `mask`: additive `(rows, 1, 1, t, keys)`
    /// over key slots `key_start..` (None: nothing hidden).
    fn forward(&self, x: &Tensor, rope: &PassRotary, layer: usize, mask: Option<&PassMask>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> { y.reshape((b, t, n, self.head_dim))?.transpose(1, 2) };
        let mut qkv = self.qkv.forward(x)?.into_iter();
        let mut next = || qkv.next().ok_or_else(|| ModelError::InvalidInput("attention projections: q, k and v expected".into()));
        let (mut q, mut k) = (next()?, next()?);
        if let (true, Some(qn), Some(kn)) = (self.qk_norm_whole, &self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let mut q = heads(q, self.num_heads)?;
        let mut k = heads(k, self.num_kv_heads)?;
        let v = heads(next()?, self.num_kv_heads)?.contiguous()?;
        if let (false, Some(qn), Some(kn)) = (self.qk_norm_whole, &self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let q = rope.apply(&q, self.interleaved)?;
        let k = rope.apply(&k, self.interleaved)?;
        let (k, v) = match cache {
            Some(c) => c.write(layer, &k, &v)?,
            None => (k, v),
        };
        let (k, v) = match mask {
            Some(m) if m.key_start > 0 => {
                let keys = k.dim(2)? - m.key_start;
                (k.narrow(2, m.key_start, keys)?, v.narrow(2, m.key_start, keys)?)
            }
            _ => (k, v),
        };
        let keys = k.dim(2)?;
        // Grouped-query attention without repeating K/V: the `group` query heads that
        // share a K/V head are stacked as rows of one matrix.
        let group = self.num_heads / self.num_kv_heads;
        let q = q.reshape((b, self.num_kv_heads, group * t, self.head_dim))?;
        crate::flops::add(2 * 2 * (b * self.num_heads * t * keys * self.head_dim) as u64);
        if t == 1 && self.softcap.is_none() {
            // A decode step: one kernel where the device has one (the CPU, f32).
            let full = vec![(0, keys); b];
            let visible = mask.map_or(&full, |m| &m.decode_visible);
            if let Some(y) = crate::decode_attention::attend(&q, &k, &v, visible, self.scale)? {
                return Ok(self.o.forward(&y.reshape((b, 1, self.num_heads * self.head_dim))?)?);
            }
        }
        let mut scores = (q.matmul(&k.t()?)? * self.scale)?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = match mask {
            Some(m) => scores.reshape((b, self.num_kv_heads, group, t, keys))?.broadcast_add(&m.additive)?.reshape((b, self.num_kv_heads, group * t, keys))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?;
        let y = y.reshape((b, self.num_heads, t, self.head_dim))?.transpose(1, 2)?.reshape((b, t, self.num_heads * self.head_dim))?;
        Ok(self.o.forward(&y)?)
    }
}

/// The additive attention mask of one pass for one kind of layer.
struct PassMask {
    /// `(rows, 1, 1, t, keys)`: 0 where a query may see a key slot, `-inf` elsewhere.
    additive: Tensor,
    /// First key slot any query of the pass may see (a sliding window skips the rest).
    key_start: usize,
    /// For one token per row (`t == 1`): the key slots each row sees, counted from
    /// `key_start` (the same visibility as `additive`, as ranges).
    decode_visible: Vec<(usize, usize)>,
}

/// The mask for rows at `offsets` (`t` tokens each, padding included) attending over
/// `total` key slots. Query `j` of row `i` sits at position `offsets[i] + j` and sees
/// slots up to its position (and within the window); padded queries see the same way,
/// so they stay finite. None when nothing is hidden.
fn pass_mask(offsets: &[usize], t: usize, total: usize, kind: LayerAttention, dtype: DType, device: &Device) -> Result<Option<PassMask>> {
    let window = match kind {
        LayerAttention::Global => None,
        LayerAttention::Sliding { window } => Some(window),
    };
    let key_start = match window {
        Some(w) => offsets.iter().map(|&o| (o + 1).saturating_sub(w)).min().unwrap_or(0),
        None => 0,
    };
    let visible = |o: usize, j: usize, s: usize| {
        let q = o + j;
        s <= q && window.is_none_or(|w| q < s + w)
    };
    let all_visible = offsets.iter().all(|&o| (0..t).all(|j| (key_start..total).all(|s| visible(o, j, s))));
    if all_visible && key_start == 0 {
        return Ok(None);
    }
    let keys = total - key_start;
    let mut m = Vec::with_capacity(offsets.len() * t * keys);
    for &o in offsets {
        for j in 0..t {
            for s in key_start..total {
                m.push(if visible(o, j, s) { 0.0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    let additive = Tensor::from_vec(m, (offsets.len(), 1, 1, t, keys), device)?.to_dtype(dtype)?;
    let decode_visible = if t == 1 {
        offsets.iter().map(|&o| (window.map_or(0, |w| (o + 1).saturating_sub(w)).max(key_start) - key_start, o + 1 - key_start)).collect()
    } else {
        Vec::new()
    };
    Ok(Some(PassMask { additive, key_start, decode_visible }))
}

#[derive(Debug, Clone)]
struct Block {
    /// None where the family normalises after the branch only (olmo2).
    attn_norm: Option<RmsNorm>,
    attn: Attention,
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: Option<RmsNorm>,
    mlp: Mlp,
    post_ffn_norm: Option<RmsNorm>,
}

impl Block {
    /// What the attention branch adds to the stream `x`: `attn_out(layer)`.
    fn attention_branch(&self, x: &Tensor, rope: &PassRotary, layer: usize, mask: Option<&PassMask>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let input = match &self.attn_norm {
            Some(n) => n.forward(x)?,
            None => x.clone(),
        };
        let mut h = self.attn.forward(&input, rope, layer, mask, cache)?;
        if let Some(n) = &self.post_attn_norm {
            h = n.forward(&h)?;
        }
        Ok(h)
    }

    /// What the MLP branch adds to the stream `x`: `mlp_out(layer)`.
    fn mlp_branch(&self, x: &Tensor) -> Result<Tensor> {
        let input = match &self.ffn_norm {
            Some(n) => n.forward(x)?,
            None => x.clone(),
        };
        let mut h = self.mlp.forward(&input)?;
        if let Some(n) = &self.post_ffn_norm {
            h = n.forward(&h)?;
        }
        Ok(h)
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

/// What a forward pass returns (one per row of a batch).
#[derive(Debug)]
pub struct ForwardOutput {
    /// Logits as requested (f32): `(vocab,)` for [`Logits::Last`], `(t, vocab)` for
    /// [`Logits::All`] over the row's real tokens.
    pub logits: Option<Tensor>,
    /// Captured hook points: shape `(1, hidden)` for last-token captures, `(t, hidden)`
    /// for all-position captures (f32).
    pub captures: BTreeMap<HookName, Tensor>,
}

/// One row of a batched forward pass: its new tokens and its own hooks.
#[derive(Debug, Clone, Copy)]
pub struct BatchRow<'a> {
    /// Tokens at positions `cache_len..cache_len + tokens.len()` of this row.
    pub tokens: &'a [u32],
    /// Captures and interventions of this row only.
    pub hooks: &'a Hooks,
}

/// Residual streams of a padded batch part way through the decoder, for callers that
/// run the layers below a split point once and fork the rows into several conditions
/// (see [`Decoder::begin`], [`Decoder::run_layers`], [`BatchState::fork`]).
///
/// Rows are right-padded to a common length; no KV cache is involved.
#[derive(Debug, Clone)]
pub struct BatchState {
    /// `(rows, t, hidden)` in the compute dtype.
    x: Tensor,
    /// Real tokens per row.
    lens: Vec<usize>,
    /// Blocks `0..next_layer` have run.
    next_layer: usize,
}

impl BatchState {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.lens.len()
    }
    /// The next block to run.
    pub fn next_layer(&self) -> usize {
        self.next_layer
    }
    /// A state whose rows are copies of `rows` of this one (repeats fork a row).
    pub fn fork(&self, rows: &[usize]) -> Result<BatchState> {
        if rows.is_empty() {
            return Err(ModelError::InvalidInput("forking a batch into no rows".into()));
        }
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows()) {
            return Err(ModelError::InvalidInput(format!("row {bad} is out of range: the batch has {} rows", self.rows())));
        }
        let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), rows.len(), self.x.device())?;
        Ok(BatchState { x: self.x.index_select(&idx, 0)?, lens: rows.iter().map(|&r| self.lens[r]).collect(), next_layer: self.next_layer })
    }
}

/// The decoder with its weights.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: ModelConfig,
    embed: TokenEmbedding,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    lm_head: Linear,
    rotary_global: RotaryTables,
    rotary_local: Option<RotaryTables>,
    dtype: DType,
    device: Device,
}

impl AsRef<Decoder> for Decoder {
    fn as_ref(&self) -> &Decoder {
        self
    }
}

impl Decoder {
    /// Load every weight from `src` for `config`.
    pub fn load(config: ModelConfig, src: &mut WeightSource, dtype: DType, device: &Device) -> Result<Self> {
        let c = &config;
        let h = c.hidden_size;
        let (q_dim, kv_dim) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let embed = match src.quantized_table("token_embd.weight", &[c.vocab_size, h])? {
            Some(table) => TokenEmbedding::quantized(table)?,
            None => TokenEmbedding::Dense(src.dense("token_embd.weight", &[c.vocab_size, h], dtype, device)?),
        };
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let norm = |src: &mut WeightSource, s: &str, dim: usize| RmsNorm::load(src, &n(s), dim, c.rms_norm_eps, dtype, device);
            // Phi-3 stores q/k/v and gate/up fused (as its GGUF does): split by rows.
            let fused = c.architecture == Architecture::Phi3;
            let qkv = if fused {
                src.linear_parts(&n("attn_qkv"), &[q_dim, kv_dim, kv_dim], h, dtype, device)?
            } else {
                vec![
                    src.linear(&n("attn_q"), q_dim, h, c.qkv_bias, dtype, device)?,
                    src.linear(&n("attn_k"), kv_dim, h, c.qkv_bias, dtype, device)?,
                    src.linear(&n("attn_v"), kv_dim, h, c.qkv_bias, dtype, device)?,
                ]
            };
            let (q_norm, k_norm) = match c.qk_norm {
                QkNorm::None => (None, None),
                QkNorm::PerHead => (Some(norm(src, "attn_q_norm.weight", c.head_dim)?), Some(norm(src, "attn_k_norm.weight", c.head_dim)?)),
                QkNorm::Whole => (Some(norm(src, "attn_q_norm.weight", q_dim)?), Some(norm(src, "attn_k_norm.weight", kv_dim)?)),
            };
            let gate_up = if fused {
                src.linear_parts(&n("ffn_up"), &[c.intermediate_size, c.intermediate_size], h, dtype, device)?
            } else {
                vec![
                    src.linear(&n("ffn_gate"), c.intermediate_size, h, false, dtype, device)?,
                    src.linear(&n("ffn_up"), c.intermediate_size, h, false, dtype, device)?,
                ]
            };
            let attn = Attention {
                qkv: SharedInput::new(qkv)?,
                o: src.linear(&n("attn_output"), h, q_dim, false, dtype, device)?,
                q_norm,
                k_norm,
                qk_norm_whole: c.qk_norm == QkNorm::Whole,
                softcap: c.attn_logit_softcapping,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                scale: c.attention_scale,
                kind: c.layer_attention[i],
                interleaved: c.rope_interleaved,
            };
            blocks.push(Block {
                attn_norm: if c.pre_norms { Some(norm(src, "attn_norm.weight", h)?) } else { None },
                attn,
                post_attn_norm: if c.sandwich_norms { Some(norm(src, "post_attention_norm.weight", h)?) } else { None },
                ffn_norm: if c.pre_norms { Some(norm(src, "ffn_norm.weight", h)?) } else { None },
                mlp: Mlp {
                    gate_up: SharedInput::new(gate_up)?,
                    down: src.linear(&n("ffn_down"), h, c.intermediate_size, false, dtype, device)?,
                    activation: c.activation,
                },
                post_ffn_norm: if c.sandwich_norms { Some(norm(src, "post_ffw_norm.weight", h)?) } else { None },
            });
        }
        let final_norm = RmsNorm::load(src, "output_norm.weight", h, c.rms_norm_eps, dtype, device)?;
        let lm_head = match (c.tied_embeddings, &embed) {
            (false, _) => src.linear("output", c.vocab_size, h, false, dtype, device)?,
            (true, TokenEmbedding::Dense(e)) if src.mode() == WeightMode::F32 => Linear::new(QMatMul::Tensor(e.clone()), None),
            (true, TokenEmbedding::Dense(e)) => Linear::new(requantize(e)?, None),
            // The same Q8_0 copy as from the dense table (dequantized for the copy only).
            (true, TokenEmbedding::Quantized { table, .. }) => Linear::new(requantize(&table.dequantize(device)?.to_dtype(dtype)?)?, None),
        };
        let table_len = c.max_positions().min(ROTARY_TABLE_MAX);
        let mut inv_freq_global = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling.as_ref());
        if c.rope_scaling == Some(RopeScaling::FreqFactors) {
            let factors: Vec<f32> = src.dense("rope_freqs.weight", &[c.head_dim / 2], DType::F32, &Device::Cpu)?.to_vec1()?;
            if let Some(i) = factors.iter().position(|f| !(*f > 0.0)) {
                return Err(crate::ModelError::InvalidInput(format!("rope_freqs.weight[{i}] is {}: frequency factors must be positive", factors[i])));
            }
            inv_freq_global.iter_mut().zip(&factors).for_each(|(x, f)| *x /= *f as f64);
        }
        let magnitude = match &c.rope_scaling {
            Some(RopeScaling::LongRope { attention_factor, .. }) => *attention_factor,
            _ => 1.0,
        };
        let rotary_global = RotaryTables::new(&inv_freq_global, table_len, magnitude, dtype, device)?;
        let rotary_local = match c.rope_local_theta {
            Some(theta) => Some(RotaryTables::new(&inverse_frequencies(c.head_dim, theta, None), table_len, 1.0, dtype, device)?),
            None => None,
        };
        Ok(Self { config, embed, blocks, final_norm, lm_head, rotary_global, rotary_local, dtype, device: device.clone() })
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

    /// The input embeddings of `ids` as block 0 receives them (Gemma's scaling applied),
    /// in f32: one row per id.
    pub fn token_embeddings(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::InvalidInput(format!("token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut x = self.embed.rows(ids, DType::F32, &self.device)?.reshape((ids.len(), c.hidden_size))?;
        if c.scale_embeddings {
            x = (x * ((c.hidden_size as f32).sqrt() as f64))?;
        }
        Ok(x.to_vec2::<f32>()?)
    }

    /// Longest sequence a row may reach.
    pub fn max_sequence(&self) -> usize {
        self.config.max_positions().min(ROTARY_TABLE_MAX)
    }

    /// Run `tokens` (positions `cache.len()..`) through the model: a batch of one row.
    ///
    /// With a cache, keys/values are appended to it. Without logits the pass stops
    /// after the deepest hooked layer (and a cache then only covers layers up to it).
    pub fn forward(&self, tokens: &[u32], cache: Option<&mut KvCache>, hooks: &Hooks, logits: Logits) -> Result<ForwardOutput> {
        let mut out = self.forward_batch(&[BatchRow { tokens, hooks }], cache, logits)?;
        Ok(out.pop().expect("one row in, one row out"))
    }

    /// Run several rows in one pass: row `i` continues row `i` of `cache` (or starts at
    /// position 0 without a cache) with its own tokens and its own hooks. Rows are
    /// right-padded to the longest; padding never reaches a real position (causal
    /// mask) and is dropped from the outputs. Results equal one [`Decoder::forward`]
    /// per row to float rounding.
    ///
    /// Without logits the pass stops after the deepest layer any row hooks. Before the
    /// pass, the caller's [`crate::interrupt`] check may stop it ([`ModelError::Interrupted`]).
    pub fn forward_batch(&self, rows: &[BatchRow<'_>], cache: Option<&mut KvCache>, logits: Logits) -> Result<Vec<ForwardOutput>> {
        crate::interrupt::check()?;
        let offsets: Vec<usize> = match cache.as_deref() {
            Some(kv) => {
                if kv.rows() != rows.len() {
                    return Err(ModelError::InvalidInput(format!("the KV cache has {} rows, the batch {}", kv.rows(), rows.len())));
                }
                kv.row_lens().to_vec()
            }
            None => vec![0; rows.len()],
        };
        self.check_rows(rows, &offsets)?;
        let last_layer = match logits {
            Logits::None => rows
                .iter()
                .filter_map(|r| r.hooks.deepest_layer())
                .max()
                .ok_or_else(|| ModelError::InvalidInput("forward pass with no logits and no hooks does nothing".into()))?,
            _ => self.config.num_layers - 1,
        };
        let mut cache = cache;
        if let Some(kv) = cache.as_deref() {
            if !kv.is_empty() && last_layer >= kv.valid_layers() {
                return Err(ModelError::InvalidInput(format!(
                    "the KV cache covers layers 0..{} only (filled by a pass that stopped early); layer {last_layer} is needed",
                    kv.valid_layers()
                )));
            }
        }
        let mut state = self.embed_rows(rows)?;
        let hooks: Vec<&Hooks> = rows.iter().map(|r| r.hooks).collect();
        let mut captures = vec![BTreeMap::new(); rows.len()];
        self.run(&mut state, &offsets, &hooks, last_layer + 1, cache.as_deref_mut(), &mut captures)?;
        if let Some(kv) = cache {
            kv.advance(&state.lens, last_layer + 1);
        }
        self.outputs(&state, captures, logits)
    }

    /// Embed rows (no KV cache, positions from 0) and return the state before block 0.
    pub fn begin(&self, rows: &[&[u32]]) -> Result<BatchState> {
        let none = Hooks::none();
        let batch: Vec<BatchRow<'_>> = rows.iter().map(|&tokens| BatchRow { tokens, hooks: &none }).collect();
        self.check_rows(&batch, &vec![0; rows.len()])?;
        self.embed_rows(&batch)
    }

    /// Run blocks `state.next_layer()..until` with each row's hooks (`hooks[i]` for row
    /// `i`) and return the captures per row.
    pub fn run_layers(&self, state: &mut BatchState, hooks: &[&Hooks], until: usize) -> Result<Vec<BTreeMap<HookName, Tensor>>> {
        crate::interrupt::check()?;
        if hooks.len() != state.rows() {
            return Err(ModelError::InvalidInput(format!("{} hooks for {} rows", hooks.len(), state.rows())));
        }
        if until > self.config.num_layers || until < state.next_layer {
            return Err(ModelError::InvalidInput(format!("cannot run blocks {}..{until} of a {}-layer model", state.next_layer, self.config.num_layers)));
        }
        for h in hooks {
            self.check_hooks(h)?;
        }
        let mut captures = vec![BTreeMap::new(); state.rows()];
        self.run(state, &vec![0; state.rows()], hooks, until, None, &mut captures)?;
        Ok(captures)
    }

    /// Logits of the last real token of each row of a state that ran every block:
    /// `(rows, vocab)` (f32).
    pub fn last_logits(&self, state: &BatchState) -> Result<Tensor> {
        if state.next_layer != self.config.num_layers {
            return Err(ModelError::InvalidInput(format!("logits need all {} blocks; {} have run", self.config.num_layers, state.next_layer)));
        }
        self.head(&self.last_positions(state)?)
    }

    /// Check hooks against the model: layers in range, vectors of the hidden size,
    /// finite scales, and an added `scale * vector` whose squared norm f32 can hold
    /// (below [`MAX_STEERING_NORM`]).
    pub fn check_hooks(&self, hooks: &Hooks) -> Result<()> {
        let c = &self.config;
        for l in hooks.captures.iter().map(|c| c.layer).chain(hooks.interventions.iter().map(|i| i.layer)) {
            if l >= c.num_layers {
                return Err(ModelError::InvalidInput(format!("layer {l} is out of range: the model has layers 0..={}", c.num_layers - 1)));
            }
        }
        for iv in &hooks.interventions {
            if iv.vector.dims() != [c.hidden_size] {
                return Err(ModelError::InvalidInput(format!(
                    "steering vector for layer {} has shape {:?}, the model's hidden size is {}",
                    iv.layer,
                    iv.vector.dims(),
                    c.hidden_size
                )));
            }
            if !iv.scale.is_finite() {
                return Err(ModelError::InvalidInput(format!("steering scale for layer {} is {} (not finite)", iv.layer, iv.scale)));
            }
            let norm = iv.vector.to_dtype(DType::F32)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
            if iv.kind != InterventionKind::Add && !(norm.is_finite() && norm > 0.0) {
                return Err(ModelError::InvalidInput(format!("{} at {} needs a direction: the vector's norm is {norm}", iv.kind, iv.name())));
            }
            let added = iv.scale.abs() * norm as f64;
            if iv.kind == InterventionKind::Add && !(added < MAX_STEERING_NORM) {
                return Err(ModelError::InvalidInput(format!(
                    "steering at {} of layer {}: |scale| x |v| = {:.3e} x {norm:.3e} = {added:.3e} is beyond {MAX_STEERING_NORM:.3e}, where the squared norm of a hidden state overflows f32 (every norm layer after it would return zeros): lower beta",
                    iv.point.as_str(),
                    iv.layer,
                    iv.scale.abs()
                )));
            }
        }
        Ok(())
    }

    fn check_rows(&self, rows: &[BatchRow<'_>], offsets: &[usize]) -> Result<()> {
        let c = &self.config;
        if rows.is_empty() {
            return Err(ModelError::InvalidInput("empty batch: at least one row is needed".into()));
        }
        let many = rows.len() > 1;
        let ctx = |i: usize, msg: String| ModelError::InvalidInput(if many { format!("row {i}: {msg}") } else { msg });
        for (i, (row, &offset)) in rows.iter().zip(offsets).enumerate() {
            if row.tokens.is_empty() {
                return Err(ctx(i, "empty input: at least one token is needed".into()));
            }
            if let Some(&bad) = row.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(ctx(i, format!("token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
            }
            if offset + row.tokens.len() > self.max_sequence() {
                return Err(ctx(i, format!("sequence of {} tokens is longer than the model's context of {}", offset + row.tokens.len(), self.max_sequence())));
            }
            self.check_hooks(row.hooks).map_err(|e| match e {
                ModelError::InvalidInput(m) => ctx(i, m),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Token embeddings of right-padded rows (padding: token 0).
    fn embed_rows(&self, rows: &[BatchRow<'_>]) -> Result<BatchState> {
        let c = &self.config;
        let t = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * t);
        for r in rows {
            ids.extend_from_slice(r.tokens);
            ids.extend(std::iter::repeat_n(0u32, t - r.tokens.len()));
        }
        let mut x = self.embed.rows(&ids, self.dtype, &self.device)?.reshape((rows.len(), t, c.hidden_size))?;
        if c.scale_embeddings {
            // The reference multiplies by sqrt(hidden) rounded to the compute dtype.
            x = (x * ((c.hidden_size as f32).sqrt() as f64))?;
        }
        Ok(BatchState { x, lens: rows.iter().map(|r| r.tokens.len()).collect(), next_layer: 0 })
    }

    /// Blocks `state.next_layer..until`, each followed by its hooks.
    fn run(
        &self,
        state: &mut BatchState,
        offsets: &[usize],
        hooks: &[&Hooks],
        until: usize,
        mut cache: Option<&mut KvCache>,
        captures: &mut [BTreeMap<HookName, Tensor>],
    ) -> Result<()> {
        if state.next_layer >= until {
            return Ok(());
        }
        let (rows, t, _) = state.x.dims3()?;
        let total = offsets.iter().max().copied().unwrap_or(0) + t;
        let rope_global = self.rotary_global.for_pass(offsets, t)?;
        let rope_local = self.rotary_local.as_ref().map(|r| r.for_pass(offsets, t)).transpose()?;
        let mut masks: Vec<(LayerAttention, Option<PassMask>)> = Vec::new();
        for layer in state.next_layer..until {
            let block = &self.blocks[layer];
            let kind = block.attn.kind;
            if !masks.iter().any(|(k, _)| *k == kind) {
                masks.push((kind, pass_mask(offsets, t, total, kind, self.dtype, &self.device)?));
            }
            let mask = masks.iter().find(|(k, _)| *k == kind).and_then(|(_, m)| m.as_ref());
            let rope = match (kind, &rope_local) {
                (LayerAttention::Sliding { .. }, Some(local)) => local,
                _ => &rope_global,
            };
            let at = |point| HookName::new(layer, point);
            let x = self.hook(state.x.clone(), &state.lens, offsets, hooks, at(HookPoint::ResidPre), captures)?;
            let attn = block.attention_branch(&x, rope, layer, mask, cache.as_deref_mut())?;
            let attn = self.hook(attn, &state.lens, offsets, hooks, at(HookPoint::AttnOut), captures)?;
            let x = (x + attn)?;
            let mlp = self.hook(block.mlp_branch(&x)?, &state.lens, offsets, hooks, at(HookPoint::MlpOut), captures)?;
            state.x = self.hook((x + mlp)?, &state.lens, offsets, hooks, at(HookPoint::ResidPost), captures)?;
            state.next_layer = layer + 1;
        }
        debug_assert_eq!(rows, hooks.len());
        Ok(())
    }

    /// Apply each row's interventions at hook point `name` to `x` (`(rows, t, hidden)`),
    /// then record its captures; `x` unchanged when nothing hooks `name`.
    fn hook(
        &self,
        mut x: Tensor,
        lens: &[usize],
        offsets: &[usize],
        hooks: &[&Hooks],
        name: HookName,
        captures: &mut [BTreeMap<HookName, Tensor>],
    ) -> Result<Tensor> {
        if !hooks.iter().any(|h| h.touches(name)) {
            return Ok(x);
        }
        x = self.add_vectors(x, lens, offsets, hooks, name)?;
        x = self.project(x, lens, offsets, hooks, name)?;
        for (i, h) in hooks.iter().enumerate() {
            for cap in h.captures.iter().filter(|cap| cap.name() == name) {
                let n = lens[i];
                let row = x.get(i)?;
                let s = match cap.positions {
                    CapturePositions::Last => row.narrow(0, n - 1, 1)?,
                    CapturePositions::All => row.narrow(0, 0, n)?,
                };
                captures[i].insert(name, s.to_dtype(DType::F32)?);
            }
        }
        Ok(x)
    }

    /// Each row's mask over the `t` positions of the pass for `positions` (1 where the
    /// intervention applies), or None when it touches no position of the row.
    fn position_mask(&self, positions: crate::hooks::Positions, offset: usize, n: usize, prompt_len: usize, t: usize) -> Result<Option<Tensor>> {
        let mask: Vec<f32> = (0..t).map(|j| if j < n && positions.contains(offset + j, prompt_len) { 1.0 } else { 0.0 }).collect();
        if mask.iter().all(|&m| m == 0.0) {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(mask, (t, 1), &self.device)?.to_dtype(self.dtype)?))
    }

    /// Add each row's `add` interventions at `name` (a `(rows, t, hidden)` delta; rows
    /// without any get zeros).
    fn add_vectors(&self, x: Tensor, lens: &[usize], offsets: &[usize], hooks: &[&Hooks], name: HookName) -> Result<Tensor> {
        let (rows, t, hidden) = x.dims3()?;
        let mut deltas: Vec<Option<Tensor>> = vec![None; rows];
        for (i, h) in hooks.iter().enumerate() {
            let (offset, n) = (offsets[i], lens[i]);
            let prompt_len = h.prompt_len.unwrap_or(offset + n);
            for iv in h.interventions.iter().filter(|iv| iv.name() == name && iv.kind == InterventionKind::Add) {
                let Some(mask) = self.position_mask(iv.positions, offset, n, prompt_len, t)? else { continue };
                let d = mask.broadcast_mul(&(iv.vector.to_dtype(self.dtype)? * iv.scale)?.reshape((1, hidden))?)?;
                deltas[i] = Some(match deltas[i].take() {
                    Some(prev) => (prev + d)?,
                    None => d,
                });
            }
        }
        if deltas.iter().all(|d| d.is_none()) {
            return Ok(x);
        }
        if rows == 1 {
            return Ok(x.broadcast_add(&deltas[0].take().expect("checked above").unsqueeze(0)?)?);
        }
        let zeros = Tensor::zeros((t, hidden), self.dtype, &self.device)?;
        let parts: Vec<Tensor> = deltas.into_iter().map(|d| d.unwrap_or_else(|| zeros.clone())).collect();
        Ok((&x + Tensor::stack(&parts, 0)?)?)
    }

    /// Apply each row's `ablate` and `cap` interventions at `name`, in order: with
    /// `u = v / |v|` and `p = h . u` at each touched position, ablate removes `p u`, cap
    /// removes `max(0, p - scale) u`.
    fn project(&self, x: Tensor, lens: &[usize], offsets: &[usize], hooks: &[&Hooks], name: HookName) -> Result<Tensor> {
        let is_projection = |iv: &&crate::hooks::Intervention| iv.name() == name && iv.kind != InterventionKind::Add;
        if !hooks.iter().any(|h| h.interventions.iter().any(|iv| is_projection(&iv))) {
            return Ok(x);
        }
        let (rows, t, hidden) = x.dims3()?;
        let mut out = Vec::with_capacity(rows);
        for (i, h) in hooks.iter().enumerate() {
            let (offset, n) = (offsets[i], lens[i]);
            let prompt_len = h.prompt_len.unwrap_or(offset + n);
            let mut row = x.get(i)?;
            for iv in h.interventions.iter().filter(is_projection) {
                let Some(mask) = self.position_mask(iv.positions, offset, n, prompt_len, t)? else { continue };
                let v = iv.vector.to_dtype(DType::F32)?;
                let norm = v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
                let u = (v / norm as f64)?.to_dtype(self.dtype)?.reshape((hidden, 1))?;
                let projection = row.matmul(&u)?; // (t, 1)
                let removed = match iv.kind {
                    InterventionKind::Ablate => projection,
                    InterventionKind::Cap => (projection - iv.scale)?.relu()?,
                    InterventionKind::Add => unreachable!("filtered above"),
                };
                row = (row - (removed * mask)?.matmul(&u.t()?)?)?;
            }
            out.push(row);
        }
        Ok(Tensor::stack(&out, 0)?)
    }

    /// `(rows, hidden)`: the state at each row's last real token.
    fn last_positions(&self, state: &BatchState) -> Result<Tensor> {
        let (rows, t, hidden) = state.x.dims3()?;
        if state.lens.iter().all(|&n| n == t) {
            return Ok(state.x.narrow(1, t - 1, 1)?.reshape((rows, hidden))?);
        }
        let idx: Vec<u32> = state.lens.iter().enumerate().map(|(i, &n)| (i * t + n - 1) as u32).collect();
        let idx = Tensor::from_vec(idx, rows, &self.device)?;
        Ok(state.x.reshape((rows * t, hidden))?.index_select(&idx, 0)?)
    }

    /// Final norm, LM head and soft-capping of `(.., hidden)` states, as f32.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.final_norm.forward(x)?;
        let mut out = self.lm_head.forward(&x)?;
        if let Some(cap) = self.config.final_logit_softcapping {
            out = ((out / cap)?.tanh()? * cap)?;
        }
        Ok(out.to_dtype(DType::F32)?)
    }

    fn outputs(&self, state: &BatchState, captures: Vec<BTreeMap<HookName, Tensor>>, logits: Logits) -> Result<Vec<ForwardOutput>> {
        let per_row: Vec<Option<Tensor>> = match logits {
            Logits::None => vec![None; state.rows()],
            Logits::Last => {
                let all = self.head(&self.last_positions(state)?)?;
                (0..state.rows()).map(|i| all.get(i).map(Some)).collect::<candle_core::Result<_>>()?
            }
            Logits::All => {
                let all = self.head(&state.x)?;
                (0..state.rows()).map(|i| all.get(i)?.narrow(0, 0, state.lens[i]).map(Some)).collect::<candle_core::Result<_>>()?
            }
        };
        Ok(per_row.into_iter().zip(captures).map(|(logits, captures)| ForwardOutput { logits, captures }).collect())
    }
}
