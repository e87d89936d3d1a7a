#!/bin/bash
# Runs in the berth DaemonSet's init container, privileged, with the host's root at /host
# and the host's PID namespace: installs Berth on this node with the image's copy of
# hack/install.sh (binaries, default config, registries.conf, CNI network where the node has
# none, berth.service), applies the chart's overrides, then has the host's systemd
# (re)start berth.service, and switches the kubelet to Berth only when the values ask.
# Idempotent: a second run with nothing changed restarts nothing.
set -euo pipefail

# Overridable for hack/chart-check.sh, which runs this script against a fake node.
HOST=${BERTH_HOST_ROOT:-/host}
SRC=${BERTH_INSTALLER_DIR:-/opt/berth}
VALUES=${BERTH_CHART_VALUES:-/etc/berth-chart}
PREFIX=${BERTH_PREFIX:?}
ENDPOINT=unix:///run/berth/berth.sock

# Commands run on the host, in PID 1's namespaces: its systemd, its files.
on_host() { nsenter --target 1 --mount --uts --ipc --net --pid -- "$@"; }

# Of files that may not exist yet (a first install).
digest() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1; }

files=("$HOST$PREFIX/bin/berthd" "$HOST$PREFIX/bin/berth-monitor" "$HOST/etc/berth/config.toml"
    "$HOST/etc/berth/registries.conf" "$HOST/etc/systemd/system/berth.service")
before=$(digest "${files[@]}")

"$SRC/hack/install.sh" --destdir "$HOST" --prefix "$PREFIX" --bin-dir "$SRC/bin"
# The chart's own settings win over what install.sh keeps.
for f in config.toml registries.conf; do
    if [[ -s $VALUES/$f ]]; then install -m 0644 "$VALUES/$f" "$HOST/etc/berth/$f"; fi
done
if [[ -s $VALUES/cni.conflist ]]; then
    install -D -m 0644 "$VALUES/cni.conflist" "$HOST/etc/cni/net.d/10-berth.conflist"
fi
after=$(digest "${files[@]}")

on_host systemctl daemon-reload
on_host systemctl enable berth.service
if ! on_host systemctl is-active --quiet berth.service; then
    echo "starting berth.service"
    on_host systemctl start berth.service
elif [[ $before != "$after" ]]; then
    # KillMode=process: berthd alone restarts; every pod keeps running.
    echo "berth.service changed: restarting it"
    on_host systemctl restart berth.service
else
    echo "berth.service is up to date and running"
fi

if [[ ${BERTH_SWITCH_KUBELET:-false} != true ]]; then
    echo "the kubelet's runtime endpoint is left as it is (kubelet.switchRuntimeEndpoint=false)"
    exit 0
fi
# The kubelet's runtime: KubeletConfiguration's containerRuntimeEndpoint (and
# imageServiceEndpoint when set); a --container-runtime-endpoint flag in the flags file
# would win over it, so it goes.
config=$HOST${BERTH_KUBELET_CONFIG:?}
flags=$HOST${BERTH_KUBELET_FLAGS:?}
[[ -f $config ]] || { echo "kubelet config $BERTH_KUBELET_CONFIG is missing: cannot switch the kubelet" >&2; exit 1; }
kubelet_before=$(digest "$config" "$flags")
if grep -q '^containerRuntimeEndpoint:' "$config"; then
    sed -i "s|^containerRuntimeEndpoint:.*|containerRuntimeEndpoint: $ENDPOINT|" "$config"
else
    echo "containerRuntimeEndpoint: $ENDPOINT" >>"$config"
fi
sed -i "s|^imageServiceEndpoint:.*|imageServiceEndpoint: $ENDPOINT|" "$config"
if [[ -f $flags ]]; then
    sed -i -E 's/ ?--(container-runtime-endpoint|image-service-endpoint)(=| )[^ "]*//g' "$flags"
fi
if [[ $kubelet_before != "$(digest "$config" "$flags")" ]]; then
    echo "the kubelet now uses $ENDPOINT: restarting it"
    on_host systemctl restart kubelet.service
else
    echo "the kubelet already uses $ENDPOINT"
fi
