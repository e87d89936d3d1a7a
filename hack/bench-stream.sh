#!/usr/bin/env bash
# Streaming benchmark (issue 12): the same client, crictl, against a release berthd and Debian's
# containerd 1.6 (+ runc), one after the other in one run, each on fresh temp dirs with a pod
# without network (loopback only; containerd: hack/lib/containerd.sh's fake CNI) running two
# busybox containers of Berth's test image: `sleep` (the exec target) and a TCP source
# (`nc -ll -p 5001 -e dd if=/dev/zero bs=1M count=SIZE`). Measured per runtime, in this order:
#
#   sessions     N idle `crictl exec -i CTR sh` kept open (stdin: one fifo that nobody writes),
#                RSS (VmRSS) of the daemon (berthd / containerd) and, said separately, of the
#                pod's per-pod processes (berth-monitor / containerd-shim-runc-v2) before and
#                with the N sessions open (all N shells running in the container), per session
#                = (with - before) / N; then the fifo is closed and every session must end
#   exec rtt     `crictl exec CTR true` (streaming Exec, not ExecSync) x ITER: median, p90
#   tty ttfb     `crictl exec -it CTR sh` under a pseudo-terminal, time to its first output byte
#                (the shell's prompt), then `exit` x TTFB_ITER: median, p90
#   exec cat     `crictl exec CTR dd if=/dev/zero bs=1M count=SIZE/1M` read to EOF on the host:
#                MB/s; the same program and write size as the TCP source below (busybox `head -c`
#                writes 4 KiB at a time: ~440 MB/s through a plain pipe here, its own ceiling)
#   port-forward `crictl port-forward POD LPORT:5001`, SIZE bytes from the pod's TCP source read
#                to EOF on 127.0.0.1:LPORT: MB/s
#   in-process   the same (exec rtt, tty first byte, exec cat, port-forward) from one client
#                process, `bench-pods --stream-container` (one gRPC connection, the streaming
#                protocol spoken in-process by berth_stream::client): the runtime alone, without
#                crictl's start (~15 ms) in every sample. Same client for both runtimes.
#
# Reference: the same TCP source (the host's busybox, the same binary as the image's) on host
# loopback, read by the same reader: a plain loopback TCP copy of SIZE. (MB = 10^6 bytes.)
# Prints one table: metric, Berth, containerd, ratio, the issue's target, and the load.
#
#   hack/bench-stream.sh [--bin-dir DIR] [--crictl PATH] [--size MiB] [--iterations N]
#                        [--ttfb N] [--sessions N] [--transport spdy|websocket] [--nice N]
#                        [--no-berthd] [--no-containerd] [--keep]
#
#   --bin-dir DIR     berthd, berth-monitor and bench-pods (its test registry) from DIR
#                     (default target/release: cargo build --release --bins --locked)
#   --crictl PATH     crictl (default: cri-tools (CRI_TOOLS_VERSION) of hack/k8s/build-tools.sh)
#   --size MiB        bytes moved by exec cat, port-forward and loopback (default 1024)
#   --iterations N    exec round trips (default 50, after 3 warm-ups)
#   --ttfb N          exec -it first-byte runs (default 20)
#   --sessions N      idle exec sessions (default 100)
#   --transport T     crictl's streaming transport (default spdy, crictl's and the kubelet's;
#                     containerd 1.6 refuses crictl 1.36's websocket, as measured: Berth only)
#   --nice N          niceness of the daemons and the client (default -10; 0: leave it)
#   --keep            keep the work dir (logs, configs) for inspection
#   BENCH_BERTHD_CONFIG='TOML'  berthd's config (default: empty, all defaults), e.g.
#                     'log_level = "info,berthd=debug"' to read a session's steps in its log
#
# Needs root, containerd + runc (else containerd is skipped), skopeo, jq, python3, busybox.
# Everything it starts (registry, daemons, monitors, shims, containers, crictl sessions and
# port-forwards, mounts, the work dir) is removed on exit, also on failure or Ctrl-C; every
# background process is waited for with a deadline, then killed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=hack/lib/bench.sh
source "$HERE/lib/bench.sh"
# shellcheck source=hack/lib/containerd.sh
source "$HERE/lib/containerd.sh"
CLIENT=$HERE/lib/stream-client.py
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
CRICTL=
SIZE_MIB=1024
ITER=50
TTFB_ITER=20
SESSIONS=100
TRANSPORT=spdy
NICE=-10
DO_BERTHD=1
DO_CONTAINERD=1
KEEP=0

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
while (($#)); do
    case $1 in
        --bin-dir) BIN_DIR=$(cd "${2:?}" && pwd); shift 2 ;;
        --crictl) CRICTL=${2:?}; shift 2 ;;
        --size) SIZE_MIB=${2:?}; shift 2 ;;
        --iterations) ITER=${2:?}; shift 2 ;;
        --ttfb) TTFB_ITER=${2:?}; shift 2 ;;
        --sessions) SESSIONS=${2:?}; shift 2 ;;
        --transport) TRANSPORT=${2:?}; shift 2 ;;
        --nice) NICE=${2:?}; shift 2 ;;
        --no-berthd) DO_BERTHD=0; shift ;;
        --no-containerd) DO_CONTAINERD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage ;;
        *) echo "$0: unknown argument $1" >&2; usage ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "$0: needs root (namespaces, mounts, cgroups)" >&2; exit 1; }
for tool in skopeo jq python3 busybox ss; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (hack/install-deps.sh)" >&2; exit 1; }
done
if [[ -z $CRICTL ]]; then
    tools=$(bash "$HERE/k8s/build-tools.sh" --print-path --only crictl 2>/dev/null || true)
    CRICTL=$(PATH="$tools:$PATH" command -v crictl || true)
fi
[[ -x $CRICTL ]] || { echo "$0: no crictl (hack/k8s/build-tools.sh, or --crictl PATH)" >&2; exit 1; }
for b in berthd berth-monitor bench-pods; do
    [[ -x $BIN_DIR/$b ]] || { echo "$0: $BIN_DIR/$b missing (cargo build --release --bins --locked, or --bin-dir)" >&2; exit 1; }
done
if ((DO_CONTAINERD)) && ! { command -v containerd && command -v runc && command -v containerd-shim-runc-v2; } >/dev/null; then
    echo "$0: containerd/runc not installed: containerd is skipped" >&2
    DO_CONTAINERD=0
fi
if ((DO_CONTAINERD)) && [[ $TRANSPORT != spdy ]]; then
    # containerd 1.6's streaming server answers crictl 1.36's WebSocket upgrade with 403.
    echo "$0: containerd 1.6 refuses crictl's $TRANSPORT upgrade (403): containerd is skipped" >&2
    DO_CONTAINERD=0
fi
SIZE=$((SIZE_MIB * 1024 * 1024))
export RUST_LIB_BACKTRACE=0
START=$EPOCHREALTIME
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD0=$(loadavg)

# --- work dir, cleanup ---------------------------------------------------------------------
# Short path under /tmp: unix socket paths (containerd's shim sockets too) must fit 108 bytes.
WORK=$(mktemp -d /tmp/bench-stream.XXXXXX)
DAEMONS=()   # runtime daemons
CLIENTS=()   # crictl sessions / port-forwards, nc servers: killed first
CUR_CRICTL=() # crictl of the runtime being measured (pods to remove on failure)
REG_PID=

# remove_pods: every pod of the runtime being measured, stopped and removed (bounded).
remove_pods() {
    local p
    ((${#CUR_CRICTL[@]})) || return 0
    for p in $(timeout 20 "${CUR_CRICTL[@]}" pods -q 2>/dev/null || true); do
        timeout 60 "${CUR_CRICTL[@]}" stopp "$p" >/dev/null 2>&1 || true
        timeout 60 "${CUR_CRICTL[@]}" rmp "$p" >/dev/null 2>&1 || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    exec 7>&- 2>/dev/null || true
    stop_pids 5 "${CLIENTS[@]}"
    remove_pods
    stop_pids 10 "${DAEMONS[@]}"
    kill_under "$WORK" "$REG_PID"
    if [[ -n $REG_PID ]]; then
        # The registry serves until its stdin closes.
        exec 3>&- || true
        end_pids 10 "$REG_PID"
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

renice_self "$NICE"

# --- registry, reference ---------------------------------------------------------------------
serve_test_registry "$BIN_DIR/bench-pods" "$WORK"
IMAGE=$HP/berth-test/busybox:latest
echo "registry $HP; image $IMAGE; crictl $("$CRICTL" --version | awk '{ print $NF }') ($TRANSPORT); $SIZE_MIB MiB"

declare -A R # R[runtime.metric]: results

# source_cmd: the TCP source, as run in the pod and on the host.
SOURCE_ARGS=(nc -ll -p 5001 -e dd if=/dev/zero bs=1M "count=$SIZE_MIB")

# wait_listen PORT PID SECS: until something listens on PORT (PID must stay alive); without
# connecting, which would start a copy.
wait_listen() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        [[ -n $(ss -Hltn "sport = :$1") ]] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# kv LINE KEY: the value of KEY in a stream-client line.
kv() { sed -n "s/.*\\b$2=\\([^ ]*\\).*/\\1/p" <<<"$1"; }

# reference WHEN: the loopback TCP copy, into R[loopback.WHEN].
reference() {
    local port pid line
    port=$(python3 "$CLIENT" free-port)
    # The same source as in the pod: busybox's nc -e dd, but on the host.
    (cd "$WORK" && exec busybox "${SOURCE_ARGS[@]/5001/$port}" 2>/dev/null 7>&-) &
    pid=$!
    CLIENTS+=("$pid")
    wait_listen "$port" "$pid" 10 || { echo "$0: the host's TCP source did not listen" >&2; exit 1; }
    line=$(python3 "$CLIENT" read "$port" "$SIZE")
    R[loopback.$1]=$(kv "$line" mb_s)
    stop_pids 5 "$pid"
    unset 'CLIENTS[-1]'
    echo "loopback TCP copy of $SIZE_MIB MiB ($1): $line"
}

# --- per runtime ---------------------------------------------------------------------------
# rss_kb PID...: the sum of their VmRSS (kB).
rss_kb() {
    local pid sum=0 v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# procs_named COMM: pids of processes named COMM whose command line names our work dir.
procs_named() {
    ps -eo pid=,comm=,args= | awk -v c="$1" -v w="$WORK/" '$2 == c && index($0, w) { print $1 }'
}

# procs_in_ns PID: how many processes share PID's pid namespace.
procs_in_ns() {
    local ns
    ns=$(readlink "/proc/$1/ns/pid")
    readlink /proc/[0-9]*/ns/pid 2>/dev/null | grep -cxF "$ns" || true
}

# wait_count PID WANT SECS: until PID's pid namespace holds WANT processes; fails after SECS.
wait_count() {
    local i n
    for ((i = 0; i < $3 * 5; i++)); do
        n=$(procs_in_ns "$1")
        ((n == $2)) && return 0
        sleep 0.2
    done
    echo "$0: $n processes in the container, expected $2 (after $3 s)" >&2
    return 1
}

# run_ctr NAME ARGV-JSON: create + start a container of the pod; prints its id.
run_ctr() {
    local id
    jq -n --arg name "$1" --arg image "$IMAGE" --argjson cmd "$2" \
        '{metadata:{name:$name}, image:{image:$image}, command:$cmd, log_path:($name + ".log"), linux:{}}' \
        >"$RDIR/$1.json"
    id=$(crictl create "$POD" "$RDIR/$1.json" "$RDIR/pod.json")
    crictl start "$id" >/dev/null
    echo "$id"
}

crictl() { "${CUR_CRICTL[@]}" "$@"; }

# bench ID SOCKET DAEMON_PID SHIM_COMM: the measurements against one running daemon.
bench() {
    local id=$1 sock=$2 dpid=$3 shim=$4 marker line i
    local -a sess shims
    crictl pull "$IMAGE" >/dev/null
    jq -n --arg logs "$RDIR/logs" --arg uid "bench-stream-$id-$$" \
        '{metadata:{name:"bench-stream", namespace:"default", uid:$uid, attempt:0}, log_directory:$logs, linux:{}}' \
        >"$RDIR/pod.json"
    POD=$(crictl runp "$RDIR/pod.json")
    # A sleep of its own length: its pid (and pid namespace) is found by its command line.
    marker=$((1000000000 + $$))
    CTR=$(run_ctr idle "[\"sleep\", \"$marker\"]")
    run_ctr source "$(printf '%s\n' "${SOURCE_ARGS[@]}" | jq -Rnc '[inputs]')" >/dev/null
    local cpid=
    for ((i = 0; i < 100; i++)); do
        cpid=$(ps -eo pid=,args= | awk -v a="sleep $marker" '$2 " " $3 == a { print $1; exit }')
        [[ -n $cpid ]] && break
        sleep 0.1
    done
    [[ -n $cpid ]] || { echo "$0: $id: the idle container's process not found" >&2; exit 1; }
    local -a X=(exec --transport "$TRANSPORT")
    for i in 1 2 3; do crictl "${X[@]}" "$CTR" true; done # warm-up

    # Sessions first, on a daemon that has streamed little: its RSS growth is the sessions'.
    # First SESSIONS held by one client process on one gRPC connection (as a kubelet holds
    # them): the daemon's cost of the sessions alone. Then the same number of crictl
    # processes below, each also holding two gRPC connections of its own.
    local own own_out own_d0 own_d1 i
    own_out=$RDIR/own-sessions.out
    sleep 1
    own_d0=$(rss_kb "$dpid")
    mkfifo "$RDIR/own-sessions.in"
    "$BIN_DIR/bench-pods" --socket "$sock" --stream-container "$CTR" --stream-sessions "$SESSIONS" \
        --stream-transport "$TRANSPORT" <"$RDIR/own-sessions.in" >"$own_out" 2>"$RDIR/own-sessions.err" 7>&- &
    own=$!
    CLIENTS+=("$own")
    exec 8>"$RDIR/own-sessions.in"
    for ((i = 0; i < 1200; i++)); do
        grep -q '^ready' "$own_out" && break
        kill -0 "$own" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^ready' "$own_out" || { tail -5 "$RDIR/own-sessions.err" >&2; echo "$0: $id: in-process sessions did not open" >&2; exit 1; }
    sleep 2
    own_d1=$(rss_kb "$dpid")
    exec 8>&-
    wait_gone 60 "$own" || { echo "$0: $id: in-process sessions did not end" >&2; exit 1; }
    wait "$own" || { tail -5 "$RDIR/own-sessions.err" >&2; echo "$0: $id: in-process sessions failed" >&2; exit 1; }
    unset 'CLIENTS[-1]'
    R[$id.own_d_per]=$(awk -v a="$own_d0" -v b="$own_d1" -v n="$SESSIONS" 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "$id: $SESSIONS sessions of one client process: $id RSS $own_d0 -> $own_d1 kB (${R[$id.own_d_per]} KiB/session); $(tail -1 "$own_out")"

    # The per-pod processes are listed anew at each reading: a process a session adds counts.
    local n0 n1
    mapfile -t shims < <(procs_named "$shim")
    n0=${#shims[@]}
    ((n0)) || { echo "$0: $id: no $shim process found" >&2; exit 1; }
    local base d0 s0 d1 s1 d2 s2 t0
    base=$(procs_in_ns "$cpid")
    sleep 1
    d0=$(rss_kb "$dpid") s0=$(rss_kb "${shims[@]}")
    mkfifo "$RDIR/sessions.in"
    # Held open read-write by us only (children close fd 7): closing it is every session's EOF.
    exec 7<>"$RDIR/sessions.in"
    t0=$EPOCHREALTIME
    sess=()
    for ((i = 0; i < SESSIONS; i++)); do
        # The command itself, not the crictl function: $! is then crictl's own pid.
        "${CUR_CRICTL[@]}" "${X[@]}" -i "$CTR" sh <"$RDIR/sessions.in" >/dev/null 2>>"$RDIR/sessions.err" 7>&- &
        sess+=("$!")
        CLIENTS+=("$!")
    done
    wait_count "$cpid" $((base + SESSIONS)) 300 || { tail -5 "$RDIR/sessions.err" >&2; exit 1; }
    R[$id.sess_open_s]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    sleep 2 # let the sessions' start-up allocations settle
    mapfile -t shims < <(procs_named "$shim")
    n1=${#shims[@]}
    d1=$(rss_kb "$dpid") s1=$(rss_kb "${shims[@]}")
    exec 7>&-
    # EOF ends each shell, and so each crictl; none may linger.
    local left=0 pid
    wait_gone 30 "${sess[@]}" ||
        for pid in "${sess[@]}"; do kill -0 "$pid" 2>/dev/null && left=$((left + 1)); done
    R[$id.sess_left]=$left
    stop_pids 5 "${sess[@]}"
    CLIENTS=("${CLIENTS[@]:0:${#CLIENTS[@]}-SESSIONS}")
    wait_count "$cpid" "$base" 60 || true
    sleep 1
    mapfile -t shims < <(procs_named "$shim")
    d2=$(rss_kb "$dpid") s2=$(rss_kb "${shims[@]}")
    R[$id.d0]=$d0 R[$id.d1]=$d1 R[$id.d2]=$d2 R[$id.s0]=$s0 R[$id.s1]=$s1 R[$id.s2]=$s2
    R[$id.d_per]=$(awk -v a="$d0" -v b="$d1" -v n="$SESSIONS" 'BEGIN { printf "%.1f", (b - a) / n }')
    R[$id.s_per]=$(awk -v a="$s0" -v b="$s1" -v n="$SESSIONS" 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "$id: $SESSIONS sessions open in ${R[$id.sess_open_s]} s; $id RSS $d0 -> $d1 kB (${R[$id.d_per]} KiB/session), after closing $d2 kB;" \
        "$shim ($n0 -> $n1 processes) $s0 -> $s1 kB (${R[$id.s_per]} KiB/session), after $s2 kB; crictl still running after EOF + 30 s: $left"

    # The client's own floor: crictl's start and one unary CRI call, no streaming.
    line=$(python3 "$CLIENT" rtt "$ITER" -- "${CUR_CRICTL[@]}" version)
    R[$id.floor_med]=$(kv "$line" median_ms) R[$id.floor_p90]=$(kv "$line" p90_ms)
    echo "$id crictl version: $line"

    line=$(python3 "$CLIENT" rtt "$ITER" -- "${CUR_CRICTL[@]}" "${X[@]}" "$CTR" true)
    R[$id.rtt_med]=$(kv "$line" median_ms) R[$id.rtt_p90]=$(kv "$line" p90_ms)
    echo "$id exec true: $line"

    line=$(python3 "$CLIENT" ttfb "$TTFB_ITER" -- "${CUR_CRICTL[@]}" "${X[@]}" -it "$CTR" sh)
    R[$id.tty_med]=$(kv "$line" median_ms) R[$id.tty_p90]=$(kv "$line" p90_ms)
    echo "$id exec -it sh first byte: $line"

    line=$(python3 "$CLIENT" pipe "$SIZE" -- "${CUR_CRICTL[@]}" "${X[@]}" "$CTR" dd if=/dev/zero bs=1M "count=$SIZE_MIB")
    R[$id.cat]=$(kv "$line" mb_s)
    echo "$id exec dd ($SIZE bytes): $line"

    # The runtime alone: the same measures from one client process (bench-pods: one gRPC
    # connection, the streaming protocol spoken in-process), no client start in any sample.
    # A failure here is reported, not fatal: the crictl figures above stand on their own.
    line=$("$BIN_DIR/bench-pods" --socket "$sock" --stream-container "$CTR" --stream-pod "$POD" \
        --stream-port 5001 --stream-bytes "$SIZE" --stream-transport "$TRANSPORT" --iterations "$ITER" \
        2>"$RDIR/in-process.err") || {
        echo "$id in-process client failed: $(grep -v '^ *[0-9]*: \|^ *at \|^Stack\|^$' "$RDIR/in-process.err" | tr '\n' ' ')" >&2
        line=
    }
    for k in rtt_med rtt_p90 tty_med tty_p90 cat_mb_s pf_mb_s; do R[$id.own_$k]=$(kv "$line" "$k"); done
    echo "$id in-process client: $line"

    local lport pf
    lport=$(python3 "$CLIENT" free-port)
    "${CUR_CRICTL[@]}" port-forward --transport "$TRANSPORT" "$POD" "$lport:5001" >"$RDIR/pf.out" 2>&1 7>&- &
    pf=$!
    CLIENTS+=("$pf")
    for ((i = 0; i < 100; i++)); do
        grep -q "Forwarding from" "$RDIR/pf.out" && break
        kill -0 "$pf" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "Forwarding from" "$RDIR/pf.out" || { cat "$RDIR/pf.out" >&2; echo "$0: $id: port-forward did not start" >&2; exit 1; }
    line=$(python3 "$CLIENT" read "$lport" "$SIZE") || { cat "$RDIR/pf.out" >&2; exit 1; }
    R[$id.pf]=$(kv "$line" mb_s)
    echo "$id port-forward: $line"
    stop_pids 5 "$pf"
    unset 'CLIENTS[-1]'

    crictl stopp "$POD" >/dev/null
    crictl rmp "$POD" >/dev/null
    CUR_CRICTL=()
}

# start_daemon ID LOG SOCKET CMD...: DAEMON_PID, once its socket answers; CUR_CRICTL: crictl
# with a config of its own (no warnings about a missing /etc/crictl.yaml) for that socket.
start_daemon() {
    local id=$1 log=$2 sock=$3 i
    shift 3
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\n' "$sock" "$sock" >"$RDIR/crictl.yaml"
    CUR_CRICTL=("$CRICTL" --config "$RDIR/crictl.yaml")
    "$@" >"$log" 2>&1 3>&- 7>&- &
    DAEMON_PID=$!
    DAEMONS+=("$DAEMON_PID")
    for ((i = 0; i < 300; i++)); do
        crictl version >/dev/null 2>&1 && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "$0: $id did not answer on $sock; log:" >&2
    tail -20 "$log" >&2
    exit 1
}

RUNTIMES=()
declare -A LOADS CMDS
run_berthd() {
    RDIR=$WORK/berthd
    mkdir -p "$RDIR/net.d"
    printf "%s\n" "${BENCH_BERTHD_CONFIG:-}" >"$RDIR/config.toml" # defaults (streaming: loopback, ephemeral port)
    printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$HP" >"$RDIR/registries.conf"
    local cmd=("$BIN_DIR/berthd" --root "$RDIR/root" --state "$RDIR/state" --listen "$RDIR/state/berth.sock"
        --config "$RDIR/config.toml" --registries-config "$RDIR/registries.conf" --cni-conf-dir "$RDIR/net.d")
    CMDS[berthd]="${cmd[*]}"
    start_daemon berthd "$RDIR/berthd.log" "$RDIR/state/berth.sock" "${cmd[@]}"
    LOADS[berthd]=$(loadavg)
    echo "=== berthd (pid $DAEMON_PID; load ${LOADS[berthd]}) ==="
    bench berthd "$RDIR/state/berth.sock" "$DAEMON_PID" berth-monitor
    stop_pids 10 "$DAEMON_PID"
    DAEMONS=()
    umount_under "$RDIR"
    RUNTIMES+=(berthd)
}

run_containerd() {
    RDIR=$WORK/containerd
    mkdir -p "$RDIR"
    containerd_push_pause "$HP" "$WORK/kit" "$WORK/kit.log"
    containerd_registry_hosts "$RDIR/hosts" "$HP"
    containerd_fake_cni "$RDIR" /usr/lib/cni/loopback
    containerd_write_config "$RDIR/config.toml" "$RDIR/root" "$RDIR/state" "$RDIR/containerd.sock" \
        "$HP/pause:3.9" "$RDIR/cni-bin" "$RDIR/cni" "$RDIR/hosts"
    CMDS[containerd]="containerd --config $RDIR/config.toml --log-level warn ($(containerd --version | cut -d' ' -f3), $(runc --version | head -1))"
    start_daemon containerd "$RDIR/containerd.log" "$RDIR/containerd.sock" \
        containerd --config "$RDIR/config.toml" --log-level warn
    # Pulled now, as on a node that has it: not part of any figure anyway.
    crictl pull "$HP/pause:3.9" >/dev/null
    LOADS[containerd]=$(loadavg)
    echo "=== containerd (pid $DAEMON_PID; load ${LOADS[containerd]}) ==="
    bench containerd "$RDIR/containerd.sock" "$DAEMON_PID" containerd-shim
    stop_pids 10 "$DAEMON_PID"
    DAEMONS=()
    kill_under "$WORK" "$REG_PID"
    umount_under "$RDIR"
    RUNTIMES+=(containerd)
}

[[ -x /usr/lib/cni/loopback ]] || { ((DO_CONTAINERD == 0)) || { echo "$0: missing /usr/lib/cni/loopback (containernetworking-plugins)" >&2; exit 1; }; }
reference start
((DO_BERTHD)) && run_berthd
((DO_CONTAINERD)) && run_containerd
reference end
# The reference of the table: the mean of both copies.
R[loopback.tcp]=$(awk -v a="${R[loopback.start]}" -v b="${R[loopback.end]}" 'BEGIN { printf "%.1f", (a + b) / 2 }')

# --- table ---------------------------------------------------------------------------------
val() { echo "${R[$1.$2]:--}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
row() { printf '%-38s %12s %12s %8s   %s\n' "$@"; }
mib() { [[ $1 == - ]] && echo - || awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "=== streaming: berthd vs containerd, same client (crictl, $TRANSPORT) ==="
row metric Berth containerd ratio target
for m in "rtt_med:exec true round trip median ms" "rtt_p90:exec true round trip p90 ms" \
    "tty_med:exec -it sh first byte median ms" "tty_p90:exec -it sh first byte p90 ms"; do
    k=${m%%:*}
    row "${m#*:}" "$(val berthd "$k")" "$(val containerd "$k")" "$(ratio "$(val berthd "$k")" "$(val containerd "$k")")" "<= 0.33"
done
# minus MED FLOOR: a median above the client's floor.
minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2f", a - b }'; }
row "crictl version median ms (floor)" "$(val berthd floor_med)" "$(val containerd floor_med)" \
    "$(ratio "$(val berthd floor_med)" "$(val containerd floor_med)")" ""
for k in rtt tty; do
    b=$(minus "$(val berthd ${k}_med)" "$(val berthd floor_med)")
    c=$(minus "$(val containerd ${k}_med)" "$(val containerd floor_med)")
    [[ $k == rtt ]] && what="exec true" || what="exec -it first byte"
    row "  $what median - floor" "$b" "$c" "$(ratio "$b" "$c")" ""
done
for m in "pf:port-forward $SIZE_MIB MiB MB/s" "cat:exec cat $SIZE_MIB MiB MB/s"; do
    k=${m%%:*}
    row "${m#*:}" "$(val berthd "$k")" "$(val containerd "$k")" "$(ratio "$(val berthd "$k")" "$(val containerd "$k")")" ">= 2"
    row "  / loopback TCP copy (${R[loopback.tcp]} MB/s)" "$(ratio "$(val berthd "$k")" "${R[loopback.tcp]}")" \
        "$(ratio "$(val containerd "$k")" "${R[loopback.tcp]}")" "" ">= 0.70 (Berth)"
done
echo "--- the runtime alone: one client process (bench-pods --stream-container), no client start ---"
for m in "rtt_med:exec true round trip median ms" "rtt_p90:exec true round trip p90 ms" \
    "tty_med:exec -it sh first byte median ms" "tty_p90:exec -it sh first byte p90 ms"; do
    k=own_${m%%:*}
    row "  ${m#*:}" "$(val berthd "$k")" "$(val containerd "$k")" "$(ratio "$(val berthd "$k")" "$(val containerd "$k")")" "<= 0.33"
done
for m in "pf_mb_s:port-forward $SIZE_MIB MiB MB/s" "cat_mb_s:exec cat $SIZE_MIB MiB MB/s"; do
    k=own_${m%%:*}
    row "  ${m#*:}" "$(val berthd "$k")" "$(val containerd "$k")" "$(ratio "$(val berthd "$k")" "$(val containerd "$k")")" ">= 2"
    row "    / loopback TCP copy" "$(ratio "$(val berthd "$k")" "${R[loopback.tcp]}")" \
        "$(ratio "$(val containerd "$k")" "${R[loopback.tcp]}")" "" ">= 0.70 (Berth)"
done
echo "---"
row "daemon KiB per idle session, one client" "$(val berthd own_d_per)" "$(val containerd own_d_per)" "$(ratio "$(val berthd own_d_per)" "$(val containerd own_d_per)")" "<= 64 (berthd)"
row "daemon KiB per idle session (crictl)" "$(val berthd d_per)" "$(val containerd d_per)" "$(ratio "$(val berthd d_per)" "$(val containerd d_per)")" ""
row "per-pod process KiB per idle session" "$(val berthd s_per)" "$(val containerd s_per)" "$(ratio "$(val berthd s_per)" "$(val containerd s_per)")" ""
for k in d0 d1 d2 s0 s1 s2; do R[berthd.${k}m]=$(mib "$(val berthd $k)"); R[containerd.${k}m]=$(mib "$(val containerd $k)"); done
row "daemon RSS MiB before/$SESSIONS/after" "$(val berthd d0m)/$(val berthd d1m)/$(val berthd d2m)" \
    "$(val containerd d0m)/$(val containerd d1m)/$(val containerd d2m)" "" ""
row "per-pod RSS MiB before/$SESSIONS/after" "$(val berthd s0m)/$(val berthd s1m)/$(val berthd s2m)" \
    "$(val containerd s0m)/$(val containerd s1m)/$(val containerd s2m)" "" ""
row "$SESSIONS sessions opened in s" "$(val berthd sess_open_s)" "$(val containerd sess_open_s)" "" ""
row "sessions left 30 s after EOF" "$(val berthd sess_left)" "$(val containerd sess_left)" "" "0"
echo "(ratio: Berth / containerd; daemon: berthd / containerd; per-pod process: berth-monitor /"
echo " containerd-shim-runc-v2; per session = (RSS with $SESSIONS idle \`exec -i sh\` - before) / $SESSIONS;"
echo " loopback TCP copy: the mean of ${R[loopback.start]} MB/s before and ${R[loopback.end]} MB/s after the runtimes;"
echo " exec rtt and crictl version x$ITER, first byte x$TTFB_ITER; floor: crictl's start + one unary CRI"
echo " call, in every figure above it; MB = 10^6 bytes)"
echo
echo "commands:"
[[ -n ${CMDS[berthd]:-} ]] && echo "  berthd: ${CMDS[berthd]}"
[[ -n ${CMDS[containerd]:-} ]] && echo "  containerd: ${CMDS[containerd]}"
echo "  client: $CRICTL --config CONF exec|port-forward --transport $TRANSPORT ...; pod source: ${SOURCE_ARGS[*]}"
for r in "${RUNTIMES[@]}"; do echo "  load average when $r started: ${LOADS[$r]}"; done
echo "load average: $LOAD0 at start, $(loadavg) at end; $(nproc) CPUs; niceness $NICE; total $(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
