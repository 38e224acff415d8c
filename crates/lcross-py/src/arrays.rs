//! Arrays in and out: anything numpy can read (numpy arrays, lists, objects with
//! `__array__` or DLPack such as torch tensors, without importing torch) comes in through
//! `numpy.asarray`; results go out as numpy arrays.

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors::{NonFiniteError, ShapeError};

/// `numpy.asarray(obj, dtype)`, through DLPack first when `obj` offers it and is not a
/// numpy array (torch tensors on the CPU, JAX arrays...).
fn as_numpy<'py>(obj: &Bound<'py, PyAny>, dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let is_ndarray = obj.is_instance(&np.getattr("ndarray")?)?;
    let source = if !is_ndarray && obj.hasattr("__dlpack__")? {
        match np.call_method1("from_dlpack", (obj,)) {
            Ok(a) => a,
            Err(_) => obj.clone(),
        }
    } else {
        obj.clone()
    };
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("dtype", dtype)?;
    np.getattr("ascontiguousarray")?.call((source,), Some(&kwargs))
}

/// A 2-D float64 matrix `(rows, columns)` in row-major order; `what` names it in errors.
pub fn matrix_f64(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(usize, usize, Vec<f64>)> {
    let a = as_numpy(obj, "float64")?;
    let a: PyReadonlyArray2<'_, f64> =
        a.extract().map_err(|_| ShapeError::new_err(format!("{what} must be a 2-D array (rows, features), got {} dimensions", ndim(&a))))?;
    let (n, d) = (a.shape()[0], a.shape()[1]);
    let data: Vec<f64> = a.as_array().iter().copied().collect();
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(NonFiniteError::new_err(format!("{what} has a non-finite value (NaN or infinity) at row {}, column {}", i / d.max(1), i % d.max(1))));
    }
    Ok((n, d, data))
}

/// A 1-D float32 vector.
pub fn vector_f32(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    let a = as_numpy(obj, "float32")?;
    let a: PyReadonlyArray1<'_, f32> = a.extract().map_err(|_| ShapeError::new_err(format!("{what} must be a 1-D array, got {} dimensions", ndim(&a))))?;
    let v: Vec<f32> = a.as_array().iter().copied().collect();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(NonFiniteError::new_err(format!("{what} has a non-finite value (NaN or infinity) at index {i}")));
    }
    Ok(v)
}

/// The number of dimensions of an array, or 0 when `a` is not one.
fn ndim(a: &Bound<'_, PyAny>) -> usize {
    a.getattr("ndim").and_then(|n| n.extract()).unwrap_or(0)
}

/// Rows of equal length as a `(rows, width)` float32 array.
pub fn rows_to_numpy<'py>(py: Python<'py>, rows: &[Vec<f32>], width: usize) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    PyArray1::from_vec(py, flat).reshape([rows.len(), width])
}

/// A float32 vector as a numpy array.
pub fn vec_to_numpy<'py>(py: Python<'py>, v: &[f32]) -> Bound<'py, PyArray1<f32>> {
    PyArray1::from_slice(py, v)
}

/// A dense f64 matrix `(rows, columns)` as a numpy array.
pub fn mat_to_numpy<'py>(py: Python<'py>, rows: usize, cols: usize, at: impl Fn(usize, usize) -> f64) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let flat: Vec<f64> = (0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))).map(|(i, j)| at(i, j)).collect();
    PyArray1::from_vec(py, flat).reshape([rows, cols])
}
