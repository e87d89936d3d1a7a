#!/usr/bin/env bash
# The cost of one NRI plugin on the pod path, Berth beside containerd 2.x (containerd 1.6 has no
# NRI), the same client (bench-pods --nri-socket) and the same plugin (e2e/src/nri_plugin.rs:
# subscribed to every pod and container event, it sets an env var in each container it is asked
# to create). Rounds of lifecycles alternate between no plugin and one plugin connected, on one
# daemon each; it prints the medians of RunPodSandbox, Create+StartContainer and
# Stop+RemovePodSandbox for both, and their difference.
#
#   hack/bench-nri.sh [--iterations N] [--no-containerd] [--no-build] [--keep]
#
#   --iterations N   lifecycles per condition (default 30; two rounds of N/2 each)
#   --no-containerd  Berth only
#   --no-build       use target/release as it is
#   --keep           keep the work dir
#
# berthd: release, [nri] enable on a socket of its own, no CNI network (loopback only).
# containerd: CONTAINERD2_VERSION of hack/k8s/versions.env and its runc shim, built from the
# Go module by hack/k8s/build-tools.sh (cached), Debian's runc, hack/lib/containerd.sh's config
# (its fake-eth0 CNI: lo only, like the berthd pods) with its NRI on a socket of its own. Needs
# root, docker-registry, skopeo, jq. Everything it starts is removed on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=hack/lib/bench.sh
source "$HERE/lib/bench.sh"
# shellcheck source=hack/lib/containerd.sh
source "$HERE/lib/containerd.sh"

ITER=30
DO_CONTAINERD=1
BUILD=1
KEEP=0
while (($#)); do
    case $1 in
        --iterations) ITER=${2:?}; shift 2 ;;
        --no-containerd) DO_CONTAINERD=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        *) echo "usage: $0 [--iterations N] [--no-containerd] [--no-build] [--keep]" >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
if ((BUILD)); then
    # Two builds: --bin would filter berthd's and the monitor's binaries out too.
    (cd "$REPO" && cargo build --release --locked -p berthd -p berth-shim &&
        cargo build --release --locked -p berth-e2e --bin bench-pods --bin cri)
fi
BENCH=$TARGET/release/bench-pods
CNI_PLUGINS=${CNI_PLUGINS:-/usr/lib/cni}
if ((DO_CONTAINERD)); then
    bash "$HERE/k8s/build-tools.sh" --only containerd2 containerd2-shim
    CTD2_BIN=$(bash "$HERE/k8s/build-tools.sh" --print-path --only containerd2)
fi

WORK=$(mktemp -d /tmp/bench-nri.XXXXXX)
DAEMONS=()
REG_PID=
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${DAEMONS[@]}"; do stop_pids 10 "$pid"; done
    kill_under "$WORK" "${REG_PID:-0}"
    if [[ -n $REG_PID ]]; then
        exec 3>&- || true
        end_pids 10 "$REG_PID"
    fi
    umount_under "$WORK"
    if ((KEEP)); then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

serve_test_registry "$BENCH" "$WORK"
IMAGE=$HP/berth-test/busybox:latest

# bench ID SOCK NRI_SOCK: the client against one daemon; its output in $WORK/ID.out.
bench() {
    echo
    echo "=== $1 (load average $(cut -d' ' -f1-3 /proc/loadavg)) ==="
    "$BENCH" --socket "$2" --image "$IMAGE" --nri-socket "$3" --iterations "$ITER" \
        --log-dir "$WORK/$1/logs" --json "$WORK/$1.json" | tee "$WORK/$1.out"
}

# --- berthd --------------------------------------------------------------------------------
bd=$WORK/berthd
mkdir -p "$bd/net.d"
cat >"$bd/config.toml" <<EOF
[nri]
enable = true
socket_path = "$bd/nri.sock"
plugin_path = "$bd/nri-plugins"
plugin_config_path = "$bd/nri-conf"
EOF
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$HP" >"$bd/registries.conf"
"$TARGET/release/berthd" --root "$bd/root" --state "$bd/state" --listen "$bd/state/berth.sock" \
    --config "$bd/config.toml" --registries-config "$bd/registries.conf" \
    --cni-conf-dir "$bd/net.d" --cni-bin-dir "$CNI_PLUGINS" >"$bd/berthd.log" 2>&1 3>&- &
DAEMONS+=($!)
wait_cri "$TARGET/release/cri" "$bd/state/berth.sock" "${DAEMONS[-1]}" "$bd/berthd.log"
bench berthd "$bd/state/berth.sock" "$bd/nri.sock"
stop_pids 10 "${DAEMONS[-1]}"
umount_under "$bd"

# --- containerd 2.x ------------------------------------------------------------------------
if ((DO_CONTAINERD)); then
    cd2=$WORK/containerd
    mkdir -p "$cd2"
    containerd_fake_cni "$cd2" "$CNI_PLUGINS/loopback"
    containerd_push_pause "$HP" "$WORK/kit" "$WORK/kit.log"
    containerd_registry_hosts "$WORK/containerd-hosts" "$HP"
    containerd_write_config "$cd2/config.toml" "$cd2/root" "$cd2/state" "$cd2/containerd.sock" \
        "$HP/pause:3.9" "$cd2/cni-bin" "$cd2/cni" "$WORK/containerd-hosts"
    cat >>"$cd2/config.toml" <<EOF
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = "$cd2/nri.sock"
  plugin_path = "$cd2/nri-plugins"
  plugin_config_path = "$cd2/nri-conf"
EOF
    # Its own shim before any other containerd's on PATH.
    PATH=$CTD2_BIN:$PATH "$CTD2_BIN/containerd" --config "$cd2/config.toml" --log-level warn \
        >"$cd2/containerd.log" 2>&1 3>&- &
    DAEMONS+=($!)
    wait_cri "$TARGET/release/cri" "$cd2/containerd.sock" "${DAEMONS[-1]}" "$cd2/containerd.log"
    "$TARGET/release/cri" --socket "$cd2/containerd.sock" pull "$HP/pause:3.9" >/dev/null
    bench "containerd $("$CTD2_BIN/containerd" --version | cut -d' ' -f3)" "$cd2/containerd.sock" "$cd2/nri.sock"
    mv "$WORK/containerd "*.json "$WORK/containerd.json" 2>/dev/null || true
fi

# --- summary -------------------------------------------------------------------------------
echo
echo "NRI cost on the pod path (median ms; one plugin connected minus none; $ITER lifecycles each):"
printf '  %-24s %-12s %s\n' step runtime "without -> with one plugin (difference)"
for f in "$WORK"/*.json; do
    [[ $f == */berthd.json || $f == */containerd.json ]] || continue
    name=$(basename "$f" .json)
    for step in RunPodSandbox Create+StartContainer Stop+RemovePodSandbox; do
        jq -r --arg s "$step" --arg n "$name" \
            '"  \($s | .[0:24] | . + " " * (24 - length)) \($n | . + " " * (12 - length)) \(.nri.without_plugin[$s].median_ms * 100 | round / 100) -> \(.nri.with_plugin[$s].median_ms * 100 | round / 100) (\(.nri.cost_ms[$s] * 100 | round / 100 | if . >= 0 then "+\(.)" else "\(.)" end))"' "$f"
    done
done
