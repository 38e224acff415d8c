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
fn main() {
    let rows: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let (k, n) = (896usize, 4864usize);
    println!("single-thread f32 gemm x W^T {rows}x{k}x{n}: best {:.1} GFLOP/s per core (thread CPU time)", best_gflops(rows, k, n));
    if rows <= 32 {
        println!("single-thread f32 gemm W x^T {n}x{k}x{rows}: best {:.1} GFLOP/s per core (thread CPU time)", best_gflops(n, k, rows));
    }
}
