#!/usr/bin/env bash
# berthd's memory per idle exec session: opens N `crictl exec -i CTR sh`
# sessions that stay open (stdin held, nothing typed) against a running
# berthd, and prints berthd's RSS before, with the sessions open, and the
# difference per session. The full side-by-side benchmark is
# hack/bench-stream.sh; this is the quick figure for one daemon.
#
#   hack/stream-idle-rss.sh [N]        default N=100
#
# Environment:
#   ENDPOINT     CRI socket                        [unix:///run/berth/berth.sock]
#   BERTHD_PID   the daemon to measure             [the oldest process named berthd]
#   IMAGE        a busybox image berthd can pull   [docker.io/library/busybox:latest]
#   CRICTL       crictl binary                     [crictl from hack/k8s/build-tools.sh, else PATH]
#
# The pod it makes is removed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."

N=${1:-100}
ENDPOINT=${ENDPOINT:-unix:///run/berth/berth.sock}
IMAGE=${IMAGE:-docker.io/library/busybox:latest}
PID=${BERTHD_PID:-$(pgrep -xo berthd || true)}
if [[ -z ${CRICTL:-} ]]; then
    tools=$(bash hack/k8s/build-tools.sh --print-path 2>/dev/null || true)
    CRICTL=$(PATH="$tools:$PATH" command -v crictl || true)
fi
for tool in "$CRICTL" jq; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool" >&2; exit 2; }
done
[[ -n $PID && -d /proc/$PID ]] || { echo "$0: no berthd process (set BERTHD_PID)" >&2; exit 2; }

WORK=$(mktemp -d -t berth-idle-rss.XXXXXX)
printf 'runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 30\n' "$ENDPOINT" "$ENDPOINT" >"$WORK/crictl.yaml"
crictl() { "$CRICTL" --config "$WORK/crictl.yaml" "$@"; }
POD=""
HOLDERS=()
cleanup() {
    exec 3>&- 2>/dev/null
    for p in "${HOLDERS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [[ -n $POD ]]; then
        crictl stopp "$POD" >/dev/null 2>&1 || true
        crictl rmp "$POD" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }
# Sessions berthd has open: its streaming server's TCP connections.
sessions() { ls -l "/proc/$PID/fd" 2>/dev/null | grep -c 'socket:'; }

crictl pull "$IMAGE" >/dev/null || { echo "$0: cannot pull $IMAGE" >&2; exit 2; }
jq -n '{metadata:{name:"idle-rss", namespace:"default", uid:"idle-rss-uid", attempt:0}, linux:{}}' >"$WORK/pod.json"
jq -n --arg image "$IMAGE" '{metadata:{name:"idle"}, image:{image:$image},
    command:["sleep","100000"], linux:{security_context:{namespace_options:{pid:1}}}}' >"$WORK/ctr.json"
POD=$(crictl runp "$WORK/pod.json") || exit 2
CTR=$(crictl create "$POD" "$WORK/ctr.json" "$WORK/pod.json") || exit 2
crictl start "$CTR" >/dev/null || exit 2

# Opens N idle sessions: every session's stdin is a FIFO this script
# holds open and never writes, so they stay idle, and end (EOF) when the
# FIFO is closed. Returns once every one is up (a client socket and a
# monitor socket each in berthd), and a moment later.
open_sessions() {
    rm -f "$WORK/stdin"
    mkfifo "$WORK/stdin"
    exec 3<>"$WORK/stdin"
    HOLDERS=()
    local base
    base=$(sessions)
    for _ in $(seq "$N"); do
        crictl exec -i "$CTR" sh <"$WORK/stdin" >/dev/null 2>&1 3>&- &
        HOLDERS+=($!)
    done
    for _ in $(seq 600); do
        (( $(sessions) - base >= 2 * N )) && break
        sleep 0.1
    done
    sleep 3
}

close_sessions() {
    exec 3>&-
    wait "${HOLDERS[@]}" 2>/dev/null
    HOLDERS=()
    sleep 2
}

# Round 1 from a fresh baseline (what a daemon that never had N sessions
# pays: its allocator grows); round 2 after round 1 closed (the steady
# state: what berthd allocates once, pools, arenas, tables grown to N, is
# in its baseline).
echo exit | crictl exec -i "$CTR" sh >/dev/null 2>&1
sleep 1
for round in 1 2; do
    before=$(rss_kib)
    open_sessions
    after=$(rss_kib)
    echo "round $round: berthd RSS ${before} KiB before, ${after} KiB with $N idle exec sessions: $(( (after - before) / N )) KiB per session"
    close_sessions
done
