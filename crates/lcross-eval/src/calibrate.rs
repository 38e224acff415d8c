//! Automatic beta: sweep beta on a dev split, keep the betas whose side effects stay
//! within budget (drift on neutral prompts at most `drift_budget` nats per token, and
//! the perplexity of the steered neutral continuations at most `max_perplexity_ratio`
//! times the unsteered one), choose the one that moves the concept metric most in the
//! wanted direction, and measure its effect on a disjoint test split.

use std::sync::Arc;

use lcross_core::steering::{Calibration, SteeringVector};
use lcross_core::store::Store;
use lcross_model::{HookPoint, InterventionKind, Model, Positions};
use serde::Serialize;

use crate::conditions::Condition;
use crate::error::{EvalError, Result};
use crate::judge::Judge;
use crate::metrics::{Metric, RunOptions, Setup};
use crate::report::EvalRow;
use crate::side_effects::neutral_effects;

/// Which way the metric should move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Increase,
    Decrease,
}

impl Direction {
    fn sign(self) -> f64 {
        match self {
            Self::Increase => 1.0,
            Self::Decrease => -1.0,
        }
    }
}

/// Largest admissible drift on neutral prompts unless told (mean KL, nats per token).
pub const DEFAULT_DRIFT_BUDGET: f64 = 1.0;
/// Largest admissible steered/unsteered perplexity ratio on neutral prompts unless told.
pub const DEFAULT_MAX_PERPLEXITY_RATIO: f64 = 3.0;

/// The sweep and the budget.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Betas tried (0, the baseline, is always added).
    pub betas: Vec<f64>,
    /// Largest admissible drift, nats per token (default 1).
    pub drift_budget: f64,
    /// Largest admissible ratio of steered to unsteered perplexity on neutral prompts.
    pub max_perplexity_ratio: f64,
    pub direction: Direction,
}

/// Which half of the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Dev,
    Test,
}

/// One beta of the sweep on the dev split.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub beta: f64,
    pub mean: f64,
    pub stderr: f64,
    pub n: usize,
    /// Signed move of the metric from beta 0, in the wanted direction.
    pub effect: f64,
    pub drift_kl: f64,
    pub perplexity: f64,
    pub perplexity_ratio: f64,
    pub admissible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded_because: Option<String>,
}

/// What calibration found.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    pub metric: String,
    /// The chosen beta (None: no admissible beta moves the metric the wanted way).
    pub beta: Option<f64>,
    pub direction: Direction,
    pub drift_budget: f64,
    pub max_perplexity_ratio: f64,
    pub dev: Vec<SweepPoint>,
    /// Unsteered and chosen-beta rows on the test split.
    pub test: Vec<EvalRow>,
    /// Test mean at the chosen beta minus the unsteered test mean.
    pub test_effect: Option<f64>,
    /// Standard error of that difference (the two rows' errors combined).
    pub test_effect_stderr: Option<f64>,
}

/// A metric on one part of the items: one row per condition.
pub type Evaluate<'a> = dyn FnMut(&[Condition], Part) -> Result<Vec<EvalRow>> + 'a;

/// What a sweep steers with and measures its side effects on.
pub struct SweepSetup<'a> {
    pub model: &'a Model,
    /// Label and vector of the steered conditions.
    pub vector: (String, Arc<SteeringVector>),
    pub positions: Positions,
    /// Hook point and intervention of the steered conditions.
    pub point: lcross_model::HookPoint,
    pub intervention: lcross_model::InterventionKind,
    /// Token ids of the neutral prompts of the side effects.
    pub neutral: &'a [Vec<u32>],
    pub opts: &'a CalibrateOptions,
    pub rows_in_flight: usize,
}

impl SweepSetup<'_> {
    fn condition(&self, beta: f64) -> Condition {
        match beta == 0.0 {
            true => Condition::none(),
            false => Condition {
                label: self.vector.0.clone(),
                vector: Some(self.vector.1.clone()),
                beta,
                positions: self.positions,
                point: self.point,
                intervention: self.intervention,
            },
        }
    }
}

/// Sweep, choose and test. `evaluate(conditions, part)` returns one row per condition
/// on that part of the items (the caller splits them).
pub fn calibrate(setup: &SweepSetup, store: Option<&mut Store>, metric: &str, evaluate: &mut Evaluate<'_>) -> Result<CalibrationReport> {
    let dev = sweep(setup, store, evaluate)?;
    let chosen = choose(&dev);
    let opts = setup.opts;
    let (test, test_effect, test_effect_stderr) = match chosen {
        Some(b) => {
            let t = evaluate(&[Condition::none(), setup.condition(b)], Part::Test)?;
            let (e, se) = (t[1].mean - t[0].mean, (t[0].stderr.powi(2) + t[1].stderr.powi(2)).sqrt());
            (t, Some(e), Some(se))
        }
        None => (Vec::new(), None, None),
    };
    Ok(CalibrationReport {
        metric: metric.to_string(),
        beta: chosen,
        direction: opts.direction,
        drift_budget: opts.drift_budget,
        max_perplexity_ratio: opts.max_perplexity_ratio,
        dev,
        test,
        test_effect,
        test_effect_stderr,
    })
}

/// Betas a calibration tries unless told.
pub const DEFAULT_SWEEP: &[f64] = &[-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0];

/// What `lcross calibrate` (and Python's `lcross.calibrate`) is asked.
pub struct CalibrationRequest<'a> {
    pub model: &'a Model,
    /// Label and vector.
    pub vector: (String, Arc<SteeringVector>),
    /// Where and how the vector acts.
    pub site: lcross_core::steer::Site,
    pub metric: &'a Metric,
    pub opts: &'a CalibrateOptions,
    /// Generation and cache settings (side effects are measured by the calibration itself).
    pub run: &'a RunOptions,
    /// The judge of judged metrics.
    pub judge: Option<&'a dyn Judge>,
}

/// Calibrate a vector end to end: the metric's setup, the neutral prompts of the side
/// effects, the sweep on the dev half, the test on the other half. Returns the report and,
/// when a beta was chosen, the vector with its calibration recorded.
pub fn calibrate_vector(req: &CalibrationRequest<'_>) -> Result<(CalibrationReport, Option<SteeringVector>)> {
    let (model, sv) = (req.model, &req.vector.1);
    sv.check_model(model, true)?;
    let steering = req.site.steer(sv, 0.0);
    let (positions, point, intervention) = (steering.positions, steering.point, steering.intervention);
    let run = RunOptions { side_effects: false, ..req.run.clone() };
    let mut setup = Setup::build(model, Vec::new(), &run, req.metric.default_temperature(), 64)?;
    let neutral = setup.chat_ids(&crate::side_effects::neutral_prompts(&run.data_dir)?)?;
    let mut store = if run.use_cache { Some(Store::open_default()?) } else { None };
    let sweep = SweepSetup {
        model,
        vector: req.vector.clone(),
        positions,
        point,
        intervention,
        neutral: &neutral,
        opts: req.opts,
        rows_in_flight: setup.settings.rows_in_flight,
    };
    let report = calibrate_metric(&sweep, store.as_mut(), req.metric, &mut setup, req.judge)?;
    let calibrated = match report.record(model.id(), positions, point, intervention)? {
        Some(record) => {
            let mut v = sv.as_ref().clone();
            v.metadata.calibration = Some(record);
            Some(v)
        }
        None => None,
    };
    Ok((report, calibrated))
}

/// [`calibrate`] on a [`Metric`]: its first half ([`Metric::halves`]) is the dev split,
/// the second the test split. `setup` generates (and stores) the answers under each call's
/// conditions; `judge` scores them where the metric needs one. `store` keeps the side
/// effects.
pub fn calibrate_metric(
    sweep: &SweepSetup,
    store: Option<&mut Store>,
    metric: &Metric,
    setup: &mut Setup<'_>,
    judge: Option<&dyn Judge>,
) -> Result<CalibrationReport> {
    let (dev, test) = metric.halves()?;
    let mut evaluate = |conditions: &[Condition], part: Part| {
        setup.conditions = conditions.to_vec();
        if part == Part::Dev { &dev } else { &test }.rows(setup, judge)
    };
    calibrate(sweep, store, metric.name(), &mut evaluate)
}

/// The dev half of [`calibrate`]: beta 0 and every beta of the options on the dev split
/// (`evaluate(conditions, Part::Dev)`), each with its side effects on the neutral prompts
/// and whether they keep it admissible.
pub fn sweep(setup: &SweepSetup, mut store: Option<&mut Store>, evaluate: &mut Evaluate<'_>) -> Result<Vec<SweepPoint>> {
    let opts = setup.opts;
    if let Some(b) = opts.betas.iter().find(|b| !b.is_finite()) {
        return Err(lcross_core::CoreError::NonFinite { what: format!("beta {b} of the sweep") }.into());
    }
    if !(opts.drift_budget >= 0.0) || !(opts.max_perplexity_ratio >= 1.0) {
        return Err(EvalError::bad_value(
            "drift budget and perplexity ratio",
            format!("{} and {}", opts.drift_budget, opts.max_perplexity_ratio),
            "a drift budget >= 0 and a perplexity ratio >= 1",
        ));
    }
    let mut betas: Vec<f64> = vec![0.0];
    for &b in &opts.betas {
        if !betas.contains(&b) {
            betas.push(b);
        }
    }
    let conditions: Vec<Condition> = betas.iter().map(|&beta| setup.condition(beta)).collect();
    let rows = evaluate(&conditions, Part::Dev)?;
    if rows.len() != conditions.len() {
        return Err(lcross_core::CoreError::SizeMismatch {
            what: "rows of the metric (one per condition)".into(),
            expected: conditions.len(),
            got: rows.len(),
        }
        .into());
    }
    let (model, neutral, rows_in_flight) = (setup.model, setup.neutral, setup.rows_in_flight);
    let base = neutral_effects(model, neutral, &conditions[0], rows_in_flight, store.as_deref_mut())?;
    let sign = opts.direction.sign();
    let mut dev = Vec::with_capacity(rows.len());
    for (c, r) in conditions.iter().zip(&rows) {
        let fx = if c.is_none() { base } else { neutral_effects(model, neutral, c, rows_in_flight, store.as_deref_mut())? };
        let ratio = fx.perplexity / base.perplexity;
        let excluded = if !r.mean.is_finite() {
            Some("no score".to_string())
        } else if !(fx.drift_kl <= opts.drift_budget) {
            Some(format!("drift {:.3} > budget {}", fx.drift_kl, opts.drift_budget))
        } else if !(ratio <= opts.max_perplexity_ratio) {
            Some(format!("perplexity ratio {ratio:.2} > {}", opts.max_perplexity_ratio))
        } else {
            None
        };
        dev.push(SweepPoint {
            beta: c.beta,
            mean: r.mean,
            stderr: r.stderr,
            n: r.n,
            effect: sign * (r.mean - rows[0].mean),
            drift_kl: fx.drift_kl,
            perplexity: fx.perplexity,
            perplexity_ratio: ratio,
            admissible: excluded.is_none(),
            excluded_because: excluded,
        });
    }
    Ok(dev)
}

/// The beta a sweep chooses: the admissible non-zero one that moves the metric most in
/// the wanted direction; None when none moves it that way. Among betas with the same
/// effect (common with counts such as FAIR's on a few dev prompts) the one with the least
/// drift, then the smallest |beta|: the gentlest intervention that does as much.
pub fn choose(dev: &[SweepPoint]) -> Option<f64> {
    dev.iter()
        .filter(|p| p.beta != 0.0 && p.admissible && p.effect > 0.0)
        .max_by(|a, b| a.effect.total_cmp(&b.effect).then(b.drift_kl.total_cmp(&a.drift_kl)).then(b.beta.abs().total_cmp(&a.beta.abs())))
        .map(|p| p.beta)
}

impl CalibrationReport {
    /// The typed record a vector keeps for `--beta auto` (None when no beta was chosen):
    /// the chosen beta, the metric, the model, the steered site (hook point and
    /// intervention only when not the default `resid_post` / `add`) and the rest of the
    /// report.
    pub fn record(&self, model_id: &str, positions: Positions, point: HookPoint, intervention: InterventionKind) -> Result<Option<Calibration>> {
        let Some(beta) = self.beta else { return Ok(None) };
        let mut rest = match serde_json::to_value(self)? {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        };
        rest.remove("beta");
        rest.remove("metric");
        let not_default = point != HookPoint::ResidPost || intervention != InterventionKind::Add;
        Ok(Some(Calibration {
            beta,
            metric: self.metric.clone(),
            model: model_id.into(),
            positions: format!("{positions:?}"),
            hook: not_default.then_some(point),
            intervention: not_default.then_some(intervention),
            report: rest,
        }))
    }

    /// The sweep as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("| beta | dev mean | stderr | effect | drift_kl | perplexity ratio | admissible |\n|---:|---:|---:|---:|---:|---:|---|\n");
        for p in &self.dev {
            s.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:+.3} | {:.3} | {:.2} | {} |\n",
                p.beta,
                p.mean,
                p.stderr,
                p.effect,
                p.drift_kl,
                p.perplexity_ratio,
                p.excluded_because.as_deref().unwrap_or(if Some(p.beta) == self.beta { "yes (chosen)" } else { "yes" })
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::{choose, SweepPoint};

    fn point(beta: f64, effect: f64, drift_kl: f64, admissible: bool) -> SweepPoint {
        SweepPoint { beta, mean: 0.0, stderr: 0.0, n: 10, effect, drift_kl, perplexity: 1.0, perplexity_ratio: 1.0, admissible, excluded_because: None }
    }

    #[test]
    fn the_largest_admissible_effect_wins_and_ties_go_to_the_gentlest_beta() {
        let none = point(0.0, 0.0, 0.0, true);
        // FAIR's calibration of 2026-12-03: three betas remove every female mention of 10 dev vignettes
        let tied = [none.clone(), point(2.0, 0.2, 0.007, true), point(4.0, 0.1, 0.034, true), point(8.0, 0.2, 0.143, true), point(16.0, 0.2, 0.671, true)];
        assert_eq!(choose(&tied), Some(2.0));
        let clear = [none.clone(), point(2.0, 0.1, 0.01, true), point(4.0, 0.3, 0.1, true), point(8.0, 0.5, 2.0, false)];
        assert_eq!(choose(&clear), Some(4.0), "the inadmissible larger effect is not taken");
        assert_eq!(choose(&[none, point(4.0, -0.1, 0.1, true), point(8.0, 0.0, 0.2, true)]), None, "nothing moves the metric the wanted way");
    }
}
