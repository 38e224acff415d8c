//! The experiment file: a TOML description of the grid `lcross reproduce` runs.
//!
//! ```toml
//! name = "paper-local"
//! targets = ["qwen2.5-coder-0.5b-instruct"]
//! sources = ["smollm2-135m-instruct", "gemma3-270m"]
//! concepts = ["refusal", "sycophancy"]          # CAA behaviours
//! conditions = ["none", "self", "lcross", "lcross-unrelated", "random-t", "identity"]
//! estimators = ["ols"]                          # maps of the `lcross` condition
//! betas = [4.0]                               # or "auto": each cell's beta chosen on dev questions
//! evaluations = ["ab"]
//! seed = 0
//!
//! [layers]                                      # resid_post layer per model
//! "qwen2.5-coder-0.5b-instruct" = 14
//!
//! [sizes]
//! extract_pairs = 128                           # pairs per vector and per map corpus
//! test_questions = 50                           # A/B questions per concept
//! heldout_pairs = 128                           # pairs of the held-out map (lcross-heldout)
//!
//! [profiles.tiny]                               # `--profile tiny` overrides any of the above
//! targets = ["qwen2.5-coder-0.5b-instruct"]
//! sizes = { extract_pairs = 8, test_questions = 4 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// The CAA behaviours the grid knows.
pub const CAA_BEHAVIOURS: &[&str] =
    &["coordinate-other-ais", "corrigible-neutral-HHH", "hallucination", "myopic-reward", "survival-instinct", "sycophancy", "refusal"];

/// The RepE concepts the grid knows (METHOD.md, "Building the RepE concept datasets"):
/// their vectors are the first principal component of the pair differences (unit norm),
/// added at the last prompt token and the generated tokens.
pub const REPE_CONCEPTS: &[&str] = &["happiness", "fear", "fairness", "harmfulness"];

/// Whether `concept` is a RepE concept (else a CAA behaviour).
pub fn is_repe(concept: &str) -> bool {
    REPE_CONCEPTS.contains(&concept)
}

/// Whether the evaluation `metric` has cells for `concept`: the A/B metric and the judged
/// open-ended answers for CAA behaviours, HARM for harmfulness, FAIR for fairness, the
/// judged emotion for happiness and fear; Table 4 and Figure 3 for every concept.
pub fn metric_applies(metric: &str, concept: &str) -> bool {
    match metric {
        "ab" | "open-ended" => !is_repe(concept),
        "harm" => concept == "harmfulness",
        "fair" => concept == "fairness",
        "emotion" => concept == "happiness" || concept == "fear",
        _ => true,
    }
}

/// +1 where a larger value of the metric is the concept's effect, -1 where a smaller one
/// is (FAIR: the fairness vector should lower the frequency of "women" / "female", the
/// paper's reading of less gender bias).
pub fn metric_direction(metric: &str) -> f64 {
    if metric == "fair" {
        -1.0
    } else {
        1.0
    }
}

/// A steering multiplier of the grid: a number, or `auto` (written `"auto"`): each steered
/// cell then gets its own beta, the candidate of `auto_betas` that raises the A/B metric
/// most on the behaviour's dev questions (generate-dataset items no vector or map of the
/// cell used) - for a RepE concept, the one that moves its generated metric most on dev
/// prompts after the test ones, within `lcross calibrate`'s side-effect budget - so self
/// modulation, each transfer and each model get the beta that suits their scale. Numbers serialise as numbers (cell ids and run hashes of numeric grids are
/// unchanged), `auto` as the string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Beta {
    Value(f64),
    Auto,
}

impl Beta {
    /// The number of a numeric beta.
    pub fn value(self) -> Option<f64> {
        match self {
            Beta::Value(b) => Some(b),
            Beta::Auto => None,
        }
    }

    /// Whether this is `auto`.
    pub fn is_auto(self) -> bool {
        self == Beta::Auto
    }

    /// The text of cell ids: `4.0` (Rust's `{:?}` of the number, as ids have always been) or `auto`.
    pub fn key_text(self) -> String {
        match self {
            Beta::Value(b) => format!("{b:?}"),
            Beta::Auto => "auto".into(),
        }
    }
}

impl From<f64> for Beta {
    fn from(b: f64) -> Self {
        Beta::Value(b)
    }
}

impl std::fmt::Display for Beta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Beta::Value(b) => write!(f, "{b}"),
            Beta::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for Beta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Beta::Value(b) => s.serialize_f64(*b),
            Beta::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Beta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Beta;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or \"auto\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Beta, E> {
                Ok(Beta::Value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Beta, E> {
                Ok(Beta::Value(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Beta, E> {
                Ok(Beta::Value(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Beta, E> {
                match v {
                    "auto" => Ok(Beta::Auto),
                    other => Err(E::custom(format!("beta `{other}`: expected a number or \"auto\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Candidate betas of `auto` cells unless the experiment gives `auto_betas`.
pub const DEFAULT_AUTO_BETAS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0];

/// A way to steer the target in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConditionKind {
    /// Unsteered.
    None,
    /// The target's own vector (self modulation).
    #[serde(rename = "self")]
    SelfModulation,
    /// The source's vector through a map fitted on the concept's own pairs (the paper's
    /// concept-specific T; interpolates those pairs when they are fewer than d_s).
    Lcross,
    /// Through a map fitted on another concept's pairs (the paper's Table 3).
    LcrossUnrelated,
    /// Through a map fitted on pairs of the concept held out from the vector's pairs.
    LcrossHeldout,
    /// Through one map fitted on the pairs of every concept of the grid (n > d_s).
    LcrossPooled,
    /// Through a random map of the same shape and scale (Table 2).
    #[serde(rename = "random-t")]
    RandomT,
    /// The source's vector without a map (Table 2; same hidden size only).
    Identity,
    /// Beyond the paper: every source's vector through its held-out map into the target,
    /// averaged (a vector several models agree on) against each single source and self.
    Consensus,
    /// Beyond the paper: the held-out map at the (source, target) layer pair with the best
    /// held-out R^2 of a scan, instead of the fixed layers; the target is steered there.
    #[serde(rename = "lcross-autolayer")]
    LcrossAutoLayer,
    /// Beyond the paper: the layer pair chosen for steering, not for fit. The target layer
    /// is the candidate where the target's own vector moves the A/B metric most on dev
    /// questions (generate-dataset items after the vector's and the held-out map's pairs);
    /// the source layer is the one whose held-out map into that layer has the best
    /// held-out R^2. The held-out OLS map at that pair. (The R^2-only scan of
    /// `lcross-autolayer` picks shallow target layers where nothing steers.)
    #[serde(rename = "lcross-autolayer-steer")]
    LcrossAutoSteer,
}

impl ConditionKind {
    /// Every condition.
    pub const ALL: [ConditionKind; 11] = [
        Self::None,
        Self::SelfModulation,
        Self::Lcross,
        Self::LcrossUnrelated,
        Self::LcrossHeldout,
        Self::LcrossPooled,
        Self::RandomT,
        Self::Identity,
        Self::Consensus,
        Self::LcrossAutoLayer,
        Self::LcrossAutoSteer,
    ];

    /// The name in configs and cells.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SelfModulation => "self",
            Self::Lcross => "lcross",
            Self::LcrossUnrelated => "lcross-unrelated",
            Self::LcrossHeldout => "lcross-heldout",
            Self::LcrossPooled => "lcross-pooled",
            Self::RandomT => "random-t",
            Self::Identity => "identity",
            Self::Consensus => "consensus",
            Self::LcrossAutoLayer => "lcross-autolayer",
            Self::LcrossAutoSteer => "lcross-autolayer-steer",
        }
    }

    /// Whether the condition can run on `concept`: the steerability scan needs A/B
    /// questions, which RepE concepts do not have (no grid cell that could only be skipped).
    pub fn applies_to(self, concept: &str) -> bool {
        !(self == Self::LcrossAutoSteer && is_repe(concept))
    }

    /// Whether a cell of the condition has one source model (consensus uses them all).
    pub fn needs_source(self) -> bool {
        !matches!(self, Self::None | Self::SelfModulation | Self::Consensus)
    }
}

/// How the CAA vectors of a cell are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VectorKind {
    /// Mean of all differences (the paper's CAA vectors).
    #[default]
    Plain,
    /// Pairs whose positive answer is A and those whose is B averaged separately, then
    /// together, so the vector does not also encode "answer A".
    Balanced,
}

impl VectorKind {
    /// The name in configs and cells.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Balanced => "balanced",
        }
    }
}

/// Sizes of the grid's samples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    pub extract_pairs: usize,
    pub test_questions: usize,
    #[serde(default)]
    pub heldout_pairs: usize,
    /// Open-ended questions per concept (first N of test_dataset_open_ended.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ended_questions: Option<usize>,
    /// New tokens per open-ended answer (greedy); default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_tokens: Option<usize>,
    /// Prompts per `harm` / `emotion` cell and samples per `fair` cell (default 50, the
    /// paper's; the held-out AdvBench rows, RepE scenarios, FAIR's seeded vignettes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_prompts: Option<usize>,
}

/// Overrides of a size.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizesOverride {
    pub extract_pairs: Option<usize>,
    pub test_questions: Option<usize>,
    pub heldout_pairs: Option<usize>,
    pub open_ended_questions: Option<usize>,
    pub answer_tokens: Option<usize>,
    pub eval_prompts: Option<usize>,
}

/// What one evaluation keeps of the grid (`[per_evaluation.NAME]`): only these of the
/// grid's concepts, conditions, map estimators and vector kinds. Generated evaluations
/// cost ~10 A/B cells each (answers, then a judge), so a study runs the paper's Table 1
/// conditions for them and its ablations on the A/B metric. Each list is a filter of the
/// grid's list (in the grid's order). Scopes belong to the lists they were written for: a
/// profile has the scopes it gives, not the file's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concepts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ConditionKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimators: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors: Option<Vec<VectorKind>>,
}

/// What the CAA vectors of one kind keep of the grid (`[per_vector.plain]`): only these of
/// the grid's conditions and map estimators, e.g. the paper's plain vectors in Table 1
/// only and the letter-balanced ones through every ablation. RepE vectors (one kind)
/// are not affected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ConditionKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimators: Option<Vec<String>>,
}

/// What a profile changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub targets: Option<Vec<String>>,
    pub sources: Option<Vec<String>>,
    pub concepts: Option<Vec<String>>,
    pub conditions: Option<Vec<ConditionKind>>,
    pub estimators: Option<Vec<String>>,
    pub betas: Option<Vec<Beta>>,
    pub concept_betas: Option<BTreeMap<String, Vec<Beta>>>,
    pub auto_betas: Option<Vec<f64>>,
    pub rescale_transfers: Option<bool>,
    pub vectors: Option<Vec<VectorKind>>,
    pub evaluations: Option<Vec<String>>,
    pub judge: Option<String>,
    pub sizes: Option<SizesOverride>,
    /// The profile's scopes per evaluation; a profile does not inherit the file's scopes
    /// (they are written for the file's lists), so without this every evaluation has the
    /// profile's whole grid.
    pub per_evaluation: Option<BTreeMap<String, EvaluationScope>>,
    /// The profile's scopes per vector kind (not inherited either).
    pub per_vector: Option<BTreeMap<VectorKind, VectorScope>>,
}

/// The experiment file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub targets: Vec<String>,
    pub sources: Vec<String>,
    pub concepts: Vec<String>,
    #[serde(default = "default_conditions")]
    pub conditions: Vec<ConditionKind>,
    #[serde(default = "default_estimators")]
    pub estimators: Vec<String>,
    pub betas: Vec<Beta>,
    /// Betas of single concepts instead of `betas` (RepE vectors have unit norm, CAA's
    /// the scale of the hidden states; a direction's sign may need flipping).
    #[serde(default)]
    pub concept_betas: BTreeMap<String, Vec<Beta>>,
    /// Candidates of `auto` betas (default [`DEFAULT_AUTO_BETAS`]).
    #[serde(default)]
    pub auto_betas: Option<Vec<f64>>,
    /// Rescale every vector moved into the target (transfers, random T, consensus) to the
    /// norm of the target's own vector, keeping its direction (default false: the paper's
    /// `beta * (sv @ T)`). RepE vectors are unit directions, but `sv @ T` has the norm of
    /// the map's scale between the models (measured 0.007 from Gemma3 into Qwen 0.5B).
    #[serde(default)]
    pub rescale_transfers: bool,
    /// Plain and/or letter-balanced CAA vectors (default: plain).
    #[serde(default = "default_vectors")]
    pub vectors: Vec<VectorKind>,
    #[serde(default = "default_evaluations")]
    pub evaluations: Vec<String>,
    /// Per evaluation, the part of the grid it runs ([`EvaluationScope`]); default: all.
    #[serde(default)]
    pub per_evaluation: BTreeMap<String, EvaluationScope>,
    /// Per kind of CAA vector, the part of the grid it runs ([`VectorScope`]); default: all.
    #[serde(default)]
    pub per_vector: BTreeMap<VectorKind, VectorScope>,
    /// The local judge of `open-ended` (default qwen2.5-coder-1.5b-instruct).
    #[serde(default)]
    pub judge: Option<String>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub layers: BTreeMap<String, usize>,
    pub sizes: Sizes,
    /// (weak, strong) model pairs for the weak-to-strong table: L-Cross from the weak
    /// model into the strong one against the weak model's own self modulation.
    #[serde(default)]
    pub weak_to_strong: Vec<[String; 2]>,
    /// Data directory (default: `$LCROSS_DATA`, else `~/.cache/lcross/data`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

fn default_conditions() -> Vec<ConditionKind> {
    ConditionKind::ALL.to_vec()
}

fn default_estimators() -> Vec<String> {
    vec!["ols".into()]
}

fn default_vectors() -> Vec<VectorKind> {
    vec![VectorKind::Plain]
}

fn default_evaluations() -> Vec<String> {
    vec!["ab".into()]
}

/// Evaluations the grid can run now.
/// `ab`: CAA's A/B metric per steering condition. `open-ended`: answers to the concept's
/// open-ended questions scored 0-10 by the local judge with the concept's rubric.
/// `harm`: HARM on the held-out AdvBench prompts (harmfulness). `fair`: FAIR's seeded
/// vignettes (fairness). `emotion`: answers to held-out scenarios scored 0-10 for the
/// emotion (happiness, fear). `map-similarity`: the paper's Table 4, each concept's map
/// against the other concepts' maps and a random map. `tsne`: the paper's Figure 3 per
/// model (the pair differences of the grid's concepts in 2-D), with how well the concepts
/// separate (k-NN purity).
pub const EVALUATIONS: &[&str] = &["ab", "open-ended", "harm", "fair", "emotion", "map-similarity", "tsne"];
/// Evaluations that generate answers (batched, stored) and score them.
pub const GENERATED: &[&str] = &["open-ended", "harm", "fair", "emotion"];
/// The judge of `open-ended` unless the experiment names one.
pub const DEFAULT_JUDGE: &str = "qwen2.5-coder-1.5b-instruct";
/// Map estimators of the `lcross` condition.
pub const ESTIMATORS: &[&str] = &["ols", "ridge", "procrustes", "reduced-rank", "affine", "mlp", "embedding"];

/// Most items a size may ask for (`extract_pairs`, `test_questions`, ...): more than any
/// dataset of the grid has, by far.
pub const MAX_ITEMS: usize = 1_000_000;
/// Most new tokens an answer may ask for.
pub const MAX_ANSWER_TOKENS: usize = 32_768;

/// An experiment with its profile applied and checked.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Experiment {
    pub name: String,
    pub profile: Option<String>,
    pub targets: Vec<String>,
    pub sources: Vec<String>,
    pub concepts: Vec<String>,
    pub conditions: Vec<ConditionKind>,
    pub estimators: Vec<String>,
    pub betas: Vec<Beta>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub concept_betas: BTreeMap<String, Vec<Beta>>,
    /// Candidates of `auto` betas; empty when no beta of the grid is `auto` (so numeric
    /// grids serialise, and hash, as before).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auto_betas: Vec<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rescale_transfers: bool,
    pub vectors: Vec<VectorKind>,
    pub evaluations: Vec<String>,
    /// Empty when every evaluation has the whole grid (so such grids serialise as before).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_evaluation: BTreeMap<String, EvaluationScope>,
    /// Empty when every vector kind has the whole grid.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_vector: BTreeMap<VectorKind, VectorScope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    pub seed: u64,
    pub layers: BTreeMap<String, usize>,
    pub sizes: Sizes,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weak_to_strong: Vec<[String; 2]>,
    pub data_dir: Option<PathBuf>,
}

/// What `lcross experiment cross` runs for one SOURCE:TARGET pair.
#[derive(Debug, Clone)]
pub struct CrossPlan<'a> {
    pub source: &'a str,
    pub target: &'a str,
    /// CAA behaviours; the concept-unrelated map of one is fitted on the next.
    pub behaviours: &'a [String],
    pub betas: &'a [f64],
    /// Layer per model id.
    pub layers: BTreeMap<String, usize>,
    /// Held-out pairs for the held-out condition (0: off).
    pub heldout_pairs: usize,
    /// The pooled condition (one map on all behaviours' corpora).
    pub pooled: bool,
    pub balance_letters: bool,
    pub extract_pairs: usize,
    pub test_questions: usize,
    pub data_dir: Option<PathBuf>,
}

impl ExperimentFile {
    /// The experiment of one pair of `lcross experiment cross`: none, self, L-Cross,
    /// concept-unrelated L-Cross, held-out and pooled L-Cross (when asked), random T and
    /// the identity, on the A/B metric (and map similarity with several behaviours).
    pub fn cross(p: &CrossPlan<'_>) -> Self {
        let mut conditions = vec![ConditionKind::None, ConditionKind::SelfModulation, ConditionKind::Lcross, ConditionKind::LcrossUnrelated];
        if p.heldout_pairs > 0 {
            conditions.push(ConditionKind::LcrossHeldout);
        }
        if p.pooled {
            conditions.push(ConditionKind::LcrossPooled);
        }
        conditions.extend([ConditionKind::RandomT, ConditionKind::Identity]);
        let mut evaluations = vec!["ab".to_string()];
        if p.behaviours.len() > 1 {
            evaluations.push("map-similarity".into());
        }
        let safe = |x: &str| x.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect::<String>();
        Self {
            name: format!("cross-{}-to-{}", safe(p.source), safe(p.target)),
            description: "lcross experiment cross".into(),
            targets: vec![p.target.into()],
            sources: vec![p.source.into()],
            concepts: p.behaviours.to_vec(),
            conditions,
            estimators: vec!["ols".into()],
            betas: p.betas.iter().map(|&b| b.into()).collect(),
            concept_betas: Default::default(),
            auto_betas: None,
            rescale_transfers: false,
            vectors: vec![if p.balance_letters { VectorKind::Balanced } else { VectorKind::Plain }],
            evaluations,
            per_evaluation: Default::default(),
            per_vector: Default::default(),
            seed: 0,
            layers: p.layers.clone(),
            sizes: Sizes {
                extract_pairs: p.extract_pairs,
                test_questions: p.test_questions,
                heldout_pairs: p.heldout_pairs,
                open_ended_questions: None,
                answer_tokens: None,
                eval_prompts: None,
            },
            judge: None,
            weak_to_strong: Vec::new(),
            data_dir: p.data_dir.clone(),
            profiles: Default::default(),
        }
    }

    /// Parse TOML text; errors name `origin` and TOML's line and column.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| EvalError::Config { origin: origin.into(), reason: e.to_string() })
    }

    /// Read an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = lcross_core::data::read_text(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Apply `profile` (if any) and check the result.
    pub fn resolve(&self, profile: Option<&str>) -> Result<Experiment> {
        let p = match profile {
            None => Profile::default(),
            Some(name) => self.profiles.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                EvalError::Config {
                    origin: format!("experiment `{}`", self.name),
                    reason: format!("no profile `{name}` (it has: {})", if known.is_empty() { "none".into() } else { known.join(", ") }),
                }
            })?,
        };
        let s = p.sizes.clone().unwrap_or_default();
        let e = Experiment {
            name: self.name.clone(),
            profile: profile.map(String::from),
            targets: p.targets.unwrap_or_else(|| self.targets.clone()),
            sources: p.sources.unwrap_or_else(|| self.sources.clone()),
            concepts: p.concepts.unwrap_or_else(|| self.concepts.clone()),
            conditions: p.conditions.unwrap_or_else(|| self.conditions.clone()),
            estimators: p.estimators.unwrap_or_else(|| self.estimators.clone()),
            betas: p.betas.unwrap_or_else(|| self.betas.clone()),
            concept_betas: p.concept_betas.unwrap_or_else(|| self.concept_betas.clone()),
            auto_betas: p.auto_betas.or_else(|| self.auto_betas.clone()).unwrap_or_else(|| DEFAULT_AUTO_BETAS.to_vec()),
            rescale_transfers: p.rescale_transfers.unwrap_or(self.rescale_transfers),
            vectors: p.vectors.unwrap_or_else(|| self.vectors.clone()),
            evaluations: p.evaluations.unwrap_or_else(|| self.evaluations.clone()),
            // scopes belong to the grid they are written for: a profile (its own lists) has
            // the scopes it gives, not the file's
            per_evaluation: if profile.is_some() { p.per_evaluation.unwrap_or_default() } else { self.per_evaluation.clone() },
            per_vector: if profile.is_some() { p.per_vector.unwrap_or_default() } else { self.per_vector.clone() },
            judge: p.judge.or_else(|| self.judge.clone()),
            seed: self.seed,
            layers: self.layers.clone(),
            sizes: Sizes {
                extract_pairs: s.extract_pairs.unwrap_or(self.sizes.extract_pairs),
                test_questions: s.test_questions.unwrap_or(self.sizes.test_questions),
                heldout_pairs: s.heldout_pairs.unwrap_or(self.sizes.heldout_pairs),
                open_ended_questions: s.open_ended_questions.or(self.sizes.open_ended_questions),
                answer_tokens: s.answer_tokens.or(self.sizes.answer_tokens),
                eval_prompts: s.eval_prompts.or(self.sizes.eval_prompts),
            },
            weak_to_strong: self.weak_to_strong.clone(),
            data_dir: self.data_dir.clone(),
        };
        let mut e = e;
        if !e.concepts.iter().any(|c| e.betas_for(c).iter().any(|b| b.is_auto())) {
            e.auto_betas.clear();
        }
        if let Some(m) = e.per_evaluation.keys().find(|m| !EVALUATIONS.contains(&m.as_str())) {
            return Err(EvalError::Config {
                origin: format!("experiment `{}`", e.name),
                reason: format!("`per_evaluation.{m}` names no evaluation (known: {})", EVALUATIONS.join(", ")),
            });
        }
        // scopes of evaluations (vector kinds) this grid does not run change nothing: drop
        // them, so such a grid resolves (and hashes) as one without them
        let evaluations = e.evaluations.clone();
        e.per_evaluation.retain(|m, scope| evaluations.contains(m) && *scope != EvaluationScope::default());
        let vectors = e.vectors.clone();
        e.per_vector.retain(|v, scope| vectors.contains(v) && *scope != VectorScope::default());
        e.check()?;
        Ok(e)
    }
}

impl Experiment {
    /// Check the experiment against the models it names, without loading weights: every
    /// target, source, judge and weak-to-strong model is a known id or a GGUF file or
    /// model folder that exists, and every `layers` entry is within its model's depth
    /// (read from the file's header; `layers` may name models of other profiles). A known
    /// id not fetched yet passes (its depth is
    /// checked once it is there): `--plan` runs where the models are not.
    pub fn check_models(&self) -> Result<()> {
        let bad = |m: String| Err(EvalError::Config { origin: format!("experiment `{}`", self.name), reason: m });
        let named =
            self.targets.iter().map(|m| ("targets", m)).chain(self.sources.iter().map(|m| ("sources", m))).chain(self.judge.iter().map(|m| ("judge", m)));
        let pairs = self.weak_to_strong.iter().flat_map(|p| p.iter()).map(|m| ("weak_to_strong", m));
        // `layers` may name models of other profiles, but each must be a model.
        let layered = self.layers.keys().map(|m| ("layers", m));
        for (field, spec) in named.chain(pairs).chain(layered) {
            if lcross_model::registry::known(spec).is_some() {
                continue;
            }
            if let Err(reason) = lcross_model::registry::resolve(spec) {
                let known: Vec<&str> = lcross_model::KNOWN_MODELS.iter().map(|k| k.id).collect();
                return bad(format!("`{field}`: model `{spec}`: {reason} (known ids: {})", known.join(", ")));
            }
        }
        for (spec, &layer) in &self.layers {
            let fetched = lcross_model::registry::resolve(spec).is_ok();
            if !fetched {
                continue;
            }
            let depth = lcross_model::registry::depth_of(spec)?;
            if layer >= depth {
                return bad(format!("`layers.{spec}` = {layer} is past the model's depth: it has layers 0..={}", depth - 1));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(EvalError::Config { origin: format!("experiment `{}`", self.name), reason: m });
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return bad("`name` must be letters, digits, `-`, `_` or `.` (it names the results directory)".into());
        }
        for (field, list) in [("targets", &self.targets), ("concepts", &self.concepts), ("estimators", &self.estimators), ("evaluations", &self.evaluations)] {
            if list.is_empty() {
                return bad(format!("`{field}` is empty"));
            }
        }
        if self.vectors.is_empty() {
            return bad("`vectors` is empty (plain, balanced)".into());
        }
        if self.conditions.is_empty() {
            return bad("`conditions` is empty".into());
        }
        if self.conditions.iter().any(|c| c.needs_source()) && self.sources.is_empty() {
            return bad("transfer conditions need at least one model in `sources`".into());
        }
        if let Some(c) = self.concepts.iter().find(|c| !CAA_BEHAVIOURS.contains(&c.as_str()) && !is_repe(c)) {
            return bad(format!("unknown concept `{c}` (known: {}, {})", CAA_BEHAVIOURS.join(", "), REPE_CONCEPTS.join(", ")));
        }
        for (c, betas) in &self.concept_betas {
            if !self.concepts.contains(c) && !CAA_BEHAVIOURS.contains(&c.as_str()) && !is_repe(c) {
                return bad(format!("`concept_betas` names unknown concept `{c}`"));
            }
            if betas.is_empty() || betas.iter().any(|b| b.value().is_some_and(|x| !x.is_finite())) {
                return bad(format!("`concept_betas.{c}` must hold finite numbers or \"auto\""));
            }
        }
        if self.evaluations.iter().any(|m| GENERATED[1..].contains(&m.as_str())) && self.sizes.eval_prompts == Some(0) {
            return bad("`sizes.eval_prompts` must be at least 1".into());
        }
        // A family's name, with its setting where it takes one (`ridge:0.5`, `mlp:256`).
        let known_estimator = |e: &str| ESTIMATORS.contains(&e.split(':').next().unwrap_or(e)) && lcross_core::maps::Estimator::parse(e).is_some();
        if let Some(e) = self.estimators.iter().find(|e| !known_estimator(e)) {
            return bad(format!("unknown estimator `{e}` (known: {})", ESTIMATORS.join(", ")));
        }
        if let Some(e) = self.evaluations.iter().find(|e| !EVALUATIONS.contains(&e.as_str())) {
            return bad(format!("evaluation `{e}` is not in the grid yet (available: {})", EVALUATIONS.join(", ")));
        }
        let unknown_estimator = |list: &Option<Vec<String>>| list.iter().flatten().find(|x| !known_estimator(x)).cloned();
        for (m, scope) in &self.per_evaluation {
            if let Some(x) = unknown_estimator(&scope.estimators) {
                return bad(format!("`per_evaluation.{m}.estimators`: unknown estimator `{x}` (known: {})", ESTIMATORS.join(", ")));
            }
            if let Some(c) = scope.concepts.iter().flatten().find(|c| !CAA_BEHAVIOURS.contains(&c.as_str()) && !is_repe(c)) {
                return bad(format!("`per_evaluation.{m}.concepts`: unknown concept `{c}`"));
            }
            let kept = |field: &str| match field {
                "concepts" => !self.concepts_for(m).is_empty(),
                "conditions" => scope.conditions.as_ref().is_none_or(|k| self.conditions.iter().any(|c| k.contains(c))),
                "estimators" => scope.estimators.as_ref().is_none_or(|k| self.estimators.iter().any(|x| k.contains(x))),
                _ => scope.vectors.as_ref().is_none_or(|k| self.vectors.iter().any(|v| k.contains(v))),
            };
            if let Some(field) = ["concepts", "conditions", "estimators", "vectors"].into_iter().find(|f| !kept(f)) {
                return bad(format!("`per_evaluation.{m}.{field}` keeps none of the grid's {field} (for `{m}`), so `{m}` would have no cells (drop `{m}` from `evaluations` instead)"));
            }
        }
        for (v, scope) in &self.per_vector {
            if let Some(x) = unknown_estimator(&scope.estimators) {
                return bad(format!("`per_vector.{}.estimators`: unknown estimator `{x}` (known: {})", v.name(), ESTIMATORS.join(", ")));
            }
            if scope.conditions.as_ref().is_some_and(|k| !self.conditions.iter().any(|c| k.contains(c)))
                || scope.estimators.as_ref().is_some_and(|k| !self.estimators.iter().any(|x| k.contains(x)))
            {
                return bad(format!(
                    "`per_vector.{}` keeps none of the grid's conditions or estimators (drop `{}` from `vectors` instead)",
                    v.name(),
                    v.name()
                ));
            }
        }
        if self.betas.is_empty() || self.betas.iter().any(|b| b.value().is_some_and(|x| !x.is_finite())) {
            return bad("`betas` must hold finite numbers or \"auto\"".into());
        }
        // Betas scale f32 vectors: past f32's range every steered state is infinite.
        let beyond_f32 = |x: f64| x.abs() > f32::MAX as f64;
        for (field, betas) in
            std::iter::once(("betas".to_string(), &self.betas)).chain(self.concept_betas.iter().map(|(c, b)| (format!("concept_betas.{c}"), b)))
        {
            if let Some(x) = betas.iter().filter_map(|b| b.value()).find(|&x| beyond_f32(x)) {
                return bad(format!("`{field}`: {x:e} is beyond f32's range (betas scale f32 vectors)"));
            }
        }
        if let Some(x) = self.auto_betas.iter().find(|&&x| beyond_f32(x)) {
            return bad(format!("`auto_betas`: {x:e} is beyond f32's range"));
        }
        // A repeated entry would double cells (and their cost) without a new number.
        fn repeated<T: PartialEq + std::fmt::Debug>(list: &[T]) -> Option<&T> {
            list.iter().enumerate().find(|(i, x)| list[..*i].contains(x)).map(|(_, x)| x)
        }
        let conditions: Vec<&str> = self.conditions.iter().map(|c| c.name()).collect();
        let vectors: Vec<&str> = self.vectors.iter().map(|v| v.name()).collect();
        for (field, list) in [
            ("targets", self.targets.iter().map(String::as_str).collect::<Vec<_>>()),
            ("sources", self.sources.iter().map(String::as_str).collect()),
            ("concepts", self.concepts.iter().map(String::as_str).collect()),
            ("estimators", self.estimators.iter().map(String::as_str).collect()),
            ("evaluations", self.evaluations.iter().map(String::as_str).collect()),
            ("conditions", conditions),
            ("vectors", vectors),
        ] {
            if let Some(x) = repeated(&list) {
                return bad(format!("`{field}` lists `{x}` twice (it would run every cell of it twice)"));
            }
        }
        for (field, betas) in
            std::iter::once(("betas".to_string(), &self.betas)).chain(self.concept_betas.iter().map(|(c, b)| (format!("concept_betas.{c}"), b)))
        {
            if let Some(b) = repeated(betas) {
                return bad(format!("`{field}` lists {b:?} twice"));
            }
        }
        // Sizes far past any dataset: a typo (an extra zero or three), not a plan.
        let s = &self.sizes;
        for (field, n, most) in [
            ("extract_pairs", Some(s.extract_pairs), MAX_ITEMS),
            ("test_questions", Some(s.test_questions), MAX_ITEMS),
            ("heldout_pairs", Some(s.heldout_pairs), MAX_ITEMS),
            ("open_ended_questions", s.open_ended_questions, MAX_ITEMS),
            ("eval_prompts", s.eval_prompts, MAX_ITEMS),
            ("answer_tokens", s.answer_tokens, MAX_ANSWER_TOKENS),
        ] {
            if let Some(n) = n.filter(|&n| n > most) {
                return bad(format!("`sizes.{field}` = {n} is more than {most}"));
            }
        }
        if s.answer_tokens == Some(0) {
            return bad("`sizes.answer_tokens` must be at least 1".into());
        }
        if self.concepts.iter().any(|c| self.betas_for(c).iter().any(|b| b.is_auto()))
            && (self.auto_betas.is_empty() || self.auto_betas.iter().any(|b| !b.is_finite() || *b == 0.0))
        {
            return bad("`auto_betas` must hold finite, non-zero numbers (the candidates of `auto` betas)".into());
        }
        if self.sizes.extract_pairs == 0 || self.sizes.test_questions == 0 {
            return bad("`sizes.extract_pairs` and `sizes.test_questions` must be at least 1".into());
        }
        for k in [ConditionKind::LcrossHeldout, ConditionKind::Consensus, ConditionKind::LcrossAutoLayer, ConditionKind::LcrossAutoSteer] {
            if self.conditions.contains(&k) && self.sizes.heldout_pairs == 0 {
                return bad(format!("`{}` needs `sizes.heldout_pairs` > 0 (it uses the held-out maps)", k.name()));
            }
        }
        if self.conditions.contains(&ConditionKind::Consensus) && self.sources.is_empty() {
            return bad("`consensus` needs models in `sources`".into());
        }
        if self.evaluations.iter().any(|m| m == "open-ended") && self.sizes.open_ended_questions.unwrap_or(0) == 0 {
            return bad("`open-ended` needs `sizes.open_ended_questions` > 0".into());
        }
        if self.evaluations.iter().any(|m| m == "map-similarity") && self.concepts.len() < 2 {
            return bad("`map-similarity` compares the maps of at least two concepts".into());
        }
        if self.conditions.contains(&ConditionKind::LcrossUnrelated) && self.concepts.len() < 2 {
            return bad("`lcross-unrelated` needs at least two concepts (the map of one is fitted on the next)".into());
        }
        Ok(())
    }

    /// The betas of `concept`'s cells: its `concept_betas` entry, else `betas`.
    pub fn betas_for(&self, concept: &str) -> &[Beta] {
        self.concept_betas.get(concept).unwrap_or(&self.betas)
    }

    /// The concepts `metric` has cells for: the grid's that it measures ([`metric_applies`])
    /// and its `per_evaluation` scope keeps.
    pub fn concepts_for(&self, metric: &str) -> Vec<&String> {
        let keep = self.per_evaluation.get(metric).and_then(|s| s.concepts.as_ref());
        self.concepts.iter().filter(|c| metric_applies(metric, c) && keep.is_none_or(|k| k.contains(c))).collect()
    }

    /// The vector kinds of `metric`'s cells of `concept`: the grid's (those
    /// `per_evaluation` keeps) for CAA behaviours, plain for RepE concepts (their pairs
    /// have no answer letters to balance).
    pub fn vectors_for(&self, metric: &str, concept: &str) -> Vec<VectorKind> {
        if is_repe(concept) {
            return vec![VectorKind::Plain];
        }
        let keep = self.per_evaluation.get(metric).and_then(|s| s.vectors.as_ref());
        self.vectors.iter().copied().filter(|v| keep.is_none_or(|k| k.contains(v))).collect()
    }

    /// The conditions of `metric`'s cells of `concept` with `vector`: the grid's, those
    /// the evaluation's scope and (CAA vectors) the vector kind's scope keep.
    pub fn conditions_for(&self, metric: &str, concept: &str, vector: VectorKind) -> Vec<ConditionKind> {
        let by_metric = self.per_evaluation.get(metric).and_then(|s| s.conditions.as_ref());
        let by_vector = if is_repe(concept) { None } else { self.per_vector.get(&vector).and_then(|s| s.conditions.as_ref()) };
        self.conditions.iter().copied().filter(|c| by_metric.is_none_or(|k| k.contains(c)) && by_vector.is_none_or(|k| k.contains(c))).collect()
    }

    /// The map estimators of `metric`'s `lcross` cells of `concept` with `vector`, kept as
    /// [`Experiment::conditions_for`] keeps conditions.
    pub fn estimators_for(&self, metric: &str, concept: &str, vector: VectorKind) -> Vec<String> {
        let by_metric = self.per_evaluation.get(metric).and_then(|s| s.estimators.as_ref());
        let by_vector = if is_repe(concept) { None } else { self.per_vector.get(&vector).and_then(|s| s.estimators.as_ref()) };
        self.estimators.iter().filter(|x| by_metric.is_none_or(|k| k.contains(x)) && by_vector.is_none_or(|k| k.contains(x))).cloned().collect()
    }

    /// Prompts per `harm` / `emotion` cell and samples per `fair` cell.
    pub fn eval_prompts(&self) -> usize {
        self.sizes.eval_prompts.unwrap_or(lcross_core::dataset::REPE_EVAL_COUNT)
    }

    /// Directory name of the run: the name, plus the profile.
    pub fn run_name(&self) -> String {
        match &self.profile {
            Some(p) => format!("{}-{p}", self.name),
            None => self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
name = "t"
targets = ["a"]
sources = ["b"]
concepts = ["refusal", "sycophancy"]
betas = [4.0]
[sizes]
extract_pairs = 16
test_questions = 10
heldout_pairs = 8
[profiles.tiny]
concepts = ["refusal", "survival-instinct"]
sizes = { test_questions = 2 }
"#;

    #[test]
    fn profiles_override_and_defaults_fill_in() {
        let f = ExperimentFile::parse(TEXT, "t.toml").unwrap();
        let full = f.resolve(None).unwrap();
        assert_eq!(full.conditions, ConditionKind::ALL.to_vec());
        assert_eq!(full.estimators, ["ols"]);
        assert_eq!(full.vectors, [VectorKind::Plain]);
        let tiny = f.resolve(Some("tiny")).unwrap();
        assert_eq!(tiny.concepts, ["refusal", "survival-instinct"]);
        assert_eq!(
            tiny.sizes,
            Sizes { extract_pairs: 16, test_questions: 2, heldout_pairs: 8, open_ended_questions: None, answer_tokens: None, eval_prompts: None }
        );
        assert_eq!(tiny.run_name(), "t-tiny");
        assert!(f.resolve(Some("huge")).unwrap_err().to_string().contains("no profile `huge` (it has: tiny)"));
    }

    #[test]
    fn the_shipped_experiment_and_every_profile_resolve() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/paper-local.toml");
        let f = ExperimentFile::load(&path).unwrap();
        f.resolve(None).unwrap();
        assert!(f.profiles.len() >= 4, "tiny, quick, sweep, judged");
        for name in f.profiles.keys() {
            f.resolve(Some(name)).unwrap_or_else(|e| panic!("profile {name}: {e}"));
        }
    }

    #[test]
    fn auto_betas_parse_and_numeric_grids_serialise_as_before() {
        let f = ExperimentFile::parse(&TEXT.replace("betas = [4.0]", "betas = [\"auto\", 4, -2.5]"), "t.toml").unwrap();
        let e = f.resolve(None).unwrap();
        assert_eq!(e.betas, [Beta::Auto, Beta::Value(4.0), Beta::Value(-2.5)]);
        assert_eq!(e.auto_betas, DEFAULT_AUTO_BETAS);
        assert_eq!(e.betas.iter().map(|b| b.key_text()).collect::<Vec<_>>(), ["auto", "4.0", "-2.5"]);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["betas"], serde_json::json!(["auto", 4.0, -2.5]));
        // a numeric grid: betas are numbers and no `auto_betas` field (run hashes unchanged)
        let numeric = serde_json::to_value(ExperimentFile::parse(TEXT, "t.toml").unwrap().resolve(None).unwrap()).unwrap();
        assert_eq!(numeric["betas"], serde_json::json!([4.0]));
        assert!(numeric.get("auto_betas").is_none(), "{numeric}");
        let e = ExperimentFile::parse(&TEXT.replace("betas = [4.0]", "betas = [\"big\"]"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("big") && e.contains("auto"), "{e}");
        let e = ExperimentFile::parse(&TEXT.replace("betas = [4.0]", "betas = [\"auto\"]\nauto_betas = [0.0, 2.0]"), "t.toml")
            .unwrap()
            .resolve(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("auto_betas"), "{e}");
        // a RepE concept's `auto` is chosen on its generated metric's dev prompts, so it resolves
        let e = ExperimentFile::parse(&TEXT.replace("betas = [4.0]", "betas = [\"auto\"]").replace("\"sycophancy\"]", "\"happiness\"]"), "t.toml")
            .unwrap()
            .resolve(None)
            .unwrap();
        assert_eq!(e.betas_for("happiness"), [Beta::Auto]);
        assert_eq!(e.auto_betas, DEFAULT_AUTO_BETAS);
    }

    #[test]
    fn mistakes_are_named() {
        let e = ExperimentFile::parse(&TEXT.replace("betas", "bettas"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("bettas"), "{e}");
        let e = ExperimentFile::parse(&TEXT.replace("\"sycophancy\"", "\"kindness\""), "t.toml").unwrap().resolve(None).unwrap_err().to_string();
        assert!(e.contains("unknown concept `kindness`"), "{e}");
        let e = ExperimentFile::parse(&TEXT.replace("name = \"t\"", "name = \"t\"\nconditions = [\"lcross\", \"magic\"]"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
        let e = ExperimentFile::parse(&TEXT.replace("[4.0]", "[]"), "t.toml").unwrap().resolve(None).unwrap_err().to_string();
        assert!(e.contains("betas"), "{e}");
    }
}
