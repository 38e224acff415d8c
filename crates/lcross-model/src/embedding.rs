//! The token embedding table: dense, or (with `--weights quantized`) the GGUF file's
//! quantized rows kept as they are and dequantized only for the tokens a pass looks up.
//!
//! A 7B model's table in f32 is 2.2 GB (151 936 x 3 584 x 4 bytes), more than all of its
//! Q4_K_M layers of a short benchmark file; llama.cpp keeps it quantized too. The
//! dequantized rows are exactly what dequantizing the whole table gives (the same block
//! decoder, applied to the same bytes).

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// Where the rows of the token embedding come from.
#[derive(Debug, Clone)]
pub(crate) enum TokenEmbedding {
    /// `(vocab, hidden)` in the compute dtype on the model's device.
    Dense(Tensor),
    /// The quantized table on the CPU (its blocks are bytes); rows are dequantized on
    /// lookup and moved to the model's device.
    Quantized { table: Arc<QTensor>, hidden: usize },
}

impl TokenEmbedding {
    /// A quantized table of `(vocab, hidden)`; its rows must be whole blocks.
    pub(crate) fn quantized(table: QTensor) -> Result<Self> {
        let (_, hidden) = table.shape().dims2()?;
        if !hidden.is_multiple_of(table.dtype().block_size()) {
            return Err(ModelError::InvalidInput(format!("token embedding rows of {hidden} values are not whole {:?} blocks", table.dtype())));
        }
        Ok(Self::Quantized { table: Arc::new(table), hidden })
    }

    /// The rows of `ids` as `(ids.len(), hidden)` in `dtype` on `device`.
    pub(crate) fn rows(&self, ids: &[u32], dtype: DType, device: &Device) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.embedding(&Tensor::from_slice(ids, ids.len(), device)?)?),
            Self::Quantized { table, hidden } => {
                let kind: GgmlDType = table.dtype();
                let row_bytes = hidden / kind.block_size() * kind.type_size();
                let data = table.data()?;
                let vocab = data.len() / row_bytes;
                let mut gathered = Vec::with_capacity(ids.len() * row_bytes);
                for &id in ids {
                    let id = id as usize;
                    if id >= vocab {
                        return Err(ModelError::InvalidInput(format!("token id {id} is outside the vocabulary (size {vocab})")));
                    }
                    gathered.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
                }
                let storage = QStorage::from_data(Cow::Owned(gathered), &Device::Cpu, kind)?;
                let rows = QTensor::new(storage, (ids.len(), *hidden))?.dequantize(&Device::Cpu)?;
                // The table is not scanned at load (that is the f32 copy this avoids): a
                // bad block is caught where it is used.
                if !rows.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f32>()?.is_finite() {
                    return Err(ModelError::InvalidInput(format!("token_embd.weight: the rows of tokens {ids:?} hold NaN or infinite values")));
                }
                Ok(rows.to_dtype(dtype)?.to_device(device)?)
            }
        }
    }
}
