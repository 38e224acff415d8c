//! The coverage-guided fuzzing binary: libFuzzer drives the target named by
//! `LCROSS_FUZZ_TARGET` (see `lcross_fuzz::TARGETS`). Built and run by `scripts/fuzz`.
#![no_main]

use std::sync::OnceLock;

fn target() -> fn(&[u8]) {
    static TARGET: OnceLock<fn(&[u8])> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("LCROSS_FUZZ_TARGET").unwrap_or_default();
        lcross_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = lcross_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            eprintln!("LCROSS_FUZZ_TARGET={name:?}: expected one of {names:?}");
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
