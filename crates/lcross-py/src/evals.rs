//! `lcross.evaluate`, `lcross.eval_ab`, `lcross.calibrate`: the CLI's evaluations, with
//! the rows of their `--json` output as Python dicts.

use std::path::PathBuf;
use std::sync::Arc;

use lcross_core::steer::{parse_betas, Site};
use lcross_eval::calibrate::{CalibrateOptions, CalibrationRequest, Direction, DEFAULT_DRIFT_BUDGET, DEFAULT_MAX_PERPLEXITY_RATIO};
use lcross_eval::conditions::build_conditions_auto;
use lcross_eval::judge::local::{LocalJudge, DEFAULT_JUDGE_MODEL};
use lcross_eval::judge::{Judge, JudgeFormat};
use lcross_eval::metrics::{Metric, MetricInputs, RunOptions, Setup};
use pyo3::prelude::*;

use crate::calls::run_long;
use crate::errors::{bad_value, OrRaise};
use crate::json::to_python;
use crate::model::Model;
use crate::vector::SteeringVector;

/// Betas from numbers and "auto".
fn betas_of(betas: Option<Vec<Bound<'_, PyAny>>>, have_vectors: bool) -> PyResult<Vec<lcross_core::steer::Beta>> {
    let given: Vec<String> = match betas {
        None if have_vectors => vec!["0".into(), "1".into()],
        None => vec!["0".into()],
        Some(v) => v.iter().map(|b| b.str().map(|s| s.to_string())).collect::<PyResult<_>>()?,
    };
    parse_betas(&given).or_raise()
}

/// The judge of judged metrics: a `Model`, a model spec, or None (the default local judge).
fn judge_of(py: Python<'_>, judge: Option<&Bound<'_, PyAny>>) -> PyResult<Box<dyn Judge>> {
    let model = match judge {
        Some(j) if !j.is_none() => match j.extract::<PyRef<'_, Model>>() {
            Ok(m) => m.inner.clone(),
            Err(_) => {
                let spec: String = j.extract().map_err(|_| bad_value("judge must be a Model, a model id or path, or None"))?;
                Arc::new(py.allow_threads(|| lcross_model::Model::load(&spec, &Default::default())).or_raise()?)
            }
        },
        _ => Arc::new(py.allow_threads(|| lcross_model::Model::load(DEFAULT_JUDGE_MODEL, &Default::default())).or_raise()?),
    };
    Ok(Box::new(LocalJudge::new(model).or_raise()?))
}

fn format_of(judge_format: Option<&str>) -> PyResult<JudgeFormat> {
    match judge_format {
        None => Ok(JudgeFormat::Auto),
        Some(s) => JudgeFormat::parse(s).ok_or_else(|| bad_value(format!("judge_format `{s}`: expected auto, scale or yes-no"))),
    }
}

/// Run one of the CLI's evaluations (`metric`: ab, open-ended, harm, emotion, fair) on
/// `model` under every (vector, beta) condition; returns the report of `lcross eval
/// METRIC --json`: `{"metric", "rows": [{"condition", "beta", "mean", "stderr", "n",
/// ...}], "about"}`, plus `"items"` (every answer and score) with `items=True`.
#[pyfunction]
#[pyo3(signature = (metric, model, *, vectors = None, betas = None, dataset = None, concept = None, limit = None, judge = None, judge_format = None,
    side_effects = false, max_tokens = 64, temperature = None, top_p = 1.0, seed = 0, batch_size = None, hook = None, positions = None,
    intervention = None, cache = true, items = false, progress = None))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate<'py>(
    py: Python<'py>,
    metric: &str,
    model: &Model,
    vectors: Option<Vec<SteeringVector>>,
    betas: Option<Vec<Bound<'py, PyAny>>>,
    dataset: Option<PathBuf>,
    concept: Option<&str>,
    limit: Option<usize>,
    judge: Option<&Bound<'py, PyAny>>,
    judge_format: Option<&str>,
    side_effects: bool,
    max_tokens: usize,
    temperature: Option<f64>,
    top_p: f64,
    seed: u64,
    batch_size: Option<usize>,
    hook: Option<&str>,
    positions: Option<&str>,
    intervention: Option<&str>,
    cache: bool,
    items: bool,
    progress: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let vectors: Vec<(String, Arc<lcross_core::steering::SteeringVector>)> =
        vectors.unwrap_or_default().into_iter().enumerate().map(|(i, v)| (format!("{}#{i}", v.inner.metadata.concept), v.inner.clone())).collect();
    for (_, v) in &vectors {
        v.check_model(&model.inner, false).or_raise()?;
    }
    let betas = betas_of(betas, !vectors.is_empty())?;
    let site = Site::parse(hook, positions, intervention).or_raise()?;
    let conditions = build_conditions_auto(&vectors, &betas, site).or_raise()?;
    let data_dir = lcross_core::default_data_dir();
    let dataset = dataset.map(|p| p.display().to_string());
    let inputs = MetricInputs { dataset: dataset.as_deref(), concept: concept.unwrap_or(""), data_dir: &data_dir, format: format_of(judge_format)?, limit };
    let metric = Metric::named(metric, &inputs).or_raise()?;
    let judge = if metric.needs_judge() { Some(judge_of(py, judge)?) } else { None };
    let run = RunOptions { max_tokens, temperature, top_p, seed, batch_size, side_effects, use_cache: cache, data_dir };
    let m = model.inner.clone();
    let (report, records) = run_long(py, progress, || {
        let mut setup = Setup::build(&m, conditions, &run, metric.default_temperature(), 64)?;
        metric.evaluate(&mut setup, judge.as_deref())
    })?
    .or_raise()?;
    let out = to_python(py, &report)?;
    if items {
        out.set_item("items", to_python(py, &records)?)?;
    }
    Ok(out)
}

/// The A/B metric (mean probability of the behaviour-matching answer letter) on held-out
/// questions: `dataset` is a CAA test_dataset_ab.json or `builtin:NAME`.
#[pyfunction]
#[pyo3(signature = (model, dataset, *, vectors = None, betas = None, limit = None, hook = None, positions = None, intervention = None, cache = true, progress = None))]
#[allow(clippy::too_many_arguments)]
pub fn eval_ab<'py>(
    py: Python<'py>,
    model: &Model,
    dataset: PathBuf,
    vectors: Option<Vec<SteeringVector>>,
    betas: Option<Vec<Bound<'py, PyAny>>>,
    limit: Option<usize>,
    hook: Option<&str>,
    positions: Option<&str>,
    intervention: Option<&str>,
    cache: bool,
    progress: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    evaluate(
        py,
        "ab",
        model,
        vectors,
        betas,
        Some(dataset),
        None,
        limit,
        None,
        None,
        false,
        64,
        None,
        1.0,
        0,
        None,
        hook,
        positions,
        intervention,
        cache,
        false,
        progress,
    )
}

/// Choose beta automatically, as `lcross calibrate` does: sweep `betas` on the first half
/// of the metric's items, keep those within the side-effect budget, choose the one that
/// moves the metric most in `direction`, and measure it on the second half. Returns
/// `(vector, report)`: the vector with its calibration recorded (None when no beta
/// qualifies; `save` it for `beta="auto"`), and the report as a dict.
#[pyfunction]
#[pyo3(signature = (model, vector, metric, *, dataset = None, concept = None, betas = None, direction = "increase", drift_budget = DEFAULT_DRIFT_BUDGET,
    max_perplexity_ratio = DEFAULT_MAX_PERPLEXITY_RATIO, limit = None, judge = None, judge_format = None, max_tokens = 64, temperature = None,
    seed = 0, hook = None, positions = None, intervention = None, cache = true, progress = None))]
#[allow(clippy::too_many_arguments)]
pub fn calibrate<'py>(
    py: Python<'py>,
    model: &Model,
    vector: &SteeringVector,
    metric: &str,
    dataset: Option<PathBuf>,
    concept: Option<&str>,
    betas: Option<Vec<f64>>,
    direction: &str,
    drift_budget: f64,
    max_perplexity_ratio: f64,
    limit: Option<usize>,
    judge: Option<&Bound<'py, PyAny>>,
    judge_format: Option<&str>,
    max_tokens: usize,
    temperature: Option<f64>,
    seed: u64,
    hook: Option<&str>,
    positions: Option<&str>,
    intervention: Option<&str>,
    cache: bool,
    progress: Option<bool>,
) -> PyResult<(Option<SteeringVector>, Bound<'py, PyAny>)> {
    let direction = match direction {
        "increase" => Direction::Increase,
        "decrease" => Direction::Decrease,
        other => return Err(bad_value(format!("direction `{other}`: expected increase or decrease"))),
    };
    let opts =
        CalibrateOptions { betas: betas.unwrap_or_else(|| lcross_eval::calibrate::DEFAULT_SWEEP.to_vec()), drift_budget, max_perplexity_ratio, direction };
    let data_dir = lcross_core::default_data_dir();
    let dataset = dataset.map(|p| p.display().to_string());
    let own_concept = vector.inner.metadata.concept.clone();
    let inputs =
        MetricInputs { dataset: dataset.as_deref(), concept: concept.unwrap_or(&own_concept), data_dir: &data_dir, format: format_of(judge_format)?, limit };
    let metric = Metric::named(metric, &inputs).or_raise()?;
    let judge = if metric.needs_judge() { Some(judge_of(py, judge)?) } else { None };
    let run = RunOptions { max_tokens, temperature, top_p: 1.0, seed, batch_size: None, side_effects: false, use_cache: cache, data_dir };
    let site = Site::parse(hook, positions, intervention).or_raise()?;
    let m = model.inner.clone();
    let label = format!("{} vector", vector.inner.metadata.concept);
    let request =
        CalibrationRequest { model: &m, vector: (label, vector.inner.clone()), site, metric: &metric, opts: &opts, run: &run, judge: judge.as_deref() };
    let (report, calibrated) = run_long(py, progress, || lcross_eval::calibrate::calibrate_vector(&request))?.or_raise()?;
    let dict = to_python(py, &report)?;
    Ok((calibrated.map(SteeringVector::wrap), dict))
}
