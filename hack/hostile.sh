#!/usr/bin/env bash
# Hostile tenants (issue 13): N well-behaved pods beside five hostile ones, against a real
# berthd (target/*/hostile, e2e/src/bin/hostile/). The hostile pods: a fork bomb in a pod
# cgroup with pids.max 256 (as a kubelet's podPidsLimit), a log flood (yes at full speed, its
# log rotated as the kubelet does), a disk filler (dd of 2 GiB, at most a quarter of the free
# space, into its writable layer), a SIGTERM ignorer (StopContainer with a 2 s grace and a new
# container every ~30 s) and an exec storm target (200 ExecSync at once every ~30 s). Each
# well-behaved pod gets one ExecSync `true` (timeout 10 s) per second; berthd's RSS is sampled
# every 500 ms and an exit of berthd is counted (and it is restarted). At the end every pod is
# removed and leftovers are looked for (mounts, pod dirs, bundles, upper dirs, container
# cgroups, monitor and pod-init processes, the test cgroup). Prints probe count, failures and
# p50/p99/max latency, berthd's RSS before/during/after, restarts, what each hostile pod did,
# and leaks. Exits 1 if a probe failed, berthd restarted or anything leaked.
#
#   hack/hostile.sh [--minutes F] [--good N] [--debug] [--no-build]
#
#   --minutes F   how long the hostile pods run (default 10; fractions allowed)
#   --good N      well-behaved pods (default 20)
#   --debug       use the debug build (default: release, as the benchmarks)
#   --no-build    use what is built
#
# Needs root, docker-registry, skopeo (hack/install-deps.sh). No CNI network: the pods are
# loopback-only. The daemon runs on fresh temp dirs; everything it starts (registry, daemon,
# monitors, containers, mounts, the test cgroup, the temp dir) is removed when the run ends.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# ROOT, TARGET, PROFILE, DO_BUILD, ARGS, usage and run_e2e_bin.
# shellcheck source=lib/e2e-bin.sh
. "$HERE/lib/e2e-bin.sh"
parse_args "--minutes --good" "$@"
need_root_and "namespaces, mounts, cgroups" docker-registry skopeo

run_e2e_bin hostile
