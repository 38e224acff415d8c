//! Library records (metadata, diagnostics, reports) as Python dicts and lists.

use pyo3::prelude::*;
use serde::Serialize;

/// `value` serialised to JSON and read back by Python's `json` module: dicts, lists,
/// floats, ints, strings, None (a NaN becomes None).
pub fn to_python<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| crate::errors::LcrossError::new_err(format!("encoding a record: {e}")))?;
    py.import("json")?.call_method1("loads", (text,))
}
