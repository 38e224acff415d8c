//! `lcross.LinearMap`, `lcross.fit_map`, `lcross.align`, `lcross.transfer`.

use std::path::PathBuf;
use std::sync::Arc;

use lcross_core::maps::{Estimator, Rows};
use lcross_eval::pipeline::{self, Corpus, MapSide};
use numpy::PyArray2;
use pyo3::prelude::*;

use crate::arrays::{mat_to_numpy, matrix_f64, rows_to_numpy, vec_to_numpy, vector_f32};
use crate::calls::run_long;
use crate::errors::{bad_value, OrRaise};
use crate::json::to_python;
use crate::model::Model;
use crate::vector::SteeringVector;

/// A linear map `T` (d_s x d_t) between two hidden spaces: a source row `x` maps to
/// `x @ T`. The file format is the CLI's.
#[pyclass(module = "lcross", name = "LinearMap", frozen)]
pub struct LinearMap {
    pub inner: Arc<lcross_core::maps::LinearMap>,
    /// The file it was read from or last written to (recorded by `transfer`).
    pub file: std::sync::Mutex<Option<PathBuf>>,
}

impl LinearMap {
    fn wrap(map: lcross_core::maps::LinearMap, file: Option<PathBuf>) -> Self {
        Self { inner: Arc::new(map), file: std::sync::Mutex::new(file) }
    }
}

#[pymethods]
impl LinearMap {
    /// Read a map file (written by `save` or `lcross align`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(Self::wrap(lcross_core::maps::LinearMap::load(&path).or_raise()?, Some(path)))
    }

    /// Write the map (safetensors + JSON metadata).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).or_raise()?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
        Ok(())
    }

    /// `T` as a float64 array of shape (d_s, d_t).
    #[getter]
    fn matrix<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let t = &self.inner.t;
        mat_to_numpy(py, t.nrows(), t.ncols(), |i, j| t[(i, j)])
    }

    /// The bias `b` of an affine map (`y ~ x @ T + b`; float64, shape (d_t,)), None for
    /// linear maps. Vectors (differences of states) move through `T` alone.
    #[getter]
    fn bias<'py>(&self, py: Python<'py>) -> Option<Bound<'py, numpy::PyArray1<f64>>> {
        self.inner.bias.as_ref().map(|b| numpy::PyArray1::from_slice(py, b))
    }

    /// (d_s, d_t).
    #[getter]
    fn shape(&self) -> (usize, usize) {
        (self.inner.t.nrows(), self.inner.t.ncols())
    }

    /// The fit's diagnostics: n, source_dim, target_dim, train_r2, heldout_r2 (None below
    /// 10 rows), rank, interpolating, lambda, seconds.
    #[getter]
    fn diagnostics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.metadata.diagnostics)
    }

    /// Everything recorded about the map (models, layers, hooks, estimator, corpus...).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.metadata)
    }

    /// `x @ T` for one row (d_s,) or rows (n, d_s); float32 out.
    fn apply<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let ndim: usize = py.import("numpy")?.call_method1("ndim", (x,))?.extract()?;
        if ndim == 1 {
            let v = vector_f32(x, "the row")?;
            return Ok(vec_to_numpy(py, &lcross_core::maps::apply(&self.inner.t, &v).or_raise()?).into_any());
        }
        let (n, d, data) = matrix_f64(x, "the rows")?;
        let out: Vec<Vec<f32>> = (0..n)
            .map(|i| lcross_core::maps::apply(&self.inner.t, &data[i * d..(i + 1) * d].iter().map(|x| *x as f32).collect::<Vec<_>>()))
            .collect::<Result<_, _>>()
            .or_raise()?;
        Ok(rows_to_numpy(py, &out, self.inner.t.ncols())?.into_any())
    }

    fn __repr__(&self) -> String {
        let m = &self.inner.metadata;
        format!(
            "LinearMap({} L{} -> {} L{}, {:?}, shape=({}, {}), train_r2={:.4})",
            m.source_model_id,
            m.source_layer,
            m.target_model_id,
            m.target_layer,
            m.estimator,
            self.inner.t.nrows(),
            self.inner.t.ncols(),
            m.diagnostics.train_r2
        )
    }
}

fn estimator(s: &str) -> PyResult<Estimator> {
    Estimator::parse(s).ok_or_else(|| {
        bad_value(format!(
            "estimator `{s}`: expected ols, ridge[:LAMBDA], procrustes, affine, reduced-rank[:RANK], mlp[:HIDDEN], embedding, random[:SEED] or identity"
        ))
    })
}

/// Fit `T` with `X @ T ~ Y` on paired rows (X: (n, d_s), Y: (n, d_t)) from any arrays
/// (numpy, torch tensors, lists). `source` / `target` (models) and layers, when given,
/// are recorded so that vectors of that model transfer through the map.
#[pyfunction]
#[pyo3(signature = (x, y, *, estimator = "ols", source = None, target = None, source_layer = 0, target_layer = 0, hook = "resid_post"))]
#[allow(clippy::too_many_arguments)]
pub fn fit_map(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    estimator: &str,
    source: Option<&Model>,
    target: Option<&Model>,
    source_layer: usize,
    target_layer: usize,
    hook: &str,
) -> PyResult<LinearMap> {
    let est = self::estimator(estimator)?;
    if est == Estimator::Embedding {
        return Err(bad_value(
            "estimator `embedding` fits on the two models' token embeddings: use lcross.align(source, target, \"\", estimator=\"embedding\", ...)",
        ));
    }
    let (nx, dx, xd) = matrix_f64(x, "X")?;
    let (ny, dy, yd) = matrix_f64(y, "Y")?;
    let xr = Rows::from_f64(nx, dx, xd).or_raise()?;
    let yr = Rows::from_f64(ny, dy, yd).or_raise()?;
    let point = lcross_core::steer::parse_hook(hook).or_raise()?;
    let (src, tgt) = (source.map(|m| m.inner.clone()), target.map(|m| m.inner.clone()));
    let map = py
        .allow_threads(|| {
            let s = MapSide { model: src.as_deref(), layer: source_layer, point };
            let t = MapSide { model: tgt.as_deref(), layer: target_layer, point };
            pipeline::fit_rows(&xr, &yr, est, s, t, ("arrays given from Python".into(), String::new()))
        })
        .or_raise()?;
    Ok(LinearMap::wrap(map, None))
}

/// Fit a map from `source` (layer `source_layer`) to `target` (layer `target_layer`) on
/// the last-token states of a shared corpus, as `lcross align` does.
#[pyfunction]
#[pyo3(signature = (source, target, corpus, *, source_layer, target_layer, limit = None, skip = 0, estimator = "ols", hook = "resid_post", cache = true, progress = None))]
#[allow(clippy::too_many_arguments)]
pub fn align(
    py: Python<'_>,
    source: &Model,
    target: &Model,
    corpus: &str,
    source_layer: usize,
    target_layer: usize,
    limit: Option<usize>,
    skip: usize,
    estimator: &str,
    hook: &str,
    cache: bool,
    progress: Option<bool>,
) -> PyResult<LinearMap> {
    let est = self::estimator(estimator)?;
    let (src, tgt) = (source.inner.clone(), target.inner.clone());
    if est == Estimator::Embedding {
        let map = run_long(py, progress, || pipeline::align_embeddings(&src, &tgt, (source_layer, target_layer), limit))?.or_raise()?;
        return Ok(LinearMap::wrap(map, None));
    }
    let point = lcross_core::steer::parse_hook(hook).or_raise()?;
    let corpus = Corpus::load(corpus, &lcross_core::default_data_dir(), skip, limit).or_raise()?;
    let map = run_long(py, progress, || pipeline::align_at(&src, &tgt, (source_layer, target_layer), (point, point), &corpus, est, cache))?.or_raise()?;
    Ok(LinearMap::wrap(map, None))
}

/// `sv @ T`: the vector moved into the target model's space (provenance kept: the source
/// vector's metadata and the map's, with the map's file and its sha256 when it has one,
/// as `lcross transfer` records them). A vector of another model than the map's source
/// is refused unless `force`.
#[pyfunction]
#[pyo3(signature = (sv, map, *, force = false))]
pub fn transfer(sv: &SteeringVector, map: &LinearMap, force: bool) -> PyResult<SteeringVector> {
    let file = map.file.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let moved = match file {
        Some(path) => pipeline::transfer_vector_file(&sv.inner, &map.inner, &path, force),
        None => pipeline::transfer_vector(&sv.inner, &map.inner, "a map of this Python session", &pipeline::map_fingerprint(&map.inner), force),
    }
    .or_raise()?;
    Ok(SteeringVector::wrap(moved))
}

/// How alike two representations of the same texts are (Huh et al.'s metrics, their
/// conventions): `x` (n, d_a) and `y` (n, d_b), row i of each the state of text i (any
/// arrays, e.g. captured with your own PyTorch code). Returns a dict with mutual_knn, cka,
/// unbiased_cka, cknna, svcca and n.
#[pyfunction]
#[pyo3(signature = (x, y, *, topk = 10, cca_dim = 10))]
pub fn similarity<'py>(py: Python<'py>, x: &Bound<'py, PyAny>, y: &Bound<'py, PyAny>, topk: usize, cca_dim: usize) -> PyResult<Bound<'py, PyAny>> {
    let (nx, dx, xd) = matrix_f64(x, "X")?;
    let (ny, dy, yd) = matrix_f64(y, "Y")?;
    let (xr, yr) = (Rows::from_f64(nx, dx, xd).or_raise()?, Rows::from_f64(ny, dy, yd).or_raise()?);
    let opts = lcross_core::similarity::SimilarityOptions { topk, cca_dim };
    let m = py.allow_threads(|| lcross_core::similarity::alignment(&xr, &yr, &opts)).or_raise()?;
    to_python(py, &m)
}
