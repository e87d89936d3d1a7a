//! Replays the committed fuzz corpus of the CRI checks (fuzz/corpus/cri:
//! seeds, what `cargo fuzz` found worth keeping, and every input that once
//! crashed) through the same checks as the `cri` fuzz target, under plain
//! `cargo test`. See hack/fuzz.sh.

#[path = "../../../fuzz/harness/cri.rs"]
mod cri;

use std::path::PathBuf;

#[test]
fn cri_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/cri");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    for path in files {
        // Names the input if its check fails.
        eprintln!("{}", path.display());
        cri::run(&std::fs::read(&path).unwrap());
    }
}
