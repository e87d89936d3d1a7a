#!/usr/bin/env bash
# The e2e tests against a real single-node Kubernetes cluster on Berth (issue 11): builds the
# tests, brings the cluster up (hack/cluster.sh up, which builds whatever is missing), runs
# e2e/tests/cluster, and always tears the cluster down again (unless --keep). Prints the wall
# time of each phase. As root.
#
#   hack/cluster-test.sh                    everything: the parallel tests, the serial_* ones, then
#                                           the cri_stats_* ones with the kubelet restarted with the
#                                           gate PodAndContainerStatsFromCRI (and again without)
#   hack/cluster-test.sh --keep             leave the cluster up afterwards (a second run is warm)
#   hack/cluster-test.sh --slow             also the slow_* tests (#[ignore]d: image GC, > 5 min)
#   hack/cluster-test.sh -- FILTER...       only the tests whose names match (cargo test filters;
#                                           with --slow, matching slow_* tests too)
#
# Settings (environment): BERTH_CLUSTER_TEST_THREADS (parallel tests, default 6),
# BERTH_CLUSTER_TEST_NICE (niceness of the cargo builds and the test binary, default 10),
# BERTH_BIN_DIR (berthd and berth-monitor to run; hack/test.sh passes its debug build).
# At the end it prints what the kubelet logged as failed calls to Berth during the tests
# (hack/cluster/kubelet-errors.sh).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
THREADS=${BERTH_CLUSTER_TEST_THREADS:-6}
NICE=${BERTH_CLUSTER_TEST_NICE:-10}
KEEP=no
SLOW=no
FILTERS=()
while (($#)); do
    case $1 in
        --keep) KEEP=yes ;;
        --slow) SLOW=yes ;;
        --)
            shift
            FILTERS=("$@")
            break
            ;;
        *)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
            exit 2
            ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "cluster-test: run as root (hack/cluster.sh needs it)" >&2; exit 1; }

export RUST_BACKTRACE=${RUST_BACKTRACE:-0}
CARGO_TEST=(nice -n "$NICE" cargo test --locked -p berth-e2e --features cluster --test cluster)
PHASES=()
phase_start=0
begin() {
    phase_name=$1
    phase_start=$(date +%s.%N)
    echo "cluster-test: --- $phase_name" >&2
}
end() {
    local took
    took=$(awk -v a="$phase_start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    PHASES+=("$(printf '%-28s %7.1f s  %s' "$phase_name" "$took" "$1")")
}
report() {
    echo "cluster-test: wall times" >&2
    printf '  %s\n' "${PHASES[@]}" >&2
}

KUBELET_LOG=${BERTH_CLUSTER_DIR:-/var/lib/berth-cluster}/logs/kubelet.log
kubelet_from=
teardown() {
    local rc=$?
    # What the kubelet asked of Berth that failed during the tests, before down adds its own.
    if [[ -n $kubelet_from ]]; then
        echo "cluster-test: the kubelet's log during the tests:" >&2
        hack/cluster/kubelet-errors.sh "$KUBELET_LOG" "$kubelet_from" >&2 || true
    fi
    if [[ $KEEP == yes ]]; then
        echo "cluster-test: --keep: the cluster stays up (hack/cluster.sh down stops it)" >&2
    else
        begin "cluster down"
        if hack/cluster.sh down; then end ok; else end FAILED; rc=1; fi
    fi
    report
    exit "$rc"
}

begin "build tests"
"${CARGO_TEST[@]}" --no-run
end ok

trap teardown EXIT
begin "cluster up"
hack/cluster.sh up
end ok
eval "$(hack/cluster.sh env)"
kubelet_from=$(($(wc -l <"$KUBELET_LOG") + 1))
export BERTH_CLUSTER_RUN_DIR=${BERTH_CLUSTER_RUN_DIR:-/run/berth-cluster}
# The cluster's state (etcd) outlives `down`: test namespaces of a run that was killed before
# its tests' cleanup are still there. They go now, so that the check below is about this run.
left=$(kubectl get namespaces -l berth-e2e=cluster -o name)
if [[ -n $left ]]; then
    echo "cluster-test: deleting test namespaces an earlier run left:" $left >&2
    kubectl delete namespace -l berth-e2e=cluster --wait=false >/dev/null
fi

failed=0
run_tests() {
    local name=$1
    shift
    begin "$name"
    if "${CARGO_TEST[@]}" "$@"; then end ok; else end FAILED; failed=1; fi
}
if ((${#FILTERS[@]})); then
    # --slow with filters: the matching slow_* (#[ignore]d) tests too.
    extra=()
    [[ $SLOW == yes ]] && extra=(--include-ignored)
    run_tests "tests (${FILTERS[*]})" "${FILTERS[@]}" -- --test-threads="$THREADS" --show-output "${extra[@]}"
else
    # serial_* tests disturb the whole node (they kill berthd): alone, after the others.
    run_tests "tests (parallel: $THREADS)" -- --skip serial_ --test-threads="$THREADS" --show-output
    run_tests "tests (serial)" serial_ -- --test-threads=1 --show-output
    # cri_stats_* (#[ignore]d): the kubelet's summary API and /metrics/cadvisor taken from
    # Berth alone, with the alpha gate PodAndContainerStatsFromCRI; then the kubelet as it was.
    gates=${BERTH_CLUSTER_KUBELET_FEATURE_GATES:-}
    begin "kubelet + PodAndContainerStatsFromCRI"
    if hack/cluster.sh kubelet-restart --feature-gates "${gates:+$gates,}PodAndContainerStatsFromCRI=true"; then
        end ok
        run_tests "tests (stats from the CRI)" cri_stats_ -- --ignored --test-threads=2 --show-output
    else
        end FAILED
        failed=1
    fi
    begin "kubelet as before"
    if hack/cluster.sh kubelet-restart --feature-gates "$gates"; then end ok; else end FAILED; failed=1; fi
    if [[ $SLOW == yes ]]; then
        run_tests "tests (slow)" slow_ -- --ignored --test-threads=1 --show-output
    fi
fi

# Every test deletes its namespace; none may be left behind.
begin "namespaces deleted"
if kubectl wait --for=delete namespace -l berth-e2e=cluster --timeout=120s >/dev/null 2>&1 ||
    [[ -z $(kubectl get namespaces -l berth-e2e=cluster -o name) ]]; then
    end ok
else
    kubectl get namespaces -l berth-e2e=cluster >&2
    end "FAILED (left behind)"
    failed=1
fi
# Kubernetes' own conformance specs on the same cluster: a subset of a few minutes that covers
# every area (hack/conformance.sh --fast; the full suites are hack/conformance.sh's, see
# hack/conformance/README.md). BERTH_TEST_CONFORMANCE=0 leaves it out, and says so.
if ((${#FILTERS[@]})); then
    :
elif [[ ${BERTH_TEST_CONFORMANCE:-1} == 0 ]]; then
    echo "cluster-test: BERTH_TEST_CONFORMANCE=0: the conformance subset did NOT run" >&2
else
    begin "conformance (fast subset)"
    if nice -n "$NICE" hack/conformance.sh --fast; then end ok; else end FAILED; failed=1; fi
fi
[[ $failed == 0 ]]
