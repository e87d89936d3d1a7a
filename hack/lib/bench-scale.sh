# shellcheck shell=bash
# The scaling table of hack/bench-pods.sh --scale: one block per figure, one row per pod
# count, one column per runtime, and Berth's figure over containerd's when both ran.

# scale_table WORK SIZES RUNTIME...: reads WORK/RUNTIME.json (bench-pods --scale results).
scale_table() {
    local work=$1 sizes=$2
    shift 2
    local runtimes=("$@") n r
    local -a counts
    IFS=, read -r -a counts <<<"$sizes"
    local ratio=0
    [[ " ${runtimes[*]} " == *" berthd-cni "* && " ${runtimes[*]} " == *" containerd-cni "* ]] && ratio=1

    # value RUNTIME SIZE JQ: the figures (an array) of one size as "a / b", 2 decimals.
    value() {
        jq -r --argjson n "$2" "[.scale.sizes[] | select(.size == \$n) | $3] | first // empty
            | map(if . == null then \"-\" else (. * 100 | round / 100 | tostring) end) | join(\" / \")" \
            "$work/$1.json" 2>/dev/null
    }
    # block TITLE JQ: one figure at every size.
    block() {
        local title=$1 expr=$2 a b
        printf '%-36s' "$title"
        for r in "${runtimes[@]}"; do printf '%20s' "${NAME[$r]}"; done
        ((ratio)) && printf '%20s' "berthd/containerd"
        echo
        for n in "${counts[@]}"; do
            printf '%-36s' "  $n pods"
            for r in "${runtimes[@]}"; do printf '%20s' "$(value "$r" "$n" "$expr")"; done
            if ((ratio)); then
                a=$(value berthd-cni "$n" "$expr")
                b=$(value containerd-cni "$n" "$expr")
                printf '%20s' "$(awk -v a="$a" -v b="$b" 'BEGIN {
                    na = split(a, x, " / "); split(b, y, " / "); out = ""
                    for (i = 1; i <= na; i++) {
                        r = (y[i] + 0 > 0 && x[i] != "-") ? sprintf("%.2f", x[i] / y[i]) : "-"
                        out = out (i > 1 ? " / " : "") r
                    }
                    print out }')"
            fi
            echo
        done
    }

    echo
    echo "=== scaling: N pods running (one container each, CNI bridge + portmap); ms are median / p99 ==="
    block "RunPodSandbox, N+1st pod (ms)" '.probes.RunPodSandbox | [.median_ms, .p99_ms]'
    block "Create+StartContainer (ms)" '.probes["Create+StartContainer"] | [.median_ms, .p99_ms]'
    block "teardown: Stop+Remove ctr+pod (ms)" '.probes.Teardown | [.median_ms, .p99_ms]'
    block "ListPodSandbox (ms)" '.lists.ListPodSandbox | [.median_ms, .p99_ms]'
    block "ListContainers (ms)" '.lists.ListContainers | [.median_ms, .p99_ms]'
    block "ListContainerStats (ms)" '.lists.ListContainerStats | [.median_ms, .p99_ms]'
    block "daemon RSS / PSS (MiB)" '.memory.daemon | [.rss_kb / 1024, .pss_kb / 1024]'
    block "PSS per pod, daemon's share too (MiB)" '[(.memory.per_pod_total.pss_kb + .memory.daemon.pss_kb) / .size / 1024]'
    block "PSS per pod, per-pod procs (MiB)" '[.memory.per_pod_pss_kb / 1024]'
    block "daemon CPU to start a pod (ms)" '[.fill_daemon_cpu_ms_per_pod]'
    block "idle CPU: daemon / pod procs (ms/s)" '.idle | [.daemon_cpu_ms_per_s, .pod_procs_cpu_ms_per_s]'
    block "daemon CPU since start (s)" '[.daemon_cpu_s]'
    block "wall time to add the pods (s)" '[.fill_s]'

    local first=${counts[0]} last=${counts[-1]}
    echo
    echo "flatness (p99 at $last pods / p99 at $first pods; goal for berthd <= 1.5):"
    for r in "${runtimes[@]}"; do
        printf '  %-16s' "${NAME[$r]}"
        for step in RunPodSandbox Create+StartContainer Teardown; do
            printf '%s %s   ' "$step" "$(jq -r --argjson a "$first" --argjson b "$last" --arg s "$step" \
                '[.scale.sizes[] | select(.size == $a or .size == $b) | .probes[$s].p99_ms] |
                 if length == 2 then (.[1] / .[0] * 100 | round / 100 | tostring) else "-" end' "$work/$r.json")"
        done
        echo
    done
    echo "(probes: $(jq -r '.scale.probes' "$work/${runtimes[0]}.json") pods started and torn down one at a time at each size, p99 by nearest rank;"
    echo " lists: $(jq -r '.scale.list_calls' "$work/${runtimes[0]}.json") calls each; idle: $(jq -r '.scale.idle_s' "$work/${runtimes[0]}.json") s; per-pod processes: berthd berth-monitor, containerd shim + pause)"
    for r in "${runtimes[@]}"; do
        jq -r --arg r "${NAME[$r]}" '"  \($r): all \(.scale.pods_torn_down) pods torn down in \(.scale.teardown_all_s * 100 | round / 100) s"' "$work/$r.json"
    done
}
