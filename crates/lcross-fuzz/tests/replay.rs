//! Every committed fuzz input, replayed through its target: the seed corpora (valid and
//! near-valid files) and the regressions (inputs that once crashed a target, kept so the
//! fix stays fixed). A target panicking on any of them fails this test.

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in lcross_fuzz::TARGETS {
        let mut replayed = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
            files.sort();
            for f in files {
                let data = std::fs::read(&f).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "fuzz target `{name}` panicked on {}", f.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "fuzz target `{name}` has no corpus in {}/corpus/{name}", root.display());
        eprintln!("fuzz target {name}: {replayed} inputs replayed");
    }
}
