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

/// Run `lcross args`: (success, stdout, stderr).
pub fn lcross(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lcross")).args(args).output().expect("run lcross");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Run `lcross args`, which must succeed and print JSON.
pub fn json(args: &[&str]) -> Value {
    let (ok, out, err) = lcross(args);
    assert!(ok, "lcross {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lcross {args:?}: not JSON ({e}): {out}"))
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
