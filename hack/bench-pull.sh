#!/usr/bin/env bash
# Cold-pull benchmark: the same multi-layer image (hack/build-bench-image.sh, ~370 MB of this
# machine's /usr) pulled from a local registry on 127.0.0.1 by
#   floor       per layer, all layers in parallel:
#               curl | tee >(sha256) | gzip -d | tee >(sha256) | tar -x
#               i.e. download + digest + decompress + diffID + untar and nothing else;
#   berthd      a release berthd on fresh dirs, PullImage over CRI (target/release/cri);
#   ctr         containerd on fresh dirs, `ctr image pull` (fetches all layers into its
#               content store, then unpacks them one after another);
#   containerd-cri  a fresh containerd, PullImage over CRI (the kubelet's path: 3 downloads at
#               a time into the content store, each layer unpacked after the previous one);
# in one run on the same disk, N times each, interleaved, reporting medians and CPU time.
# Takes ~1.5 min a run, plus the image build (~40 s, cached) and cargo build.
#
#   hack/bench-pull.sh [--runs N] [--settle SECS] [--idle-pct PCT] [--idle-wait SECS] [--nice N]
#                      [--berthd-config FILE] [--no-berthd] [--no-containerd] [--no-build] [--keep]
#                      [--on-root]
#
#   --runs N          timed pulls per tool (default 3); the table shows medians
#   --settle SECS     pause after sync, before dropping caches (default 2)
#   --idle-pct/-wait  before each step wait up to SECS (default 10) for the host's CPUs to be
#                     under PCT % busy (default 25): other work on a 2-core host skews wall times
#   --nice N          niceness of the timed steps and the daemons (default -10, as root), so
#                     that builds running next to the benchmark disturb it less; 0 to disable
#   --berthd-config   berthd's TOML config (default: an empty file, i.e. all defaults)
#   --keep            keep the work dir (outputs, logs) for inspection
#   --on-root         write the pulls' outputs straight to /var/tmp's fs instead of a loop-mounted
#                     ext4 in a file on it (see "work dir" below; deleting them takes minutes)
#
# Needs root (drop_caches, containerd's overlay mounts), docker-registry, skopeo, curl, jq;
# containerd and ctr are optional. Everything it starts (registry, daemons, mounts, the work
# dir under /var/tmp) is cleaned up on exit, also on failure or Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=hack/lib/bench.sh
source "$HERE/lib/bench.sh"
# shellcheck source=hack/lib/containerd.sh
source "$HERE/lib/containerd.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
IMGDIR=${BERTH_BENCH_IMAGE:-$TARGET/bench-image}
REPO=berth-bench/usr
RUNS=3
SETTLE=2
IDLE_PCT=25
IDLE_WAIT=10
NICE=-10
BERTHD_CONFIG=
DO_BERTHD=1
DO_CONTAINERD=1
DO_BUILD=1
KEEP=0
LOOPFS=1

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
while (($#)); do
    case $1 in
        --runs) RUNS=${2:?}; shift 2 ;;
        --settle) SETTLE=${2:?}; shift 2 ;;
        --idle-pct) IDLE_PCT=${2:?}; shift 2 ;;
        --idle-wait) IDLE_WAIT=${2:?}; shift 2 ;;
        --nice) NICE=${2:?}; shift 2 ;;
        --berthd-config) BERTHD_CONFIG=$(readlink -f "${2:?}"); shift 2 ;;
        --no-berthd) DO_BERTHD=0; shift ;;
        --no-containerd) DO_CONTAINERD=0; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --on-root) LOOPFS=0; shift ;;
        -h | --help) usage ;;
        *) echo "$0: unknown argument $1" >&2; usage ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "$0: --runs wants a positive number" >&2; exit 2; }

for tool in docker-registry skopeo curl jq sha256sum gzip tar; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (hack/install-deps.sh)" >&2; exit 1; }
done
DROP=1
if [[ $EUID -ne 0 ]]; then
    echo "$0: not root: page caches are NOT dropped, no loop fs, containerd is skipped" >&2
    DROP=0
    DO_CONTAINERD=0
    LOOPFS=0
fi
if ((DO_CONTAINERD)) && ! { command -v containerd && command -v ctr; } >/dev/null; then
    echo "$0: containerd/ctr not installed: skipped" >&2
    DO_CONTAINERD=0
fi

START=$EPOCHREALTIME
FAILED=()
secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# --- build ---------------------------------------------------------------------------------
"$HERE/build-bench-image.sh" "$IMGDIR"
CRI=$TARGET/release/cri
BERTHD=$TARGET/release/berthd
if ((DO_BUILD)); then
    (cd "$ROOT" && cargo build --release --quiet -p berth-e2e --bin cri)
    if ((DO_BERTHD)) && ! (cd "$ROOT" && cargo build --release --quiet -p berthd); then
        echo "$0: berthd does not build: its row is skipped" >&2
        FAILED+=("berthd (build)")
        DO_BERTHD=0
    fi
fi
[[ -x $CRI ]] || { echo "$0: $CRI missing" >&2; exit 1; }

# Everything started from here on (pipelines, daemons, registry) inherits the niceness.
renice_self "$NICE"

# --- layers --------------------------------------------------------------------------------
L_NAME=() L_DIGEST=() L_DIFFID=()
C_TOTAL=0 U_TOTAL=0 ENTRIES=0
while IFS=$'\t' read -r name digest csize diffid usize entries; do
    L_NAME+=("$name") L_DIGEST+=("$digest") L_DIFFID+=("$diffid")
    C_TOTAL=$((C_TOTAL + csize)) U_TOTAL=$((U_TOTAL + usize)) ENTRIES=$((ENTRIES + entries))
done <"$IMGDIR/layers.tsv"
NLAYERS=${#L_DIGEST[@]}

# --- work dir, cleanup ---------------------------------------------------------------------
# Outputs of every step are kept until the end: the root fs here is ext4 without a journal
# mounted with `discard`, so a delete trims each freed extent synchronously (~25-35 s per
# output tree of 35k files) and file creation right after mass deletes is much slower;
# deleting between timed steps would slow down the next one. They go to OUT: by default a
# fresh ext4 (no journal, like the root fs, but no discard) in a sparse file on the same disk,
# so that the ~2 GB a run are deleted at the end in seconds (one big file, a few large
# discards) instead of ~7 minutes for 3 runs (measured).
NEED=$(((RUNS * (4 * U_TOTAL + 2 * C_TOTAL) + C_TOTAL) / 1000 + 1000000))
AVAIL=$(df -k --output=avail /var/tmp | tail -1)
if ((AVAIL < NEED)); then
    echo "$0: /var/tmp has $((AVAIL / 1000)) MB free, the benchmark keeps ~$((NEED / 1000)) MB" >&2
    exit 1
fi
WORK=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
DAEMONS=()
OUT=$WORK/out
mkdir "$OUT"

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
    local rest=()
    for i in "${DAEMONS[@]}"; do [[ $i == "$pid" ]] || rest+=("$i"); done
    DAEMONS=("${rest[@]}")
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${DAEMONS[@]}"; do stop_pid "$pid"; done
    umount_under "$WORK"
    if ((KEEP)); then
        echo "kept $WORK" >&2
    else
        local t0=$EPOCHREALTIME
        ((LOOPFS)) || echo "removing $WORK (every run's output: minutes on this fs) ..." >&2
        rm -rf "$WORK"
        ((LOOPFS)) || echo "removed in $(secs_since "$t0") s" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# cpu_busy_pct: how busy all CPUs were over the next second, in percent.
cpu_busy_pct() {
    local s0 s1
    read -r -a s0 </proc/stat
    sleep 1
    read -r -a s1 </proc/stat
    # cpu user nice system idle iowait irq softirq steal ...
    awk -v u="$((s1[1] + s1[2] + s1[3] + s1[6] + s1[7] + s1[8] - s0[1] - s0[2] - s0[3] - s0[6] - s0[7] - s0[8]))" \
        -v i="$((s1[4] + s1[5] - s0[4] - s0[5]))" 'BEGIN { printf "%d", u + i ? 100 * u / (u + i) : 0 }'
}

# cpu_ticks [PID]: CPU time (user + system, in clock ticks) of this shell's reaped children,
# plus PID's own while it runs (a daemon counts here only until it is reaped).
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local st t
    read -r -a st <"/proc/$$/stat"
    t=$((st[15] + st[16]))
    if [[ -n ${1:-} ]]; then
        read -r -a st <"/proc/$1/stat"
        t=$((t + st[13] + st[14]))
    fi
    echo "$t"
}
# cpu_secs_since TICKS [PID]
cpu_secs_since() { awk -v a="$1" -v b="$(cpu_ticks "${2:-}")" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }'; }

# --- registry ------------------------------------------------------------------------------
if ((LOOPFS)); then
    # Sized for every output with room to spare; sparse, so only what is written takes space.
    # Inode tables are written now (lazy_itable_init=0), not by a kernel thread during the runs.
    truncate -s "$((NEED * 1000 * 3 / 2))" "$WORK/fs.img"
    mkfs.ext4 -q -O ^has_journal -E lazy_itable_init=0,nodiscard -N "$((RUNS * 5 * ENTRIES + 100000))" \
        "$WORK/fs.img"
    mount -o loop "$WORK/fs.img" "$OUT"
fi

REGDIR=$WORK/registry
mkdir -p "$REGDIR"
start_registry() {
    cat >"$REGDIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGDIR/storage
http:
  addr: 127.0.0.1:$PORT
EOF
    docker-registry serve "$REGDIR/config.yml" >"$REGDIR/registry.log" 2>&1 &
    REG_PID=$!
    DAEMONS+=("$REG_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && return 0
        kill -0 "$REG_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$REG_PID"
    return 1
}
# A random high port; retried in case another test holds it.
for _ in 1 2 3 4 5; do
    PORT=$((20000 + RANDOM % 20000))
    start_registry && break
    PORT=
done
[[ -n $PORT ]] || { cat "$REGDIR/registry.log" >&2; echo "$0: registry did not start" >&2; exit 1; }
IMAGE=127.0.0.1:$PORT/$REPO:latest
skopeo copy --quiet --insecure-policy --dest-tls-verify=false --preserve-digests \
    "oci:$IMGDIR/oci:bench" "docker://$IMAGE"

# Before each timed step: flush the previous steps' writes, let the disk settle, drop the page,
# dentry and inode caches, then read the registry's blobs back into memory: the registry
# stands in for a remote one and must not compete for the disk under test.
prepare() {
    sync
    sleep "$SETTLE"
    if ((DROP)); then echo 3 >/proc/sys/vm/drop_caches; fi
    find "$REGDIR/storage" -type f -exec cat {} + >/dev/null
    local waited=0
    while BUSY=$(cpu_busy_pct) && ((BUSY > IDLE_PCT && waited < IDLE_WAIT)); do
        waited=$((waited + 1))
    done
}

# The floor's hasher: OpenSSL's uses the CPU's SHA instructions, as berthd's sha2 does;
# coreutils' sha256sum (9.1) does not and is ~8x slower here, which would inflate the floor.
if command -v openssl >/dev/null; then
    SHA256=(openssl dgst -sha256 -r)
else
    SHA256=(sha256sum)
fi

# --- steps ---------------------------------------------------------------------------------
# Each runs in this shell (so the cleanup trap knows its daemons) and sets STEP_SECS to the
# seconds of its timed part and STEP_CPU to the CPU seconds spent in it (the tool's processes
# and daemon; not the registry), or leaves them empty if that tool failed; an unexpected error
# (set -e) ends the whole benchmark. Run 1 also checks each result (digests, snapshots,
# entries on disk).

floor_layer() {
    local dir=$1 i=$2
    "${SHA256[@]}" <"$dir.gz" >"$dir.digest" &
    local a=$!
    "${SHA256[@]}" <"$dir.tar" >"$dir.diffid" &
    local b=$!
    curl -sf "http://127.0.0.1:$PORT/v2/$REPO/blobs/${L_DIGEST[$i]}" | tee "$dir.gz" |
        gzip -d | tee "$dir.tar" | tar -x -C "$dir"
    wait "$a"
    wait "$b"
}

step_floor() {
    local run=$1 d=$OUT/run$1/floor i t0 c0 secs cpu pids=() ok=1 p
    mkdir -p "$d"
    for i in "${!L_DIGEST[@]}"; do
        mkdir "$d/$i"
        mkfifo "$d/$i.gz" "$d/$i.tar" # tee's second outputs, read by the hashers
    done
    prepare
    t0=$EPOCHREALTIME c0=$(cpu_ticks)
    for i in "${!L_DIGEST[@]}"; do
        floor_layer "$d/$i" "$i" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || ok=0; done
    secs=$(secs_since "$t0") cpu=$(cpu_secs_since "$c0")
    ((ok)) || { echo "floor: a layer pipeline failed" >&2; return 0; }
    for i in "${!L_DIGEST[@]}"; do
        if [[ "sha256:$(cut -d' ' -f1 "$d/$i.digest")" != "${L_DIGEST[$i]}" ||
            "sha256:$(cut -d' ' -f1 "$d/$i.diffid")" != "${L_DIFFID[$i]}" ]]; then
            echo "floor: layer ${L_NAME[$i]}: digest or diffID mismatch" >&2
            return 0
        fi
    done
    ((run > 1)) || echo "  check: floor: digests and diffIDs match; $(find "$d" -mindepth 2 | wc -l) entries on disk (image has $ENTRIES)"
    STEP_SECS=$secs STEP_CPU=$cpu
}

# cri_pull SOCKET: PullImage; prints the RPC's seconds (as measured by cri).
cri_pull() {
    local out
    out=$("$CRI" --socket "$1" pull "$IMAGE" 2>&1) || { echo "$out" >&2; return 1; }
    sed -n 's/^pulled .* in \([0-9.]*\) s$/\1/p' <<<"$out"
}

# berthd_cmd DIR: sets BERTHD_CMD to the daemon's command line for DIR.
berthd_cmd() {
    BERTHD_CMD=("$BERTHD" --root "$1/root" --state "$1/state" --listen "$1/state/berth.sock"
        --config "$WORK/berthd.toml" --registries-config "$WORK/registries.conf")
}

step_berthd() {
    local run=$1 d=$OUT/run$1/berthd secs c0 cpu pid sock=$OUT/run$1/berthd/state/berth.sock
    mkdir -p "$d"
    berthd_cmd "$d"
    "${BERTHD_CMD[@]}" >"$d/berthd.log" 2>&1 &
    pid=$!
    DAEMONS+=("$pid")
    if ! wait_cri "$CRI" "$sock" "$pid" "$d/berthd.log"; then
        stop_pid "$pid"
        return 0
    fi
    prepare
    c0=$(cpu_ticks "$pid")
    if ! secs=$(cri_pull "$sock"); then
        tail -20 "$d/berthd.log" >&2
        stop_pid "$pid"
        return 0
    fi
    cpu=$(cpu_secs_since "$c0" "$pid")
    if ((run == 1)); then
        echo "  check: berthd: $("$CRI" --socket "$sock" images | tail -n +2 | wc -l) image(s) listed; $(find "$d/root" | wc -l) entries under its root (image has $ENTRIES)"
    fi
    stop_pid "$pid"
    STEP_SECS=$secs STEP_CPU=$cpu
}

containerd_config() {
    local d=$1
    cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "$WORK/containerd-hosts"
EOF
}

# start_containerd DIR: sets CTD_PID; fails if it does not answer.
start_containerd() {
    local d=$1 i
    mkdir -p "$d"
    containerd_config "$d"
    containerd --config "$d/config.toml" --log-level warn >"$d/containerd.log" 2>&1 &
    CTD_PID=$!
    DAEMONS+=("$CTD_PID")
    for ((i = 0; i < 300; i++)); do
        ctr -a "$d/containerd.sock" version >/dev/null 2>&1 && return 0
        kill -0 "$CTD_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$d/containerd.log" >&2
    stop_containerd "$d"
    return 1
}

stop_containerd() {
    stop_pid "$CTD_PID"
    umount_under "$1"
}

# check_snapshots DIR NAMESPACE: containerd really unpacked (one committed snapshot a layer).
check_snapshots() {
    local n
    n=$(ctr -a "$1/containerd.sock" -n "$2" snapshots ls | awk 'NR > 1 && $NF == "Committed"' | wc -l)
    echo "  check: containerd ($2): $n committed overlayfs snapshots (image has $NLAYERS layers); $(find "$1/root" | wc -l) entries under its root"
    ((n == NLAYERS)) || { echo "containerd did not unpack every layer" >&2; return 1; }
}

step_ctr() {
    local run=$1 d=$OUT/run$1/ctr t0 c0 secs cpu
    start_containerd "$d" || return 0
    prepare
    t0=$EPOCHREALTIME c0=$(cpu_ticks "$CTD_PID")
    if ! ctr -a "$d/containerd.sock" -n bench images pull --plain-http "$IMAGE" >"$d/ctr.log" 2>&1; then
        tail -20 "$d/ctr.log" >&2
        stop_containerd "$d"
        return 0
    fi
    secs=$(secs_since "$t0") cpu=$(cpu_secs_since "$c0" "$CTD_PID")
    if ((run == 1)) && ! check_snapshots "$d" bench; then
        stop_containerd "$d"
        return 0
    fi
    stop_containerd "$d"
    STEP_SECS=$secs STEP_CPU=$cpu
}

step_containerd_cri() {
    local run=$1 d=$OUT/run$1/containerd-cri c0 secs cpu
    start_containerd "$d" || return 0
    prepare
    c0=$(cpu_ticks "$CTD_PID")
    if ! secs=$(cri_pull "$d/containerd.sock"); then
        tail -20 "$d/containerd.log" >&2
        stop_containerd "$d"
        return 0
    fi
    cpu=$(cpu_secs_since "$c0" "$CTD_PID")
    if ((run == 1)) && ! check_snapshots "$d" k8s.io; then
        stop_containerd "$d"
        return 0
    fi
    stop_containerd "$d"
    STEP_SECS=$secs STEP_CPU=$cpu
}

# --- configs for the daemons ---------------------------------------------------------------
if [[ -n $BERTHD_CONFIG ]]; then
    cp "$BERTHD_CONFIG" "$WORK/berthd.toml"
else
    : >"$WORK/berthd.toml" # all defaults
fi
cat >"$WORK/registries.conf" <<EOF
[[registry]]
location = "127.0.0.1:$PORT"
insecure = true
EOF
containerd_registry_hosts "$WORK/containerd-hosts" "127.0.0.1:$PORT"

TOOLS=(floor)
((DO_BERTHD)) && TOOLS+=(berthd)
((DO_CONTAINERD)) && TOOLS+=(ctr containerd-cri)

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
echo "image:   $IMAGE: $NLAYERS gzip layers (${L_NAME[*]}), $(mb "$C_TOTAL") MB compressed," \
    "$(mb "$U_TOTAL") MB uncompressed, $ENTRIES entries"
echo "host:    $(nproc) CPUs, $(uname -r), work dir $WORK on $(findmnt -no FSTYPE -T "$WORK") ($(findmnt -no SOURCE,OPTIONS -T "$WORK"))," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg); benchmark niceness $(ps -o ni= -p $$ | tr -d " ")"
echo "method:  $RUNS runs, tools interleaved in each (${TOOLS[*]}); before each timed step:" \
    "sync, sleep ${SETTLE}s, $( ((DROP)) && echo 'drop caches (echo 3 > drop_caches)' || echo 'NO cache drop (not root)')," \
    "the registry's blobs are read into memory, then up to ${IDLE_WAIT}s wait for CPUs under ${IDLE_PCT}% busy;" \
    "no output is deleted until the end (creating files after mass deletes is slow on this ext4);" \
    "$( ((LOOPFS)) && echo "outputs on a loop-mounted ext4 without journal or discard in $WORK/fs.img (same disk)" ||
        echo "outputs in $OUT")"
echo

declare -A RES RES_CPU
for ((run = 1; run <= RUNS; run++)); do
    for tool in "${TOOLS[@]}"; do
        STEP_SECS='' STEP_CPU='' BUSY=''
        "step_${tool//-/_}" "$run"
        if [[ $STEP_SECS =~ ^[0-9]+\.[0-9]+$ ]]; then
            printf 'run %d  %-15s %7.3f s  %6.2f CPU s   (CPUs %s%% busy just before)\n' \
                "$run" "$tool" "$STEP_SECS" "$STEP_CPU" "$BUSY"
            RES[$tool]+="$STEP_SECS "
            RES_CPU[$tool]+="$STEP_CPU "
        else
            printf 'run %d  %-15s FAILED\n' "$run" "$tool"
            FAILED+=("$tool (run $run)")
        fi
    done
done

median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

echo
printf '%-16s %9s %8s %8s %7s   %s\n' "" "median s" "MB/s" "x floor" "CPU s" "runs (s)"
FLOOR=
for tool in "${TOOLS[@]}"; do
    read -r -a vals <<<"${RES[$tool]:-}"
    if ((${#vals[@]} == 0)); then
        printf '%-16s %9s\n' "$tool" "failed"
        continue
    fi
    med=$(median "${vals[@]}")
    [[ $tool == floor ]] && FLOOR=$med
    ratio=$([[ -n $FLOOR ]] && awk -v a="$med" -v f="$FLOOR" 'BEGIN { printf "%.2f", a / f }' || echo -)
    read -r -a cpus <<<"${RES_CPU[$tool]}"
    printf '%-16s %9.3f %8.1f %8s %7.2f   %s\n' "$tool" "$med" \
        "$(awk -v u="$U_TOTAL" -v s="$med" 'BEGIN { print u / 1e6 / s }')" "$ratio" \
        "$(median "${cpus[@]}")" "${vals[*]}"
done
echo "(MB = 10^6 bytes of uncompressed layer tar; x floor = median / floor's median;"
echo " CPU s = median user+system seconds of the tool's processes during the pull)"

# containerd decompresses with unpigz (multi-threaded) when it is on PATH.
PIGZ=$(command -v unpigz || echo "not installed, so Go's gzip")
cat <<EOF

commands (per layer, DIR = a fresh dir; all layers at once):
  floor:          curl -sf http://127.0.0.1:$PORT/v2/$REPO/blobs/DIGEST | tee FIFO1 | gzip -d | tee FIFO2 | tar -x -C DIR
                  with ${SHA256[*]} <FIFO1 (digest) and <FIFO2 (diffID); gzip -d (GNU gzip $(gzip --version | head -1 | cut -d' ' -f2))
                  is single-threaded, like berthd's decompressor per layer; GNU tar $(tar --version | head -1 | cut -d' ' -f4) as root
EOF
berthd_cmd "$OUT/runN/berthd"
((DO_BERTHD)) && cat <<EOF
  berthd:         ${BERTHD_CMD[*]}
                  (config: $( [[ -s $WORK/berthd.toml ]] && tr '\n' ' ' <"$WORK/berthd.toml" || echo "empty: defaults"))
                  $CRI --socket $OUT/runN/berthd/state/berth.sock pull $IMAGE   (time of the PullImage RPC)
EOF
((DO_CONTAINERD)) && cat <<EOF
  containerd:     containerd --config DIR/config.toml  ($(containerd --version | cut -d' ' -f3); overlayfs snapshotter; fresh root each run;
                  unpigz: $PIGZ)
  ctr:            ctr -a DIR/containerd.sock -n bench images pull --plain-http $IMAGE   (wall time)
  containerd-cri: $CRI --socket DIR/containerd.sock pull $IMAGE   (time of the PullImage RPC; hosts.toml marks the registry plain HTTP)
EOF
echo
echo "total benchmark time: $(secs_since "$START") s"
if ((${#FAILED[@]})); then
    echo "FAILED: ${FAILED[*]}" >&2
    exit 1
fi
