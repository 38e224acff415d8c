//! Q8_0 weights times activations on CPUs with AVX-512-VNNI: lcross's own kernel for
//! rows of any whole number of 32-value blocks.
//!
//! candle's repacked VNNI kernel takes a Q8_0 weight only when its row length is a
//! multiple of 256 (it quantizes the activations per 256 values), and its other path
//! dots one block at a time with AVX2. SmolLM2's rows are 576 values and Qwen 0.5B's 896,
//! so `q8_pad.rs` padded them to 768 and 1,024 with zero blocks: the fast kernel ran,
//! but on SmolLM2 a third more weight bytes were streamed per token, and the activations
//! were quantized per 256 values. This kernel keeps the GGUF's blocks as they are:
//!
//! - At load, each group of 16 output rows is repacked block by block into a tile of 16
//!   f16 scales and 16 x 32 quants, stored `+128` as bytes and interleaved four at a time
//!   (`[4-value group][row][4 bytes]`) so one `vpdpbusd` multiplies 4 values of 16 rows
//!   at once. The tile holds the same 544 bytes as the 16 blocks it replaces; the
//!   original tensor is dropped.
//! - Each product quantizes its input rows per 32 values (Q8_0, as llama.cpp and candle's
//!   block-by-block path do, with an f32 scale), multiplies 16 rows x up to 4 input rows
//!   per unit of work, and corrects the `+128` with the blocks' quant sums. The integer
//!   dot products are exact; only the per-block scaling runs in f32.
//! - Units (16 weight rows x 4 input rows) run on candle's barrier pool, the pool its own
//!   quantized kernels use, so the two never spin against each other.
//!
//! Used where the CPU has AVX-512F/BW/VNNI and the weight is Q8_0 on the CPU with rows a
//! multiple of 16 and of 32 values; `LCROSS_Q8_KERNEL=off` turns it off (then
//! `q8_pad.rs` applies), for benchmarks. Written by hand: no crate multiplies GGUF Q8_0
//! blocks of any row length with VNNI.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Tensor};

/// Output rows per tile (one 512-bit register of i32 sums).
pub(crate) const TILE_ROWS: usize = 16;
/// Values per Q8_0 block, and its size in bytes (an f16 scale, 32 i8 quants).
pub(crate) const BLOCK: usize = 32;
pub(crate) const BLOCK_BYTES: usize = 34;
/// Input rows a unit of work multiplies against one tile (its register sums).
const MAX_INPUT_ROWS: usize = 4;

/// One 32-value block of 16 output rows: scales and `+128` quants, interleaved.
#[repr(C)]
#[derive(Clone)]
struct Tile {
    /// The rows' block scales, f16 bits.
    scales: [u16; TILE_ROWS],
    /// `quants[(g * 16 + r) * 4 + j]` = row r's quant `4g + j`, plus 128.
    quants: [u8; BLOCK * TILE_ROWS],
}

/// One 32-value block of an input row, quantized.
#[derive(Clone, Copy)]
#[repr(C)]
struct InputBlock {
    quants: [i8; BLOCK],
    scale: f32,
    /// 128 x the sum of `quants`: what the weights' `+128` adds to a dot product.
    offset: i32,
}

/// A Q8_0 matrix `(n, k)` repacked into tiles, `[n / 16][k / 32]`.
#[derive(Clone)]
pub(crate) struct Q8Tiles {
    tiles: Arc<Vec<Tile>>,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for Q8Tiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Tiles({}, {})", self.rows, self.cols)
    }
}

impl Q8Tiles {
    /// `weight` repacked, where the kernel applies to it on this CPU; None otherwise.
    pub(crate) fn for_weight(weight: &QMatMul) -> Option<Self> {
        let QMatMul::QTensor(q) = weight else { return None };
        if !enabled() {
            return None;
        }
        Self::pack(q).ok().flatten()
    }

    /// The tiles of a Q8_0 CPU tensor `(n, k)` with `n % 16 == 0` and `k % 32 == 0`;
    /// None for any other tensor.
    fn pack(q: &QTensor) -> candle_core::Result<Option<Self>> {
        if q.dtype() != GgmlDType::Q8_0 || !q.device().is_cpu() {
            return Ok(None);
        }
        let Ok((n, k)) = q.shape().dims2() else { return Ok(None) };
        if n == 0 || k == 0 || n % TILE_ROWS != 0 || k % BLOCK != 0 {
            return Ok(None);
        }
        let data = q.data()?;
        let blocks = k / BLOCK;
        if data.len() != n * blocks * BLOCK_BYTES {
            candle_core::bail!("Q8_0 tensor of {} bytes for ({n}, {k})", data.len());
        }
        let mut tiles = Vec::with_capacity(n / TILE_ROWS * blocks);
        for group in 0..n / TILE_ROWS {
            for b in 0..blocks {
                let mut tile = Tile { scales: [0; TILE_ROWS], quants: [0; BLOCK * TILE_ROWS] };
                for r in 0..TILE_ROWS {
                    let at = ((group * TILE_ROWS + r) * blocks + b) * BLOCK_BYTES;
                    let block = &data[at..at + BLOCK_BYTES];
                    tile.scales[r] = u16::from_le_bytes([block[0], block[1]]);
                    for (i, &quant) in block[2..].iter().enumerate() {
                        tile.quants[((i / 4) * TILE_ROWS + r) * 4 + i % 4] = (quant as i8 as i16 + 128) as u8;
                    }
                }
                tiles.push(tile);
            }
        }
        Ok(Some(Self { tiles: Arc::new(tiles), rows: n, cols: k }))
    }

    /// The parts stacked along the output rows (layers that read the same input), when
    /// they are all as wide.
    pub(crate) fn stack(parts: &[&Q8Tiles]) -> Option<Self> {
        let cols = parts.first()?.cols;
        if parts.iter().any(|p| p.cols != cols) {
            return None;
        }
        let tiles: Vec<Tile> = parts.iter().flat_map(|p| p.tiles.iter().cloned()).collect();
        Some(Self { tiles: Arc::new(tiles), rows: parts.iter().map(|p| p.rows).sum(), cols })
    }

    /// `(out, in)`.
    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes of the tiles (as many as the Q8_0 blocks they hold).
    pub(crate) fn bytes(&self) -> usize {
        self.tiles.len() * std::mem::size_of::<Tile>()
    }

    /// `x W^T` for `x` of shape `(.., in)`, f32 on the CPU.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, k) = self.dims();
        let mut out_dims = x.dims().to_vec();
        if out_dims.last() != Some(&k) || x.dtype() != DType::F32 || !x.device().is_cpu() {
            candle_core::bail!("Q8_0 tiles of ({n}, {k}) applied to a {:?} {:?} input", x.dtype(), x.dims());
        }
        *out_dims.last_mut().expect("rank >= 1") = n;
        let rows = x.elem_count() / k;
        let x = x.contiguous()?;
        let quantized = {
            let (storage, layout) = x.storage_and_layout();
            let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("Q8_0 tiles applied to an input off the CPU") };
            let start = layout.start_offset();
            quantize_rows(&cpu.as_slice::<f32>()?[start..start + rows * k], k)
        };
        let mut out = vec![0f32; rows * n];
        self.product(&quantized, rows, &mut out);
        Tensor::from_vec(out, out_dims, x.device())
    }

    /// `out` `(rows, n)` = the quantized input `(rows, k)` times the tiles, on the pool.
    fn product(&self, input: &[InputBlock], rows: usize, out: &mut [f32]) {
        let (n, k) = self.dims();
        let blocks = k / BLOCK;
        let row_groups = rows.div_ceil(MAX_INPUT_ROWS);
        let units = n / TILE_ROWS * row_groups;
        let out_at = out.as_mut_ptr() as usize;
        let tiles = &self.tiles[..];
        candle_core::utils::barrier_pool().execute_chunked(units, |range| {
            for unit in range {
                // Units of one tile group are consecutive: its tiles stay in cache.
                let (group, first_row) = (unit / row_groups, unit % row_groups * MAX_INPUT_ROWS);
                let count = (rows - first_row).min(MAX_INPUT_ROWS);
                let group_tiles = &tiles[group * blocks..(group + 1) * blocks];
                let mut inputs: [&[InputBlock]; MAX_INPUT_ROWS] = [&[]; MAX_INPUT_ROWS];
                for (i, slot) in inputs[..count].iter_mut().enumerate() {
                    let r = first_row + i;
                    *slot = &input[r * blocks..(r + 1) * blocks];
                }
                let mut sums = [[0f32; TILE_ROWS]; MAX_INPUT_ROWS];
                tile_product(group_tiles, &inputs[..count], &mut sums[..count]);
                for (i, row_sums) in sums[..count].iter().enumerate() {
                    // SAFETY: each unit writes its own 16 columns of its own rows of `out`,
                    // which outlives the pool call.
                    unsafe {
                        let dst = (out_at as *mut f32).add((first_row + i) * n + group * TILE_ROWS);
                        std::ptr::copy_nonoverlapping(row_sums.as_ptr(), dst, TILE_ROWS);
                    }
                }
            }
        });
    }
}

/// Whether this CPU runs the kernel and it is not turned off. Read once per process.
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("LCROSS_Q8_KERNEL").as_deref() != Ok("off") && cpu_has_vnni512())
}

/// Whether this CPU has AVX-512F/BW/VNNI. Read once per process.
fn cpu_has_vnni512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Input blocks from which quantizing runs on the pool (a prefill's rows).
const PARALLEL_QUANTIZE_BLOCKS: usize = 256;

/// Rows of `k` values quantized per 32: scale `max|x| / 127`, quants rounded to
/// nearest (ties to even), as candle's and ggml's SIMD quantizers round.
fn quantize_rows(x: &[f32], k: usize) -> Vec<InputBlock> {
    let count = x.len() / BLOCK;
    let mut out = vec![InputBlock { quants: [0; BLOCK], scale: 0.0, offset: 0 }; count];
    let quantize_range = |range: std::ops::Range<usize>, out: &mut [InputBlock]| {
        for (block, values) in out.iter_mut().zip(x[range.start * BLOCK..range.end * BLOCK].chunks_exact(BLOCK)) {
            *block = quantize_block(values);
        }
    };
    if count < PARALLEL_QUANTIZE_BLOCKS {
        quantize_range(0..count, &mut out);
    } else {
        let out_at = out.as_mut_ptr() as usize;
        candle_core::utils::barrier_pool().execute_chunked(count, |range| {
            // SAFETY: the pool hands out disjoint ranges of `out`, which outlives the call.
            let dst = unsafe { std::slice::from_raw_parts_mut((out_at as *mut InputBlock).add(range.start), range.len()) };
            quantize_range(range, dst);
        });
    }
    debug_assert_eq!(count * BLOCK, k * (x.len() / k.max(1)));
    out
}

/// One block quantized: with AVX-512 where the CPU has it, else in plain Rust (the
/// same numbers: the same products, rounding and clamp).
fn quantize_block(values: &[f32]) -> InputBlock {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_vnni512() {
        // SAFETY: the CPU has AVX-512F/BW (checked just above); `values` holds 32 floats.
        return unsafe { vnni::quantize_block(values) };
    }
    reference_quantize_block(values)
}

fn reference_quantize_block(values: &[f32]) -> InputBlock {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = max / 127.0;
    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut quants = [0i8; BLOCK];
    let mut sum = 0i32;
    for (q, &v) in quants.iter_mut().zip(values) {
        *q = (v * inverse).round_ties_even().clamp(-127.0, 127.0) as i8;
        sum += *q as i32;
    }
    InputBlock { quants, scale, offset: 128 * sum }
}

/// The 16 row sums of one tile group against each input row (`sums[i]` for
/// `inputs[i]`, at most [`MAX_INPUT_ROWS`]): the VNNI kernel where the CPU has it
/// (always, outside the tests), the plain-Rust sums elsewhere.
fn tile_product(tiles: &[Tile], inputs: &[&[InputBlock]], sums: &mut [[f32; TILE_ROWS]]) {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_vnni512() {
        // SAFETY: the CPU has the kernel's instructions (checked just above).
        unsafe {
            match inputs.len() {
                1 => return vnni::tile_product::<1>(tiles, inputs, sums),
                2 => return vnni::tile_product::<2>(tiles, inputs, sums),
                3 => return vnni::tile_product::<3>(tiles, inputs, sums),
                _ => return vnni::tile_product::<4>(tiles, inputs, sums),
            }
        }
    }
    #[allow(unreachable_code)]
    reference_tile_product(tiles, inputs, sums)
}

/// The same sums in plain Rust: the tests' reference for the kernel.
fn reference_tile_product(tiles: &[Tile], inputs: &[&[InputBlock]], sums: &mut [[f32; TILE_ROWS]]) {
    for (input, row_sums) in inputs.iter().zip(sums.iter_mut()) {
        *row_sums = [0.0; TILE_ROWS];
        for (tile, block) in tiles.iter().zip(input.iter()) {
            for (r, sum) in row_sums.iter_mut().enumerate() {
                let dot: i32 = (0..BLOCK).map(|i| tile.quants[((i / 4) * TILE_ROWS + r) * 4 + i % 4] as i32 * block.quants[i] as i32).sum();
                let scale = half::f16::from_bits(tile.scales[r]).to_f32() * block.scale;
                *sum += (dot - block.offset) as f32 * scale;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{InputBlock, Tile, BLOCK, TILE_ROWS};
    use std::arch::x86_64::*;

    /// [`super::reference_quantize_block`] in two registers.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_block(values: &[f32]) -> InputBlock {
        assert!(values.len() >= BLOCK);
        let (v0, v1) = (_mm512_loadu_ps(values.as_ptr()), _mm512_loadu_ps(values.as_ptr().add(16)));
        let max = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let scale = max / 127.0;
        let inverse = _mm512_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
        let (low, high) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127));
        // Rounds to nearest even (the default rounding mode), as `round_ties_even`.
        let q0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, inverse)), low), high);
        let q1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, inverse)), low), high);
        let mut block = InputBlock { quants: [0; BLOCK], scale, offset: 128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)) };
        _mm_storeu_si128(block.quants.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(block.quants.as_mut_ptr().add(16) as *mut __m128i, _mm512_cvtepi32_epi8(q1));
        block
    }

    /// Four consecutive quants of an input block, in every lane.
    #[inline(always)]
    unsafe fn broadcast4(block: &InputBlock, group: usize) -> __m512i {
        _mm512_set1_epi32(std::ptr::read_unaligned(block.quants.as_ptr().add(4 * group) as *const i32))
    }

    /// `sums += scale x (dot - offset)` for one tile and one input block.
    #[inline(always)]
    unsafe fn scale_into(sum: __m512, dots: __m512i, tile: &Tile, block: &InputBlock) -> __m512 {
        let weight_scales = _mm512_cvtph_ps(_mm256_loadu_si256(tile.scales.as_ptr() as *const __m256i));
        let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(dots, _mm512_set1_epi32(block.offset)));
        _mm512_fmadd_ps(exact, _mm512_mul_ps(weight_scales, _mm512_set1_ps(block.scale)), sum)
    }

    /// Blocks in pairs with separate integer sums, so the `vpdpbusd` chains of two
    /// blocks interleave when there is a single input row.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_product<const ROWS: usize>(tiles: &[Tile], inputs: &[&[InputBlock]], sums: &mut [[f32; TILE_ROWS]]) {
        let inputs: [&[InputBlock]; ROWS] = std::array::from_fn(|i| inputs[i]);
        let mut acc = [_mm512_setzero_ps(); ROWS];
        let mut b = 0;
        while b + 1 < tiles.len() {
            let (t0, t1) = (&tiles[b], &tiles[b + 1]);
            let mut dots0 = [_mm512_setzero_si512(); ROWS];
            let mut dots1 = [_mm512_setzero_si512(); ROWS];
            for g in 0..8 {
                let w0 = _mm512_loadu_si512(t0.quants.as_ptr().add(g * 64) as *const __m512i);
                let w1 = _mm512_loadu_si512(t1.quants.as_ptr().add(g * 64) as *const __m512i);
                for i in 0..ROWS {
                    dots0[i] = _mm512_dpbusd_epi32(dots0[i], w0, broadcast4(&inputs[i][b], g));
                    dots1[i] = _mm512_dpbusd_epi32(dots1[i], w1, broadcast4(&inputs[i][b + 1], g));
                }
            }
            for i in 0..ROWS {
                acc[i] = scale_into(acc[i], dots0[i], t0, &inputs[i][b]);
                acc[i] = scale_into(acc[i], dots1[i], t1, &inputs[i][b + 1]);
            }
            b += 2;
        }
        if b < tiles.len() {
            let t = &tiles[b];
            let mut dots = [_mm512_setzero_si512(); ROWS];
            for g in 0..8 {
                let w = _mm512_loadu_si512(t.quants.as_ptr().add(g * 64) as *const __m512i);
                for i in 0..ROWS {
                    dots[i] = _mm512_dpbusd_epi32(dots[i], w, broadcast4(&inputs[i][b], g));
                }
            }
            for i in 0..ROWS {
                acc[i] = scale_into(acc[i], dots[i], t, &inputs[i][b]);
            }
        }
        for i in 0..ROWS {
            _mm512_storeu_ps(sums[i].as_mut_ptr(), acc[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    fn pattern(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * 0.377 + seed).sin() * (1.0 + (i % 7) as f32)).collect()
    }

    fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
        let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        (d / b.iter().map(|y| y * y).sum::<f32>()).sqrt()
    }

    fn quantized(n: usize, k: usize, seed: f32) -> QTensor {
        let w = Tensor::from_vec(pattern(n * k, seed), (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()
    }

    #[test]
    fn tiles_hold_the_blocks_of_the_rows() {
        let q = quantized(32, 96, 0.4);
        let tiles = Q8Tiles::pack(&q).unwrap().expect("Q8_0 of whole tiles");
        assert_eq!((tiles.dims(), tiles.bytes()), ((32, 96), q.storage_size_in_bytes()));
        let dense = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        // Row 17's value 70: tile group 1, block 2, row 1, group 1 of 4, lane 2.
        let tile = &tiles.tiles[3 + 2];
        let value = (tile.quants[(TILE_ROWS + 1) * 4 + 2] as i32 - 128) as f32 * half::f16::from_bits(tile.scales[1]).to_f32();
        assert_eq!(value, dense[17][70]);
    }

    #[test]
    fn takes_only_q8_0_of_whole_tiles_and_blocks() {
        assert!(Q8Tiles::pack(&quantized(24, 96, 0.1)).unwrap().is_none(), "rows not a multiple of 16");
        let w = Tensor::from_vec(pattern(16 * 256, 0.1), (16, 256), &Device::Cpu).unwrap();
        assert!(Q8Tiles::pack(&QTensor::quantize(&w, GgmlDType::Q4_0).unwrap()).unwrap().is_none(), "another type");
        assert!(Q8Tiles::pack(&quantized(16, 96, 0.1)).unwrap().is_some());
    }

    #[test]
    fn quantized_input_blocks_round_trip_within_half_a_step() {
        let x = pattern(64, 2.0);
        for (block, values) in quantize_rows(&x, 64).iter().zip(x.chunks(BLOCK)) {
            assert_eq!(block.offset, 128 * block.quants.iter().map(|&q| q as i32).sum::<i32>());
            for (&q, &v) in block.quants.iter().zip(values) {
                assert!((q as f32 * block.scale - v).abs() <= 0.5 * block.scale * 1.0001, "{q} x {} vs {v}", block.scale);
            }
        }
        assert!(quantize_rows(&[0.0; 32], 32)[0].quants.iter().all(|&q| q == 0));
        // Many rows (quantized on the pool, with AVX-512 where the CPU has it) give the
        // plain-Rust blocks exactly.
        let x = pattern(40 * 576, 0.3);
        for (got, values) in quantize_rows(&x, 576).iter().zip(x.chunks(BLOCK)) {
            let want = reference_quantize_block(values);
            assert_eq!((got.quants, got.scale.to_bits(), got.offset), (want.quants, want.scale.to_bits(), want.offset));
        }
    }

    /// The kernel's sums equal the plain-Rust ones (integer dots exact; f32 scaling in
    /// another order), for 1..=4 input rows and odd and even block counts.
    #[test]
    fn kernel_equals_the_reference_sums() {
        if !cpu_has_vnni512() {
            eprintln!("SKIPPED kernel_equals_the_reference_sums: this CPU lacks AVX-512-VNNI");
            return;
        }
        for k in [32, 96, 576] {
            let tiles = Q8Tiles::pack(&quantized(16, k, 0.2)).unwrap().unwrap();
            let x = pattern(4 * k, 1.1);
            let blocks = quantize_rows(&x, k);
            for rows in 1..=MAX_INPUT_ROWS {
                let inputs: Vec<&[InputBlock]> = blocks.chunks(k / BLOCK).take(rows).collect();
                let (mut got, mut want) = (vec![[0f32; TILE_ROWS]; rows], vec![[0f32; TILE_ROWS]; rows]);
                tile_product(&tiles.tiles, &inputs, &mut got);
                reference_tile_product(&tiles.tiles, &inputs, &mut want);
                let (got, want): (Vec<f32>, Vec<f32>) = (got.concat(), want.concat());
                assert!(rel_l2(&got, &want) < 1e-6, "k {k}, {rows} rows: {}", rel_l2(&got, &want));
            }
        }
    }

    /// Products against independent references: the dequantized f32 product (the
    /// activations' quantization error, ~1e-3 here), and candle's block-by-block Q8_0
    /// product, which quantizes the activations per 32 values too (f16 scales: ~1e-4).
    #[test]
    fn product_equals_the_dequantized_and_candles() {
        let dev = Device::Cpu;
        for (n, k) in [(48, 576), (32, 896), (16, 32)] {
            let q = quantized(n, k, 0.3);
            let dense = q.dequantize(&dev).unwrap();
            let tiles = Q8Tiles::pack(&q).unwrap().unwrap();
            let candle = QMatMul::from_qtensor(q).unwrap();
            for rows in [1, 3, 4, 7, 33] {
                let x = Tensor::from_vec(pattern(rows * k, 1.7), (1, rows, k), &dev).unwrap();
                let want = x.broadcast_matmul(&dense.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let got = tiles.forward(&x).unwrap();
                assert_eq!(got.dims(), &[1, rows, n]);
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let theirs = candle.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(rel_l2(&got, &want) < 3e-3, "({n}, {k}) x {rows} rows vs f32: {}", rel_l2(&got, &want));
                if k % 256 != 0 {
                    assert!(rel_l2(&got, &theirs) < 5e-4, "({n}, {k}) x {rows} rows vs candle: {}", rel_l2(&got, &theirs));
                }
            }
        }
    }

    #[test]
    fn stacked_tiles_equal_the_parts_side_by_side() {
        let dev = Device::Cpu;
        let (a, b) = (Q8Tiles::pack(&quantized(32, 64, 0.1)).unwrap().unwrap(), Q8Tiles::pack(&quantized(16, 64, 0.9)).unwrap().unwrap());
        let stacked = Q8Tiles::stack(&[&a, &b]).unwrap();
        assert_eq!(stacked.dims(), (48, 64));
        let x = Tensor::from_vec(pattern(2 * 64, 0.5), (2, 64), &dev).unwrap();
        let want = Tensor::cat(&[a.forward(&x).unwrap(), b.forward(&x).unwrap()], 1).unwrap();
        assert_eq!(stacked.forward(&x).unwrap().to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        assert!(Q8Tiles::stack(&[&a, &Q8Tiles::pack(&quantized(16, 96, 0.9)).unwrap().unwrap()]).is_none(), "unlike widths");
    }

    #[test]
    fn wrong_inputs_are_errors() {
        let tiles = Q8Tiles::pack(&quantized(16, 64, 0.1)).unwrap().unwrap();
        assert!(tiles.forward(&Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap()).is_err());
        assert!(tiles.forward(&Tensor::zeros((2, 64), DType::F16, &Device::Cpu).unwrap()).is_err());
    }
}
