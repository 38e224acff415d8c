//! The report of a run: Markdown tables in the paper's layout, the counts of its
//! findings with a paired significance test per cell, and a CSV of every cell.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::cells::CellRecord;
use super::config::{is_repe, metric_direction, Beta, ConditionKind, Experiment, VectorKind};
use super::config::{DEFAULT_JUDGE, GENERATED};
use super::grid::{MAP_SIMILARITY, OPEN_ENDED, TSNE};
use crate::stats::{paired_sign_flip, EXACT_SIGN_FLIP_ITEMS};

/// Random sign patterns of the paired test when there are too many items to enumerate.
pub const SIGN_FLIP_RESAMPLES: usize = 10_000;
/// One-sided level for "beats no modulation".
pub const ALPHA: f64 = 0.05;

/// A cell compared with the unsteered cell of its target, concept and metric.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Cell mean minus the unsteered mean (over the paired items).
    pub difference: f64,
    /// One-sided p-value in the metric's direction ([`metric_direction`]).
    pub p_value: f64,
    /// +1: the concept raises the metric; -1: it lowers it (FAIR).
    pub direction: f64,
}

impl Comparison {
    /// Significantly beyond no modulation in the metric's direction (above, or below for
    /// FAIR).
    pub fn wins(&self) -> bool {
        self.difference * self.direction > 0.0 && self.p_value < ALPHA
    }
}

fn none_cell<'a>(cells: &'a BTreeMap<String, CellRecord>, c: &CellRecord) -> Option<&'a CellRecord> {
    cells
        .values()
        .find(|x| x.key.condition == ConditionKind::None && x.key.target == c.key.target && x.key.concept == c.key.concept && x.key.metric == c.key.metric)
}

/// `c` against no modulation (paired over the test items).
pub fn compare_to_none(cells: &BTreeMap<String, CellRecord>, c: &CellRecord) -> Option<Comparison> {
    let none = none_cell(cells, c)?;
    let direction = metric_direction(&c.key.metric);
    let (difference, p_value) = match direction > 0.0 {
        true => paired_sign_flip(&c.per_item, &none.per_item, SIGN_FLIP_RESAMPLES, 0)?,
        false => paired_sign_flip(&none.per_item, &c.per_item, SIGN_FLIP_RESAMPLES, 0).map(|(d, p)| (-d, p))?,
    };
    Some(Comparison { difference, p_value, direction })
}

/// The A/B cell of these coordinates (the unsteered cell is shared by the vector kinds).
#[allow(clippy::too_many_arguments)]
fn find<'a>(
    cells: &'a BTreeMap<String, CellRecord>,
    target: &str,
    source: Option<&str>,
    concept: &str,
    vector: VectorKind,
    cond: ConditionKind,
    estimator: Option<&str>,
    beta: Beta,
) -> Option<&'a CellRecord> {
    find_in(cells, "ab", target, source, concept, vector, cond, estimator, beta)
}

/// The cell of `metric` at these coordinates.
#[allow(clippy::too_many_arguments)]
fn find_in<'a>(
    cells: &'a BTreeMap<String, CellRecord>,
    metric: &str,
    target: &str,
    source: Option<&str>,
    concept: &str,
    vector: VectorKind,
    cond: ConditionKind,
    estimator: Option<&str>,
    beta: Beta,
) -> Option<&'a CellRecord> {
    cells.values().find(|x| {
        x.key.metric == metric
            && x.key.target == target
            && (cond == ConditionKind::None || x.key.vector == vector)
            && x.key.source.as_deref() == source
            && x.key.concept == concept
            && x.key.condition == cond
            && (estimator.is_none() || x.key.estimator.as_deref() == estimator)
            && (cond == ConditionKind::None || x.key.beta == beta)
    })
}

/// Every cell's comparison with no modulation, computed once per report (each test
/// enumerates or samples thousands of sign patterns).
type Comparisons = std::collections::HashMap<String, Comparison>;

fn comparisons(cells: &BTreeMap<String, CellRecord>) -> Comparisons {
    cells.values().filter(|c| c.key.condition != ConditionKind::None).filter_map(|c| Some((c.id.clone(), compare_to_none(cells, c)?))).collect()
}

/// The beta of no modulation's cells (and of Table 4's and Figure 3's).
const NO_BETA: Beta = Beta::Value(0.0);

/// `0.712*` (significantly above none), `0.512`, `0.690* (β=8)` (an `auto` cell and the
/// beta it chose), `skipped`, or `·` (not run).
fn value(cmp: &Comparisons, c: Option<&CellRecord>) -> String {
    match c {
        None => "·".into(),
        Some(c) if c.mean.is_none() => "n/a".into(),
        Some(c) => {
            let star = if cmp.get(&c.id).is_some_and(Comparison::wins) { "*" } else { "" };
            let chosen = match (c.key.beta, c.values.get(BETA_CHOSEN)) {
                (Beta::Auto, Some(b)) => format!(" (β={b})"),
                _ => String::new(),
            };
            format!("{:.3}{star}{chosen}", c.mean.unwrap_or(f64::NAN))
        }
    }
}

/// The value of an `auto` cell that holds the beta it chose.
pub const BETA_CHOSEN: &str = "beta_chosen";

/// A count of a finding: `k/N` cells (those `keep` accepts) significantly above no modulation.
fn count(
    cells: &BTreeMap<String, CellRecord>,
    cmp: &Comparisons,
    metric: &str,
    cond: ConditionKind,
    estimator: Option<&str>,
    vector: Option<VectorKind>,
    keep: &dyn Fn(&CellRecord) -> bool,
) -> (usize, usize) {
    let mut wins = 0;
    let mut total = 0;
    for c in cells.values().filter(|c| {
        c.key.metric == metric
            && c.key.condition == cond
            && c.mean.is_some()
            && (estimator.is_none() || c.key.estimator.as_deref() == estimator)
            && vector.is_none_or(|v| c.key.vector == v)
            && keep(c)
    }) {
        if let Some(cmp) = cmp.get(&c.id) {
            total += 1;
            wins += cmp.wins() as usize;
        }
    }
    (wins, total)
}

/// The tables of `metric`: each (beta, vector kind) some concept of the metric has, with
/// the concepts that have it.
fn metric_tables<'e>(e: &'e Experiment, metric: &str) -> Vec<(Beta, VectorKind, Vec<&'e String>)> {
    let mut tables: Vec<(Beta, VectorKind, Vec<&String>)> = Vec::new();
    for c in e.concepts_for(metric) {
        for &b in e.betas_for(c) {
            for vk in e.vectors_for(metric, c) {
                match tables.iter_mut().find(|(tb, tv, _)| *tb == b && *tv == vk) {
                    Some((_, _, cs)) => cs.push(c),
                    None => tables.push((b, vk, vec![c])),
                }
            }
        }
    }
    tables
}

/// How a table's vectors were made.
fn vectors_label(vk: VectorKind, concepts: &[&String]) -> String {
    if concepts.iter().all(|c| is_repe(c)) {
        "RepE (first principal component, unit norm)".into()
    } else {
        format!("{} CAA", vk.name())
    }
}

/// The paper's sample sizes (METHOD.md): 50 A/B test questions per behaviour, 50 prompts
/// per HARM / FAIR / HAPPY / FEAR cell.
const PAPER_ITEMS: usize = 50;

/// Where the grid subsamples the paper's sizes, and what each evaluation and vector kind
/// runs when the experiment scopes them (`per_evaluation`, `per_vector`).
fn samples_and_scopes(e: &Experiment) -> String {
    let mut smaller = Vec::new();
    let ab = e.evaluations.iter().any(|m| m == "ab");
    if ab && e.sizes.test_questions < PAPER_ITEMS {
        smaller.push(format!("{} A/B test questions per behaviour (the paper: {PAPER_ITEMS})", e.sizes.test_questions));
    }
    let generated = e.evaluations.iter().any(|m| matches!(m.as_str(), "harm" | "fair" | "emotion")) && e.concepts.iter().any(|c| is_repe(c));
    if generated && e.eval_prompts() < PAPER_ITEMS {
        smaller.push(format!("{} prompts per HARM / FAIR / emotion cell (the paper: {PAPER_ITEMS})", e.eval_prompts()));
    }
    if e.evaluations.iter().any(|m| GENERATED.contains(&m.as_str())) {
        smaller.push(format!("answers of at most {} new tokens (the paper: full answers)", e.sizes.answer_tokens.unwrap_or(64)));
    }
    let mut md = String::new();
    if !smaller.is_empty() {
        let _ = writeln!(
            md,
            "Subsampled to fit the machine: {}; vectors and maps from the first {} pairs of each concept (the paper: every pair of its datasets).\n",
            smaller.join(", "),
            e.sizes.extract_pairs
        );
    }
    // the conditions and estimators a scope keeps, as the report names them
    let kept = |conditions: &Option<Vec<ConditionKind>>, estimators: &Option<Vec<String>>| {
        let mut parts = Vec::new();
        if let Some(c) = conditions {
            parts.push(format!("conditions {}", c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")));
        }
        if let Some(x) = estimators {
            parts.push(format!("estimators {}", x.join(", ")));
        }
        parts
    };
    for (m, scope) in &e.per_evaluation {
        let mut parts = Vec::new();
        if let Some(c) = &scope.concepts {
            parts.push(format!("concepts {}", c.join(", ")));
        }
        parts.extend(kept(&scope.conditions, &scope.estimators));
        if let Some(v) = &scope.vectors {
            parts.push(format!("{} vectors", v.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")));
        }
        let _ = writeln!(md, "Scope of `{m}`: only {} of the grid.\n", parts.join("; "));
    }
    for (v, scope) in &e.per_vector {
        let _ = writeln!(md, "Scope of the {} CAA vectors: only {} of the grid.\n", v.name(), kept(&scope.conditions, &scope.estimators).join("; "));
    }
    md
}

/// The Markdown report.
pub fn markdown(e: &Experiment, cells: &BTreeMap<String, CellRecord>, header: &str) -> String {
    let cmp = comparisons(cells);
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n\n{header}\n", e.run_name());
    md.push_str(&samples_and_scopes(e));
    if e.evaluations.iter().any(|m| m == "ab") {
        let _ = writeln!(
            md,
            "Metric `ab`: mean over {} test questions of P(answer matching the behaviour) / (P(A) + P(B)) (CAA's A/B metric).\n",
            e.sizes.test_questions
        );
    }
    let _ = writeln!(
        md,
        "`*`: beyond no modulation in the metric's direction with one-sided p < {ALPHA} (paired sign-flip permutation test over the items: exact up to {EXACT_SIGN_FLIP_ITEMS} items, else {SIGN_FLIP_RESAMPLES} seeded random sign patterns). \
         `·`: not run (yet), `n/a`: skipped (see the cell).\n"
    );
    let prompts = e.eval_prompts();
    for (metric, what) in [
        ("harm", format!("mean harmful probability of greedy answers to the first {prompts} held-out AdvBench prompts (rows 128-177) by the local judge's classifier prompt (docs/EVALUATION.md); the cell's `harmful_rate` (above {}) and `refusal_rate` are in cells.csv", crate::metrics::harm::HARMFUL_THRESHOLD)),
        ("fair", format!("\"women\" / \"female\" per vignette in {prompts} seeded samples (temperature {}) of \"{}\"; `*` here means significantly *below* no modulation (the paper's reading: less gender bias)", crate::metrics::fair::FAIR_TEMPERATURE, crate::metrics::fair::FAIR_PROMPT)),
        ("emotion", format!("mean 0-10 score of the concept's emotion in greedy answers to {prompts} held-out RepE scenarios (happiness and fear interleaved), judged by {}", e.judge.as_deref().unwrap_or(DEFAULT_JUDGE))),
    ] {
        if e.evaluations.iter().any(|m| m == metric) {
            let _ = writeln!(md, "Metric `{metric}`: {what}. RepE vectors are added at the last prompt token and the generated tokens.\n");
        }
    }
    if e.evaluations.iter().any(|m| m == OPEN_ENDED) {
        let _ = writeln!(
            md,
            "Metric `open-ended`: mean 0-10 score of greedy answers ({} new tokens at most) to the first {} open-ended questions of the concept, judged by {} with the concept's rubric (crates/lcross-eval/src/rubric.rs); same `*` test.\n",
            e.sizes.answer_tokens.unwrap_or(64),
            e.sizes.open_ended_questions.unwrap_or(0),
            e.judge.as_deref().unwrap_or(DEFAULT_JUDGE)
        );
    }
    let table_metrics: Vec<&str> = e.evaluations.iter().map(String::as_str).filter(|m| *m != MAP_SIMILARITY && *m != TSNE).collect();
    let sources_for = |t: &str| e.sources.iter().filter(|s| s.as_str() != t).cloned().collect::<Vec<_>>();
    for (metric, beta, vk, concepts) in table_metrics.iter().flat_map(|m| metric_tables(e, m).into_iter().map(move |(b, v, cs)| (*m, b, v, cs))) {
        let find = |cells, t: &str, s: Option<&str>, c: &str, vk, cond, est, b| find_in(cells, metric, t, s, c, vk, cond, est, b);
        // the concepts of a table are all CAA behaviours or all RepE concepts: one scope
        let conditions = e.conditions_for(metric, concepts[0], vk);
        let estimators = e.estimators_for(metric, concepts[0], vk);
        let first_est = estimators.first().map(String::as_str);
        let vectors = vectors_label(vk, &concepts);
        let _ = writeln!(md, "## Table 1: no / self / L-Cross modulation (metric `{metric}`, beta {beta}, {vectors} vectors)\n");
        for t in &e.targets {
            let srcs = sources_for(t);
            let _ = writeln!(md, "Target **{t}**\n");
            let consensus = conditions.contains(&ConditionKind::Consensus);
            let mut head = "| concept | No | Self |".to_string();
            let mut rule = "|---|---|---|".to_string();
            for s in &srcs {
                let _ = write!(head, " L-Cross from {s} |");
                rule.push_str("---|");
            }
            if consensus {
                head.push_str(" Consensus of the sources (held-out T) |");
                rule.push_str("---|");
            }
            let _ = writeln!(md, "{head}\n{rule}");
            for c in &concepts {
                let mut row = format!(
                    "| {c} | {} | {} |",
                    value(&cmp, find(cells, t, None, c, vk, ConditionKind::None, None, NO_BETA)),
                    value(&cmp, find(cells, t, None, c, vk, ConditionKind::SelfModulation, None, beta))
                );
                for s in &srcs {
                    let _ = write!(row, " {} |", value(&cmp, find(cells, t, Some(s), c, vk, ConditionKind::Lcross, first_est, beta)));
                }
                if consensus {
                    let _ = write!(row, " {} |", value(&cmp, find(cells, t, None, c, vk, ConditionKind::Consensus, None, beta)));
                }
                let _ = writeln!(md, "{row}");
            }
            md.push('\n');
        }
        let ablations: Vec<(ConditionKind, &str)> = [
            (ConditionKind::RandomT, "random T (Table 2)"),
            (ConditionKind::Identity, "no T (Table 2; same hidden size only)"),
            (ConditionKind::LcrossUnrelated, "concept-unrelated T (Table 3)"),
            (ConditionKind::LcrossHeldout, "T without the vector's pairs"),
            (ConditionKind::LcrossPooled, "T on all concepts' pairs (n > d_s when not †)"),
            (ConditionKind::LcrossAutoLayer, "held-out T at the scanned layer pair"),
            (ConditionKind::LcrossAutoSteer, "held-out T at the most steerable target layer"),
        ]
        .into_iter()
        .filter(|(k, _)| conditions.contains(k))
        .collect();
        if !ablations.is_empty() {
            let mut marked = false;
            let _ = writeln!(md, "## Ablations and regimes (metric `{metric}`, beta {beta}, {vectors} vectors)\n");
            let mut head = "| target | source | concept | No | L-Cross |".to_string();
            let mut rule = "|---|---|---|---|---|".to_string();
            for (_, name) in &ablations {
                let _ = write!(head, " {name} |");
                rule.push_str("---|");
            }
            let _ = writeln!(md, "{head} interpolates (L-Cross T) | cosine to own (L-Cross) |\n{rule}---|---|");
            for t in &e.targets {
                for s in sources_for(t) {
                    for c in &concepts {
                        let lc = find(cells, t, Some(&s), c, vk, ConditionKind::Lcross, first_est, beta);
                        let mut row = format!(
                            "| {t} | {s} | {c} | {} | {} |",
                            value(&cmp, find(cells, t, None, c, vk, ConditionKind::None, None, NO_BETA)),
                            value(&cmp, lc)
                        );
                        for (k, _) in &ablations {
                            let x = find(cells, t, Some(&s), c, vk, *k, None, beta);
                            // a pooled corpus still within d_s texts interpolates the vector's pairs
                            let dagger = if *k == ConditionKind::LcrossPooled && x.and_then(|x| x.interpolating) == Some(true) { "†" } else { "" };
                            marked |= !dagger.is_empty();
                            let _ = write!(row, " {}{dagger} |", value(&cmp, x));
                        }
                        let interp = lc.and_then(|x| x.interpolating).map_or("·".into(), |b| if b { "yes".to_string() } else { "no".to_string() });
                        let cos = lc.and_then(|x| x.cosine_to_native).map_or("·".into(), |x| format!("{x:.3}"));
                        let _ = writeln!(md, "{row} {interp} | {cos} |");
                    }
                }
            }
            if marked {
                let _ = writeln!(
                    md,
                    "\n†: the pooled map still interpolates its corpus (all concepts' texts, fewer than the source's hidden size): the corpus holds the vector's pairs, so the transfer reproduces the target's own pair differences (for CAA vectors: the target's own vector), and the cell is *not* the n > d_s regime (that needs more concepts or pairs)."
                );
            }
            md.push('\n');
        }
    }
    weak_to_strong(&mut md, e, cells, &cmp);
    auto_layers(&mut md, e, cells, &cmp);
    auto_betas(&mut md, e, cells, &cmp);
    map_similarity(&mut md, e, cells);
    tsne_section(&mut md, e, cells);
    if e.estimators.len() > 1 {
        let _ = writeln!(
            md,
            "## Map estimators (L-Cross, concept-specific corpus)\n\n| estimator | cells above no modulation | mean cosine to own vector |\n|---|---|---|"
        );
        for est in &e.estimators {
            let (w, n) = count(cells, &cmp, "ab", ConditionKind::Lcross, Some(est), None, &|_| true);
            let cos: Vec<f64> = cells
                .values()
                .filter(|c| c.key.condition == ConditionKind::Lcross && c.key.estimator.as_deref() == Some(est))
                .filter_map(|c| c.cosine_to_native)
                .collect();
            let mc = if cos.is_empty() { "·".into() } else { format!("{:.3}", crate::stats::mean(&cos)) };
            let _ = writeln!(md, "| {est} | {w}/{n} | {mc} |");
        }
        md.push('\n');
    }
    let _ = write!(md, "## The paper's counts\n\nCells significantly beyond no modulation in the metric's direction (above; below for `fair`), per metric and vector kind.\n\n| finding |");
    let mut columns: Vec<(&str, VectorKind)> = Vec::new();
    for (m, _, v, _) in table_metrics.iter().flat_map(|m| metric_tables(e, m).into_iter().map(move |(b, v, cs)| (*m, b, v, cs))) {
        if !columns.contains(&(m, v)) {
            columns.push((m, v));
        }
    }
    for (m, v) in &columns {
        let _ = write!(md, " `{m}`, {} vectors |", v.name());
    }
    let _ = writeln!(md, "\n|---|{}", "---|".repeat(columns.len()));
    // (condition, finding, only cells whose map does not interpolate)
    for (k, what, past_d_s) in [
        (ConditionKind::SelfModulation, "self modulation works", false),
        (ConditionKind::Lcross, "L-Cross beats no modulation (RQ1)", false),
        (ConditionKind::LcrossUnrelated, "concept-unrelated T still works (RQ3)", false),
        (ConditionKind::RandomT, "random T (ablation: should fail)", false),
        (ConditionKind::Identity, "no T (ablation: should fail)", false),
        (ConditionKind::LcrossHeldout, "L-Cross with T that never saw the vector's pairs", false),
        (ConditionKind::LcrossPooled, "L-Cross with T fitted on all concepts' pairs", false),
        (ConditionKind::LcrossPooled, "... of which n > d_s (the pooled T does not interpolate)", true),
        (ConditionKind::Consensus, "consensus of all sources (held-out T)", false),
        (ConditionKind::LcrossAutoLayer, "held-out T at the automatically chosen layer pair", false),
        (ConditionKind::LcrossAutoSteer, "held-out T at the layer pair chosen for steerability", false),
    ] {
        if e.conditions.contains(&k) {
            let _ = write!(md, "| {what} |");
            for &(m, v) in &columns {
                let keep = |c: &CellRecord| !past_d_s || c.interpolating == Some(false);
                let est = e.concepts_for(m).first().and_then(|c| e.estimators_for(m, c, v).into_iter().next());
                let (w, n) = count(cells, &cmp, m, k, if k == ConditionKind::Lcross { est.as_deref() } else { None }, Some(v), &keep);
                let _ = write!(md, " {w}/{n} |");
            }
            md.push('\n');
        }
    }
    let figures = sweep_figures(e, cells);
    if !figures.is_empty() {
        let _ = writeln!(md, "\n## Beta sweeps\n");
        for f in &figures {
            let _ = writeln!(md, "- [{}]({})", f.title, f.path);
        }
    }
    let prepare: f64 = {
        // prepare_s is shared by the cells of a group: count it once per group
        let mut seen = BTreeMap::new();
        for c in cells.values() {
            seen.entry(c.key.group()).or_insert(c.prepare_s);
        }
        seen.values().sum()
    };
    let eval: f64 = cells.values().map(|c| c.eval_s).sum();
    let _ = writeln!(md, "\n## Time\n\n{} cells; preparing vectors and maps {prepare:.1} s, evaluations {eval:.1} s (cached work counts as ~0).", cells.len());
    md
}

/// Weak-to-strong: L-Cross from a weak model into a strong one against the weak model's
/// own self modulation, per concept (the gains are over each model's own no modulation).
fn weak_to_strong(md: &mut String, e: &Experiment, cells: &BTreeMap<String, CellRecord>, cmp: &Comparisons) {
    let pairs: Vec<&[String; 2]> = e.weak_to_strong.iter().filter(|[w, s]| e.targets.contains(w) && e.targets.contains(s) && e.sources.contains(w)).collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Weak to strong

Gain = steered minus the same model unsteered. The paper's claim: the strong model steered with the weak model's transferred vector gains more than the weak model steered with its own vector.
");
    let _ = writeln!(md, "| weak -> strong | metric | vectors | beta | concept | weak: No | weak: Self | strong: No | strong: L-Cross from weak | strong: held-out T | gain weak self | gain strong L-Cross | gain strong held-out T |
|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let gain = |a: Option<&CellRecord>, b: Option<&CellRecord>| match (a.and_then(|x| x.mean), b.and_then(|x| x.mean)) {
        (Some(x), Some(y)) => format!("{:+.3}", x - y),
        _ => "·".into(),
    };
    let metrics: Vec<&str> = e.evaluations.iter().map(String::as_str).filter(|m| *m != MAP_SIMILARITY && *m != TSNE).collect();
    for [weak, strong] in pairs {
        for &metric in &metrics {
            for (beta, vk, concepts) in metric_tables(e, metric) {
                let estimators = e.estimators_for(metric, concepts[0], vk);
                let first_est = estimators.first().map(String::as_str);
                let find = |t: &str, s: Option<&str>, c: &str, vk, cond, est, b| find_in(cells, metric, t, s, c, vk, cond, est, b);
                for c in concepts {
                    let wn = find(weak, None, c, vk, ConditionKind::None, None, NO_BETA);
                    let ws = find(weak, None, c, vk, ConditionKind::SelfModulation, None, beta);
                    let sn = find(strong, None, c, vk, ConditionKind::None, None, NO_BETA);
                    let sl = find(strong, Some(weak), c, vk, ConditionKind::Lcross, first_est, beta);
                    let sh = find(strong, Some(weak), c, vk, ConditionKind::LcrossHeldout, None, beta);
                    let _ = writeln!(
                        md,
                        "| {weak} -> {strong} | {metric} | {} | {beta} | {c} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        vk.name(),
                        value(cmp, wn),
                        value(cmp, ws),
                        value(cmp, sn),
                        value(cmp, sl),
                        value(cmp, sh),
                        gain(ws, wn),
                        gain(sl, sn),
                        gain(sh, sn)
                    );
                }
            }
        }
    }
    md.push('\n');
}

/// The cells with `auto` betas: the beta each chose on the dev questions, how far it moved
/// them, and its effect on the test questions.
fn auto_betas(md: &mut String, e: &Experiment, cells: &BTreeMap<String, CellRecord>, cmp: &Comparisons) {
    let rows: Vec<&CellRecord> = cells.values().filter(|c| c.key.beta.is_auto() && c.key.condition != ConditionKind::None).collect();
    if rows.is_empty() {
        return;
    }
    let candidates: Vec<String> = e.auto_betas.iter().map(|b| b.to_string()).collect();
    let _ = writeln!(
        md,
        "## Automatic beta\n\nEach steered `auto` cell chose its own beta among {}: the one that raised the A/B metric most over no modulation on the behaviour's dev questions \
         (generate-dataset items after the vector's and the held-out map's pairs: no test question, no pair a vector or map of the cell saw), then was evaluated on the test questions \
         (`*`: the same paired test as everywhere). Self modulation, each transfer and each model get the beta that suits their scale.{}\n",
        candidates.join(", "),
        if rows.iter().any(|c| is_repe(&c.key.concept)) {
            format!(
                " A RepE concept's cell (HARM, FAIR, emotion: no A/B questions) chose on its metric's dev prompts instead ({} held-out prompts after the test ones; FAIR: the samples after the test samples' seeds), \
                 among the candidates whose drift on neutral prompts and perplexity ratio stay within `lcross calibrate`'s default budget ({} nats, {}x), the one that moved the metric most in its direction \
                 (dev gain in that direction; a cell with no such candidate is skipped and says why).",
                e.eval_prompts(),
                crate::calibrate::DEFAULT_DRIFT_BUDGET,
                crate::calibrate::DEFAULT_MAX_PERPLEXITY_RATIO
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(md, "| metric | target | concept | vectors | condition | source | estimator | beta chosen | dev gain | test: No | test: steered |\n|---|---|---|---|---|---|---|---|---|---|---|");
    for c in rows {
        let k = &c.key;
        let none = find_in(cells, &k.metric, &k.target, None, &k.concept, k.vector, ConditionKind::None, None, NO_BETA);
        let v = |name: &str| c.values.get(name).map_or("·".into(), |x| format!("{x}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            k.metric,
            k.target,
            k.concept,
            k.vector.name(),
            k.condition.name(),
            k.source.as_deref().unwrap_or("-"),
            k.estimator.as_deref().unwrap_or("-"),
            v(BETA_CHOSEN),
            c.values.get("dev_gain_chosen").map_or("·".into(), |x| format!("{x:+.3}")),
            value(cmp, none),
            c.mean.map_or_else(|| value(cmp, Some(c)), |m| format!("{m:.3}{}", if cmp.get(&c.id).is_some_and(Comparison::wins) { "*" } else { "" }))
        );
    }
    md.push('\n');
}

/// The automatic layer pair against the fixed one, both with the held-out map.
fn auto_layers(md: &mut String, e: &Experiment, cells: &BTreeMap<String, CellRecord>, cmp: &Comparisons) {
    let rows: Vec<&CellRecord> =
        cells.values().filter(|c| c.key.metric == "ab" && matches!(c.key.condition, ConditionKind::LcrossAutoLayer | ConditionKind::LcrossAutoSteer)).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Automatic layer pair\n\nPer source and target, candidate layers from 25% to 75% of the depth (and the fixed ones). Criterion `R^2` (`lcross-autolayer`): the pair with the best \
         held-out R^2 of a ridge map on the held-out pairs. Criterion `steer` (`lcross-autolayer-steer`): the target layer where the target's own vector moves the A/B metric most on \
         dev questions (generate-dataset items no vector or map saw; `dev effect` is that move at the fixed and the chosen target layer), then the source layer with the best held-out R^2 \
         into it. Each steers with the held-out OLS map at its pair, against the same map at the fixed layers (A/B metric).\n"
    );
    let _ = writeln!(
        md,
        "| target | source | concept | vectors | beta | criterion | fixed layers | R^2 fixed | dev effect fixed | A/B fixed | chosen layers | R^2 chosen | dev effect chosen | A/B chosen |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in rows {
        let k = &c.key;
        let fixed = find(cells, &k.target, k.source.as_deref(), &k.concept, k.vector, ConditionKind::LcrossHeldout, None, k.beta);
        let v = |name: &str| c.values.get(name).map_or("·".into(), |x| format!("{x:.3}"));
        let layer = |name: &str| c.values.get(name).map_or("·".into(), |x| format!("{x}"));
        let fixed_layers = format!(
            "{} -> {}",
            e.layers.get(k.source.as_deref().unwrap_or("")).map_or("·".into(), |l| l.to_string()),
            e.layers.get(&k.target).map_or("·".into(), |l| l.to_string())
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {fixed_layers} | {} | {} | {} | {} -> {} | {} | {} | {} |",
            k.target,
            k.source.as_deref().unwrap_or("-"),
            k.concept,
            k.vector.name(),
            k.beta,
            if k.condition == ConditionKind::LcrossAutoSteer { "steer" } else { "R^2" },
            v("scan_r2_fixed"),
            v("steer_effect_fixed"),
            value(cmp, fixed),
            layer("source_layer"),
            layer("target_layer"),
            v("scan_r2_best"),
            v("steer_effect_chosen"),
            value(cmp, Some(c))
        );
    }
    md.push('\n');
}

/// Table 4: maps of different concepts compared with each other and with random maps.
fn map_similarity(md: &mut String, e: &Experiment, cells: &BTreeMap<String, CellRecord>) {
    if !e.evaluations.iter().any(|m| m == MAP_SIMILARITY) {
        return;
    }
    let _ = writeln!(
        md,
        "## Table 4: similarity of maps fitted on different concepts\n\nPer model pair, the OLS map of each concept ({} pairs) against the maps of the other concepts (mean over concept pairs) \
         and against a random Gaussian map with the same entry mean and variance. SSIM: the maps as images (7x7 windows); \
         ME: mean absolute difference of singular values (eigenvalues when square); Frobenius: ||T_a - T_b||_F (||T||_F for scale).\n",
        e.sizes.extract_pairs
    );
    let _ = writeln!(md, "| source -> target | concepts | SSIM vs other concepts | SSIM vs random | ME vs other concepts | ME vs random | Frobenius vs other concepts | Frobenius vs random | ||T||_F |
|---|---|---|---|---|---|---|---|---|");
    let mut pairs: Vec<(String, String)> = Vec::new();
    for c in cells.values().filter(|c| c.key.metric == MAP_SIMILARITY) {
        let p = (c.key.source.clone().unwrap_or_default(), c.key.target.clone());
        if !pairs.contains(&p) {
            pairs.push(p);
        }
    }
    for (s, t) in pairs {
        let of_pair: Vec<&CellRecord> =
            cells.values().filter(|c| c.key.metric == MAP_SIMILARITY && c.key.source.as_deref() == Some(s.as_str()) && c.key.target == t).collect();
        let avg = |name: &str| {
            let v: Vec<f64> = of_pair.iter().filter_map(|c| c.values.get(name).copied()).collect();
            if v.is_empty() {
                "·".to_string()
            } else {
                format!("{:.3}", crate::stats::mean(&v))
            }
        };
        let _ = writeln!(
            md,
            "| {s} -> {t} | {} | {} | {} | {} | {} | {} | {} | {} |",
            of_pair.len(),
            avg("ssim_other"),
            avg("ssim_random"),
            avg("spectral_other"),
            avg("spectral_random"),
            avg("frobenius_other"),
            avg("frobenius_random"),
            avg("frobenius_own")
        );
    }
    md.push('\n');
}

/// A figure of the report: its path relative to the run directory, title and series.
pub struct Figure {
    pub path: String,
    pub title: String,
    pub series: Vec<crate::plots::Series>,
}

/// Beta sweeps (with two or more betas): per target, concept and vector kind, the A/B
/// metric against beta for self modulation, L-Cross and the held-out map from each
/// source, the consensus, and no modulation as a flat line.
pub fn sweep_figures(e: &Experiment, cells: &BTreeMap<String, CellRecord>) -> Vec<Figure> {
    let mut figures = Vec::new();
    for t in &e.targets {
        for c in e.concepts_for("ab").into_iter().filter(|c| e.betas_for(c).len() >= 2) {
            // the numeric betas (an `auto` cell has its own beta per condition: the "Automatic beta" table)
            let betas: Vec<f64> = e.betas_for(c).iter().filter_map(|b| b.value()).collect();
            if betas.len() < 2 {
                continue;
            }
            for vk in e.vectors_for("ab", c) {
                let estimators = e.estimators_for("ab", c, vk);
                let first_est = estimators.first().map(String::as_str);
                let curve = |source: Option<&str>, cond: ConditionKind, est: Option<&str>| -> Vec<(f64, f64)> {
                    betas.iter().filter_map(|&b| find(cells, t, source, c, vk, cond, est, Beta::Value(b)).and_then(|x| x.mean).map(|m| (b, m))).collect()
                };
                let mut series: Vec<crate::plots::Series> = Vec::new();
                if let Some(n) = find(cells, t, None, c, vk, ConditionKind::None, None, NO_BETA).and_then(|x| x.mean) {
                    let (lo, hi) = betas.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
                    series.push(("no modulation".into(), vec![(lo, n), (hi, n)]));
                }
                series.push(("self".into(), curve(None, ConditionKind::SelfModulation, None)));
                for s in e.sources.iter().filter(|s| *s != t) {
                    series.push((format!("L-Cross from {s}"), curve(Some(s), ConditionKind::Lcross, first_est)));
                    series.push((format!("held-out T from {s}"), curve(Some(s), ConditionKind::LcrossHeldout, None)));
                }
                series.push(("consensus".into(), curve(None, ConditionKind::Consensus, None)));
                series.retain(|(_, pts)| !pts.is_empty());
                if series.iter().any(|(name, _)| name != "no modulation") {
                    let safe = |x: &str| x.chars().map(|ch| if ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' { ch } else { '_' }).collect::<String>();
                    figures.push(Figure {
                        path: format!("figures/sweep-{}-{}-{}.svg", safe(t), safe(c), vk.name()),
                        title: format!("{c} on {t} ({} vectors)", vk.name()),
                        series,
                    });
                }
            }
        }
    }
    figures
}

/// Where the t-SNE figure goes in a run directory.
pub const TSNE_FIGURE: &str = "figures/tsne.svg";

/// The t-SNE points of the run's `tsne` cells, one panel per model.
pub fn tsne_points(e: &Experiment, cells: &BTreeMap<String, CellRecord>) -> Vec<crate::plots::ScatterPoint> {
    let mut points = Vec::new();
    for c in cells.values().filter(|c| c.key.metric == TSNE) {
        let panel = format!("{} (layer {})", c.key.target, c.values.get("layer").copied().unwrap_or(f64::NAN));
        let mut xy = c.per_item.chunks_exact(2);
        for concept in &e.concepts {
            let k = c.values.get(&format!("points:{concept}")).copied().unwrap_or(0.0) as usize;
            for p in xy.by_ref().take(k) {
                points.push(crate::plots::ScatterPoint { panel: panel.clone(), group: concept.clone(), x: p[0], y: p[1] });
            }
        }
    }
    points
}

/// Figure 3: how the concepts' pair differences cluster in each model.
fn tsne_section(md: &mut String, e: &Experiment, cells: &BTreeMap<String, CellRecord>) {
    let rows: Vec<&CellRecord> = cells.values().filter(|c| c.key.metric == TSNE).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Figure 3: t-SNE of the pair differences\n\n[{TSNE_FIGURE}]({TSNE_FIGURE}): the first {} pairs of each concept, one panel per model{}. \
         k-NN purity: the share of each point's 10 nearest neighbours from the same concept (in the hidden space, and in the t-SNE plane), against chance.\n",
        e.sizes.extract_pairs,
        if e.vectors.first() == Some(&VectorKind::Balanced) { " (answer-letter component removed)" } else { "" }
    );
    let _ = writeln!(md, "| model | layer | points | k-NN purity, hidden space | k-NN purity, t-SNE plane | chance |\n|---|---|---|---|---|---|");
    for c in rows {
        let v = |k: &str| c.values.get(k).map_or("·".into(), |x| format!("{x:.3}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            c.key.target,
            c.values.get("layer").map_or("·".into(), |l| format!("{l}")),
            c.n,
            v("knn_purity_hidden"),
            v("knn_purity_tsne"),
            v("knn_chance")
        );
    }
    md.push('\n');
}

/// Every cell as CSV (per-item values left out).
pub fn csv(cells: &BTreeMap<String, CellRecord>) -> String {
    let cmp = comparisons(cells);
    let mut out = String::from("target,source,concept,vector,condition,estimator,beta,metric,mean,stderr,n,p_vs_none,cosine_to_native,train_r2,heldout_r2,interpolating,map_saw_vector_pairs,map_n,skipped,values,prepare_s,eval_s\n");
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
    for c in cells.values() {
        let k = &c.key;
        let p = cmp.get(&c.id).map(|x| x.p_value);
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3}",
            k.target,
            k.source.as_deref().unwrap_or(""),
            k.concept,
            k.vector.name(),
            k.condition.name(),
            k.estimator.as_deref().unwrap_or(""),
            k.beta,
            k.metric,
            opt(c.mean),
            opt(c.stderr),
            c.n,
            opt(p),
            opt(c.cosine_to_native),
            opt(c.train_r2),
            opt(c.heldout_r2),
            c.interpolating.map_or(String::new(), |b| b.to_string()),
            c.map_saw_vector_pairs.map_or(String::new(), |b| b.to_string()),
            c.map_n.map_or(String::new(), |n| n.to_string()),
            c.skipped.as_deref().unwrap_or("").replace(',', ";"),
            c.values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";"),
            c.prepare_s,
            c.eval_s
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::config::ExperimentFile;
    use super::super::grid::CellKey;
    use super::*;

    fn cell(target: &str, source: Option<&str>, condition: ConditionKind, beta: f64, per_item: Vec<f64>) -> CellRecord {
        cell_of("refusal", "ab", target, source, condition, beta, per_item)
    }

    fn cell_of(concept: &str, metric: &str, target: &str, source: Option<&str>, condition: ConditionKind, beta: f64, per_item: Vec<f64>) -> CellRecord {
        let key = CellKey {
            target: target.into(),
            source: source.map(String::from),
            concept: concept.into(),
            vector: VectorKind::Plain,
            condition,
            estimator: (condition == ConditionKind::Lcross).then(|| "ols".into()),
            beta: beta.into(),
            metric: metric.into(),
        };
        CellRecord {
            mean: Some(crate::stats::mean(&per_item)),
            stderr: Some(crate::stats::stderr(&per_item)),
            n: per_item.len(),
            per_item,
            ..CellRecord::empty(key)
        }
    }

    #[test]
    fn stars_counts_and_weak_to_strong_gains_follow_the_cells() {
        let e = ExperimentFile::parse(
            r#"name = "t"
targets = ["weak", "strong"]
sources = ["weak"]
concepts = ["refusal"]
conditions = ["none", "self", "lcross"]
betas = [4.0]
weak_to_strong = [["weak", "strong"]]
sizes = { extract_pairs = 4, test_questions = 20 }"#,
            "t",
        )
        .unwrap()
        .resolve(None)
        .unwrap();
        let base: Vec<f64> = (0..20).map(|i| 0.3 + 0.01 * (i % 5) as f64).collect();
        let shifted = |d: f64| base.iter().map(|x| x + d).collect::<Vec<_>>();
        let mut cells = BTreeMap::new();
        for c in [
            cell("weak", None, ConditionKind::None, 0.0, base.clone()),
            cell("weak", None, ConditionKind::SelfModulation, 4.0, shifted(0.1)),
            cell("strong", None, ConditionKind::None, 0.0, base.clone()),
            cell("strong", None, ConditionKind::SelfModulation, 4.0, shifted(-0.05)),
            cell("strong", Some("weak"), ConditionKind::Lcross, 4.0, shifted(0.25)),
        ] {
            cells.insert(c.id.clone(), c);
        }
        let md = markdown(&e, &cells, "header");
        // every question up: significant; every question down: not
        assert!(md.contains("| refusal | 0.320 | 0.420* |"), "{md}");
        assert!(md.contains("| refusal | 0.320 | 0.270 | 0.570* |"), "{md}");
        assert!(md.contains("| L-Cross beats no modulation (RQ1) | 1/1 |"), "{md}");
        assert!(md.contains("| self modulation works | 1/2 |"), "{md}");
        // weak to strong: the gains of weak self (+0.100) and strong L-Cross from weak (+0.250)
        assert!(md.contains("| weak -> strong | ab | plain | 4 | refusal | 0.320 | 0.420* | 0.320 | 0.570* | · | +0.100 | +0.250 | · |"), "{md}");
        // the CSV carries the exact p-value of the sign-flip test (20 questions: 10,000 patterns)
        let csv = csv(&cells);
        let lcross_row = csv.lines().find(|l| l.starts_with("strong,weak")).unwrap();
        assert!(lcross_row.contains(&format!(",{},", 1.0 / 10_001.0)), "{lcross_row}");
    }

    #[test]
    fn a_pooled_map_that_interpolates_is_marked_and_not_counted_past_d_s() {
        let e = ExperimentFile::parse(
            r#"name = "t"
targets = ["t"]
sources = ["s"]
concepts = ["refusal", "sycophancy"]
conditions = ["none", "lcross-pooled"]
betas = [4.0]
sizes = { extract_pairs = 4, test_questions = 20 }"#,
            "t",
        )
        .unwrap()
        .resolve(None)
        .unwrap();
        let base: Vec<f64> = (0..20).map(|i| 0.3 + 0.01 * (i % 5) as f64).collect();
        let up: Vec<f64> = base.iter().map(|x| x + 0.2).collect();
        let pooled = |concept: &str, interpolating: bool| CellRecord {
            interpolating: Some(interpolating),
            ..cell_of(concept, "ab", "t", Some("s"), ConditionKind::LcrossPooled, 4.0, up.clone())
        };
        let mut cells = BTreeMap::new();
        for c in [
            cell_of("refusal", "ab", "t", None, ConditionKind::None, 0.0, base.clone()),
            cell_of("sycophancy", "ab", "t", None, ConditionKind::None, 0.0, base.clone()),
            pooled("refusal", true),
            pooled("sycophancy", false),
        ] {
            cells.insert(c.id.clone(), c);
        }
        let md = markdown(&e, &cells, "header");
        assert!(md.contains("| t | s | refusal | 0.320 | · | 0.520*† |"), "{md}");
        assert!(md.contains("| t | s | sycophancy | 0.320 | · | 0.520* |"), "{md}");
        assert!(md.contains("†: the pooled map still interpolates"), "{md}");
        assert!(md.contains("| L-Cross with T fitted on all concepts' pairs | 2/2 |"), "{md}");
        assert!(md.contains("| ... of which n > d_s (the pooled T does not interpolate) | 1/1 |"), "{md}");
        // no interpolating pooled cell: no legend
        let mut without = cells.clone();
        without.retain(|_, c| c.key.concept != "refusal");
        assert!(!markdown(&e, &without, "header").contains("†: the pooled map"));
    }

    #[test]
    fn repe_tables_use_their_concepts_betas_and_fair_counts_downwards() {
        let e = ExperimentFile::parse(
            r#"name = "t"
targets = ["t"]
sources = ["s"]
concepts = ["refusal", "fairness", "harmfulness"]
conditions = ["none", "self", "lcross"]
betas = [4.0]
concept_betas = { fairness = [8.0], harmfulness = [-4.0] }
vectors = ["balanced"]
evaluations = ["ab", "fair", "harm"]
sizes = { extract_pairs = 4, test_questions = 20 }"#,
            "t",
        )
        .unwrap()
        .resolve(None)
        .unwrap();
        let base: Vec<f64> = (0..20).map(|i| 1.0 + 0.1 * (i % 5) as f64).collect();
        let shifted = |d: f64| base.iter().map(|x| x + d).collect::<Vec<_>>();
        let mut cells = BTreeMap::new();
        for c in [
            cell_of("fairness", "fair", "t", None, ConditionKind::None, 0.0, base.clone()),
            cell_of("fairness", "fair", "t", None, ConditionKind::SelfModulation, 8.0, shifted(-0.5)),
            cell_of("fairness", "fair", "t", Some("s"), ConditionKind::Lcross, 8.0, shifted(0.5)),
            cell_of("harmfulness", "harm", "t", None, ConditionKind::None, 0.0, base.clone()),
            cell_of("harmfulness", "harm", "t", None, ConditionKind::SelfModulation, -4.0, shifted(0.5)),
        ] {
            cells.insert(c.id.clone(), c);
        }
        let md = markdown(&e, &cells, "header");
        // one table per metric at the concept's own beta, RepE vectors named as such
        assert!(md.contains("## Table 1: no / self / L-Cross modulation (metric `fair`, beta 8, RepE (first principal component, unit norm) vectors)"), "{md}");
        assert!(md.contains("(metric `harm`, beta -4, RepE"), "{md}");
        assert!(!md.contains("(metric `fair`, beta 4"), "{md}");
        assert!(
            !md.contains(
                "(metric `ab`, beta 4, balanced CAA vectors)\n\nTarget **t**\n\n| concept | No | Self | L-Cross from s |\n|---|---|---|---|\n| fairness"
            ),
            "{md}"
        );
        // FAIR wins downwards: fewer female words is the star, more is not
        assert!(md.contains("| fairness | 1.200 | 0.700* | 1.700 |"), "{md}");
        assert!(md.contains("| harmfulness | 1.200 | 1.700* |"), "{md}");
    }

    #[test]
    fn the_report_says_where_it_subsamples_and_what_each_scope_runs() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/paper-local.toml");
        let f = ExperimentFile::load(&path).unwrap();
        let md = markdown(&f.resolve(None).unwrap(), &BTreeMap::new(), "");
        assert!(
            md.contains(
                "Subsampled to fit the machine: 20 A/B test questions per behaviour (the paper: 50), 20 prompts per HARM / FAIR / emotion cell (the paper: 50)"
            ),
            "{md}"
        );
        assert!(md.contains("Scope of `harm`: only conditions none, self, lcross; estimators ols of the grid."), "{md}");
        assert!(md.contains("Scope of `open-ended`: only concepts refusal;"), "{md}");
        assert!(md.contains("Scope of the plain CAA vectors: only conditions none, self, lcross, lcross-heldout, consensus; estimators ols"), "{md}");
        // a profile without scopes names none, and its A/B sizes only
        let md = markdown(&f.resolve(Some("quick")).unwrap(), &BTreeMap::new(), "");
        assert!(
            !md.contains("Scope of") && md.contains("20 A/B test questions per behaviour (the paper: 50); vectors and maps from the first 32 pairs"),
            "{md}"
        );
    }
}
