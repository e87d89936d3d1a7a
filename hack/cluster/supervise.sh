#!/usr/bin/env bash
# A minimal process supervisor, as systemd's Restart=always would be: runs CMD, appends its
# output to LOG, and starts it again one second after it exits, until the supervisor itself
# gets SIGTERM or SIGINT (which it passes on to CMD, then waits for CMD to exit).
#
#   supervise.sh NAME RUNDIR LOG CMD [ARG...]
#
# Files in RUNDIR (hack/cluster.sh reads them):
#   NAME.supervisor.pid   this supervisor's pid (removed when it ends)
#   NAME.pid              the pid of the running CMD (removed while CMD is not running)
#   NAME.exits            one line per unexpected exit of CMD: "TIME rc=N"
# Start it detached (setsid), with stdin/stdout/stderr redirected.
set -uo pipefail

if [[ $# -lt 4 ]]; then
    echo "usage: $0 NAME RUNDIR LOG CMD [ARG...]" >&2
    exit 2
fi
NAME=$1 RUN=$2 LOG=$3
shift 3

echo $$ >"$RUN/$NAME.supervisor.pid"
stopping=0
child=
on_stop() {
    stopping=1
    if [[ -n $child ]]; then
        kill -TERM "$child" 2>/dev/null
    fi
}
trap on_stop TERM INT

while :; do
    "$@" >>"$LOG" 2>&1 </dev/null &
    child=$!
    echo "$child" >"$RUN/$NAME.pid"
    # A trapped signal interrupts `wait` while the child still runs: wait again until it is gone.
    while :; do
        wait "$child"
        rc=$?
        kill -0 "$child" 2>/dev/null || break
    done
    child=
    rm -f "$RUN/$NAME.pid"
    [[ $stopping == 1 ]] && break
    echo "$(date -Is) rc=$rc" >>"$RUN/$NAME.exits"
    echo "supervise.sh: $NAME exited with status $rc at $(date -Is); restarting it in 1 s" >>"$LOG"
    sleep 1 &
    wait $! 2>/dev/null
    [[ $stopping == 1 ]] && break
done
rm -f "$RUN/$NAME.supervisor.pid"
