#!/usr/bin/env bash
# Pod lifecycle benchmark: the same client (target/release/bench-pods) against
#   berthd      a release berthd on fresh temp dirs (pods without network: loopback only);
#   containerd  containerd 1.6 + runc on fresh temp dirs, CRI plugin, cgroupfs driver, a pause
#               image from the critest kit, and a CNI conflist with only the loopback plugin,
#               so its pods get no real network either;
# N pod lifecycles (median/p90 per CRI call), N containers in one already running pod ("warm
# pod": no per-pod process start), then 50 pods with one container each (sequential
# and from 8 concurrent clients: wall time, PSS/RSS of daemon and per-pod processes while they
# run), then everything is torn down and the lists must be empty. Prints one comparison table,
# the floor (fork+exec+wait of /bin/true) and the daemons' RSS right after start.
#
#   hack/bench-pods.sh [--iterations N] [--pods N] [--concurrency N] [--nice N]
#                      [--no-berthd] [--no-containerd] [--no-build] [--keep]
#
#   --iterations N    timed lifecycles per runtime (default 30, after one warm-up)
#   --pods N          pods in the many-pods phase (default 50)
#   --concurrency N   clients in the concurrent batch (default 8)
#   --nice N          niceness of the daemons and the client (default -10, as root), so that
#                     builds running next to the benchmark disturb it less; 0 to disable
#   --keep            keep the work dir (logs, configs) for inspection
#
# Needs root, docker-registry, skopeo, curl, jq; containerd/runc optional. Everything it starts
# (registry, daemons, monitors, shims, containers, mounts, the work dir) is removed on exit,
# also on failure or Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ITER=30
PODS=50
CONC=8
NICE=-10
DO_BERTHD=1
DO_CONTAINERD=1
DO_BUILD=1
KEEP=0
# The critest kit's OCI layout holds a static pause image (containerd's CRI needs one).
KIT=${CRITEST_KIT_WORK:-/var/tmp/critest-kit}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
while (($#)); do
    case $1 in
        --iterations) ITER=${2:?}; shift 2 ;;
        --pods) PODS=${2:?}; shift 2 ;;
        --concurrency) CONC=${2:?}; shift 2 ;;
        --nice) NICE=${2:?}; shift 2 ;;
        --no-berthd) DO_BERTHD=0; shift ;;
        --no-containerd) DO_CONTAINERD=0; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage ;;
        *) echo "$0: unknown argument $1" >&2; usage ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "$0: needs root (namespaces, mounts, cgroups)" >&2; exit 1; }
for tool in docker-registry skopeo curl jq; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (hack/install-deps.sh)" >&2; exit 1; }
done
if ((DO_CONTAINERD)) && ! { command -v containerd && command -v runc; } >/dev/null; then
    echo "$0: containerd/runc not installed: containerd is skipped" >&2
    DO_CONTAINERD=0
fi

# anyhow errors without the environment's backtraces: the message says what failed.
export RUST_LIB_BACKTRACE=0
START=$EPOCHREALTIME
secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

if ((DO_BUILD)); then
    (cd "$ROOT" && cargo build --release --quiet -p berthd -p berth-shim -p berth-e2e --bins)
fi
BENCH=$TARGET/release/bench-pods
BERTHD=$TARGET/release/berthd
for b in "$BENCH" "$BERTHD" "$TARGET/release/berth-monitor"; do
    [[ -x $b ]] || { echo "$0: $b missing (run without --no-build)" >&2; exit 1; }
done

# --- work dir, cleanup ---------------------------------------------------------------------
# Short path under /tmp: unix socket paths (containerd's shim sockets too) must fit 108 bytes.
WORK=$(mktemp -d /tmp/bench-pods.XXXXXX)
DAEMONS=()
REG_PID=

umount_under() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s; reaps it.
stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Monitors and shims outlive their daemon by design: after a failure, kill every process whose
# command line names our work dir, and all their descendants (the containers), by pid.
kill_leftovers() {
    local -a pids kids
    mapfile -t pids < <(ps -eo pid=,args= | awk -v w="$WORK/" -v me=$$ 'index($0, w) && $1 != me { print $1 }')
    while ((${#pids[@]})); do
        mapfile -t kids < <(ps -eo pid=,ppid= | awk -v p=" ${pids[*]} " 'index(p, " " $2 " ") { print $1 }')
        kill -9 "${pids[@]}" 2>/dev/null || true
        pids=("${kids[@]}")
    done
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${DAEMONS[@]}"; do stop_pid "$pid"; done
    kill_leftovers
    # The registry serves until its stdin closes.
    if [[ -n $REG_PID ]]; then
        exec 3>&- || true
        stop_pid "$REG_PID"
    fi
    umount_under "$WORK"
    if ((KEEP)); then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Everything started from here on (daemons, client) inherits the niceness.
if ((NICE != 0)) && ! renice -n "$NICE" -p $$ >/dev/null; then
    echo "$0: cannot renice to $NICE: running at normal priority" >&2
    NICE=0
fi

# --- registry ------------------------------------------------------------------------------
mkfifo "$WORK/registry.in"
"$BENCH" --serve-registry <"$WORK/registry.in" >"$WORK/registry.out" 2>"$WORK/registry.err" &
REG_PID=$!
exec 3>"$WORK/registry.in"
for ((i = 0; i < 600; i++)); do
    [[ -s $WORK/registry.out ]] && break
    kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.err" >&2; exit 1; }
    sleep 0.1
done
HP=$(head -1 "$WORK/registry.out")
[[ $HP == 127.0.0.1:* ]] || { cat "$WORK/registry.err" >&2; echo "$0: registry did not start" >&2; exit 1; }
IMAGE=$HP/berth-test/busybox:latest
echo "registry $HP; image $IMAGE"

# --- floor ---------------------------------------------------------------------------------
"$BENCH" --floor 200 --json "$WORK/floor.json"

# --- berthd --------------------------------------------------------------------------------
# wait_sock SOCK PID LOG: until the daemon answers Version.
wait_sock() {
    local i
    for ((i = 0; i < 300; i++)); do
        "$TARGET/release/cri" --socket "$1" version >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "daemon did not answer on $1; log:" >&2
    tail -20 "$3" >&2
    return 1
}

if ((DO_BERTHD)); then
    BD=$WORK/berthd
    mkdir -p "$BD"
    : >"$BD/config.toml" # all defaults
    cat >"$BD/registries.conf" <<EOF
[[registry]]
location = "$HP"
insecure = true
EOF
    BERTHD_CMD=("$BERTHD" --root "$BD/root" --state "$BD/state" --listen "$BD/state/berth.sock"
        --config "$BD/config.toml" --registries-config "$BD/registries.conf")
    "${BERTHD_CMD[@]}" >"$BD/berthd.log" 2>&1 &
    BERTHD_PID=$!
    DAEMONS+=("$BERTHD_PID")
    wait_sock "$BD/state/berth.sock" "$BERTHD_PID" "$BD/berthd.log"
    sleep 1 # idle: let start-up allocations settle before the first reading
    echo
    echo "=== berthd (pid $BERTHD_PID; load average $(cut -d' ' -f1-3 /proc/loadavg)) ==="
    T0=$EPOCHREALTIME
    "$BENCH" --socket "$BD/state/berth.sock" --image "$IMAGE" --iterations "$ITER" --pods "$PODS" \
        --concurrency "$CONC" --daemon-pid "$BERTHD_PID" --pod-proc berth-monitor --match "$BD/" \
        --log-dir "$BD/logs" --json "$WORK/berthd.json"
    echo "berthd run took $(secs_since "$T0") s"
    stop_pid "$BERTHD_PID"
    umount_under "$BD"
fi

# --- containerd ----------------------------------------------------------------------------
if ((DO_CONTAINERD)); then
    CD=$WORK/containerd
    mkdir -p "$CD/cni" "$WORK/containerd-hosts/$HP"
    if [[ -d $KIT/oci ]] && jq -e '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "pause")' "$KIT/oci/index.json" >/dev/null; then
        skopeo copy --quiet --insecure-policy --dest-tls-verify=false --preserve-digests \
            "oci:$KIT/oci:pause" "docker://$HP/pause:3.9"
    else
        # Builds every critest image (~30 s) and pushes them, pause:3.9 among them.
        KIT_WORK=$WORK/kit /work/shared/critest-kit/build-and-push.sh "$HP" >"$WORK/kit.log" 2>&1
    fi
    cat >"$WORK/containerd-hosts/$HP/hosts.toml" <<EOF
server = "http://$HP"
[host."http://$HP"]
  capabilities = ["pull", "resolve"]
EOF
    # The pod gets lo up in its own netns and nothing else, like a berthd pod. containerd 1.6's
    # CRI fails RunPodSandbox unless the CNI result has an address on eth0 ("failed to find
    # network info for sandbox"), so a second, fake plugin (dash, ~1 ms) reports one on an
    # eth0 that does not exist; nothing else is set up.
    mkdir -p "$CD/cni-bin"
    ln -s /usr/lib/cni/loopback "$CD/cni-bin/loopback"
    cat >"$CD/cni-bin/fake-eth0" <<'EOF'
#!/bin/sh
case "$CNI_COMMAND" in
ADD) cat >/dev/null
    printf '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"address":"192.0.2.1/32","interface":0}]}' "$CNI_NETNS" ;;
VERSION) printf '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
*) cat >/dev/null ;;
esac
EOF
    chmod +x "$CD/cni-bin/fake-eth0"
    cat >"$CD/cni/10-bench.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "bench", "plugins": [{"type": "loopback"}, {"type": "fake-eth0"}]}
EOF
    cat >"$CD/config.toml" <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
[grpc]
  address = "$CD/containerd.sock"
[ttrpc]
  address = "$CD/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$CD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$HP/pause:3.9"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This host drops CAP_SYS_RESOURCE: runc cannot set the pause's oom_score_adj -998 (EPERM,
  # "can't get final child's PID from pipe") unless containerd clamps it to its own value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CD/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CD/cni-bin"
    conf_dir = "$CD/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$WORK/containerd-hosts"
EOF
    containerd --config "$CD/config.toml" --log-level warn >"$CD/containerd.log" 2>&1 &
    CTD_PID=$!
    DAEMONS+=("$CTD_PID")
    wait_sock "$CD/containerd.sock" "$CTD_PID" "$CD/containerd.log"
    # containerd pulls the pause image on the first RunPodSandbox; pull it now so that the
    # warm-up pod does not carry it (the kubelet's nodes have it too).
    "$TARGET/release/cri" --socket "$CD/containerd.sock" pull "$HP/pause:3.9" >/dev/null
    sleep 1
    echo
    echo "=== containerd (pid $CTD_PID; load average $(cut -d' ' -f1-3 /proc/loadavg)) ==="
    T0=$EPOCHREALTIME
    "$BENCH" --socket "$CD/containerd.sock" --image "$IMAGE" --iterations "$ITER" --pods "$PODS" \
        --concurrency "$CONC" --daemon-pid "$CTD_PID" --pod-proc containerd-shim-runc-v2 \
        --pod-proc pause --match "$CD/" --log-dir "$CD/logs" --json "$WORK/containerd.json"
    echo "containerd run took $(secs_since "$T0") s"
    stop_pid "$CTD_PID"
    umount_under "$CD"
fi

# --- table ---------------------------------------------------------------------------------
RUNTIMES=()
((DO_BERTHD)) && RUNTIMES+=(berthd)
((DO_CONTAINERD)) && RUNTIMES+=(containerd)
echo
echo "=== comparison (ms; median / p90 over $ITER lifecycles) ==="
printf '%-24s' ""
for r in "${RUNTIMES[@]}"; do printf '%22s' "$r"; done
echo
for step in RunPodSandbox CreateContainer StartContainer Create+StartContainer ExecSync \
    StopContainer RemoveContainer Stop+RemoveContainer StopPodSandbox RemovePodSandbox \
    Stop+RemovePodSandbox lifecycle; do
    printf '%-24s' "$step"
    for r in "${RUNTIMES[@]}"; do
        printf '%22s' "$(jq -r --arg s "$step" '.steps[$s] // empty | "\(.median_ms * 100 | round / 100) / \(.p90_ms * 100 | round / 100)"' "$WORK/$r.json" | sed 's/^$/-/')"
    done
    echo
done
for step in CreateContainer StartContainer StopContainer RemoveContainer; do
    printf '%-24s' "warm pod: $step"
    for r in "${RUNTIMES[@]}"; do
        printf '%22s' "$(jq -r --arg s "warm $step" '.warm[$s] // empty | "\(.median_ms * 100 | round / 100) / \(.p90_ms * 100 | round / 100)"' "$WORK/$r.json" | sed 's/^$/-/')"
    done
    echo
done
echo "(warm pod: containers one after another in one running pod, whose monitor/shim is already up)"
row() { # row LABEL JQ-EXPR: one value per runtime
    printf '%-24s' "$1"
    for r in "${RUNTIMES[@]}"; do printf '%22s' "$(jq -r "$2" "$WORK/$r.json")"; done
    echo
}
mib='(. / 1024 * 100 | round / 100)'
row "$PODS pods seq wall s" ".pods.sequential.wall_s * 1000 | round / 1000"
row "$PODS pods x$CONC wall s" ".pods.concurrent.wall_s * 1000 | round / 1000"
row "  teardown seq s" ".pods.sequential.teardown_s * 1000 | round / 1000"
row "per pod PSS MiB (seq)" ".pods.sequential.memory.per_pod_pss_kb | $mib"
row "per pod RSS MiB (seq)" ".pods.sequential.memory.per_pod_rss_kb | $mib"
row "per pod PSS MiB (x$CONC)" ".pods.concurrent.memory.per_pod_pss_kb | $mib"
row "daemon PSS MiB, $PODS pods" ".pods.sequential.memory.daemon.pss_kb | $mib"
row "daemon RSS MiB, $PODS pods" ".pods.sequential.memory.daemon.rss_kb | $mib"
row "daemon RSS MiB idle" ".daemon_start.rss_kb | $mib"
row "daemon PSS MiB idle" ".daemon_start.pss_kb | $mib"
row "daemon RSS MiB at end" ".daemon_end.rss_kb | $mib"
echo "per-pod processes: berthd: berth-monitor; containerd: containerd-shim-runc-v2 + pause"
echo "(per pod = sum of PSS/RSS of those processes / $PODS, read from /proc/PID/smaps_rollup 1 s after the last start)"
echo
echo "commands:"
((DO_BERTHD)) && echo "  berthd:     ${BERTHD_CMD[*]}  (empty config: defaults; registries.conf marks $HP insecure)"
echo "  client:     $BENCH --socket SOCK --image $IMAGE --iterations $ITER --pods $PODS --concurrency $CONC ..."
if ((DO_CONTAINERD)); then
    echo "  containerd: containerd --config $CD/config.toml ($(containerd --version | cut -d' ' -f3), $(runc --version | head -1)); config:"
    sed 's/^/      /' "$CD/config.toml"
    echo "    CNI conflist: $(cat "$CD/cni/10-bench.conflist")"
    echo "    hosts.toml for $HP: server = \"http://$HP\" (plain HTTP)"
fi
jq -r '"floor: fork+exec+wait of /bin/true x\(.floor.n): median \(.floor.median_ms * 1000 | round / 1000) ms, p90 \(.floor.p90_ms * 1000 | round / 1000) ms"' "$WORK/floor.json"
echo "load average: $LOAD0 at start, $(cut -d' ' -f1-3 /proc/loadavg) at end; $(nproc) CPUs; niceness $NICE"
echo "total benchmark time: $(secs_since "$START") s"
