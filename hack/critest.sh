#!/usr/bin/env bash
# Runs critest, the CRI validation suite of cri-tools (CRITEST_VERSION in hack/k8s/versions.env),
# against a berthd of its own, on this machine and offline. As root.
#
#   hack/critest.sh [--fast] [--focus REGEX] [--skip REGEX] [--parallel N] [--timeout D]
#                   [--name NAME] [--report-only]
#
#   --fast          a subset that covers every area (hack/critest/fast.txt, 28 specs), for CI;
#                   here ~12 s with everything cached, the whole suite ~30 s
#   --focus REGEX   run only the specs whose full text matches (replaces --fast's list)
#   --skip REGEX    skip these specs too (hack/critest/skip.txt is always skipped)
#   --parallel N    Ginkgo processes (default 4; 1 runs the suite in one process); [Serial]
#                   specs (the image specs) run alone at the end either way
#   --timeout D     Ginkgo's whole-suite timeout (default 1h)
#   --name NAME     report dir name (default full, or fast with --fast)
#   --report-only   run nothing: write the summary, failed.txt and skipped.txt again from the
#                   report.json of an earlier run with the same options
#
# What it does, each step cached where it can be:
#   1. builds critest and its ginkgo (-parallel runs `ginkgo` from PATH) and crictl with
#      hack/k8s/build-tools.sh (nice -n 19; cached in ~/.cache/berth), and berthd with
#      `cargo build --workspace --bins --locked` (target/debug; BERTH_BIN_DIR=DIR takes berthd
#      and berth-monitor from DIR instead);
#   2. starts a docker-registry of its own on a free loopback port (storage in its work dir) and
#      pushes the images critest pulls, built offline by hack/critest/images.sh (stand-ins for
#      registry.k8s.io, k8s.gcr.io and gcr.io/k8s-staging-cri-tools images; its header says how
#      each differs from upstream's);
#   3. starts its own berthd: root under /var/tmp/berth-critest.XXXXXX, state and socket under
#      /run/berth-critest.XXXXXX, a registries.conf sending those registries to the local one
#      (plain HTTP; nothing else is reachable), and its own pod network (bridge berthcrit0,
#      10.87.0.0/16, host-local IPAM in the work dir); never a berthd, cluster or registry that
#      anything else runs;
#   4. runs `critest --runtime-endpoint unix://SOCK --image-endpoint unix://SOCK` with
#      -parallel N, the focus and the skips of hack/critest/skip.txt (specs this machine cannot
#      run, each with its reason);
#   5. on exit (also on failure or Ctrl-C): removes its pods through its berthd, stops berthd,
#      its pod monitors, the registry, unmounts and deletes its work dirs, its bridge, and the
#      1 MiB shared-memory segments the HostIpc specs make on the host (`ipcmk -M`) during the run.
#
# Output in ${BERTH_CRITEST_DIR:-target/critest}/NAME/: junit.xml and report.json (Ginkgo),
# suite.log (critest's output), berthd.log, images.txt, failed.txt (each failed spec with the
# first line of its error), skipped.txt (each skipped spec with its reason), and a last line
# "N passed, N failed, N skipped" (also in summary.txt), counted over the specs the focus selects
# (critest's benchmarks are never selected). Exit status 0 when none failed.
#
# Needs: docker-registry skopeo umoci jq curl iproute2 iptables python3 util-linux (ipcmk),
# Go (hack/k8s/README.md), cargo; host ports 12000, 12001 and 12003 free (critest's port specs).
set -euo pipefail
# The whole script is one block, read before it runs: editing it during a long run is safe.
{
REPO=$(cd "$(dirname "$0")/.." && pwd)
HERE=$REPO/hack/critest
# shellcheck source-path=SCRIPTDIR/lib
source "$REPO/hack/lib/ginkgo-report.sh"
cd "$REPO"

FAST=no
FOCUS=
EXTRA_SKIP=
PARALLEL=4
TIMEOUT=1h
NAME=
REPORT_ONLY=no
log() { echo "critest: $*" >&2; }
die() {
    echo "critest: error: $*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}
while (($#)); do
    case $1 in
        --fast) FAST=yes ;;
        --focus) FOCUS=${2:?}; shift ;;
        --skip) EXTRA_SKIP=${2:?}; shift ;;
        --parallel) PARALLEL=${2:?}; shift ;;
        --timeout) TIMEOUT=${2:?}; shift ;;
        --name) NAME=${2:?}; shift ;;
        --report-only) REPORT_ONLY=yes ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
    shift
done
[[ $PARALLEL =~ ^[1-9][0-9]*$ ]] || die "--parallel: a number >= 1"
if [[ -z $NAME ]]; then
    NAME=full
    [[ $FAST == yes ]] && NAME=fast
fi
OUT=${BERTH_CRITEST_DIR:-$REPO/target/critest}/$NAME
K8S_TOOLS=${BERTH_K8S_TOOLS:-$REPO/hack/k8s/build-tools.sh}

# --- selection: focus, skips with reasons ------------------------------------------------------
# skip.txt and fast.txt: "REGEX<TAB>REASON" / "REGEX" lines (# comments), matched against the
# spec's full text ("[k8s.io] Image Manager public image with digest should be ...").
regex_of() { grep -v '^#' "$1" | grep . | cut -f1 | paste -sd'|'; }
SKIP_FILE=$HERE/skip.txt
SELECT=.
[[ $FAST == yes ]] && SELECT=$(regex_of "$HERE/fast.txt")
[[ -n $FOCUS ]] && SELECT=$FOCUS
SKIP=$(regex_of "$SKIP_FILE")
[[ -n $EXTRA_SKIP ]] && SKIP="${SKIP:+$SKIP|}$EXTRA_SKIP"

if [[ $REPORT_ONLY == no ]]; then
[[ $(id -u) == 0 ]] || die "run as root (berthd creates namespaces, mounts and cgroups)"
for tool in docker-registry skopeo umoci jq curl ip iptables python3 ipcmk ipcs ipcrm ss findmnt setsid cargo; do
    command -v "$tool" >/dev/null ||
        die "missing $tool (apt-get install docker-registry skopeo umoci jq curl iproute2 iptables python3 util-linux)"
done
for port in 12000 12001 12003; do
    ! ss -Hltn "sport = :$port" | grep -q . ||
        die "host port $port is in use: critest's port-mapping and port-forward specs need it free"
done

# --- the binaries ------------------------------------------------------------------------------
start=$(date +%s)
TOOLS=(critest critest-ginkgo crictl)
nice -n 19 bash "$K8S_TOOLS" --only "${TOOLS[@]}" >&2
declare -A BIN
IFS=: read -r -a BIN_DIRS <<<"$(bash "$K8S_TOOLS" --print-path --only "${TOOLS[@]}")"
for tool in critest crictl; do
    for dir in "${BIN_DIRS[@]}"; do
        [[ -x $dir/$tool ]] && BIN[$tool]=$dir/$tool && break
    done
    [[ -n ${BIN[$tool]:-} ]] || die "$K8S_TOOLS built no $tool"
done
CRITEST_DIR=$(dirname "${BIN[critest]}")
[[ -x $CRITEST_DIR/ginkgo ]] || die "no ginkgo beside critest in $CRITEST_DIR"
tools_secs=$(($(date +%s) - start))

if [[ -n ${BERTH_BIN_DIR:-} ]]; then
    BERTH_BINS=$BERTH_BIN_DIR
else
    log "building berthd (cargo build --workspace --bins --locked)"
    cargo build --workspace --bins --locked >&2
    BERTH_BINS=${CARGO_TARGET_DIR:-$REPO/target}/debug
fi
[[ -x $BERTH_BINS/berthd && -x $BERTH_BINS/berth-monitor ]] || die "no berthd and berth-monitor in $BERTH_BINS"

# --- work dirs and cleanup ---------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d /var/tmp/berth-critest.XXXXXX)
STATE=$(mktemp -d /run/berth-critest.XXXXXX)
# Searchable by others, as /var/lib and /run are: a hostUsers: false pod's containers reach their
# bundle and pod files as an unprivileged host user (the UserNamespaces specs).
chmod 0711 "$WORK" "$STATE"
SOCK=$STATE/berth.sock
BRIDGE=berthcrit0
REG_PID=
BERTHD_PID=
CRITEST_PID=
SHM_BEFORE=$(ipcs -m | awk '$2 ~ /^[0-9]+$/ {print $2}' | sort)
CRICTL=("${BIN[crictl]}" --config "$WORK/crictl.yaml")

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local rc=$? pid mnt id
    trap - EXIT INT TERM
    set +e
    if [[ -n $CRITEST_PID ]] && kill -0 "$CRITEST_PID" 2>/dev/null; then
        log "stopping critest (pid $CRITEST_PID) and its Ginkgo processes"
        kill -TERM -- "-$CRITEST_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$CRITEST_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$CRITEST_PID" 2>/dev/null
    fi
    if [[ -n $BERTHD_PID ]] && ! kill -0 "$BERTHD_PID" 2>/dev/null; then
        # berthd died during the run: containers outlive it, so a new one (same config) finds
        # them again and removes them below.
        log "berthd (pid $BERTHD_PID) is gone; starting it again to remove its pods"
        cp "$WORK/berthd.log" "$OUT/berthd-died.log" 2>/dev/null
        setsid "$BERTH_BINS/berthd" --config "$WORK/config.toml" >>"$WORK/berthd.log" 2>&1 </dev/null &
        BERTHD_PID=$!
        for _ in $(seq 100); do "${CRICTL[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    if [[ -n $BERTHD_PID ]] && kill -0 "$BERTHD_PID" 2>/dev/null; then
        log "cleaning up: pods, berthd, registry, $WORK, $STATE"
        # Through berthd: it stops the containers, tears the pod networks down (CNI DEL) and
        # ends the pods' monitors.
        timeout 180 "${CRICTL[@]}" rmp --all --force >/dev/null 2>&1
        kill -TERM "$BERTHD_PID"
        for _ in $(seq 100); do kill -0 "$BERTHD_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$BERTHD_PID" 2>/dev/null
        wait "$BERTHD_PID" 2>/dev/null
    fi
    # Monitors of this berthd that are still there (their command line names its state dir).
    for pid in $(pgrep -f -- "--state-dir $STATE/"); do
        kill -KILL "$pid" 2>/dev/null
    done
    [[ -f $WORK/berthd.log ]] && cp "$WORK/berthd.log" "$OUT/berthd.log"
    if [[ -n $REG_PID ]]; then
        kill "$REG_PID" 2>/dev/null
        wait "$REG_PID" 2>/dev/null
    fi
    [[ -f $WORK/registry.log ]] && cp "$WORK/registry.log" "$OUT/registry.log"
    # Mounts left under the work dirs (overlays, pinned namespaces), deepest first.
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null
    done < <(findmnt -rn -o TARGET | grep -E "^($WORK|$STATE)(/|$)" | sort -r)
    rm -rf "$WORK" "$STATE"
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    # berthd's FORWARD rules for the bridge (BERTH-FWD-<bridge>; hack/cni/README.md).
    for cmd in iptables ip6tables; do
        "$cmd" -w -D FORWARD -m comment --comment "berth: pods on a CNI bridge" -j "BERTH-FWD-$BRIDGE" 2>/dev/null
        "$cmd" -w -F "BERTH-FWD-$BRIDGE" 2>/dev/null && "$cmd" -w -X "BERTH-FWD-$BRIDGE"
        # The admin's chain, when empty and no other bridge's chain uses it.
        "$cmd" -w -X BERTH-FORWARD-ADMIN 2>/dev/null
    done
    # The HostIpc specs' segments (ipcmk -M 1048576 on the host, never removed by critest):
    # the ones made during this run, of that size, attached nowhere.
    for id in $(ipcs -m | awk '$2 ~ /^[0-9]+$/ && $5 == 1048576 && $6 == 0 {print $2}'); do
        grep -qx "$id" <<<"$SHM_BEFORE" || ipcrm -m "$id"
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- registry and images -----------------------------------------------------------------------
REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REGISTRY=127.0.0.1:$REG_PORT
mkdir -p "$WORK/registry"
cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/storage
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry.log" 2>&1 </dev/null &
REG_PID=$!
for _ in $(seq 100); do
    curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && break
    kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.log" >&2; die "docker-registry exited"; }
    sleep 0.1
done
curl -fsS "http://$REGISTRY/v2/" >/dev/null || die "docker-registry does not answer on $REGISTRY"

start=$(date +%s)
nice -n 19 "$HERE/images.sh" "$REGISTRY" >"$OUT/images.txt" || die "hack/critest/images.sh failed"
images_secs=$(($(date +%s) - start))
log "images pushed to $REGISTRY: $(wc -l <"$OUT/images.txt") (${images_secs}s)"

# --- berthd -------------------------------------------------------------------------------------
# Locations, not mirrors: a name the local registry lacks fails instead of going elsewhere.
cat >"$WORK/registries.conf" <<EOF
# Written by hack/critest.sh: critest's images come from its local registry only.
[[registry]]
prefix = "registry.k8s.io"
location = "$REGISTRY/registry.k8s.io"
insecure = true

[[registry]]
prefix = "k8s.gcr.io"
location = "$REGISTRY/k8s.gcr.io"
insecure = true

[[registry]]
prefix = "gcr.io/k8s-staging-cri-tools"
location = "$REGISTRY/gcr.io/k8s-staging-cri-tools"
insecure = true

[[registry]]
location = "$REGISTRY"
insecure = true

[[registry]]
prefix = "gcr.io"
blocked = true

[[registry]]
prefix = "docker.io"
blocked = true

[[registry]]
prefix = "public.ecr.aws"
blocked = true

[[registry]]
prefix = "quay.io"
blocked = true
EOF
mkdir -p "$WORK/cni" "$WORK/root"
# The shipped network (hack/cni/10-berth.conflist) with a bridge, range and IPAM store of its own.
jq --arg br "$BRIDGE" --arg ipam "$WORK/cni-ipam" '
    .name = "berth-critest"
    | .plugins[0].bridge = $br
    | .plugins[0].ipam.ranges = [[{subnet: "10.87.0.0/16"}]]
    | .plugins[0].ipam.dataDir = $ipam' \
    "$REPO/hack/cni/10-berth.conflist" >"$WORK/cni/10-berth-critest.conflist"
cat >"$WORK/config.toml" <<EOF
# Written by hack/critest.sh: a berthd apart from any other (own root, state, socket, network).
root = "$WORK/root"
state = "$STATE"
listen = "$SOCK"
registries_config = "$WORK/registries.conf"
cgroup_driver = "cgroupfs"
log_level = "${BERTH_CRITEST_LOG_LEVEL:-info}"

[network]
conf_dir = "$WORK/cni"

[nri]
# critest's NRI specs connect their own plugin (-nri-socket). No pre-installed plugins. Its
# late-joining plugins hold Synchronize open for 2 s: containerd's 2 s request timeout would
# drop them, so they get 10 s.
enable = true
socket_path = "$STATE/nri.sock"
plugin_path = "$WORK/nri-plugins"
plugin_config_path = "$WORK/nri-conf"
plugin_request_timeout_ms = 10000
EOF
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n' "$SOCK" "$SOCK" >"$WORK/crictl.yaml"

setsid "$BERTH_BINS/berthd" --config "$WORK/config.toml" >"$WORK/berthd.log" 2>&1 </dev/null &
BERTHD_PID=$!
for _ in $(seq 300); do
    [[ -S $SOCK ]] && "${CRICTL[@]}" version >/dev/null 2>&1 && break
    kill -0 "$BERTHD_PID" 2>/dev/null || { tail -n 20 "$WORK/berthd.log" >&2; die "berthd exited"; }
    sleep 0.1
done
"${CRICTL[@]}" version >/dev/null || { tail -n 20 "$WORK/berthd.log" >&2; die "berthd does not answer on $SOCK"; }
# One pull first: a registry or registries.conf problem shows here, not as 100 failed specs.
"${CRICTL[@]}" pull registry.k8s.io/e2e-test-images/busybox:1.29-2 >/dev/null ||
    die "berthd cannot pull registry.k8s.io/e2e-test-images/busybox:1.29-2 from $REGISTRY (see $WORK/berthd.log)"
log "berthd $("$BERTH_BINS/berthd" --version 2>/dev/null | head -n1) on unix://$SOCK (pid $BERTHD_PID)"

# --- the run ------------------------------------------------------------------------------------
CRITEST=("${BIN[critest]}" -runtime-endpoint "unix://$SOCK" -image-endpoint "unix://$SOCK"
    -config "$WORK/crictl.yaml" -nri-socket "$STATE/nri.sock"
    -ginkgo.focus "$SELECT" -ginkgo.timeout "$TIMEOUT" -ginkgo.no-color
    -ginkgo.junit-report "$OUT/junit.xml" -ginkgo.json-report "$OUT/report.json")
[[ -n $SKIP ]] && CRITEST+=(-ginkgo.skip "$SKIP")
# -parallel 1 is refused (Ginkgo takes it for go test's -parallel): leave it out then.
((PARALLEL > 1)) && CRITEST+=(-parallel "$PARALLEL")
log "running critest $("${BIN[critest]}" -version 2>/dev/null | sed -n 's/^critest version: //p') ($NAME): -parallel $PARALLEL, focus '$SELECT', report in $OUT"
run_start=$(date +%s)
rc=0
# critest -parallel runs the `ginkgo` beside it (PATH), which runs critest's binary again. In its
# own session, waited for in the background: a signal to this script runs the cleanup at once,
# and the cleanup ends the whole process group.
(cd "$WORK" && PATH=$CRITEST_DIR:$PATH exec setsid "${CRITEST[@]}") >"$OUT/suite.log" 2>&1 &
CRITEST_PID=$!
wait "$CRITEST_PID" || rc=$?
CRITEST_PID=
run_secs=$(($(date +%s) - run_start))
log "$NAME: critest exited $rc after ${run_secs}s (tools ${tools_secs}s, images ${images_secs}s)"
fi

# --- report ------------------------------------------------------------------------------------
[[ -f $OUT/report.json ]] || { tail -n 40 "$OUT/suite.log" >&2; die "no report.json: see $OUT/suite.log"; }
# The specs the focus picks, minus critest's benchmarks (it always skips those).
log "$NAME: junit $OUT/junit.xml, json $OUT/report.json, critest output $OUT/suite.log"
ginkgo_report "$OUT" "$SELECT" "$SKIP_FILE" "$EXTRA_SKIP" benchmark
exit
}
