//! The `lcross` binary end to end on SmolLM2-135M: JSON shapes of the documented
//! commands, and clear errors (exit code 1, message on stderr) for bad input.

mod common;

use common::{json, lcross, lcross_command, skip, tmp};

#[test]
fn tokenize_hidden_generate_json() {
    if skip() {
        return;
    }
    let t = json(&["tokenize", "--chat", "Hello", "--json"]);
    assert!(t["text"].as_str().unwrap().contains("<|im_start|>user\nHello<|im_end|>"));
    assert!(t["ids"].as_array().unwrap().len() > 5);
    let h = json(&["hidden", "--layer", "15", "--ids", "1,2,3", "--json"]);
    assert_eq!(h["layer"], 15);
    assert_eq!(h["hidden"].as_array().unwrap().len(), 576);
    assert_eq!(h["top5"].as_array().unwrap().len(), 5);
    let g = json(&["generate", "--chat", "--max-tokens", "5", "Say hi", "--json"]);
    assert!(!g["ids"].as_array().unwrap().is_empty());
}

#[test]
fn extract_show_eval_align_transfer() {
    if skip() {
        return;
    }
    let d = tmp("flow");
    let sv = d.join("sv.safetensors");
    let e = json(&["extract", "-d", "builtin:optimism", "-l", "10,12", "--limit", "8", "-o", sv.to_str().unwrap(), "--json"]);
    assert_eq!(e["metadata"]["n_pairs"], 8);
    let show = json(&["vector", "show", sv.to_str().unwrap(), "--json"]);
    assert_eq!(show["metadata"]["layers"], serde_json::json!([10, 12]));
    assert_eq!(show["layers"]["12"].as_array().unwrap().len(), 576);
    let ev = json(&["eval", "ab", "-d", "builtin:optimism", "--limit", "3", "--vector", sv.to_str().unwrap(), "--beta", "2", "--json"]);
    assert_eq!(ev["metric"], "ab_prob_matching");
    assert_eq!(ev["rows"][0]["n"], 3);
    assert_eq!(ev["rows"][0]["beta"], 2.0);
    let p = ev["rows"][0]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    // A map from the model to itself on the concept's texts, and a transfer through it.
    let map = d.join("map.safetensors");
    let m = json(&[
        "align",
        "--source",
        "smollm2-135m-instruct",
        "--source-layer",
        "12",
        "--target",
        "smollm2-135m-instruct",
        "--target-layer",
        "12",
        "--corpus",
        "builtin:optimism",
        "--limit",
        "8",
        "-o",
        map.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(m["diagnostics"]["n"], 16);
    assert_eq!(m["diagnostics"]["interpolating"], true);
    let moved = d.join("moved.safetensors");
    let t = json(&["transfer", "--vector", sv.to_str().unwrap(), "--map", map.to_str().unwrap(), "-o", moved.to_str().unwrap(), "--json"]);
    assert_eq!(t["method"], "transferred");
    // A map fitted on the next 8 pairs (held out of the vector's pairs) records its range.
    let held = d.join("held.safetensors");
    let h = json(&[
        "align",
        "--source",
        "smollm2-135m-instruct",
        "--source-layer",
        "12",
        "--target",
        "smollm2-135m-instruct",
        "--target-layer",
        "12",
        "--corpus",
        "builtin:optimism",
        "--skip",
        "8",
        "--limit",
        "8",
        "-o",
        held.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(h["diagnostics"]["n"], 16);
    assert!(h["corpus"].as_str().unwrap().contains("from item 8"), "{}", h["corpus"]);
    assert_ne!(h["corpus_sha256"], m["corpus_sha256"]);
    let (ok, _, err) = lcross(&[
        "align",
        "--source",
        "smollm2-135m-instruct",
        "--source-layer",
        "12",
        "--target",
        "smollm2-135m-instruct",
        "--target-layer",
        "12",
        "--corpus",
        "builtin:optimism",
        "--skip",
        "100000",
        "-o",
        d.join("none.safetensors").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no pairs left after skipping 100000"), "{err}");
    let c = json(&["compare-maps", map.to_str().unwrap(), map.to_str().unwrap(), "--json"]);
    assert!((c["a_vs_b"]["ssim"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!(c["a_vs_random"]["ssim"].as_f64().unwrap() < 0.99);

    // llama.cpp control vector: export, import back (same values), refused for another size.
    let gguf = d.join("optimism.gguf");
    json(&["vector", "export", sv.to_str().unwrap(), "-o", gguf.to_str().unwrap(), "--json"]);
    let back = d.join("back.safetensors");
    json(&["vector", "import", gguf.to_str().unwrap(), "-m", "smollm2-135m-instruct", "-o", back.to_str().unwrap(), "--json"]);
    let again = json(&["vector", "show", back.to_str().unwrap(), "--json"]);
    assert_eq!(again["metadata"]["layers"], serde_json::json!([10, 12]));
    assert_eq!(again["layers"]["12"], show["layers"]["12"], "export then import keeps every value");
    assert_eq!(again["metadata"]["concept"], "optimism");
    let (ok, _, err) =
        lcross(&["vector", "import", gguf.to_str().unwrap(), "-m", "qwen2.5-coder-0.5b-instruct", "-o", d.join("wrong.safetensors").to_str().unwrap()]);
    assert!(!ok && err.contains("has hidden size 896"), "{err}");

    // A layer sweep (self modulation at -beta and +beta per layer), resumed without rework.
    let sweep = d.join("sweep");
    let args = [
        "experiment",
        "layer-sweep",
        "--models",
        "smollm2-135m-instruct",
        "--layers",
        "10,12",
        "--limit",
        "4",
        "--test-limit",
        "2",
        "--beta",
        "4",
        "-o",
        sweep.to_str().unwrap(),
        "--json",
    ];
    let cells = json(&args);
    assert_eq!(cells.as_array().unwrap().len(), 4, "2 layers x 2 betas");
    let lines = std::fs::read_to_string(sweep.join("results.jsonl")).unwrap();
    assert_eq!(json(&args), cells, "a rerun reads the finished cells");
    assert_eq!(std::fs::read_to_string(sweep.join("results.jsonl")).unwrap(), lines, "and computes nothing again");
    assert!(std::fs::read_to_string(sweep.join("results.md")).unwrap().contains("beta -4 | beta 4"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = tmp("bad");
    let (ok, _, err) = lcross(&["tokenize", "-m", "no-such-model", "hi"]);
    assert!(!ok && err.contains("no-such-model"), "{err}");
    if skip() {
        return;
    }
    let (ok, _, err) = lcross(&["hidden", "--layer", "99", "hi"]);
    assert!(!ok && err.contains("layer 99 is out of range"), "{err}");
    let (ok, _, err) = lcross(&["generate", ""]);
    assert!(!ok && err.contains("empty prompt"), "{err}");
    let bad = d.join("bad.json");
    std::fs::write(&bad, "[{\"question\": 3}]").unwrap();
    let (ok, _, err) = lcross(&["extract", "-d", bad.to_str().unwrap(), "-l", "3", "-o", d.join("x.safetensors").to_str().unwrap()]);
    assert!(!ok && err.contains("bad.json, item 0"), "{err}");
    assert!(!d.join("x.safetensors").exists());
    let (ok, _, err) = lcross(&["vector", "show", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("bad.json"), "{err}");
    // A cause is said once, not once per layer of the error.
    let (ok, _, err) = lcross(&["vector", "show", d.join("missing.safetensors").to_str().unwrap()]);
    assert!(!ok && err.matches("No such file").count() == 1, "{err}");
    // A byte-order mark is read past; bytes that are not UTF-8 are located.
    let bom = d.join("bom.jsonl");
    std::fs::write(&bom, b"\xEF\xBB\xBF{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"c\", \"negative\": \"d\"}\n").unwrap();
    let (ok, _, err) = lcross(&["extract", "-d", bom.to_str().unwrap(), "-l", "2", "-o", d.join("bom.safetensors").to_str().unwrap()]);
    assert!(ok, "{err}");
    let latin1 = d.join("latin1.jsonl");
    std::fs::write(&latin1, b"{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"caf\xE9\", \"negative\": \"d\"}\n").unwrap();
    let (ok, _, err) = lcross(&["extract", "-d", latin1.to_str().unwrap(), "-l", "2", "-o", d.join("l.safetensors").to_str().unwrap()]);
    assert!(!ok && err.contains("latin1.jsonl") && err.contains("line 2, column 18"), "{err}");
    // A range is bounded before it is expanded (this was an 8 GB list).
    let (ok, _, err) = lcross(&["extract", "-d", "builtin:optimism", "-l", "0-1000000000", "-o", d.join("y.safetensors").to_str().unwrap()]);
    assert!(!ok && err.contains("0-1000000000") && err.contains("at most 4096 layers"), "{err}");
    // -o onto a symlink leaves the link and its target alone.
    #[cfg(unix)]
    {
        let target = d.join("target.txt");
        std::fs::write(&target, "keep").unwrap();
        let link = d.join("v.safetensors");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (ok, _, err) = lcross(&["extract", "-d", "builtin:optimism", "--limit", "4", "-l", "3", "-o", link.to_str().unwrap()]);
        assert!(!ok && err.contains("v.safetensors is a symlink") && err.contains("LCROSS_REPLACE_SPECIAL"), "{err}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
    // A steering whose squared norm overflows f32 is an error, not an empty answer with exit 0.
    let v = d.join("v3.safetensors");
    json(&["--json", "extract", "-d", "builtin:optimism", "--limit", "4", "-l", "3", "-o", v.to_str().unwrap()]);
    let (ok, out, err) = lcross(&["steer", "--vector", v.to_str().unwrap(), "--beta", "1e30", "--max-tokens", "3", "Hello"]);
    assert!(!ok && err.contains("layer 3") && err.contains("lower beta"), "{out} {err}");
}

/// The README's first command: the demo runs end to end and its numbers say what the
/// method predicts (interpolating map: the transferred vector is the native one; a map
/// fitted on other pairs still transfers a vector close to it and steers).
#[test]
fn demo_end_to_end() {
    if skip() {
        return;
    }
    let d = tmp("demo");
    let out = json(&["demo", "--max-tokens", "12", "--out", d.to_str().unwrap(), "--json"]);
    assert_eq!(out["map"]["diagnostics"]["interpolating"], true);
    let f = |k: &str| out[k].as_f64().unwrap_or_else(|| panic!("demo --json: no number `{k}`: {out}"));
    assert!(f("cosine_transferred_native") > 0.9999, "{out}");
    assert_eq!(out["heldout_map"]["diagnostics"]["n"], 64);
    let c = f("cosine_heldout");
    assert!(c > 0.8 && c < 0.9999, "held-out cosine {c}");
    assert!(f("ab_self") > f("ab_none") + 0.03, "self modulation does not steer: {out}");
    assert!((f("ab_lcross") - f("ab_self")).abs() < 1e-3, "interpolating L-Cross differs from self: {out}");
    assert!(f("ab_lcross_heldout") > f("ab_none") + 0.03, "held-out L-Cross does not steer: {out}");
    assert_ne!(out["unsteered"], out["steered"]);
    for f in ["source.safetensors", "native.safetensors", "map.safetensors", "transferred.safetensors", "map-second-half.safetensors"] {
        assert!(d.join(f).exists(), "demo did not write {f}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn steer_prompts_and_betas_are_rows_of_one_batch() {
    if skip() {
        return;
    }
    let d = tmp("rows");
    let sv = d.join("sv.safetensors");
    json(&["extract", "-d", "builtin:optimism", "-l", "12", "--limit", "16", "-o", sv.to_str().unwrap(), "--json"]);
    let prompts = d.join("prompts.txt");
    std::fs::write(&prompts, "How was your day?\n\n{\"prompt\": \"Describe the future of cities.\"}\n").unwrap();
    let out = json(&[
        "steer",
        "--chat",
        "--vector",
        sv.to_str().unwrap(),
        "--betas=-6,0,6",
        "--prompts",
        prompts.to_str().unwrap(),
        "--max-tokens",
        "12",
        "--batch-size",
        "4",
        "--json",
    ]);
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "2 prompts x 3 betas");
    assert_eq!(rows[4]["prompt"], "Describe the future of cities.");
    assert_eq!(rows[4]["beta"], 0.0);
    // Every batched row equals the same prompt steered alone (greedy).
    for r in [&rows[0], &rows[5]] {
        let beta = format!("--beta={}", r["beta"]);
        let alone = json(&["steer", "--chat", "--vector", sv.to_str().unwrap(), &beta, "--max-tokens", "12", r["prompt"].as_str().unwrap(), "--json"]);
        assert_eq!(alone["ids"], r["ids"], "row {r}");
    }
    assert_ne!(rows[0]["ids"], rows[2]["ids"], "beta -6 and +6 gave the same answer");
    // A malformed prompts file names the file and the line.
    std::fs::write(&prompts, "fine\n{\"text\": 3}\n").unwrap();
    let (ok, _, err) = lcross(&["steer", "--vector", sv.to_str().unwrap(), "--beta", "1", "--prompts", prompts.to_str().unwrap()]);
    assert!(!ok && err.contains("prompts.txt, line 2") && err.contains("\"prompt\""), "{err}");
}

/// Output into a pipe whose reader has gone (`lcross ... | head`) ends the process
/// quietly, as Unix tools do, not with a panic on stderr. Needs no model.
#[cfg(unix)]
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/paper-local.toml");
    let mut child = lcross_command().args(["reproduce", config.to_str().unwrap(), "--plan"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the reader goes before anything is written
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE: {:?}", out.status);
}

/// The cache proves its values: a cached state whose bytes changed is recomputed (the
/// vector is the one of a clean run, and the run says so once); `lcross cache check`
/// finds changed values and damaged files, `--repair` and `clear` fix them.
#[test]
fn the_cache_proves_its_values() {
    if skip() {
        return;
    }
    let d = tmp("cache");
    let cache = d.join("cache");
    let db = cache.join("lcross.sqlite");
    let run = |args: &[&str]| {
        let out = lcross_command().args(args).env("LCROSS_CACHE", &cache).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let extract = |name: &str| {
        let p = d.join(name);
        let (ok, _, err) = run(&["extract", "-d", "builtin:optimism", "--limit", "4", "-l", "3", "-o", p.to_str().unwrap()]);
        (ok, std::fs::read(&p).ok(), err)
    };
    let (ok, clean, _) = extract("a.safetensors");
    assert!(ok);
    let (ok, out, err) = run(&["--json", "cache", "check"]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["entries"]["activation"].as_u64().unwrap() >= 8 && report["bad_checksums"] == 0, "{report}");
    // Change one bit of every cached state, as bit rot would.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT key, value FROM entries WHERE kind = 'activation'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (key, mut value) in rows {
            value[5] ^= 0x20;
            conn.execute("UPDATE entries SET value = ?1 WHERE kind = 'activation' AND key = ?2", rusqlite::params![value, key]).unwrap();
        }
    }
    let (ok, out, err) = run(&["cache", "check"]);
    assert!(!ok && out.contains("failed checksums") && err.contains("--repair"), "{out}{err}");
    let (ok, again, err) = extract("b.safetensors");
    assert!(ok, "{err}");
    assert_eq!(err.matches("failed its checksum").count(), 1, "reported once: {err}");
    assert_eq!(again, clean, "recomputed, not served: the vector is the clean run's");
    let (ok, out, err) = run(&["cache", "check"]);
    assert!(ok, "rewritten: {out}{err}");
    // A damaged file: the run names it and says what to do; check says so; clear fixes it.
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(8192).skip(16) {
        *b = 0x5A;
    }
    std::fs::write(&db, &bytes).unwrap();
    let (ok, _, err) = extract("c.safetensors");
    assert!(!ok && err.contains("lcross.sqlite") && err.contains("lcross cache clear"), "{err}");
    let (ok, out, err) = run(&["cache", "check"]);
    assert!(!ok && err.contains("damaged"), "{out}{err}");
    let (ok, out, _) = run(&["cache", "clear"]);
    assert!(ok && out.contains("removed") && !db.exists(), "{out}");
    let (ok, again, err) = extract("d.safetensors");
    assert!(ok && again == clean, "{err}");
}
