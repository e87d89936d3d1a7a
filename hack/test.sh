#!/usr/bin/env bash
# Installs what is missing, then runs every test of the workspace: unit tests,
# end-to-end tests against a real berthd and a real OCI registry, the tests against a
# single-node Kubernetes cluster on Berth (hack/cluster-test.sh) and against a kind cluster of
# three Berth nodes (hack/kind.sh all).
# Runs as root (the e2e tests create namespaces, mounts and cgroups).
#
#   hack/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

hack/install-deps.sh
# prune_stale_binaries DIR: in DIR/{debug,release}/deps, every executable (test binaries, bins:
# no extension) but the newest of each name. Each run links its test binaries anew under new
# hashes beside the older runs', which no run uses again (29 GB of them here once, which filled
# the disk and put the cluster's node under disk pressure); the libraries stay.
prune_stale_binaries() {
    local dir f
    for dir in "$1"/{debug,release}/deps; do
        [[ -d $dir ]] || continue
        find "$dir" -maxdepth 1 -type f -perm -u+x -name '*-*' ! -name '*.*' -printf '%T@ %f\n' |
            sort -rn | awk '{ n = $2; sub(/-[^-]*$/, "", n); if (seen[n]++) print $2 }' |
            while read -r f; do rm -f "$dir/$f"; done
    done
}

# Rust builds are cached outside the clone, as the Go builds are (~/.cache/berth): a clean
# clone (CI) then compiles the workspace's own crates, not its ~400 dependencies again. One
# run at a time holds the cache (a lock); a run beside it builds in ./target and says so.
# CARGO_TARGET_DIR set by the caller wins; BERTH_CARGO_CACHE=0 builds in ./target.
if [[ -z ${CARGO_TARGET_DIR:-} && ${BERTH_CARGO_CACHE:-1} != 0 ]]; then
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/berth/cargo-target
    mkdir -p "$cache"
    # The lock lives as long as this shell holds the fd. bash's `exec {fd}>` does not set
    # close-on-exec, so every program started here would inherit it and hold the lock too (a
    # `criu dump` that outlived a killed berthd once did, and the next run found the cache
    # locked): the tests run with the fd closed for them (run_tests ... {cache_lock}>&-, below),
    # while bash keeps a close-on-exec copy of it for as long as they run.
    exec {cache_lock}>"$cache.lock"
    if flock -n "$cache_lock"; then
        # A run builds the clone's crates once: incremental state would only grow the
        # cache (16 GiB of it here), so it is off and what an older run left goes.
        export CARGO_INCREMENTAL=0
        rm -rf "$cache"/{debug,release}/incremental
        prune_stale_binaries "$cache"
        # cargo never removes stale artifacts: a cache grown past 40 GiB starts again.
        if (($(du -s --block-size=1G "$cache" | cut -f1) > 40)); then
            rm -rf "$cache" && mkdir -p "$cache"
        fi
        export CARGO_TARGET_DIR=$cache
        echo "hack/test.sh: Rust builds in $cache (cached between runs)" >&2
    else
        exec {cache_lock}>&-
        unset cache_lock
        echo "hack/test.sh: $cache is in use by another run: building in ./target" >&2
    fi
fi
# run_tests ARGS...: everything after the cache setup; ARGS go to cargo test.
run_tests() {
    # The debug binaries the suites after `cargo test` run (critest, cluster, kind).
    local bins=${BERTH_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}
    # Logs and the test images stay in the clone's target/.
    mkdir -p target
    # Lints first: they are the cheapest failures to find.
    cargo fmt --all -- --check
    # The cluster tests are behind the e2e crate's `cluster` feature: linted too.
    cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
    # The Helm chart: lint, render, check against the Kubernetes API types (Helm is built once
    # from its Go module and cached in ~/.cache/berth).
    hack/chart-check.sh
    # The test images are built once and cached under target/test-images.
    hack/build-test-images.sh target/test-images
    # e2e tests start target/debug/berthd, so build every binary first.
    cargo build --workspace --bins --locked
    cargo test --workspace --locked "$@" 2>&1 | tee target/test.log
    # The monitors' mount view (crates/shim/src/monitor/mount_view.rs) once more on a `/` that
    # is shared, as systemd makes it (this machine's is private): nothing done in a view may
    # reach the host's mount table.
    unshare -m --propagation shared cargo test -p berth-shim --locked --test monitor \
        builds_see_only_their_pods_mounts 2>&1 | tee -a target/test.log
    # cargo's own summary lines are per test binary; add one total line.
    awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' target/test.log
    # critest's fast subset (hack/critest.sh --fast: a berthd, registry and pod network of its own;
    # critest is built by hack/k8s/build-tools.sh when its cache lacks it). The whole suite is
    # hack/critest.sh without --fast.
    BERTH_BIN_DIR=$bins hack/critest.sh --fast 2>&1 | tee target/critest.log
    # The e2e tests against a real single-node Kubernetes cluster on Berth (hack/cluster-test.sh):
    # on the debug berthd/berth-monitor built above (no release build); the Kubernetes tools are
    # built by hack/k8s/build-tools.sh when its cache (~/.cache/berth) lacks them (about 15 min
    # cold). BERTH_TEST_CLUSTER=0 leaves them out, and says so.
    if [[ ${BERTH_TEST_CLUSTER:-1} == 0 ]]; then
        echo "hack/test.sh: BERTH_TEST_CLUSTER=0: the cluster tests (hack/cluster-test.sh) did NOT run" >&2
    else
        BERTH_BIN_DIR=$bins hack/cluster-test.sh 2>&1 | tee target/cluster-test.log
    fi
    # A kind cluster whose three nodes (Podman containers) run Berth (hack/kind.sh all: node image
    # from the debug binaries above, kind create cluster, the seed and cross-node tests, kind delete
    # cluster). BERTH_TEST_KIND=0 leaves it out, and says so.
    if [[ ${BERTH_TEST_KIND:-1} == 0 ]]; then
        echo "hack/test.sh: BERTH_TEST_KIND=0: the kind cluster tests (hack/kind.sh all) did NOT run" >&2
    else
        BERTH_BIN_DIR=$bins hack/kind.sh all 2>&1 | tee target/kind-test.log
        # The Helm chart installing Berth onto a running cluster of kind's stock runtime
        # (containerd 1.6 nodes built the same way), switching one worker's kubelet to it.
        BERTH_BIN_DIR=$bins hack/kind.sh chart --runtime containerd 2>&1 | tee target/kind-chart.log
    fi
}
if [[ -n ${cache_lock:-} ]]; then
    run_tests "$@" {cache_lock}>&-
else
    run_tests "$@"
fi
