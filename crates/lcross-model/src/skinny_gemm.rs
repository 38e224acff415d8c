//! `W x^T` for the few dozen columns of a decode step, without packing W.
//!
//! Batched decoding multiplies every weight matrix `W` `(out, k)` by the transposed
//! input `x^T` `(k, n)` of one token per row, `n` = 8..=32 rows. The `gemm` crate
//! behind candle packs `W` into panels on every call and tiles `n` by 6, so 32 columns
//! run as 36 and the packing streams the weight twice: on two Zen 3 threads it reaches
//! ~88 GFLOP/s there against ~110 on large products (docs/PERFORMANCE.md). Here `W` is
//! read once, in place: a few of its rows at a time are broadcast against `x^T`'s rows
//! (padded to whole registers, in blocks of `KC` that stay in the L1/L2 cache) into a
//! tile of register sums, on the thread pool by bands of rows. Written by hand because
//! no maintained crate offers a prepacked or unpacked small-n f32 GEMM.
//!
//! Two builds of the loop, picked once per process: AVX-512F (16 columns a register,
//! tiles of 6 x 2 or 12 x 1 registers) where the CPU has it, else AVX2 + FMA (8 columns
//! a register, 3 x 4). Elsewhere (other CPUs, devices, dtypes, sizes) the caller keeps
//! candle's matmul. Sums run over `k` in order, in fused multiply-adds, so the last bits
//! differ from gemm's blocked order (within float rounding).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Fewest columns the kernel takes (below, padding to 8 would waste most of the work).
pub const MIN_COLS: usize = 8;
/// Most columns the kernel takes (4 registers of 8 per row of sums).
pub const MAX_COLS: usize = 32;
/// Rows of `x^T` per block: 1024 x 32 f32 is 128 KiB (in L2).
const KC: usize = 1024;
/// Bands of `W` rows are a multiple of this (every tile height divides it).
const BAND_MULTIPLE: usize = 12;

/// `w` `(out, k)` times `xt` `(k, n)`: `(out, n)`, or None where the kernel does not
/// apply and the caller should use candle's matmul.
pub fn matmul(w: &Tensor, xt: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let Some(isa) = Isa::detect() else { return Ok(None) };
    if !w.device().is_cpu() || w.dtype() != DType::F32 || xt.dtype() != DType::F32 {
        return Ok(None);
    }
    let ((_, k), (k2, n)) = (w.dims2()?, xt.dims2()?);
    if k != k2 || k == 0 || !(MIN_COLS..=MAX_COLS).contains(&n) || !w.is_contiguous() || !xt.is_contiguous() {
        return Ok(None);
    }
    Ok(Some(w.apply_op2_no_bwd(xt, &SkinnyMatmul(isa))?))
}

/// The instruction set a build of the kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Avx2Fma,
    Avx512,
}

impl Isa {
    /// The build the op runs: the best this CPU runs, or None where it runs neither.
    /// `LCROSS_SKINNY_GEMM=off` (candle's matmul everywhere) or `=avx2` (the AVX2 build
    /// even where AVX-512 is there) choose another, for benchmarks; any other value is
    /// the default. Read once per process. The choice moves results at f32 rounding only,
    /// as the row count of a pass does, so it is not part of cache keys.
    fn detect() -> Option<Isa> {
        static CHOSEN: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let all = Isa::available();
            match std::env::var("LCROSS_SKINNY_GEMM").as_deref() {
                Ok("off") => None,
                Ok("avx2") => all.first().copied(),
                _ => all.last().copied(),
            }
        })
    }

    /// Every build this CPU runs, the best last (detected once per process: the op
    /// checks it on every call).
    fn available() -> &'static [Isa] {
        static AVAILABLE: std::sync::OnceLock<Vec<Isa>> = std::sync::OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut out = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    out.push(Isa::Avx2Fma);
                    if std::is_x86_feature_detected!("avx512f") {
                        out.push(Isa::Avx512);
                    }
                }
            }
            out
        })
    }

    /// f32 lanes in one register.
    fn lanes(self) -> usize {
        match self {
            Isa::Avx2Fma => 8,
            Isa::Avx512 => 16,
        }
    }
}

struct SkinnyMatmul(Isa);

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul"
    }

    fn cpu_fwd(&self, ws: &CpuStorage, wl: &Layout, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((rows, k), (k2, n)) = (wl.shape().dims2()?, xl.shape().dims2()?);
        let (CpuStorage::F32(w), CpuStorage::F32(x)) = (ws, xs) else { candle_core::bail!("skinny matmul: operands are not f32") };
        let (Some((w0, w1)), Some((x0, x1))) = (wl.contiguous_offsets(), xl.contiguous_offsets()) else {
            candle_core::bail!("skinny matmul: operands are not contiguous")
        };
        if k != k2 || !(MIN_COLS..=MAX_COLS).contains(&n) || !Isa::available().contains(&self.0) {
            candle_core::bail!("skinny matmul: ({rows}, {k}) x ({k2}, {n}) is not for this kernel");
        }
        let out = multiply(self.0, &w[w0..w1], &x[x0..x1], rows, k, n);
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
}

/// `w` `(rows, k)` times `x` `(k, n)`, both row-major and exactly that long, with the
/// build `isa` (which the CPU must run: [`Isa::available`]).
fn multiply(isa: Isa, w: &[f32], x: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    assert!(Isa::available().contains(&isa), "skinny matmul: this CPU does not run {isa:?}");
    let blocks = n.div_ceil(isa.lanes());
    let ld = isa.lanes() * blocks;
    // x^T padded with zero columns to whole registers.
    let mut xp = vec![0f32; k * ld];
    for (dst, src) in xp.chunks_exact_mut(ld).zip(x.chunks_exact(n)) {
        dst[..n].copy_from_slice(src);
    }
    let mut c = vec![0f32; rows * ld];
    // Bands of whole kernel calls, about 16 per thread so that stragglers even out.
    let band = (rows.div_ceil(16 * rayon::current_num_threads()).max(4 * BAND_MULTIPLE)).div_ceil(BAND_MULTIPLE) * BAND_MULTIPLE;
    c.par_chunks_mut(band * ld).enumerate().for_each(|(b, c)| {
        let r0 = b * band;
        let band_rows = c.len() / ld;
        let w = &w[r0 * k..(r0 + band_rows) * k];
        // SAFETY: the assert above checked that the CPU runs `isa`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match isa {
                Isa::Avx2Fma => avx2::band(w, &xp, c, k, blocks),
                Isa::Avx512 => avx512::band(w, &xp, c, k, blocks),
            }
        };
    });
    if ld == n {
        return c;
    }
    let mut out = Vec::with_capacity(rows * n);
    for row in c.chunks_exact(ld) {
        out.extend_from_slice(&row[..n]);
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::KC;
    use std::arch::x86_64::*;

    /// `c` `(rows, 8 * blocks)` = `w` `(rows, k)` times `xp` `(k, 8 * blocks)`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA. The slices must hold exactly those shapes
    /// (checked, a panic otherwise).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn band(w: &[f32], xp: &[f32], c: &mut [f32], k: usize, blocks: usize) {
        const MR: usize = 3;
        let ld = 8 * blocks;
        let rows = c.len() / ld;
        assert!(w.len() == rows * k && xp.len() == k * ld && c.len() == rows * ld && (1..=4).contains(&blocks));
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let mut r = 0;
            while r < rows {
                let mr = if rows - r >= MR { MR } else { 1 };
                // SAFETY: rows r..r + mr exist in `w` and `c`; columns k0..k0 + kc of
                // `w` and rows k0..k0 + kc of `xp` are inside (k0 + kc <= k).
                unsafe {
                    let (wp, xq, cp) = (w.as_ptr().add(r * k + k0), xp.as_ptr().add(k0 * ld), c.as_mut_ptr().add(r * ld));
                    match (mr, blocks) {
                        (3, 1) => tile::<3, 1>(wp, k, xq, kc, cp, k0 == 0),
                        (3, 2) => tile::<3, 2>(wp, k, xq, kc, cp, k0 == 0),
                        (3, 3) => tile::<3, 3>(wp, k, xq, kc, cp, k0 == 0),
                        (3, _) => tile::<3, 4>(wp, k, xq, kc, cp, k0 == 0),
                        (_, 1) => tile::<1, 1>(wp, k, xq, kc, cp, k0 == 0),
                        (_, 2) => tile::<1, 2>(wp, k, xq, kc, cp, k0 == 0),
                        (_, 3) => tile::<1, 3>(wp, k, xq, kc, cp, k0 == 0),
                        (_, _) => tile::<1, 4>(wp, k, xq, kc, cp, k0 == 0),
                    }
                }
                r += mr;
            }
        }
    }

    /// `R` rows of sums `c[r][..8 B]` (+)= `sum_{i < kc} w[r][i] * x[i][..8 B]`, where
    /// row `r` of `w` starts at `w + r * ldw`, `x` has rows of `8 B` and `c` rows of
    /// `8 B`; `first`: start from zero instead of `c`.
    ///
    /// # Safety
    /// AVX2 + FMA; the pointers address those elements.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const B: usize>(w: *const f32, ldw: usize, x: *const f32, kc: usize, c: *mut f32, first: bool) {
        let ld = 8 * B;
        let mut acc = [[_mm256_setzero_ps(); B]; R];
        if !first {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = unsafe { _mm256_loadu_ps(c.add(r * ld + 8 * j)) };
                }
            }
        }
        for i in 0..kc {
            let coef: [__m256; R] = std::array::from_fn(|r| unsafe { _mm256_broadcast_ss(&*w.add(r * ldw + i)) });
            #[allow(clippy::needless_range_loop)] // j indexes the input columns and the accumulators in step
            for j in 0..B {
                let xv = unsafe { _mm256_loadu_ps(x.add(i * ld + 8 * j)) };
                for r in 0..R {
                    acc[r][j] = _mm256_fmadd_ps(coef[r], xv, acc[r][j]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                unsafe { _mm256_storeu_ps(c.add(r * ld + 8 * j), *a) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::KC;
    use std::arch::x86_64::*;

    /// `c` `(rows, 16 * blocks)` = `w` `(rows, k)` times `xp` `(k, 16 * blocks)`, in tiles
    /// of 6 rows x 2 registers (32 columns) or 12 rows x 1 register (16 columns): 12 of
    /// the 32 registers hold sums, the broadcast coefficients fit beside them.
    ///
    /// # Safety
    /// The CPU must have AVX-512F. The slices must hold exactly those shapes (checked, a
    /// panic otherwise).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn band(w: &[f32], xp: &[f32], c: &mut [f32], k: usize, blocks: usize) {
        let ld = 16 * blocks;
        let rows = c.len() / ld;
        assert!(w.len() == rows * k && xp.len() == k * ld && c.len() == rows * ld && (1..=2).contains(&blocks));
        let tall = if blocks == 1 { 12 } else { 6 };
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let mut r = 0;
            while r < rows {
                let mr = if rows - r >= tall { tall } else { 1 };
                // SAFETY: rows r..r + mr exist in `w` and `c`; columns k0..k0 + kc of
                // `w` and rows k0..k0 + kc of `xp` are inside (k0 + kc <= k).
                unsafe {
                    let (wp, xq, cp) = (w.as_ptr().add(r * k + k0), xp.as_ptr().add(k0 * ld), c.as_mut_ptr().add(r * ld));
                    match (mr, blocks) {
                        (12, _) => tile::<12, 1>(wp, k, xq, kc, cp, k0 == 0),
                        (6, _) => tile::<6, 2>(wp, k, xq, kc, cp, k0 == 0),
                        (_, 1) => tile::<1, 1>(wp, k, xq, kc, cp, k0 == 0),
                        (_, _) => tile::<1, 2>(wp, k, xq, kc, cp, k0 == 0),
                    }
                }
                r += mr;
            }
        }
    }

    /// `R` rows of sums `c[r][..16 B]` (+)= `sum_{i < kc} w[r][i] * x[i][..16 B]`, as
    /// `avx2::tile` with 16-lane registers.
    ///
    /// # Safety
    /// AVX-512F; the pointers address those elements.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const B: usize>(w: *const f32, ldw: usize, x: *const f32, kc: usize, c: *mut f32, first: bool) {
        let ld = 16 * B;
        let mut acc = [[_mm512_setzero_ps(); B]; R];
        if !first {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = unsafe { _mm512_loadu_ps(c.add(r * ld + 16 * j)) };
                }
            }
        }
        for i in 0..kc {
            let coef: [__m512; R] = std::array::from_fn(|r| unsafe { _mm512_set1_ps(*w.add(r * ldw + i)) });
            #[allow(clippy::needless_range_loop)] // j indexes the input columns and the accumulators in step
            for j in 0..B {
                let xv = unsafe { _mm512_loadu_ps(x.add(i * ld + 16 * j)) };
                for r in 0..R {
                    acc[r][j] = _mm512_fmadd_ps(coef[r], xv, acc[r][j]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                unsafe { _mm512_storeu_ps(c.add(r * ld + 16 * j), *a) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn pattern(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * 0.377 + seed).sin()).collect()
    }

    #[test]
    fn equals_candles_matmul_on_edges_of_every_block() {
        let isas = Isa::available();
        if isas.is_empty() {
            eprintln!("SKIPPED: this CPU has no AVX2 + FMA (the kernel is not used here)");
            return;
        }
        if !isas.contains(&Isa::Avx512) {
            eprintln!("this CPU has no AVX-512F: only the AVX2 build is checked");
        }
        let dev = Device::Cpu;
        // Rows around the tiles (3, 6, 12) and the bands, k around KC, n over every register count.
        for (rows, k, n) in
            [(1, 1, 8), (2, 7, 9), (3, 64, 16), (7, 255, 17), (13, 100, 15), (100, 256, 24), (101, 257, 31), (3001, 600, 32), (5, 1000, 25), (1151, 1025, 12)]
        {
            let w = Tensor::from_vec(pattern(rows * k, 0.1), (rows, k), &dev).unwrap();
            let xt = Tensor::from_vec(pattern(k * n, 2.3), (k, n), &dev).unwrap();
            let want = w.matmul(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // None where LCROSS_SKINNY_GEMM=off switched the op off.
            let through_op = matmul(&w, &xt).unwrap().map(|y| {
                assert_eq!(y.dims(), &[rows, n]);
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            });
            assert_eq!(through_op.is_some(), Isa::detect().is_some());
            let (wv, xv) = (w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), xt.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            for &isa in isas {
                let got = multiply(isa, &wv, &xv, rows, k, n);
                assert_eq!(got.len(), want.len());
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    // Sums of k terms of size <= 1 in another order: rounding is a few ulps of k.
                    assert!((g - e).abs() <= 1e-6 * k as f32, "{isa:?} ({rows}, {k}, {n}) element {i}: {g} vs {e}");
                }
                if Some(isa) == Isa::detect() {
                    assert_eq!(Some(&got), through_op.as_ref(), "the op runs the chosen build");
                }
            }
        }
    }

    #[test]
    fn passes_on_what_it_does_not_take() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(pattern(12, 0.0), (3, 4), &dev).unwrap();
        for n in [1, 7, 33] {
            let xt = Tensor::from_vec(pattern(4 * n, 1.0), (4, n), &dev).unwrap();
            assert!(matmul(&w, &xt).unwrap().is_none(), "{n} columns");
        }
        let xt = Tensor::from_vec(pattern(4 * 8, 1.0), (4, 8), &dev).unwrap();
        assert!(matmul(&w.to_dtype(DType::F16).unwrap(), &xt.to_dtype(DType::F16).unwrap()).unwrap().is_none(), "f16");
        assert!(matmul(&w.t().unwrap(), &Tensor::zeros((3, 8), DType::F32, &dev).unwrap()).unwrap().is_none(), "a transposed view");
        let bad = Tensor::from_vec(pattern(5 * 8, 1.0), (5, 8), &dev).unwrap();
        assert!(matmul(&w, &bad).unwrap().is_none(), "k mismatch");
    }

    /// Not a test: `[SKINNY_COLS=8,16,24] cargo test --release --workspace --lib skinny -- --ignored --nocapture`
    /// times the kernel against candle's matmul on the decode shapes of Qwen 0.5B and SmolLM2
    /// (32 columns unless `SKINNY_COLS` lists others).
    #[test]
    #[ignore]
    fn time_against_candle() {
        let dev = Device::Cpu;
        let cols: Vec<usize> = std::env::var("SKINNY_COLS").map(|s| s.split(',').map(|c| c.parse().unwrap()).collect()).unwrap_or(vec![32]);
        for (rows, k) in [(1152, 896), (896, 896), (9728, 896), (896, 4864), (151936, 896), (960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)] {
            for &n in &cols {
                let w = Tensor::from_vec(pattern(rows * k, 0.1), (rows, k), &dev).unwrap();
                let xt = Tensor::from_vec(pattern(k * n, 2.3), (k, n), &dev).unwrap();
                let flop = 2.0 * (rows * k * n) as f64;
                let best = |f: &dyn Fn() -> Tensor| {
                    (0..7)
                        .map(|_| {
                            let t = std::time::Instant::now();
                            let _ = f();
                            t.elapsed().as_secs_f64()
                        })
                        .fold(f64::MAX, f64::min)
                };
                let (wv, xv) = (w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), xt.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                for round in 0..2 {
                    let theirs = best(&|| w.matmul(&xt).unwrap());
                    let ours: Vec<String> = Isa::available()
                        .iter()
                        .map(|&isa| {
                            let s = best(&|| Tensor::from_vec(multiply(isa, &wv, &xv, rows, k, n), (rows, n), &dev).unwrap());
                            format!("{isa:?} {:.1}", flop / s / 1e9)
                        })
                        .collect();
                    println!("{rows}x{k} x {k}x{n} round {round}: skinny {} GFLOP/s, candle {:.1} GFLOP/s", ours.join(", "), flop / theirs / 1e9);
                }
            }
        }
    }
}
