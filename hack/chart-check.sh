#!/usr/bin/env bash
# Checks the Helm chart charts/berth without a cluster: `helm lint --strict` and
# `helm template` (Helm built from its Go module by hack/k8s/build-helm.sh, cached in
# ~/.cache/berth), with the default values and with every switch on; the rendered objects
# are then checked against Kubernetes 1.37's API types (the check-manifests binary of
# berth-e2e, k8s-openapi) and the node installer script with `bash -n`.
#
#   hack/chart-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

helm=$(hack/k8s/build-helm.sh)
chart=charts/berth
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

bash -n "$chart/files/install-node.sh"
cargo build --locked -q -p berth-e2e --features manifests --bin check-manifests
check=${CARGO_TARGET_DIR:-target}/debug/check-manifests

# Default values, then everything set (the values a node switching to Berth would use).
all_set=(--set kubelet.switchRuntimeEndpoint=true --set prefix=/usr
    --set-string 'config=cgroup_driver = "systemd"'
    --set-string 'registries=[[registry]]
location = "10.0.0.5:5000"
insecure = true'
    --set-file cni.conflist=hack/cni/10-berth.conflist
    --set 'nodeSelector.berth\.example/runtime=berth')
for name in defaults all-set; do
    args=()
    [[ $name == all-set ]] && args=("${all_set[@]}")
    echo "== $name"
    "$helm" lint --strict "$chart" "${args[@]}"
    "$helm" template berth "$chart" --namespace kube-system "${args[@]}" >"$out/$name.yaml"
    python3 -c 'import json, sys, yaml
for d in yaml.safe_load_all(sys.stdin):
    if d: print(json.dumps(d))' <"$out/$name.yaml" | "$check"
done
# Values the schema must refuse.
if "$helm" template berth "$chart" --set kubelet.switchRuntimeEndpoint=yes >/dev/null 2>&1 \
    || "$helm" template berth "$chart" --set prefix=relative >/dev/null 2>&1 \
    || "$helm" template berth "$chart" --set typo=1 >/dev/null 2>&1; then
    echo "chart-check: values.schema.json accepted a bad value" >&2
    exit 1
fi

# The node installer against a fake node: the host's root is a temp dir, the installer
# image's /opt/berth is this repository (with stand-in binaries), and `nsenter` is a stub
# that logs the host commands (systemctl) and answers "inactive" until berth.service started.
node=$out/node
mkdir -p "$node/host/var/lib/kubelet" "$node/opt/hack" "$node/opt/bin" "$node/stub" "$node/values"
cp -r hack/install.sh hack/config.example.toml hack/registries.conf hack/cni hack/systemd "$node/opt/hack/"
for b in berthd berth-monitor berthctl; do printf '#!/bin/sh\n' >"$node/opt/bin/$b"; chmod +x "$node/opt/bin/$b"; done
cat >"$node/stub/nsenter" <<'STUB'
#!/bin/bash
while [[ $1 != -- ]]; do shift; done; shift
echo "$*" >>"$NODE/host-commands"
if [[ "$*" == "systemctl is-active --quiet berth.service" ]]; then grep -q "systemctl start berth.service" "$NODE/host-commands"; fi
STUB
chmod +x "$node/stub/nsenter"
printf 'kind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\ncgroupDriver: systemd\n' \
    >"$node/host/var/lib/kubelet/config.yaml"
echo 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=pause"' \
    >"$node/host/var/lib/kubelet/kubeadm-flags.env"
echo 'cgroup_driver = "systemd"' >"$node/values/config.toml"
: >"$node/values/registries.conf"
: >"$node/values/cni.conflist"
run_node() {
    NODE=$node PATH="$node/stub:$PATH" BERTH_HOST_ROOT=$node/host BERTH_INSTALLER_DIR=$node/opt \
        BERTH_CHART_VALUES=$node/values BERTH_PREFIX=/usr/local BERTH_SWITCH_KUBELET=true \
        BERTH_KUBELET_CONFIG=/var/lib/kubelet/config.yaml BERTH_KUBELET_FLAGS=/var/lib/kubelet/kubeadm-flags.env \
        bash "$chart/files/install-node.sh" >"$node/log" 2>&1 || { cat "$node/log" >&2; exit 1; }
}
run_node
sed 's/^/  node installer: /' "$node/log"
fail() { echo "chart-check: node installer: $*" >&2; cat "$node/log" "$node/host-commands" >&2; exit 1; }
[[ -x $node/host/usr/local/bin/berthd && -f $node/host/etc/systemd/system/berth.service ]] || fail "files not installed"
grep -qx 'cgroup_driver = "systemd"' "$node/host/etc/berth/config.toml" || fail "config value not applied"
grep -qx 'containerRuntimeEndpoint: unix:///run/berth/berth.sock' "$node/host/var/lib/kubelet/config.yaml" || fail "kubelet config not switched"
grep -q 'container-runtime-endpoint' "$node/host/var/lib/kubelet/kubeadm-flags.env" && fail "the flag is still in the flags file"
grep -q 'pod-infra-container-image=pause' "$node/host/var/lib/kubelet/kubeadm-flags.env" || fail "other flags lost"
for c in "systemctl daemon-reload" "systemctl enable berth.service" "systemctl start berth.service" "systemctl restart kubelet.service"; do
    grep -qx "$c" "$node/host-commands" || fail "did not run: $c"
done
# A second run with nothing changed restarts nothing.
: >"$node/host-commands"
echo "systemctl start berth.service" >"$node/host-commands"
run_node
grep -q restart "$node/host-commands" && fail "a run with nothing changed restarted something"
echo "chart-check: charts/berth lints, renders and matches the Kubernetes API; its node installer works on a fake node"
