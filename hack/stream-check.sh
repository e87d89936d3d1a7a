#!/usr/bin/env bash
# Checks berthd's streaming with the upstream client, crictl, over SPDY and
# WebSocket: `exec -i` with piped stdin, exit codes, `exec -it` driven
# through tmux (resize included), `attach` to a stdin container (what it
# writes after its stdin closed included) and to a terminal, `port-forward`
# + curl (connections one after the other and at once through one
# session). Against a running berthd.
#
#   hack/stream-check.sh
#
# Environment:
#   ENDPOINT  CRI socket              [unix:///run/berth/berth.sock]
#   IMAGE     a busybox image berthd can pull [docker.io/library/busybox:latest]
#             (the test registry: run hack/registry.sh and point berthd's
#             registries.conf at it, then IMAGE=127.0.0.1:5000/berth-test/busybox:latest)
#   CRICTL    crictl binary           [crictl from hack/k8s/build-tools.sh, else PATH]
#
# Prints one PASS/FAIL line per check; exits 1 if any failed. The pod it
# makes is removed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."

ENDPOINT=${ENDPOINT:-unix:///run/berth/berth.sock}
IMAGE=${IMAGE:-docker.io/library/busybox:latest}
if [[ -z ${CRICTL:-} ]]; then
    tools=$(bash hack/k8s/build-tools.sh --print-path 2>/dev/null || true)
    CRICTL=$(PATH="$tools:$PATH" command -v crictl || true)
fi
for tool in "$CRICTL" tmux curl jq; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool" >&2; exit 2; }
done

WORK=$(mktemp -d -t berth-stream-check.XXXXXX)
# A config file of our own: no warnings about a missing /etc/crictl.yaml in
# the outputs compared below.
printf 'runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 30\n' "$ENDPOINT" "$ENDPOINT" >"$WORK/crictl.yaml"
CRICTL_CMD="$CRICTL --config $WORK/crictl.yaml"
crictl() { $CRICTL_CMD "$@"; }
POD=""
TMUX_SESSIONS=()
PF_PID=""
cleanup() {
    for s in "${TMUX_SESSIONS[@]}"; do tmux kill-session -t "$s" 2>/dev/null || true; done
    [[ -n $PF_PID ]] && kill "$PF_PID" 2>/dev/null
    if [[ -n $POD ]]; then
        crictl stopp "$POD" >/dev/null 2>&1 || true
        crictl rmp "$POD" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

FAILED=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }

# tmux_wait SESSION TEXT: waits (10 s) until the pane shows TEXT.
tmux_wait() {
    for _ in $(seq 100); do
        tmux capture-pane -p -t "$1" 2>/dev/null | grep -qF -- "$2" && return 0
        sleep 0.1
    done
    return 1
}

container_json() { # NAME TTY STDIN STDIN_ONCE SCRIPT
    jq -n --arg name "$1" --argjson tty "$2" --argjson stdin "$3" --argjson once "$4" \
        --arg image "$IMAGE" --arg script "$5" \
        '{metadata:{name:$name}, image:{image:$image}, command:["sh","-c",$script],
          tty:$tty, stdin:$stdin, stdin_once:$once, log_path:($name + ".log"), linux:{}}' \
        >"$WORK/$1.json"
}

run_container() { # NAME ...container_json args: prints the id
    local name=$1
    container_json "$@"
    local id
    id=$(crictl create "$POD" "$WORK/$name.json" "$WORK/pod.json") || return 1
    crictl start "$id" >/dev/null || return 1
    echo "$id"
}

crictl pull "$IMAGE" >/dev/null || { echo "$0: cannot pull $IMAGE" >&2; exit 2; }
jq -n --arg logs "$WORK/logs" \
    '{metadata:{name:"stream-check", namespace:"default", uid:"stream-check-uid", attempt:0},
      log_directory:$logs, linux:{}}' >"$WORK/pod.json"
POD=$(crictl runp "$WORK/pod.json") || { echo "$0: RunPodSandbox failed" >&2; exit 2; }
WEB=$(run_container web false false false \
    'mkdir -p /www && echo stream-check-page > /www/index.html && exec httpd -f -p 8080 -h /www') \
    || { echo "$0: cannot start the web container" >&2; exit 2; }

for t in spdy websocket; do
    # exec -i with piped stdin; its EOF ends cat.
    out=$(printf 'piped-%s\n' "$t" | timeout 20 $CRICTL_CMD \
        exec -i --transport "$t" "$WEB" cat 2>&1)
    [[ $out == "piped-$t" ]] && pass "exec -i ($t)" || fail "exec -i ($t)" "$out"

    # Exit code and stderr.
    out=$(timeout 20 $CRICTL_CMD exec --transport "$t" "$WEB" \
        sh -c 'echo to-stderr >&2; exit 3' 2>&1)
    rc=$?
    # crictl exits 1 on any failure; client-go's error names the code.
    [[ $rc != 0 && $out == *to-stderr* && $out == *"exit code 3"* ]] && pass "exec exit code ($t)" \
        || fail "exec exit code ($t)" "rc=$rc out=$out"

    # exec -it in a 100x30 tmux pane: the terminal size reaches the shell.
    s="berth-exec-$t"
    TMUX_SESSIONS+=("$s")
    tmux new-session -d -s "$s" -x 100 -y 30 \
        "$CRICTL_CMD exec -it --transport $t $WEB sh; sleep 30"
    sleep 1
    tmux send-keys -t "$s" 'echo "size=$(stty size)"' Enter
    if tmux_wait "$s" "size=30 100"; then
        tmux resize-window -t "$s" -x 120 -y 40 2>/dev/null
        sleep 0.5
        tmux send-keys -t "$s" 'echo "size=$(stty size)"' Enter
        if tmux_wait "$s" "size=40 120"; then pass "exec -it + resize ($t)"; else
            fail "exec -it + resize ($t)" "$(tmux capture-pane -p -t "$s" | tail -5)"; fi
    else
        fail "exec -it ($t)" "$(tmux capture-pane -p -t "$s" | tail -5)"
    fi
    tmux send-keys -t "$s" 'exit' Enter
    tmux kill-session -t "$s" 2>/dev/null

    # attach -i to a stdin_once `cat`: the piped line comes back, and
    # stdin's EOF closes the container's stdin (cat exits).
    CAT=$(run_container "cat-$t" false true true 'exec cat')
    out=$(printf 'attached-%s\n' "$t" | timeout 20 $CRICTL_CMD \
        attach -i --transport "$t" "$CAT" 2>&1)
    state=""
    for _ in $(seq 50); do
        state=$(crictl inspect "$CAT" 2>/dev/null | jq -r .status.state)
        [[ $state == CONTAINER_EXITED ]] && break
        sleep 0.1
    done
    [[ $out == *"attached-$t"* && $state == CONTAINER_EXITED ]] && pass "attach -i stdin_once ($t)" \
        || fail "attach -i stdin_once ($t)" "out=$out state=$state"

    # attach -i, stdin_once: what the container writes after its stdin
    # closed still reaches the client, until it exits.
    AFTER=$(run_container "after-$t" false true true \
        'read x; echo "got $x"; cat >/dev/null; echo "stdin closed"; sleep 0.5; echo after')
    out=$(printf 'line\n' | timeout 20 $CRICTL_CMD attach -i --transport "$t" "$AFTER" 2>&1)
    [[ $out == *"got line"*"stdin closed"*"after"* ]] && pass "attach -i output after stdin closed ($t)" \
        || fail "attach -i output after stdin closed ($t)" "out=$out"

    # attach -it to a terminal container, through tmux.
    TTY=$(run_container "tty-$t" true true false 'exec sh')
    s="berth-attach-$t"
    TMUX_SESSIONS+=("$s")
    tmux new-session -d -s "$s" -x 100 -y 30 \
        "$CRICTL_CMD attach -it --transport $t $TTY; sleep 30"
    sleep 1
    tmux send-keys -t "$s" 'echo "tty-attach=$(stty size)"' Enter
    if tmux_wait "$s" "tty-attach=30 100"; then pass "attach -it ($t)"; else
        fail "attach -it ($t)" "$(tmux capture-pane -p -t "$s" | tail -5)"; fi
    tmux kill-session -t "$s" 2>/dev/null
    state=$(crictl inspect "$TTY" 2>/dev/null | jq -r .status.state)
    [[ $state == CONTAINER_RUNNING ]] && pass "detach leaves it running ($t)" \
        || fail "detach leaves it running ($t)" "state=$state"

    # port-forward + curl.
    port=$((18080 + RANDOM % 1000))
    $CRICTL_CMD port-forward --transport "$t" "$POD" "$port:8080" \
        >"$WORK/pf-$t.log" 2>&1 &
    PF_PID=$!
    page=""
    for _ in $(seq 50); do
        page=$(curl -s --max-time 5 "http://127.0.0.1:$port/index.html") && [[ -n $page ]] && break
        sleep 0.2
    done
    # One session carries connection after connection, and many at once.
    pages=""
    for _ in 1 2 3; do
        pages+=$(curl -s --max-time 5 "http://127.0.0.1:$port/index.html")
    done
    curls=()
    for i in 1 2 3 4 5; do
        curl -s --max-time 5 "http://127.0.0.1:$port/index.html" >"$WORK/pf-page-$i" &
        curls+=($!)
    done
    wait "${curls[@]}"
    concurrent=$(cat "$WORK"/pf-page-* | grep -c stream-check-page)
    kill "$PF_PID" 2>/dev/null; wait "$PF_PID" 2>/dev/null; PF_PID=""
    [[ $page == stream-check-page ]] && pass "port-forward + curl ($t)" \
        || fail "port-forward + curl ($t)" "page=$page log=$(tail -3 "$WORK/pf-$t.log")"
    [[ $pages == "stream-check-page"*"stream-check-page"*"stream-check-page" && $concurrent == 5 ]] \
        && pass "port-forward: one session, many connections ($t)" \
        || fail "port-forward: one session, many connections ($t)" \
            "sequential=$pages concurrent=$concurrent/5 log=$(tail -3 "$WORK/pf-$t.log")"
    rm -f "$WORK"/pf-page-*
done

exit $FAILED
