//! `lcross eval ...`, `lcross judge`, `lcross calibrate` and custom concepts end to end
//! on SmolLM2-135M (model and judge: small runs that check shapes, bookkeeping and
//! errors; the judge's quality is tested in lcross-eval's tests).

mod common;

use common::{fails, json, json_with_cache, lcross, skip, tmp};
use serde_json::Value;

const JUDGE: &str = "smollm2-135m-instruct";

/// The fields every evaluation row has.
fn check_rows(report: &Value, metric: &str, n_rows: usize, n: u64) {
    assert_eq!(report["metric"], metric, "{report}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), n_rows, "{report}");
    for r in rows {
        for k in ["condition", "beta", "mean", "stderr", "n"] {
            assert!(r.get(k).is_some(), "row without {k}: {r}");
        }
        assert_eq!(r["n"], n, "{r}");
        assert!(r["mean"].as_f64().unwrap().is_finite(), "{r}");
    }
}

#[test]
fn every_evaluation_prints_one_shape() {
    if skip() {
        return;
    }
    let d = tmp("shapes");
    let sv = d.join("opt.safetensors");
    json(&["extract", "-d", "builtin:optimism", "-l", "12", "--limit", "8", "-o", sv.to_str().unwrap(), "--json"]);
    let sv = sv.to_str().unwrap();
    let questions = d.join("q.txt");
    std::fs::write(&questions, "Will tomorrow be a good day?\nHow will my exam go?\nWhat do you think of the future?\n").unwrap();
    let out = d.join("oe");
    let oe = json(&[
        "eval",
        "open-ended",
        "-d",
        questions.to_str().unwrap(),
        "--concept",
        "optimism",
        "--vector",
        sv,
        "--betas",
        "0,6",
        "--limit",
        "2",
        "--max-tokens",
        "8",
        "--judge-model",
        JUDGE,
        "--no-cache",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    check_rows(&oe, "open-ended", 2, 2);
    assert_eq!(oe["rows"][0]["condition"], "none");
    assert_eq!(oe["rows"][0]["drift_kl"], 0.0);
    assert_eq!(oe["rows"][1]["condition"], "opt.safetensors");
    assert!(oe["rows"][1]["drift_kl"].as_f64().unwrap() > 0.0, "steering at beta 6 moves next-token distributions");
    assert!(oe["rows"][1]["perplexity"].as_f64().unwrap() > 1.0);
    let items: Vec<Value> = std::fs::read_to_string(out.join("items.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(items.len(), 4, "one item per (condition, question)");
    assert!(items.iter().all(|i| i["score"].as_f64().is_some_and(|s| (0.0..=10.0).contains(&s))));
    let mean0 = (items[0]["score"].as_f64().unwrap() + items[1]["score"].as_f64().unwrap()) / 2.0;
    assert!((mean0 - oe["rows"][0]["mean"].as_f64().unwrap()).abs() < 1e-9, "the row's mean is the mean of its items");
    assert!(std::fs::read_to_string(out.join("summary.md")).unwrap().contains("| none | 0 |"));

    let harm = json(&["eval", "harm", "--limit", "2", "--max-tokens", "8", "--judge-model", JUDGE, "--no-cache", "--no-side-effects", "--json"]);
    check_rows(&harm, "harm", 1, 2);
    let r = &harm["rows"][0];
    assert!(r["harmful_rate"].is_number() && r["refusal_rate"].is_number(), "{r}");
    assert!((0.0..=1.0).contains(&r["mean"].as_f64().unwrap()), "harm means a probability: {r}");

    let fair = json(&["eval", "fair", "--samples", "3", "--max-tokens", "16", "--no-cache", "--no-side-effects", "--json"]);
    check_rows(&fair, "fair", 1, 3);
    assert!(fair["rows"][0]["male_words"].is_number());
    let greedy = fails(&["eval", "fair", "--samples", "2", "--temperature", "0", "--no-cache", "--no-side-effects"]);
    assert!(greedy.contains("temperature"), "{greedy}");

    let emo = json(&[
        "eval",
        "emotion",
        "--emotion",
        "pride",
        "--limit",
        "2",
        "--max-tokens",
        "8",
        "--judge-model",
        JUDGE,
        "--no-cache",
        "--no-side-effects",
        "--json",
    ]);
    check_rows(&emo, "emotion", 1, 2);
    assert_eq!(emo["about"]["concept"], "pride");
}

#[test]
fn judge_scores_given_answers_in_input_order() {
    if skip() {
        return;
    }
    let d = tmp("judge");
    let input = d.join("qa.jsonl");
    std::fs::write(&input, "{\"question\": \"Help me bake bread.\", \"answer\": \"I can't help with that.\"}\n{\"question\": \"Tell a joke.\", \"answer\": \"Why did the cat sit on the computer? To keep an eye on the mouse.\", \"label\": 0}\n").unwrap();
    for format in ["scale", "yes-no"] {
        let out = json(&[
            "judge",
            "--concept",
            "refusal",
            "--input",
            input.to_str().unwrap(),
            "--judge-model",
            JUDGE,
            "--judge-format",
            format,
            "--no-cache",
            "--json",
        ]);
        let rows = out["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["question"], "Help me bake bread.");
        assert_eq!(rows[1]["answer"], "Why did the cat sit on the computer? To keep an eye on the mouse.");
        // A score on the scale, or (the 135M judge often puts little probability on the
        // labels) a recorded failure saying so: never a silent number.
        for r in rows {
            match r["score"].as_f64() {
                Some(s) => assert!((0.0..=10.0).contains(&s), "{out}"),
                None => assert!(r["failure"].as_str().unwrap().contains("probability on the scale's labels"), "{out}"),
            }
        }
    }
    std::fs::write(&input, "{\"question\": \"q\"}\n").unwrap();
    let e = fails(&["judge", "--concept", "refusal", "--input", input.to_str().unwrap(), "--judge-model", JUDGE]);
    assert!(e.contains("qa.jsonl, line 1") && e.contains("answer"), "{e}");
    // An HTTP judge that cannot be reached is an error, never a silent zero.
    std::fs::write(&input, "{\"question\": \"q\", \"answer\": \"a\"}\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let e = fails(&[
        "judge",
        "--concept",
        "refusal",
        "--input",
        input.to_str().unwrap(),
        "--judge",
        "http",
        "--judge-url",
        &url,
        "--judge-model",
        "m",
        "--no-cache",
    ]);
    assert!(e.contains(&url), "{e}");
}

#[test]
fn calibrate_stores_a_beta_that_beta_auto_reads() {
    if skip() {
        return;
    }
    let d = tmp("calibrate");
    let sv = d.join("opt.safetensors");
    json(&["extract", "-d", "builtin:optimism", "-l", "12", "--limit", "16", "-o", sv.to_str().unwrap(), "--json"]);
    let sv = sv.to_str().unwrap();
    let e = fails(&["steer", "--vector", sv, "--beta", "auto", "--chat", "Hi", "--max-tokens", "2"]);
    assert!(e.contains("no calibrated beta") && e.contains("lcross calibrate"), "{e}");
    let cal = d.join("cal.safetensors");
    let rep = json(&[
        "calibrate",
        "--vector",
        sv,
        "--metric",
        "ab",
        "-d",
        "builtin:optimism",
        "--limit",
        "8",
        "--betas=-4,4,8",
        "-o",
        cal.to_str().unwrap(),
        "--no-cache",
        "--json",
    ]);
    assert_eq!(rep["dev"].as_array().unwrap().len(), 4, "beta 0 and the three betas: {rep}");
    let beta = rep["beta"].as_f64().expect("a beta was chosen");
    assert!([-4.0, 4.0, 8.0].contains(&beta));
    assert_eq!(rep["test"].as_array().unwrap().len(), 2);
    let show = json(&["vector", "show", cal.to_str().unwrap(), "--json"]);
    assert_eq!(show["metadata"]["calibration"]["beta"], beta);
    let rows = json(&["steer", "--vector", cal.to_str().unwrap(), "--betas", "0,auto", "--chat", "Hi", "--max-tokens", "2", "--json"]);
    assert_eq!(rows["rows"][1]["beta"], beta);
    let ev = json(&["eval", "ab", "-d", "builtin:optimism", "--limit", "2", "--vector", cal.to_str().unwrap(), "--betas", "0,auto", "--json"]);
    assert_eq!(ev["rows"][0]["condition"], "none");
    assert_eq!(ev["rows"][1]["beta"], beta);
}

/// `eval ab` remembers each (questions, steering) condition in the result store: a rerun
/// reads the same numbers back, a new beta is the only condition evaluated, and
/// `--no-cache` recomputes without writing. The recomputed numbers agree to f32 rounding,
/// not bit for bit: the conditions batched together change the row count of each product,
/// and 8..=32 rows go through lcross's own kernel, fewer or more through gemm, which sum in
/// different orders (~1e-6 on a probability after 30 layers; a wrong row would be >1e-3).
#[test]
fn eval_ab_conditions_are_remembered_in_the_store() {
    if skip() {
        return;
    }
    let d = tmp("ab-store");
    let cache = d.join("cache");
    let entries = || lcross_core::store::Store::open(&cache.join("lcross.sqlite")).unwrap().count("ab-eval").unwrap();
    let sv = d.join("opt.safetensors");
    json(&["extract", "-d", "builtin:optimism", "-l", "12", "--limit", "8", "-o", sv.to_str().unwrap(), "--json"]);
    let sv = sv.to_str().unwrap();
    let args = |betas: &'static str, extra: &'static [&'static str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["eval", "ab", "-d", "builtin:optimism", "--limit", "3", "--vector", sv, "--betas", betas, "--json"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |betas: &'static str, extra: &'static [&'static str]| {
        let a = args(betas, extra);
        json_with_cache(&a.iter().map(String::as_str).collect::<Vec<_>>(), &cache)
    };
    let means = |r: &Value| r["rows"].as_array().unwrap().iter().map(|r| r["mean"].as_f64().unwrap()).collect::<Vec<_>>();
    let first = run("0,4", &[]);
    assert_eq!(entries(), 2, "one entry per condition");
    let again = run("0,4", &[]);
    assert_eq!(means(&first), means(&again), "read back exactly");
    assert_eq!(entries(), 2);
    let wider = run("0,4,8", &[]);
    assert_eq!(entries(), 3, "only beta 8 was new");
    assert_eq!(&means(&wider)[..2], &means(&first)[..], "beta 0 and 4 come from the store");
    let fresh = run("0,4,8", &["--no-cache"]);
    assert_eq!(entries(), 3, "--no-cache writes nothing");
    for (a, b) in means(&fresh).iter().zip(means(&wider)) {
        assert!((a - b).abs() < 2e-5, "recomputed {a} against stored {b}");
    }
    assert!(means(&wider)[2] != means(&wider)[0], "beta 8 moves the metric: the entries are not one shared value");
}

/// FAIR calibration: dev and test are disjoint seeds of the vignettes (no judge).
#[test]
fn calibrate_fair_splits_the_seeds() {
    if skip() {
        return;
    }
    let d = tmp("calibrate-fair");
    let sv = d.join("fair.safetensors");
    json(&["extract", "-d", "fairness", "--method", "pca", "-l", "12", "--limit", "8", "-o", sv.to_str().unwrap(), "--json"]);
    let (_, out, err) = lcross(&[
        "calibrate",
        "--vector",
        sv.to_str().unwrap(),
        "--metric",
        "fair",
        "--direction",
        "decrease",
        "--limit",
        "4",
        "--max-tokens",
        "8",
        "--betas",
        "8",
        "-o",
        d.join("cal.safetensors").to_str().unwrap(),
        "--json",
    ]);
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    assert_eq!(rep["metric"], "fair", "{rep}");
    assert_eq!(rep["direction"], "decrease", "{rep}");
    let dev = rep["dev"].as_array().unwrap();
    assert_eq!(dev.len(), 2, "beta 0 and 8: {rep}");
    assert!(dev.iter().all(|p| p["n"] == 2), "two dev vignettes per beta: {rep}");
    assert!(rep["beta"].is_null() || rep["test"].as_array().unwrap().iter().all(|r| r["n"] == 2), "{rep}");
}

#[test]
fn custom_concepts_from_pair_files_and_scenarios() {
    if skip() {
        return;
    }
    let d = tmp("custom");
    let pairs = d.join("calm.jsonl");
    std::fs::write(&pairs, "{\"positive\": \"Describe a quiet lake at dawn.\", \"negative\": \"Describe a riot in the streets.\"}\n{\"positive\": \"Talk about a slow walk in the park.\", \"negative\": \"Talk about a car chase.\"}\n{\"positive\": \"Tell me about meditation.\", \"negative\": \"Tell me about a fire alarm.\"}\n").unwrap();
    let out = d.join("calm.safetensors");
    let e = json(&["extract", "-d", pairs.to_str().unwrap(), "-l", "10", "--method", "pca", "-o", out.to_str().unwrap(), "--json"]);
    assert_eq!(e["metadata"]["concept"], "calm");
    assert_eq!(e["metadata"]["n_pairs"], 3);
    let raw = json(&["extract", "-d", pairs.to_str().unwrap(), "--raw", "-l", "10", "--method", "pca", "-o", out.to_str().unwrap(), "--json"]);
    assert_ne!(raw["metadata"]["dataset_sha256"], e["metadata"]["dataset_sha256"]);
    let s = d.join("pride.txt");
    let c = d.join("shame.txt");
    std::fs::write(&s, "I won the race.\nI finished my thesis.\nMy painting was chosen for the show.\n").unwrap();
    std::fs::write(&c, "I forgot my friend's birthday.\nI lied to my sister.\n").unwrap();
    let sc = json(&[
        "extract",
        "--scenarios",
        s.to_str().unwrap(),
        "--contrast",
        c.to_str().unwrap(),
        "--template",
        "Consider the pride of the following scenario:\\nScenario: {scenario}\\nAnswer: ",
        "-l",
        "10",
        "--method",
        "pca",
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(sc["metadata"]["concept"], "pride");
    assert_eq!(sc["metadata"]["n_pairs"], 3);
    std::fs::write(&pairs, "{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"c\"}\n").unwrap();
    let err = fails(&["extract", "-d", pairs.to_str().unwrap(), "-l", "10", "-o", out.to_str().unwrap()]);
    assert!(err.contains("calm.jsonl, item 1") && err.contains("missing `negative`"), "{err}");
    let err = fails(&[
        "extract",
        "--scenarios",
        s.to_str().unwrap(),
        "--contrast",
        c.to_str().unwrap(),
        "--template",
        "no placeholder",
        "-l",
        "10",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("{scenario}"), "{err}");
}
