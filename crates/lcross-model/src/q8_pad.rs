//! Q8_0 weights padded to whole 256-value superblocks, so that candle's repacked VNNI
//! kernels take them.
//!
//! candle multiplies a Q8_0 weight by a few rows with its repacked AVX-512-VNNI (or
//! AVX-VNNI) kernel only when the row length `k` is a multiple of 256; otherwise it runs
//! the AVX2 block-by-block dot product, which on a Zen 5 took 56% of a quantized decode
//! step for Qwen 0.5B (k = 896) against 4% for the repacked down projection (k = 4,864)
//! that holds a fifth of the weights (docs/PERFORMANCE.md). Appending zero blocks (scale
//! 0, quants 0) to every row, and zeros to the input, changes no product: the padded
//! terms are exactly zero. What changes is the kernel, and with it the activations'
//! quantization (candle quantizes them per 256 values for the repacked kernel, per 32
//! otherwise), at the level of the quantized mode's own error.
//!
//! Applied on x86-64 CPUs with those instructions only (elsewhere padding would only add
//! work), where lcross's own kernel (`q8_tiles.rs`, AVX-512-VNNI, no padding) does not
//! run: on AVX-VNNI CPUs without AVX-512, or with `LCROSS_Q8_KERNEL=off`.
//! `LCROSS_PAD_Q8_0=off` turns it off, for benchmarks.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};

// The Q8_0 block's values and bytes, and candle's tile height (the same as lcross's).
use crate::q8_tiles::{BLOCK, BLOCK_BYTES, TILE_ROWS};

/// Values per superblock of candle's repacked kernels.
const SUPERBLOCK: usize = 256;

/// `weight` with its rows padded to a multiple of 256 values, and the input width the
/// caller keeps using, where padding lets the repacked kernel run; otherwise `weight`
/// unchanged and None. Padding is an optimisation: if it fails, the weight is kept.
pub(crate) fn for_repacked_kernel(weight: QMatMul) -> (QMatMul, Option<usize>) {
    let QMatMul::QTensor(q) = &weight else { return (weight, None) };
    if !enabled() || q.dtype() != GgmlDType::Q8_0 || !q.device().is_cpu() {
        return (weight, None);
    }
    let Ok((n, k)) = q.shape().dims2() else { return (weight, None) };
    if k % SUPERBLOCK == 0 || k % BLOCK != 0 || n % TILE_ROWS != 0 {
        return (weight, None);
    }
    match padded(q, n, k) {
        Ok(p) => (p, Some(k)),
        Err(_) => (weight, None),
    }
}

/// The Q8_0 matrix `(n, k)` as `(n, k')`, k' the next multiple of 256, zero blocks after
/// each row's own.
fn padded(q: &QTensor, n: usize, k: usize) -> candle_core::Result<QMatMul> {
    let padded_k = k.div_ceil(SUPERBLOCK) * SUPERBLOCK;
    let (row, padded_row) = (k / BLOCK * BLOCK_BYTES, padded_k / BLOCK * BLOCK_BYTES);
    let data = q.data()?;
    if data.len() != n * row {
        candle_core::bail!("Q8_0 tensor of {} bytes for ({n}, {k})", data.len());
    }
    let mut out = vec![0u8; n * padded_row];
    for (dst, src) in out.chunks_exact_mut(padded_row).zip(data.chunks_exact(row)) {
        dst[..row].copy_from_slice(src);
    }
    let storage = QStorage::from_data(Cow::Owned(out), &q.device(), GgmlDType::Q8_0)?;
    QMatMul::from_qtensor(QTensor::new(storage, (n, padded_k))?)
}

/// Whether this CPU has the instructions of candle's repacked Q8_0 kernel (candle's own
/// test; `MISTRALRS_FORCE_AVX2=1` makes candle skip it, and so padding) and padding is
/// not turned off. Read once per process.
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        if std::env::var("LCROSS_PAD_Q8_0").as_deref() == Ok("off") || std::env::var("MISTRALRS_FORCE_AVX2").as_deref() == Ok("1") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            (std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni"))
                || (std::is_x86_feature_detected!("avxvnni") && std::is_x86_feature_detected!("avx2"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Module, Tensor};

    fn pattern(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * 0.377 + seed).sin()).collect()
    }

    fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
        let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        (d / b.iter().map(|y| y * y).sum::<f32>()).sqrt()
    }

    #[test]
    fn padded_rows_hold_the_same_blocks_then_zeros() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(pattern(16 * 96, 0.5), (16, 96), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let QMatMul::QTensor(p) = padded(&q, 16, 96).unwrap() else { panic!("a quantized matmul") };
        assert_eq!(p.shape().dims2().unwrap(), (16, 256));
        let (orig, pad) = (q.dequantize(&dev).unwrap(), p.dequantize(&dev).unwrap());
        assert_eq!(pad.narrow(1, 0, 96).unwrap().to_vec2::<f32>().unwrap(), orig.to_vec2::<f32>().unwrap());
        assert!(pad.narrow(1, 96, 160).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|&x| x == 0.0));
    }

    #[test]
    fn takes_only_q8_0_rows_that_need_it() {
        let dev = Device::Cpu;
        let q = |n: usize, k: usize, t: GgmlDType| {
            let w = Tensor::from_vec(pattern(n * k, 0.1), (n, k), &dev).unwrap();
            QMatMul::from_qtensor(QTensor::quantize(&w, t).unwrap()).unwrap()
        };
        assert!(for_repacked_kernel(q(16, 512, GgmlDType::Q8_0)).1.is_none(), "a whole number of superblocks");
        assert!(for_repacked_kernel(q(24, 96, GgmlDType::Q8_0)).1.is_none(), "rows not a multiple of the tile");
        assert!(for_repacked_kernel(q(16, 96, GgmlDType::Q4_0)).1.is_none(), "another type");
        let dense = QMatMul::Tensor(Tensor::zeros((16, 96), DType::F32, &dev).unwrap());
        assert!(for_repacked_kernel(dense).1.is_none(), "dense");
        assert_eq!(for_repacked_kernel(q(16, 96, GgmlDType::Q8_0)).1, enabled().then_some(96));
    }

    /// The padded layer computes the unpadded one's product up to the activations'
    /// quantization (per 256 values instead of 32: ~1e-2 relative at most here).
    #[test]
    fn padded_product_equals_the_dequantized_one() {
        let dev = Device::Cpu;
        let (n, k) = (64, 896);
        let w = Tensor::from_vec(pattern(n * k, 0.3), (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let exact = q.dequantize(&dev).unwrap();
        let padded = padded(&q, n, k).unwrap();
        for rows in [1, 3, 8] {
            let x = Tensor::from_vec(pattern(rows * k, 1.7), (rows, k), &dev).unwrap();
            let want = x.matmul(&exact.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let xp = x.pad_with_zeros(1, 0, 1024 - k).unwrap();
            let got = padded.forward(&xp).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let e = rel_l2(&got, &want);
            assert!(e < 1e-2, "{rows} rows: relative L2 {e}");
        }
    }
}
