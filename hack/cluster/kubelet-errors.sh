#!/usr/bin/env bash
# What the kubelet asked of its runtime that failed or was slow, from its log: every error or
# warning line (klog E/W) of the CRI client (remote_runtime.go, remote_image.go) or naming the
# runtime's socket or an "rpc error", grouped by call and gRPC code, with counts; then the
# other kubelet errors, grouped by message.
#
#   kubelet-errors.sh LOG [FROM_LINE]     lines from FROM_LINE on (default 1)
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 LOG [FROM_LINE]" >&2; exit 2; }
LOG=$1 FROM=${2:-1}
[[ -f $LOG ]] || { echo "$0: no $LOG" >&2; exit 1; }

tail -n "+$FROM" "$LOG" | awk '
    # klog: Lmmdd hh:mm:ss.uuuuuu pid file:line] "message" key=value...
    /^[EW][0-9][0-9][0-9][0-9] / {
        sev = substr($0, 1, 1)
        file = $4; sub(/:[0-9]+\]$/, "", file)
        msg = $0; sub(/^[^\]]*\] /, "", msg)
        quoted = msg ~ /^"/
        if (quoted) { m = msg; sub(/^"/, "", m); sub(/".*/, "", m) } else { m = substr(msg, 1, 100) }
        code = ""
        if (match(msg, /code = [A-Za-z]+/)) code = substr(msg, RSTART + 7, RLENGTH - 7)
        runtime = file ~ /^remote_(runtime|image)\.go$/ || msg ~ /rpc error|\.sock/
        key = sev " " file ": " m (code != "" ? " [" code "]" : "")
        if (runtime) rt[key]++; else other[key]++
    }
    END {
        print "kubelet -> runtime (CRI calls that failed; E = error, W = warning):"
        n = 0
        for (k in rt) { printf "  %5d  %s\n", rt[k], k | "sort -k1,1nr"; n++ }
        close("sort -k1,1nr")
        if (n == 0) print "  none"
        print "other kubelet errors and warnings:"
        n = 0
        for (k in other) { printf "  %5d  %s\n", other[k], k | "sort -k1,1nr"; n++ }
        close("sort -k1,1nr")
        if (n == 0) print "  none"
    }'
