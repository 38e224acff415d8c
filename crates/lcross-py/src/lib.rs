//! `import lcross`: the Python face of lcross, built from the same crates as the CLI
//! (PyO3, abi3). Every call goes to the libraries (lcross-model, lcross-core,
//! lcross-eval); this crate converts arguments and results, releases the GIL while the
//! libraries work, and maps their typed errors onto `lcross.LcrossError`'s subclasses.

mod arrays;
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

/// The compiled part of the `lcross` package.
#[pymodule]
fn _lcross(m: &Bound<'_, PyModule>) -> PyResult<()> {
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
    m.add_function(wrap_pyfunction!(evals::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(evals::eval_ab, m)?)?;
    m.add_function(wrap_pyfunction!(evals::calibrate, m)?)?;
    errors::register(m)?;
    Ok(())
}
