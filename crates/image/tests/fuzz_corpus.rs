//! Replays the committed fuzz corpora (fuzz/corpus/unpack, fuzz/corpus/manifest:
//! seeds, what `cargo fuzz` found worth keeping, and every input that once
//! crashed) through the same checks as the fuzz targets, under plain
//! `cargo test`. See hack/fuzz.sh.

#[path = "../../../fuzz/harness/manifest.rs"]
mod manifest;
#[path = "../../../fuzz/harness/unpack.rs"]
mod unpack;

use std::path::PathBuf;

/// The files of `fuzz/corpus/<target>`, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

fn replay(target: &str, check: fn(&[u8])) {
    for (path, data) in corpus(target) {
        // Names the input if its check fails.
        eprintln!("{}", path.display());
        check(&data);
    }
}

#[test]
fn unpack_corpus() {
    replay("unpack", unpack::run);
}

#[test]
fn manifest_corpus() {
    replay("manifest", manifest::run);
}
