//! Best-of-15 single-thread f32 GEMM (Qwen 0.5B's MLP up projection shape), in GFLOP/s per
//! second of this thread's CPU time, so a busy machine skews it less than wall time would.
//! `cargo run --release [--features v4] -- ROWS` sets the rows of x (default 512); with
//! ROWS <= 32 it also times `W x^T`, the layout lcross uses for so few rows.
use gemm::{gemm, Parallelism};
fn cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
fn best_gflops(m: usize, k: usize, n: usize) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let mut best = 0f64;
    for _ in 0..15 {
        let t0 = cpu_s();
        // SAFETY: a (m x k), b (k x n) and c (m x n) are row-major buffers of exactly those
        // sizes, and the strides below (column 1, row = width) stay inside them.
        unsafe {
            gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, Parallelism::None);
        }
        let dt = cpu_s() - t0;
        best = best.max(2.0 * (m * k * n) as f64 / dt / 1e9);
    }
    best
}
/// Best-of-15 GFLOP/s of `c (m x n) = a (m x k) b (k x n)` with every operand given by
/// (column stride, row stride), so the same product can be timed in several layouts.
fn best_gflops_strided(m: usize, k: usize, n: usize, a_s: (isize, isize), b_s: (isize, isize), c_s: (isize, isize), threads: usize) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    let mut best = 0f64;
    for _ in 0..15 {
        let t0 = std::time::Instant::now();
        // SAFETY: every buffer holds exactly its matrix, and each (column, row) stride pair
        // addresses it either row-major or column-major, inside the buffer.
        unsafe {
            gemm(m, n, k, c.as_mut_ptr(), c_s.0, c_s.1, false, a.as_ptr(), a_s.0, a_s.1, b.as_ptr(), b_s.0, b_s.1, 0.0, 1.0, false, false, false, par);
        }
        let dt = t0.elapsed().as_secs_f64();
        best = best.max(2.0 * (m * k * n) as f64 / dt / 1e9);
    }
    best
}

/// The layouts a linear layer `y (rows x out) = x (rows x in) W^T` can hand gemm, timed
/// on `threads` threads (wall time): `W` is stored `(out, in)` row-major as in GGUF.
fn layouts(rows: usize, threads: usize) {
    let (k, n) = (896usize, 4864usize);
    let (r, ki, ni) = (rows as isize, k as isize, n as isize);
    // y = x W^T: lhs x row-major, rhs W viewed transposed, dst y row-major (candle's default).
    let a = best_gflops_strided(rows, k, n, (1, ki), (ki, 1), (1, ni), threads);
    // y^T = W x^T with x^T and y^T materialised row-major (lcross today, plus two copies).
    let b = best_gflops_strided(n, k, rows, (1, ki), (1, r), (1, r), threads);
    // y^T = W x^T reading x in place and writing y in place (no copies).
    let c = best_gflops_strided(n, k, rows, (1, ki), (ki, 1), (ni, 1), threads);
    // y = x Wt with the weight stored transposed (in, out) row-major at load.
    let d = best_gflops_strided(rows, k, n, (1, ki), (1, ni), (1, ni), threads);
    // y^T = W x^T with W stored column-major (transposed at load): gemm need not pack it.
    let e = best_gflops_strided(n, k, rows, (ni, 1), (1, r), (1, r), threads);
    println!("{rows} rows, {threads} threads: x W^T {a:.1} | W x^T copies {b:.1} | W x^T in place {c:.1} | x Wt {d:.1} | W(col-major) x^T {e:.1} GFLOP/s");
}

fn main() {
    if std::env::args().nth(2).as_deref() == Some("layouts") {
        let rows: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(32);
        for threads in [1, 2] {
            layouts(rows, threads);
        }
        return;
    }
    let rows: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let (k, n) = (896usize, 4864usize);
    println!("single-thread f32 gemm x W^T {rows}x{k}x{n}: best {:.1} GFLOP/s per core (thread CPU time)", best_gflops(rows, k, n));
    if rows <= 32 {
        println!("single-thread f32 gemm W x^T {n}x{k}x{rows}: best {:.1} GFLOP/s per core (thread CPU time)", best_gflops(n, k, rows));
    }
}
