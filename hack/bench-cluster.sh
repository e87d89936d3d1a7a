#!/usr/bin/env bash
# Berth vs containerd 1.6 under the same kubelet, on the same machine, with the same images
# (issue 11): for each runtime, hack/cluster.sh up --runtime R, then RUNS times:
#   ready    time from `kubectl apply` of a Deployment of REPLICAS nginx pods to all Ready
#   memory   with the pods Ready (and SETTLE s later): RSS and PSS (/proc/PID/smaps_rollup) of
#            berthd + every berth-monitor, vs containerd + every containerd-shim-runc-v2 (and,
#            apart, the pause processes, which Berth has no counterpart of)
#   cpu      with --poll-cpu SECS: CPU time (user + system, reaped children included) of those
#            same processes over SECS seconds with the pods Ready and nothing else happening:
#            what the kubelet's polling (PLEG relist every second, status, stats) costs each
#            runtime at its default rates
#   delete   time from `kubectl delete` of the Deployment to its last pod gone from the API
# and prints a side-by-side table (median of the runs, and each run), plus what the kubelet
# logged as failed calls to each runtime. As root; the cluster is brought down before and
# after each runtime (it must not run already).
#
#   hack/bench-cluster.sh [--runs N] [--replicas N] [--runtimes "berth containerd"] [--no-build]
#                         [--poll-cpu SECS]
#
# berthd and berth-monitor are release builds (cargo build --release, unless --no-build or
# BERTH_BIN_DIR names others); containerd is Debian 12's package (1.6.20, runc 1.1.5). Both
# runtimes have nginx pulled before the first run and the pods use imagePullPolicy
# IfNotPresent, so no run measures the registry. Each runtime first runs one warm-up
# Deployment of 2 pods (not counted). The kubelet, its config and the CNI conflist (berthd's
# bridge network) are the same for both.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
RUNS=3
REPLICAS=30
RUNTIMES="berth containerd"
BUILD=yes
SETTLE=${BERTH_BENCH_SETTLE:-5}
TIMEOUT=${BERTH_BENCH_TIMEOUT:-300}
POLL_CPU=0
while (($#)); do
    case $1 in
        --runs) RUNS=$2; shift ;;
        --replicas) REPLICAS=$2; shift ;;
        --runtimes) RUNTIMES=$2; shift ;;
        --no-build) BUILD=no ;;
        --poll-cpu) POLL_CPU=$2; shift ;;
        *)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
            exit 2
            ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "bench-cluster: run as root" >&2; exit 1; }
RUN_DIR=${BERTH_CLUSTER_RUN_DIR:-/run/berth-cluster}
CLUSTER_DIR=${BERTH_CLUSTER_DIR:-/var/lib/berth-cluster}
if [[ -e $RUN_DIR/runtime ]]; then
    echo "bench-cluster: a cluster runs ($RUN_DIR/runtime): hack/cluster.sh down first" >&2
    exit 1
fi
if [[ -z ${BERTH_BIN_DIR:-} ]]; then
    if [[ $BUILD == yes ]]; then
        nice -n 10 cargo build --release --locked -p berthd -p berth-shim
    fi
    export BERTH_BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/release
fi
OUT=$(mktemp -d /tmp/bench-cluster.XXXXXX)
echo "bench-cluster: results in $OUT" >&2

log() { echo "bench-cluster: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

deployment() {
    cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $1
  namespace: bench
spec:
  replicas: $2
  selector:
    matchLabels: {app: $1}
  template:
    metadata:
      labels: {app: $1}
    spec:
      containers:
        - name: nginx
          image: nginx
          imagePullPolicy: IfNotPresent
          ports: [{containerPort: 80}]
          readinessProbe:
            httpGet: {path: /, port: 80}
            periodSeconds: 1
EOF
}

# pids RUNTIME: the runtime daemon's and its per-pod processes' pids, as "KIND PID" lines.
pids() {
    local pid cmd
    if [[ $1 == berth ]]; then
        echo "daemon $(<"$RUN_DIR/berthd.pid")"
        for pid in $(pgrep -x berth-monitor || true); do
            cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
            if [[ $cmd == *"$RUN_DIR/berth/"* ]]; then echo "per-pod $pid"; fi
        done
    else
        echo "daemon $(<"$RUN_DIR/containerd.pid")"
        # comm is cut to 15 characters: containerd-shim-runc-v2 is "containerd-shim".
        for pid in $(pgrep -x containerd-shim || true); do
            cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
            if [[ $cmd == *"-address $RUN_DIR/containerd/containerd.sock "* ]]; then
                echo "per-pod $pid"
                # The sandbox process of each pod: the shim's child running /pause.
                for p in $(pgrep -P "$pid" -x pause || true); do echo "pause $p"; done
            fi
        done
    fi
}

# memory RUNTIME: "RSS_KB PSS_KB PERPOD_COUNT PAUSE_RSS_KB PAUSE_PSS_KB" of the runtime's
# processes (daemon + per-pod) and, apart, of the pause processes.
memory() {
    pids "$1" | while read -r kind pid; do
        awk -v k="$kind" '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } END { print k, r, p }' "/proc/$pid/smaps_rollup" 2>/dev/null || true
    done | awk '
        $1 == "pause" { pr += $2; pp += $3; next }
        { r += $2; p += $3; if ($1 == "per-pod") n++ }
        END { printf "%d %d %d %d %d\n", r, p, n, pr, pp }'
}

# cpu_ticks: the CPU clock ticks (utime stime cutime cstime) of the "KIND PID" lines on stdin,
# summed (fields counted after the `)` that ends the command name, which may hold spaces).
cpu_ticks() {
    local kind pid
    while read -r kind pid; do
        [[ $kind == pause ]] && continue
        sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null || true
    done | awk '{ t += $12 + $13 + $14 + $15 } END { print t + 0 }'
}

# poll_cpu RUNTIME SECS: CPU seconds the runtime's processes used over SECS seconds.
poll_cpu() {
    local procs t0 t1
    procs=$(pids "$1")
    t0=$(cpu_ticks <<<"$procs")
    sleep "$2"
    t1=$(cpu_ticks <<<"$procs")
    awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }'
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

bench_runtime() {
    local rt=$1 i t0 ready del mem cpu kubelet_from
    log "=== $rt: up"
    hack/cluster.sh up --runtime "$rt" >"$OUT/$rt-up.log" 2>&1 || { tail -n 30 "$OUT/$rt-up.log" >&2; return 1; }
    eval "$(hack/cluster.sh env)"
    kubelet_from=$(($(wc -l <"$CLUSTER_DIR/logs/kubelet.log") + 1))
    crictl pull docker.io/library/nginx:latest >/dev/null
    kubectl create namespace bench >/dev/null
    # Warm-up: the first pods of a fresh runtime pay for caches (CNI, images' metadata).
    deployment warmup 2 | kubectl apply -f - >/dev/null
    kubectl -n bench wait --for=jsonpath='{.status.readyReplicas}'=2 deployment/warmup --timeout="${TIMEOUT}s" >/dev/null
    kubectl -n bench delete deployment warmup --wait=false >/dev/null
    kubectl -n bench wait --for=delete pod -l app=warmup --timeout="${TIMEOUT}s" >/dev/null 2>&1 || true
    for i in $(seq "$RUNS"); do
        sleep 2
        t0=$(now)
        deployment web "$REPLICAS" | kubectl apply -f - >/dev/null
        kubectl -n bench wait --for=jsonpath='{.status.readyReplicas}'="$REPLICAS" deployment/web \
            --timeout="${TIMEOUT}s" >/dev/null
        ready=$(since "$t0")
        sleep "$SETTLE"
        mem=$(memory "$rt")
        cpu=0
        if ((POLL_CPU > 0)); then
            log "$rt run $i: CPU over ${POLL_CPU}s with $REPLICAS pods Ready"
            cpu=$(poll_cpu "$rt" "$POLL_CPU")
        fi
        t0=$(now)
        kubectl -n bench delete deployment web --wait=false >/dev/null
        # Pods the ReplicaSet's deletion has not reached yet are still listed: wait for none.
        until [[ -z $(kubectl -n bench get pods -l app=web -o name 2>/dev/null) ]]; do
            if (($(awk -v a="$t0" -v b="$(now)" 'BEGIN { print (b - a > '"$TIMEOUT"') }'))); then
                log "$rt: pods not gone within ${TIMEOUT}s"
                return 1
            fi
            sleep 0.2
        done
        del=$(since "$t0")
        echo "$rt $i $ready $del $mem $cpu" >>"$OUT/results"
        log "$rt run $i: ready ${ready}s, delete ${del}s, memory (RSS PSS kB, per-pod procs, pause RSS PSS kB) $mem, CPU ${cpu}s"
    done
    kubectl delete namespace bench --wait=true --timeout=120s >/dev/null || true
    hack/cluster/kubelet-errors.sh "$CLUSTER_DIR/logs/kubelet.log" "$kubelet_from" >"$OUT/$rt-kubelet-errors.txt"
    log "=== $rt: down"
    hack/cluster.sh down >"$OUT/$rt-down.log" 2>&1 || { tail -n 30 "$OUT/$rt-down.log" >&2; return 1; }
}

for rt in $RUNTIMES; do
    if ! bench_runtime "$rt"; then
        log "$rt failed; bringing the cluster down"
        hack/cluster.sh down >>"$OUT/$rt-down.log" 2>&1 || true
        exit 1
    fi
done

# --- the table --------------------------------------------------------------------------------
col() { awk -v r="$1" -v c="$2" '$1 == r { printf "%s ", $c }' "$OUT/results"; }
mib() { awk '{ for (i = 1; i <= NF; i++) printf "%.1f ", $i / 1024 }'; }
row() {
    local label=$1 col=$2 scale=$3 rt vals med line=""
    local -a meds=()
    for rt in $RUNTIMES; do
        vals=$(col "$rt" "$col")
        [[ $scale == mib ]] && vals=$(mib <<<"$vals")
        med=$(median <<<"$vals")
        meds+=("$med")
        line+=$(printf '  %10s  (%s)' "$med" "$(xargs <<<"$vals" | tr ' ' '/')")
    done
    if ((${#meds[@]} == 2)); then
        line+=$(awk -v a="${meds[0]}" -v b="${meds[1]}" 'BEGIN { if (b > 0) printf "  %6.2f", a / b; else printf "  %6s", "-" }')
    fi
    printf '%-34s%s\n' "$label" "$line"
}
{
    echo
    echo "Berth vs containerd under one kubelet ($("$(bash hack/k8s/build-tools.sh --print-path --only kubelet | cut -d: -f1)/kubelet" --version)),"
    echo "$REPLICAS nginx pods, $RUNS runs each: median (each run); last column = first runtime / second"
    printf '%-34s' ""
    for rt in $RUNTIMES; do printf '  %-30s' "$rt"; done
    echo
    row "apply -> all Ready (s)" 3 none
    row "delete -> all pods gone (s)" 4 none
    row "runtime RSS (MiB)" 5 mib
    row "runtime PSS (MiB)" 6 mib
    row "  per-pod processes" 7 none
    row "  + pause RSS (MiB, containerd)" 8 mib
    row "  + pause PSS (MiB, containerd)" 9 mib
    ((POLL_CPU > 0)) && row "runtime CPU over ${POLL_CPU}s (s)" 10 none
    echo
    echo "runtime = berth: berthd + berth-monitor (one per pod); containerd: containerd +"
    echo "containerd-shim-runc-v2 (one per pod); pause = containerd's sandbox processes (Berth has none)."
    echo "Pods on the node: the $REPLICAS + CoreDNS."
    echo "berthd: $BERTH_BIN_DIR; containerd: $(containerd --version | cut -d' ' -f3), $(runc --version | head -n1)"
    for rt in $RUNTIMES; do
        echo
        echo "--- kubelet log during the $rt runs ($OUT/$rt-kubelet-errors.txt):"
        cat "$OUT/$rt-kubelet-errors.txt"
    done
} | tee "$OUT/table.txt"
