//! The grid: every cell of an experiment in a fixed order, the groups of cells that
//! share their expensive inputs (vectors, maps), and the deterministic split of groups
//! over shards.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{Beta, ConditionKind, Experiment, VectorKind};
use crate::error::{EvalError, Result};

/// What identifies a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellKey {
    pub target: String,
    /// The model the vector comes from (transfer conditions only).
    pub source: Option<String>,
    pub concept: String,
    /// Plain or letter-balanced CAA vectors.
    #[serde(default)]
    pub vector: VectorKind,
    pub condition: ConditionKind,
    /// Map estimator (the `lcross` condition; the other maps are OLS, random-t random).
    pub estimator: Option<String>,
    /// The steering multiplier, or `auto` (the cell's record says which it chose).
    pub beta: Beta,
    pub metric: String,
}

impl CellKey {
    /// A stable text form, unique per cell.
    pub fn id(&self) -> String {
        format!(
            "target={};source={};concept={};vector={};condition={};estimator={};beta={};metric={}",
            self.target,
            self.source.as_deref().unwrap_or("-"),
            self.concept,
            self.vector.name(),
            self.condition.name(),
            self.estimator.as_deref().unwrap_or("-"),
            self.beta.key_text(),
            self.metric
        )
    }

    /// The group this cell belongs to: cells of one group share their vectors and maps
    /// and always run on the same shard.
    pub fn group(&self) -> Group {
        Group { target: self.target.clone(), source: self.source.clone(), concept: self.concept.clone(), vector: self.vector }
    }
}

/// Cells that share their inputs: (target, concept, vector kind) for `none` / `self`,
/// (target, source, concept, vector kind) for transfers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Group {
    pub target: String,
    pub source: Option<String>,
    pub concept: String,
    pub vector: VectorKind,
}

impl Group {
    /// Stable text form.
    pub fn id(&self) -> String {
        format!("{}|{}|{}|{}", self.target, self.source.as_deref().unwrap_or("-"), self.concept, self.vector.name())
    }

    /// The shard (0-based, of `n`) this group runs on: a hash of its id, so the
    /// assignment depends on nothing but the group.
    pub fn shard(&self, n: usize) -> usize {
        let h = Sha256::digest(self.id().as_bytes());
        (u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % n.max(1) as u64) as usize
    }
}

/// `--shard i/n`: the 0-based shard `i` of `n` (a Slurm job array `--array=0-3` passes
/// `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The most shards a grid is split into (Slurm's own array limit, `MaxArraySize`, is at
/// most 4 000 001; a grid has far fewer groups than this).
pub const MAX_SHARDS: usize = 100_000;

impl Shard {
    /// Parse `i/n` with 0 <= i < n <= [`MAX_SHARDS`].
    pub fn parse(s: &str) -> Result<Self> {
        let err =
            || EvalError::bad_value("--shard", s, "i/n with 0 <= i < n <= 100000, e.g. 0/4 (Slurm: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)");
        let (i, n) = s.split_once('/').ok_or_else(err)?;
        let (index, count) = (i.trim().parse::<usize>().map_err(|_| err())?, n.trim().parse::<usize>().map_err(|_| err())?);
        if count == 0 || index >= count || count > MAX_SHARDS {
            return Err(err());
        }
        Ok(Self { index, count })
    }

    /// The whole grid.
    pub fn all() -> Self {
        Self { index: 0, count: 1 }
    }

    /// Whether `group` runs here.
    pub fn owns(&self, group: &Group) -> bool {
        group.shard(self.count) == self.index
    }
}

/// Every cell of the experiment, in a fixed order: per metric, target, concept (those
/// the metric applies to and keeps, [`Experiment::concepts_for`]) and vector kind ([`Experiment::vectors_for`]), `none` (once, with the first kind), `self` and `consensus`, then each
/// source's transfer conditions (those the metric keeps, [`Experiment::conditions_for`]); betas innermost. `map-similarity` has one cell per
/// (target, source, concept): the concept-specific OLS map against the other concepts'.
pub fn plan(e: &Experiment) -> Vec<CellKey> {
    let mut cells = Vec::new();
    for metric in &e.evaluations {
        if metric == TSNE {
            let mut models: Vec<&String> = Vec::new();
            for m in e.targets.iter().chain(&e.sources) {
                if !models.contains(&m) {
                    models.push(m);
                }
            }
            cells.extend(models.into_iter().map(|m| CellKey {
                target: m.clone(),
                source: None,
                concept: ALL_CONCEPTS.into(),
                vector: e.vectors[0],
                condition: ConditionKind::None,
                estimator: None,
                beta: Beta::Value(0.0),
                metric: metric.clone(),
            }));
            continue;
        }
        for target in &e.targets {
            for concept in e.concepts_for(metric) {
                let betas = e.betas_for(concept);
                let kinds = e.vectors_for(metric, concept);
                // one unsteered cell per (target, concept), with the first kind, if any kind has it
                let unsteered = kinds.iter().any(|&v| e.conditions_for(metric, concept, v).contains(&ConditionKind::None));
                for (k, vector) in kinds.into_iter().enumerate() {
                    let conditions = e.conditions_for(metric, concept, vector);
                    let estimators = e.estimators_for(metric, concept, vector);
                    let cell = |source: Option<&String>, condition, estimator: Option<&str>, beta| CellKey {
                        target: target.clone(),
                        source: source.cloned(),
                        concept: concept.clone(),
                        vector,
                        condition,
                        estimator: estimator.map(String::from),
                        beta,
                        metric: metric.clone(),
                    };
                    let sources = e.sources.iter().filter(|s| *s != target);
                    if metric == MAP_SIMILARITY {
                        if k == 0 {
                            cells.extend(sources.map(|s| cell(Some(s), ConditionKind::Lcross, Some("ols"), Beta::Value(0.0))));
                        }
                        continue;
                    }
                    if k == 0 && unsteered {
                        cells.push(cell(None, ConditionKind::None, None, Beta::Value(0.0)));
                    }
                    for c in [ConditionKind::SelfModulation, ConditionKind::Consensus] {
                        if conditions.contains(&c) {
                            cells.extend(betas.iter().map(|&b| cell(None, c, None, b)));
                        }
                    }
                    for source in sources {
                        for &c in conditions.iter().filter(|c| c.needs_source() && c.applies_to(concept)) {
                            let estimators: Vec<Option<&str>> =
                                if c == ConditionKind::Lcross { estimators.iter().map(|s| Some(s.as_str())).collect() } else { vec![None] };
                            for est in estimators {
                                cells.extend(betas.iter().map(|&b| cell(Some(source), c, est, b)));
                            }
                        }
                    }
                }
            }
        }
    }
    cells
}

/// The metric name of the map comparison (Table 4).
pub const MAP_SIMILARITY: &str = "map-similarity";
/// The metric name of judged open-ended answers.
pub const OPEN_ENDED: &str = "open-ended";
/// The metric name of HARM (harmfulness).
pub const HARM: &str = "harm";
/// The metric name of FAIR (fairness).
pub const FAIR: &str = "fair";
/// The metric name of judged emotions (happiness, fear).
pub const EMOTION: &str = "emotion";
/// The metric name of the t-SNE figure (one cell per model).
pub const TSNE: &str = "tsne";
/// The concept of a cell about all the grid's concepts.
pub const ALL_CONCEPTS: &str = "*";

/// The groups of `cells` in first-appearance order.
pub fn groups(cells: &[CellKey]) -> Vec<(Group, Vec<CellKey>)> {
    let mut out: Vec<(Group, Vec<CellKey>)> = Vec::new();
    for c in cells {
        let g = c.group();
        match out.iter_mut().find(|(x, _)| *x == g) {
            Some((_, v)) => v.push(c.clone()),
            None => out.push((g, vec![c.clone()])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::config::ExperimentFile;
    use super::*;

    fn experiment() -> Experiment {
        ExperimentFile::parse(
            r#"name = "t"
targets = ["a", "b"]
sources = ["a", "b", "c"]
concepts = ["refusal", "sycophancy"]
estimators = ["ols", "ridge"]
conditions = ["none", "self", "lcross", "lcross-unrelated", "lcross-heldout", "lcross-pooled", "random-t", "identity"]
betas = [-2.0, 2.0]
vectors = ["plain", "balanced"]
sizes = { extract_pairs = 4, test_questions = 2, heldout_pairs = 4 }"#,
            "t",
        )
        .unwrap()
        .resolve(None)
        .unwrap()
    }

    #[test]
    fn plan_counts_and_unique_ids() {
        let cells = plan(&experiment());
        // per (target, concept): none 1, and per vector kind self 2 + 2 sources x (lcross 2
        // estimators + 5 other) x 2 betas = 30
        assert_eq!(cells.len(), 2 * 2 * (1 + 2 * 30));
        let ids: std::collections::BTreeSet<String> = cells.iter().map(CellKey::id).collect();
        assert_eq!(ids.len(), cells.len());
        assert!(cells.iter().all(|c| c.source.as_deref() != Some(c.target.as_str())), "a model is never its own source");
        assert_eq!(groups(&cells).len(), 2 * 2 * 3 * 2);
    }

    #[test]
    fn consensus_and_map_similarity_cells() {
        let mut e = experiment();
        e.conditions.push(ConditionKind::Consensus);
        e.evaluations.push(MAP_SIMILARITY.into());
        e.evaluations.push(TSNE.into());
        let cells = plan(&e);
        let tsne: Vec<&CellKey> = cells.iter().filter(|c| c.metric == TSNE).collect();
        assert_eq!(tsne.iter().map(|c| c.target.as_str()).collect::<Vec<_>>(), ["a", "b", "c"], "one t-SNE cell per model, targets then sources");
        let cells: Vec<CellKey> = cells.iter().filter(|c| c.metric != TSNE).cloned().collect();
        // consensus: per (target, concept, vector kind) one per beta, in the self group
        let consensus: Vec<&CellKey> = cells.iter().filter(|c| c.condition == ConditionKind::Consensus).collect();
        assert_eq!(consensus.len(), 2 * 2 * 2 * 2);
        assert!(consensus.iter().all(|c| c.source.is_none() && c.group().source.is_none()));
        // map similarity: per (target, concept) one per source, first vector kind only
        let maps: Vec<&CellKey> = cells.iter().filter(|c| c.metric == MAP_SIMILARITY).collect();
        assert_eq!(maps.len(), 2 * 2 * 2);
        assert!(maps.iter().all(|c| c.vector == VectorKind::Plain && c.condition == ConditionKind::Lcross && c.source.is_some()));
        let ids: std::collections::BTreeSet<String> = cells.iter().map(CellKey::id).collect();
        assert_eq!(ids.len(), cells.len());
        // the map cells join the A/B groups of the same models and concept
        assert_eq!(groups(&cells).len(), 2 * 2 * 3 * 2);
    }

    #[test]
    fn shards_partition_the_groups_deterministically() {
        let cells = plan(&experiment());
        let gs = groups(&cells);
        for n in 1..5 {
            let mut seen = 0;
            for i in 0..n {
                let s = Shard { index: i, count: n };
                seen += gs.iter().filter(|(g, _)| s.owns(g)).count();
            }
            assert_eq!(seen, gs.len(), "every group on exactly one of {n} shards");
        }
        assert_eq!(gs[3].0.shard(7), gs[3].0.clone().shard(7));
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        assert!(Shard::parse("1/18446744073709551615").is_err() && Shard::parse("1/100001").is_err());
        for bad in ["4/4", "1", "a/b", "0/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_evaluation_has_cells_for_its_concepts_only() {
        let e = ExperimentFile::parse(
            r#"name = "t"
targets = ["a"]
sources = ["b"]
concepts = ["refusal", "harmfulness", "happiness", "fear", "fairness"]
conditions = ["none", "self", "lcross"]
betas = [4.0]
concept_betas = { harmfulness = [-4.0, -8.0] }
vectors = ["plain", "balanced"]
evaluations = ["ab", "harm", "emotion", "fair", "map-similarity"]
sizes = { extract_pairs = 4, test_questions = 2 }"#,
            "t",
        )
        .unwrap()
        .resolve(None)
        .unwrap();
        let cells = plan(&e);
        let of = |m: &str| cells.iter().filter(|c| c.metric == m).collect::<Vec<_>>();
        // ab: refusal only, both vector kinds: none 1 + (self + lcross) x 2 kinds
        assert!(of("ab").iter().all(|c| c.concept == "refusal"));
        assert_eq!(of("ab").len(), 1 + 2 * 2);
        // harm: harmfulness only, plain vectors only, at its own two betas
        assert!(of("harm").iter().all(|c| c.concept == "harmfulness" && c.vector == VectorKind::Plain));
        assert_eq!(
            of("harm").iter().filter(|c| c.condition != ConditionKind::None).map(|c| c.beta.value().unwrap()).collect::<Vec<_>>(),
            [-4.0, -8.0, -4.0, -8.0]
        );
        assert_eq!(
            of("emotion").iter().map(|c| c.concept.as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>(),
            ["fear", "happiness"]
        );
        assert!(of("fair").iter().all(|c| c.concept == "fairness" && c.beta == Beta::Value(4.0) || c.condition == ConditionKind::None));
        // Table 4 compares every concept's map, RepE included
        assert_eq!(of("map-similarity").len(), 5);
        let ids: std::collections::BTreeSet<String> = cells.iter().map(CellKey::id).collect();
        assert_eq!(ids.len(), cells.len());
    }

    #[test]
    fn the_steerability_scan_has_cells_for_behaviours_only() {
        let e = ExperimentFile::parse(
            r#"name = "t"
targets = ["a"]
sources = ["b"]
concepts = ["refusal", "harmfulness"]
conditions = ["none", "lcross-autolayer", "lcross-autolayer-steer"]
betas = [4.0]
evaluations = ["ab", "harm"]
sizes = { extract_pairs = 4, test_questions = 2, heldout_pairs = 4 }"#,
            "t",
        )
        .unwrap()
        .resolve(None)
        .unwrap();
        let cells = plan(&e);
        let steer: Vec<&CellKey> = cells.iter().filter(|c| c.condition == ConditionKind::LcrossAutoSteer).collect();
        assert_eq!(steer.len(), 1, "{steer:?}");
        assert_eq!((steer[0].concept.as_str(), steer[0].metric.as_str()), ("refusal", "ab"));
        assert!(cells.iter().any(|c| c.condition == ConditionKind::LcrossAutoLayer && c.concept == "harmfulness"), "the R^2 scan needs no A/B questions");
    }

    #[test]
    fn per_evaluation_scopes_keep_part_of_the_grid() {
        let text = r#"name = "t"
targets = ["a"]
sources = ["b", "c"]
concepts = ["refusal", "sycophancy", "harmfulness"]
conditions = ["none", "self", "lcross", "random-t", "lcross-heldout", "consensus"]
estimators = ["ols", "ridge"]
betas = [4.0]
concept_betas = { harmfulness = [-4.0] }
vectors = ["plain", "balanced"]
evaluations = ["ab", "open-ended", "harm"]
sizes = { extract_pairs = 4, test_questions = 2, heldout_pairs = 4, open_ended_questions = 2 }

[per_evaluation.harm]
conditions = ["none", "self", "lcross", "consensus"]
estimators = ["ols"]

[per_evaluation.open-ended]
concepts = ["refusal", "harmfulness"]
conditions = ["none", "self", "lcross"]
vectors = ["balanced"]

[per_vector.plain]
conditions = ["none", "self", "lcross"]

[profiles.everything]
targets = ["a"]

[profiles.open-ended-refusal]
per_evaluation = { open-ended = { concepts = ["refusal"] } }

"#;
        let f = ExperimentFile::parse(text, "t.toml").unwrap();
        let e = f.resolve(None).unwrap();
        let cells = plan(&e);
        let of = |cells: &[CellKey], m: &str| cells.iter().filter(|c| c.metric == m).cloned().collect::<Vec<_>>();
        // ab: per concept none + balanced vectors through the whole grid (self, consensus,
        // 2 sources x (ols, ridge, random-t, held-out)) + plain ones through Table 1's (self, 2 x (ols, ridge))
        let ab = of(&cells, "ab");
        assert_eq!(ab.len(), 2 * (1 + (2 + 2 * 4) + (1 + 2 * 2)));
        assert!(ab
            .iter()
            .filter(|c| c.vector == VectorKind::Plain)
            .all(|c| matches!(c.condition, ConditionKind::None | ConditionKind::SelfModulation | ConditionKind::Lcross)));
        // harm: Table 1's conditions, OLS only, plain (RepE) vectors: `per_vector` is about CAA kinds
        let harm = of(&cells, "harm");
        assert_eq!(harm.len(), 1 + 1 + 1 + 2, "none, self, consensus, lcross from b and c: {harm:?}");
        assert!(harm.iter().all(|c| c.estimator.as_deref().is_none_or(|x| x == "ols")));
        // open-ended: refusal only (harmfulness has no open-ended questions), balanced
        // vectors only, and its `none` cell comes with the first kept kind
        let open = of(&cells, "open-ended");
        assert_eq!(open.len(), 1 + 1 + 2 * 2, "{open:?}");
        assert!(open.iter().all(|c| c.concept == "refusal"));
        assert!(open.iter().all(|c| c.vector == VectorKind::Balanced));
        assert!(open.iter().all(|c| matches!(c.condition, ConditionKind::None | ConditionKind::SelfModulation | ConditionKind::Lcross)));
        let ids: std::collections::BTreeSet<String> = cells.iter().map(CellKey::id).collect();
        assert_eq!(ids.len(), cells.len());
        // a profile does not inherit the file's scopes (they are written for the file's
        // lists): without its own, every evaluation and vector kind has its whole grid;
        // a grid without scopes serialises as before
        let everything = f.resolve(Some("everything")).unwrap();
        assert!(everything.per_evaluation.is_empty() && everything.per_vector.is_empty());
        assert!(serde_json::to_value(&everything).unwrap().get("per_evaluation").is_none());
        let all = plan(&everything);
        assert_eq!(of(&all, "ab").len(), 2 * (1 + 2 * (2 + 2 * 4)));
        assert_eq!(of(&all, "harm").len(), 1 + 2 + 2 * 4, "none, self, consensus, per source lcross x 2 estimators, random-t, held-out");
        assert_eq!(of(&all, "open-ended"), of(&all, "ab").into_iter().map(|c| CellKey { metric: "open-ended".into(), ..c }).collect::<Vec<_>>());
        let own = plan(&f.resolve(Some("open-ended-refusal")).unwrap());
        assert_eq!(of(&own, "open-ended").len(), 1 + 2 * (2 + 2 * 4), "refusal only, both kinds, every condition");
        assert_eq!(of(&own, "ab").len(), of(&all, "ab").len());
        // mistakes are named
        for (edit, expect) in [
            (("[per_evaluation.harm]", "[per_evaluation.harn]"), "per_evaluation.harn"),
            (("estimators = [\"ols\"]\n\n[per_evaluation.open", "estimators = [\"lasso\"]\n\n[per_evaluation.open"), "lasso"),
            (("conditions = [\"none\", \"self\", \"lcross\"]\nvectors", "conditions = [\"identity\"]\nvectors"), "per_evaluation.open-ended.conditions"),
            (("vectors = [\"balanced\"]\n", "vectors = []\n"), "per_evaluation.open-ended.vectors"),
            (("concepts = [\"refusal\", \"harmfulness\"]", "concepts = [\"harmfulness\"]"), "per_evaluation.open-ended.concepts"),
            (("concepts = [\"refusal\", \"harmfulness\"]", "concepts = [\"kindness\"]"), "kindness"),
            (("[per_vector.plain]\nconditions = [\"none\", \"self\", \"lcross\"]", "[per_vector.plain]\nconditions = [\"identity\"]"), "per_vector.plain"),
            (("[per_vector.plain]", "[per_vector.fancy]"), "fancy"),
        ] {
            assert!(text.contains(edit.0), "{}", edit.0);
            let err = ExperimentFile::parse(&text.replace(edit.0, edit.1), "t.toml").and_then(|f| f.resolve(None)).unwrap_err().to_string();
            assert!(err.contains(expect), "{expect}: {err}");
        }
        let err =
            ExperimentFile::parse(&text.replace("vectors = [\"balanced\"]", "vectors = [\"balanced\"]\nbetas = [2.0]"), "t.toml").unwrap_err().to_string();
        assert!(err.contains("betas"), "only conditions, estimators and vectors are scoped: {err}");
    }
}
