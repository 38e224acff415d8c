//! Linear layers `y = x W^T + b` (weight dense or quantized), and layers that read the
//! same input stacked into one product.
//!
//! Decoding a batch runs one token per sequence, so a layer sees a few dozen rows. For
//! so few rows a dense layer computes `W x^T` (the weight streamed once, no packing of
//! it; docs/PERFORMANCE.md), and the decoder's MLP stays in that transposed layout from
//! its input to its output ([`SharedInput::forward_t`], [`Linear::forward_t`]), so the
//! wide intermediate activations are never transposed back and forth.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};

use crate::error::Result;
use crate::q8_tiles::Q8Tiles;
use crate::transpose::transposed;

/// Rows (tokens of all sequences in a pass) up to which a dense linear layer computes
/// `W x^T` instead of `x W^T`.
pub const SMALL_BATCH_ROWS: usize = 32;

/// A linear layer `y = x W^T + b`, dense or quantized.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    /// The input width, where the quantized weight's rows were padded to a longer one
    /// (`q8_pad.rs`): inputs are padded with zeros to match.
    input_width: Option<usize>,
}

/// How a layer holds its weight.
#[derive(Debug, Clone)]
enum Weight {
    /// candle's matmul: dense, or quantized with candle's kernels.
    Candle(QMatMul),
    /// Q8_0 repacked for lcross's VNNI kernel (`q8_tiles.rs`).
    Q8Tiles(Q8Tiles),
}

impl Linear {
    /// A linear layer from a matmul and an optional bias. Q8_0 weights are repacked for
    /// lcross's VNNI kernel where the CPU has it (`q8_tiles.rs`), or else padded to whole
    /// superblocks where that lets candle's faster kernel run (`q8_pad.rs`).
    pub(crate) fn new(weight: QMatMul, bias: Option<Tensor>) -> Self {
        if let Some(tiles) = Q8Tiles::for_weight(&weight) {
            return Self { weight: Weight::Q8Tiles(tiles), bias, input_width: None };
        }
        let (weight, input_width) = crate::q8_pad::for_repacked_kernel(weight);
        Self { weight: Weight::Candle(weight), bias, input_width }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> candle_core::Result<(usize, usize)> {
        let (out_dim, in_dim) = match &self.weight {
            Weight::Candle(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.dims2()?,
            Weight::Candle(QMatMul::QTensor(q)) => q.shape().dims2()?,
            Weight::Q8Tiles(t) => t.dims(),
        };
        Ok((out_dim, self.input_width.unwrap_or(in_dim)))
    }

    /// The dense weight, when the layer is not quantized.
    fn dense(&self) -> Option<&Tensor> {
        match &self.weight {
            Weight::Candle(QMatMul::Tensor(w)) => Some(w),
            _ => None,
        }
    }

    /// The repacked Q8_0 weight, when the layer has one.
    fn q8_tiles(&self) -> Option<&Q8Tiles> {
        match &self.weight {
            Weight::Q8Tiles(t) => Some(t),
            Weight::Candle(_) => None,
        }
    }

    /// Whether `rows` rows of input go through the transposed layout
    /// ([`Linear::forward_t`]): dense weights and at most [`SMALL_BATCH_ROWS`] rows.
    pub fn takes_transposed(&self, rows: usize) -> bool {
        self.dense().is_some() && rows <= SMALL_BATCH_ROWS
    }

    fn count(&self, rows: usize) -> candle_core::Result<()> {
        let (out_dim, in_dim) = self.dims()?;
        let bytes = match &self.weight {
            Weight::Candle(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.elem_count() * w.dtype().size_in_bytes(),
            Weight::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Weight::Q8Tiles(t) => t.bytes(),
        };
        crate::flops::add(2 * (rows * in_dim * out_dim) as u64);
        crate::flops::add_weight_bytes(bytes as u64);
        Ok(())
    }

    /// Apply to `x` of shape `(.., in)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let in_dim = self.dims()?.1;
        let rows = x.elem_count() / in_dim.max(1);
        if self.takes_transposed(rows) {
            // Few rows (decoding): `W x^T` streams the weight rows once; `x W^T`
            // makes the gemm kernel pack W, which measured 1.7x slower at 16 rows
            // (docs/PERFORMANCE.md).
            let xt = transposed(&x.reshape((rows, in_dim))?)?;
            let mut out_dims = x.dims().to_vec();
            *out_dims.last_mut().expect("rank >= 1") = self.dims()?.0;
            return transposed(&self.forward_t(&xt)?)?.reshape(out_dims);
        }
        self.count(rows)?;
        let y = match (self.input_width, &self.weight) {
            (Some(width), Weight::Candle(w @ QMatMul::QTensor(q))) => {
                w.forward(&x.pad_with_zeros(candle_core::D::Minus1, 0, q.shape().dims2()?.1 - width)?)?
            }
            (_, Weight::Candle(w)) => w.forward(x)?,
            (_, Weight::Q8Tiles(t)) if x.dtype() == DType::F32 => t.forward(x)?,
            (_, Weight::Q8Tiles(t)) => t.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// `W x^T + b` for the transposed input `xt` of shape `(in, rows)`: the transposed
    /// output `(out, rows)`. Dense layers only (see [`Linear::takes_transposed`]).
    pub fn forward_t(&self, xt: &Tensor) -> candle_core::Result<Tensor> {
        let w = self.dense().ok_or_else(|| candle_core::Error::Msg("transposed linear on a quantized weight".into()))?;
        let rows = xt.dim(1)?;
        self.count(rows)?;
        // The CPU kernel for a few dozen columns where it applies (skinny_gemm.rs).
        let y = match crate::skinny_gemm::matmul(w, xt)? {
            Some(y) => y,
            None => w.matmul(xt)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.unsqueeze(1)?),
            None => Ok(y),
        }
    }
}

/// Linear layers that read the same input (q, k and v; gate and up).
///
/// When every part is dense with the same dtype and input width they are stacked at
/// load into one `(sum of outputs, in)` layer: one product per pass instead of one per
/// part, so a decode step makes fewer, larger products (the small k and v projections
/// alone cannot keep two cores busy) and transposes its input once. Each output
/// element is the same dot product as before; only the gemm's blocking may change
/// the last bits.
#[derive(Debug, Clone)]
pub enum SharedInput {
    /// One dense layer whose outputs are the parts' outputs, in order, `widths` wide.
    Stacked { linear: Linear, widths: Vec<usize> },
    /// The parts as they came (quantized weights, or parts that cannot stack).
    Separate(Vec<Linear>),
}

impl SharedInput {
    /// Stack `parts` when they are all dense and alike, or all Q8_0 tiles of one width;
    /// keep them apart otherwise.
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        if parts.len() < 2 {
            return Ok(Self::Separate(parts));
        }
        let tiled: Option<Vec<&Q8Tiles>> = parts.iter().map(|p| p.q8_tiles()).collect();
        if let Some(tiles) = tiled.and_then(|t| Q8Tiles::stack(&t)) {
            let widths: Vec<usize> = parts.iter().map(|p| p.dims().map(|d| d.0)).collect::<candle_core::Result<_>>()?;
            // The biases keep the model's dtype (the tiles' output is cast back to it).
            let bias_dtype = parts.iter().find_map(|p| p.bias.as_ref().map(|b| b.dtype())).unwrap_or(DType::F32);
            let bias = stacked_bias(&parts, &widths, bias_dtype, &candle_core::Device::Cpu)?;
            return Ok(Self::Stacked { linear: Linear { weight: Weight::Q8Tiles(tiles), bias, input_width: None }, widths });
        }
        let dense: Option<Vec<&Tensor>> = parts.iter().map(|p| p.dense()).collect();
        let Some(weights) = dense else { return Ok(Self::Separate(parts)) };
        let first = weights[0];
        let alike = weights.iter().all(|w| w.dtype() == first.dtype() && w.device().same_device(first.device()) && w.dim(1).ok() == first.dim(1).ok());
        if !alike {
            return Ok(Self::Separate(parts));
        }
        let widths: Vec<usize> = weights.iter().map(|w| w.dim(0)).collect::<candle_core::Result<_>>()?;
        let weight = Tensor::cat(&weights, 0)?;
        let bias = stacked_bias(&parts, &widths, first.dtype(), first.device())?;
        Ok(Self::Stacked { linear: Linear::new(QMatMul::Tensor(weight), bias), widths })
    }

    /// Input width.
    pub fn in_dim(&self) -> candle_core::Result<usize> {
        match self {
            Self::Stacked { linear, .. } => Ok(linear.dims()?.1),
            Self::Separate(parts) => match parts.first() {
                Some(p) => Ok(p.dims()?.1),
                None => Err(candle_core::Error::Msg("a shared-input layer without parts".into())),
            },
        }
    }

    /// Whether `rows` rows of input go through [`SharedInput::forward_t`].
    pub fn takes_transposed(&self, rows: usize) -> bool {
        match self {
            Self::Stacked { linear, .. } => linear.takes_transposed(rows),
            Self::Separate(parts) => parts.iter().all(|p| p.takes_transposed(rows)),
        }
    }

    /// Every part's output `(.., out_i)` for `x` of shape `(.., in)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Self::Stacked { linear, widths } => {
                let y = linear.forward(x)?;
                split(&y, widths, y.rank() - 1)
            }
            Self::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
        }
    }

    /// Every part's transposed output `(out_i, rows)` for the transposed input `xt`
    /// `(in, rows)`; each part is a contiguous block of rows.
    pub fn forward_t(&self, xt: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Self::Stacked { linear, widths } => split(&linear.forward_t(xt)?, widths, 0),
            Self::Separate(parts) => parts.iter().map(|p| p.forward_t(xt)).collect(),
        }
    }
}

/// Which kernel multiplies Q8_0 weights on this CPU (part of quantized cache keys):
/// lcross's VNNI kernel (`q8_tiles.rs`), candle's repacked kernel on padded rows
/// (`q8_pad.rs`), or candle's block-by-block one.
pub(crate) fn q8_0_kernel() -> &'static str {
    if crate::q8_tiles::enabled() {
        "lcross-vnni512"
    } else if crate::q8_pad::enabled() {
        "candle-padded"
    } else {
        "candle"
    }
}

/// The parts' biases one after the other (zeros for a part without one), or None when
/// no part has a bias.
fn stacked_bias(parts: &[Linear], widths: &[usize], dtype: DType, device: &candle_core::Device) -> candle_core::Result<Option<Tensor>> {
    if parts.iter().all(|p| p.bias.is_none()) {
        return Ok(None);
    }
    let biases: Vec<Tensor> = parts
        .iter()
        .zip(widths)
        .map(|(p, &n)| match &p.bias {
            Some(b) => b.to_dtype(dtype)?.to_device(device),
            None => Tensor::zeros(n, dtype, device),
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(Some(Tensor::cat(&biases, 0)?))
}

/// `y` cut along `dim` into consecutive pieces `widths` wide.
fn split(y: &Tensor, widths: &[usize], dim: usize) -> candle_core::Result<Vec<Tensor>> {
    let mut start = 0;
    widths
        .iter()
        .map(|&n| {
            let part = y.narrow(dim, start, n);
            start += n;
            part
        })
        .collect()
}

/// `x` of shape `(.., in)` as the transposed input `(in, rows)` of
/// [`Linear::forward_t`].
pub fn transposed_input(x: &Tensor) -> candle_core::Result<Tensor> {
    let in_dim = x.dim(candle_core::D::Minus1)?;
    transposed(&x.reshape((x.elem_count() / in_dim.max(1), in_dim))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn dense(out: usize, inp: usize, seed: f32, bias: bool) -> Linear {
        let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
        let b = bias.then(|| Tensor::from_vec((0..out).map(|i| i as f32 * 0.1 - seed).collect::<Vec<f32>>(), out, &Device::Cpu).unwrap());
        Linear::new(QMatMul::Tensor(Tensor::from_vec(w, (out, inp), &Device::Cpu).unwrap()), b)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn stacked_layers_equal_the_separate_ones_in_both_layouts() {
        // q with a bias, k without: the stacked bias has zeros for k.
        let parts = vec![dense(6, 5, 0.1, true), dense(3, 5, 0.7, false), dense(4, 5, 1.3, true)];
        let stacked = SharedInput::new(parts.clone()).unwrap();
        assert!(matches!(stacked, SharedInput::Stacked { .. }));
        for rows in [1usize, 3, SMALL_BATCH_ROWS + 5] {
            let x = Tensor::from_vec((0..rows * 5).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<f32>>(), (1, rows, 5), &Device::Cpu).unwrap();
            let got = stacked.forward(&x).unwrap();
            let xt = transposed_input(&x).unwrap();
            let got_t = stacked.forward_t(&xt).unwrap();
            for (i, p) in parts.iter().enumerate() {
                let want = p.forward(&x).unwrap();
                assert_eq!(got[i].dims(), want.dims());
                assert!(max_diff(&got[i], &want) < 1e-5, "part {i}, {rows} rows");
                let want_t = want.reshape((rows, p.dims().unwrap().0)).unwrap().t().unwrap();
                assert!(max_diff(&got_t[i], &want_t) < 1e-5, "part {i}, {rows} rows, transposed");
            }
        }
    }

    /// Q8_0 parts (q with a bias, k and v without) stack into one tiled layer where the
    /// VNNI kernel runs, and give each part's own output.
    #[test]
    fn q8_0_parts_stack_into_one_tiled_layer() {
        let dev = Device::Cpu;
        let part = |n: usize, seed: f32, bias: bool| {
            let w = Tensor::from_vec((0..n * 64).map(|i| (i as f32 * 0.29 + seed).sin()).collect::<Vec<f32>>(), (n, 64), &dev).unwrap();
            let q = candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0).unwrap();
            let b = bias.then(|| Tensor::from_vec((0..n).map(|i| i as f32 * 0.01).collect::<Vec<f32>>(), n, &dev).unwrap());
            Linear::new(QMatMul::from_qtensor(q).unwrap(), b)
        };
        let parts = vec![part(32, 0.1, true), part(16, 0.5, false), part(16, 0.9, false)];
        let shared = SharedInput::new(parts.clone()).unwrap();
        assert_eq!(matches!(shared, SharedInput::Stacked { .. }), crate::q8_tiles::enabled());
        let x = Tensor::from_vec((0..3 * 64).map(|i| (i as f32 * 0.13).cos()).collect::<Vec<f32>>(), (1, 3, 64), &dev).unwrap();
        for (got, p) in shared.forward(&x).unwrap().iter().zip(&parts) {
            assert_eq!(got.dims(), &[1, 3, p.dims().unwrap().0]);
            assert!(max_diff(got, &p.forward(&x).unwrap()) < 1e-5);
        }
        // A bf16 model: bf16 biases and inputs, bf16 outputs (candle's own quantized
        // matmul takes f32 inputs only, so this is the tiles' case).
        if !crate::q8_tiles::enabled() {
            return;
        }
        let bf16 = |l: &Linear| Linear { bias: l.bias.as_ref().map(|b| b.to_dtype(DType::BF16).unwrap()), ..l.clone() };
        let parts: Vec<Linear> = parts.iter().map(bf16).collect();
        let x = x.to_dtype(DType::BF16).unwrap();
        for (got, p) in SharedInput::new(parts.clone()).unwrap().forward(&x).unwrap().iter().zip(&parts) {
            assert_eq!(got.dtype(), DType::BF16);
            let to_f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            assert!(max_diff(&to_f32(got), &to_f32(&p.forward(&x).unwrap())) < 1e-2);
        }
    }

    #[test]
    fn quantized_or_unlike_parts_stay_separate() {
        let q = candle_core::quantized::QTensor::quantize(&Tensor::ones((4, 32), DType::F32, &Device::Cpu).unwrap(), candle_core::quantized::GgmlDType::Q8_0)
            .unwrap();
        let quantized = Linear::new(QMatMul::from_qtensor(q).unwrap(), None);
        let parts = vec![dense(4, 32, 0.0, false), quantized];
        let shared = SharedInput::new(parts).unwrap();
        assert!(matches!(shared, SharedInput::Separate(_)));
        assert!(!shared.takes_transposed(1));
        let widths = SharedInput::new(vec![dense(4, 5, 0.0, false), dense(4, 6, 0.0, false)]).unwrap();
        assert!(matches!(widths, SharedInput::Separate(_)));
    }
}
