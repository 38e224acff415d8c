//! The exception hierarchy of `lcross` (every error is an `lcross.LcrossError`) and the
//! mapping of the libraries' typed errors onto it.

use lcross_core::CoreError;
use lcross_eval::EvalError;
use lcross_model::ModelError;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::{create_exception, PyErr};

create_exception!(lcross, LcrossError, PyException, "Base class of every error lcross raises.");
create_exception!(lcross, ModelError_, LcrossError, "A model could not be found, loaded or run.");
create_exception!(lcross, DataError, LcrossError, "A dataset or artifact file is malformed or cannot be read (the message names the file and item).");
create_exception!(lcross, MissingDataError, DataError, "The public datasets are not in the data directory: run `lcross data fetch`.");
create_exception!(lcross, BadValueError, LcrossError, "An argument is not a value lcross takes (the message says what it expects).");
create_exception!(lcross, ShapeError, LcrossError, "An array, vector or matrix has the wrong size, or a layer is out of range or missing.");
create_exception!(lcross, NonFiniteError, LcrossError, "An input holds NaN or an infinity.");
create_exception!(lcross, WrongModelError, LcrossError, "A vector or map made for another model (pass force=True to use it anyway where allowed).");
create_exception!(lcross, NotCalibratedError, LcrossError, "beta='auto' on a vector that was never calibrated.");
create_exception!(lcross, EvaluationError, LcrossError, "An evaluation, judge or experiment could not run as asked.");

/// Add the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LcrossError", py.get_type::<LcrossError>())?;
    m.add("ModelError", py.get_type::<ModelError_>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("MissingDataError", py.get_type::<MissingDataError>())?;
    m.add("BadValueError", py.get_type::<BadValueError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add("WrongModelError", py.get_type::<WrongModelError>())?;
    m.add("NotCalibratedError", py.get_type::<NotCalibratedError>())?;
    m.add("EvaluationError", py.get_type::<EvaluationError>())?;
    Ok(())
}

fn model_error(e: &ModelError) -> PyErr {
    let msg = e.to_string();
    match e {
        ModelError::Interrupted => PyKeyboardInterrupt::new_err(msg),
        ModelError::InvalidInput(_) => BadValueError::new_err(msg),
        ModelError::Io { .. } | ModelError::InvalidFile { .. } | ModelError::Field { .. } | ModelError::Tensor { .. } => ModelError_::new_err(msg),
        _ => ModelError_::new_err(msg),
    }
}

fn core_error(e: &CoreError) -> PyErr {
    let msg = e.to_string();
    match e {
        CoreError::Model(m) => model_error(m),
        CoreError::MissingData { .. } => MissingDataError::new_err(msg),
        CoreError::Io { .. }
        | CoreError::Parse { .. }
        | CoreError::Store { .. }
        | CoreError::StoreDamaged { .. }
        | CoreError::Encode { .. }
        | CoreError::Write(_) => DataError::new_err(msg),
        CoreError::BadValue { .. } | CoreError::Empty { .. } | CoreError::TooFew { .. } => BadValueError::new_err(msg),
        CoreError::SizeMismatch { .. } | CoreError::LayerOutOfRange { .. } | CoreError::MissingLayer { .. } => ShapeError::new_err(msg),
        CoreError::HiddenSizeMismatch { .. } | CoreError::WrongModel(_) => WrongModelError::new_err(msg),
        CoreError::NonFinite { .. } => NonFiniteError::new_err(msg),
        CoreError::NotCalibrated { .. } => NotCalibratedError::new_err(msg),
        CoreError::Numerical(_) => LcrossError::new_err(msg),
    }
}

fn eval_error(e: &EvalError) -> PyErr {
    let msg = e.to_string();
    match e {
        EvalError::Core(c) => core_error(c),
        EvalError::Model(m) => model_error(m),
        EvalError::Parse { .. } | EvalError::Json(_) | EvalError::Checksum { .. } | EvalError::Download { .. } => DataError::new_err(msg),
        EvalError::MissingInput { .. } | EvalError::TooFew { .. } | EvalError::Config { .. } => BadValueError::new_err(msg),
        EvalError::Load { .. } => ModelError_::new_err(msg),
        _ => EvaluationError::new_err(msg),
    }
}

/// Turn a library result into a Python exception of the hierarchy.
pub trait OrRaise<T> {
    fn or_raise(self) -> PyResult<T>;
}

impl<T> OrRaise<T> for Result<T, CoreError> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(|e| core_error(&e))
    }
}

impl<T> OrRaise<T> for Result<T, EvalError> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(|e| eval_error(&e))
    }
}

impl<T> OrRaise<T> for Result<T, ModelError> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(|e| model_error(&e))
    }
}

/// A `BadValueError` with `message`.
pub fn bad_value(message: impl Into<String>) -> PyErr {
    BadValueError::new_err(message.into())
}
