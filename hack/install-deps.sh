#!/usr/bin/env bash
# Installs the Debian packages Berth and its tests need, only those missing.
# Idempotent: a second run with everything present does nothing (no apt-get update).
# Also builds CRIU into ~/.cache/berth (hack/install-criu.sh) when it is not there.
#
#   hack/install-deps.sh          # runtime + test dependencies
#
# Needs root (apt-get). The Rust toolchain (cargo, rustc) must already be on PATH.
set -euo pipefail

PACKAGES=(
    # building: libcontainer's seccomp support links libseccomp
    pkg-config libseccomp-dev
    # running pods: CNI plugins, netns and routes, port mappings
    containernetworking-plugins iproute2 iptables
    # tests: a real OCI registry, the test images' content and tools to build and push them
    docker-registry busybox-static skopeo jq zstd curl apache2-utils perl tar gzip
    # the cluster tests (hack/cluster.sh): kube-proxy's conntrack, the cluster's images (umoci,
    # a static pause built with gcc), certificates, config templates
    conntrack umoci gcc libc6-dev openssl gettext-base iproute2 python3
    # node install and chart checks: systemd-analyze verify of berth.service (systemd need
    # not run), helm template's YAML read by hack/chart-check.sh
    systemd python3-yaml
)
# containerd 1.6 (Debian 12's) for the cluster's side-by-side runs (hack/cluster.sh up --runtime
# containerd, hack/bench-cluster.sh); it runs only with the cluster's own config and socket.
# Not when a containerd is installed already (a Docker engine's containerd.io conflicts with
# Debian's package), nor under systemd, where the package would start a system containerd.
if ! command -v containerd >/dev/null && [[ $(ps -p 1 -o comm= 2>/dev/null) != systemd ]]; then
    PACKAGES+=(containerd runc)
fi
# runc for e2e/tests/favordynmods.rs (a runc container with a cgroup namespace beside berthd),
# unless one is on PATH (a Docker engine's containerd.io brings its own and conflicts with
# Debian's). Debian's runc package starts nothing.
if ! command -v runc >/dev/null; then
    PACKAGES+=(runc)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "$0: missing packages (${missing[*]}); run as root to install them" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# CRIU for CheckpointContainer and its e2e test (e2e/tests/checkpoint.rs): Debian 12's criu
# fails on recent kernels, so hack/install-criu.sh builds CRIU 4 into ~/.cache/berth (about a
# minute the first time; a no-op once it is there).
"$(dirname "$0")/install-criu.sh"
# Debian's docker-registry package starts a registry on :5000 under systemd;
# tests run their own registries on free loopback ports and need none.
command -v cargo >/dev/null || {
    echo "$0: cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
}
