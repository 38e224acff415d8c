//! Flag groups shared by several commands (parsing only: each turns into library inputs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lcross_core::dataset::{self, ConceptDataset};
use lcross_core::maps::{Estimator, LinearMap};
use lcross_core::steering::{Method, SteeringVector};
use lcross_eval::conditions::{build_conditions_auto, parse_betas, Beta};
use lcross_eval::judge::http::{HttpJudge, HttpJudgeConfig};
use lcross_eval::judge::local::{LocalJudge, DEFAULT_JUDGE_MODEL};
use lcross_eval::judge::{Judge, JudgeFormat};
use lcross_eval::metrics::{RunOptions, Setup};
use lcross_eval::pipeline::{self, Corpus, VectorRecipe};
use lcross_model::{Hooks, Model, DEFAULT_MODEL};

use crate::common::Context;

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

/// Where and how steering vectors act: `--hook`, `--positions`, `--intervention` (the
/// same flags on `steer`, `hidden`, `eval` and `calibrate`).
#[derive(clap::Args, Clone, Default)]
pub struct SiteArgs {
    /// Hook point of the vector's layers: resid_post (default, the block's output),
    /// resid_pre (its input), attn_out or mlp_out (what the attention / MLP branch adds).
    #[arg(long)]
    pub hook: Option<String>,
    /// Positions (all, prompt-last, generated, prompt-last+generated, from:N; default: all
    /// for mean-diff vectors, prompt-last+generated for pca).
    #[arg(long)]
    pub positions: Option<String>,
    /// add (default: h + beta v), ablate (project the direction out: h - (h.u) u) or cap
    /// (clamp the projection on u to at most beta).
    #[arg(long)]
    pub intervention: Option<String>,
}

/// Optional steering of a command that runs unsteered unless told (`hidden`,
/// `generate`): `--vector`, `--beta`, `--force` and the site flags.
#[derive(Args, Clone, Default)]
pub struct SteerFlags {
    /// Steer with this steering vector file (its layers, at --hook).
    #[arg(long)]
    pub vector: Option<PathBuf>,
    /// Multiplier of --vector, or `auto` (its calibrated beta).
    #[arg(long, allow_hyphen_values = true, default_value = "1", requires = "vector")]
    pub beta: String,
    /// Use a vector made for another model of the same size.
    #[arg(long, requires = "vector")]
    pub force: bool,
    #[command(flatten)]
    pub site: SiteArgs,
}

impl SteerFlags {
    /// The hooks: none without --vector (the site flags other than --hook then refused).
    pub fn hooks(&self, model: &Model) -> Result<Hooks> {
        let site = self.site.site()?;
        match &self.vector {
            Some(path) => {
                let sv = SteeringVector::load(path)?;
                sv.check_model(model, self.force)?;
                let beta = Beta::parse(&self.beta)?.resolve(Some(&sv))?;
                Ok(site.steer(&sv, beta).hooks(model)?)
            }
            None if self.site.positions.is_some() || self.site.intervention.is_some() => bail!("--positions and --intervention steer: give --vector"),
            None => Ok(Hooks::none()),
        }
    }
}

impl SiteArgs {
    /// The parsed site.
    pub fn site(&self) -> Result<lcross_core::steer::Site> {
        Ok(lcross_core::steer::Site::parse(self.hook.as_deref(), self.positions.as_deref(), self.intervention.as_deref())?)
    }
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
        Ok(Setup::build(model, conditions, &self.options(), default_temperature, rows_hint)?)
    }

    /// The generation and cache settings of the flags.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            batch_size: self.batch_size,
            side_effects: !self.no_side_effects,
            use_cache: !self.no_cache,
            data_dir: self.data_dir(),
        }
    }
}

#[derive(Args)]
pub struct ExtractArgs {
    /// Model: a known id, a .gguf file or a HF directory.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A CAA A/B file (generate_dataset.json), a pairs file (JSON array or JSONL of
    /// {"positive": ..., "negative": ...}), builtin:optimism, or a RepE concept
    /// (happiness, fear, fairness, harmfulness) read from --data-dir.
    #[arg(long, short, required_unless_present = "scenarios", conflicts_with = "scenarios", default_value = "")]
    pub dataset: String,
    #[command(flatten)]
    pub custom: CustomConceptArgs,
    /// Layers (0-based), e.g. 12 or 12,13 or 10-14.
    #[arg(long, short)]
    pub layers: String,
    /// Hook point read at each layer: resid_post (default), resid_pre, attn_out, mlp_out.
    /// Recorded in the vector: it is added there unless told otherwise.
    #[arg(long, default_value = "resid_post")]
    pub hook: String,
    /// mean-diff (CAA) or pca (RepE).
    #[arg(long, default_value = "mean-diff")]
    pub method: String,
    /// Use the first N pairs in file order.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Unit-normalise each layer's vector.
    #[arg(long)]
    pub normalize: bool,
    /// Average the A- and B-matching pairs separately (cancels the letter component).
    #[arg(long)]
    pub balance_letters: bool,
    /// Data directory for RepE and caa: concepts (default $LCROSS_DATA, else ~/.cache/lcross/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not read or write the activation cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Run both texts of a pair in full (for measuring what prefix sharing buys).
    #[arg(long, hide = true)]
    pub no_prefix_sharing: bool,
    /// Run every layer and the logits (for measuring what early exit buys).
    #[arg(long, hide = true)]
    pub no_early_exit: bool,
    /// Output vector file (.safetensors).
    #[arg(long, short)]
    pub output: PathBuf,
}

/// A concept of the user's own: raw pair files, or RepE's construction from scenarios.
#[derive(Args, Clone, Default)]
pub struct CustomConceptArgs {
    /// Pairs file texts are used as they are, not wrapped as a user turn of the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Scenarios of the concept (JSON array of strings, or one a line): RepE's
    /// construction, each in --template, paired with a --contrast scenario.
    #[arg(long, requires_all = ["contrast", "template"])]
    pub scenarios: Option<PathBuf>,
    /// Contrasting scenarios (same formats).
    #[arg(long, requires = "scenarios")]
    pub contrast: Option<PathBuf>,
    /// Template with {scenario}, e.g. "Consider the pride of the following scenario:\nScenario: {scenario}\nAnswer: ".
    #[arg(long, requires = "scenarios")]
    pub template: Option<String>,
    /// Concept name (default: the scenarios file's stem).
    #[arg(long)]
    pub concept: Option<String>,
}

impl CustomConceptArgs {
    /// The dataset: scenarios, a raw pairs file, or the `--dataset` spec.
    pub fn load(&self, spec: &str, data_dir: &Path) -> Result<dataset::ConceptDataset> {
        let mut ds = match (&self.scenarios, &self.contrast, &self.template) {
            (Some(s), Some(c), Some(t)) => {
                let name = self.concept.clone().or_else(|| s.file_stem().map(|x| x.to_string_lossy().into_owned())).unwrap_or_else(|| "concept".into());
                dataset::scenario_pairs(&name, s, c, &t.replace("\\n", "\n"), self.raw)?
            }
            _ if self.raw => dataset::load_pairs(Path::new(spec), true)?,
            _ => dataset::load_concept(spec, data_dir)?,
        };
        if let Some(c) = &self.concept {
            ds.concept = c.clone();
        }
        Ok(ds)
    }
}

impl ExtractArgs {
    /// The dataset and recipe of `lcross extract`, read and checked before any model loads.
    pub fn inputs(&self) -> Result<(ConceptDataset, VectorRecipe)> {
        let a = self;
        let method = Method::parse(&a.method).with_context(|| format!("unknown method `{}` (mean-diff or pca)", a.method))?;
        let data_dir = a.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
        let ds = a.custom.load(&a.dataset, &data_dir)?.limit(a.limit);
        let recipe = VectorRecipe {
            layers: lcross_core::steer::parse_layers(&a.layers)?,
            method,
            normalize: a.normalize,
            balance_letters: a.balance_letters,
            use_cache: !a.no_cache,
            prefix_sharing: !a.no_prefix_sharing,
            early_exit: !a.no_early_exit,
            point: lcross_core::steer::parse_hook(&a.hook)?,
        };
        Ok((ds, recipe))
    }
}

#[derive(Args)]
pub struct AlignArgs {
    /// Source model.
    #[arg(long)]
    pub source: String,
    /// Source layer (0-based).
    #[arg(long)]
    pub source_layer: usize,
    /// Hook point of the states on both sides: resid_post (default), resid_pre, attn_out, mlp_out.
    #[arg(long, default_value = "resid_post")]
    pub hook: String,
    /// Target model.
    #[arg(long)]
    pub target: String,
    /// Target layer.
    #[arg(long)]
    pub target_layer: usize,
    /// Corpus: a concept dataset (CAA file, builtin:NAME, RepE concept) whose pair texts are
    /// used, or a .txt file with one text a line. Not used by `--estimator embedding`.
    #[arg(long, default_value = "")]
    pub corpus: String,
    /// First N items of the corpus (pairs: both texts of each), after --skip.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the first N items (e.g. the pairs the vector was extracted from, to fit the map
    /// on held-out pairs).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// ols (default, the paper's pseudo-inverse), ridge[:LAMBDA], procrustes, affine (centred least squares plus a bias; vectors move through the linear part), reduced-rank[:RANK] (rank chosen on held-out rows unless given), embedding (OLS between the token embeddings of the vocabulary both tokenizers share: no corpus, no forward pass; --limit caps the tokens), mlp[:HIDDEN] (Oozeer et al.'s autoencoder: ReLU encoder, linear decoder, seeded AdamW; vectors move as the mean of map(h + v) - map(h)), random[:SEED], identity.
    #[arg(long, default_value = "ols")]
    pub estimator: String,
    /// A source-model vector to transfer at fit time (with --native: cosine reported).
    #[arg(long)]
    pub vector: Option<PathBuf>,
    /// The target model's own vector of the same concept.
    #[arg(long)]
    pub native: Option<PathBuf>,
    /// Data directory for RepE concepts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not use the activation cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Output map file.
    #[arg(long, short)]
    pub output: PathBuf,
}

impl AlignArgs {
    /// Fit the map between the loaded models as `lcross align` does (with the cosine of
    /// `--vector` through it to `--native` recorded when both are given).
    pub fn fit(&self, src: &Model, tgt: &Model) -> Result<LinearMap> {
        let est = Estimator::parse(&self.estimator).with_context(|| format!("unknown estimator `{}`", self.estimator))?;
        if est == Estimator::Embedding {
            let mut map = pipeline::align_embeddings(src, tgt, (self.source_layer, self.target_layer), self.limit)?;
            if let (Some(v), Some(n)) = (&self.vector, &self.native) {
                pipeline::record_native_cosine(&mut map, &SteeringVector::load(v)?, &SteeringVector::load(n)?, &n.display().to_string())?;
            }
            return Ok(map);
        }
        if self.corpus.is_empty() {
            anyhow::bail!("--corpus is needed by the {} estimator (only `embedding` fits without one)", self.estimator);
        }
        let data_dir = self.data_dir.clone().unwrap_or_else(lcross_core::default_data_dir);
        let corpus = Corpus::load(&self.corpus, &data_dir, self.skip, self.limit)?;
        let point = lcross_core::steer::parse_hook(&self.hook)?;
        let mut map = pipeline::align_at(src, tgt, (self.source_layer, self.target_layer), (point, point), &corpus, est, !self.no_cache)?;
        if let (Some(v), Some(n)) = (&self.vector, &self.native) {
            pipeline::record_native_cosine(&mut map, &SteeringVector::load(v)?, &SteeringVector::load(n)?, &n.display().to_string())?;
        }
        Ok(map)
    }
}
