#!/usr/bin/env bash
# Installs what is missing, builds berthd and berth-monitor (release), installs
# them to /usr/local/bin and starts berthd with its defaults, detached, logging to
# /var/log/berthd.log. Returns once the CRI socket answers.
#
#   hack/start.sh          # then: crictl --runtime-endpoint unix:///run/berth/berth.sock version
set -euo pipefail
cd "$(dirname "$0")/.."

hack/install-deps.sh
cargo build --release --locked -p berthd -p berth-shim
# berthd starts each pod's monitor from its own directory.
install -s -m 0755 target/release/berthd target/release/berth-monitor /usr/local/bin/

# The default pod network (hack/cni/README.md), unless the node has one already.
CNI_DIR=/etc/cni/net.d
if ! compgen -G "$CNI_DIR/*.conflist" >/dev/null && ! compgen -G "$CNI_DIR/*.conf" >/dev/null \
    && ! compgen -G "$CNI_DIR/*.json" >/dev/null; then
    install -D -m 0644 hack/cni/10-berth.conflist "$CNI_DIR/10-berth.conflist"
    echo "installed the default pod network config $CNI_DIR/10-berth.conflist"
fi

SOCKET=/run/berth/berth.sock
if pid=$(pgrep -x berthd); then
    echo "berthd is already running (pid $pid); stop it with: kill $pid" >&2
    exit 1
fi
setsid /usr/local/bin/berthd >>/var/log/berthd.log 2>&1 </dev/null &
for _ in $(seq 100); do
    if [[ -S $SOCKET ]]; then
        echo "berthd is serving on unix://$SOCKET (log: /var/log/berthd.log)"
        exit 0
    fi
    if ! kill -0 $! 2>/dev/null; then
        echo "berthd exited; last log lines:" >&2
        tail -n 20 /var/log/berthd.log >&2
        exit 1
    fi
    sleep 0.1
done
echo "berthd did not create $SOCKET within 10 s; see /var/log/berthd.log" >&2
exit 1
