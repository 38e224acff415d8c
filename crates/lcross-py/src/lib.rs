//! `import lcross`: the Python face of lcross, built from the same crates as the CLI
//! (PyO3, abi3). Every call goes to the libraries (lcross-model, lcross-core,
//! lcross-eval); this crate converts arguments and results, releases the GIL while the
//! libraries work, and maps their typed errors onto `lcross.LcrossError`'s subclasses.

mod arrays;
mod calls;
mod errors;
mod evals;
mod json;
mod maps;
mod model;
mod vector;

use pyo3::prelude::*;

/// Whether stderr is a terminal (progress bars are shown by default there).
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Make glibc keep freed memory for reuse as the `lcross` binary's process ends up doing.
///
/// A forward pass allocates and frees activations of up to tens of MiB per batch. In the
/// binary, glibc's dynamic thresholds rise after the first frees and the blocks are
/// reused; in a Python process they were unmapped and mapped again every batch (twice
/// the page faults of the binary, extraction ~10% slower: docs/PERFORMANCE.md). These are
/// the values the dynamic heuristic reaches (mmap threshold at its 32 MiB ceiling) with a
/// trim threshold large enough to keep one batch's activations. A user's own setting
/// (`GLIBC_TUNABLES` or `MALLOC_*` in the environment) is left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    let user_set = std::env::vars_os().any(|(k, _)| k.to_str().is_some_and(|k| k == "GLIBC_TUNABLES" || k.starts_with("MALLOC_")));
    if !user_set {
        // SAFETY: mallopt only sets two of glibc's allocator parameters; it is safe to
        // call at any time from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}

/// The compiled part of the `lcross` package.
#[pymodule]
fn _lcross(m: &Bound<'_, PyModule>) -> PyResult<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_freed_memory();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_MODEL", lcross_model::DEFAULT_MODEL)?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::Steer>()?;
    m.add_class::<model::SteeringBlock>()?;
    m.add_class::<vector::SteeringVector>()?;
    m.add_class::<maps::LinearMap>()?;
    m.add_function(wrap_pyfunction!(vector::extract, m)?)?;
    m.add_function(wrap_pyfunction!(maps::fit_map, m)?)?;
    m.add_function(wrap_pyfunction!(maps::align, m)?)?;
    m.add_function(wrap_pyfunction!(maps::transfer, m)?)?;
    m.add_function(wrap_pyfunction!(maps::similarity, m)?)?;
    m.add_function(wrap_pyfunction!(evals::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(evals::eval_ab, m)?)?;
    m.add_function(wrap_pyfunction!(evals::calibrate, m)?)?;
    errors::register(m)?;
    Ok(())
}
