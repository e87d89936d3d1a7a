# Helpers of the hack/bench-*.sh benchmarks: processes, mounts and the test registry of a
# benchmark's work dir. Sourced; defines functions only.

# umount_under DIR: every mount below DIR, deepest first (lazily if busy).
umount_under() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

# wait_gone SECS PID...: until none of the PIDs runs, at most SECS; fails if some still do.
wait_gone() {
    local secs=$1 pid i alive
    shift
    for ((i = 0; i <= secs * 10; i++)); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && { alive=1; break; }; done
        ((alive)) || return 0
        ((i == secs * 10)) || sleep 0.1
    done
    return 1
}

# stop_pids SECS PID...: SIGTERM, up to SECS for all to exit, then SIGKILL; each is reaped if it
# is our child (a killed child is a zombie at once, so wait never blocks).
stop_pids() {
    local secs=$1 pid
    shift
    (($#)) || return 0
    kill "$@" 2>/dev/null || true
    wait_gone "$secs" "$@" || kill -9 "$@" 2>/dev/null || true
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# end_pids SECS PID...: for processes told to finish (e.g. their stdin closed): up to SECS to
# exit by themselves, then stop_pids 10.
end_pids() {
    local secs=$1
    shift
    wait_gone "$secs" "$@" || true
    stop_pids 10 "$@"
}

# kill_under DIR [SPARE_PID...]: SIGKILL to every process whose command line names DIR/ (but
# this shell and the SPARE_PIDs), and to all their descendants, by pid. Monitors and shims
# outlive their daemon by design: this is what removes them (and their containers) after a
# failure.
kill_under() {
    local dir=$1 spare
    shift
    spare=" $$ $* "
    local -a pids kids
    mapfile -t pids < <(ps -eo pid=,args= | awk -v w="$dir/" -v s="$spare" 'index($0, w) && !index(s, " " $1 " ") { print $1 }')
    while ((${#pids[@]})); do
        mapfile -t kids < <(ps -eo pid=,ppid= | awk -v p=" ${pids[*]} " 'index(p, " " $2 " ") { print $1 }')
        kill -9 "${pids[@]}" 2>/dev/null || true
        pids=("${kids[@]}")
    done
}

# serve_test_registry BENCH_PODS DIR: Berth's test images in a registry of the e2e fixture
# (`bench-pods --serve-registry`) on 127.0.0.1, serving while this shell holds fd 3 (its stdin)
# open: `exec 3>&-` then end_pids 10 "$REG_PID" (it deletes its storage). Sets REG_PID and HP
# (host:port); fails if it does not start within 60 s.
serve_test_registry() {
    local bench=$1 dir=$2 i
    mkfifo "$dir/registry.in"
    "$bench" --serve-registry <"$dir/registry.in" >"$dir/registry.out" 2>"$dir/registry.err" &
    REG_PID=$!
    exec 3>"$dir/registry.in"
    for ((i = 0; i < 600; i++)); do
        [[ -s $dir/registry.out ]] && break
        kill -0 "$REG_PID" 2>/dev/null || break
        sleep 0.1
    done
    HP=$(head -1 "$dir/registry.out")
    [[ $HP == 127.0.0.1:* ]] || { cat "$dir/registry.err" >&2; echo "$0: the test registry did not start" >&2; return 1; }
}

# renice_self N: this shell, and so everything it starts from now on, at niceness N (so that
# builds running beside a benchmark disturb it less); NICE=0 if that is refused.
renice_self() {
    NICE=$1
    if ((NICE != 0)) && ! renice -n "$NICE" -p $$ >/dev/null; then
        echo "$0: cannot renice to $NICE: running at normal priority" >&2
        NICE=0
    fi
}

# wait_cri CRI SOCKET PID LOG: until the daemon (PID, logging to LOG) answers Version on SOCKET,
# asked with Berth's CRI client CRI (target/release/cri); fails, with LOG's tail, if PID exits
# or 30 s pass.
wait_cri() {
    local cri=$1 sock=$2 pid=$3 log=$4 i
    for ((i = 0; i < 300; i++)); do
        "$cri" --socket "$sock" version >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "daemon did not answer on $sock; log:" >&2
    tail -20 "$log" >&2
    return 1
}
