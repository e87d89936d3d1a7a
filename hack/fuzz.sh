#!/usr/bin/env bash
# Fuzzes one target of fuzz/ with cargo-fuzz (libFuzzer) for SECONDS (issue 13):
#   unpack    layer blobs (tar / gzip / zstd) into a temp dir: nothing outside it, limits hold
#   manifest  manifests, indexes, platform choice, image configs, digests, references
#   cri       RunPodSandbox's pod config check and CreateContainer's spec building
#
#   hack/fuzz.sh TARGET [SECONDS] [libFuzzer args...]   fuzz (default 600 s); new inputs go
#                                                      to fuzz/corpus/TARGET, crashes to
#                                                      fuzz/artifacts/TARGET
#   hack/fuzz.sh --cmin TARGET                         minimize fuzz/corpus/TARGET in place
#
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take libFuzzer's -Z flags.
# FUZZ_SANITIZER=none skips AddressSanitizer (faster; default address). FUZZ_NICE (default
# 19) keeps it to idle CPU. Crashes become tests: the corpus replay tests
# (crates/image/tests/fuzz_corpus.rs, crates/spec/tests/fuzz_corpus.rs) run every file of
# fuzz/corpus/ under plain `cargo test`; put a crashing input there once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# The unpack target makes and removes a directory per input: a tmpfs is much faster.
export BERTH_FUZZ_TMPDIR=${BERTH_FUZZ_TMPDIR:-/dev/shm}
sanitizer=${FUZZ_SANITIZER:-address}
build=(-O -a -s "$sanitizer")

if [[ ${1:-} == --cmin ]]; then
    target=${2:?usage: hack/fuzz.sh --cmin TARGET}
    # Edges only (no hit counters): a few hundred files per target, not thousands.
    nice -n "${FUZZ_NICE:-19}" cargo fuzz cmin "${build[@]}" "$target" "corpus/$target" -- \
        -use_counters=0
    # cmin names every file by its hash: bring the readable seeds back, without their copies.
    python3 seeds.py
    for s in "corpus/$target"/seed-*; do
        rm -f "corpus/$target/$(sha1sum "$s" | cut -d' ' -f1)"
    done
    exit 0
fi

target=${1:?usage: hack/fuzz.sh unpack|manifest|cri [SECONDS] [libFuzzer args...]}
secs=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
case $target in
    unpack) max_len=65536 ;;
    manifest) max_len=16384 ;;
    cri) max_len=8192 ;;
    *) echo "unknown target $target (unpack, manifest, cri)" >&2; exit 2 ;;
esac
mkdir -p "corpus/$target" "artifacts/$target"
exec nice -n "${FUZZ_NICE:-19}" cargo fuzz run "${build[@]}" "$target" "corpus/$target" -- \
    -max_total_time="$secs" -max_len="$max_len" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 "$@"
