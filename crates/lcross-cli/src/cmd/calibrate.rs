//! `lcross calibrate`: choose beta automatically (lcross_eval::calibrate) and store it
//! in the vector's metadata for `--beta auto`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_core::eval::{evaluate_ab_cached, evaluate_ab_conditions, Steering};
use lcross_core::steering::{Calibration, SteeringVector};
use lcross_core::store::Store;
use lcross_eval::calibrate::{calibrate, CalibrateOptions, Direction, Evaluate, Part, SweepSetup};
use lcross_eval::conditions::Condition;
use lcross_eval::metrics::{self, Setup};
use lcross_eval::report::EvalRow;
use lcross_eval::rubric;
use lcross_model::Sampling;

use crate::cmd::evaluate::{read_questions, JudgeArgs, RunArgs};
use crate::cmd::vectors::load_ab;
use crate::common::Context;
use lcross_eval::metrics::judged::emotion_scenarios;

#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    judge: JudgeArgs,
    /// The concept metric: ab (A/B questions of --dataset), open-ended (questions of
    /// --dataset, scored for --concept), harm (held-out AdvBench), emotion (--emotion),
    /// fair (female words in seeded vignettes: dev and test are disjoint seeds; use
    /// --direction decrease for the paper's reading).
    #[arg(long, value_parser = ["ab", "open-ended", "harm", "emotion", "fair"])]
    metric: String,
    /// Items of the metric (ab: a CAA test_dataset_ab.json or builtin:NAME; open-ended:
    /// questions). The first half is the dev split, the second the test split.
    #[arg(long, short)]
    dataset: Option<String>,
    /// Concept of the open-ended rubric (default: the vector's concept).
    #[arg(long)]
    concept: Option<String>,
    /// Emotion scored by `--metric emotion` (default: the vector's concept).
    #[arg(long)]
    emotion: Option<String>,
    /// Which way the metric should move.
    #[arg(long, default_value = "increase", value_parser = ["increase", "decrease"])]
    direction: String,
    /// Largest admissible drift on neutral prompts (mean KL, nats per token).
    #[arg(long, default_value_t = lcross_eval::calibrate::DEFAULT_DRIFT_BUDGET)]
    drift_budget: f64,
    /// Largest admissible steered/unsteered perplexity ratio on neutral prompts.
    #[arg(long, default_value_t = lcross_eval::calibrate::DEFAULT_MAX_PERPLEXITY_RATIO)]
    max_perplexity_ratio: f64,
    /// Where to write the calibrated vector (default: the --vector file, in place).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Betas tried unless --betas is given.
const DEFAULT_SWEEP: &[f64] = &[-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0];

fn halves<T: Clone>(v: &[T]) -> Result<(Vec<T>, Vec<T>)> {
    if v.len() < 4 {
        bail!("calibration needs at least 4 items (2 dev, 2 test); got {}", v.len());
    }
    let mid = v.len() / 2;
    Ok((v[..mid].to_vec(), v[mid..].to_vec()))
}

pub fn run(ctx: &Context, a: CalibrateArgs) -> Result<()> {
    if a.run.vector.len() != 1 {
        bail!("calibrate takes exactly one --vector");
    }
    let vector_path = a.run.vector[0].clone();
    let model = ctx.load(&a.run.model)?;
    let sv = SteeringVector::load(&vector_path)?;
    sv.check_model(&model, a.run.force)?;
    let steering = a.run.site.site()?.steer(&sv, 0.0);
    let (positions, point, intervention) = (steering.positions, steering.point, steering.intervention);
    let betas: Vec<f64> = if a.run.betas.is_empty() {
        DEFAULT_SWEEP.to_vec()
    } else {
        a.run.betas.iter().map(|b| b.trim().parse::<f64>().with_context(|| format!("--betas: `{b}` is not a number"))).collect::<Result<_>>()?
    };
    let direction = if a.direction == "decrease" { Direction::Decrease } else { Direction::Increase };
    let opts = CalibrateOptions { betas, drift_budget: a.drift_budget, max_perplexity_ratio: a.max_perplexity_ratio, direction };
    let data_dir = a.run.data_dir();
    // The metric's setup without side effects (calibration measures them itself).
    let mut run = a.run.clone();
    run.vector.clear();
    run.betas.clear();
    run.no_side_effects = true;
    let default_temperature = (a.metric == "fair").then_some(metrics::fair::FAIR_TEMPERATURE);
    let mut setup: Setup<'_> = run.setup(&model, default_temperature, 64)?;
    let neutral_texts = lcross_eval::side_effects::neutral_prompts(&data_dir)?;
    let neutral = setup.chat_ids(&neutral_texts)?;
    let rows_in_flight = setup.settings.rows_in_flight;
    let mut store = if a.run.no_cache { None } else { Some(Store::open_default()?) };
    let label = vector_path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let concept = sv.metadata.concept.clone();

    let judge = if a.metric == "ab" || a.metric == "fair" { None } else { Some(a.judge.build(ctx)?) };
    let format = a.judge.format();
    let mut evaluate: Box<Evaluate<'_>> = match a.metric.as_str() {
        "ab" => {
            let spec = a.dataset.clone().context("--metric ab needs --dataset (test_dataset_ab.json or builtin:NAME)")?;
            let (dev, test) = halves(&load_ab(&spec, a.run.limit)?)?;
            let model = &model;
            // A connection of its own: `calibrate` holds the other one for side effects.
            let mut ab_store = if a.run.no_cache { None } else { Some(Store::open_default()?) };
            Box::new(move |conds: &[Condition], part: Part| {
                let items = if part == Part::Dev { &dev } else { &test };
                let steer: Vec<Option<Steering<'_>>> = conds.iter().map(|c| c.vector.as_ref().map(|v| c.steering(v))).collect();
                let res = match ab_store.as_mut() {
                    Some(store) => evaluate_ab_cached(model, items, &steer, store)?,
                    None => evaluate_ab_conditions(model, items, &steer)?,
                };
                Ok(conds.iter().zip(&res).map(|(c, r)| EvalRow::of(c, &r.per_item)).collect())
            })
        }
        "fair" => {
            // dev: samples seed .. seed + n/2, test: the next ones (sample i uses seed + i)
            let samples = a.run.limit.unwrap_or(metrics::fair::FAIR_SAMPLES);
            if samples < 4 {
                bail!("calibration needs at least 4 FAIR samples (2 dev, 2 test); got {samples}");
            }
            let half = samples / 2;
            let Sampling::Sample { temperature, top_p, seed } = setup.settings.sampling else { bail!("FAIR samples its vignettes: give a temperature") };
            let setup = &mut setup;
            Box::new(move |conds: &[Condition], part: Part| {
                setup.conditions = conds.to_vec();
                let (first, n) = if part == Part::Dev { (seed, half) } else { (seed.wrapping_add(half as u64), samples - half) };
                setup.settings.sampling = Sampling::Sample { temperature, top_p, seed: first };
                Ok(metrics::fair::fair(setup, n)?.0.rows)
            })
        }
        metric => {
            let judge = judge.as_ref().expect("a judge for generated metrics");
            let prompts: Vec<String> = match metric {
                "open-ended" => read_questions(std::path::Path::new(a.dataset.as_deref().context("--metric open-ended needs --dataset (questions)")?))?,
                "harm" => metrics::harm::harm_prompts(&data_dir)?,
                _ => emotion_scenarios(&data_dir)?,
            };
            let (dev, test) = halves(&a.run.limit(prompts))?;
            let rubric = match metric {
                "emotion" => rubric::emotion_rubric(a.emotion.as_deref().unwrap_or(&concept)),
                _ => rubric::rubric_for(a.concept.as_deref().unwrap_or(&concept)),
            };
            let metric = metric.to_string();
            let setup = &mut setup;
            Box::new(move |conds: &[Condition], part: Part| {
                setup.conditions = conds.to_vec();
                let items = if part == Part::Dev { &dev } else { &test };
                let (report, _) = match metric.as_str() {
                    "harm" => metrics::harm::harm(setup, judge.as_ref(), items, metrics::harm::HARMFUL_THRESHOLD)?,
                    "emotion" => metrics::judged::emotion(setup, judge.as_ref(), format, items, &rubric)?,
                    _ => metrics::judged::open_ended(setup, judge.as_ref(), format, items, &rubric)?,
                };
                Ok(report.rows)
            })
        }
    };
    let sweep =
        SweepSetup { model: &model, vector: (label, Arc::new(sv.clone())), positions, point, intervention, neutral: &neutral, opts: &opts, rows_in_flight };
    let report = calibrate(&sweep, store.as_mut(), &a.metric, evaluate.as_mut())?;
    drop(evaluate);
    let out_path = a.output.clone().unwrap_or(vector_path.clone());
    if let Some(beta) = report.beta {
        let mut calibrated = sv.clone();
        let mut rest = match serde_json::to_value(&report)? {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        };
        rest.remove("beta");
        rest.remove("metric");
        let not_default = point != lcross_model::HookPoint::ResidPost || intervention != lcross_model::InterventionKind::Add;
        calibrated.metadata.calibration = Some(Calibration {
            beta,
            metric: report.metric.clone(),
            model: model.id().into(),
            positions: format!("{positions:?}"),
            hook: not_default.then_some(point),
            intervention: not_default.then_some(intervention),
            report: rest,
        });
        calibrated.save(&out_path)?;
    }
    ctx.print(&report, || {
        println!(
            "calibration of {} on {} ({} should {:?}; drift <= {} nats, perplexity ratio <= {})\n",
            vector_path.display(),
            model.id(),
            report.metric,
            report.direction,
            report.drift_budget,
            report.max_perplexity_ratio
        );
        println!("{}", report.to_markdown());
        match (report.beta, report.test_effect, report.test_effect_stderr) {
            (Some(b), Some(e), Some(se)) => {
                println!(
                    "chosen beta {b}: effect on the test split {e:+.3} ± {se:.3} (unsteered {:.3}, steered {:.3})",
                    report.test[0].mean, report.test[1].mean
                );
                println!("stored in {} (use --beta auto)", out_path.display());
            }
            _ => println!("no admissible beta moves the metric the wanted way: nothing stored"),
        }
    })?;
    if report.beta.is_none() {
        bail!("no admissible beta (see the table)");
    }
    Ok(())
}
