#!/usr/bin/env bash
# A single-node Kubernetes cluster on Berth, on this machine, loopback and Berth's pod bridge
# only: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy (iptables)
# and a kubelet whose container runtime is berthd; CoreDNS as a Deployment; images from a
# local docker-registry. See hack/cluster/README.md.
#
#   hack/cluster.sh up [--runtime berth|containerd]
#                                  start what is not running (idempotent), wait until the node
#                                  and CoreDNS are Ready; --runtime containerd: the same node
#                                  with Debian's containerd 1.6 as the kubelet's runtime instead
#                                  of berthd (for side-by-side runs; default berth)
#   hack/cluster.sh up --runtime-only [--runtime berth|containerd]
#                                  only the registry (with the images) and the runtime, no
#                                  control plane and no kubelet: for a kubelet of one's own (the
#                                  node e2e suite of hack/conformance.sh); `down` stops them
#   hack/cluster.sh down [--purge] delete every pod (API, then CRI), stop everything up started,
#                                  undo its host changes; --purge also deletes the cluster dir
#   hack/cluster.sh kubelet-restart [--feature-gates GATES]
#                                  restart the running cluster's kubelet with these feature gates
#                                  (none: the release's; BERTH_CLUSTER_KUBELET_FEATURE_GATES is
#                                  `up`'s); the pods keep running meanwhile
#   hack/cluster.sh status         components, restarts, node and kube-system pods
#   hack/cluster.sh env            `eval "$(hack/cluster.sh env)"`: KUBECONFIG, PATH (kubectl,
#                                  crictl), CRI_CONFIG_FILE (crictl talks to the cluster's berthd,
#                                  or containerd)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=hack/lib/containerd.sh
source "$HERE/lib/containerd.sh"
CFG=$HERE/cluster

# --- settings (environment) -----------------------------------------------------------------
CACHE=${BERTH_CACHE:-$HOME/.cache/berth}
CLUSTER_DIR=${BERTH_CLUSTER_DIR:-/var/lib/berth-cluster}
RUN_DIR=${BERTH_CLUSTER_RUN_DIR:-/run/berth-cluster}
NODE_NAME=${BERTH_NODE_NAME:-berth-node}
# Kubelet feature gates, e.g. EventedPLEG=true,CRIListStreaming=true (empty: the release's).
KUBELET_FEATURE_GATES=${BERTH_CLUSTER_KUBELET_FEATURE_GATES:-}
# Kubelet log verbosity (6 logs the pod statuses the Evented PLEG builds from Berth's events).
KUBELET_VERBOSITY=${BERTH_CLUSTER_KUBELET_VERBOSITY:-2}
CNI_CONFLIST=${BERTH_CLUSTER_CNI_CONFLIST:-$REPO/hack/cni/10-berth.conflist}
SERVICE_CIDR=${BERTH_CLUSTER_SERVICE_CIDR:-10.96.0.0/16}
API_SERVICE_IP=${BERTH_CLUSTER_API_SERVICE_IP:-10.96.0.1}
DNS_IP=${BERTH_CLUSTER_DNS_IP:-10.96.0.10}
CLUSTER_DOMAIN=cluster.local
ETCD_PORT=${BERTH_CLUSTER_ETCD_PORT:-2379}
ETCD_PEER_PORT=${BERTH_CLUSTER_ETCD_PEER_PORT:-2380}
API_PORT=${BERTH_CLUSTER_API_PORT:-6443}
CM_PORT=${BERTH_CLUSTER_CONTROLLER_MANAGER_PORT:-10257}
SCHED_PORT=${BERTH_CLUSTER_SCHEDULER_PORT:-10259}
KUBELET_PORT=${BERTH_CLUSTER_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${BERTH_CLUSTER_KUBELET_HEALTHZ_PORT:-10248}
PROXY_HEALTHZ_PORT=${BERTH_CLUSTER_PROXY_HEALTHZ_PORT:-10256}
PROXY_METRICS_PORT=${BERTH_CLUSTER_PROXY_METRICS_PORT:-10249}
LOG_MAX_SIZE=${BERTH_CLUSTER_LOG_MAX_SIZE:-1Mi}
LOG_MAX_FILES=${BERTH_CLUSTER_LOG_MAX_FILES:-3}
IMAGE_GC_HIGH=${BERTH_CLUSTER_IMAGE_GC_HIGH:-95}
IMAGE_GC_LOW=${BERTH_CLUSTER_IMAGE_GC_LOW:-90}
EVICTION_DISK_FREE=${BERTH_CLUSTER_EVICTION_DISK_FREE:-1%}
MAX_PODS=${BERTH_CLUSTER_MAX_PODS:-110}
READY_TIMEOUT=${BERTH_CLUSTER_TIMEOUT:-120}
DOWN_GRACE=${BERTH_CLUSTER_DOWN_GRACE:-10}
K8S_TOOLS=${BERTH_K8S_TOOLS:-$REPO/hack/k8s/build-tools.sh}

PKI=$CLUSTER_DIR/pki
LOGS=$CLUSTER_DIR/logs
BERTH_STATE=$RUN_DIR/berth
BERTH_SOCKET=$BERTH_STATE/berth.sock
# The containerd of `up --runtime containerd`: its own config, root, state and socket (never a
# system or Docker containerd's); its shims' sockets are in /run/containerd/s, named by a hash
# of this socket's path.
CONTAINERD_DIR=$CLUSTER_DIR/containerd
CONTAINERD_STATE=$RUN_DIR/containerd
CONTAINERD_SOCKET=$CONTAINERD_STATE/containerd.sock
CNI_BIN_DIR=${BERTH_CLUSTER_CNI_BIN_DIR:-/usr/lib/cni}
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
# Registries Kubernetes' test suites name to see a pull fail (an invalid host, a private one):
# blocked for Berth, a path of the local registry that holds nothing for containerd.
BLOCKED_REGISTRIES="invalid.registry.k8s.io gcr.io"
# The runtime `up` started, kept in the run dir for down/status/env.
RUNTIME_FILE=$RUN_DIR/runtime
RUNTIME=berth
ADMIN_KUBECONFIG=$CLUSTER_DIR/admin.kubeconfig
K8S_BINARIES=(kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl etcd crictl coredns)

log() { echo "cluster: $*" >&2; }

# runtime_daemon RUNTIME: the component that serves the CRI.
runtime_daemon() { if [[ $1 == containerd ]]; then echo containerd; else echo berthd; fi; }
# runtime_socket: RUNTIME_SOCKET, the CRI socket of $RUNTIME.
runtime_socket() {
    if [[ $RUNTIME == containerd ]]; then RUNTIME_SOCKET=$CONTAINERD_SOCKET; else RUNTIME_SOCKET=$BERTH_SOCKET; fi
}
# runtime_of_run_dir: RUNTIME and RUNTIME_SOCKET as the last `up` chose them.
runtime_of_run_dir() {
    RUNTIME=$(cat "$RUNTIME_FILE" 2>/dev/null || echo berth)
    runtime_socket
}
die() {
    echo "cluster: error: $*" >&2
    exit 1
}

# --- addresses from Berth's CNI config ------------------------------------------------------
[[ -f $CNI_CONFLIST ]] || die "no CNI config at $CNI_CONFLIST"
BRIDGE=$(jq -r '[.plugins[] | select(.type == "bridge")][0].bridge // empty' "$CNI_CONFLIST")
POD_CIDR=$(jq -r '[.plugins[] | select(.type == "bridge")][0].ipam.ranges[0][0].subnet // empty' "$CNI_CONFLIST")
[[ -n $BRIDGE && -n $POD_CIDR ]] || die "$CNI_CONFLIST has no bridge plugin with a bridge name and an IPv4 range"

# first_host CIDR: the first address of an IPv4 range (the bridge plugin's default gateway).
first_host() {
    local ip=${1%/*} len=${1#*/} a b c d n
    IFS=. read -r a b c d <<<"$ip"
    n=$(((a << 24 | b << 16 | c << 8 | d) & ~((1 << (32 - len)) - 1) & 0xffffffff))
    n=$((n + 1))
    echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))"
}
# The apiserver, the kubelet and NodePorts live on the bridge's gateway address: pods reach the
# apiserver through the `kubernetes` Service, which kube-proxy DNATs to the advertise address,
# so that address must be one pods can route to (127.0.0.1 in a pod is the pod itself).
NODE_IP=$(first_host "$POD_CIDR")
GATEWAY_PREFIX=$NODE_IP/${POD_CIDR#*/}
API_SERVER=https://$NODE_IP:$API_PORT

# --- binaries ---------------------------------------------------------------------------------
# k8s_bin_dirs: where the Kubernetes tools are: $BERTH_K8S_BIN (':'-separated), else the dirs
# hack/k8s/build-tools.sh builds them into (at its pinned versions), else the cache's bin dirs.
k8s_bin_dirs() {
    if [[ -n ${BERTH_K8S_BIN:-} ]]; then
        tr ':' '\n' <<<"$BERTH_K8S_BIN"
    elif [[ -f $K8S_TOOLS ]]; then
        bash "$K8S_TOOLS" --print-path --only "${K8S_BINARIES[@]}" | tr ':' '\n'
    else
        # No build script: whatever versions the cache holds, newest first.
        compgen -G "$CACHE/*/bin" | sort -rV || true
    fi
}

# find_k8s_bin NAME: the path of one tool, or nothing.
find_k8s_bin() {
    local dir
    while read -r dir; do
        if [[ -n $dir && -x $dir/$1 ]]; then
            echo "$dir/$1"
            return
        fi
    done < <(k8s_bin_dirs)
}

declare -A BIN
# resolve_k8s_bins [build|try]: fills BIN[name]; with "build", runs build-tools.sh when one is
# missing; with "try", returns 1 instead of failing.
resolve_k8s_bins() {
    local name missing=()
    for name in "${K8S_BINARIES[@]}"; do
        BIN[$name]=$(find_k8s_bin "$name")
        [[ -n ${BIN[$name]} ]] || missing+=("$name")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    if [[ ${1:-} == build && -z ${BERTH_K8S_BIN:-} ]]; then
        [[ -f $K8S_TOOLS ]] || die "missing ${missing[*]}, and no $K8S_TOOLS to build them (set BERTH_K8S_TOOLS or BERTH_K8S_BIN)"
        log "building ${missing[*]} with $K8S_TOOLS (cached in $CACHE; the first build is long)"
        # Its exit status is not trusted alone: what counts is whether the binaries are there now.
        bash "$K8S_TOOLS" --only "${missing[@]}" || log "warning: $K8S_TOOLS exited with status $?"
        resolve_k8s_bins
        return
    fi
    [[ ${1:-} == try ]] && return 1
    die "missing ${missing[*]} (looked in: $(k8s_bin_dirs | tr '\n' ' ')); run $K8S_TOOLS or set BERTH_K8S_BIN"
}

# berth_bins: the directory of berthd and berth-monitor (release first), built when missing.
berth_bin_dir() {
    if [[ -n ${BERTH_BIN_DIR:-} ]]; then
        [[ -x $BERTH_BIN_DIR/berthd && -x $BERTH_BIN_DIR/berth-monitor ]] || die "no berthd/berth-monitor in BERTH_BIN_DIR=$BERTH_BIN_DIR"
        echo "$BERTH_BIN_DIR"
        return
    fi
    local target=${CARGO_TARGET_DIR:-$REPO/target} dir
    for dir in "$target/release" "$target/debug"; do
        if [[ -x $dir/berthd && -x $dir/berth-monitor ]]; then
            echo "$dir"
            return
        fi
    done
    log "building berthd and berth-monitor (cargo build --release)"
    (cd "$REPO" && cargo build --release --locked -p berthd -p berth-shim >&2)
    echo "$target/release"
}

kubectl() { "${BIN[kubectl]}" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
crictl() { "${BIN[crictl]}" --config "$CLUSTER_DIR/crictl.yaml" --timeout 30s "$@"; }

# --- supervised processes ---------------------------------------------------------------------
# pid_of NAME [supervisor]: the live pid of a component (or of its supervisor), or nothing.
pid_of() {
    local file=$RUN_DIR/$1.pid pid
    [[ ${2:-} == supervisor ]] && file=$RUN_DIR/$1.supervisor.pid
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    # A pid file that survived a reboot may name someone else's process: check the command line.
    if [[ -r /proc/$pid/cmdline ]] && { [[ ${2:-} != supervisor ]] || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "supervise.sh $1 "; }; then
        echo "$pid"
    fi
}

restarts_of() {
    if [[ -f $RUN_DIR/$1.exits ]]; then wc -l <"$RUN_DIR/$1.exits"; else echo 0; fi
}

# start NAME CMD...: starts CMD under supervise.sh unless its supervisor runs already.
start() {
    local name=$1
    shift
    if [[ -n $(pid_of "$name" supervisor) ]]; then
        log "$name is running (pid $(pid_of "$name"))"
        return 0
    fi
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.supervisor.pid"
    echo "=== $(date -Is) hack/cluster.sh up: $*" >>"$LOGS/$name.log"
    # 8>&-: the lock of this script must not be inherited by the daemons.
    setsid "$CFG/supervise.sh" "$name" "$RUN_DIR" "$LOGS/$name.log" "$@" </dev/null >/dev/null 2>&1 8>&- &
    disown
    for _ in $(seq 50); do
        [[ -n $(pid_of "$name" supervisor) ]] && break
        sleep 0.1
    done
    log "started $name (log: $LOGS/$name.log)"
}

# stop NAME: SIGTERM to the supervisor (it passes it on), SIGKILL to both after 30 s.
stop() {
    local name=$1 sup child
    sup=$(pid_of "$name" supervisor)
    child=$(pid_of "$name")
    [[ -z $sup && -z $child ]] && return 0
    [[ -n $sup ]] && kill -TERM "$sup" 2>/dev/null
    [[ -z $sup && -n $child ]] && kill -TERM "$child" 2>/dev/null
    for _ in $(seq 300); do
        if [[ -z $sup || ! -e /proc/$sup ]] && [[ -z $child || ! -e /proc/$child ]]; then
            log "stopped $name"
            rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.supervisor.pid"
            return 0
        fi
        sleep 0.1
    done
    log "$name did not stop within 30 s: SIGKILL"
    for pid in $sup $child; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.supervisor.pid"
}

# fail NAME WHY: the component's log tail, then stop it (no crash loop left behind) and exit.
fail() {
    local name=$1
    shift
    echo "cluster: error: $name $*; the last lines of $LOGS/$name.log:" >&2
    tail -n 40 "$LOGS/$name.log" >&2 || true
    stop "$name"
    echo "cluster: what else is running stays up; stop it with: hack/cluster.sh down" >&2
    exit 1
}

# wait_ready NAME CHECK...: until CHECK succeeds; fails when the component exits or times out.
wait_ready() {
    local name=$1 exits deadline
    shift
    exits=$(restarts_of "$name")
    deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ $(restarts_of "$name") != "$exits" ]]; then
            fail "$name" "exited while starting"
        fi
        if [[ -z $(pid_of "$name" supervisor) ]]; then
            fail "$name" "is not running"
        fi
        if ((SECONDS > deadline)); then
            fail "$name" "was not ready within ${READY_TIMEOUT}s (check: $*)"
        fi
        sleep 0.5
    done
}

# port_free PORT ADDR NAME: fails unless ADDR:PORT is free or held by component NAME.
port_free() {
    local port=$1 addr=$2 name=$3
    [[ -n $(pid_of "$name") ]] && return 0
    if ss -Hltn "sport = :$port" | awk '{print $4}' | grep -qE "^(\*|0\.0\.0\.0|\[::\]|$addr):$port$"; then
        die "$addr:$port (for $name) is in use by another process: $(ss -Hltnp "sport = :$port" | head -n1)"
    fi
}

# --- host settings --------------------------------------------------------------------------
# set_sysctl KEY VALUE: sets it when different and records the old value for `down`.
set_sysctl() {
    local key=$1 value=$2 file old
    file=/proc/sys/${key//.//}
    [[ -e $file ]] || die "no $file (kernel module missing? for net.bridge.*: modprobe br_netfilter)"
    old=$(<"$file")
    if [[ $old != "$value" ]]; then
        echo "$value" >"$file"
        echo "sysctl $key $old" >>"$RUN_DIR/host-changes"
        log "host: set $key=$value (was $old; down restores it)"
    fi
}

host_setup() {
    if [[ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
        if command -v modprobe >/dev/null && modprobe br_netfilter; then
            echo "module br_netfilter" >>"$RUN_DIR/host-changes"
            log "host: loaded br_netfilter"
        else
            die "br_netfilter is not loaded and cannot be (modprobe br_netfilter)"
        fi
    fi
    # Service traffic between pods on one bridge must pass iptables (kube-proxy's DNAT and its
    # reverse), and pod traffic is routed by the host.
    set_sysctl net.bridge.bridge-nf-call-iptables 1
    set_sysctl net.ipv4.ip_forward 1
    # The bridge exists before the first pod (as the CNI bridge plugin would make it), because
    # the apiserver listens on its gateway address.
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        echo "bridge $BRIDGE" >>"$RUN_DIR/host-changes"
        log "host: created bridge $BRIDGE"
    fi
    if ! ip -4 addr show dev "$BRIDGE" | grep -qw "inet $GATEWAY_PREFIX"; then
        ip addr add "$GATEWAY_PREFIX" dev "$BRIDGE"
        log "host: added $GATEWAY_PREFIX to $BRIDGE"
    fi
    ip link set "$BRIDGE" up
    # KUBE-* chains that exist before we start are not ours to delete at `down`.
    if [[ ! -f $RUN_DIR/iptables-chains-before ]]; then
        iptables_chains >"$RUN_DIR/iptables-chains-before"
    fi
}

# iptables_chains: "CMD TABLE CHAIN" for every user chain of iptables and ip6tables.
iptables_chains() {
    local cmd table
    for cmd in iptables ip6tables; do
        for table in filter nat mangle; do
            "$cmd" -w -t "$table" -S 2>/dev/null | awk -v c="$cmd" -v t="$table" '$1 == "-N" {print c, t, $2}'
        done
    done
}

host_restore() {
    local kind a b
    [[ -f $RUN_DIR/host-changes ]] || return 0
    tac "$RUN_DIR/host-changes" | while read -r kind a b; do
        case $kind in
            sysctl)
                echo "$b" >"/proc/sys/${a//.//}"
                log "host: restored $a=$b"
                ;;
            bridge)
                if [[ -n $(ip -o link show master "$a" 2>/dev/null) ]]; then
                    log "host: $a still has ports, not deleting it: $(ip -o link show master "$a" | awk -F': ' '{print $2}' | tr '\n' ' ')"
                elif ip link del "$a" 2>/dev/null; then
                    log "host: deleted bridge $a"
                fi
                ;;
            module) log "host: br_netfilter stays loaded (other rules may rely on it)" ;;
        esac
    done
    rm -f "$RUN_DIR/host-changes"
}

# --- config files -----------------------------------------------------------------------------
# render TEMPLATE OUT: envsubst of the variables the templates use.
render() {
    # shellcheck disable=SC2016 # the names envsubst replaces, not expansions
    local vars='${RUNTIME_SOCKET} ${NODE_IP} ${NODE_NAME} ${KUBELET_PORT} ${KUBELET_HEALTHZ_PORT} ${PKI}
        ${DNS_IP} ${CLUSTER_DOMAIN} ${CLUSTER_DIR} ${LOG_MAX_SIZE} ${LOG_MAX_FILES} ${IMAGE_GC_HIGH}
        ${IMAGE_GC_LOW} ${EVICTION_DISK_FREE} ${MAX_PODS} ${POD_CIDR} ${PROXY_HEALTHZ_PORT}
        ${PROXY_METRICS_PORT} ${COREDNS_IMAGE}'
    export RUNTIME_SOCKET NODE_IP NODE_NAME KUBELET_PORT KUBELET_HEALTHZ_PORT PKI DNS_IP CLUSTER_DOMAIN \
        CLUSTER_DIR LOG_MAX_SIZE LOG_MAX_FILES IMAGE_GC_HIGH IMAGE_GC_LOW EVICTION_DISK_FREE MAX_PODS \
        POD_CIDR PROXY_HEALTHZ_PORT PROXY_METRICS_PORT COREDNS_IMAGE
    envsubst "$vars" <"$1" >"$2.tmp"
    mv "$2.tmp" "$2"
}

# kubeconfig FILE USER CERT: a kubeconfig for the apiserver with a client certificate.
kubeconfig() {
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: berth
    cluster:
      server: $API_SERVER
      certificate-authority: $PKI/ca.crt
users:
  - name: $2
    user:
      client-certificate: $PKI/$3.crt
      client-key: $PKI/$3.key
contexts:
  - name: berth
    context:
      cluster: berth
      user: $2
current-context: berth
EOF
    chmod 0600 "$1"
}

write_configs() {
    "$CFG/pki.sh" "$PKI" "$NODE_NAME" "$NODE_IP" "$API_SERVICE_IP"
    kubeconfig "$ADMIN_KUBECONFIG" kubernetes-admin admin
    kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
    kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
    kubeconfig "$CLUSTER_DIR/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
    kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet-client
    mkdir -p "$CLUSTER_DIR/kubelet" "$CLUSTER_DIR/cni" "$CLUSTER_DIR/berth"
    render "$CFG/kubelet-config.yaml" "$CLUSTER_DIR/kubelet/config.yaml"
    render "$CFG/kube-proxy-config.yaml" "$CLUSTER_DIR/kube-proxy-config.yaml"
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$RUNTIME_SOCKET" "$RUNTIME_SOCKET" \
        >"$CLUSTER_DIR/crictl.yaml"
    # Pods with dnsPolicy Default resolve nothing outside the cluster: no upstream resolver may
    # be contacted from here.
    printf '# hack/cluster.sh: no resolver outside the node\nnameserver 127.0.0.1\n' >"$CLUSTER_DIR/resolv.conf"
    # Berth's own pod network, unchanged; berthd reads it from the cluster's conf dir only.
    install -m 0644 "$CNI_CONFLIST" "$CLUSTER_DIR/cni/$(basename "$CNI_CONFLIST")"
}

# registries.conf: the public names the cluster uses go to the local registry, and nowhere
# else (a location, not a mirror, so a miss never falls through to the internet).
write_registries_conf() {
    local reg=$1 out=$CLUSTER_DIR/registries.conf
    cat >"$out.tmp" <<EOF
# Written by hack/cluster.sh: the cluster's images come from its local registry only.
[[registry]]
prefix = "docker.io/library/nginx"
location = "$reg/library/nginx"
insecure = true

[[registry]]
prefix = "docker.io/library/busybox"
location = "$reg/library/busybox"
insecure = true

[[registry]]
prefix = "registry.k8s.io"
location = "$reg/registry.k8s.io"
insecure = true

[[registry]]
location = "$reg"
insecure = true

# Anything else on Docker Hub would be a pull from the internet.
[[registry]]
prefix = "docker.io"
blocked = true
EOF
    # The other hosts Kubernetes' test suites name (hack/conformance.sh): their specs expect
    # these pulls to fail, and they must not go to the internet.
    for host in $BLOCKED_REGISTRIES; do
        printf '\n[[registry]]\nprefix = "%s"\nblocked = true\n' "$host" >>"$out.tmp"
    done
    if cmp -s "$out.tmp" "$out"; then
        rm "$out.tmp"
        return 1
    fi
    mv "$out.tmp" "$out"
}

write_berthd_config() {
    cat >"$CLUSTER_DIR/berth/config.toml" <<EOF
# Written by hack/cluster.sh: the cluster's own berthd, apart from a system one (/var/lib/berth).
root = "$CLUSTER_DIR/berth/root"
state = "$BERTH_STATE"
listen = "$BERTH_SOCKET"
registries_config = "$CLUSTER_DIR/registries.conf"
cgroup_driver = "cgroupfs"
# The RuntimeClass handler Kubernetes' suites ask for (containerd's config names it too).
runtime_handlers = ["test-handler"]

[network]
conf_dir = "$CLUSTER_DIR/cni"
EOF
    # The kubelet's checkpoint API (CheckpointContainer) needs CRIU 4 (hack/install-criu.sh;
    # Debian 12's criu cannot run on recent kernels).
    local criu
    criu="$("$REPO/hack/install-criu.sh" --print-path)/criu"
    if [[ -x $criu ]]; then
        printf '\n[checkpoint]\ncriu_path = "%s"\n' "$criu" >>"$CLUSTER_DIR/berth/config.toml"
    fi
}

# containerd's config: the CRI plugin with the kubelet's cgroupfs driver, the pod network of
# berthd (the same conflist in the same conf dir, the same plugins), the sandbox image from the
# local registry, and the registry's names mapped as in registries.conf (hosts.toml files).
write_containerd_config() {
    local reg=$1 hosts=$CONTAINERD_DIR/hosts.d host path
    mkdir -p "$CONTAINERD_DIR" "$hosts/docker.io" "$hosts/registry.k8s.io"
    containerd_write_config "$CONTAINERD_DIR/config.toml" "$CONTAINERD_DIR/root" "$CONTAINERD_STATE" \
        "$CONTAINERD_SOCKET" "$PAUSE_IMAGE" "$CNI_BIN_DIR" "$CLUSTER_DIR/cni" "$hosts" "max_conf_num = 1"
    # docker.io/library/X -> REG/library/X and registry.k8s.io/X -> REG/registry.k8s.io/X, as
    # Berth's registries.conf; the public server is never tried (a miss is an error).
    for host in docker.io registry.k8s.io; do
        path=/v2
        [[ $host == registry.k8s.io ]] && path=/v2/registry.k8s.io
        cat >"$hosts/$host/hosts.toml" <<EOF
server = "http://$reg$path"
[host."http://$reg$path"]
  capabilities = ["pull", "resolve"]
  override_path = true
EOF
    done
    for host in $BLOCKED_REGISTRIES; do
        mkdir -p "$hosts/$host"
        cat >"$hosts/$host/hosts.toml" <<EOF
server = "http://$reg/v2/blocked/$host"
[host."http://$reg/v2/blocked/$host"]
  capabilities = ["pull", "resolve"]
  override_path = true
EOF
    done
    containerd_registry_hosts "$hosts" "$reg"
}

# --- up -------------------------------------------------------------------------------------
registry_addr() { echo "127.0.0.1:$(<"$CLUSTER_DIR/registry.port")"; }

start_registry() {
    local port
    if [[ -z $(pid_of registry supervisor) ]]; then
        port=$(cat "$CLUSTER_DIR/registry.port" 2>/dev/null || true)
        # Keep the port of the last run (berthd's registries.conf names it) unless it is taken.
        if [[ -z $port ]] || ss -Hltn "sport = :$port" | grep -q .; then
            port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
            echo "$port" >"$CLUSTER_DIR/registry.port"
        fi
        mkdir -p "$CLUSTER_DIR/registry"
        cat >"$CLUSTER_DIR/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $CLUSTER_DIR/registry/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
        start registry docker-registry serve "$CLUSTER_DIR/registry/config.yml"
    fi
    wait_ready registry curl -fsS "http://$(registry_addr)/v2/"
}

start_berthd() {
    local dir changed=$1
    dir=$(berth_bin_dir)
    write_berthd_config
    local old
    old=$(pid_of berthd)
    if [[ $changed == yes && -n $old ]]; then
        log "registries.conf changed: restarting berthd to read it"
        kill -TERM "$old"
        # Its supervisor starts it again; wait for the new process.
        for _ in $(seq 300); do
            [[ -n $(pid_of berthd) && $(pid_of berthd) != "$old" ]] && break
            sleep 0.1
        done
    fi
    start berthd "$dir/berthd" --config "$CLUSTER_DIR/berth/config.toml"
    wait_ready berthd crictl version
}

start_containerd() {
    local tool
    for tool in containerd containerd-shim-runc-v2 runc; do
        command -v "$tool" >/dev/null || die "missing $tool (apt-get install containerd runc: Debian 12's containerd 1.6)"
    done
    write_containerd_config "$(registry_addr)"
    mkdir -p "$CONTAINERD_STATE"
    start containerd "$(command -v containerd)" --config "$CONTAINERD_DIR/config.toml" --log-level warn
    wait_ready containerd crictl version
    # Pulled now, as on a node whose image has it: containerd would pull it at the first pod.
    crictl pull "$PAUSE_IMAGE" >/dev/null || fail containerd "cannot pull $PAUSE_IMAGE from the local registry"
}

start_control_plane() {
    port_free "$ETCD_PORT" 127.0.0.1 etcd
    start etcd "${BIN[etcd]}" --name berth --data-dir "$CLUSTER_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "berth=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
    wait_ready etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

    port_free "$API_PORT" "$NODE_IP" kube-apiserver
    start kube-apiserver "${BIN[kube-apiserver]}" \
        --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
        --requestheader-allowed-names front-proxy-client \
        --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
        --requestheader-extra-headers-prefix X-Remote-Extra- \
        --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
        --proxy-client-key-file "$PKI/front-proxy-client.key" \
        --allow-privileged=true --profiling=false
    wait_ready kube-apiserver curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "$API_SERVER/readyz"

    port_free "$CM_PORT" 127.0.0.1 kube-controller-manager
    start kube-controller-manager "${BIN[kube-controller-manager]}" \
        --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --use-service-account-credentials=true --service-cluster-ip-range "$SERVICE_CIDR" \
        --allocate-node-cidrs=false --profiling=false
    port_free "$SCHED_PORT" 127.0.0.1 kube-scheduler
    start kube-scheduler "${BIN[kube-scheduler]}" \
        --kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --profiling=false
    wait_ready kube-controller-manager curl -fsSk "https://127.0.0.1:$CM_PORT/healthz"
    wait_ready kube-scheduler curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"
}

start_kubelet() {
    port_free "$KUBELET_PORT" "$NODE_IP" kubelet
    port_free "$KUBELET_HEALTHZ_PORT" 127.0.0.1 kubelet
    local gates=()
    [[ -z $KUBELET_FEATURE_GATES ]] || gates=(--feature-gates "$KUBELET_FEATURE_GATES")
    start kubelet "${BIN[kubelet]}" --config "$CLUSTER_DIR/kubelet/config.yaml" \
        --kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" --hostname-override "$NODE_NAME" \
        --node-ip "$NODE_IP" --root-dir "$CLUSTER_DIR/kubelet/root" --v="$KUBELET_VERBOSITY" "${gates[@]}"
    wait_ready kubelet curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
    wait_ready kubelet kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
    log "node $NODE_NAME is Ready${KUBELET_FEATURE_GATES:+ (kubelet feature gates $KUBELET_FEATURE_GATES)}"
}

start_node() {
    start_kubelet
    port_free "$PROXY_HEALTHZ_PORT" 127.0.0.1 kube-proxy
    start kube-proxy "${BIN[kube-proxy]}" --config "$CLUSTER_DIR/kube-proxy-config.yaml" --v=1
    wait_ready kube-proxy curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
}

deploy_coredns() {
    local deadline
    render "$CFG/coredns.yaml" "$CLUSTER_DIR/coredns.yaml"
    kubectl apply -f "$CLUSTER_DIR/coredns.yaml" >/dev/null
    deadline=$((SECONDS + READY_TIMEOUT))
    until kubectl -n kube-system rollout status deployment/coredns --timeout=5s >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "cluster: error: CoreDNS was not Ready within ${READY_TIMEOUT}s" >&2
            kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide >&2 || true
            kubectl -n kube-system describe pods -l k8s-app=kube-dns | tail -n 25 >&2 || true
            echo "cluster: the last kubelet log lines:" >&2
            tail -n 20 "$LOGS/kubelet.log" >&2
            exit 1
        fi
    done
    log "CoreDNS is Ready ($COREDNS_IMAGE, Service kube-dns $DNS_IP)"
}

cmd_up() {
    local tool changed=no running runtime_only=no
    [[ $(id -u) == 0 ]] || die "run as root (network, mounts, cgroups)"
    while (($#)); do
        case $1 in
            --runtime-only) runtime_only=yes ;;
            --runtime)
                RUNTIME=${2:-}
                shift
                ;;
            --runtime=*) RUNTIME=${1#*=} ;;
            *) die "up: unknown argument $1" ;;
        esac
        shift
    done
    [[ $RUNTIME == berth || $RUNTIME == containerd ]] || die "--runtime: berth or containerd, not '$RUNTIME'"
    runtime_socket
    for tool in openssl jq curl ip iptables ip6tables conntrack docker-registry skopeo umoci envsubst ss python3 setsid; do
        command -v "$tool" >/dev/null ||
            die "missing $tool (apt-get install openssl jq curl iproute2 iptables conntrack docker-registry skopeo umoci gettext-base python3)"
    done
    resolve_k8s_bins build
    mkdir -p "$CLUSTER_DIR" "$RUN_DIR" "$LOGS"
    exec 8>"$RUN_DIR/lock"
    flock -n 8 || die "another hack/cluster.sh up/down runs"
    running=$(cat "$RUNTIME_FILE" 2>/dev/null || true)
    if [[ -n $running && $running != "$RUNTIME" ]] &&
        [[ -n $(pid_of kubelet supervisor) || -n $(pid_of "$(runtime_daemon "$running")" supervisor) ]]; then
        die "the cluster runs on $running: hack/cluster.sh down first"
    fi
    echo "$RUNTIME" >"$RUNTIME_FILE"

    host_setup
    write_configs
    start_registry
    COREDNS_IMAGE=$("$CFG/images.sh" "$(registry_addr)" "${BIN[coredns]}" | tail -n1)
    if [[ $RUNTIME == berth ]]; then
        write_registries_conf "$(registry_addr)" && changed=yes
        start_berthd "$changed"
    else
        start_containerd
    fi
    if [[ $runtime_only == yes ]]; then
        [[ -z $(pid_of kubelet supervisor) ]] || log "warning: --runtime-only, but the cluster's kubelet runs"
        log "up (runtime only) on $RUNTIME: CRI socket $RUNTIME_SOCKET, registry $(registry_addr)"
        return 0
    fi
    start_control_plane
    start_node
    deploy_coredns
    log "up on $RUNTIME: export KUBECONFIG=$ADMIN_KUBECONFIG (or: eval \"\$(hack/cluster.sh env)\")"
}

# kubelet-restart [--feature-gates GATES]: the running cluster's kubelet again, with these gates
# (none: the release's); its pods keep running in the runtime meanwhile.
cmd_kubelet_restart() {
    [[ $(id -u) == 0 ]] || die "run as root"
    while (($#)); do
        case $1 in
            --feature-gates)
                KUBELET_FEATURE_GATES=${2:-}
                shift
                ;;
            --feature-gates=*) KUBELET_FEATURE_GATES=${1#*=} ;;
            *) die "kubelet-restart: unknown argument $1" ;;
        esac
        shift
    done
    runtime_of_run_dir
    resolve_k8s_bins
    [[ -n $(pid_of kubelet supervisor) ]] || die "no kubelet runs: hack/cluster.sh up first"
    exec 8>"$RUN_DIR/lock"
    flock -n 8 || die "another hack/cluster.sh up/down runs"
    stop kubelet
    start_kubelet
}

# --- down -------------------------------------------------------------------------------------
delete_pods_through_api() {
    [[ -n $(pid_of kube-apiserver) && -n $(pid_of kubelet) ]] || return 0
    kubectl get --raw /readyz >/dev/null 2>&1 || return 0
    log "deleting every pod through the API (grace ${DOWN_GRACE}s); the kubelet stops them through Berth"
    kubectl delete pods --all --all-namespaces --grace-period="$DOWN_GRACE" --wait=true \
        --timeout="$((DOWN_GRACE + 60))s" >/dev/null ||
        log "some pods were not deleted through the API in time; Berth removes them next"
}

remove_pods_through_cri() {
    local pods
    [[ -n $(pid_of "$(runtime_daemon "$RUNTIME")") && -n ${BIN[crictl]:-} ]] || return 0
    pods=$(crictl pods -q 2>/dev/null || true)
    if [[ -n $pods ]]; then
        log "removing $(wc -w <<<"$pods") pod sandbox(es) left in $RUNTIME (crictl rmp -f)"
        # shellcheck disable=SC2086 # one argument per pod id
        crictl rmp -f $pods >/dev/null || log "crictl rmp failed for some pods"
    fi
    if [[ -n $(crictl pods -q 2>/dev/null) || -n $(crictl ps -aq 2>/dev/null) ]]; then
        log "warning: $RUNTIME still has pods or containers:"
        crictl pods >&2 || true
    fi
}

# remove_pod_logs: the log dirs of pods the kubelet stopped before its container GC removed them
# (pods deleted just before `down`), and its /var/log/containers links to them; only once Berth
# has no pod left.
remove_pod_logs() {
    local dir=$CLUSTER_DIR/pod-logs n
    [[ -d $dir ]] || return 0
    if [[ -n $(pid_of "$(runtime_daemon "$RUNTIME")") && -n ${BIN[crictl]:-} && -n $(crictl pods -q 2>/dev/null) ]]; then
        log "warning: $RUNTIME still has pods: their logs stay in $dir"
        return 0
    fi
    n=$(find "$dir" -mindepth 1 -maxdepth 1 | wc -l)
    if ((n > 0)); then
        find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
        log "removed $n pod log dir(s) from $dir"
    fi
    find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null || true
}

# delete_kube_chains: KUBE-* chains that exist now and did not before `up` (the kubelet's
# canaries and whatever `kube-proxy --cleanup` left) and berthd's BERTH-FWD-<bridge> and
# BERTH-FORWARD-ADMIN (its pod bridge's FORWARD rules), with the rules that jump to them.
delete_kube_chains() {
    local cmd table chain rule
    local before=$RUN_DIR/iptables-chains-before
    [[ -f $before ]] || return 0
    { iptables_chains | grep -E ' (KUBE-|BERTH-FWD-|BERTH-FORWARD-ADMIN$)' | grep -vxF -f "$before" || true; } | while read -r cmd table chain; do
        { "$cmd" -w -t "$table" -S | grep -E -- "-j $chain( |$)" || true; } | while read -r rule; do
            # The rule as iptables -S prints it, with -A turned into -D.
            eval "$cmd -w -t $table ${rule/-A /-D }" 2>/dev/null || true
        done
        "$cmd" -w -t "$table" -F "$chain" 2>/dev/null || true
        if "$cmd" -w -t "$table" -X "$chain" 2>/dev/null; then
            log "iptables: deleted $cmd -t $table $chain"
        fi
    done
    rm -f "$before"
}

# unmount_leftovers: mounts under the cluster's dirs (pod volumes, pinned namespaces, Berth's
# cgroup hierarchy), deepest first.
unmount_leftovers() {
    local target
    { findmnt -rn -o TARGET | grep -E "^($CLUSTER_DIR|$RUN_DIR)(/|$)" || true; } | sort -r | while read -r target; do
        if umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null; then
            log "unmounted $target"
        fi
    done
}

# remove_kubepods_cgroups: the kubelet's (now empty) QoS cgroup trees.
remove_kubepods_cgroups() {
    local root
    for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/unified/kubepods; do
        [[ -d $root ]] || continue
        find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
        if [[ -d $root ]]; then log "warning: $root is not empty (a process is still in it)"; fi
    done
    return 0
}

cmd_down() {
    local purge=no name pid
    [[ ${1:-} == --purge ]] && purge=yes
    [[ $(id -u) == 0 ]] || die "run as root"
    [[ -d $RUN_DIR ]] || { log "nothing runs (no $RUN_DIR)"; [[ $purge == no ]] || rm -rf "$CLUSTER_DIR"; return 0; }
    exec 8>"$RUN_DIR/lock"
    flock -n 8 || die "another hack/cluster.sh up/down runs"
    runtime_of_run_dir
    resolve_k8s_bins try || log "warning: Kubernetes tools not found: pods are removed through $RUNTIME only if crictl is"

    # Nothing recreates or reschedules pods once these two are gone.
    stop kube-controller-manager
    stop kube-scheduler
    delete_pods_through_api
    stop kubelet
    stop kube-proxy
    if [[ -n ${BIN[kube-proxy]:-} ]]; then
        "${BIN[kube-proxy]}" --cleanup >>"$LOGS/kube-proxy.log" 2>&1 || log "kube-proxy --cleanup failed (see $LOGS/kube-proxy.log)"
    fi
    remove_pods_through_cri
    remove_pod_logs
    stop berthd
    stop containerd
    for name in kube-apiserver etcd registry; do stop "$name"; done

    # Monitors (shims) of pods the runtime could not remove would still run: list them, never
    # kill by name.
    for pid in $(pgrep -x berth-monitor || true); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$BERTH_STATE"; then
            log "warning: berth-monitor $pid of this cluster still runs"
        fi
    done
    # comm is cut to 15 characters: containerd-shim-runc-v2 is "containerd-shim".
    for pid in $(pgrep -x containerd-shim || true); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-address $CONTAINERD_SOCKET "; then
            log "warning: containerd-shim-runc-v2 $pid of this cluster still runs"
        fi
    done
    delete_kube_chains
    unmount_leftovers
    remove_kubepods_cgroups
    host_restore
    if [[ -n $(ip -o link show master "$BRIDGE" 2>/dev/null) ]]; then
        log "warning: ports left on $BRIDGE: $(ip -o link show master "$BRIDGE" | awk -F': ' '{print $2}' | tr '\n' ' ')"
    fi
    rm -f "$RUN_DIR"/*.exits "$RUNTIME_FILE"
    if ! grep -qE "^$RUN_DIR(/|$)" <<<"$(findmnt -rn -o TARGET)"; then
        rm -rf "$RUN_DIR"
    fi
    if [[ $purge == yes ]]; then
        rm -rf "$CLUSTER_DIR"
        log "purged $CLUSTER_DIR"
    fi
    log "down"
}

# --- status / env ---------------------------------------------------------------------------
cmd_status() {
    local name pid rc=0
    runtime_of_run_dir
    echo "runtime: $RUNTIME ($RUNTIME_SOCKET)"
    for name in etcd kube-apiserver kube-controller-manager kube-scheduler registry "$(runtime_daemon "$RUNTIME")" kubelet kube-proxy; do
        pid=$(pid_of "$name")
        if [[ -n $pid ]]; then
            printf '%-24s running  pid %-8s restarts %s\n' "$name" "$pid" "$(restarts_of "$name")"
        elif [[ -n $(pid_of "$name" supervisor) ]]; then
            printf '%-24s RESTARTING (restarts %s)\n' "$name" "$(restarts_of "$name")"
            rc=1
        else
            printf '%-24s stopped\n' "$name"
            rc=1
        fi
    done
    [[ -f $CLUSTER_DIR/registry.port ]] && echo "registry: http://$(registry_addr)  (images: hack/cluster/README.md)"
    if [[ -n $(pid_of kube-apiserver) ]] && resolve_k8s_bins try; then
        echo
        kubectl get nodes -o wide || rc=1
        echo
        kubectl -n kube-system get pods -o wide || rc=1
    fi
    return $rc
}

cmd_env() {
    runtime_of_run_dir
    resolve_k8s_bins
    echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
    echo "export PATH=$(dirname "${BIN[kubectl]}"):$(dirname "${BIN[crictl]}"):\$PATH"
    echo "export CRI_CONFIG_FILE=$CLUSTER_DIR/crictl.yaml"
}

case ${1:-} in
    up)
        shift
        cmd_up "$@"
        ;;
    down) cmd_down "${2:-}" ;;
    kubelet-restart)
        shift
        cmd_kubelet_restart "$@"
        ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
        exit 2
        ;;
esac
