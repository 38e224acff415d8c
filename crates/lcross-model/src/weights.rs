//! Where the decoder's weights come from: a GGUF file or a Hugging Face directory.
//!
//! Tensors are named with GGUF's names (`blk.3.attn_q.weight`); the Hugging Face source
//! translates them. Quantized GGUF weights are dequantized to the compute dtype at load
//! unless [`WeightMode::Quantized`] keeps the types candle multiplies fast (K-quants,
//! Q4_0, Q8_0) quantized.

use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{safetensors::MmapedSafetensors, DType, Device, Tensor};

use crate::config::Architecture;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::linear::Linear;

/// How quantized GGUF weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightMode {
    /// Dequantize every weight to f32 at load: the arithmetic of the reference
    /// implementation (transformers, f32). The default.
    #[default]
    F32,
    /// Keep K-quants, Q4_0 and Q8_0 quantized (candle's fast kernels) and re-quantize
    /// the types candle multiplies slowly (Q4_1, Q5_0, Q5_1, f32 matrices) to Q8_0.
    /// Faster decode (less memory traffic), activations quantized to 8 bits inside
    /// matmuls: approximate (error measured in docs/BENCH.md).
    Quantized,
}

impl WeightMode {
    /// Parse `f32` or `quantized`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" | "dequantized" => Some(Self::F32),
            "quantized" | "q" => Some(Self::Quantized),
            _ => None,
        }
    }
}

/// candle runs these quantized types with fast SIMD kernels; others go through a slow
/// scalar path (measured ~30x slower) and are better dequantized.
fn fast_quantized(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q8_0 | GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K)
}

/// Q8_0 copy of a dense `(out, in)` matrix for [`WeightMode::Quantized`] (dense when
/// the row length is not a multiple of the Q8_0 block).
pub(crate) fn requantize(w: &Tensor) -> Result<QMatMul> {
    if w.dim(1)? % GgmlDType::Q8_0.block_size() != 0 {
        return Ok(QMatMul::Tensor(w.clone()));
    }
    Ok(QMatMul::from_qtensor(QTensor::quantize(&w.to_dtype(DType::F32)?, GgmlDType::Q8_0)?)?)
}

/// A source of named tensors for the decoder.
pub enum WeightSource {
    Gguf { file: GgufFile, mode: WeightMode },
    HfDir { dir: PathBuf, tensors: MmapedSafetensors, arch: Architecture },
}

impl WeightSource {
    /// The weight mode (always F32 for HF directories).
    pub fn mode(&self) -> WeightMode {
        match self {
            Self::Gguf { mode, .. } => *mode,
            Self::HfDir { .. } => WeightMode::F32,
        }
    }

    /// Path of the file or directory, for error messages.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf { file, .. } => file.path(),
            Self::HfDir { dir, .. } => dir,
        }
    }

    /// Whether a tensor (GGUF name) exists.
    pub fn has(&self, name: &str) -> bool {
        match self {
            Self::Gguf { file, .. } => file.has_tensor(name),
            Self::HfDir { tensors, arch, .. } => tensors.get(&hf_name(name, *arch)).is_ok(),
        }
    }

    /// A dense tensor of `shape` (PyTorch order: `(out, in)` for matrices).
    pub fn dense(&mut self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        match self {
            Self::Gguf { file, .. } => {
                let q = file.qtensor(name, shape, device)?;
                let path = file.path().to_path_buf();
                check_finite(&path, name, q.dequantize(device)?.to_dtype(dtype)?)
            }
            Self::HfDir { dir, tensors, arch } => {
                let hf = hf_name(name, *arch);
                let t = tensors.load(&hf, device).map_err(|e| ModelError::tensor(dir.as_path(), &hf, e.to_string()))?;
                if !t.dtype().is_float() {
                    return Err(ModelError::tensor(
                        dir.as_path(),
                        &hf,
                        format!(
                            "stored as {:?}: lcross loads float weights (F32, F16, BF16); integer or packed-quantized checkpoints (GPTQ, AWQ, bitsandbytes) are not supported (use the original weights or a GGUF)",
                            t.dtype()
                        ),
                    ));
                }
                if t.dims() != shape {
                    return Err(ModelError::tensor(dir.as_path(), &hf, format!("shape {:?}, expected {:?}", t.dims(), shape)));
                }
                let mut t = t.to_dtype(dtype)?;
                // HF gemma stores norm weights w and multiplies by (1 + w); GGUF stores 1 + w.
                if arch.is_gemma() && name.ends_with("norm.weight") {
                    t = (t + 1.0)?;
                }
                check_finite(dir.as_path(), &hf, t)
            }
        }
    }

    /// A linear layer `(out, in)` with an optional bias.
    pub fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, bias: bool, dtype: DType, device: &Device) -> Result<Linear> {
        let weight_name = format!("{name}.weight");
        let weight = match self {
            Self::Gguf { file, mode } if *mode == WeightMode::Quantized && file.tensor_dtype(&weight_name).is_some_and(fast_quantized) => {
                let q: QTensor = file.qtensor(&weight_name, &[out_dim, in_dim], device)?;
                QMatMul::from_qtensor(q)?
            }
            Self::Gguf { mode: WeightMode::Quantized, .. } => requantize(&self.dense(&weight_name, &[out_dim, in_dim], dtype, device)?)?,
            _ => QMatMul::Tensor(self.dense(&weight_name, &[out_dim, in_dim], dtype, device)?),
        };
        let bias = if bias { Some(self.dense(&format!("{name}.bias"), &[out_dim], dtype, device)?) } else { None };
        Ok(Linear::new(weight, bias))
    }

    /// The GGUF tensor `name` kept quantized on the CPU, in [`WeightMode::Quantized`] when
    /// it is stored in a block-quantized type; None otherwise (the caller loads it dense).
    pub fn quantized_table(&mut self, name: &str, shape: &[usize]) -> Result<Option<QTensor>> {
        match self {
            Self::Gguf { file, mode: WeightMode::Quantized }
                if file.tensor_dtype(name).is_some_and(|t| !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)) =>
            {
                Ok(Some(file.qtensor(name, shape, &Device::Cpu)?))
            }
            _ => Ok(None),
        }
    }

    /// Linear layers stored as one fused `(sum(parts), in)` matrix (Phi-3's qkv and
    /// gate_up), split by rows, without biases. Quantized GGUF weights are dequantized and
    /// each part re-quantized to Q8_0 in [`WeightMode::Quantized`].
    pub fn linear_parts(&mut self, name: &str, parts: &[usize], in_dim: usize, dtype: DType, device: &Device) -> Result<Vec<Linear>> {
        let total: usize = parts.iter().sum();
        let fused = self.dense(&format!("{name}.weight"), &[total, in_dim], dtype, device)?;
        let mut start = 0;
        let mut out = Vec::with_capacity(parts.len());
        for &rows in parts {
            let w = fused.narrow(0, start, rows)?.contiguous()?;
            start += rows;
            out.push(Linear::new(if self.mode() == WeightMode::Quantized { requantize(&w)? } else { QMatMul::Tensor(w) }, None));
        }
        Ok(out)
    }
}

fn check_finite(path: &Path, name: &str, t: Tensor) -> Result<Tensor> {
    // x * 0 is NaN exactly when x is NaN or infinite; one reduction finds any.
    let probe = t.affine(0.0, 0.0)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    if !probe.is_finite() {
        return Err(ModelError::tensor(path, name, "contains NaN or infinite values"));
    }
    Ok(t)
}

/// Hugging Face name of a GGUF tensor name.
pub(crate) fn hf_name(gguf: &str, arch: Architecture) -> String {
    let simple = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(s) = simple {
        return s.to_string();
    }
    let Some(rest) = gguf.strip_prefix("blk.") else { return gguf.to_string() };
    let Some((layer, tail)) = rest.split_once('.') else { return gguf.to_string() };
    let (module, suffix) = tail.rsplit_once('.').unwrap_or((tail, ""));
    let hf_module = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "post_attention_norm" => "post_attention_layernorm",
        "ffn_norm" if arch.is_gemma() => "pre_feedforward_layernorm",
        "attn_qkv" => "self_attn.qkv_proj",
        "ffn_up" if arch == Architecture::Phi3 => "mlp.gate_up_proj",
        "ffn_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => other,
    };
    format!("model.layers.{layer}.{hf_module}.{suffix}")
}
