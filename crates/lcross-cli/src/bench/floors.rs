//! What this machine can do at best, measured in the same run as a workload: the dense
//! matmul rate (GFLOP/s of candle's f32 gemm on the model's largest layer shape) and
//! the memory read bandwidth (GB/s of all cores summing one large buffer). A workload's
//! floor is its counted matmul FLOPs over the first, or the weight bytes its passes read
//! over the second, whichever is longer (docs/PERFORMANCE.md, "Floors").

use std::time::Instant;

use anyhow::Result;
use lcross_model::candle_core::{DType, Tensor};
use lcross_model::Model;

/// Rows of the matmul probe: a prefill-sized block of tokens.
const PROBE_ROWS: usize = 512;

/// Best-of-5 GFLOP/s of `x W^T` with `x: (512, hidden)`, `W: (intermediate, hidden)` in
/// the model's compute dtype on its device (the MLP's up projection, the bulk of its work).
pub fn matmul_gflops(model: &Model) -> Result<f64> {
    let c = model.config();
    let device = model.decoder().device();
    let dtype = model.decoder().dtype();
    let x = Tensor::randn(0f32, 1.0, (PROBE_ROWS, c.hidden_size), device)?.to_dtype(dtype)?;
    let w = Tensor::randn(0f32, 1.0, (c.intermediate_size, c.hidden_size), device)?.to_dtype(dtype)?;
    let flop = 2.0 * (PROBE_ROWS * c.hidden_size * c.intermediate_size) as f64;
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t = Instant::now();
        let y = x.matmul(&w.t()?)?;
        // Reading one element back waits for asynchronous devices (CUDA, Metal).
        y.narrow(0, 0, 1)?.narrow(1, 0, 1)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(flop / best / 1e9)
}

/// Best-of-3 GB/s of reading a 512 MiB buffer with one thread per core (CPU memory:
/// what decoding on the CPU streams its weights from).
pub fn memory_gbps() -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let buffer: Vec<f32> = (0..(128usize << 20)).map(|i| (i % 7) as f32).collect();
    let chunk = buffer.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let parts: Vec<_> = buffer.chunks(chunk).map(|part| s.spawn(move || sum_lanes(part))).collect();
            parts.into_iter().map(|p| p.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (buffer.len() * 4) as f64 / best / 1e9
}

/// Sum in 16 independent lanes so the loop is bound by loads, not by one add chain.
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut blocks = xs.chunks_exact(16);
    for b in &mut blocks {
        for (l, v) in lanes.iter_mut().zip(b) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + blocks.remainder().iter().sum::<f32>()
}

/// A workload's floor from what it executed and what the machine does.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Floor {
    /// Matmul GFLOP the work executed (counted by the runtime).
    pub gflop: f64,
    /// GB of weights its passes read.
    pub weight_gb: f64,
    /// Measured dense matmul rate, GFLOP/s.
    pub matmul_gflops: f64,
    /// Measured memory read bandwidth, GB/s.
    pub memory_gbps: f64,
    /// `gflop / matmul_gflops`.
    pub compute_floor_s: f64,
    /// `weight_gb / memory_gbps`.
    pub memory_floor_s: f64,
    /// The larger of the two.
    pub floor_s: f64,
}

impl Floor {
    /// The floor of work that executed `flop` and read `weight_bytes`.
    pub fn new(flop: u64, weight_bytes: u64, matmul_gflops: f64, memory_gbps: f64) -> Self {
        let gflop = flop as f64 / 1e9;
        let weight_gb = weight_bytes as f64 / 1e9;
        let compute_floor_s = gflop / matmul_gflops;
        let memory_floor_s = weight_gb / memory_gbps;
        Floor { gflop, weight_gb, matmul_gflops, memory_gbps, compute_floor_s, memory_floor_s, floor_s: compute_floor_s.max(memory_floor_s) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_slower_bound() {
        let f = Floor::new(100_000_000_000, 2_000_000_000, 50.0, 10.0);
        assert!((f.compute_floor_s - 2.0).abs() < 1e-12);
        assert!((f.memory_floor_s - 0.2).abs() < 1e-12);
        assert_eq!(f.floor_s, f.compute_floor_s);
    }

    #[test]
    fn lane_sum_is_the_sum() {
        let xs: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        assert_eq!(sum_lanes(&xs), 499_500.0);
    }
}
