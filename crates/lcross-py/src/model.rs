//! `lcross.Model` (load, tokenize, hidden states, batched steered generation) and
//! `lcross.Steer` (one steering: a vector, its beta and where it acts).

use std::sync::{Arc, Mutex};

use lcross_core::steer::{Beta, Site};
use lcross_eval::answers::{GenerationSettings, RowSpec};
use lcross_model::{Hooks, LoadOptions, Sampling};
use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::arrays::rows_to_numpy;
use crate::calls::run_long;
use crate::errors::{bad_value, OrRaise};
use crate::vector::SteeringVector;

/// One steering of a generation: `beta * vector` (or another intervention) at the
/// vector's layers (or only `layer`), at hook point `hook` (default: where the vector was
/// read, resid_post unless extracted elsewhere), at `positions` (default as in the CLI:
/// every position for mean-difference vectors, the last prompt token and the generated
/// ones for PCA vectors). `beta` may be `"auto"`: the vector's calibrated beta. A vector
/// of another model than the one generating is refused unless `force`.
#[pyclass(module = "lcross", name = "Steer", frozen)]
#[derive(Clone)]
pub struct Steer {
    vector: SteeringVector,
    beta: Beta,
    layer: Option<usize>,
    site: Site,
    force: bool,
}

#[pymethods]
impl Steer {
    #[new]
    #[pyo3(signature = (vector, beta = None, *, layer = None, hook = None, intervention = "add", positions = None, force = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        vector: SteeringVector,
        beta: Option<&Bound<'_, PyAny>>,
        layer: Option<usize>,
        hook: Option<&str>,
        intervention: &str,
        positions: Option<&str>,
        force: bool,
    ) -> PyResult<Self> {
        let beta = match beta {
            None => Beta::Value(1.0),
            Some(b) => match b.downcast::<PyString>() {
                Ok(s) => Beta::parse(&s.to_cow()?).or_raise()?,
                Err(_) => Beta::Value(b.extract::<f64>().map_err(|_| bad_value("beta must be a number or \"auto\""))?),
            },
        };
        if let Beta::Value(b) = beta {
            if !b.is_finite() {
                return Err(crate::errors::NonFiniteError::new_err(format!("beta {b} is not finite")));
            }
        }
        if let Some(l) = layer {
            if !vector.inner.layers.contains_key(&l) {
                return Err(crate::errors::ShapeError::new_err(format!("the vector has no layer {l}; it has {:?}", vector.inner.metadata.layers)));
            }
        }
        let site = Site::parse(hook, positions, Some(intervention)).or_raise()?;
        Ok(Self { vector, beta, layer, site, force })
    }

    /// The vector.
    #[getter]
    fn vector(&self) -> SteeringVector {
        self.vector.clone()
    }

    /// The multiplier (a float, or "auto").
    #[getter]
    fn beta(&self, py: Python<'_>) -> PyResult<PyObject> {
        Ok(match self.beta {
            Beta::Value(b) => b.into_pyobject(py)?.into_any().unbind(),
            Beta::Auto => "auto".into_pyobject(py)?.into_any().unbind(),
        })
    }

    fn __repr__(&self) -> String {
        let layer = self.layer.map_or(String::new(), |l| format!(", layer={l}"));
        format!(
            "Steer({:?} vector of {}, beta={}{layer}, intervention={})",
            self.vector.inner.metadata.concept, self.vector.inner.metadata.model_id, self.beta, self.site.intervention
        )
    }
}

impl Steer {
    /// The hooks of this steering on `model` (a vector of another model refused unless `force`).
    fn hooks(&self, model: &lcross_model::Model) -> lcross_core::Result<Hooks> {
        self.vector.inner.check_model(model, self.force)?;
        let sv = match self.layer {
            Some(l) => std::borrow::Cow::Owned(self.vector.inner.only_layer(l)?),
            None => std::borrow::Cow::Borrowed(self.vector.inner.as_ref()),
        };
        let beta = self.beta.resolve(Some(&sv))?;
        self.site.steer(&sv, beta).hooks(model)
    }
}

/// The hooks of several steerings together (each adds its interventions).
fn hooks_of(model: &lcross_model::Model, steers: &[Steer]) -> PyResult<Hooks> {
    let mut hooks = Hooks::none();
    for s in steers {
        hooks.interventions.extend(s.hooks(model).or_raise()?.interventions);
    }
    Ok(hooks)
}

/// Steerings from None, one `Steer` or a list of them.
fn steers_of(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<Steer>>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => match o.extract::<Steer>() {
            Ok(s) => Ok(Some(vec![s])),
            Err(_) => o.extract::<Vec<Steer>>().map(Some).map_err(|_| bad_value("steering must be a Steer, a list of Steer, or None")),
        },
    }
}

/// Prompts from one string or a list of strings.
fn prompts_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(vec![s.to_cow()?.into_owned()]);
    }
    obj.extract::<Vec<String>>().map_err(|_| bad_value("prompts must be a string or a list of strings"))
}

/// A language model lcross runs: a known id (`lcross models list`), a GGUF file or a
/// Hugging Face model directory. `weights`: "f32" (dequantized, faithful) or
/// "quantized"; `dtype`: "f32", "f16" or "bf16"; `device`: "cpu", "cuda[:N]", "metal[:N]".
#[pyclass(module = "lcross", name = "Model", frozen)]
pub struct Model {
    pub inner: Arc<lcross_model::Model>,
    /// Steerings of the `with m.steering(...)` blocks being run, innermost last.
    active: Mutex<Vec<Vec<Steer>>>,
}

impl Model {
    fn active_steering(&self) -> Vec<Steer> {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).iter().flatten().cloned().collect()
    }
}

/// Generation settings shared by `generate` and `generate_batch`.
struct Decode {
    max_tokens: usize,
    chat: bool,
    system: Option<String>,
    sampling: Sampling,
    batch_size: Option<usize>,
    progress: Option<bool>,
}

impl Decode {
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_tokens: usize,
        chat: bool,
        system: Option<String>,
        temperature: f64,
        top_p: f64,
        seed: Option<u64>,
        batch_size: Option<usize>,
        progress: Option<bool>,
    ) -> PyResult<Self> {
        if !(temperature >= 0.0) || !temperature.is_finite() {
            return Err(bad_value(format!("temperature {temperature}: expected a finite number >= 0")));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(bad_value(format!("top_p {top_p}: expected a number in (0, 1]")));
        }
        if batch_size == Some(0) {
            return Err(bad_value("batch_size must be at least 1"));
        }
        let sampling = if temperature == 0.0 { Sampling::Greedy } else { Sampling::Sample { temperature, top_p, seed: seed.unwrap_or(0) } };
        Ok(Self { max_tokens, chat, system, sampling, batch_size, progress })
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (id_or_path, *, weights = "f32", dtype = "f32", device = "cpu"))]
    fn new(py: Python<'_>, id_or_path: &str, weights: &str, dtype: &str, device: &str) -> PyResult<Self> {
        let opts = LoadOptions::parse(weights, device, dtype).or_raise()?;
        let m = py.allow_threads(|| lcross_model::Model::load(id_or_path, &opts)).or_raise()?;
        Ok(Self { inner: Arc::new(m), active: Mutex::new(Vec::new()) })
    }

    /// The model's id (a known id, or the file's name).
    #[getter]
    fn id(&self) -> &str {
        self.inner.id()
    }

    /// Decoder blocks.
    #[getter]
    fn n_layers(&self) -> usize {
        self.inner.config().num_layers
    }

    /// Width of the residual stream.
    #[getter]
    fn hidden_size(&self) -> usize {
        self.inner.config().hidden_size
    }

    /// The architecture (llama, qwen2, gemma3...).
    #[getter]
    fn architecture(&self) -> String {
        self.inner.config().architecture.as_str().to_string()
    }

    /// sha256 of the model file (vectors and maps record it).
    #[getter]
    fn sha256(&self, py: Python<'_>) -> PyResult<String> {
        let m = self.inner.clone();
        py.allow_threads(|| m.file_sha256()).or_raise()
    }

    /// Token ids of `text` (with `chat=True`: of `text` as one user message of the chat
    /// template, with the generation prompt).
    #[pyo3(signature = (text, chat = false, system = None))]
    fn tokenize(&self, text: &str, chat: bool, system: Option<&str>) -> PyResult<Vec<u32>> {
        Ok(self.inner.prompt(text, chat, system).or_raise()?.ids)
    }

    /// Text of token ids (special tokens skipped).
    fn decode(&self, ids: Vec<u32>) -> PyResult<String> {
        self.inner.tokenizer().decode(&ids, true).or_raise()
    }

    /// `text` rendered as one user message of the model's chat template, with the
    /// generation prompt.
    #[pyo3(signature = (text, system = None))]
    fn chat(&self, text: &str, system: Option<&str>) -> PyResult<String> {
        Ok(self.inner.prompt(text, true, system).or_raise()?.text)
    }

    /// The state at the last token of each text after block `layer` (hook point `hook`):
    /// float32 array (len(texts), hidden_size). Batched and cached like the CLI's.
    #[pyo3(signature = (texts, layer, *, hook = "resid_post", chat = false, cache = true, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn hidden_states<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        layer: usize,
        hook: &str,
        chat: bool,
        cache: bool,
        progress: Option<bool>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let texts = prompts_of(texts)?;
        let point = lcross_core::steer::parse_hook(hook).or_raise()?;
        let m = self.inner.clone();
        let states = run_long(py, progress, || lcross_eval::pipeline::last_token_states(&m, &texts, layer, point, chat, cache))?.or_raise()?;
        rows_to_numpy(py, &states, self.inner.config().hidden_size)
    }

    /// Generate an answer to each prompt, all in one batch; `steering` (a `Steer` or a
    /// list; default: the `with m.steering(...)` blocks being run) applies to every row.
    /// `temperature=0` decodes greedily; row i samples with `seed + i`.
    #[pyo3(signature = (prompts, *, steering = None, max_tokens = 64, chat = true, system = None, temperature = 0.0, top_p = 1.0, seed = None, batch_size = None, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompts: &Bound<'_, PyAny>,
        steering: Option<&Bound<'_, PyAny>>,
        max_tokens: usize,
        chat: bool,
        system: Option<String>,
        temperature: f64,
        top_p: f64,
        seed: Option<u64>,
        batch_size: Option<usize>,
        progress: Option<bool>,
    ) -> PyResult<Vec<String>> {
        let prompts = prompts_of(prompts)?;
        let steers = steers_of(steering)?.unwrap_or_else(|| self.active_steering());
        let rows: Vec<(String, Vec<Steer>)> = prompts.into_iter().map(|p| (p, steers.clone())).collect();
        let decode = Decode::new(max_tokens, chat, system, temperature, top_p, seed, batch_size, progress)?;
        self.run_rows(py, &rows, &decode)
    }

    /// Generate rows with different steerings in one batch: `rows` is a list of
    /// `(prompt, steering)` with steering a `Steer`, a list of them, or None (unsteered).
    #[pyo3(signature = (rows, *, max_tokens = 64, chat = true, system = None, temperature = 0.0, top_p = 1.0, seed = None, batch_size = None, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate_batch(
        &self,
        py: Python<'_>,
        rows: &Bound<'_, PyList>,
        max_tokens: usize,
        chat: bool,
        system: Option<String>,
        temperature: f64,
        top_p: f64,
        seed: Option<u64>,
        batch_size: Option<usize>,
        progress: Option<bool>,
    ) -> PyResult<Vec<String>> {
        let mut parsed = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let (prompt, steering): (String, Bound<'_, PyAny>) = row.extract().map_err(|_| bad_value(format!("row {i}: expected (prompt, steering)")))?;
            parsed.push((prompt, steers_of(Some(&steering))?.unwrap_or_default()));
        }
        let decode = Decode::new(max_tokens, chat, system, temperature, top_p, seed, batch_size, progress)?;
        self.run_rows(py, &parsed, &decode)
    }

    /// A context manager: `with m.steering([lcross.Steer(sv, 4.0)]): m.generate(...)`
    /// steers the calls inside it that are given no `steering`.
    fn steering(slf: Py<Self>, steering: &Bound<'_, PyAny>) -> PyResult<SteeringBlock> {
        let steers = steers_of(Some(steering))?.unwrap_or_default();
        Ok(SteeringBlock { model: slf, steers })
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!("Model({:?}, architecture={:?}, n_layers={}, hidden_size={})", self.inner.id(), c.architecture.as_str(), c.num_layers, c.hidden_size)
    }
}

impl Model {
    /// Generate `rows` (prompt, steerings) in batches (see [`run_long`]: Ctrl-C stops it
    /// between tokens with KeyboardInterrupt). Rows given the same steerings share one
    /// set of hooks.
    fn run_rows(&self, py: Python<'_>, rows: &[(String, Vec<Steer>)], d: &Decode) -> PyResult<Vec<String>> {
        let m = &self.inner;
        let ids: Vec<Vec<u32>> = rows.iter().map(|(p, _)| Ok(m.prompt(p, d.chat, d.system.as_deref()).or_raise()?.ids)).collect::<PyResult<_>>()?;
        let mut distinct: Vec<(&[Steer], Hooks)> = Vec::new();
        let mut hooks_of_row = Vec::with_capacity(rows.len());
        for (_, steers) in rows {
            let k = match distinct.iter().position(|(s, _)| same_steering(s, steers)) {
                Some(k) => k,
                None => {
                    distinct.push((steers, hooks_of(m, steers)?));
                    distinct.len() - 1
                }
            };
            hooks_of_row.push(k);
        }
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let settings = GenerationSettings {
            max_tokens: d.max_tokens,
            sampling: d.sampling,
            rows_in_flight: d.batch_size.unwrap_or_else(|| m.rows_that_fit(longest.saturating_add(d.max_tokens))),
        };
        let specs: Vec<RowSpec<'_>> =
            ids.iter().zip(&hooks_of_row).enumerate().map(|(i, (p, &k))| RowSpec { prompt: p, hooks: &distinct[k].1, seed_offset: i }).collect();
        let answers = run_long(py, d.progress, || {
            let bar = lcross_core::activations::progress(rows.len().saturating_mul(d.max_tokens) as u64, &format!("generating {} rows", rows.len()));
            let answers = lcross_eval::answers::generate_rows(m, &specs, &settings, |_, _| {
                bar.inc(1);
                Ok(())
            });
            bar.finish_and_clear();
            answers
        })?;
        Ok(answers.or_raise()?.into_iter().map(|a| a.text).collect())
    }
}

/// Whether two lists of steerings are the same steering (same vectors, by identity, and
/// the same betas, layers, sites and force).
fn same_steering(a: &[Steer], b: &[Steer]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(&x.vector.inner, &y.vector.inner) && x.beta == y.beta && x.layer == y.layer && x.site == y.site && x.force == y.force)
}

/// What `Model.steering(...)` returns: steers the model's calls while inside `with`.
#[pyclass(module = "lcross")]
pub struct SteeringBlock {
    model: Py<Model>,
    steers: Vec<Steer>,
}

#[pymethods]
impl SteeringBlock {
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf.model.get().active.lock().unwrap_or_else(|e| e.into_inner()).push(slf.steers.clone());
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.model.get().active.lock().unwrap_or_else(|e| e.into_inner()).pop();
        false
    }
}
