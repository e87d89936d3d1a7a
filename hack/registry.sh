#!/usr/bin/env bash
# Runs a throwaway local registry with Berth's test images, for trying things by hand
# (crictl pull, benchmarks). Tests use the Rust fixture e2e/src/registry.rs instead.
#
#   hack/registry.sh [PORT]        default port 5000; Ctrl-C stops it and deletes its storage
#
# Then e.g.: crictl pull 127.0.0.1:5000/berth-test/busybox:latest  (plain HTTP: the
# registry must be configured insecure in Berth's registries.conf).
set -euo pipefail

PORT=${1:-5000}
HERE=$(cd "$(dirname "$0")" && pwd)
IMAGES=${BERTH_TEST_IMAGES:-$HERE/../target/test-images}

"$HERE/build-test-images.sh" "$IMAGES"

DIR=$(mktemp -d -t berth-registry.XXXXXX)
cleanup() {
    if [[ -n ${PID:-} ]]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$DIR/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$DIR/registry.log" >&2; exit 1; }
    sleep 0.1
done

while IFS=$'\t' read -r ref dest mode; do
    case $mode in
        oci) args=(--preserve-digests) ;;
        index) args=(--all --preserve-digests) ;;
        v2s2) args=(--format v2s2) ;;
        *) echo "unknown mode $mode in images.list" >&2; exit 1 ;;
    esac
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false "${args[@]}" \
        "oci:$IMAGES/oci:$ref" "docker://127.0.0.1:$PORT/$dest"
    echo "127.0.0.1:$PORT/$dest"
done <"$IMAGES/images.list"

echo "registry on 127.0.0.1:$PORT (log: $DIR/registry.log); Ctrl-C to stop" >&2
wait "$PID"
