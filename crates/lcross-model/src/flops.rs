//! A process-wide count of the matrix-multiply work the forward passes executed, so a
//! benchmark can put a run's seconds next to its floor (FLOPs over the machine's measured
//! matmul rate). Counted: every linear layer (`2 * rows * in * out`) and the two
//! attention products (`2 * rows * heads * queries * keys * head_dim` each), padding
//! included, since it is computed. Element-wise work (norms, rotary, softmax) is not
//! counted: it is a few percent of the FLOPs at these sizes. Beside it, the bytes of
//! weights the linear layers read (once per pass, whatever its rows): the memory floor of
//! decoding.

use std::sync::atomic::{AtomicU64, Ordering};

static EXECUTED: AtomicU64 = AtomicU64::new(0);
static WEIGHT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Add `n` floating-point operations to the count.
pub(crate) fn add(n: u64) {
    EXECUTED.fetch_add(n, Ordering::Relaxed);
}

/// Add `n` bytes of weights read by one linear layer's pass.
pub(crate) fn add_weight_bytes(n: u64) {
    WEIGHT_BYTES.fetch_add(n, Ordering::Relaxed);
}

/// Bytes of weights the linear layers of this process have read so far.
pub fn weight_bytes_read() -> u64 {
    WEIGHT_BYTES.load(Ordering::Relaxed)
}

/// Matmul FLOPs executed by this process so far (take differences around a piece of work).
pub fn executed() -> u64 {
    EXECUTED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let before = executed();
        add(10);
        add(32);
        assert!(executed() - before >= 42);
    }
}
