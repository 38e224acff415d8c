//! `lcross tokenize`, `lcross hidden`, `lcross generate`.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_model::{HookName, HookPoint, Logits, ModelText, Sampling};
use serde::Serialize;

use crate::args::{BatchArgs, PromptArgs, SteerFlags};
use crate::common::{parse_ids, Context};
use crate::output::{generate_rows, generate_with, print_rows};

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
    #[command(flatten)]
    steer: SteerFlags,
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
    let name = HookName::new(a.layer, a.steer.site.site()?.point.unwrap_or_default());
    let hooks = a.steer.hooks(&model)?.with_capture_at(name, lcross_model::CapturePositions::Last);
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
    #[command(flatten)]
    steer: SteerFlags,
    /// The text (or --prompts FILE).
    #[arg(required_unless_present = "prompts", conflicts_with = "prompts")]
    text: Option<String>,
}

impl GenerateArgs {
    pub fn sampling(&self) -> Sampling {
        match self.temperature {
            None => Sampling::Greedy,
            Some(t) => Sampling::Sample { temperature: t, top_p: self.top_p, seed: self.seed },
        }
    }
}

pub fn generate(ctx: &Context, a: GenerateArgs) -> Result<()> {
    let model = ctx.load(&a.prompt.model)?;
    let hooks = a.steer.hooks(&model)?;
    if let Some(file) = &a.batch.prompts {
        let rows = lcross_eval::inputs::read_prompts(file, "prompt")?
            .into_iter()
            .map(|t| Ok((t.clone(), a.prompt.build(&model, &t)?, None, hooks.clone())))
            .collect::<Result<Vec<_>>>()?;
        let out = generate_rows(&model, &rows, a.max_tokens, a.sampling(), a.batch.batch_size)?;
        return print_rows(ctx, &out);
    }
    let prompt = a.prompt.build(&model, a.text.as_deref().unwrap_or_default())?;
    let out = generate_with(ctx, &model, &prompt, a.max_tokens, a.sampling(), &hooks)?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!("[{} tokens, {:.1} tokens/s incl. prefill]", out.ids.len(), out.tokens_per_second);
    }
    Ok(())
}
