#!/usr/bin/env bash
# Soak run: N minutes of parallel pod churn through CRI against a real berthd with a real CNI
# network, plus a kill -9 of berthd every M seconds followed by a restart (target/*/soak,
# e2e/src/bin/soak/). K workers each loop: RunPodSandbox (bridge + host-local), CreateContainer,
# StartContainer, ExecSync, StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox,
# retrying through the outages. After each restart the pods no RPC was changing at the kill must
# still be there (READY, same IP, container state kept, ExecSync works). Prints pods and
# containers started, RPC errors outside outages, restarts survived, pods lost, leaks (mounts,
# veths, IP files, iptables rules, netns pins, pod dirs, bundles, upper dirs, cgroup dirs,
# monitor and pod-init processes) and berthd's RSS (first daemon idle after warm-up, last one
# idle at the end, max seen). Exits 1 unless errors, losses and leaks are all zero.
#
#   hack/soak.sh [--minutes N] [--workers K] [--kill-every M] [--dwell-ms MS]
#                [--registry HOST:PORT] [--keep-log FILE] [--debug] [--no-build]
#
#   --minutes N       length of the churn (default 5; fractions allowed)
#   --workers K       parallel workers (default 8)
#   --kill-every M    seconds between two kill -9 of berthd (default 30; 0: never, for an
#                     RSS-growth run of one daemon)
#   --dwell-ms MS     how long each pod keeps its container running (default 1000)
#   --registry H:P    use a registry already serving berth-test/* over plain HTTP (e.g.
#                     hack/registry.sh PORT); default: the soak starts its own docker-registry
#                     on a free loopback port and pushes the test images into it
#   --keep-log FILE   copy berthd's log (debug level, all restarts) to FILE at the end
#   --debug           use the debug build (default: release, as the benchmarks)
#   --no-build        use what is built
#
# Needs root, docker-registry, skopeo, the CNI plugins (hack/install-deps.sh). The daemon runs on
# fresh temp dirs with its own bridge and 10.87.x.0/24 (no masquerading, host-local's store in the
# temp dir); everything it starts (registry, daemon, monitors, containers, mounts, the bridge, the
# temp dir) is removed when the soak ends.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# ROOT, TARGET, PROFILE, DO_BUILD, ARGS, usage and run_e2e_bin.
# shellcheck source=lib/e2e-bin.sh
. "$HERE/lib/e2e-bin.sh"
parse_args "--minutes --workers --kill-every --dwell-ms --registry --keep-log" "$@"
need_root_and "namespaces, mounts, cgroups, CNI" docker-registry skopeo ip iptables-save

run_e2e_bin soak
