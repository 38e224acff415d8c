//! `lcross tokenize`, `lcross hidden`, `lcross generate`.

use std::io::Write;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_model::{GenerateOptions, HookName, HookPoint, Hooks, Logits, Model, ModelText, Sampling, TextStream, DEFAULT_MODEL};
use serde::Serialize;

use crate::common::{parse_ids, Context};
use lcross_eval::answers::{GenerationSettings, RowSpec};

/// Where the prompt comes from.
#[derive(Args, Clone)]
pub struct PromptArgs {
    /// Model: a known id, a .gguf file or a Hugging Face model directory.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Wrap TEXT as one user message of the model's chat template, with the generation prompt.
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
}

impl PromptArgs {
    /// Text (rendered) and ids of the prompt.
    pub fn build(&self, model: &Model, text: &str) -> Result<lcross_model::Prompt> {
        if text.is_empty() {
            bail!("empty prompt: give some text");
        }
        Ok(model.prompt(text, self.chat, self.system.as_deref())?)
    }
}

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    prompt: PromptArgs,
    /// The text.
    text: String,
}

#[derive(Serialize)]
struct TokenizeOut {
    ids: Vec<u32>,
    text: String,
    tokens: Vec<String>,
}

pub fn tokenize(ctx: &Context, a: TokenizeArgs) -> Result<()> {
    // The tokenizer and chat template only: no weight is read.
    let text = ModelText::load(&a.prompt.model).with_context(|| format!("cannot load the tokenizer of `{}`", a.prompt.model))?;
    if a.text.is_empty() {
        bail!("empty prompt: give some text");
    }
    let p = text.prompt(&a.text, a.prompt.chat, a.prompt.system.as_deref())?;
    let tokens = p.ids.iter().map(|&i| text.tokenizer().id_to_token(i).unwrap_or_default()).collect();
    let out = TokenizeOut { ids: p.ids, text: p.text, tokens };
    ctx.print(&out, || {
        println!("{} tokens", out.ids.len());
        for (id, tok) in out.ids.iter().zip(&out.tokens) {
            println!("{id:>8}  {tok:?}");
        }
    })
}

#[derive(Args)]
pub struct HiddenArgs {
    #[command(flatten)]
    prompt: PromptArgs,
    /// Decoder block (0-based) whose hook point (--hook, default resid_post) is read.
    #[arg(long, short)]
    layer: usize,
    /// Steer while reading: a steering vector file (its layers are steered at --hook).
    #[arg(long)]
    vector: Option<std::path::PathBuf>,
    /// Multiplier of --vector, or `auto` (its calibrated beta).
    #[arg(long, allow_hyphen_values = true, default_value = "1", requires = "vector")]
    beta: String,
    /// Use a vector made for another model of the same size.
    #[arg(long, requires = "vector")]
    force: bool,
    #[command(flatten)]
    site: crate::common::SiteArgs,
    /// Token ids to run exactly as given (instead of TEXT), e.g. 1,2,3.
    #[arg(long, conflicts_with = "text")]
    ids: Option<String>,
    /// The text.
    #[arg(required_unless_present = "ids")]
    text: Option<String>,
}

#[derive(Serialize)]
struct HiddenOut {
    layer: usize,
    /// The hook point read (omitted for resid_post, the default).
    #[serde(skip_serializing_if = "is_resid_post")]
    hook: HookPoint,
    hidden: Vec<f32>,
    top5: Vec<u32>,
    n_tokens: usize,
}

fn is_resid_post(p: &HookPoint) -> bool {
    *p == HookPoint::ResidPost
}

pub fn hidden(ctx: &Context, a: HiddenArgs) -> Result<()> {
    let model = ctx.load(&a.prompt.model)?;
    let ids = match (&a.ids, &a.text) {
        (Some(s), _) => parse_ids(s)?,
        (None, Some(t)) => a.prompt.build(&model, t)?.ids,
        (None, None) => bail!("give TEXT or --ids"),
    };
    if ids.is_empty() {
        bail!("empty prompt: --ids has no token ids");
    }
    let site = a.site.site()?;
    let name = HookName::new(a.layer, site.point.unwrap_or_default());
    let mut hooks = match &a.vector {
        Some(path) => {
            let sv = lcross_core::steering::SteeringVector::load(path)?;
            sv.check_model(&model, a.force)?;
            let beta = lcross_core::steer::Beta::parse(&a.beta)?.resolve(Some(&sv))?;
            site.steer(&sv, beta).hooks(&model)?
        }
        None if a.site.positions.is_some() || a.site.intervention.is_some() => bail!("--positions and --intervention steer: give --vector"),
        None => Hooks::none(),
    };
    hooks = hooks.with_capture_at(name, lcross_model::CapturePositions::Last);
    let out = model.forward(&ids, None, &hooks, Logits::Last)?;
    let hidden: Vec<f32> = out.captures[&name].flatten_all()?.to_vec1()?;
    let logits: Vec<f32> = out.logits.expect("logits were requested").to_vec1()?;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]).then(i.cmp(&j)));
    let top5: Vec<u32> = order.iter().take(5).map(|&i| i as u32).collect();
    let res = HiddenOut { layer: a.layer, hook: name.point, hidden, top5, n_tokens: ids.len() };
    ctx.print(&res, || {
        let norm = res.hidden.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        println!("{}({}) of the last of {} tokens: {} values, norm {norm:.4}", res.hook, res.layer, res.n_tokens, res.hidden.len());
        let head: Vec<String> = res.hidden.iter().take(8).map(|x| format!("{x:.4}")).collect();
        println!("first values: [{}, ...]", head.join(", "));
        println!("next-token top 5:");
        for &t in &res.top5 {
            println!("  {t:>8} {:?}  logit {:.3}", model.tokenizer().id_to_token(t).unwrap_or_default(), logits[t as usize]);
        }
    })
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    prompt: PromptArgs,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (omit for greedy decoding).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling mass (with --temperature).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampler (with --temperature; row i of a batch uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    batch: BatchArgs,
    /// The text (or --prompts FILE).
    #[arg(required_unless_present = "prompts", conflicts_with = "prompts")]
    text: Option<String>,
}

/// Many prompts at once.
#[derive(Args, Clone)]
pub struct BatchArgs {
    /// A file of prompts, one a line (or JSONL with a "prompt" field): each prompt is a
    /// row of one batch (with `steer --betas`: each prompt x beta).
    #[arg(long)]
    pub prompts: Option<std::path::PathBuf>,
    /// Rows in flight at most (default: what fits this machine, at most 32).
    #[arg(long)]
    pub batch_size: Option<usize>,
}

/// Prompts of a `--prompts` file: plain lines, JSONL objects with a "prompt" string, or a
/// JSON array (see [`lcross_eval::inputs::read_prompts`]); errors name the file and line.
pub fn read_prompts(path: &std::path::Path) -> Result<Vec<String>> {
    Ok(lcross_eval::inputs::read_prompts(path, "prompt")?)
}

/// One generated row of a batch.
#[derive(Serialize)]
pub struct RowOut {
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    pub text: String,
    pub tokens: usize,
    pub ids: Vec<u32>,
}

/// Generate every (prompt, beta, hooks) row in batches with a progress bar.
pub fn generate_rows(
    model: &Model,
    rows: &[(String, lcross_model::Prompt, Option<f64>, Hooks)],
    max_tokens: usize,
    sampling: Sampling,
    batch_size: Option<usize>,
) -> Result<Vec<RowOut>> {
    let longest = rows.iter().map(|r| r.1.ids.len()).max().unwrap_or(0);
    let batch = batch_size.unwrap_or_else(|| model.rows_that_fit(longest + max_tokens));
    if batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    // Row i samples with seed + i.
    let specs: Vec<RowSpec<'_>> = rows.iter().enumerate().map(|(i, (_, p, _, h))| RowSpec { prompt: &p.ids, hooks: h, seed_offset: i }).collect();
    let settings = GenerationSettings { max_tokens, sampling, rows_in_flight: batch };
    let bar = lcross_core::activations::progress((rows.len() * max_tokens) as u64, &format!("generating {} rows, {batch} at a time", rows.len()));
    let answers = lcross_eval::answers::generate_rows(model, &specs, &settings, |_, _| {
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(rows
        .iter()
        .zip(answers)
        .map(|((text, _, beta, _), a)| RowOut { prompt: text.clone(), beta: *beta, text: a.text, tokens: a.ids.len(), ids: a.ids })
        .collect())
}

/// Print batch rows: `{"rows": [...]}` with --json, else each answer under its prompt.
pub fn print_rows(ctx: &Context, rows: &[RowOut]) -> Result<()> {
    #[derive(Serialize)]
    struct Rows<'a> {
        rows: &'a [RowOut],
    }
    ctx.print(&Rows { rows }, || {
        for r in rows {
            match r.beta {
                Some(b) => println!("=== {} (beta {b})", r.prompt),
                None => println!("=== {}", r.prompt),
            }
            println!("{}\n", r.text.trim_end());
        }
    })
}

#[derive(Serialize)]
pub struct GenerateOut {
    pub prompt: String,
    pub ids: Vec<u32>,
    pub text: String,
    pub tokens_per_second: f64,
}

impl GenerateArgs {
    pub fn sampling(&self) -> Sampling {
        match self.temperature {
            None => Sampling::Greedy,
            Some(t) => Sampling::Sample { temperature: t, top_p: self.top_p, seed: self.seed },
        }
    }
}

/// Generate with `hooks`, streaming to stdout unless `json`.
pub fn generate_with(ctx: &Context, model: &Model, prompt: &lcross_model::Prompt, max_tokens: usize, sampling: Sampling, hooks: &Hooks) -> Result<GenerateOut> {
    let opts = GenerateOptions { max_tokens, sampling, stop_tokens: model.stop_tokens().to_vec() };
    let mut stream = TextStream::new();
    let start = std::time::Instant::now();
    let stdout = std::io::stdout();
    let ids = model.generate(&prompt.ids, &opts, hooks, |id| {
        if !ctx.json && !model.stop_tokens().contains(&id) {
            if let Some(piece) = stream.push(id, |ids| model.tokenizer().decode(ids, true))? {
                let mut out = stdout.lock();
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
        }
        Ok(())
    })?;
    if !ctx.json {
        println!();
    }
    let secs = start.elapsed().as_secs_f64();
    let text = model.tokenizer().decode(&ids, true)?;
    Ok(GenerateOut { prompt: prompt.text.clone(), tokens_per_second: ids.len() as f64 / secs.max(1e-9), ids, text })
}

pub fn generate(ctx: &Context, a: GenerateArgs) -> Result<()> {
    let model = ctx.load(&a.prompt.model)?;
    if let Some(file) = &a.batch.prompts {
        let rows = read_prompts(file)?.into_iter().map(|t| Ok((t.clone(), a.prompt.build(&model, &t)?, None, Hooks::none()))).collect::<Result<Vec<_>>>()?;
        let out = generate_rows(&model, &rows, a.max_tokens, a.sampling(), a.batch.batch_size)?;
        return print_rows(ctx, &out);
    }
    let prompt = a.prompt.build(&model, a.text.as_deref().unwrap_or_default())?;
    let out = generate_with(ctx, &model, &prompt, a.max_tokens, a.sampling(), &Hooks::none())?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!("[{} tokens, {:.1} tokens/s incl. prefill]", out.ids.len(), out.tokens_per_second);
    }
    Ok(())
}
