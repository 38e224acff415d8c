//! The transpose of a matrix, materialised: `x.t().contiguous()`, tiled on the CPU.
//!
//! Written by hand because candle's CPU copy of a transposed view walks a strided
//! index one element at a time, and batched decoding transposes every step: the
//! inputs and outputs of the `W x^T` products, and above all the LM head's logits
//! (`vocab x rows`, 19 MB for Qwen's 151,936 tokens at 32 rows), which took 3-4% of a
//! generation run in that copy (docs/PERFORMANCE.md). Here the matrix is copied in
//! square tiles that stay in the L1 cache, on the thread pool when it is large. Other
//! devices keep candle's copy (their kernels are already tiled). The values are copied,
//! never computed: the result equals candle's bit for bit.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Side of a tile: 16 x 16 f32 is 1 KiB read and 1 KiB written.
const TILE: usize = 16;

/// Elements from which the copy is split over the thread pool.
const PARALLEL_FROM: usize = 1 << 16;

/// `x` of shape `(rows, cols)` (any strides) as a contiguous `(cols, rows)` tensor.
pub fn transposed(x: &Tensor) -> candle_core::Result<Tensor> {
    let (rows, cols) = x.dims2()?;
    if !x.device().is_cpu() || rows <= 1 || cols <= 1 {
        // One row or column: the transposed view is already laid out contiguously.
        return x.t()?.contiguous();
    }
    x.apply_op1_no_bwd(&Transpose)
}

struct Transpose;

impl CustomOp1 for Transpose {
    fn name(&self) -> &'static str {
        "tiled-transpose"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = layout.shape().dims2()?;
        let out_shape = Shape::from((cols, rows));
        let geometry = Geometry { rows, cols, start: layout.start_offset(), row_stride: layout.stride()[0], col_stride: layout.stride()[1] };
        let out = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(geometry.transpose(data)?),
            CpuStorage::F16(data) => CpuStorage::F16(geometry.transpose(data)?),
            CpuStorage::BF16(data) => CpuStorage::BF16(geometry.transpose(data)?),
            CpuStorage::F64(data) => CpuStorage::F64(geometry.transpose(data)?),
            CpuStorage::U32(data) => CpuStorage::U32(geometry.transpose(data)?),
            other => candle_core::bail!("tiled transpose: dtype {:?} is not supported", other.dtype()),
        };
        Ok((out, out_shape))
    }
}

/// Where the `(rows, cols)` input's elements are.
struct Geometry {
    rows: usize,
    cols: usize,
    start: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Geometry {
    /// The `(cols, rows)` row-major transpose of the input stored in `data`.
    fn transpose<T: WithDType>(&self, data: &[T]) -> candle_core::Result<Vec<T>> {
        let Geometry { rows, cols, start, row_stride, col_stride } = *self;
        let last = start + (rows - 1) * row_stride + (cols - 1) * col_stride;
        if last >= data.len() {
            candle_core::bail!("tiled transpose: a ({rows}, {cols}) view reaches element {last} of a buffer of {}", data.len());
        }
        let mut out = vec![T::zero(); rows * cols];
        // A band is TILE output rows (input columns); bands are independent.
        let band = |(b, out): (usize, &mut [T])| {
            let c0 = b * TILE;
            let width = out.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                let r1 = (r0 + TILE).min(rows);
                for c in 0..width {
                    let src = start + (c0 + c) * col_stride;
                    let dst = &mut out[c * rows..][r0..r1];
                    for (r, d) in (r0..r1).zip(dst) {
                        *d = data[src + r * row_stride];
                    }
                }
            }
        };
        if rows * cols >= PARALLEL_FROM {
            out.par_chunks_mut(TILE * rows).enumerate().for_each(band);
        } else {
            out.chunks_mut(TILE * rows).enumerate().for_each(band);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn matrix(rows: usize, cols: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    #[test]
    fn equals_candles_copy_bit_for_bit_on_every_shape_and_layout() {
        // Sizes around the tile, a long thin LM-head-like block (parallel path), and views
        // that start inside their buffer or are themselves transposed.
        for (rows, cols) in [(2, 2), (3, 17), (16, 16), (17, 33), (32, 4096), (4096, 32), (1, 9), (9, 1)] {
            let x = matrix(rows, cols);
            assert_eq!(transposed(&x).unwrap().to_vec2::<f32>().unwrap(), x.t().unwrap().contiguous().unwrap().to_vec2::<f32>().unwrap(), "{rows}x{cols}");
            let inner = matrix(rows + 3, cols + 2).narrow(0, 2, rows).unwrap().narrow(1, 1, cols).unwrap();
            assert_eq!(
                transposed(&inner).unwrap().to_vec2::<f32>().unwrap(),
                inner.t().unwrap().contiguous().unwrap().to_vec2::<f32>().unwrap(),
                "inner {rows}x{cols}"
            );
            let view = matrix(cols, rows).t().unwrap();
            assert_eq!(
                transposed(&view).unwrap().to_vec2::<f32>().unwrap(),
                view.t().unwrap().contiguous().unwrap().to_vec2::<f32>().unwrap(),
                "view {rows}x{cols}"
            );
        }
    }

    #[test]
    fn keeps_the_dtype_and_refuses_other_ranks() {
        let x = matrix(5, 7).to_dtype(DType::BF16).unwrap();
        let t = transposed(&x).unwrap();
        assert_eq!((t.dtype(), t.dims()), (DType::BF16, &[7usize, 5][..]));
        assert_eq!(t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(), x.t().unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap());
        assert!(transposed(&matrix(2, 3).unsqueeze(0).unwrap()).is_err());
    }
}
