#!/usr/bin/env bash
# Builds Helm from its Go module (helm.sh/helm/v3, pinned below) into the cache that
# hack/k8s/build-tools.sh uses, and prints the binary's path. Cached: a run with the binary
# present runs no go command. Used by hack/chart-check.sh (helm lint / helm template).
#
#   hack/k8s/build-helm.sh            # prints .../helm-<ver>/bin/helm
#
# Cache, under ${BERTH_CACHE:-$HOME/.cache/berth}: go/ (GOPATH, module downloads) and
# go-build/ (GOCACHE), shared with build-tools.sh; helm-<ver>/bin/helm.
set -euo pipefail

# helm.sh/helm/v3: its go.mod has no replace directives, so `go install pkg@version` builds
# it exactly as released (go 1.26 or newer).
HELM_VERSION=v3.22.0

cache_root=${BERTH_CACHE:-$HOME/.cache/berth}
bin_dir=$cache_root/helm-$HELM_VERSION/bin
if [[ -x $bin_dir/helm ]]; then
    echo "$bin_dir/helm"
    exit 0
fi
command -v go >/dev/null || { echo "build-helm: go is missing (hack/install-deps.sh)" >&2; exit 1; }
mkdir -p "$bin_dir"
exec 9>"$cache_root/.helm.lock"
flock 9
if [[ ! -x $bin_dir/helm ]]; then
    tmp=$(mktemp -d "$bin_dir/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "build-helm: building helm $HELM_VERSION (a few minutes, once)" >&2
    GOPATH=$cache_root/go GOMODCACHE=$cache_root/go/pkg/mod GOCACHE=$cache_root/go-build \
        GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN=$tmp \
        go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
    mv "$tmp/helm" "$bin_dir/helm"
fi
echo "$bin_dir/helm"
