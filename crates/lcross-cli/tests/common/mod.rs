//! Helpers shared by the CLI test files: run the binary, parse its JSON, skip loudly.
#![allow(dead_code)]

use std::process::Command;

use serde_json::Value;

/// True (and says so) when real-model tests are switched off.
pub fn skip() -> bool {
    let skip = std::env::var_os("LCROSS_SKIP_MODEL_TESTS").is_some();
    if skip {
        eprintln!("SKIPPED: LCROSS_SKIP_MODEL_TESTS is set, real-model test not run");
    }
    skip
}

/// The data directory the tests read: `$LCROSS_DATA` when set, else the project's local
/// mirror `../shared/data` beside the checkout (what CI has).
pub fn test_data_dir() -> std::path::PathBuf {
    match std::env::var_os("LCROSS_DATA").filter(|d| !d.is_empty()) {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}

/// The `lcross` binary as a command, reading the tests' data directory.
pub fn lcross_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lcross"));
    cmd.env("LCROSS_DATA", test_data_dir());
    cmd
}

/// Run `lcross args`: (success, stdout, stderr).
pub fn lcross(args: &[&str]) -> (bool, String, String) {
    lcross_in(args, None)
}

/// Run `lcross args`, with its own store when `cache` is given (`LCROSS_CACHE`).
fn lcross_in(args: &[&str], cache: Option<&std::path::Path>) -> (bool, String, String) {
    let mut cmd = lcross_command();
    cmd.args(args);
    if let Some(c) = cache {
        cmd.env("LCROSS_CACHE", c);
    }
    let out = cmd.output().expect("run lcross");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Parse the JSON of a run that must have succeeded.
fn parsed(args: &[&str], (ok, out, err): (bool, String, String)) -> Value {
    assert!(ok, "lcross {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lcross {args:?}: not JSON ({e}): {out}"))
}

/// Run `lcross args`, which must succeed and print JSON.
pub fn json(args: &[&str]) -> Value {
    parsed(args, lcross(args))
}

/// Run `lcross args` with its own store (`LCROSS_CACHE=cache`), which must succeed and
/// print JSON. A test whose runs share cache keys with another test's (the same models,
/// questions and steering) uses it: a batched A/B result depends at f32 rounding on the other
/// conditions of its pass, so which test wrote an entry first would show in the other's
/// exact comparisons.
pub fn json_with_cache(args: &[&str], cache: &std::path::Path) -> Value {
    parsed(args, lcross_in(args, Some(cache)))
}

/// Run `lcross args`, which must fail; its stderr.
pub fn fails(args: &[&str]) -> String {
    let (ok, _, err) = lcross(args);
    assert!(!ok, "lcross {args:?} should fail");
    err
}

/// A fresh temporary directory for one test.
pub fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lcross-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
