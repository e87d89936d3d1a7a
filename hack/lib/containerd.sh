# A private containerd 1.6 (Debian's, + runc) for the hack/ scripts that set Berth beside it:
# its own config, root, state and socket (never a system or Docker containerd's), the CRI plugin
# with the cgroupfs driver, a sandbox image from a local plain-HTTP registry. Sourced by
# hack/bench-pods.sh, hack/bench-stream.sh and hack/cluster.sh; defines functions only.

# containerd_write_config FILE ROOT STATE SOCKET SANDBOX_IMAGE CNI_BIN_DIR CNI_CONF_DIR HOSTS_DIR [CNI_LINE...]
# Writes containerd's config.toml to FILE: ROOT/STATE/SOCKET (ttrpc beside it, no metrics), the
# CRI streaming server on loopback with an ephemeral port (as Berth's default), runc's state
# under STATE/runc, pod netns pins under STATE, registry hosts.toml files in HOSTS_DIR, runc also
# as the runtime handler "test-handler" (what Kubernetes' suites name in their RuntimeClass
# specs; upstream's CI configures it the same way, and berthd's cluster config lists it). Each
# CNI_LINE is added to the CRI plugin's cni section (e.g. "max_conf_num = 1"). The opt plugin's
# dir is FILE's dir/opt.
containerd_write_config() {
    local file=$1 root=$2 state=$3 socket=$4 sandbox=$5 cni_bin=$6 cni_conf=$7 hosts=$8 line
    shift 8
    {
        cat <<EOF
# Written by hack/$(basename "$0"): a containerd of its own, never a system or Docker one's.
version = 2
root = "$root"
state = "$state"
[grpc]
  address = "$socket"
[ttrpc]
  address = "$socket.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$(dirname "$file")/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This host drops CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj below
  # containerd's own (EPERM, "can't get final child's PID from pipe") unless containerd clamps it.
  restrict_oom_score_adj = true
  # Pod netns pins under the state dir (not /var/run/netns): removed with it.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$state/runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.test-handler]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.test-handler.options]
        SystemdCgroup = false
        Root = "$state/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$cni_conf"
EOF
        for line in "$@"; do echo "    $line"; done
        cat <<EOF
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$hosts"
EOF
    } >"$file"
}

# containerd_registry_hosts HOSTS_DIR REGISTRY: HOSTS_DIR/REGISTRY/hosts.toml, so that a
# containerd whose registry config_path is HOSTS_DIR pulls REGISTRY (host:port) over plain HTTP.
containerd_registry_hosts() {
    local hosts=$1 reg=$2
    mkdir -p "$hosts/$reg"
    cat >"$hosts/$reg/hosts.toml" <<EOF
server = "http://$reg"
[host."http://$reg"]
  capabilities = ["pull", "resolve"]
EOF
}

# containerd_fake_cni DIR LOOPBACK_PLUGIN: DIR/cni-bin (LOOPBACK_PLUGIN linked as loopback, and
# fake-eth0) and DIR/cni/10-bench.conflist naming fake-eth0. containerd 1.6's CRI fails
# RunPodSandbox unless the CNI result has an address on eth0 ("failed to find network info for
# sandbox"), so fake-eth0 (dash, ~1 ms) reports one on an eth0 that does not exist; nothing
# else is set up: the pod has lo only (brought up by containerd's own loopback network), like
# a Berth pod without a CNI network.
containerd_fake_cni() {
    local dir=$1
    mkdir -p "$dir/cni" "$dir/cni-bin"
    ln -sf "$2" "$dir/cni-bin/loopback"
    cat >"$dir/cni-bin/fake-eth0" <<'EOF'
#!/bin/sh
case "$CNI_COMMAND" in
ADD) cat >/dev/null
    printf '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"address":"192.0.2.1/32","interface":0}]}' "$CNI_NETNS" ;;
VERSION) printf '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
*) cat >/dev/null ;;
esac
EOF
    chmod +x "$dir/cni-bin/fake-eth0"
    echo '{"cniVersion": "1.0.0", "name": "bench", "plugins": [{"type": "fake-eth0"}]}' >"$dir/cni/10-bench.conflist"
}

# containerd_push_pause REGISTRY KIT_WORK LOG: a static pause image into the plain-HTTP
# REGISTRY as REGISTRY/pause:3.9, containerd's sandbox image. Taken from the first OCI layout
# that has a "pause" ref: the critest kit's ($CRITEST_KIT_WORK, default /var/tmp/critest-kit)
# or the cluster's image cache (hack/cluster/images.sh); else the critest kit is built into
# KIT_WORK (~30 s, every critest image; its output in LOG) and pushes it.
containerd_push_pause() {
    local reg=$1 kit_work=$2 log=$3 layout
    for layout in "${CRITEST_KIT_WORK:-/var/tmp/critest-kit}/oci" "${BERTH_CACHE:-$HOME/.cache/berth}/cluster-images/oci"; do
        if [[ -f $layout/index.json ]] &&
            jq -e '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "pause")' "$layout/index.json" >/dev/null; then
            skopeo copy --quiet --insecure-policy --dest-tls-verify=false --preserve-digests \
                "oci:$layout:pause" "docker://$reg/pause:3.9"
            return
        fi
    done
    KIT_WORK=$kit_work /work/shared/critest-kit/build-and-push.sh "$reg" >"$log" 2>&1
}
