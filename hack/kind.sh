#!/usr/bin/env bash
# kind clusters whose nodes run Berth (issue 18): a node image built offline, and a control
# plane plus two workers as Podman containers of it (kind's podman provider: this machine runs
# no Docker engine; Podman is Debian's). As root.
#
#   hack/kind.sh build   install what is missing (podman, netavark, debootstrap, umoci, skopeo),
#                        build kind, kubeadm, the kubelet, kubectl and the control plane
#                        (hack/k8s/build-tools.sh), Berth (release), the images
#                        (hack/kind/images.sh) and the node image localhost/berth-kind-node
#   hack/kind.sh up      build, then `kind create cluster` with hack/kind/cluster.yaml, then each
#                        node's pod network (Berth's bridge on the node's pod CIDR, routes to the
#                        other nodes') and CoreDNS; waits until every node and CoreDNS is Ready
#   hack/kind.sh test    the cluster e2e tests against it: all of e2e/tests/cluster (as
#                        hack/cluster-test.sh runs them on the single node, here reaching the
#                        pods' node through Podman) and the cross-node tests of
#                        e2e/tests/cluster/kind.rs
#   hack/kind.sh down    kind delete cluster (the node image stays; `down --image` removes it)
#   hack/kind.sh all     up, test and down (also when up or a test fails), with the wall time
#                        of each: what hack/test.sh runs
#   hack/kind.sh status  the nodes, as kubectl sees them
#   hack/kind.sh env     `export KUBECONFIG=... PATH=...` for a shell to eval
#
# `--runtime containerd` after build, up, test, down, status, env or all: the same, on nodes
# whose runtime is Debian's containerd 1.6 + runc instead (a node image built the same way,
# localhost/containerd-kind-node, and a cluster of its own, containerd-kind): kind's stock
# runtime, for side-by-side figures (`hack/kind.sh bench`).
#   hack/kind.sh chart --runtime containerd
#                        the Helm chart (charts/berth) installing Berth onto a real cluster: a
#                        fresh containerd cluster, one worker drained, `helm install` with
#                        kubelet.switchRuntimeEndpoint=true puts Berth under the node's systemd
#                        and switches its kubelet; that node must then run a pod on Berth
#                        (chart_test); the cluster goes afterwards. hack/test.sh runs it
#   hack/kind.sh bench [--runs N]
#                        up and down N times (default 3) on each runtime, tests not run: the
#                        time of `kind create cluster` and of up (to all Ready), side by side
#
# Settings (environment): BERTH_KIND_NAME (cluster name, default <runtime>-kind),
# BERTH_KIND_DIR (kubeconfig and logs, default /var/lib/berth-kind), BERTH_BIN_DIR (berthd,
# berth-monitor and berthctl to put into the node image instead of a release build),
# BERTH_CACHE (default ~/.cache/berth: the Debian root, images and tools).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
# shellcheck source-path=SCRIPTDIR source=k8s/versions.env
source hack/k8s/versions.env
# shellcheck source-path=SCRIPTDIR source=lib/rootfs.sh
source hack/lib/rootfs.sh
CMD=${1:-}
shift || true
RUNTIME=berth
RUNS=3
while (($#)); do
    case $1 in
        --runtime) RUNTIME=${2:?--runtime needs berth or containerd}; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift ;;
        --image) DOWN_IMAGE=1 ;;
        *) echo "kind.sh: unknown argument $1 (see hack/kind.sh --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $RUNTIME == berth || $RUNTIME == containerd ]] || { echo "kind.sh: --runtime is berth or containerd" >&2; exit 2; }
NAME=${BERTH_KIND_NAME:-$RUNTIME-kind}
DIR=${BERTH_KIND_DIR:-/var/lib/berth-kind}
CACHE=${BERTH_CACHE:-$HOME/.cache/berth}
KCACHE=$CACHE/kind
KUBECONFIG_FILE=$DIR/$NAME.kubeconfig
READY_TIMEOUT=${BERTH_KIND_READY_TIMEOUT:-300}
export KIND_EXPERIMENTAL_PROVIDER=podman

die() {
    echo "kind.sh: $*" >&2
    exit 1
}
log() { echo "kind.sh: $*" >&2; }
# since START [END]: seconds from START to END (`date +%s.%N` values; END: now), one decimal.
since() { awk -v a="$1" -v b="${2:-$(date +%s.%N)}" 'BEGIN { printf "%.1f", b - a }'; }
[[ $(id -u) == 0 ]] || die "run as root (Podman's rootful provider, debootstrap)"

tools_path() { bash hack/k8s/build-tools.sh --print-path --only kind kubectl kubelet; }
kind_cmd() { "$(bash hack/k8s/build-tools.sh --print-path --only kind)/kind" "$@"; }
kubectl_cmd() { "$(bash hack/k8s/build-tools.sh --print-path --only kubectl)/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
node_exec() { podman exec "$@"; }

# --- build

ensure_packages() {
    local missing=() p
    for p in podman netavark aardvark-dns runc debootstrap umoci skopeo jq iptables conntrack; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}

# Podman's settings for kind's nodes, in a containers.conf of our own (CONTAINERS_CONF; kind
# passes none of these itself, and the host's containers.conf is left as it is):
# - netavark: kind's nodes find each other by name (aardvark-dns); Podman's CNI backend has no
#   DNS without the dnsname plugin;
# - runc: crun refuses a cgroup v1/v2 hybrid host whose cgroup2 has any controller ("cgroups in
#   hybrid mode not supported"), which this host is;
# - rlimits no higher than this shell's: Podman's default (1048576 open files) needs
#   CAP_SYS_RESOURCE, which a node may lack; Podman itself caps processes at pid_max.
podman_conf() {
    local nofile nproc pid_max
    mkdir -p "$DIR"
    nofile=$(ulimit -Hn) nproc=$(ulimit -Hu) pid_max=$(cat /proc/sys/kernel/pid_max)
    [[ $nofile == unlimited ]] && nofile=1048576
    [[ $nproc == unlimited || $nproc -gt $pid_max ]] && nproc=$pid_max
    cat >"$DIR/containers.conf.new" <<EOF
# Written by hack/kind.sh for its kind nodes (CONTAINERS_CONF).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
EOF
    mv "$DIR/containers.conf.new" "$DIR/containers.conf"
    export CONTAINERS_CONF=$DIR/containers.conf
}

build_tools() {
    bash hack/k8s/build-tools.sh --only kind kubeadm kubelet kubectl kube-apiserver \
        kube-controller-manager kube-scheduler kube-proxy etcd etcdctl coredns crictl >&2
}

berth_bins() {
    if [[ -n ${BERTH_BIN_DIR:-} ]]; then
        echo "$BERTH_BIN_DIR"
    else
        cargo build --release --locked -q -p berthd -p berth-shim -p berthctl >&2
        echo "$REPO/target/release"
    fi
}

# The Debian root every node image starts from, cached: systemd, iptables, conntrack, the CNI
# plugins and what the kubelet execs (mount, nsenter).
DEBIAN_PACKAGES=systemd,systemd-sysv,dbus,iptables,nftables,iproute2,kmod,ca-certificates,conntrack,ethtool,socat,util-linux,mount,procps,containernetworking-plugins,libseccomp2,e2fsprogs,findutils,less,curl
debian_root() {
    local root=$KCACHE/debian-bookworm
    if [[ ! -f $root.stamp || $(cat "$root.stamp") != "$DEBIAN_PACKAGES" ]]; then
        log "debootstrap bookworm (minbase + $DEBIAN_PACKAGES)"
        rm -rf "$root" "$root.tmp" "$root.stamp"
        mkdir -p "$KCACHE"
        debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" bookworm "$root.tmp" \
            http://deb.debian.org/debian >"$KCACHE/debootstrap.log" 2>&1 ||
            die "debootstrap failed: see $KCACHE/debootstrap.log"
        rm -rf "$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp"/var/lib/apt/lists/*
        mv "$root.tmp" "$root"
        echo "$DEBIAN_PACKAGES" >"$root.stamp"
    fi
    echo "$root"
}

image_tag() {
    local bins=$1
    {
        if [[ -n $bins ]]; then cat "$bins"/{berthd,berth-monitor,berthctl}; else echo "$RUNTIME"; fi
        cat hack/kind/node/* hack/kind.sh hack/install.sh hack/lib/containerd.sh \
        hack/systemd/berth.service hack/cni/10-berth.conflist "$KCACHE/images/stamp" \
            "$(bash hack/k8s/build-tools.sh --print-path --only kubelet)"/{kubelet,kubeadm,kubectl}
    } | sha256sum | cut -c1-12
}

# stage_containerd ROOT: Debian's containerd 1.6 and runc (their packages' files, fetched once
# with `apt-get download`) with hack/lib/containerd.sh's config (cgroupfs, the pause image, the
# node's CNI dirs), and a unit that imports the node's images into its k8s.io namespace at boot.
stage_containerd() {
    local r=$1 p deb
    mkdir -p "$KCACHE/debs"
    for p in containerd runc; do
        deb=$(find "$KCACHE/debs" -name "${p}_*_amd64.deb" | sort -V | tail -n1)
        if [[ -z $deb ]]; then
            (cd "$KCACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$p" >/dev/null) ||
                die "apt-get download $p failed"
            deb=$(find "$KCACHE/debs" -name "${p}_*_amd64.deb" | sort -V | tail -n1)
        fi
        # Not dpkg-deb -x: its ./lib and ./bin entries would replace the root's merged-/usr
        # symlinks with directories (and so break the dynamic loader's path).
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$r" --keep-directory-symlink
    done
    # shellcheck source-path=SCRIPTDIR source=lib/containerd.sh
    source hack/lib/containerd.sh
    mkdir -p "$r/etc/containerd"
    containerd_write_config "$r/etc/containerd/config.toml" /var/lib/containerd /run/containerd \
        /run/containerd/containerd.sock "$(image_ref pause)" /usr/lib/cni /etc/cni/net.d \
        /etc/containerd/certs.d
    sed -i "s|$r||g" "$r/etc/containerd/config.toml"
    # ctr imports an OCI archive: the same layout, tarred.
    tar -C "$KCACHE/images/oci" -cf "$r/kind/images.tar" .
    cat >"$r/etc/systemd/system/containerd-images.service" <<'EOF'
# hack/kind.sh --runtime containerd: the node's images into containerd's k8s.io namespace
# before the kubelet starts (as berth-images.service does for Berth).
[Unit]
Description=Import the kind node's images into containerd
Requires=containerd.service
After=containerd.service
Before=kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ctr --namespace k8s.io images import /kind/images.tar

[Install]
WantedBy=multi-user.target
EOF
}

# image_ref NAME: the full reference of one of the node's images (hack/kind/images.sh).
image_ref() {
    jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"]' "$KCACHE/images/oci/index.json" |
        grep -m1 "/$1:"
}

# The kind config: hack/kind/cluster.yaml, without Berth's socket on a containerd node (kind's
# default socket is containerd's).
cluster_config() {
    if [[ $RUNTIME == berth ]]; then
        cat hack/kind/cluster.yaml
    else
        sed '/berth.sock/d' hack/kind/cluster.yaml
    fi
}

build() {
    ensure_packages
    build_tools
    local bins root tag image k8s_bin r
    bins=
    if [[ $RUNTIME == berth ]]; then bins=$(berth_bins); fi
    root=$(debian_root)
    bash hack/kind/images.sh "$KCACHE/images" >&2
    tag=$K8S_VERSION-$(image_tag "$bins")
    image=localhost/$RUNTIME-kind-node:$tag
    if podman image exists "$image"; then
        echo "$image"
        return
    fi
    log "building $image"
    k8s_bin=$(bash hack/k8s/build-tools.sh --print-path --only kubelet)
    r=$(mktemp -d "$KCACHE/.node.XXXXXX")
    # shellcheck disable=SC2064 # expand now: r is local
    trap "rm -rf '$r'" RETURN
    cp -a "$root/." "$r/"
    local units
    mkdir -p "$r/kind/manifests"
    if [[ $RUNTIME == berth ]]; then
        # Berth as on any node: hack/install.sh, staged into the root; debug info stripped.
        bash hack/install.sh --destdir "$r" --bin-dir "$bins" --prefix /usr/local >&2
        strip --strip-debug "$r"/usr/local/bin/{berthd,berth-monitor,berthctl}
        install -m 0644 hack/kind/node/berth-images.service "$r/etc/systemd/system/"
        # What the cluster tests run on a node, as on the single-node cluster's host: crictl on
        # Berth's socket, and the CRIU that CheckpointContainer runs (berthd finds it on PATH).
        install -m 0755 "$(bash hack/k8s/build-tools.sh --print-path --only crictl)/crictl" "$r/usr/local/bin/"
        printf 'runtime-endpoint: %s\nimage-endpoint: %s\n' unix:///run/berth/berth.sock \
            unix:///run/berth/berth.sock >"$r/etc/crictl.yaml"
        bash hack/install-criu.sh >&2
        install_with_libs "$(bash hack/install-criu.sh --print-path)/criu" "$r" /usr/local/sbin/criu
        chroot "$r" /usr/local/sbin/criu --version >/dev/null || die "criu does not run in the node image"
        mkdir -p "$r/kind/images"
        cp -a "$KCACHE/images/oci" "$r/kind/images/oci"
        units="berth.service berth-images.service"
    else
        stage_containerd "$r"
        units="containerd.service containerd-images.service"
    fi
    # The node's pod network is written by `up`, on the pod CIDR the node is given.
    rm -f "$r"/etc/cni/net.d/*
    install -m 0755 "$k8s_bin"/{kubelet,kubeadm,kubectl} "$r/usr/bin/"
    install -m 0755 hack/kind/node/entrypoint hack/kind/node/kubelet-cgroup "$r/usr/local/bin/"
    install -m 0644 hack/kind/node/kubelet.service "$r/etc/systemd/system/"
    install -D -m 0644 hack/kind/node/10-kubeadm.conf "$r/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
    install -m 0644 hack/kind/node/99-kind-node.conf "$r/etc/sysctl.d/"
    install -m 0644 hack/kind/node/default-storage.yaml "$r/kind/manifests/"
    echo "$K8S_VERSION" >"$r/kind/version"
    : >"$r/etc/machine-id"
    # shellcheck disable=SC2086 # two unit names
    systemctl --root="$r" enable $units kubelet.service >/dev/null 2>&1
    # Nothing on a node logs in on a console.
    systemctl --root="$r" mask getty.target console-getty.service systemd-firstboot.service >/dev/null 2>&1
    tar -C "$r" --numeric-owner -c . |
        podman import --quiet \
            --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
            --change 'STOPSIGNAL SIGRTMIN+3' \
            --change 'ENV container=podman' \
            - "$image" >/dev/null
    # Older builds of the node image are of no use any more.
    podman images --format '{{.Repository}}:{{.Tag}}' "localhost/$RUNTIME-kind-node" |
        grep -vx "$image" | xargs -r podman rmi >/dev/null 2>&1 || true
    echo "$image"
}

# --- up

cluster_exists() { kind_cmd get clusters 2>/dev/null | grep -qx "$NAME"; }
nodes() { kind_cmd get nodes --name "$NAME" | sort; }

# network: on each node, Berth's bridge network on the node's pod CIDR (host-local IPAM), and
# a route to every other node's pod CIDR through that node (all nodes share Podman's network,
# so they reach each other directly; nothing is encapsulated or masqueraded between pods).
network() {
    local n cidr ip other ocidr oip
    declare -A cidr_of ip_of
    for n in $(nodes); do
        cidr=$(kubectl_cmd get node "$n" -o jsonpath='{.spec.podCIDR}')
        ip=$(kubectl_cmd get node "$n" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
        [[ -n $cidr && -n $ip ]] || die "node $n has no pod CIDR or no address yet"
        cidr_of[$n]=$cidr
        ip_of[$n]=$ip
    done
    for n in "${!cidr_of[@]}"; do
        jq --arg subnet "${cidr_of[$n]}" \
            '.plugins[0].ipam.ranges = [[{subnet: $subnet}]]' hack/cni/10-berth.conflist |
            node_exec -i "$n" sh -c 'cat > /etc/cni/net.d/.10-berth.conflist && mv /etc/cni/net.d/.10-berth.conflist /etc/cni/net.d/10-berth.conflist'
        for other in "${!cidr_of[@]}"; do
            [[ $other == "$n" ]] && continue
            ocidr=${cidr_of[$other]} oip=${ip_of[$other]}
            node_exec "$n" ip route replace "$ocidr" via "$oip"
        done
    done
}

coredns() {
    local kubelet dns_ip domain image
    kubelet=$(kubectl_cmd -n kube-system get configmap kubelet-config -o jsonpath='{.data.kubelet}')
    dns_ip=$(awk '/^clusterDNS:/ { getline; print $2 }' <<<"$kubelet")
    domain=$(awk '/^clusterDomain:/ { print $2 }' <<<"$kubelet")
    image=$(image_ref coredns)
    [[ -n $dns_ip && -n $domain && -n $image ]] || die "cannot read the cluster DNS settings from kubelet-config"
    # shellcheck disable=SC2016 # envsubst's list of variables, literally
    DNS_IP=$dns_ip CLUSTER_DOMAIN=$domain COREDNS_IMAGE=$image \
        envsubst '${DNS_IP} ${CLUSTER_DOMAIN} ${COREDNS_IMAGE}' <hack/cluster/coredns.yaml |
        kubectl_cmd apply -f - >/dev/null
}

up() {
    local image start
    image=$(build)
    mkdir -p "$DIR"
    start=$(date +%s.%N)
    if cluster_exists; then
        log "cluster $NAME exists (hack/kind.sh down removes it)"
    else
        # kind bind-mounts the host's /lib/modules into every node; a kernel with no modules
        # (all built in, as this machine's) has no such dir, and Podman refuses the mount.
        if [[ ! -e /lib/modules ]]; then
            log "creating an empty /lib/modules (kind mounts it into its nodes)"
            mkdir -p /lib/modules
        fi
        log "kind create cluster --name $NAME --image $image"
        local created
        created=$(date +%s.%N)
        kind_cmd create cluster --name "$NAME" --image "$image" --config <(cluster_config) \
            --kubeconfig "$KUBECONFIG_FILE" --retain 2>&1 | tee "$DIR/create.log" >&2 ||
            die "kind create cluster failed (nodes kept for \`kind export logs\`; hack/kind.sh down removes them)"
        log "kind create cluster took $(since "$created") s"
    fi
    network
    coredns
    kubectl_cmd apply -f hack/kind/checkpoint-rbac.yaml >/dev/null
    kubectl_cmd wait --for=condition=Ready node --all --timeout="${READY_TIMEOUT}s" >/dev/null ||
        die "nodes not Ready within ${READY_TIMEOUT}s"
    kubectl_cmd -n kube-system rollout status deployment/coredns --timeout="${READY_TIMEOUT}s" >/dev/null ||
        die "CoreDNS not Ready within ${READY_TIMEOUT}s"
    log "cluster $NAME up in $(since "$start") s"
    kubectl_cmd get nodes -o wide >&2
}

down() {
    if cluster_exists; then
        kind_cmd delete cluster --name "$NAME" --kubeconfig "$KUBECONFIG_FILE" >&2
    fi
    rm -f "$KUBECONFIG_FILE"
    if [[ -n ${DOWN_IMAGE:-} ]]; then
        podman images -q "localhost/$RUNTIME-kind-node" | xargs -r podman rmi -f >/dev/null
    fi
}

env_cmd() {
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
    echo "export PATH=$(tools_path):\$PATH"
    # For kind's own commands (kind get nodes, kind export logs) on these nodes.
    echo "export KIND_EXPERIMENTAL_PROVIDER=podman CONTAINERS_CONF=$CONTAINERS_CONF"
}

test_cmd() {
    cluster_exists || die "no cluster $NAME (hack/kind.sh up)"
    KUBECONFIG=$KUBECONFIG_FILE PATH=$(tools_path):$PATH
    export KUBECONFIG PATH
    local t=(cargo test --locked -p berth-e2e --features cluster --test cluster) failed=0 start
    "${t[@]}" --no-run
    # The tests reach the pods' node through Podman (crictl, cgroups, hostPath dirs, the
    # kubelet's journal: e2e/tests/cluster/node.rs); those that need a node's files pin their
    # pods to the first worker.
    BERTH_E2E_NODE_EXEC="podman exec -i" BERTH_NODE_NAME=$(nodes | grep -m1 -- -worker)
    export BERTH_E2E_NODE_EXEC BERTH_NODE_NAME
    # Every cluster test of hack/cluster-test.sh, then the cross-node ones, then the serial ones
    # alone (they kill a node's berthd, drain a worker, restart berth.service).
    run() {
        start=$(date +%s.%N)
        "${t[@]}" "$@" || failed=1
        PHASES+=("$(printf '%-60s %6s s' "$*" "$(since "$start")")")
    }
    PHASES=()
    run -- --skip serial_ --test-threads=4 --show-output
    run kind_ -- --ignored --skip kind_serial_ --test-threads=2 --show-output
    run serial_ -- --include-ignored --test-threads=1 --show-output
    printf 'kind.sh: %s\n' "${PHASES[@]}" >&2
    # Every test deletes its namespace; none may be left behind.
    if ! kubectl wait --for=delete namespace -l berth-e2e=cluster --timeout=120s >/dev/null 2>&1 &&
        [[ -n $(kubectl get namespaces -l berth-e2e=cluster -o name) ]]; then
        echo "kind.sh: test namespaces left behind" >&2
        failed=1
    fi
    return "$failed"
}

# on_fresh_cluster WHAT: WHAT (a function) on a cluster of its own: one an interrupted run
# left goes first, then up, WHAT, down (also when up or WHAT fails), each timed; the result is
# the worst of the three. Subshells: a failure in one (die) must not skip the others.
on_fresh_cluster() {
    local what=$1 rc=0 t0 t1 t2
    if cluster_exists; then down; fi
    t0=$(date +%s.%N)
    (up) || rc=1
    t1=$(date +%s.%N)
    if ((rc == 0)); then ("$what") || rc=1; fi
    t2=$(date +%s.%N)
    (down) || rc=1
    log "wall times: up (build + create + network + CoreDNS) $(since "$t0" "$t1") s, $what $(since "$t1" "$t2") s, down $(since "$t2") s"
    return "$rc"
}

# chart: the Helm chart for real, on kind's stock runtime. The installer image
# (hack/build-installer-image.sh) goes into every node's containerd (no registry); the last
# worker is drained and labelled; `helm upgrade --install` with that label as nodeSelector and
# kubelet.switchRuntimeEndpoint=true. The installer must leave berth.service active under the
# node's systemd and the kubelet on Berth's socket (the node reports berth://). Berth's store
# on the node then gets the node's images (what `kind load` does for containerd; no registry is
# reachable), the node is uncordoned, and a pod pinned to it must run on Berth, next to the
# chart's own pod, which the kubelet recreated on Berth.
chart_test() {
    local bins root tar ref node n helm t0 runtime cid
    bins=$(berth_bins)
    root=$(debian_root)
    tar=$KCACHE/berth-installer.tar
    ref=$(bash hack/build-installer-image.sh "$tar" "$bins" "$root")
    for n in $(nodes); do
        node_exec -i "$n" ctr --namespace k8s.io images import - <"$tar" >/dev/null
    done
    node=$(nodes | grep -- -worker | tail -n1)
    helm=$(bash hack/k8s/build-helm.sh)
    t0=$(date +%s.%N)
    kubectl_cmd drain "$node" --ignore-daemonsets --delete-emptydir-data --timeout=120s >&2
    kubectl_cmd label node "$node" berth.example/install=true --overwrite >/dev/null
    "$helm" upgrade --install berth charts/berth --namespace kube-system --kubeconfig "$KUBECONFIG_FILE" \
        --set image.repository="${ref%:*}" --set image.tag="${ref##*:}" \
        --set kubelet.switchRuntimeEndpoint=true \
        --set-string 'nodeSelector.berth\.example/install=true' >&2
    log "helm install: waiting for $node's kubelet to report Berth"
    local deadline=$((SECONDS + READY_TIMEOUT))
    until [[ $(kubectl_cmd get node "$node" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}') == berth://* ]]; do
        ((SECONDS < deadline)) || die "$node does not run Berth ${READY_TIMEOUT}s after helm install"
        sleep 2
    done
    [[ $(node_exec "$node" systemctl is-active berth.service) == active ]] || die "berth.service is not active on $node"
    log "$node runs $(kubectl_cmd get node "$node" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}'), $(since "$t0") s after the drain"
    node_exec "$node" berthctl image import /kind/images.tar >/dev/null
    node_exec -i "$node" berthctl image import - <"$tar" >/dev/null
    kubectl_cmd uncordon "$node" >/dev/null
    kubectl_cmd wait --for=condition=Ready "node/$node" --timeout="${READY_TIMEOUT}s" >/dev/null
    kubectl_cmd -n kube-system rollout status daemonset/berth-installer --timeout="${READY_TIMEOUT}s" >&2 ||
        die "the chart's DaemonSet is not ready"
    kubectl_cmd delete pod chart-check --ignore-not-found --wait >/dev/null
    kubectl_cmd run chart-check --image=busybox --image-pull-policy=IfNotPresent --restart=Never \
        --overrides="{\"apiVersion\": \"v1\", \"spec\": {\"nodeName\": \"$node\"}}" \
        --command -- sh -c 'echo hello from a pod on Berth' >/dev/null
    kubectl_cmd wait --for=jsonpath='{.status.phase}'=Succeeded pod/chart-check --timeout=120s >/dev/null ||
        die "the pod on $node did not succeed: $(kubectl_cmd get pod chart-check -o wide)"
    cid=$(kubectl_cmd get pod chart-check -o jsonpath='{.status.containerStatuses[0].containerID}')
    [[ $cid == berth://* ]] || die "the pod on $node ran in $cid, not on Berth"
    [[ $(kubectl_cmd logs chart-check) == "hello from a pod on Berth" ]] || die "the pod's log: $(kubectl_cmd logs chart-check)"
    runtime=$(kubectl_cmd get node "$node" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')
    kubectl_cmd delete pod chart-check --wait=false >/dev/null
    kubectl_cmd get nodes -o wide >&2
    kubectl_cmd -n kube-system get pods -l app.kubernetes.io/name=berth -o wide >&2 || true
    log "chart: ok: helm install put Berth on $node ($runtime, berth.service active under the node's systemd); a pod there ran as $cid"
}

# bench: `up` then `down`, RUNS times per runtime, alternating (the images built first, not
# timed); the medians of `kind create cluster` and of the whole up (to all nodes and CoreDNS
# Ready), side by side.
bench() {
    local rt i log
    declare -A create up
    for rt in berth containerd; do
        bash "$0" build --runtime "$rt" >/dev/null
        bash "$0" down --runtime "$rt" >/dev/null 2>&1 || true
    done
    for ((i = 1; i <= RUNS; i++)); do
        for rt in berth containerd; do
            log=$DIR/bench-$rt-$i.log
            bash "$0" up --runtime "$rt" >"$log" 2>&1 || die "up --runtime $rt failed: $log"
            bash "$0" down --runtime "$rt" >/dev/null 2>&1
            create[$rt]+="$(sed -n 's/^kind.sh: kind create cluster took \([0-9.]*\) s$/\1/p' "$log") "
            up[$rt]+="$(sed -n 's/^kind.sh: cluster .* up in \([0-9.]*\) s$/\1/p' "$log") "
            log "run $i, $rt: kind create cluster $(echo "${create[$rt]}" | awk '{print $NF}') s, up $(echo "${up[$rt]}" | awk '{print $NF}') s"
        done
    done
    median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    printf 'kind, 3 nodes (1 control plane, 2 workers), %s runs each, medians (s):\n' "$RUNS"
    printf '  %-12s %22s %28s\n' runtime "kind create cluster" "up (to nodes + CoreDNS Ready)"
    for rt in berth containerd; do
        printf '  %-12s %22s %28s\n' "$rt" "$(median <<<"${create[$rt]}")" "$(median <<<"${up[$rt]}")"
    done
}

podman_conf
case $CMD in
    build) build ;;
    up) up ;;
    down) down ;;
    bench) bench ;;
    chart)
        [[ $RUNTIME == containerd ]] ||
            die "the chart installs Berth on nodes that lack it: hack/kind.sh chart --runtime containerd"
        on_fresh_cluster chart_test
        ;;
    status) kubectl_cmd get nodes -o wide ;;
    env) env_cmd ;;
    test) test_cmd ;;
    all) on_fresh_cluster test_cmd ;;
    *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2 ;;
esac
