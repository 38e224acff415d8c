//! `lcross eval ab|open-ended|harm|fair|emotion` and `lcross judge`.
//!
//! Every evaluation prints one shape with `--json`: `{"metric", "rows": [{"condition",
//! "beta", "mean", "stderr", "n", ...}], "about"}` (lcross_eval::report::EvalReport).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use lcross_core::eval::{evaluate_ab_cached, evaluate_ab_conditions, AbResult, Steering};
use lcross_core::steering::SteeringVector;
use lcross_core::store::Store;
use lcross_eval::answers::GenerationSettings;
use lcross_eval::conditions::{build_conditions_auto, parse_betas, Beta, Condition};
use lcross_eval::judge::http::{HttpJudge, HttpJudgeConfig};
use lcross_eval::judge::local::{LocalJudge, DEFAULT_JUDGE_MODEL};
use lcross_eval::judge::{Judge, JudgeFormat, JudgeRequest};
use lcross_eval::metrics::{self, Setup};
use lcross_eval::report::{EvalReport, EvalRow, ItemRecord};
use lcross_eval::rubric;
use lcross_model::{Model, Sampling, DEFAULT_MODEL};
use serde::Serialize;

use crate::cmd::vectors::load_ab;
use crate::common::{Context, SiteArgs};

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

/// The model, its steering conditions and how answers are generated.
#[derive(Args, Clone)]
pub struct RunArgs {
    /// Model evaluated.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Steering vector; repeat for several (each is evaluated at every beta).
    #[arg(long)]
    pub vector: Vec<PathBuf>,
    /// Multipliers; 0 is the unsteered model (one row), `auto` each vector's calibrated
    /// beta (`lcross calibrate`). Default: 0,1 with a vector.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ',')]
    pub betas: Vec<String>,
    #[command(flatten)]
    pub site: SiteArgs,
    /// Use a vector made for another model of the same size.
    #[arg(long)]
    pub force: bool,
    /// Use the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// New tokens per answer.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sample with this temperature (seed + prompt index per prompt) instead of greedy.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus mass (with --temperature).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Rows decoding together at most (default: what fits, at most 32).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Skip the side effects (perplexity of answers, drift on neutral prompts).
    #[arg(long)]
    pub no_side_effects: bool,
    /// Do not read or write the result store (answers, judgements).
    #[arg(long)]
    pub no_cache: bool,
    /// Data directory (default $LCROSS_DATA, else ~/.cache/lcross/data; `lcross data fetch` fills it).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write summary.json, summary.md and items.jsonl (every answer and score) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Which judge scores answers.
#[derive(Args, Clone)]
pub struct JudgeArgs {
    /// `local` (a model run by lcross) or `http` (an OpenAI-compatible endpoint).
    #[arg(long, default_value = "local", value_parser = ["local", "http"])]
    pub judge: String,
    /// Local: the judge model (default qwen2.5-coder-1.5b-instruct). HTTP: the model
    /// name sent (or $LCROSS_JUDGE_MODEL).
    #[arg(long)]
    pub judge_model: Option<String>,
    /// HTTP: base URL with the API prefix, e.g. http://127.0.0.1:8080/v1 (or $LCROSS_JUDGE_URL).
    #[arg(long)]
    pub judge_url: Option<String>,
    /// HTTP: API key (or $LCROSS_JUDGE_API_KEY / $OPENAI_API_KEY).
    #[arg(long)]
    pub judge_key: Option<String>,
    /// How a 0-10 score is asked: `scale` (the rubric's 0-10 scale, expected value over
    /// the score tokens), `yes-no` (the rubric's question, 10 x P(Yes)) or `auto` (per
    /// concept, the one that ranked labelled answers best with the local judge,
    /// docs/EVALUATION.md). Default: auto for the local judge, scale for HTTP judges.
    #[arg(long, value_parser = ["auto", "scale", "yes-no"])]
    pub judge_format: Option<String>,
}

impl JudgeArgs {
    /// The format of 0-10 judgements.
    pub fn format(&self) -> JudgeFormat {
        match self.judge_format.as_deref().and_then(JudgeFormat::parse) {
            Some(f) => f,
            None if self.judge == "http" => JudgeFormat::Scale,
            None => JudgeFormat::Auto,
        }
    }

    pub fn build(&self, ctx: &Context) -> Result<Box<dyn Judge>> {
        Ok(match self.judge.as_str() {
            "http" => Box::new(HttpJudge::new(HttpJudgeConfig::from_flags_or_env(
                self.judge_url.as_deref(),
                self.judge_model.as_deref(),
                self.judge_key.as_deref(),
            )?)?),
            _ => {
                if self.judge_url.is_some() {
                    bail!("--judge-url needs --judge http");
                }
                let spec = self.judge_model.as_deref().unwrap_or(DEFAULT_JUDGE_MODEL);
                Box::new(LocalJudge::new(ctx.load(spec).with_context(|| format!("loading the judge {spec}"))?)?)
            }
        })
    }
}

impl RunArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir)
    }

    pub fn limit<T>(&self, mut v: Vec<T>) -> Vec<T> {
        if let Some(n) = self.limit {
            v.truncate(n);
        }
        v
    }

    /// Load the model and vectors and build the conditions and settings.
    pub fn setup<'m>(&self, model: &'m Model, default_temperature: Option<f64>, rows_hint: usize) -> Result<Setup<'m>> {
        let mut vectors = Vec::new();
        for p in &self.vector {
            let sv = SteeringVector::load(p)?;
            sv.check_model(model, self.force).with_context(|| format!("vector {}", p.display()))?;
            let label = p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string());
            vectors.push((label, Arc::new(sv)));
        }
        let betas = if self.betas.is_empty() {
            if vectors.is_empty() {
                vec![Beta::Value(0.0)]
            } else {
                vec![Beta::Value(0.0), Beta::Value(1.0)]
            }
        } else {
            parse_betas(&self.betas)?
        };
        let conditions = build_conditions_auto(&vectors, &betas, self.site.site()?)?;
        let sampling = match self.temperature.or(default_temperature) {
            None => Sampling::Greedy,
            Some(t) => Sampling::Sample { temperature: t, top_p: self.top_p, seed: self.seed },
        };
        let rows_in_flight = match self.batch_size {
            Some(0) => bail!("--batch-size must be at least 1"),
            Some(n) => n,
            None => model.rows_that_fit(rows_hint + self.max_tokens),
        };
        let store = if self.no_cache { None } else { Some(Store::open_default()?) };
        let neutral_prompts = if self.no_side_effects { None } else { Some(lcross_eval::side_effects::neutral_prompts(&self.data_dir())?) };
        Ok(Setup { model, conditions, settings: GenerationSettings { max_tokens: self.max_tokens, sampling, rows_in_flight }, store, neutral_prompts })
    }
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

pub fn read_questions(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let looks_caa = text.trim_start().starts_with('[') && text.contains("\"question\"");
    Ok(if looks_caa { lcross_core::dataset::load_open_ended(path)? } else { lcross_eval::inputs::read_prompts(path, "prompt")? })
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
    let questions = a.run.limit(read_questions(&a.dataset)?);
    let judge = a.judge.build(ctx)?;
    let model = ctx.load(&a.run.model)?;
    let mut setup = a.run.setup(&model, None, 64)?;
    let (mut report, items) = metrics::judged::open_ended(&mut setup, judge.as_ref(), a.judge.format(), &questions, &rubric::rubric_for(&concept))?;
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
    let (report, items) = metrics::harm::harm(&mut setup, judge.as_ref(), &prompts, a.harm_threshold)?;
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
    let (mut report, items) = metrics::fair::fair(&mut setup, samples)?;
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
    let (mut report, items) = metrics::judged::emotion(&mut setup, judge.as_ref(), a.judge.format(), &prompts, &rubric::emotion_rubric(&a.emotion))?;
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
    let items = load_ab(&a.dataset, a.limit)?;
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
