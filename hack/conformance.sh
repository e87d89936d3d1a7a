#!/usr/bin/env bash
# Runs Kubernetes' own conformance suites against Berth, or against containerd 1.6 under the same
# kubelet and images (issue 14), on this machine and offline. As root.
#
#   hack/conformance.sh [--runtime berth|containerd] [--suite cluster|node] [--fast]
#                       [--focus REGEX] [--skip REGEX] [--procs N] [--timeout DURATION] [--keep]
#                       [--name NAME] [--report-only] [--seed N] [--feature-gates GATES]
#
#   --suite cluster  (default) test/e2e's [Conformance] specs on the single-node cluster of
#                    hack/cluster.sh (brought up on --runtime when it is not up; taken down at
#                    the end if this script brought it up, unless --keep). Specs a single node
#                    cannot run are skipped with their reason (hack/conformance/skip-cluster.txt).
#   --suite node     test/e2e_node's [NodeConformance] specs in the suite's local mode: the test
#                    binary starts its own apiserver, etcd and the kubelet built by
#                    hack/k8s/build-tools.sh, on the runtime of `hack/cluster.sh up
#                    --runtime-only` (registry, images, berthd or containerd); the whole cluster
#                    must be down. Specs skipped: hack/conformance/skip-node.txt.
#   --fast           a few minutes' subset of the cluster suite that covers every area
#                    (hack/conformance/fast.txt); what hack/test.sh runs after the cluster tests
#   --focus, --skip  Ginkgo regexes replacing the suite's focus / added to its skips
#   --procs N        parallel Ginkgo processes (default 4; [Serial] specs run alone at the end)
#   --timeout D      Ginkgo's whole-suite timeout (default 2h)
#   --keep           leave up the cluster this script brought up
#   --name NAME      report dir name (default SUITE-RUNTIME, fast-RUNTIME with --fast): for runs
#                    split by --focus
#   --seed N         Ginkgo's random seed (the spec order): the seed of another run (suite.log's
#                    "Random Seed") runs the specs in its order, e.g. on the other runtime
#   --feature-gates GATES  e.g. PodAndContainerStatsFromCRI=true: the node suite passes them to
#                    its kubelet (and its specs see them); the cluster suite's kubelet gets them
#                    through BERTH_CLUSTER_KUBELET_FEATURE_GATES when this script brings it up
#   --report-only    run nothing: write the summary, failed.txt and skipped.txt again from the
#                    report.json of an earlier run with the same options
#
# Output in ${BERTH_CONFORMANCE_DIR:-target/conformance}/SUITE-RUNTIME/: junit.xml and
# report.json (Ginkgo), skipped.txt (each skipped spec with its reason), failed.txt, the
# suite's log, and a last line "N passed, N failed, N skipped" (also in summary.txt), counted
# over the specs the suite's focus selects. Exit status 0 when none failed.
#
# The test binaries (e2e.test, e2e_node.test) and the test images' binaries are built from the
# k8s.io/kubernetes module of hack/k8s/versions.env by hack/k8s/build-tools.sh (cached); the
# images are built by hack/conformance/images.sh and served from the cluster's registry for
# registry.k8s.io.
set -euo pipefail
# The whole script is one block, read before it runs: editing it during a long run is safe.
{
REPO=$(cd "$(dirname "$0")/.." && pwd)
HERE=$REPO/hack/conformance
# shellcheck source-path=SCRIPTDIR/lib
source "$REPO/hack/lib/ginkgo-report.sh"
cd "$REPO"

RUNTIME=berth
SUITE=cluster
FAST=no
FOCUS=
EXTRA_SKIP=
PROCS=4
TIMEOUT=2h
KEEP=no
REPORT_ONLY=no
NAME=
SEED=
FEATURE_GATES=
log() { echo "conformance: $*" >&2; }
die() {
    echo "conformance: error: $*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}
while (($#)); do
    case $1 in
        --runtime) RUNTIME=${2:?}; shift ;;
        --suite) SUITE=${2:?}; shift ;;
        --fast) FAST=yes ;;
        --focus) FOCUS=${2:?}; shift ;;
        --skip) EXTRA_SKIP=${2:?}; shift ;;
        --procs) PROCS=${2:?}; shift ;;
        --timeout) TIMEOUT=${2:?}; shift ;;
        --keep) KEEP=yes ;;
        --name) NAME=${2:?}; shift ;;
        --report-only) REPORT_ONLY=yes ;;
        --seed) SEED=${2:?}; shift ;;
        --feature-gates) FEATURE_GATES=${2:?}; shift ;;
        *) usage ;;
    esac
    shift
done
[[ $RUNTIME == berth || $RUNTIME == containerd ]] || die "--runtime: berth or containerd"
[[ $SUITE == cluster || $SUITE == node ]] || usage
[[ $FAST == no || $SUITE == cluster ]] || { echo "conformance: --fast is a cluster-suite subset" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "conformance: run as root (hack/cluster.sh needs it)" >&2; exit 1; }


if [[ -z $NAME ]]; then
    NAME=$SUITE-$RUNTIME
    [[ $FAST == yes ]] && NAME=fast-$RUNTIME
fi
OUT=${BERTH_CONFORMANCE_DIR:-$REPO/target/conformance}/$NAME
CLUSTER_DIR=${BERTH_CLUSTER_DIR:-/var/lib/berth-cluster}
RUN_DIR=${BERTH_CLUSTER_RUN_DIR:-/run/berth-cluster}
K8S_TOOLS=${BERTH_K8S_TOOLS:-$REPO/hack/k8s/build-tools.sh}

# --- the suite's binaries ------------------------------------------------------------------------
TEST_BIN=e2e.test
[[ $SUITE == node ]] && TEST_BIN=e2e_node.test
TOOLS=("$TEST_BIN" ginkgo kubelet kubectl crictl)
bash "$K8S_TOOLS" --only "${TOOLS[@]}" >&2
declare -A BIN
IFS=: read -r -a BIN_DIRS <<<"$(bash "$K8S_TOOLS" --print-path --only "${TOOLS[@]}")"
for tool in "${TOOLS[@]}"; do
    for dir in "${BIN_DIRS[@]}"; do
        [[ -x $dir/$tool ]] && BIN[$tool]=$dir/$tool && break
    done
    [[ -n ${BIN[$tool]:-} ]] || die "$K8S_TOOLS built no $tool"
done
# The ginkgo CLI runs the suite's processes and must speak its library's version.
# shellcheck source-path=SCRIPTDIR/k8s
source "$(dirname "$K8S_TOOLS")/versions.env"
want=$(awk '$1 == "github.com/onsi/ginkgo/v2" {print $2}' \
    "${BERTH_CACHE:-$HOME/.cache/berth}/go/pkg/mod/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod")
have=$("${BIN[ginkgo]}" version | awk '{print $3}')
[[ v$have == "$want" ]] || die "ginkgo is $have but Kubernetes $K8S_VERSION uses $want (hack/k8s/versions.env)"

# --- selection: focus, skips with reasons ----------------------------------------------------------
# A skip file has "REGEX<TAB>REASON" lines (# comments); REGEX is matched against spec texts.
skip_regex() { grep -v '^#' "$1" | grep . | cut -f1 | paste -sd'|'; }
if [[ $SUITE == cluster ]]; then
    SELECT='\[Conformance\]'
    SKIP_FILE=$HERE/skip-cluster.txt
    if [[ $FAST == yes ]]; then
        SELECT=$(grep -v '^#' "$HERE/fast.txt" | grep . | paste -sd'|')
    fi
else
    SELECT='\[NodeConformance\]'
    SKIP_FILE=$HERE/skip-node.txt
fi
[[ -n $FOCUS ]] && SELECT=$FOCUS
SKIP=$(skip_regex "$SKIP_FILE")
[[ -n $EXTRA_SKIP ]] && SKIP="$SKIP|$EXTRA_SKIP"

if [[ $REPORT_ONLY == no ]]; then
rm -rf "$OUT"
mkdir -p "$OUT"
GINKGO=("${BIN[ginkgo]}" --procs="$PROCS" --timeout="$TIMEOUT" --focus="$SELECT" --skip="$SKIP"
    --output-dir="$OUT" --junit-report=junit.xml --json-report=report.json --no-color
    --silence-skips --poll-progress-after=10m)
[[ -n $SEED ]] && GINKGO+=(--seed="$SEED")

# --- the runtime and the cluster -------------------------------------------------------------------
cluster() { "$REPO/hack/cluster.sh" "$@"; }
running=$(cat "$RUN_DIR/runtime" 2>/dev/null || true)
kubelet_up() { [[ -f $RUN_DIR/kubelet.pid && -e /proc/$(<"$RUN_DIR/kubelet.pid") ]]; }
brought_up=no
teardown() {
    local rc=$?
    if [[ $brought_up == yes && $KEEP == no ]]; then
        cluster down >&2 || rc=1
    fi
    exit "$rc"
}
trap teardown EXIT

start=$(date +%s)
if [[ $SUITE == cluster ]]; then
    if [[ -n $running && $running != "$RUNTIME" ]] && kubelet_up; then
        die "the cluster runs on $running: hack/cluster.sh down first"
    fi
    if ! kubelet_up; then
        brought_up=yes
        BERTH_CLUSTER_KUBELET_FEATURE_GATES=${FEATURE_GATES:-${BERTH_CLUSTER_KUBELET_FEATURE_GATES:-}} \
            cluster up --runtime "$RUNTIME" >&2
    elif [[ -n $FEATURE_GATES ]]; then
        die "--feature-gates: the cluster's kubelet runs already (with its own gates): hack/cluster.sh down first"
    fi
else
    kubelet_up && die "the node suite runs its own kubelet: hack/cluster.sh down first"
    brought_up=yes
    cluster up --runtime-only --runtime "$RUNTIME" >&2
fi
up_secs=$(($(date +%s) - start))
REGISTRY=127.0.0.1:$(<"$CLUSTER_DIR/registry.port")
if [[ $RUNTIME == containerd ]]; then
    SOCKET=unix://$RUN_DIR/containerd/containerd.sock
else
    SOCKET=unix://$RUN_DIR/berth/berth.sock
fi
"$HERE/images.sh" "$REGISTRY" >"$OUT/images.txt"
# Pulled now, as upstream's jobs pre-pull: the specs' IfNotPresent pods then run what was just
# built, not an older image of the same tag the node still has.
while read -r image; do
    "${BIN[crictl]}" --config "$CLUSTER_DIR/crictl.yaml" pull "$image" >/dev/null ||
        die "cannot pull $image through $RUNTIME from the local registry"
done <"$OUT/images.txt"
log "images for registry.k8s.io pushed to $REGISTRY and pulled: $(wc -l <"$OUT/images.txt")"

# --- the run ---------------------------------------------------------------------------------------
log "running $NAME: focus '$SELECT', $PROCS processes, report in $OUT"
run_start=$(date +%s)
rc=0
if [[ $SUITE == cluster ]]; then
    "${GINKGO[@]}" "${BIN[e2e.test]}" -- \
        --kubeconfig="$CLUSTER_DIR/admin.kubeconfig" --provider=skeleton \
        --kubectl-path="${BIN[kubectl]}" --container-runtime-endpoint="$SOCKET" \
        --report-dir="$OUT" --dns-domain=cluster.local --disable-log-dump \
        --allowed-not-ready-nodes=0 >"$OUT/suite.log" 2>&1 || rc=$?
else
    # Local mode: e2e_node.test writes its kubelet's kubeconfig and config into its working dir,
    # which the ginkgo CLI makes the test binary's dir, and starts the kubelet found beside itself
    # (v1.37 dropped --k8s-bin-dir): so both run from links in this run's own dir, which keeps
    # those files out of the tools' cache. It would start the kubelet with systemd-run when
    # that command is on PATH; this machine has the command but systemd is not running, so the
    # suite gets a PATH without it (the kubelet then runs as a child of the suite, as upstream
    # does on hosts without systemd). The kubelet's own cgroups stay where they are (empty
    # --kubelet-cgroups/--system-cgroups/--runtime-cgroups): it would otherwise move every process
    # of the root cgroup into /system.
    WORK=$OUT/work
    NOSYSTEMD=$OUT/path
    mkdir -p "$WORK" "$NOSYSTEMD"
    ln -sfn "${BIN[e2e_node.test]}" "$WORK/e2e_node.test"
    ln -sfn "${BIN[kubelet]}" "$WORK/kubelet"
    for f in /usr/bin/*; do
        [[ ${f##*/} == systemd-run ]] || ln -s "$f" "$NOSYSTEMD/${f##*/}"
    done
    cat >"$WORK/kubelet-config.yaml" <<EOF
# hack/conformance.sh: upstream's test/e2e_node/jenkins/default-kubelet-config.yaml, plus what
# this host needs (as hack/cluster/kubelet-config.yaml: hybrid cgroups, no CAP_SYS_RESOURCE).
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
podCIDR: "10.100.0.0/24"
volumeStatsAggPeriod: 10s
fileCheckFrequency: 10s
evictionPressureTransitionPeriod: 30s
evictionHard:
  memory.available: 250Mi
  nodefs.available: 5%
  nodefs.inodesFree: 5%
evictionMinimumReclaim:
  nodefs.available: 1%
  nodefs.inodesFree: 1%
serializeImagePulls: false
EOF
    gates=()
    [[ -n $FEATURE_GATES ]] && gates=(--feature-gates="$FEATURE_GATES")
    (cd "$WORK" && PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:$NOSYSTEMD \
        "${GINKGO[@]}" "$WORK/e2e_node.test" -- "${gates[@]}" \
        --node-name="$(hostname)" \
        --container-runtime-endpoint="$SOCKET" --image-service-endpoint="$SOCKET" \
        --prepull-images=false --report-dir="$OUT" --dns-domain=cluster.local \
        --kubelet-config-file="$WORK/kubelet-config.yaml" \
        --kubelet-flags="--cluster-domain=cluster.local --kubelet-cgroups= --system-cgroups= --runtime-cgroups=" \
        --v=4) >"$OUT/suite.log" 2>&1 || rc=$?
fi
run_secs=$(($(date +%s) - run_start))
log "$NAME: cluster up ${up_secs}s, suite ${run_secs}s"
fi

# --- report ----------------------------------------------------------------------------------------
[[ -f $OUT/report.json ]] || { tail -n 40 "$OUT/suite.log" >&2; die "no report.json: see $OUT/suite.log"; }
# A suite that stops before its specs (a flag it does not know, a failed setup) leaves a report
# without them: that is a failed run, not "0 failed".
ran=$(jq '[.[].SpecReports[]? | select(.LeafNodeType == "It")] | length' "$OUT/report.json")
if ((${rc:-0} != 0 && ran == 0)); then
    tail -n 40 "$OUT/suite.log" >&2
    die "$NAME: the suite exited with $rc before running any spec: see $OUT/suite.log"
fi
log "$NAME: junit $OUT/junit.xml, json $OUT/report.json"
ginkgo_report "$OUT" "$SELECT" "$SKIP_FILE" "$EXTRA_SKIP"
exit
}
