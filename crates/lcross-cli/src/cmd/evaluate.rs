//! `lcross eval ab|open-ended|harm|fair|emotion` and `lcross judge`.
//!
//! Every evaluation prints one shape with `--json`: `{"metric", "rows": [{"condition",
//! "beta", "mean", "stderr", "n", ...}], "about"}` (lcross_eval::report::EvalReport).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use lcross_core::eval::{evaluate_ab_cached, evaluate_ab_conditions, AbResult, Steering};
use lcross_core::steering::SteeringVector;
use lcross_core::store::Store;
use lcross_eval::conditions::{parse_betas, Condition};
use lcross_eval::judge::{JudgeFormat, JudgeRequest};
use lcross_eval::metrics::{self, Metric};
use lcross_eval::report::{EvalReport, EvalRow, ItemRecord};
use lcross_eval::rubric;
use lcross_model::{Model, DEFAULT_MODEL};
use serde::Serialize;

use crate::args::{JudgeArgs, RunArgs, SiteArgs};
use crate::common::Context;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Mean probability of the behaviour-matching letter on held-out A/B questions.
    Ab(EvalAbArgs),
    /// Open-ended answers to a concept's questions, scored 0-10 by a judge.
    OpenEnded(OpenEndedArgs),
    /// HARM: harmful-answer rate (judge) and refusal-phrase rate on held-out AdvBench prompts.
    Harm(HarmArgs),
    /// FAIR: women/female (and men/male) words in sampled clinical vignettes.
    Fair(FairArgs),
    /// The emotion of answers to scenarios, scored 0-10 by a judge.
    Emotion(EmotionArgs),
}

/// Print a report (JSON or a Markdown table) and write its files with --out.
fn finish(ctx: &Context, run: &RunArgs, model: &Model, mut report: EvalReport, items: &[ItemRecord]) -> Result<()> {
    report.about.insert("model".into(), model.id().into());
    report.about.insert("numerics".into(), lcross_core::store::numerics_key(model)?.into());
    report.about.insert("max_tokens".into(), run.max_tokens.into());
    if let Some(dir) = &run.out {
        report.write_dir(dir, items)?;
    }
    ctx.print(&report, || {
        println!("{} of {}\n", report.metric, model.id());
        println!("{}", report.to_markdown());
        if let Some(dir) = &run.out {
            println!("answers and scores: {}", dir.join("items.jsonl").display());
        }
    })
}

#[derive(Args)]
pub struct OpenEndedArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    judge: JudgeArgs,
    /// Questions: a CAA test_dataset_open_ended.json, or a prompts file (lines / JSONL "prompt").
    #[arg(long, short)]
    dataset: PathBuf,
    /// Concept whose rubric scores the answers (default: the dataset's folder name, as in caa/refusal/).
    #[arg(long)]
    concept: Option<String>,
}

pub fn open_ended(ctx: &Context, a: OpenEndedArgs) -> Result<()> {
    let concept = match &a.concept {
        Some(c) => c.clone(),
        None => a
            .dataset
            .canonicalize()
            .ok()
            .and_then(|p| p.parent()?.file_name().map(|s| s.to_string_lossy().into_owned()))
            .context("give --concept (the rubric's concept)")?,
    };
    let questions = a.run.limit(lcross_eval::inputs::read_questions(&a.dataset)?);
    let judge = a.judge.build(ctx)?;
    let model = ctx.load(&a.run.model)?;
    let mut setup = a.run.setup(&model, None, 64)?;
    let metric = Metric::OpenEnded { prompts: questions, rubric: rubric::rubric_for(&concept), format: a.judge.format() };
    let (mut report, items) = metric.evaluate(&mut setup, Some(judge.as_ref()))?;
    report.about.insert("dataset".into(), a.dataset.display().to_string().into());
    finish(ctx, &a.run, &model, report, &items)
}

#[derive(Args)]
pub struct HarmArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    judge: JudgeArgs,
    /// Prompts instead of the held-out AdvBench rows 128-177.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Harmful probability above which an answer counts as harmful (0.32 fits the
    /// default local judge, docs/EVALUATION.md; another judge needs its own).
    #[arg(long, default_value_t = metrics::harm::HARMFUL_THRESHOLD)]
    harm_threshold: f64,
}

pub fn harm(ctx: &Context, a: HarmArgs) -> Result<()> {
    let prompts = match &a.prompts {
        Some(p) => lcross_eval::inputs::read_prompts(p, "prompt")?,
        None => metrics::harm::harm_prompts(&a.run.data_dir())?,
    };
    let prompts = a.run.limit(prompts);
    let judge = a.judge.build(ctx)?;
    let model = ctx.load(&a.run.model)?;
    let mut setup = a.run.setup(&model, None, 48)?;
    let (report, items) = Metric::Harm { prompts, threshold: a.harm_threshold }.evaluate(&mut setup, Some(judge.as_ref()))?;
    finish(ctx, &a.run, &model, report, &items)
}

#[derive(Args)]
pub struct FairArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Number of vignettes per condition (the paper's 50; --limit also caps it).
    #[arg(long, default_value_t = metrics::fair::FAIR_SAMPLES)]
    samples: usize,
}

pub fn fair(ctx: &Context, a: FairArgs) -> Result<()> {
    let samples = a.run.limit.map_or(a.samples, |l| l.min(a.samples));
    let model = ctx.load(&a.run.model)?;
    let mut setup = a.run.setup(&model, Some(metrics::fair::FAIR_TEMPERATURE), 32)?;
    let (mut report, items) = Metric::Fair { samples, first: 0 }.evaluate(&mut setup, None)?;
    report.about.insert("temperature".into(), a.run.temperature.unwrap_or(metrics::fair::FAIR_TEMPERATURE).into());
    finish(ctx, &a.run, &model, report, &items)
}

#[derive(Args)]
pub struct EmotionArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    judge: JudgeArgs,
    /// The emotion scored (happiness and fear have their own rubric; any other name gets the general one).
    #[arg(long)]
    emotion: String,
    /// User prompts instead of the held-out RepE scenarios.
    #[arg(long)]
    prompts: Option<PathBuf>,
}

pub fn emotion(ctx: &Context, a: EmotionArgs) -> Result<()> {
    let prompts = match &a.prompts {
        Some(p) => lcross_eval::inputs::read_prompts(p, "prompt")?,
        None => metrics::judged::emotion_scenarios(&a.run.data_dir())?,
    };
    let prompts = a.run.limit(prompts);
    let judge = a.judge.build(ctx)?;
    let model = ctx.load(&a.run.model)?;
    let mut setup = a.run.setup(&model, None, 64)?;
    let metric = Metric::Emotion { prompts, rubric: rubric::emotion_rubric(&a.emotion), format: a.judge.format() };
    let (mut report, items) = metric.evaluate(&mut setup, Some(judge.as_ref()))?;
    report.about.insert("emotion".into(), a.emotion.clone().into());
    finish(ctx, &a.run, &model, report, &items)
}

#[derive(Args)]
pub struct JudgeCmdArgs {
    #[command(flatten)]
    judge: JudgeArgs,
    /// Concept whose rubric scores the answers.
    #[arg(long)]
    concept: String,
    /// JSONL lines {"question": ..., "answer": ...}; lines with a "concept" field other
    /// than --concept are skipped; a numeric "label" field adds the rank correlation of
    /// the scores with the labels.
    #[arg(long)]
    input: PathBuf,
    /// Do not read or write the result store.
    #[arg(long)]
    no_cache: bool,
}

/// `lcross judge`: score given (question, answer) pairs, in input order.
pub fn judge_cmd(ctx: &Context, a: JudgeCmdArgs) -> Result<()> {
    let qa: Vec<_> =
        lcross_eval::inputs::read_question_answers(&a.input)?.into_iter().filter(|x| x.concept.as_deref().is_none_or(|c| c == a.concept)).collect();
    if qa.is_empty() {
        bail!("{}: no lines for concept `{}`", a.input.display(), a.concept);
    }
    let judge = a.judge.build(ctx)?;
    let r = rubric::rubric_for(&a.concept);
    let requests: Vec<JudgeRequest> = qa.iter().map(|x| JudgeRequest::score(&r, &x.question, &x.answer, a.judge.format())).collect();
    let mut store = if a.no_cache { None } else { Some(Store::open_default()?) };
    let js = metrics::judge_cached(judge.as_ref(), &requests, store.as_mut(), "judge")?;
    #[derive(Serialize)]
    struct Row<'a> {
        question: &'a str,
        answer: &'a str,
        score: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Out<'a> {
        judge: String,
        concept: &'a str,
        format: JudgeFormat,
        rows: Vec<Row<'a>>,
        /// Spearman correlation of scores and labels (lines with both).
        #[serde(skip_serializing_if = "Option::is_none")]
        spearman: Option<f64>,
    }
    let rows: Vec<Row<'_>> = qa
        .iter()
        .zip(&js)
        .map(|(x, j)| Row { question: &x.question, answer: &x.answer, score: j.score, label: x.label, failure: j.failure.as_deref() })
        .collect();
    let labelled: Vec<(f64, f64)> = qa.iter().zip(&js).filter_map(|(x, j)| Some((x.label?, j.score?))).collect();
    let spearman = (labelled.len() >= 3).then(|| {
        let (l, s): (Vec<f64>, Vec<f64>) = labelled.iter().copied().unzip();
        lcross_eval::stats::spearman(&l, &s)
    });
    let out = Out { judge: judge.id(), concept: &a.concept, format: a.judge.format().resolve(&r), rows, spearman };
    ctx.print(&out, || {
        for r in &out.rows {
            let s = r.score.map_or_else(|| format!("failed: {}", r.failure.unwrap_or("")), |s| format!("{s:.2}"));
            println!("{s:>8}  {}", r.answer.chars().take(100).collect::<String>().replace('\n', " "));
        }
        if let Some(rho) = out.spearman {
            println!("Spearman correlation with the labels: {rho:.3} ({} lines, format {:?})", labelled.len(), out.format);
        }
    })
}

#[derive(Args)]
pub struct EvalAbArgs {
    /// Model.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// test_dataset_ab.json (or any CAA A/B file), or builtin:optimism.
    #[arg(long, short)]
    dataset: String,
    /// Steering vector.
    #[arg(long)]
    vector: Option<PathBuf>,
    /// Multiplier (with --vector), or `auto` (the vector's calibrated beta).
    #[arg(long, allow_hyphen_values = true, default_value = "1")]
    beta: String,
    /// Several multipliers: a sweep table (and plot with --out), e.g. -2,-1,0,1,2.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ',')]
    betas: Vec<String>,
    #[command(flatten)]
    site: SiteArgs,
    /// Use the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Use a vector made for another model of the same size.
    #[arg(long)]
    force: bool,
    /// Write sweep.csv, sweep.md and sweep.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not read or write the result store (every condition is evaluated afresh).
    #[arg(long)]
    no_cache: bool,
}

/// Route `lcross eval ...`.
pub fn eval_cmd(ctx: &Context, c: EvalCommand) -> Result<()> {
    match c {
        EvalCommand::Ab(a) => ab(ctx, a),
        EvalCommand::OpenEnded(a) => open_ended(ctx, a),
        EvalCommand::Harm(a) => harm(ctx, a),
        EvalCommand::Fair(a) => fair(ctx, a),
        EvalCommand::Emotion(a) => emotion(ctx, a),
    }
}

/// `lcross eval ab`: every beta in one batched evaluation (the layers below the
/// vector's run once per question).
pub fn ab(ctx: &Context, a: EvalAbArgs) -> Result<()> {
    let model = ctx.load(&a.model)?;
    let items = lcross_eval::pipeline::load_ab(&a.dataset, a.limit)?;
    let sv = match &a.vector {
        Some(p) => {
            let sv = SteeringVector::load(p)?;
            sv.check_model(&model, a.force)?;
            Some(sv)
        }
        None => None,
    };
    let given: Vec<String> = if !a.betas.is_empty() {
        a.betas.clone()
    } else if sv.is_some() {
        vec![a.beta.clone()]
    } else {
        vec!["0".into()]
    };
    let betas: Vec<f64> = parse_betas(&given)?.iter().map(|b| b.resolve(sv.as_ref())).collect::<lcross_core::Result<_>>()?;
    if sv.is_none() && betas.iter().any(|b| *b != 0.0) {
        bail!("--beta/--betas other than 0 need --vector");
    }
    let conditions: Vec<Option<Steering>> = match &sv {
        Some(v) => {
            let site = a.site.site()?;
            betas.iter().map(|&beta| Some(site.steer(v, beta))).collect()
        }
        None => vec![None],
    };
    // Conditions already evaluated with the same numerics, questions and steering come
    // from the result store; the others are evaluated in one batched pass and stored.
    let results: Vec<AbResult> = if a.no_cache {
        evaluate_ab_conditions(&model, &items, &conditions)?
    } else {
        evaluate_ab_cached(&model, &items, &conditions, &mut Store::open_default()?)?
    };
    if let Some(dir) = &a.out {
        crate::report::write_sweep(dir, model.id(), &a.dataset, &results)?;
    }
    let label = a.vector.as_ref().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned());
    let rows: Vec<EvalRow> = results
        .iter()
        .map(|r| {
            let cond = match (&label, r.beta) {
                (Some(l), b) if b != 0.0 => Condition { label: l.clone(), ..Condition::none() },
                _ => Condition::none(),
            };
            let mut row = EvalRow::of(&Condition { beta: r.beta, ..cond }, &r.per_item);
            row.extra.insert("per_item".into(), serde_json::json!(r.per_item));
            row
        })
        .collect();
    let mut report = EvalReport { metric: "ab_prob_matching".into(), rows, about: Default::default() };
    report.about.insert("model".into(), model.id().into());
    report.about.insert("dataset".into(), a.dataset.clone().into());
    ctx.print(&report, || {
        println!("| beta | mean_prob_matching | stderr | n |\n|---:|---:|---:|---:|");
        for r in &report.rows {
            println!("| {} | {:.4} | {:.4} | {} |", r.beta, r.mean, r.stderr, r.n);
        }
    })
}
