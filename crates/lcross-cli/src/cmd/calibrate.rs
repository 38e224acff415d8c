//! `lcross calibrate`: choose beta automatically (lcross_eval::calibrate) and store it
//! in the vector's metadata for `--beta auto`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_core::steering::SteeringVector;
use lcross_eval::calibrate::{calibrate_vector, CalibrateOptions, CalibrationRequest, Direction, DEFAULT_SWEEP};
use lcross_eval::metrics::{Metric, MetricInputs};

use crate::args::{JudgeArgs, RunArgs};
use crate::common::Context;

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

pub fn run(ctx: &Context, a: CalibrateArgs) -> Result<()> {
    if a.run.vector.len() != 1 {
        bail!("calibrate takes exactly one --vector");
    }
    let vector_path = a.run.vector[0].clone();
    let model = ctx.load(&a.run.model)?;
    let sv = SteeringVector::load(&vector_path)?;
    sv.check_model(&model, a.run.force)?;
    let betas: Vec<f64> = if a.run.betas.is_empty() {
        DEFAULT_SWEEP.to_vec()
    } else {
        a.run.betas.iter().map(|b| b.trim().parse::<f64>().with_context(|| format!("--betas: `{b}` is not a number"))).collect::<Result<_>>()?
    };
    let direction = if a.direction == "decrease" { Direction::Decrease } else { Direction::Increase };
    let opts = CalibrateOptions { betas, drift_budget: a.drift_budget, max_perplexity_ratio: a.max_perplexity_ratio, direction };
    let run = a.run.options();
    let concept = sv.metadata.concept.clone();
    let rubric_concept = if a.metric == "emotion" { a.emotion.as_deref() } else { a.concept.as_deref() };
    let inputs = MetricInputs {
        dataset: a.dataset.as_deref(),
        concept: rubric_concept.unwrap_or(&concept),
        data_dir: &run.data_dir,
        format: a.judge.format(),
        limit: a.run.limit,
    };
    let metric = Metric::named(&a.metric, &inputs)?;
    let judge = if metric.needs_judge() { Some(a.judge.build(ctx)?) } else { None };
    let label = vector_path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let request = CalibrationRequest {
        model: &model,
        vector: (label, Arc::new(sv)),
        site: a.run.site.site()?,
        metric: &metric,
        opts: &opts,
        run: &run,
        judge: judge.as_deref(),
    };
    let (report, calibrated) = calibrate_vector(&request)?;
    let out_path = a.output.clone().unwrap_or(vector_path.clone());
    if let Some(v) = &calibrated {
        v.save(&out_path)?;
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
