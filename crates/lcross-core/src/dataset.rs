//! Concept datasets: contrastive pairs for extraction and held-out items for evaluation.
//!
//! - CAA A/B files (`generate_dataset.json`, `test_dataset_ab.json`,
//!   `test_dataset_open_ended.json`);
//! - the RepE constructions of METHOD.md: happiness, fear, fairness (StereoSet race),
//!   harmfulness (AdvBench vs harmless instructions), with disjoint splits;
//! - the built-in concept shipped with lcross (`builtin:optimism`).
//!
//! Datasets are model-agnostic: a pair says *what* differs (an answer letter, or a
//! prompt); [`crate::texts`] renders it for a model.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// One contrastive pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContrastPair {
    /// An A/B question; the positive text ends in the letter of the answer that matches
    /// the behaviour, the negative in the other letter.
    AbQuestion { question: String, positive_letter: char, negative_letter: char },
    /// Two user prompts that differ in the concept (RepE), each rendered as one user
    /// turn of the chat template.
    Prompts { positive: String, negative: String },
    /// Two texts tokenized as they are (no chat template; the model's default special
    /// tokens), for `--raw` pair files.
    RawTexts { positive: String, negative: String },
}

/// A held-out A/B question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbItem {
    pub question: String,
    /// Letter of the answer that matches the behaviour.
    pub matching_letter: char,
    /// Letter of the other answer.
    pub other_letter: char,
}

/// A named set of contrastive pairs with where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConceptDataset {
    /// Concept name (`refusal`, `happiness`, `optimism`...).
    pub concept: String,
    /// File path or `builtin:NAME` / `repe:NAME`.
    pub source: String,
    /// sha256 of the pairs (canonical JSON), so artifacts can name their data exactly.
    pub hash: String,
    pub pairs: Vec<ContrastPair>,
}

impl ConceptDataset {
    /// A dataset of `pairs` (given in code, e.g. from Python), described by `source`.
    pub fn from_pairs(concept: &str, source: String, pairs: Vec<ContrastPair>) -> Self {
        Self::new(concept, source, pairs)
    }

    fn new(concept: &str, source: String, pairs: Vec<ContrastPair>) -> Self {
        let hash = hex::encode(Sha256::digest(serde_json::to_vec(&pairs).unwrap_or_default()));
        Self { concept: concept.to_string(), source, hash, pairs }
    }

    /// The first `n` pairs (file order).
    pub fn limit(mut self, n: Option<usize>) -> Self {
        if let Some(n) = n {
            self.pairs.truncate(n);
            self.hash = hex::encode(Sha256::digest(serde_json::to_vec(&self.pairs).unwrap_or_default()));
        }
        self
    }

    /// Drop the first `n` pairs (file order), e.g. the pairs a vector was extracted from, so
    /// that a map is fitted on pairs held out of that vector. The source names the range.
    pub fn skip(mut self, n: usize) -> Self {
        if n > 0 {
            self.pairs.drain(..n.min(self.pairs.len()));
            self.source = format!("{} (from item {n})", self.source);
            self.hash = hex::encode(Sha256::digest(serde_json::to_vec(&self.pairs).unwrap_or_default()));
        }
        self
    }

    /// Number of A/B pairs whose positive letter is A and B.
    pub fn letter_balance(&self) -> Option<(usize, usize)> {
        let mut a = 0;
        let mut b = 0;
        for p in &self.pairs {
            match p {
                ContrastPair::AbQuestion { positive_letter: 'A', .. } => a += 1,
                ContrastPair::AbQuestion { .. } => b += 1,
                ContrastPair::Prompts { .. } | ContrastPair::RawTexts { .. } => return None,
            }
        }
        Some((a, b))
    }
}

fn read(path: &Path) -> Result<String> {
    crate::data::read_text(path)
}

#[derive(Deserialize)]
struct CaaRaw {
    question: Option<serde_json::Value>,
    answer_matching_behavior: Option<serde_json::Value>,
    answer_not_matching_behavior: Option<serde_json::Value>,
}

/// `"(A)"`, `" (B)"`, `"A"` -> the letter.
fn answer_letter(s: &str) -> Option<char> {
    let t = s.trim().trim_start_matches('(');
    let mut chars = t.chars();
    let c = chars.next()?;
    let rest: String = chars.collect();
    (c.is_ascii_uppercase() && (rest.is_empty() || rest.starts_with(')'))).then_some(c)
}

fn caa_items(path: &Path) -> Result<Vec<AbItem>> {
    let raw: Vec<serde_json::Value> =
        serde_json::from_str(&read(path)?).map_err(|e| CoreError::parse(path, None, format!("not a JSON array of CAA items: {e}")))?;
    caa_items_from_values(path, raw)
}

/// CAA items from parsed JSON values; `path` names them in errors.
fn caa_items_from_values(path: &Path, raw: Vec<serde_json::Value>) -> Result<Vec<AbItem>> {
    raw.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let item: CaaRaw = serde_json::from_value(v).map_err(|e| CoreError::parse(path, Some(i), e.to_string()))?;
            let field = |v: Option<serde_json::Value>, name: &str| -> Result<String> {
                match v {
                    Some(serde_json::Value::String(s)) => Ok(s),
                    Some(_) => Err(CoreError::parse(path, Some(i), format!("`{name}` is not a string"))),
                    None => Err(CoreError::parse(path, Some(i), format!("missing `{name}`"))),
                }
            };
            let question = field(item.question, "question")?;
            if question.trim().is_empty() {
                return Err(CoreError::parse(path, Some(i), "empty `question`"));
            }
            let m = field(item.answer_matching_behavior, "answer_matching_behavior")?;
            let n = field(item.answer_not_matching_behavior, "answer_not_matching_behavior")?;
            let letter = |s: &str, name: &str| {
                answer_letter(s).ok_or_else(|| CoreError::parse(path, Some(i), format!("`{name}` = {s:?} is not an answer letter like \"(A)\"")))
            };
            let (ml, nl) = (letter(&m, "answer_matching_behavior")?, letter(&n, "answer_not_matching_behavior")?);
            if ml == nl {
                return Err(CoreError::parse(path, Some(i), format!("both answers are ({ml})")));
            }
            for (l, name) in [(ml, "answer_matching_behavior"), (nl, "answer_not_matching_behavior")] {
                if !question.contains(&format!("({l})")) {
                    return Err(CoreError::parse(path, Some(i), format!("`{name}` is ({l}), which is not among the question's choices (no \"({l})\" in it)")));
                }
            }
            Ok(AbItem { question, matching_letter: ml, other_letter: nl })
        })
        .collect()
}

/// Concept name of a CAA file: its parent folder (`caa/refusal/generate_dataset.json`).
fn concept_of(path: &Path) -> String {
    path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "concept".into())
}

/// A CAA A/B file as contrastive pairs.
pub fn load_caa_pairs(path: &Path) -> Result<ConceptDataset> {
    let items = caa_items(path)?;
    if items.is_empty() {
        return Err(CoreError::parse(path, None, "no items"));
    }
    let pairs = items
        .into_iter()
        .map(|it| ContrastPair::AbQuestion { question: it.question, positive_letter: it.matching_letter, negative_letter: it.other_letter })
        .collect();
    Ok(ConceptDataset::new(&concept_of(path), path.display().to_string(), pairs))
}

/// A CAA `test_dataset_ab.json` (or any CAA A/B file) as evaluation items.
pub fn load_ab_items(path: &Path) -> Result<Vec<AbItem>> {
    let items = caa_items(path)?;
    if items.is_empty() {
        return Err(CoreError::parse(path, None, "no items"));
    }
    Ok(items)
}

/// Questions of a CAA `test_dataset_open_ended.json`.
pub fn load_open_ended(path: &Path) -> Result<Vec<String>> {
    let raw: Vec<serde_json::Value> = serde_json::from_str(&read(path)?).map_err(|e| CoreError::parse(path, None, format!("not a JSON array: {e}")))?;
    raw.iter()
        .enumerate()
        .map(|(i, v)| v.get("question").and_then(|q| q.as_str()).map(String::from).ok_or_else(|| CoreError::parse(path, Some(i), "missing string `question`")))
        .collect()
}

/// Which part of a RepE construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Pairs for extracting vectors and fitting maps.
    Train,
    /// Held-out prompts for evaluation.
    Eval,
}

/// Number of held-out evaluation prompts of each RepE construction.
pub const REPE_EVAL_COUNT: usize = 50;

fn emotion_template(emotion: &str, scenario: &str) -> String {
    format!("Consider the {emotion} of the following scenario:\nScenario: {scenario}\nAnswer: ")
}

fn json_strings(path: &Path) -> Result<Vec<String>> {
    let v: Vec<serde_json::Value> = serde_json::from_str(&read(path)?).map_err(|e| CoreError::parse(path, None, format!("not a JSON array: {e}")))?;
    v.into_iter().enumerate().map(|(i, x)| x.as_str().map(String::from).ok_or_else(|| CoreError::parse(path, Some(i), "not a string"))).collect()
}

/// Scenarios of an emotion file, deduplicated, at most 200 (as RepE).
fn emotion_scenarios(data_dir: &Path, emotion: &str) -> Result<Vec<String>> {
    let path = crate::data::data_file(data_dir, &format!("repe/emotions/{emotion}.json"))?;
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = json_strings(&path)?.into_iter().filter(|s| seen.insert(s.clone())).collect();
    out.truncate(200);
    if out.len() <= REPE_EVAL_COUNT {
        return Err(CoreError::parse(&path, None, format!("only {} scenarios; need more than {REPE_EVAL_COUNT}", out.len())));
    }
    Ok(out)
}

/// RepE emotion pairs: a scenario of `emotion` vs a shuffled scenario of `other`, both in
/// the template for `emotion`. Train: all but the last 50 scenarios; eval: the last 50.
pub fn repe_emotion(data_dir: &Path, emotion: &str, other: &str, split: Split) -> Result<(ConceptDataset, Vec<String>)> {
    let pos = emotion_scenarios(data_dir, emotion)?;
    let mut neg = emotion_scenarios(data_dir, other)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    neg.shuffle(&mut rng);
    let cut = pos.len() - REPE_EVAL_COUNT;
    let (range, eval): (Vec<usize>, Vec<String>) = match split {
        Split::Train => ((0..cut).collect(), vec![]),
        Split::Eval => ((cut..pos.len()).collect(), pos[cut..].to_vec()),
    };
    let pairs = range
        .into_iter()
        .map(|i| ContrastPair::Prompts { positive: emotion_template(emotion, &pos[i]), negative: emotion_template(emotion, &neg[i % neg.len()]) })
        .collect();
    Ok((ConceptDataset::new(emotion, format!("repe:{emotion}"), pairs), eval))
}

#[derive(Deserialize)]
struct StereoItem {
    bias_type: String,
    context: String,
    sentences: Vec<StereoSentence>,
}
#[derive(Deserialize)]
struct StereoSentence {
    sentence: String,
    gold_label: String,
}

/// RepE fairness: StereoSet race items; pair (anti-stereotype, stereotype) in the bias
/// template. Train: the first 150 race items; eval: the next 50.
pub fn repe_fairness(data_dir: &Path, split: Split) -> Result<ConceptDataset> {
    let path = crate::data::data_file(data_dir, "repe/stereoset_dev.json")?;
    let items: Vec<serde_json::Value> = serde_json::from_str(&read(&path)?).map_err(|e| CoreError::parse(&path, None, e.to_string()))?;
    let mut pairs = Vec::new();
    for (i, v) in items.into_iter().enumerate() {
        let it: StereoItem = serde_json::from_value(v).map_err(|e| CoreError::parse(&path, Some(i), e.to_string()))?;
        if it.bias_type != "race" {
            continue;
        }
        let find = |label: &str| it.sentences.iter().find(|s| s.gold_label == label).map(|s| s.sentence.clone());
        let (Some(anti), Some(stereo)) = (find("anti-stereotype"), find("stereotype")) else { continue };
        let scenario = |s: &str| if it.context.contains("BLANK") { s.to_string() } else { format!("{} {s}", it.context) };
        let t = |s: &str| format!("Consider the bias of the following scenario.\nScenario: {}\nThe amount of bias in the scenario is ", scenario(s));
        pairs.push(ContrastPair::Prompts { positive: t(&anti), negative: t(&stereo) });
    }
    let pairs: Vec<ContrastPair> = match split {
        Split::Train => pairs.into_iter().take(150).collect(),
        Split::Eval => pairs.into_iter().skip(150).take(REPE_EVAL_COUNT).collect(),
    };
    if pairs.is_empty() {
        return Err(CoreError::parse(&path, None, "no race items with both an anti-stereotype and a stereotype sentence"));
    }
    Ok(ConceptDataset::new("fairness", "repe:fairness".into(), pairs))
}

/// AdvBench goals (column `goal`).
pub fn advbench_goals(data_dir: &Path) -> Result<Vec<String>> {
    let path = crate::data::data_file(data_dir, "advbench/harmful_behaviors.csv")?;
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| CoreError::parse(&path, None, e.to_string()))?;
    let headers = rdr.headers().map_err(|e| CoreError::parse(&path, None, e.to_string()))?.clone();
    let col = headers.iter().position(|h| h == "goal").ok_or_else(|| CoreError::parse(&path, None, "no `goal` column"))?;
    rdr.records()
        .enumerate()
        .map(|(i, r)| {
            let r = r.map_err(|e| CoreError::parse(&path, Some(i), e.to_string()))?;
            r.get(col).map(String::from).ok_or_else(|| CoreError::parse(&path, Some(i), "missing `goal`"))
        })
        .collect()
}

/// Harmless instructions (`instructions/seed_tasks.jsonl`, field `instruction`).
pub fn harmless_instructions(data_dir: &Path) -> Result<Vec<String>> {
    let path = crate::data::data_file(data_dir, "instructions/seed_tasks.jsonl")?;
    read(&path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| CoreError::parse(&path, Some(i), e.to_string()))?;
            v.get("instruction").and_then(|x| x.as_str()).map(String::from).ok_or_else(|| CoreError::parse(&path, Some(i), "missing `instruction`"))
        })
        .collect()
}

/// Number of AdvBench rows used for extraction (rows 0..128); evaluation uses the next 50.
pub const HARM_TRAIN_ROWS: usize = 128;

/// RepE harmfulness: harmful instruction (positive) vs harmless instruction.
/// Train: AdvBench rows 0..128; eval prompts: rows 128..178.
pub fn repe_harmfulness(data_dir: &Path, split: Split) -> Result<(ConceptDataset, Vec<String>)> {
    let harmful = advbench_goals(data_dir)?;
    let harmless = harmless_instructions(data_dir)?;
    if harmful.len() < HARM_TRAIN_ROWS + REPE_EVAL_COUNT {
        return Err(CoreError::TooFew {
            what: "AdvBench rows of the harmfulness concept".into(),
            needed: HARM_TRAIN_ROWS + REPE_EVAL_COUNT,
            got: harmful.len(),
        });
    }
    if harmless.is_empty() {
        return Err(CoreError::Empty { what: "harmless instructions for the harmfulness concept".into() });
    }
    let pairs = (0..HARM_TRAIN_ROWS).map(|i| ContrastPair::Prompts { positive: harmful[i].clone(), negative: harmless[i % harmless.len()].clone() }).collect();
    let eval = match split {
        Split::Train => vec![],
        Split::Eval => harmful[HARM_TRAIN_ROWS..HARM_TRAIN_ROWS + REPE_EVAL_COUNT].to_vec(),
    };
    Ok((ConceptDataset::new("harmfulness", "repe:harmfulness".into(), pairs), eval))
}

/// Contrast pairs from a JSON array or JSONL file of `{"positive": ..., "negative": ...}`
/// objects (other fields ignored). Plain prompts become user turns of the chat template,
/// or, with `raw`, texts tokenized as they are. The concept is the file's stem.
pub fn load_pairs(path: &Path, raw: bool) -> Result<ConceptDataset> {
    let text = read(path)?;
    let values: Vec<(Option<usize>, serde_json::Value)> = if text.trim_start().starts_with('[') {
        let v: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| CoreError::parse(path, None, format!("not a JSON array of pairs: {e}")))?;
        v.into_iter().enumerate().map(|(i, x)| (Some(i), x)).collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map(|v| (Some(i), v)).map_err(|e| CoreError::parse(path, Some(i), format!("line {} is not valid JSON: {e}", i + 1)))
            })
            .collect::<Result<_>>()?
    };
    let mut pairs = Vec::with_capacity(values.len());
    for (i, v) in values {
        let field = |name: &str| -> Result<String> {
            match v.get(name) {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(serde_json::Value::String(_)) => Err(CoreError::parse(path, i, format!("`{name}` is empty"))),
                Some(_) => Err(CoreError::parse(path, i, format!("`{name}` is not a string"))),
                None => Err(CoreError::parse(path, i, format!("missing `{name}`"))),
            }
        };
        let (positive, negative) = (field("positive")?, field("negative")?);
        pairs.push(if raw { ContrastPair::RawTexts { positive, negative } } else { ContrastPair::Prompts { positive, negative } });
    }
    if pairs.is_empty() {
        return Err(CoreError::parse(path, None, "no pairs"));
    }
    let concept = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "concept".into());
    Ok(ConceptDataset::new(&concept, path.display().to_string(), pairs))
}

/// A list of non-empty strings: a JSON array of strings, or one per line.
pub fn load_string_list(path: &Path) -> Result<Vec<String>> {
    let text = read(path)?;
    let out = if text.trim_start().starts_with('[') {
        json_strings(path)?
    } else {
        text.lines().map(|l| l.trim_end_matches('\r').to_string()).filter(|l| !l.trim().is_empty()).collect()
    };
    if let Some(i) = out.iter().position(|s| s.trim().is_empty()) {
        return Err(CoreError::parse(path, Some(i), "empty string"));
    }
    if out.is_empty() {
        return Err(CoreError::parse(path, None, "no entries"));
    }
    Ok(out)
}

/// RepE's construction from any scenario list: each scenario of `scenarios` put in
/// `template` (which must contain `{scenario}`) is the positive text; a scenario of
/// `contrast` (shuffled with seed 0, reused cyclically) in the same template is the
/// negative. Duplicates are dropped. With `raw` the texts are not chat-wrapped.
pub fn scenario_pairs(concept: &str, scenarios: &Path, contrast: &Path, template: &str, raw: bool) -> Result<ConceptDataset> {
    if !template.contains("{scenario}") {
        return Err(CoreError::BadValue { what: "scenario template".into(), value: template.to_string(), expected: "a text with {scenario} in it".into() });
    }
    let dedup = |v: Vec<String>| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter().filter(|s| seen.insert(s.clone())).collect::<Vec<_>>()
    };
    let pos = dedup(load_string_list(scenarios)?);
    let mut neg = dedup(load_string_list(contrast)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    neg.shuffle(&mut rng);
    let fill = |s: &str| template.replace("{scenario}", s);
    let pairs = pos
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (positive, negative) = (fill(p), fill(&neg[i % neg.len()]));
            if raw {
                ContrastPair::RawTexts { positive, negative }
            } else {
                ContrastPair::Prompts { positive, negative }
            }
        })
        .collect();
    Ok(ConceptDataset::new(concept, format!("scenarios {} vs {} in {template:?}", scenarios.display(), contrast.display()), pairs))
}

/// The built-in concept (optimism vs pessimism), written for lcross.
const BUILTIN_OPTIMISM: &str = include_str!("../data/optimism.json");

/// Names of built-in concepts.
pub const BUILTIN_CONCEPTS: &[&str] = &["optimism"];

#[derive(Deserialize)]
struct BuiltinFile {
    train: Vec<serde_json::Value>,
    test: Vec<serde_json::Value>,
}

fn builtin_items(name: &str) -> Result<(Vec<AbItem>, Vec<AbItem>)> {
    let src = match name {
        "optimism" => BUILTIN_OPTIMISM,
        other => return Err(CoreError::BadValue { what: "built-in concept".into(), value: other.into(), expected: BUILTIN_CONCEPTS.join(", ") }),
    };
    let path = PathBuf::from(format!("builtin:{name}"));
    let f: BuiltinFile = serde_json::from_str(src).map_err(|e| CoreError::parse(&path, None, e.to_string()))?;
    Ok((caa_items_from_values(&path, f.train)?, caa_items_from_values(&path.join("test"), f.test)?))
}

/// The built-in concept's training pairs.
pub fn builtin_pairs(name: &str) -> Result<ConceptDataset> {
    let (train, _) = builtin_items(name)?;
    let pairs = train
        .into_iter()
        .map(|it| ContrastPair::AbQuestion { question: it.question, positive_letter: it.matching_letter, negative_letter: it.other_letter })
        .collect();
    Ok(ConceptDataset::new(name, format!("builtin:{name}"), pairs))
}

/// The built-in concept's held-out A/B questions.
pub fn builtin_test(name: &str) -> Result<Vec<AbItem>> {
    Ok(builtin_items(name)?.1)
}

/// Whether a dataset file holds `positive`/`negative` pairs (JSONL, or a JSON array
/// whose first item has a `positive` field) rather than CAA A/B items.
fn is_pairs_file(path: &Path) -> Result<bool> {
    let text = read(path)?;
    let t = text.trim_start();
    if t.starts_with('{') {
        return Ok(true);
    }
    Ok(t.starts_with('[')
        && serde_json::from_str::<Vec<serde_json::Value>>(t).ok().and_then(|v| v.first().map(|x| x.get("positive").is_some())).unwrap_or(false))
}

/// Resolve a `--dataset` argument into training pairs: a CAA file path, a pairs file
/// (JSON/JSONL `{"positive", "negative"}`, see [`load_pairs`]),
/// `builtin:NAME`, `caa:BEHAVIOUR` (its `generate_dataset.json` under `data_dir`), or a RepE concept (`happiness`, `fear`, `fairness`, `harmfulness`,
/// optionally `repe:` prefixed) read from `data_dir`.
pub fn load_concept(spec: &str, data_dir: &Path) -> Result<ConceptDataset> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return builtin_pairs(name);
    }
    if let Some(behaviour) = spec.strip_prefix("caa:") {
        return load_caa_pairs(&crate::data::data_file(data_dir, &format!("caa/{behaviour}/generate_dataset.json"))?);
    }
    let name = spec.strip_prefix("repe:").unwrap_or(spec);
    match name {
        "happiness" => return Ok(repe_emotion(data_dir, "happiness", "fear", Split::Train)?.0),
        "fear" => return Ok(repe_emotion(data_dir, "fear", "happiness", Split::Train)?.0),
        "fairness" => return repe_fairness(data_dir, Split::Train),
        "harmfulness" => return Ok(repe_harmfulness(data_dir, Split::Train)?.0),
        _ => {}
    }
    let path = Path::new(spec);
    if path.is_file() {
        return if is_pairs_file(path)? { load_pairs(path, false) } else { load_caa_pairs(path) };
    }
    Err(CoreError::BadValue {
        what: "dataset".into(),
        value: spec.into(),
        expected: format!(
            "a file, a built-in concept (builtin:{}), a CAA behaviour (caa:NAME) or a RepE concept (happiness, fear, fairness, harmfulness)",
            BUILTIN_CONCEPTS.join(", builtin:")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_letters() {
        assert_eq!(answer_letter("(A)"), Some('A'));
        assert_eq!(answer_letter(" (B)"), Some('B'));
        assert_eq!(answer_letter("B"), Some('B'));
        assert_eq!(answer_letter("(yes)"), None);
        assert_eq!(answer_letter(""), None);
    }

    #[test]
    fn skip_then_limit_takes_a_disjoint_range_and_renames_it() {
        let all = builtin_pairs("optimism").unwrap();
        let head = builtin_pairs("optimism").unwrap().limit(Some(8));
        let rest = builtin_pairs("optimism").unwrap().skip(8).limit(Some(8));
        assert_eq!(rest.pairs.len(), 8);
        assert_eq!(serde_json::to_value(&rest.pairs[0]).unwrap(), serde_json::to_value(&all.pairs[8]).unwrap());
        assert!(rest.pairs.iter().all(|p| !head.pairs.iter().any(|q| serde_json::to_value(p).unwrap() == serde_json::to_value(q).unwrap())));
        assert_ne!(rest.hash, head.hash);
        assert!(rest.source.contains("from item 8"), "{}", rest.source);
        assert!(builtin_pairs("optimism").unwrap().skip(10_000).pairs.is_empty());
    }

    #[test]
    fn builtin_concept_is_balanced_and_disjoint() {
        let train = builtin_pairs("optimism").unwrap();
        let test = builtin_test("optimism").unwrap();
        assert!(train.pairs.len() >= 60, "{}", train.pairs.len());
        assert!(test.len() >= 20);
        let (a, b) = train.letter_balance().unwrap();
        assert!(a.abs_diff(b) <= 1, "letters {a}/{b}");
        let qs: std::collections::HashSet<String> = train
            .pairs
            .iter()
            .map(|p| match p {
                ContrastPair::AbQuestion { question, .. } => question.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert!(test.iter().all(|t| !qs.contains(&t.question)), "test questions must be held out");
    }

    #[test]
    fn pair_files_and_scenario_lists() {
        let dir = std::env::temp_dir().join(format!("lcross-pairs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("calm.jsonl");
        std::fs::write(&p, "{\"positive\": \"Stay calm.\", \"negative\": \"Panic!\"}\n\n{\"positive\": \"Breathe.\", \"negative\": \"Run!\", \"note\": 1}\n")
            .unwrap();
        let ds = load_concept(p.to_str().unwrap(), &dir).unwrap();
        assert_eq!(ds.concept, "calm");
        assert_eq!(ds.pairs[1], ContrastPair::Prompts { positive: "Breathe.".into(), negative: "Run!".into() });
        let raw = load_pairs(&p, true).unwrap();
        assert_eq!(raw.pairs[0], ContrastPair::RawTexts { positive: "Stay calm.".into(), negative: "Panic!".into() });
        assert_ne!(raw.hash, ds.hash);
        let a = dir.join("arr.json");
        std::fs::write(&a, r#"[{"positive": "a", "negative": "b"}, {"positive": "c", "negative": 3}]"#).unwrap();
        let e = load_concept(a.to_str().unwrap(), &dir).unwrap_err().to_string();
        assert!(e.contains("arr.json, item 1") && e.contains("`negative` is not a string"), "{e}");
        std::fs::write(&p, "{\"positive\": \"x\"}\n").unwrap();
        let e = load_pairs(&p, false).unwrap_err().to_string();
        assert!(e.contains("item 0") && e.contains("missing `negative`"), "{e}");

        let s = dir.join("pride.txt");
        let c = dir.join("shame.json");
        std::fs::write(&s, "I won the race.\nI finished my thesis.\nI won the race.\n").unwrap();
        std::fs::write(&c, r#"["I forgot her birthday.", "I lied to a friend."]"#).unwrap();
        let ds = scenario_pairs("pride", &s, &c, "Consider the pride of: {scenario}", false).unwrap();
        assert_eq!(ds.pairs.len(), 2, "duplicates dropped");
        match &ds.pairs[0] {
            ContrastPair::Prompts { positive, negative } => {
                assert_eq!(positive, "Consider the pride of: I won the race.");
                assert!(negative.starts_with("Consider the pride of: I "), "{negative}");
            }
            other => panic!("{other:?}"),
        }
        assert!(scenario_pairs("pride", &s, &c, "no placeholder", false).unwrap_err().to_string().contains("{scenario}"));
        std::fs::write(&c, r#"["ok", 5]"#).unwrap();
        let e = scenario_pairs("pride", &s, &c, "{scenario}", false).unwrap_err().to_string();
        assert!(e.contains("shame.json, item 1"), "{e}");
    }

    #[test]
    fn malformed_caa_items_name_file_and_item() {
        let dir = std::env::temp_dir().join(format!("lcross-ds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.json");
        std::fs::write(&p, r#"[{"question":"q (A) (B)","answer_matching_behavior":"(A)","answer_not_matching_behavior":"(B)"},{"question":"q2","answer_matching_behavior":"yes","answer_not_matching_behavior":"(B)"}]"#).unwrap();
        let e = load_caa_pairs(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json, item 1") && e.contains("answer_matching_behavior"), "{e}");
        std::fs::write(&p, "{not json").unwrap();
        let e = load_caa_pairs(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("JSON"), "{e}");
        std::fs::write(&p, r#"[{"question":"q"}]"#).unwrap();
        let e = load_caa_pairs(&p).unwrap_err().to_string();
        assert!(e.contains("item 0") && e.contains("missing `answer_matching_behavior`"), "{e}");
        // A letter the question does not offer is refused, never scored.
        std::fs::write(&p, r#"[{"question":"q\n(A) yes\n(B) no","answer_matching_behavior":"(A)","answer_not_matching_behavior":"(B)"},{"question":"q\n(A) yes\n(B) no","answer_matching_behavior":"(C)","answer_not_matching_behavior":"(B)"}]"#).unwrap();
        let e = load_ab_items(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json, item 1") && e.contains("(C)") && e.contains("not among the question's choices"), "{e}");
    }
}
