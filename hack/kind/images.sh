#!/usr/bin/env bash
# Builds, offline, every image a kind node on Berth runs, into one OCI layout whose entries are
# named with their full references (org.opencontainers.image.ref.name), for
# `berthctl image import DIR` on the node at boot:
#   registry.k8s.io/kube-apiserver|kube-controller-manager|kube-scheduler:K8S_VERSION
#                                   the static binaries of hack/k8s/build-tools.sh, in /usr/local/bin
#   registry.k8s.io/kube-proxy:K8S_VERSION
#                                   kube-proxy + Debian's iptables (nft) and conntrack with the
#                                   libraries they link, on the busybox layer
#   registry.k8s.io/etcd:<kubeadm's tag>      etcd + etcdctl
#   registry.k8s.io/coredns/coredns, registry.k8s.io/pause, docker.io/library/busybox|nginx
#                                   hack/cluster/images.sh's (the single-node cluster's images)
# The tags are the ones `kubeadm config images list` prints, so kubeadm and the kubelet find
# every image already there and pull nothing (no registry is reachable from a kind node).
#
#   hack/kind/images.sh OUT_DIR
#
# OUT_DIR/oci is the layout; rebuilt when an input changes (OUT_DIR/stamp).
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
OUT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SELF=$HERE/$(basename "$0")
CACHE=${BERTH_CACHE:-$HOME/.cache/berth}
PATHENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# shellcheck source-path=SCRIPTDIR source=../k8s/versions.env
source "$REPO/hack/k8s/versions.env"
# shellcheck source-path=SCRIPTDIR source=../lib/rootfs.sh
source "$REPO/hack/lib/rootfs.sh"

for tool in umoci skopeo jq ldd; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (apt-get install umoci skopeo jq)" >&2; exit 1; }
done
K8S_BIN=$(bash "$REPO/hack/k8s/build-tools.sh" --print-path --only kubelet)
ETCD_BIN=$(bash "$REPO/hack/k8s/build-tools.sh" --print-path --only etcd)
COREDNS_BIN=$(bash "$REPO/hack/k8s/build-tools.sh" --print-path --only coredns)/coredns
for b in "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy,kubeadm} \
    "$ETCD_BIN"/{etcd,etcdctl} "$COREDNS_BIN"; do
    [[ -x $b ]] || { echo "$0: no $b (hack/k8s/build-tools.sh builds it)" >&2; exit 1; }
done
for b in xtables-nft-multi conntrack; do
    command -v "$b" >/dev/null || { echo "$0: missing $b (apt-get install iptables conntrack)" >&2; exit 1; }
done

# The single-node cluster's images (busybox, nginx, coredns, pause), built without a push.
bash "$REPO/hack/cluster/images.sh" - "$COREDNS_BIN" >/dev/null
CL=$CACHE/cluster-images/oci

# kubeadm's own list: what `kubeadm init` and the kubelet will ask Berth for.
mapfile -t WANT < <("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
ref_of() { printf '%s\n' "${WANT[@]}" | grep -m1 "^registry.k8s.io/$1:"; }

STAMP=$(cat "$SELF" "$CACHE/cluster-images/stamp" "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy} \
    "$ETCD_BIN"/{etcd,etcdctl} "$(command -v xtables-nft-multi)" "$(command -v conntrack)" | sha256sum | cut -d' ' -f1)
if [[ -f $OUT/stamp && "$(cat "$OUT/stamp")" == "$STAMP" ]]; then
    exit 0
fi
mkdir -p "$OUT"
rm -f "$OUT/stamp"
W=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$W"' EXIT
LN=$W/oci
umoci init --layout "$LN"

# binaries_image NAME AUTHOR BINARY...: a one-layer image of static binaries in /usr/local/bin.
binaries_image() {
    local name=$1 author=$2 b
    shift 2
    umoci new --image "$LN:$name"
    umoci unpack --image "$LN:$name" "$W/$name"
    mkdir -p "$W/$name/rootfs/usr/local/bin" "$W/$name/rootfs/tmp"
    chmod 1777 "$W/$name/rootfs/tmp"
    for b in "$@"; do install -m 0755 "$b" "$W/$name/rootfs/usr/local/bin/"; done
    umoci repack --image "$LN:$name" "$W/$name"
    umoci config --image "$LN:$name" --os linux --architecture amd64 --config.env "$PATHENV" \
        --author "$author"
}

binaries_image kube-apiserver "hack/kind/images.sh (Kubernetes $K8S_VERSION)" "$K8S_BIN/kube-apiserver"
binaries_image kube-controller-manager "hack/kind/images.sh (Kubernetes $K8S_VERSION)" "$K8S_BIN/kube-controller-manager"
binaries_image kube-scheduler "hack/kind/images.sh (Kubernetes $K8S_VERSION)" "$K8S_BIN/kube-scheduler"
binaries_image etcd "hack/kind/images.sh (etcd $ETCD_VERSION)" "$ETCD_BIN/etcd" "$ETCD_BIN/etcdctl"

# kube-proxy (iptables mode) runs iptables-restore/-save and conntrack: Debian's, with their
# libraries, on the busybox layer (shared with the test images), iptables in nft mode as the
# node's own.
skopeo copy --quiet --insecure-policy --preserve-digests "oci:$CL:busybox" "oci:$LN:kube-proxy"
umoci unpack --image "$LN:kube-proxy" "$W/kube-proxy"
R=$W/kube-proxy/rootfs
install -D -m 0755 "$K8S_BIN/kube-proxy" "$R/usr/local/bin/kube-proxy"
install_with_libs "$(command -v xtables-nft-multi)" "$R"
install_with_libs "$(command -v conntrack)" "$R"
x=$(command -v xtables-nft-multi)
for t in iptables ip6tables; do
    for s in "" -save -restore; do ln -sf "$x" "$R/usr/sbin/$t$s"; done
done
# The match and target extensions iptables loads (comment, conntrack, mark, ...).
xt=/usr/lib/x86_64-linux-gnu/xtables
[[ -d $xt ]] || { echo "$0: no $xt (apt-get install iptables)" >&2; exit 1; }
for f in "$xt"/*.so; do install_with_libs "$f" "$R"; done
umoci repack --image "$LN:kube-proxy" "$W/kube-proxy"
umoci config --image "$LN:kube-proxy" --config.env "$PATHENV" --clear=config.cmd \
    --author "hack/kind/images.sh (Kubernetes $K8S_VERSION, Debian iptables)"
# It must run there, not only here (the ELF interpreter needs its exec bit, for one).
chroot "$R" /usr/sbin/iptables --version >/dev/null ||
    { echo "$0: iptables does not run in the kube-proxy image" >&2; exit 1; }

# One layout, every entry named by its full reference.
name() {
    skopeo copy --quiet --insecure-policy --preserve-digests "oci:$1:$2" "oci:$OUT/.oci.new:$3"
}
rm -rf "$OUT/.oci.new"
name "$LN" kube-apiserver "$(ref_of kube-apiserver)"
name "$LN" kube-controller-manager "$(ref_of kube-controller-manager)"
name "$LN" kube-scheduler "$(ref_of kube-scheduler)"
name "$LN" kube-proxy "$(ref_of kube-proxy)"
name "$LN" etcd "$(ref_of etcd)"
name "$CL" coredns "$(ref_of coredns/coredns)"
name "$CL" pause "$(ref_of pause)"
name "$CL" busybox docker.io/library/busybox:latest
name "$CL" nginx docker.io/library/nginx:latest
rm -rf "$OUT/oci"
mv "$OUT/.oci.new" "$OUT/oci"
echo "$STAMP" >"$OUT/stamp"
