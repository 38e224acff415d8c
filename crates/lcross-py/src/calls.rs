//! How the bindings run long library work: with the GIL released, Ctrl-C asked before
//! every forward pass (it stops the work and raises `KeyboardInterrupt`; nothing is
//! written half: the libraries write their caches and files atomically), and the
//! libraries' progress bars shown or hidden as the caller's `progress=` says.

use std::cell::RefCell;
use std::rc::Rc;

use pyo3::prelude::*;

/// Run `work` as described above; `progress` None shows the bars when stderr is a
/// terminal.
pub fn run_long<T: Send>(py: Python<'_>, progress: Option<bool>, work: impl FnOnce() -> T + Send) -> PyResult<T> {
    let shown = progress.unwrap_or_else(crate::stderr_is_terminal);
    let (out, caught) = py.allow_threads(move || {
        let caught: Rc<RefCell<Option<PyErr>>> = Rc::default();
        let slot = caught.clone();
        let ctrl_c = move || match Python::with_gil(|py| py.check_signals()) {
            Ok(()) => false,
            Err(e) => {
                *slot.borrow_mut() = Some(e);
                true
            }
        };
        let out = lcross_model::interrupt::with_check(ctrl_c, || lcross_core::activations::with_progress(shown, work));
        let caught = caught.borrow_mut().take();
        (out, caught)
    });
    match caught {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
