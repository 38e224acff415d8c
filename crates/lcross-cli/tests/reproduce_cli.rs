//! `lcross reproduce` on the tiny profile of the shipped experiment, end to end: a full
//! run, the same grid in two shards merged, and a run killed with SIGKILL then resumed;
//! every cell equal across them (timings aside; numbers to the last bits a cached value
//! computed in a batch of another composition may differ in, see `same_result`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use lcross_eval::reproduce::cells::same_result;
use serde_json::Value;

fn config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/paper-local.toml").display().to_string()
}

/// Cells of a run directory by id, without the timing fields.
fn cells(dir: &Path) -> BTreeMap<String, Value> {
    std::fs::read_to_string(dir.join("cells.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !k.ends_with("_s"));
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Same cells with the same values, or a short message naming the first difference.
fn assert_same(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>, what: &str) {
    let ka: Vec<&String> = a.keys().collect();
    let kb: Vec<&String> = b.keys().collect();
    assert_eq!(ka, kb, "{what}: different cells");
    for (k, v) in a {
        assert!(same_result(v, &b[k]), "{what}: cell {k} differs:\n{v}\n{}", b[k]);
    }
}

#[test]
fn tiny_profile_runs_shards_merge_and_resumes_after_kill() {
    if skip() {
        return;
    }
    let d = tmp("reproduce");
    let cfg = config();
    let single = d.join("single");
    let start = Instant::now();
    let out = json(&["reproduce", &cfg, "--profile", "tiny", "--out", single.to_str().unwrap(), "--json"]);
    eprintln!("tiny profile: {:.1} s", start.elapsed().as_secs_f64());
    assert_eq!(out["cells"], out["grid_cells"]);
    let full = cells(&single);
    assert_eq!(
        full.len(),
        48,
        "tiny grid: 2 concepts x (A/B and open-ended: none, self, consensus, 8 transfer conditions; one map-similarity cell); a t-SNE cell per model"
    );
    let report = std::fs::read_to_string(single.join("report.md")).unwrap();
    for needle in [
        "Table 1",
        "L-Cross from smollm2-135m-instruct",
        "Consensus of the sources",
        "random T (Table 2)",
        "Automatic layer pair",
        "Table 4",
        "Figure 3",
        "The paper's counts",
        "Time",
    ] {
        assert!(report.contains(needle), "report lacks `{needle}`");
    }
    let run: Value = serde_json::from_str(&std::fs::read_to_string(single.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["models"].as_object().unwrap().len(), 2);
    assert!(run["config_text"].as_str().unwrap().contains("[profiles.tiny]"));
    assert!(std::fs::read_to_string(single.join("cells.csv")).unwrap().lines().count() == 49);
    // identity needs equal hidden sizes: recorded as skipped, with the reason
    let identity = full.values().find(|c| c["condition"] == "identity").unwrap();
    assert!(identity["skipped"].as_str().unwrap().contains("hidden sizes"));
    // the interpolation regime: the concept-specific map gives back the target's own vector
    let lc = full.values().find(|c| c["condition"] == "lcross" && c["metric"] == "ab").unwrap();
    assert_eq!(lc["interpolating"], true);
    assert!(lc["cosine_to_native"].as_f64().unwrap() > 0.999);
    // open-ended: each cell judged its 2 answers (a score 0-10, or recorded judge failures)
    for c in full.values().filter(|c| c["metric"] == "open-ended" && c["skipped"].is_null()) {
        let failures = c["values"]["judge_failures"].as_f64().unwrap();
        assert_eq!(c["n"].as_f64().unwrap() + failures, 2.0, "{c}");
        if let Some(m) = c["mean"].as_f64() {
            assert!((0.0..=10.0).contains(&m), "{c}");
        }
    }
    assert!(report.contains("metric `open-ended`"));
    // automatic layer pair: a scan of several pairs, the chosen one recorded and steered at
    let auto = full.values().find(|c| c["condition"] == "lcross-autolayer" && c["metric"] == "ab").unwrap();
    assert!(auto["values"]["scan_pairs"].as_f64().unwrap() >= 9.0, "{auto}");
    assert!(auto["values"]["scan_r2_best"].as_f64().unwrap() >= auto["values"]["scan_r2_fixed"].as_f64().unwrap(), "{auto}");
    assert!(auto["mean"].as_f64().is_some_and(|m| (0.0..=1.0).contains(&m)), "{auto}");
    // chosen for steering: the target layer where the own vector moved the dev questions
    // most (every candidate's move recorded), the source layer by R^2 into it
    let steer = full.values().find(|c| c["condition"] == "lcross-autolayer-steer" && c["metric"] == "ab").unwrap();
    let v = &steer["values"];
    assert_eq!(v["dev_questions"].as_f64(), Some(10.0), "{steer}");
    let moves: Vec<(String, f64)> =
        v.as_object().unwrap().iter().filter(|(k, _)| k.starts_with("steer_effect:")).map(|(k, x)| (k.clone(), x.as_f64().unwrap())).collect();
    assert!(moves.len() >= 5, "{steer}");
    let chosen = v["steer_effect_chosen"].as_f64().unwrap();
    assert!(moves.iter().all(|(_, x)| *x <= chosen), "{steer}");
    assert_eq!(v[format!("steer_effect:{}", v["target_layer"].as_f64().unwrap())].as_f64(), Some(chosen), "{steer}");
    assert!(v["steer_effect_fixed"].as_f64().unwrap() <= chosen && v["scan_r2_fixed"].as_f64().is_some(), "{steer}");
    assert!(steer["mean"].as_f64().is_some_and(|m| (0.0..=1.0).contains(&m)), "{steer}");
    // Figure 3: 16 pair differences per model in the plane, and how pure their neighbourhoods are
    for c in full.values().filter(|c| c["metric"] == "tsne") {
        assert_eq!(c["per_item"].as_array().unwrap().len(), 2 * 16, "{c}");
        for k in ["knn_purity_hidden", "knn_purity_tsne", "knn_chance"] {
            assert!(c["values"][k].as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)), "{k} in {c}");
        }
    }
    assert!(std::fs::read_to_string(single.join("figures/tsne.svg")).unwrap().contains("sycophancy"));
    // Table 4: the refusal map against the sycophancy map and a random one
    let maps = full.values().find(|c| c["metric"] == "map-similarity" && c["concept"] == "refusal").unwrap();
    for k in ["ssim:sycophancy", "ssim_other", "ssim_random", "spectral_other", "frobenius_random"] {
        assert!(maps["values"][k].as_f64().is_some_and(f64::is_finite), "{k} in {maps}");
    }
    assert_eq!(maps["mean"], maps["values"]["ssim_other"]);
    // consensus of one source: its vector through the held-out map, which did not see the pairs
    let consensus = full.values().find(|c| c["condition"] == "consensus").unwrap();
    assert_eq!(consensus["map_saw_vector_pairs"], false);
    let heldout = full.values().find(|c| c["condition"] == "lcross-heldout" && c["concept"] == consensus["concept"]).unwrap();
    assert_eq!(consensus["cosine_to_native"], heldout["cosine_to_native"], "one source: the consensus is that source's held-out transfer");

    // Four shards (the 4 groups spread over them by hash), merged, equal the single run.
    let shards: Vec<std::path::PathBuf> = (0..4).map(|i| d.join(format!("s{i}"))).collect();
    let mut seen = 0;
    let mut nonempty = 0;
    for (i, s) in shards.iter().enumerate() {
        json(&["reproduce", &cfg, "--profile", "tiny", "--shard", &format!("{i}/4"), "--out", s.to_str().unwrap(), "--json"]);
        let c = cells(s);
        seen += c.len();
        nonempty += !c.is_empty() as usize;
    }
    assert_eq!(seen, full.len(), "every cell on exactly one shard");
    assert!(nonempty >= 2, "the groups should spread over the shards");
    let merged = d.join("merged");
    let mut args: Vec<String> = vec!["reproduce".into(), "--merge".into()];
    args.extend(shards.iter().map(|s| s.display().to_string()));
    args.extend(["--out".into(), merged.display().to_string(), "--json".into()]);
    json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_same(&cells(&merged), &full, "merged shards vs single run");
    assert!(std::fs::read_to_string(merged.join("report.md")).unwrap().contains("Table 1"));

    // A run killed mid-way (and a write torn by the kill) resumes to the same cells.
    let resumed = d.join("resumed");
    let mut child = lcross_command()
        .args(["reproduce", &cfg, "--profile", "tiny", "--out", resumed.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if std::fs::read_to_string(resumed.join("cells.jsonl")).is_ok_and(|t| t.lines().count() >= 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(resumed.join("cells.jsonl")).unwrap().write_all(b"{\"id\": \"target=qwen").unwrap();
    json(&["reproduce", &cfg, "--profile", "tiny", "--out", resumed.to_str().unwrap(), "--json"]);
    assert_same(&cells(&resumed), &full, "killed and resumed vs single run");

    // `experiment cross` from flags is the same study: its cells equal the tiny run's.
    let cross = d.join("cross");
    json(&[
        "experiment",
        "cross",
        "--pairs",
        "smollm2-135m-instruct:qwen2.5-coder-0.5b-instruct",
        "--behaviours",
        "refusal,sycophancy",
        "--betas",
        "4",
        "--limit",
        "8",
        "--test-limit",
        "4",
        "--heldout-pairs",
        "8",
        "--layer",
        "smollm2-135m-instruct=12,qwen2.5-coder-0.5b-instruct=14",
        "-o",
        cross.to_str().unwrap(),
        "--json",
    ]);
    let from_flags = cells(&cross);
    assert_eq!(from_flags.len(), 20 - 2, "the A/B and map cells but the consensus ones");
    for (id, v) in &from_flags {
        assert!(full.get(id) == Some(v), "experiment cross cell {id} differs from the reproduce run");
    }

    // A grid that grows (another beta) keeps its finished cells and adds the new ones.
    let grown_cfg = d.join("grown.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("[profiles.tiny]\n", "[profiles.tiny]\nbetas = [4.0, 8.0]\n");
    std::fs::write(&grown_cfg, text).unwrap();
    let grown_out = json(&["reproduce", grown_cfg.to_str().unwrap(), "--profile", "tiny", "--out", single.to_str().unwrap(), "--json"]);
    assert_eq!(grown_out["cells"], 48 + 2 * 2 * 10, "beta 8: self, consensus and 8 transfer cells per concept and metric");
    let grown = cells(&single);
    for (id, v) in &full {
        assert!(grown[id] == *v, "finished cell {id} was redone or changed");
    }
    // two betas: a sweep figure per concept, linked from the report
    let svg = std::fs::read_to_string(single.join("figures/sweep-qwen2.5-coder-0.5b-instruct-refusal-plain.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("L-Cross from smollm2-135m-instruct"), "{}", &svg[..svg.len().min(200)]);
    assert!(std::fs::read_to_string(single.join("report.md")).unwrap().contains("figures/sweep-qwen2.5-coder-0.5b-instruct-refusal-plain.svg"));

    // Other sizes (another profile) cannot write into this run's directory; bad shards are refused.
    let err = fails(&["reproduce", &cfg, "--profile", "quick", "--out", single.to_str().unwrap()]);
    assert!(err.contains("other sizes"), "{err}");
    let err = fails(&["reproduce", &cfg, "--profile", "tiny", "--shard", "2/2", "--out", d.join("x").to_str().unwrap()]);
    assert!(err.contains("--shard `2/2`") && err.contains("0 <= i < n"), "{err}");
    let err = fails(&["reproduce", &cfg, "--profile", "nope"]);
    assert!(err.contains("no profile `nope`"), "{err}");
}

/// The RepE concepts in the grid: HARM, FAIR and the emotion judge on a few items each,
/// every cell at its concept's own beta, with the numbers each metric adds.
#[test]
fn repe_concepts_run_harm_fair_and_emotion_cells() {
    if skip() {
        return;
    }
    let d = tmp("reproduce-repe");
    let cfg = d.join("repe.toml");
    std::fs::write(
        &cfg,
        r#"name = "repe-tiny"
targets = ["qwen2.5-coder-0.5b-instruct"]
sources = ["smollm2-135m-instruct"]
concepts = ["harmfulness", "happiness", "fairness"]
conditions = ["none", "self", "lcross", "lcross-heldout"]
betas = [4.0]
concept_betas = { harmfulness = [-4.0], fairness = [8.0] }
rescale_transfers = true
evaluations = ["harm", "emotion", "fair"]
judge = "smollm2-135m-instruct"
[layers]
"smollm2-135m-instruct" = 12
"qwen2.5-coder-0.5b-instruct" = 14
[sizes]
extract_pairs = 8
test_questions = 2
heldout_pairs = 8
eval_prompts = 2
answer_tokens = 12
"#,
    )
    .unwrap();
    let out = d.join("run");
    json(&["reproduce", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]);
    let all = cells(&out);
    // per concept: none + (self, lcross, held-out) at its one beta
    assert_eq!(all.len(), 3 * 4, "{:?}", all.keys().collect::<Vec<_>>());
    for c in all.values() {
        assert!(c["skipped"].is_null(), "{c}");
        let expected = match c["concept"].as_str().unwrap() {
            "harmfulness" => ("harm", -4.0),
            "happiness" => ("emotion", 4.0),
            _ => ("fair", 8.0),
        };
        assert_eq!(c["metric"], expected.0, "{c}");
        if c["condition"] != "none" {
            assert_eq!(c["beta"].as_f64(), Some(expected.1), "{c}");
            assert!(c["values"]["vector_norm"].as_f64().is_some_and(|x| x > 0.0), "{c}");
        }
        assert_eq!(c["vector"], "plain", "RepE vectors have no letters to balance");
        let m = c["mean"].as_f64();
        match expected.0 {
            "harm" => {
                assert!(m.is_some_and(|m| (0.0..=1.0).contains(&m)), "{c}");
                for k in ["harmful_rate", "refusal_rate"] {
                    assert!(c["values"][k].as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)), "{k} in {c}");
                }
            }
            "emotion" => assert!(m.is_none_or(|m| (0.0..=10.0).contains(&m)), "{c}"),
            _ => {
                assert!(m.is_some_and(|m| m >= 0.0), "{c}");
                assert!(c["values"]["male_words"].as_f64().is_some(), "{c}");
                assert_eq!(c["n"], 2, "{c}");
            }
        }
    }
    // the self vector is RepE's unit-norm principal component, and `rescale_transfers`
    // gives the transferred ones the same norm, recording the one they came with
    for c in all.values().filter(|c| c["condition"] != "none") {
        assert!((c["values"]["vector_norm"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{c}");
        assert_eq!(c["values"]["norm_before_rescale"].is_null(), c["condition"] == "self", "{c}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["metric `harm`, beta -4, RepE", "metric `emotion`, beta 4, RepE", "metric `fair`, beta 8, RepE", "*below* no modulation"] {
        assert!(report.contains(needle), "report lacks `{needle}`:\n{report}");
    }
    assert!(!report.contains("Metric `ab`"), "no A/B cells, no A/B paragraph");
    // a rerun computes nothing new
    let again = json(&["reproduce", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(again["cells"], 12);
    assert_same(&cells(&out), &all, "rerun");
}

/// `auto` betas: each steered cell chooses its beta among the candidates on dev questions
/// (the one that raises the A/B metric most), records every candidate's gain, and is
/// evaluated on the test questions at that beta: where it chose 4, it equals the cell of
/// the numeric beta 4 of the same grid.
#[test]
fn auto_betas_choose_each_cells_beta_on_dev_questions() {
    if skip() {
        return;
    }
    let d = tmp("reproduce-auto");
    let cfg = d.join("auto.toml");
    std::fs::write(
        &cfg,
        r#"name = "auto-tiny"
targets = ["qwen2.5-coder-0.5b-instruct"]
sources = ["smollm2-135m-instruct"]
concepts = ["refusal"]
conditions = ["none", "self", "lcross-heldout"]
betas = ["auto", 4.0]
auto_betas = [1.0, 4.0]
vectors = ["balanced"]
evaluations = ["ab"]
[layers]
"smollm2-135m-instruct" = 12
"qwen2.5-coder-0.5b-instruct" = 14
[sizes]
extract_pairs = 8
test_questions = 4
heldout_pairs = 8
"#,
    )
    .unwrap();
    let out = d.join("run");
    // its own store: its unsteered dev questions are the tiny profile's steerability scan's,
    // evaluated beside other conditions (see json_with_cache)
    json_with_cache(&["reproduce", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"], &d.join("cache"));
    let all = cells(&out);
    assert_eq!(all.len(), 5, "none + (self, held-out T) x (auto, 4): {:?}", all.keys().collect::<Vec<_>>());
    let auto: Vec<&Value> = all.values().filter(|c| c["beta"] == "auto").collect();
    assert_eq!(auto.len(), 2);
    for c in auto {
        assert!(c["skipped"].is_null(), "{c}");
        let v = &c["values"];
        let (g1, g4) = (v["dev_gain:1"].as_f64().unwrap(), v["dev_gain:4"].as_f64().unwrap());
        let chosen = v["beta_chosen"].as_f64().unwrap();
        assert_eq!(chosen, if g4 > g1 { 4.0 } else { 1.0 }, "the candidate with the larger dev gain: {c}");
        assert_eq!(v["dev_gain_chosen"].as_f64().unwrap(), g1.max(g4), "{c}");
        assert_eq!(v["dev_questions"], 10.0, "{c}");
        if chosen == 4.0 {
            let numeric = all.values().find(|x| x["condition"] == c["condition"] && x["beta"].as_f64() == Some(4.0)).unwrap();
            assert_eq!(c["per_item"], numeric["per_item"], "steered at the chosen beta: {c}\n{numeric}");
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["metric `ab`, beta auto, balanced CAA vectors", "## Automatic beta", "(β="] {
        assert!(report.contains(needle), "report lacks `{needle}`:\n{report}");
    }
}

/// `auto` betas of a RepE concept (no A/B questions): each steered cell sweeps the
/// candidates on its own metric's dev prompts (the held-out prompts after the test ones),
/// records every candidate's gain, drift and perplexity ratio, keeps those within the
/// side-effect budget and chooses the one that moves HARM most; its test prompts are then
/// answered at that beta, so where it chose -8 it equals the numeric beta -8 cell.
#[test]
fn auto_betas_of_repe_concepts_are_chosen_on_their_metrics_dev_prompts() {
    if skip() {
        return;
    }
    let d = tmp("reproduce-auto-harm");
    let cfg = d.join("auto-harm.toml");
    std::fs::write(
        &cfg,
        r#"name = "auto-harm"
targets = ["qwen2.5-coder-0.5b-instruct"]
sources = ["smollm2-135m-instruct"]
concepts = ["harmfulness"]
conditions = ["none", "self"]
betas = [4.0]
concept_betas = { harmfulness = ["auto", -8.0] }
auto_betas = [-8.0, 8.0]
evaluations = ["harm"]
judge = "smollm2-135m-instruct"
[layers]
"smollm2-135m-instruct" = 12
"qwen2.5-coder-0.5b-instruct" = 14
[sizes]
extract_pairs = 8
test_questions = 4
heldout_pairs = 8
eval_prompts = 2
answer_tokens = 8
"#,
    )
    .unwrap();
    let out = d.join("run");
    json(&["reproduce", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]);
    let all = cells(&out);
    assert_eq!(all.len(), 3, "none + self x (auto, -8): {:?}", all.keys().collect::<Vec<_>>());
    let c = all.values().find(|c| c["beta"] == "auto").unwrap();
    let v = &c["values"];
    assert_eq!(v["dev_prompts"], 2.0, "{c}");
    // (beta, gain, drift): the largest gain, ties to the least drift (`calibrate::choose`)
    let mut best: Option<(f64, f64, f64)> = None;
    for b in [-8.0, 8.0] {
        let gain = v[format!("dev_gain:{b}")].as_f64().unwrap_or_else(|| panic!("no dev gain of {b}: {c}"));
        let drift = v[format!("dev_drift:{b}")].as_f64().unwrap();
        let ratio = v[format!("dev_perplexity_ratio:{b}")].as_f64().unwrap();
        assert!(drift >= 0.0 && ratio > 0.0, "{c}");
        if gain > 0.0 && drift <= 1.0 && ratio <= 3.0 && best.is_none_or(|(_, g, d)| gain > g || (gain == g && drift < d)) {
            best = Some((b, gain, drift));
        }
    }
    match best {
        None => assert!(c["skipped"].as_str().is_some_and(|s| s.contains("no candidate of `auto_betas` moves `harm` up")), "{c}"),
        Some((b, gain, _)) => {
            assert!(c["skipped"].is_null(), "{c}");
            assert_eq!(v["beta_chosen"].as_f64(), Some(b), "the admissible candidate with the largest gain: {c}");
            assert_eq!(v["dev_gain_chosen"].as_f64(), Some(gain), "{c}");
            assert!(c["mean"].as_f64().is_some_and(|m| (0.0..=1.0).contains(&m)), "{c}");
            if b == -8.0 {
                let numeric = all.values().find(|x| x["condition"] == "self" && x["beta"].as_f64() == Some(-8.0)).unwrap();
                let (a, n) = (c["per_item"].as_array().unwrap(), numeric["per_item"].as_array().unwrap());
                assert_eq!(a.len(), n.len(), "{c}\n{numeric}");
                for (x, y) in a.iter().zip(n) {
                    assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6, "steered at the chosen beta: {c}\n{numeric}");
                }
            }
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Automatic beta") && report.contains("A RepE concept's cell"), "{report}");
}

/// `--plan` counts the grid without loading a model: the tiny profile's 48 cells, split
/// over shards exactly as the runs split them.
#[test]
fn plan_counts_the_grid_without_running_it() {
    let cfg = config();
    let p = json(&["reproduce", &cfg, "--profile", "tiny", "--plan", "--shard", "0/4", "--json"]);
    assert_eq!(p["cells"], 48, "{p}");
    assert_eq!(p["per_metric"]["ab"], 22, "{p}");
    assert_eq!(p["per_metric"]["open-ended"], 22, "{p}");
    let shards: Vec<u64> = p["per_shard"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(shards.len(), 4);
    assert_eq!(shards.iter().sum::<u64>(), 48);
    let full = json(&["reproduce", &cfg, "--plan", "--json"]);
    for m in ["ab", "harm", "fair", "emotion", "map-similarity", "tsne"] {
        assert!(full["per_metric"][m].as_u64().is_some_and(|n| n > 0), "the shipped grid has {m} cells: {full}");
    }
}

/// `--plan` (and a run) checks what the file names before anything runs: model ids,
/// layers against the model's depth, betas within f32, sizes, repeated entries.
#[test]
fn plan_refuses_what_cannot_run() {
    let d = std::env::temp_dir().join(format!("lcross-plan-checks-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let base = r#"name = "checks"
targets = ["qwen2.5-coder-0.5b-instruct"]
sources = ["smollm2-135m-instruct"]
concepts = ["refusal"]
conditions = ["none", "self", "lcross"]
betas = [4.0]
[sizes]
extract_pairs = 8
test_questions = 4
"#;
    let cases: &[(&str, &str, &[&str])] = &[
        ("model", "targets = [\"qwen2.5-coder-0.5b-instruct\"]|targets = [\"no-such-model\"]", &["targets", "no-such-model", "known ids"]),
        (
            "twice",
            "targets = [\"qwen2.5-coder-0.5b-instruct\"]|targets = [\"qwen2.5-coder-0.5b-instruct\", \"qwen2.5-coder-0.5b-instruct\"]",
            &["`targets` lists", "twice"],
        ),
        ("beta", "betas = [4.0]|betas = [4.0, 1e39]", &["`betas`", "f32"]),
        ("beta-twice", "betas = [4.0]|betas = [4.0, 4.0]", &["`betas` lists", "twice"]),
        ("size", "extract_pairs = 8|extract_pairs = 800000000000", &["sizes.extract_pairs", "more than"]),
        ("layer", "[sizes]|[layers]\n\"smollm2-135m-instruct\" = 400\n[sizes]", &["layers.smollm2-135m-instruct", "400", "0..=29"]),
        ("layer-model", "[sizes]|[layers]\n\"gemma4-1t\" = 4\n[sizes]", &["`layers`", "gemma4-1t", "known ids"]),
    ];
    for (name, edit, expect) in cases {
        let (from, to) = edit.split_once('|').unwrap();
        assert!(base.contains(from), "{name}");
        let path = d.join(format!("{name}.toml"));
        std::fs::write(&path, base.replacen(from, to, 1)).unwrap();
        let (ok, _, err) = lcross(&["reproduce", path.to_str().unwrap(), "--plan"]);
        assert!(!ok, "{name}: planned");
        for e in *expect {
            assert!(err.contains(e), "{name}: no `{e}` in: {err}");
        }
    }
    let path = d.join("fine.toml");
    std::fs::write(&path, base).unwrap();
    let (ok, out, err) = lcross(&["reproduce", path.to_str().unwrap(), "--plan"]);
    assert!(ok, "{out}{err}");
}

/// Every map family runs in the grid: one L-Cross cell per estimator (SmolLM2 -> Qwen 0.5B
/// on 8 pairs and 4 questions), each with its cosine to the target's own vector in the report.
#[test]
fn every_map_family_runs_in_the_grid() {
    if skip() {
        return;
    }
    let d = std::env::temp_dir().join(format!("lcross-families-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let cfg = d.join("families.toml");
    std::fs::write(
        &cfg,
        r#"name = "families"
targets = ["qwen2.5-coder-0.5b-instruct"]
sources = ["smollm2-135m-instruct"]
concepts = ["refusal"]
conditions = ["none", "lcross"]
estimators = ["ols", "affine", "reduced-rank", "mlp:64", "embedding"]
betas = [4.0]
evaluations = ["ab"]
[sizes]
extract_pairs = 8
test_questions = 4
"#,
    )
    .unwrap();
    let out = d.join("run");
    let (ok, _, err) = lcross(&["reproduce", cfg.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for est in ["ols", "affine", "reduced-rank", "mlp:64", "embedding"] {
        let row = report.lines().find(|l| l.starts_with(&format!("| {est} |"))).unwrap_or_else(|| panic!("no row for {est}: {report}"));
        let cosine: f64 = row.trim_end_matches('|').rsplit('|').next().unwrap().trim().parse().unwrap_or_else(|_| panic!("{row}"));
        assert!(cosine.is_finite() && cosine.abs() <= 1.0 + 1e-9, "{row}");
    }
}
