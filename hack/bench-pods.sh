#!/usr/bin/env bash
# Pod lifecycle benchmark: the same client (target/release/bench-pods) against
#   berthd          a release berthd on fresh temp dirs, an empty CNI conf dir: pods without
#                   network (loopback only, brought up by berthd itself);
#   berthd CNI      the same with a real CNI network of the benchmark's own (below);
#   containerd      containerd 1.6 + runc on fresh temp dirs, CRI plugin, cgroupfs driver, a pause
#                   image from the critest kit, and a fake CNI plugin (see the containerd
#                   section) so that its pods get no real network either;
#   containerd CNI  the same with the benchmark's real network;
# N pod lifecycles (median/p90 per CRI call), N containers in one already running pod ("warm
# pod": no per-pod process start), then 50 pods with one container each (sequential
# and from 8 concurrent clients: wall time, PSS/RSS of daemon and per-pod processes while they
# run), then everything is torn down and the lists must be empty. Prints one comparison table,
# the CNI cost (with minus without network: RunPodSandbox = ADD, Stop+RemovePodSandbox = DEL),
# the floors (fork+exec+wait of /bin/true; the monitor's libcontainer create/start/kill/delete
# without berthd, crates/shim/examples/monitor-profile.rs) and the distance to them.
#
# The benchmark's network (bench-pods --serve-net): bridge bbench<pid> (isGateway, hairpin,
# ipMasq false: nothing is ever masqueraded, pods only talk to loopback and pod IPs), host-local
# on a free 10.87.x.0/24 (locked like the e2e tests' networks) with its store in the work dir,
# portmap (snat). berthd gets loopback + bridge + portmap (the issue's three plugin executions;
# --no-cni-loopback: bridge + portmap, as hack/cni/10-berth.conflist), containerd bridge +
# portmap (its CRI runs the loopback plugin itself before every conflist: three as well). After
# each CNI run no veth may be left on the bridge, no address in host-local's store, no iptables
# rule naming the subnet; at the end the bridge is deleted and that is checked again.
#
# Measuring waits for a quiet machine first: until the 1-minute load average is below
# --quiet-load (polled every 20 s, at most --quiet-wait minutes; then it measures anyway and
# says so), and again before each runtime (at most --quiet-gap minutes).
#
#   hack/bench-pods.sh [--iterations N] [--pods N] [--concurrency N] [--nice N]
#                      [--no-berthd] [--no-containerd] [--no-cni] [--no-cni-loopback]
#                      [--profile N] [--quiet-load L] [--quiet-wait MIN] [--quiet-gap MIN]
#                      [--no-build] [--keep]
#   hack/bench-pods.sh --scale 10,50,110,250 [--scale-probes N] [--scale-list-calls N]
#                      [--no-berthd] [--no-containerd]
#                      [--no-cni-loopback] [--nice N] [--quiet-*] [--no-build] [--keep]
#
# --scale: the scaling table instead (bench-pods --scale, e2e/src/bin/bench-pods/scale.rs), on
# the CNI network only (berthd CNI, containerd CNI): pods with one container each are started
# one after another up to each size and kept running; at each size the daemon's and the
# per-pod processes' idle CPU (10 s), memory, ListPodSandbox / ListContainers /
# ListContainerStats (30 calls each) and --scale-probes further pods started and torn down
# one at a time on top (RunPodSandbox, Create+StartContainer, teardown: median and p99).
# Sizes up to 250 (the network is a /24).
#
#   --iterations N    timed lifecycles per runtime (default 30, after one warm-up)
#   --pods N          pods in the many-pods phase (default 50)
#   --concurrency N   clients in the concurrent batch (default 8)
#   --nice N          niceness of the daemons and the client (default -10, as root), so that
#                     builds running next to the benchmark disturb it less; 0 to disable
#   --no-cni          skip the runs with a CNI network
#   --no-cni-loopback berthd's CNI conflist without the loopback plugin
#   --profile N       monitor-profile iterations for the libcontainer floor (default 30; 0: skip)
#   --quiet-load L    "quiet" is a 1-minute load average below L (default 1.0)
#   --quiet-wait MIN  wait at most MIN minutes for quiet before measuring (default 25; 0: don't)
#   --quiet-gap MIN   ... and at most MIN minutes before each further runtime (default 5)
#   --scale N,N,...   the scaling table at these pod counts (ascending, at most 250)
#   --scale-probes N  probe pods at each size (default 30)
#   --scale-list-calls N  calls of each List RPC at each size (default 30)
#   --keep            keep the work dir (logs, configs) for inspection
#
# Needs root, docker-registry, skopeo, curl, jq, ip, iptables-save, the CNI plugins in
# /usr/lib/cni; containerd/runc optional. Everything it starts (registry, network, daemons,
# monitors, shims, containers, mounts, the work dir) is removed on exit, also on failure or
# Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=hack/lib/bench.sh
source "$HERE/lib/bench.sh"
# shellcheck source=hack/lib/containerd.sh
source "$HERE/lib/containerd.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ITER=30
PODS=50
CONC=8
NICE=-10
DO_BERTHD=1
DO_CONTAINERD=1
DO_BUILD=1
DO_CNI=1
CNI_LOOPBACK=1
PROF_ITER=30
QUIET_LOAD=1.0
QUIET_WAIT=25
QUIET_GAP=5
KEEP=0
SCALE=
SCALE_PROBES=30
SCALE_LISTS=30

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
        --no-cni) DO_CNI=0; shift ;;
        --no-cni-loopback) CNI_LOOPBACK=0; shift ;;
        --profile) PROF_ITER=${2:?}; shift 2 ;;
        --quiet-load) QUIET_LOAD=${2:?}; shift 2 ;;
        --quiet-wait) QUIET_WAIT=${2:?}; shift 2 ;;
        --quiet-gap) QUIET_GAP=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --scale) SCALE=${2:?}; shift 2 ;;
        --scale-probes) SCALE_PROBES=${2:?}; shift 2 ;;
        --scale-list-calls) SCALE_LISTS=${2:?}; shift 2 ;;
        -h | --help) usage ;;
        *) echo "$0: unknown argument $1" >&2; usage ;;
    esac
done
if [[ -n $SCALE ]]; then
    [[ $SCALE =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "$0: --scale $SCALE: pod counts, comma-separated" >&2; exit 2; }
    ((${SCALE##*,} <= 250)) || { echo "$0: --scale $SCALE: at most 250 pods (the network is a /24)" >&2; exit 2; }
    [[ $SCALE_PROBES =~ ^[1-9][0-9]*$ && $SCALE_LISTS =~ ^[1-9][0-9]*$ ]] ||
        { echo "$0: --scale-probes and --scale-list-calls: counts above 0" >&2; exit 2; }
    # The scaling table is about pods on a network: no runs without one, no floors.
    ((DO_CNI)) || { echo "$0: --scale needs the CNI network (drop --no-cni)" >&2; exit 2; }
    PROF_ITER=0
fi
[[ $EUID -eq 0 ]] || { echo "$0: needs root (namespaces, mounts, cgroups)" >&2; exit 1; }
for tool in docker-registry skopeo curl jq ip iptables-save; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (hack/install-deps.sh)" >&2; exit 1; }
done
if ((DO_CONTAINERD)) && ! { command -v containerd && command -v runc; } >/dev/null; then
    echo "$0: containerd/runc not installed: containerd is skipped" >&2
    DO_CONTAINERD=0
fi
CNI_PLUGINS=/usr/lib/cni
if ((DO_CNI)); then
    for p in loopback bridge host-local portmap; do
        [[ -x $CNI_PLUGINS/$p ]] || { echo "$0: missing $CNI_PLUGINS/$p (containernetworking-plugins)" >&2; exit 1; }
    done
fi

# anyhow errors without the environment's backtraces: the message says what failed.
export RUST_LIB_BACKTRACE=0
START=$EPOCHREALTIME
secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

if ((DO_BUILD)); then
    (cd "$ROOT" && cargo build --release --quiet -p berthd -p berth-shim -p berth-e2e --bins)
    if ((PROF_ITER)) && ! (cd "$ROOT" && cargo build --release --quiet -p berth-shim --example monitor-profile); then
        echo "$0: monitor-profile does not build: no libcontainer floor" >&2
        PROF_ITER=0
    fi
fi
MPROF=$TARGET/release/examples/monitor-profile
if ((PROF_ITER)) && [[ ! -x $MPROF ]]; then
    echo "$0: $MPROF missing: no libcontainer floor" >&2
    PROF_ITER=0
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
NET_PID=
BR=

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${DAEMONS[@]}"; do stop_pids 10 "$pid"; done
    # Monitors and shims outlive their daemon by design (the network holder is ended below).
    kill_under "$WORK" "${NET_PID:-0}" "${REG_PID:-0}"
    # The registry serves until its stdin closes.
    if [[ -n $REG_PID ]]; then
        exec 3>&- || true
        end_pids 10 "$REG_PID"
    fi
    umount_under "$WORK"
    # The network goes last (no pod holds a veth on it any more): its holder deletes the
    # bridge and the subnet's iptables rules when its stdin closes.
    if [[ -n $NET_PID ]]; then
        exec 4>&- || true
        end_pids 10 "$NET_PID"
    fi
    if [[ -n $BR && -e /sys/class/net/$BR ]]; then ip link del "$BR" 2>/dev/null || true; fi
    if ((KEEP)); then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

renice_self "$NICE"

# wait_quiet MINUTES WHAT: until the 1-minute load average is below $QUIET_LOAD (polled every
# 20 s, at most MINUTES); notes the load WHAT starts at, and whether it waited in vain.
QUIET_LOG=()
wait_quiet() {
    local max=$1 what=$2 t0=$EPOCHSECONDS l waited
    while :; do
        l=$(cut -d' ' -f1 /proc/loadavg)
        waited=$((EPOCHSECONDS - t0))
        if awk -v l="$l" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }'; then
            QUIET_LOG+=("$what: 1-min load $l (quiet after $waited s)")
            break
        fi
        if ((waited >= max * 60)); then
            QUIET_LOG+=("$what: 1-min load $l (NOT quiet after $waited s: measured anyway)")
            break
        fi
        if ((waited % 60 < 20)); then
            echo "waiting for a quiet machine before $what: 1-min load $l, need < $QUIET_LOAD ($waited s of at most $((max * 60)) s)"
        fi
        sleep 20
    done
    echo "${QUIET_LOG[-1]}"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
declare -A LOAD_START LOAD_END

# --- registry ------------------------------------------------------------------------------
serve_test_registry "$BENCH" "$WORK"
IMAGE=$HP/berth-test/busybox:latest
echo "registry $HP; image $IMAGE"

# --- the benchmark's CNI network -----------------------------------------------------------
NET_CHECKS=()
if ((DO_CNI)); then
    mkfifo "$WORK/net.in"
    "$BENCH" --serve-net "$WORK/net" <"$WORK/net.in" >"$WORK/net.out" 2>"$WORK/net.err" &
    NET_PID=$!
    exec 4>"$WORK/net.in"
    for ((i = 0; i < 100; i++)); do
        [[ -s $WORK/net.out ]] && break
        kill -0 "$NET_PID" 2>/dev/null || break
        sleep 0.1
    done
    NET_JSON=$(head -1 "$WORK/net.out")
    [[ $NET_JSON == '{'* ]] || { cat "$WORK/net.err" >&2; echo "$0: the benchmark's network was not made" >&2; exit 1; }
    BR=$(jq -r .bridge <<<"$NET_JSON")
    SUBNET=$(jq -r .subnet <<<"$NET_JSON")
    PREFIX=$(jq -r .prefix <<<"$NET_JSON")
    IPAM_DIR=$(jq -r .ipam_dir <<<"$NET_JSON")
    if ((CNI_LOOPBACK)); then
        BERTHD_CONFLIST=$WORK/net/loopback-bridge-portmap.conflist
    else
        BERTHD_CONFLIST=$WORK/net/bridge-portmap.conflist
    fi
    CTD_CONFLIST=$WORK/net/bridge-portmap.conflist
    jq -e '.plugins[] | select(.type == "bridge") | .ipMasq == false' "$BERTHD_CONFLIST" "$CTD_CONFLIST" >/dev/null ||
        { echo "$0: the benchmark's network must not masquerade" >&2; exit 1; }
    echo "network $(jq -r .name <<<"$NET_JSON"): bridge $BR, $SUBNET, no masquerading, host-local store $IPAM_DIR"
fi

# net_left WHAT: after WHAT tore its pods down, nothing of them may be left on the network.
net_left() {
    local veths ips rules
    veths=$({ ls "/sys/class/net/$BR/brif" 2>/dev/null || true; } | wc -l)
    ips=$({ ls "$IPAM_DIR" 2>/dev/null || true; } | { grep -v -x -e lock -e 'last_reserved_ip.*' || true; } | wc -l)
    rules=$({ iptables-save || true; } | { grep -v '^#' || true; } | { grep -F -- "$PREFIX" || true; } | wc -l)
    NET_CHECKS+=("$1: $veths veths on $BR, $ips addresses in host-local's store, $rules iptables rules naming $SUBNET")
    echo "left after teardown: ${NET_CHECKS[-1]}"
    ((veths + ips + rules == 0)) || { echo "$0: $1 left network state behind" >&2; exit 1; }
}

# check_ip ID EXPECTED: the warm-up pod's IP must start with EXPECTED ("" : no IP).
check_ip() {
    local ip
    ip=$(jq -r '.pod_ip // ""' "$WORK/$1.json")
    if [[ -z $2 && -n $ip ]] || [[ -n $2 && $ip != "$2"* ]]; then
        echo "$0: $1: pod IP '$ip', expected ${2:-none}" >&2
        exit 1
    fi
}

# --- floor ---------------------------------------------------------------------------------
wait_quiet "$QUIET_WAIT" "the fork+exec floor"
# Not quiet after all that: waiting again before each runtime would be in vain too.
[[ ${QUIET_LOG[-1]} != *"NOT quiet"* ]] || QUIET_GAP=0
FLOOR_ARGS=()
((DO_CNI)) && FLOOR_ARGS=(--cni-bin-dir "$CNI_PLUGINS")
[[ -n $SCALE ]] || "$BENCH" --floor 200 "${FLOOR_ARGS[@]}" --json "$WORK/floor.json"

# --- berthd --------------------------------------------------------------------------------
# run_berthd ID [CONFLIST]: a fresh berthd whose CNI conf dir holds CONFLIST (or nothing: no
# network), benchmarked into $WORK/ID.json.
RUNTIMES=()
declare -A BERTHD_CMDS
# start_daemon ID LOG SOCKET CMD...: once the machine is quiet, starts a runtime daemon in the
# background (DAEMON_PID) and waits for its socket. Daemons must not hold the registry's or the
# network holder's stdin open.
start_daemon() {
    local id=$1 log=$2 sock=$3
    shift 3
    wait_quiet "$QUIET_GAP" "$id"
    "$@" >"$log" 2>&1 3>&- 4>&- &
    DAEMON_PID=$!
    DAEMONS+=("$DAEMON_PID")
    wait_cri "$TARGET/release/cri" "$sock" "$DAEMON_PID" "$log"
}

# bench_daemon ID DIR SOCKET PID BENCH-ARGS...: the benchmark client against one running daemon
# (its per-pod processes named by the --pod-proc BENCH-ARGS), results in $WORK/ID.json.
bench_daemon() {
    local id=$1 dir=$2 sock=$3 pid=$4
    shift 4
    sleep 1 # idle: let start-up allocations settle before the first reading
    echo
    LOAD_START[$id]=$(loadavg)
    echo "=== $id (pid $pid; load average ${LOAD_START[$id]}) ==="
    T0=$EPOCHREALTIME
    local mode=(--iterations "$ITER" --pods "$PODS" --concurrency "$CONC")
    [[ -z $SCALE ]] || mode=(--scale "$SCALE" --scale-probes "$SCALE_PROBES" --scale-list-calls "$SCALE_LISTS")
    "$BENCH" --socket "$sock" --image "$IMAGE" "${mode[@]}" --daemon-pid "$pid" "$@" \
        --match "$dir/" --log-dir "$dir/logs" --json "$WORK/$id.json"
    LOAD_END[$id]=$(loadavg)
    echo "$id run took $(secs_since "$T0") s"
    RUNTIMES+=("$id")
}

run_berthd() {
    local id=$1 conflist=${2:-} bd=$WORK/$1 pid
    mkdir -p "$bd/net.d"
    [[ -z $conflist ]] || cp "$conflist" "$bd/net.d/10-bench.conflist"
    : >"$bd/config.toml" # all defaults
    cat >"$bd/registries.conf" <<EOF
[[registry]]
location = "$HP"
insecure = true
EOF
    local cmd=("$BERTHD" --root "$bd/root" --state "$bd/state" --listen "$bd/state/berth.sock"
        --config "$bd/config.toml" --registries-config "$bd/registries.conf"
        --cni-conf-dir "$bd/net.d" --cni-bin-dir "$CNI_PLUGINS")
    BERTHD_CMDS[$id]="${cmd[*]}"
    start_daemon "$id" "$bd/berthd.log" "$bd/state/berth.sock" "${cmd[@]}"
    pid=$DAEMON_PID
    bench_daemon "$id" "$bd" "$bd/state/berth.sock" "$pid" --pod-proc berth-monitor
    if [[ -n $conflist ]]; then
        check_ip "$id" "$PREFIX"
        net_left "$id"
    else
        check_ip "$id" ""
        if ((PROF_ITER)); then
            # A container spec of this berthd and the image's layer dirs, for monitor-profile.
            "$BENCH" --socket "$bd/state/berth.sock" --image "$IMAGE" --log-dir "$bd/logs" \
                --save-bundle "$bd/state" --bundle-out "$WORK/profile-in" >/dev/null ||
                { echo "$0: could not save a bundle: no libcontainer floor" >&2; PROF_ITER=0; }
        fi
    fi
    stop_pids 10 "$pid"
    umount_under "$bd"
}

# --- libcontainer floor --------------------------------------------------------------------
# The monitor's create / start / exec `true` / kill -9 + wait / delete of berthd's own
# container spec (busybox `sleep 3600`) through its socket, in a monitor forked by the
# example itself: libcontainer's cost without berthd, CRI or the monitor's start.
run_profile() {
    wait_quiet "$QUIET_GAP" "monitor-profile"
    echo
    echo "=== libcontainer floor: crates/shim/examples/monitor-profile (load average $(loadavg)) ==="
    if ! "$MPROF" --config "$WORK/profile-in/config.json" --layer "$(cat "$WORK/profile-in/lowerdir")" \
        --work "$WORK/profile" --iterations "$PROF_ITER" | tee "$WORK/profile.out"; then
        echo "$0: monitor-profile failed: no libcontainer floor" >&2
        PROF_ITER=0
    fi
    umount_under "$WORK/profile"
}

if ((DO_BERTHD)); then
    [[ -n $SCALE ]] || run_berthd berthd
    ((PROF_ITER)) && run_profile
    ((DO_CNI)) && run_berthd berthd-cni "$BERTHD_CONFLIST"
fi

# --- containerd ----------------------------------------------------------------------------
# run_containerd ID fake|cni: a fresh containerd, benchmarked into $WORK/ID.json. Its CRI runs
# the loopback plugin itself (go-cni's "cni-loopback" network) before the conflist, for every
# pod. fake: hack/lib/containerd.sh's fake-eth0 plugin (lo only, like a berthd pod without
# network). cni: the benchmark's bridge + portmap conflist, plugins from $CNI_PLUGINS.
declare -A CTD_CONF
run_containerd() {
    local id=$1 net=$2 cd=$WORK/$1 pid p
    if [[ $net == fake ]]; then
        containerd_fake_cni "$cd" "$CNI_PLUGINS/loopback"
    else
        mkdir -p "$cd/cni" "$cd/cni-bin"
        for p in loopback bridge host-local portmap; do ln -s "$CNI_PLUGINS/$p" "$cd/cni-bin/$p"; done
        cp "$CTD_CONFLIST" "$cd/cni/10-bench.conflist"
    fi
    CTD_CONF[$id]=$cd/config.toml
    containerd_write_config "$cd/config.toml" "$cd/root" "$cd/state" "$cd/containerd.sock" \
        "$HP/pause:3.9" "$cd/cni-bin" "$cd/cni" "$WORK/containerd-hosts"
    start_daemon "$id" "$cd/containerd.log" "$cd/containerd.sock" \
        containerd --config "$cd/config.toml" --log-level warn
    pid=$DAEMON_PID
    # containerd pulls the pause image on the first RunPodSandbox; pull it now so that the
    # warm-up pod does not carry it (the kubelet's nodes have it too).
    "$TARGET/release/cri" --socket "$cd/containerd.sock" pull "$HP/pause:3.9" >/dev/null
    bench_daemon "$id" "$cd" "$cd/containerd.sock" "$pid" \
        --pod-proc containerd-shim-runc-v2 --pod-proc pause
    if [[ $net == fake ]]; then
        check_ip "$id" 192.0.2.1
    else
        check_ip "$id" "$PREFIX"
        net_left "$id"
    fi
    stop_pids 10 "$pid"
    umount_under "$cd"
}

if ((DO_CONTAINERD)); then
    # The pause image into the registry, and the registry's hosts.toml (plain HTTP), once.
    containerd_push_pause "$HP" "$WORK/kit" "$WORK/kit.log"
    containerd_registry_hosts "$WORK/containerd-hosts" "$HP"
    [[ -n $SCALE ]] || run_containerd containerd fake
    ((DO_CNI)) && run_containerd containerd-cni cni
fi

# --- the network, removed ------------------------------------------------------------------
NET_FINAL=
if [[ -n $NET_PID ]]; then
    exec 4>&-
    end_pids 10 "$NET_PID"
    NET_PID=
    LEFT=$(sed -n 2p "$WORK/net.out")
    AFTER=$(sed -n 3p "$WORK/net.out")
    [[ -n $AFTER ]] || { cat "$WORK/net.err" >&2; echo "$0: the network holder did not report" >&2; exit 1; }
    if ! jq -e '[.left_by_pods[] | length] | add == 0' <<<"$LEFT" >/dev/null ||
        ! jq -e '.after_removal | (.bridge | not) and (.route | not) and (.iptables | length == 0)' <<<"$AFTER" >/dev/null; then
        echo "$0: the benchmark's network left something: $LEFT $AFTER" >&2
        exit 1
    fi
    NET_FINAL="bridge $BR deleted; no veth on it, no address in host-local's store, no route to $SUBNET, no iptables rule naming it"
    echo
    echo "network removed: $NET_FINAL"
fi

# --- table ---------------------------------------------------------------------------------
declare -A NAME=([berthd]=berthd [berthd-cni]="berthd CNI" [containerd]=containerd [containerd-cni]="containerd CNI")
if [[ -n $SCALE ]]; then
    # shellcheck source=hack/lib/bench-scale.sh
    source "$HERE/lib/bench-scale.sh"
    scale_table "$WORK" "$SCALE" "${RUNTIMES[@]}"
    echo
    echo "commands:"
    [[ -n ${BERTHD_CMDS[berthd-cni]:-} ]] && echo "  berthd-cni: ${BERTHD_CMDS[berthd-cni]} (empty config: defaults)"
    echo "  client:     $BENCH --socket SOCK --image $IMAGE --scale $SCALE --scale-probes $SCALE_PROBES --scale-list-calls $SCALE_LISTS ..."
    ((DO_CONTAINERD)) && echo "  containerd: containerd --config CONFIG ($(containerd --version | cut -d' ' -f3), $(runc --version | head -1)), as in the full run"
    echo "  berthd CNI conflist: $(jq -c . "$BERTHD_CONFLIST"); containerd: $(jq -c . "$CTD_CONFLIST")"
    for c in "${NET_CHECKS[@]}"; do echo "  after teardown, $c"; done
    [[ -n $NET_FINAL ]] && echo "  at the end: $NET_FINAL"
    echo "load average: $LOAD0 at start, $(loadavg) at end; $(nproc) CPUs; niceness $NICE"
    for q in "${QUIET_LOG[@]}"; do echo "  before $q"; done
    echo "total benchmark time: $(secs_since "$START") s"
    exit 0
fi
W=18
header() {
    printf '%-30s' "$1"
    for r in "${RUNTIMES[@]}"; do printf "%${W}s" "${NAME[$r]}"; done
    echo
}
cell() { # cell ID SECTION KEY: "median / p90" or -
    jq -r --arg s "$3" ".$2[\$s] // empty | \"\\(.median_ms * 100 | round / 100) / \\(.p90_ms * 100 | round / 100)\"" "$WORK/$1.json" | sed 's/^$/-/'
}
echo
echo "=== comparison (ms; median / p90 over $ITER lifecycles) ==="
header ""
for step in RunPodSandbox CreateContainer StartContainer Create+StartContainer ExecSync \
    StopContainer RemoveContainer Stop+RemoveContainer StopPodSandbox RemovePodSandbox \
    Stop+RemovePodSandbox lifecycle; do
    printf '%-30s' "$step"
    for r in "${RUNTIMES[@]}"; do printf "%${W}s" "$(cell "$r" steps "$step")"; done
    echo
done
for step in CreateContainer StartContainer StopContainer RemoveContainer; do
    printf '%-30s' "warm pod: $step"
    for r in "${RUNTIMES[@]}"; do printf "%${W}s" "$(cell "$r" warm "warm $step")"; done
    echo
done
echo "(warm pod: containers one after another in one running pod, whose monitor/shim is already up)"
row() { # row LABEL JQ-EXPR: one value per runtime
    printf '%-30s' "$1"
    for r in "${RUNTIMES[@]}"; do printf "%${W}s" "$(jq -r "try ($2) catch \"-\" | if . == null then \"-\" else . end" "$WORK/$r.json")"; done
    echo
}
mib='(. / 1024 * 100 | round / 100)'
if ((PODS)); then
    row "$PODS pods seq wall s" ".pods.sequential.wall_s * 1000 | round / 1000"
    row "$PODS pods x$CONC wall s" ".pods.concurrent.wall_s * 1000 | round / 1000"
    row "  teardown seq s" ".pods.sequential.teardown_s * 1000 | round / 1000"
    row "per pod PSS MiB (seq)" ".pods.sequential.memory.per_pod_pss_kb | $mib"
    row "per pod RSS MiB (seq)" ".pods.sequential.memory.per_pod_rss_kb | $mib"
    row "per pod PSS MiB (x$CONC)" ".pods.concurrent.memory.per_pod_pss_kb | $mib"
    row "daemon PSS MiB, $PODS pods" ".pods.sequential.memory.daemon.pss_kb | $mib"
    row "daemon RSS MiB, $PODS pods" ".pods.sequential.memory.daemon.rss_kb | $mib"
fi
row "daemon RSS MiB idle" ".daemon_start.rss_kb | $mib"
row "daemon PSS MiB idle" ".daemon_start.pss_kb | $mib"
row "daemon RSS MiB at end" ".daemon_end.rss_kb | $mib"
row "NetworkReady" 'if has("network_ready") then .network_ready else "-" end'
row "pod IP (warm-up pod)" '.pod_ip | if . == "" then "none" else . end'
printf '%-30s' "1-min load at start / end"
for r in "${RUNTIMES[@]}"; do printf "%${W}s" "${LOAD_START[$r]%% *} / ${LOAD_END[$r]%% *}"; done
echo
if ((PODS)); then
    echo "per-pod processes: berthd: berth-monitor; containerd: containerd-shim-runc-v2 + pause"
    echo "(per pod = sum of PSS/RSS of those processes / $PODS, read from /proc/PID/smaps_rollup 1 s after the last start)"
fi

# --- CNI cost ------------------------------------------------------------------------------
num() { jq -r --arg s "$2" ".steps[\$s].$3 // empty" "$WORK/$1.json"; }
COST=()
for r in berthd containerd; do
    [[ -f $WORK/$r.json && -f $WORK/$r-cni.json ]] && COST+=("$r")
done
if ((${#COST[@]})); then
    echo
    echo "=== CNI cost (ms; median / p90; cost = with network minus without, median - median, p90 - p90) ==="
    printf '%-40s' ""
    for r in "${COST[@]}"; do printf "%${W}s" "$r"; done
    echo
    for step in RunPodSandbox Stop+RemovePodSandbox lifecycle; do
        case $step in
            RunPodSandbox) what="ADD" ;;
            Stop+RemovePodSandbox) what="DEL" ;;
            *) what="whole pod" ;;
        esac
        printf '%-40s' "$step without network"
        for r in "${COST[@]}"; do printf "%${W}s" "$(cell "$r" steps "$step")"; done
        echo
        printf '%-40s' "$step with CNI"
        for r in "${COST[@]}"; do printf "%${W}s" "$(cell "$r-cni" steps "$step")"; done
        echo
        printf '%-40s' "  CNI cost ($what)"
        for r in "${COST[@]}"; do
            printf "%${W}s" "$(awk -v a="$(num "$r" "$step" median_ms)" -v b="$(num "$r" "$step" p90_ms)" \
                -v c="$(num "$r-cni" "$step" median_ms)" -v d="$(num "$r-cni" "$step" p90_ms)" \
                'BEGIN { printf "%+.2f / %+.2f", c - a, d - b }')"
        done
        echo
    done
    # The floor of the cost: one execution of each plugin the cost adds (VERSION: the Go
    # binary's start, nothing done), host-local run by bridge; the same for ADD and for DEL.
    pe() { jq -r --arg p "$1" '.cni_exec[$p].median_ms // 0' "$WORK/floor.json"; }
    declare -A EXEC_FLOOR
    EXEC_FLOOR[berthd]=$(awk -v l="$(pe loopback)" -v b="$(pe bridge)" -v h="$(pe host-local)" -v p="$(pe portmap)" \
        -v lo="$CNI_LOOPBACK" 'BEGIN { printf "%.2f", lo * l + b + h + p }')
    EXEC_FLOOR[containerd]=$(awk -v b="$(pe bridge)" -v h="$(pe host-local)" -v p="$(pe portmap)" 'BEGIN { printf "%.2f", b + h + p }')
    printf '%-40s' "  floor: the added plugin executions"
    for r in "${COST[@]}"; do printf "%${W}s" "${EXEC_FLOOR[$r]}"; done
    echo
    echo "(the floor: medians of one VERSION execution of each plugin the network adds, host-local run by bridge:"
    echo " $(jq -r '[.cni_exec | to_entries[] | "\(.key) \(.value.median_ms * 100 | round / 100)"] | join(", ")' "$WORK/floor.json") ms; the same for ADD and DEL)"
    echo "plugin executions per ADD and per DEL:"
    if [[ " ${COST[*]} " == *" berthd "* ]]; then
        if ((CNI_LOOPBACK)); then
            echo "  berthd: loopback, bridge (host-local), portmap: 3 (berthd brings lo up itself as well); none without network"
        else
            echo "  berthd: bridge (host-local), portmap: 2 (as hack/cni/10-berth.conflist); none without network"
        fi
    fi
    if [[ " ${COST[*]} " == *" containerd "* ]]; then
        echo "  containerd: its own loopback network, then bridge (host-local), portmap: 3; without network loopback +"
        echo "  fake-eth0, so containerd's cost is bridge + portmap - fake-eth0"
    fi
    echo "(pods without port mappings: portmap runs but has no rule to add)"
fi

# --- floors --------------------------------------------------------------------------------
echo
echo "=== floors ==="
FORK=$(jq -r '.floor.median_ms' "$WORK/floor.json")
jq -r '"fork+exec+wait of /bin/true x\(.floor.n): median \(.floor.median_ms * 1000 | round / 1000) ms, p90 \(.floor.p90_ms * 1000 | round / 1000) ms"' "$WORK/floor.json"
LIBC=
if ((PROF_ITER)) && [[ -s $WORK/profile.out ]]; then
    pm() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/profile.out"; }
    P_CREATE=$(pm create) P_START=$(pm start) P_EXEC=$(pm exec) P_KILL=$(pm kill+wait) P_DELETE=$(pm delete)
    LIBC=$(awk -v a="$P_CREATE" -v b="$P_START" -v c="$P_KILL" -v d="$P_DELETE" 'BEGIN { printf "%.2f", a + b + c + d }')
    echo "libcontainer through a running monitor, no berthd (monitor-profile x$PROF_ITER, medians): create $P_CREATE,"
    echo "  start $P_START, kill -9 + wait $P_KILL, delete $P_DELETE ms: create+start+kill/wait+delete $LIBC ms; exec \`true\` $P_EXEC ms"
fi

# --- distance to the floors ----------------------------------------------------------------
DIST=()
for r in berthd containerd berthd-cni containerd-cni; do [[ -f $WORK/$r.json ]] && DIST+=("$r"); done
if ((${#DIST[@]})); then
    echo
    echo "=== distance to the floors (medians, ms: value (+ over the floor)) ==="
    dist_row() { # dist_row LABEL FLOOR JQ-EXPR
        local label=$1 floor=$2 expr=$3 r v
        [[ -n $floor ]] || return 0
        printf '%-44s%9.2f' "$label" "$floor"
        for r in "${DIST[@]}"; do
            v=$(jq -r "$expr" "$WORK/$r.json")
            printf "%22s" "$(awk -v v="$v" -v f="$floor" 'BEGIN { if (v == "" || v == "null") print "-"; else printf "%.2f (%+.2f)", v, v - f }')"
        done
        echo
    }
    printf '%-44s%9s' "" "floor"
    for r in "${DIST[@]}"; do printf "%22s" "${NAME[$r]}"; done
    echo
    dist_row "RunPodSandbox vs fork+exec" "$FORK" '.steps.RunPodSandbox.median_ms'
    dist_row "ExecSync vs fork+exec" "$FORK" '.steps.ExecSync.median_ms'
    if [[ -n $LIBC ]]; then
        dist_row "ExecSync vs monitor exec" "$P_EXEC" '.steps.ExecSync.median_ms'
        dist_row "warm pod create+start+stop+rm vs libct" "$LIBC" '[.warm[] | .median_ms] | add'
        dist_row "new pod create+start+stop+rm vs libct" "$LIBC" '.steps["Create+StartContainer"].median_ms + .steps["Stop+RemoveContainer"].median_ms'
        dist_row "lifecycle vs fork+exec + libct + exec" "$(awk -v a="$FORK" -v b="$LIBC" -v c="$P_EXEC" 'BEGIN { printf "%.2f", a + b + c }')" '.steps.lifecycle.median_ms'
    fi
    [[ -z $LIBC ]] || echo "(libct: monitor-profile's create+start+kill/wait+delete; warm pod: the sum of its four medians)"
fi

echo
echo "commands:"
for r in berthd berthd-cni; do
    [[ -n ${BERTHD_CMDS[$r]:-} ]] && echo "  $r: ${BERTHD_CMDS[$r]}"
done
((DO_BERTHD)) && echo "    (empty config: defaults; registries.conf marks $HP insecure; net.d empty without network)"
echo "  client:     $BENCH --socket SOCK --image $IMAGE --iterations $ITER --pods $PODS --concurrency $CONC ..."
if ((DO_CONTAINERD)); then
    echo "  containerd: containerd --config CONFIG ($(containerd --version | cut -d' ' -f3), $(runc --version | head -1)); config of the run without network:"
    sed 's/^/      /' "${CTD_CONF[containerd]}"
    echo "    containerd CNI: the same with its own dirs; CNI conflists: containerd $(jq -c . "$WORK/containerd/cni/10-bench.conflist")"
    [[ -n ${CTD_CONF[containerd-cni]:-} ]] && echo "      containerd CNI $(jq -c . "$WORK/containerd-cni/cni/10-bench.conflist")"
    echo "    hosts.toml for $HP: server = \"http://$HP\" (plain HTTP)"
fi
if ((DO_CNI)); then
    echo "  berthd CNI conflist: $(jq -c . "$BERTHD_CONFLIST")"
    for c in "${NET_CHECKS[@]}"; do echo "  after teardown, $c"; done
    [[ -n $NET_FINAL ]] && echo "  at the end: $NET_FINAL"
fi
((PROF_ITER)) && echo "  libcontainer floor: $MPROF --config <berthd's config.json> --layer <busybox layer dir> --iterations $PROF_ITER"
echo "load average: $LOAD0 at start, $(loadavg) at end; $(nproc) CPUs; niceness $NICE"
for q in "${QUIET_LOG[@]}"; do echo "  before $q"; done
echo "total benchmark time: $(secs_since "$START") s"
