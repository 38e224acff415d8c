//! `lcross.SteeringVector` and `lcross.extract`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use lcross_core::dataset::{ConceptDataset, ContrastPair};
use lcross_core::steering::{Method, VectorMetadata};
use lcross_eval::pipeline::{self, VectorRecipe};
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::arrays::{vec_to_numpy, vector_f32};
use crate::calls::run_long;
use crate::errors::{bad_value, OrRaise, ShapeError};
use crate::json::to_python;
use crate::model::Model;

/// A steering vector: one direction per layer, with the metadata of where it came from.
/// The file format is the CLI's (safetensors with JSON metadata).
#[pyclass(module = "lcross", name = "SteeringVector", frozen)]
#[derive(Clone)]
pub struct SteeringVector {
    pub inner: Arc<lcross_core::steering::SteeringVector>,
}

impl SteeringVector {
    pub fn wrap(sv: lcross_core::steering::SteeringVector) -> Self {
        Self { inner: Arc::new(sv) }
    }
}

#[pymethods]
impl SteeringVector {
    /// Read a vector file (written by `save` or the CLI).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(Self::wrap(lcross_core::steering::SteeringVector::load(&path).or_raise()?))
    }

    /// A vector of `model` from arrays, one per layer (`{layer: array of hidden_size}`).
    #[staticmethod]
    #[pyo3(signature = (arrays, *, model, concept = "custom", hook = "resid_post"))]
    fn from_arrays(arrays: &Bound<'_, PyDict>, model: &Model, concept: &str, hook: &str) -> PyResult<Self> {
        let mut layers = BTreeMap::new();
        for (k, v) in arrays.iter() {
            let layer: usize = k.extract().map_err(|_| bad_value(format!("layer keys must be integers, got {k}")))?;
            layers.insert(layer, vector_f32(&v, &format!("layer {layer}"))?);
        }
        let m = &model.inner;
        let mut metadata = VectorMetadata::made_by_hand(
            m.id(),
            &m.file_sha256().or_raise()?,
            m.config().hidden_size,
            layers.keys().copied().collect(),
            concept,
            "arrays given from Python",
        );
        metadata.hook = lcross_core::steer::parse_hook(hook).or_raise()?;
        let sv = lcross_core::steering::SteeringVector::from_parts(metadata, layers).or_raise()?;
        sv.check_model(m, false).or_raise()?;
        Ok(Self::wrap(sv))
    }

    /// Write the vector (safetensors + JSON metadata; the CLI and server read it).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).or_raise()
    }

    /// Write the vector as a llama.cpp control vector (GGUF).
    fn to_gguf(&self, path: PathBuf) -> PyResult<()> {
        lcross_core::controlvec::export_vector(&path, &self.inner).or_raise()
    }

    /// The layers (0-based), ascending.
    #[getter]
    fn layers(&self) -> Vec<usize> {
        self.inner.layers.keys().copied().collect()
    }

    /// The concept it steers.
    #[getter]
    fn concept(&self) -> &str {
        &self.inner.metadata.concept
    }

    /// The id of the model it was made for.
    #[getter]
    fn model_id(&self) -> &str {
        &self.inner.metadata.model_id
    }

    /// Values per layer.
    #[getter]
    fn hidden_size(&self) -> usize {
        self.inner.metadata.hidden_size
    }

    /// Everything recorded about the vector (method, dataset, hashes, calibration...).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.metadata)
    }

    /// sha256 of the vector's values and metadata (what result caches key on).
    #[getter]
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    /// The direction at `layer` (float32, hidden_size values).
    fn __getitem__<'py>(&self, py: Python<'py>, layer: usize) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let v = self.inner.layers.get(&layer).ok_or_else(|| ShapeError::new_err(format!("the vector has no layer {layer}; it has {:?}", self.layers())))?;
        Ok(vec_to_numpy(py, v))
    }

    fn __len__(&self) -> usize {
        self.inner.layers.len()
    }

    fn __contains__(&self, layer: usize) -> bool {
        self.inner.layers.contains_key(&layer)
    }

    fn __repr__(&self) -> String {
        let m = &self.inner.metadata;
        format!("SteeringVector(concept={:?}, model={:?}, layers={:?}, method={:?}, hook={:?})", m.concept, m.model_id, m.layers, m.method, m.hook.to_string())
    }
}

/// Layers from an int, a list of ints, or a string such as "12", "12,13" or "10-14".
pub fn parse_layers(obj: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    if let Ok(l) = obj.extract::<usize>() {
        return Ok(vec![l]);
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return lcross_core::steer::parse_layers(&s.to_cow()?).or_raise();
    }
    obj.extract::<Vec<usize>>().map_err(|_| bad_value("layers must be an int, a list of ints or a string such as \"10-14\""))
}

/// The concept dataset of `extract`: a spec the CLI takes, or (positive, negative) pairs.
fn dataset_of(dataset: &Bound<'_, PyAny>, raw: bool, concept: Option<&str>) -> PyResult<ConceptDataset> {
    let mut ds = if let Ok(spec) = dataset.extract::<PathBuf>() {
        let spec = spec.display().to_string();
        let data_dir = lcross_core::default_data_dir();
        if raw {
            lcross_core::dataset::load_pairs(std::path::Path::new(&spec), true).or_raise()?
        } else {
            lcross_core::dataset::load_concept(&spec, &data_dir).or_raise()?
        }
    } else if let Ok(list) = dataset.downcast::<PyList>() {
        let mut pairs = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let (positive, negative): (String, String) =
                item.extract().map_err(|_| bad_value(format!("dataset item {i}: expected a (positive, negative) pair of strings")))?;
            pairs.push(if raw { ContrastPair::RawTexts { positive, negative } } else { ContrastPair::Prompts { positive, negative } });
        }
        ConceptDataset::from_pairs(concept.unwrap_or("custom"), format!("{} pairs given from Python", pairs.len()), pairs)
    } else {
        return Err(bad_value("dataset must be a path or dataset name (str) or a list of (positive, negative) string pairs"));
    };
    if let Some(c) = concept {
        ds.concept = c.to_string();
    }
    Ok(ds)
}

/// Extract a steering vector of `model` at `layers` from a concept dataset (CAA mean
/// difference or RepE PCA), as `lcross extract` does (activations cached the same way).
#[pyfunction]
#[pyo3(signature = (model, dataset, layers, *, method = "mean-diff", limit = None, balance_letters = false, hook = "resid_post", normalize = false, raw = false, concept = None, cache = true, progress = None))]
#[allow(clippy::too_many_arguments)]
pub fn extract(
    py: Python<'_>,
    model: &Model,
    dataset: &Bound<'_, PyAny>,
    layers: &Bound<'_, PyAny>,
    method: &str,
    limit: Option<usize>,
    balance_letters: bool,
    hook: &str,
    normalize: bool,
    raw: bool,
    concept: Option<&str>,
    cache: bool,
    progress: Option<bool>,
) -> PyResult<SteeringVector> {
    let method = Method::parse(method).ok_or_else(|| bad_value(format!("method `{method}`: expected mean-diff or pca")))?;
    let ds = dataset_of(dataset, raw, concept)?.limit(limit);
    let recipe = VectorRecipe {
        layers: parse_layers(layers)?,
        method,
        normalize,
        balance_letters,
        use_cache: cache,
        point: lcross_core::steer::parse_hook(hook).or_raise()?,
        ..VectorRecipe::mean_diff(Vec::new())
    };
    let m = model.inner.clone();
    let (sv, _) = run_long(py, progress, || pipeline::extract_vector(&m, &ds, &recipe))?.or_raise()?;
    Ok(SteeringVector::wrap(sv))
}
