#!/usr/bin/env bash
# Builds the test images Kubernetes' conformance suites ask for (test/utils/image/manifest.go),
# offline (umoci + skopeo, no Docker), and pushes them to the cluster's local registry under
# REGISTRY/registry.k8s.io/..., where berthd's registries.conf and containerd's hosts.toml
# (hack/cluster.sh) send registry.k8s.io.
#
#   images.sh REGISTRY      REGISTRY is host:port of the cluster's plain-HTTP registry
#   images.sh --list        print the public names this script provides, one a line
#
# Built from what the project already has: the cluster's busybox and nginx images
# (hack/cluster/images.sh, in $BERTH_CACHE/cluster-images), busybox's release source
# (hack/conformance/busybox.sh), Go binaries built from the
# k8s.io/kubernetes module by hack/k8s/build-tools.sh, and Debian packages (dig, nc, curl, ...)
# with their libraries, as hack/cluster/images.sh does for nginx:
#
#   e2e-test-images/busybox:1.37.0-2  e2e-busybox: the cluster's busybox image with busybox 1.37.0
#   e2e-test-images/busybox:1.36.1-1    built as upstream's (busybox.sh: defconfig, static) and its
#                                       applets in /bin, getent and an /etc/os-release; the base of
#                                       all the images below; 1.36.1-1 is the same with another
#                                       config label (another image ID, as upstream's: specs that
#                                       switch a container between the two see a new image)
#   e2e-test-images/agnhost:2.66.1    e2e-busybox + agnhost (test/images/agnhost) + bash, curl, dig,
#   e2e-test-images/agnhost:2.55        nc (OpenBSD), socat, ss, ipcs, coredns, porter's certificate,
#                                       /uploads, the users/groups its Dockerfile adds; 2.55 is
#                                       the same with another config label (another image ID)
#   e2e-test-images/glibc-dns-testing:2.1.1
#                                     e2e-busybox + Debian's dig, nslookup (glibc) + coredns
#   e2e-test-images/kitten:1.8        agnhost + its picture and data.json (test/images/kitten)
#   e2e-test-images/nautilus:1.8      the same for nautilus
#   e2e-test-images/nginx:1.27.0-2    the cluster's nginx (Debian's)
#   e2e-test-images/nginx:1.28.0-2      ... with another config label
#   e2e-test-images/nonewprivs:1.4    e2e-busybox + setuid /usr/local/bin/nnp (test/images/nonewprivs)
#   e2e-test-images/nonroot:1.5       e2e-busybox with user 1234
#   e2e-test-images/sample-apiserver:1.29.2
#                                     e2e-busybox + /sample-apiserver (k8s.io/sample-apiserver of
#                                       the Kubernetes release)
#   etcd:3.7.0-0                      e2e-busybox + /usr/local/bin/etcd, etcdctl (build-tools' etcd)
#
# Not built (hack/conformance/README.md lists the specs that need them): the node-perf
# workloads, perl, resource-consumer, ipc-utils, apparmor-loader,
# regression-issue-74839, volume/nfs and volume/iscsi, the sig-storage CSI sidecars,
# distroless-iptables, and the private gcr.io/k8s-authenticated-test/agnhost:2.6.
#
# The layout is cached in $BERTH_CACHE/conformance-images (rebuilt when an input changes);
# Debian packages are fetched once with `apt-get download` into its debs/ dir.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SELF=$HERE/$(basename "$0")
CACHE_ROOT=${BERTH_CACHE:-$HOME/.cache/berth}
CACHE=$CACHE_ROOT/conformance-images
BASE=$CACHE_ROOT/cluster-images/oci
K8S_TOOLS=${BERTH_K8S_TOOLS:-$REPO/hack/k8s/build-tools.sh}
L=$CACHE/oci
PATHENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
E2E=registry.k8s.io/e2e-test-images

# REF<TAB>PUBLIC NAME: what is pushed (the layout's ref names).
IMAGES="agnhost	$E2E/agnhost:2.66.1
agnhost-prev	$E2E/agnhost:2.55
e2e-busybox	$E2E/busybox:1.37.0-2
e2e-busybox-prev	$E2E/busybox:1.36.1-1
glibc-dns-testing	$E2E/glibc-dns-testing:2.1.1
kitten	$E2E/kitten:1.8
nautilus	$E2E/nautilus:1.8
nginx	$E2E/nginx:1.27.0-2
nginx-new	$E2E/nginx:1.28.0-2
nonewprivs	$E2E/nonewprivs:1.4
nonroot	$E2E/nonroot:1.5
sample-apiserver	$E2E/sample-apiserver:1.29.2
etcd	registry.k8s.io/etcd:3.7.0-0"

if [[ ${1:-} == --list ]]; then
    cut -f2 <<<"$IMAGES"
    exit 0
fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 REGISTRY | --list" >&2
    exit 2
fi
REG=$1

for tool in umoci skopeo jq ldd apt-get dpkg-deb flock; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (apt-get install umoci skopeo jq)" >&2; exit 1; }
done
[[ -f $BASE/index.json ]] ||
    { echo "$0: no cluster images in $BASE (hack/cluster.sh up builds them)" >&2; exit 1; }

TOOLS=(agnhost nnp sample-apiserver etcd etcdctl coredns)
bash "$K8S_TOOLS" --only "${TOOLS[@]}" >&2 || { echo "$0: $K8S_TOOLS failed" >&2; exit 1; }
declare -A BIN
IFS=: read -r -a dirs <<<"$(bash "$K8S_TOOLS" --print-path --only "${TOOLS[@]}")"
for tool in "${TOOLS[@]}"; do
    for dir in "${dirs[@]}"; do
        [[ -x $dir/$tool ]] && BIN[$tool]=$dir/$tool && break
    done
    [[ -n ${BIN[$tool]:-} ]] || { echo "$0: $K8S_TOOLS built no $tool" >&2; exit 1; }
done
BUSYBOX=$(bash "$HERE/busybox.sh") || { echo "$0: $HERE/busybox.sh failed" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR/../k8s
source "$(dirname "$K8S_TOOLS")/versions.env"
K8S_MOD=$CACHE_ROOT/go/pkg/mod/k8s.io/kubernetes@$K8S_VERSION
[[ -f $K8S_MOD/test/images/agnhost/porter/localhost.crt ]] ||
    { echo "$0: no k8s.io/kubernetes module source at '$K8S_MOD'" >&2; exit 1; }

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock"
flock 9

# Debian packages the host lacks for dig and OpenBSD nc; the rest of their libraries come from
# the host (same release), as hack/cluster/images.sh does for nginx.
DEBS=(bind9-dnsutils bind9-libs libjemalloc2 libprotobuf-c1 libfstrm0 liblmdb0 libmaxminddb0 netcat-openbsd socat libwrap0)
for p in "${DEBS[@]}"; do
    if [[ -z $(find "$CACHE/debs" -name "${p}_*.deb" | head -n1) ]]; then
        (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$p" >/dev/null) ||
            { echo "$0: 'apt-get download $p' failed; put ${p}_*.deb into $CACHE/debs" >&2; exit 1; }
    fi
done

STAMP=$( (cat "$SELF" "$BASE/index.json" "$BUSYBOX" /usr/bin/curl /usr/bin/bash /usr/bin/ss /usr/bin/ipcs /usr/bin/getent
    for tool in "${TOOLS[@]}"; do cat "${BIN[$tool]}"; done
    find "$CACHE/debs" -name '*.deb' | sort | xargs cat) | sha256sum | cut -d' ' -f1)
if [[ ! -f $CACHE/stamp || "$(cat "$CACHE/stamp")" != "$STAMP" ]]; then
    rm -f "$CACHE/stamp"
    W=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf "$W"' EXIT
    LN=$W/oci
    X=$W/debs
    for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$X"; done

    # with_libs ROOTFS BINARY...: copies each binary's shared libraries (the extracted packages'
    # first, then the host's) into ROOTFS. (ldd names each file on a line "PATH:" of its own.)
    with_libs() {
        local root=$1 lib
        shift
        mkdir -p "$root/lib/x86_64-linux-gnu" "$root/lib64"
        LD_LIBRARY_PATH=$X/usr/lib/x86_64-linux-gnu:$X/lib/x86_64-linux-gnu ldd "$@" |
            awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u |
            while read -r lib; do
                case $lib in
                    */ld-linux-x86-64.so.2) cp -L "$lib" "$root/lib64/ld-linux-x86-64.so.2" ;;
                    *) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
                esac
            done
    }
    # derive NEW FROM: a copy of FROM's ref to add a layer to.
    derive() { skopeo copy --quiet --insecure-policy "oci:$LN:$2" "oci:$LN:$1"; }
    for ref in busybox nginx; do
        skopeo copy --quiet --insecure-policy --preserve-digests "oci:$BASE:$ref" "oci:$LN:$ref"
    done

    # e2e-busybox: the base of every image below, with upstream's busybox (busybox.sh says
    # where Debian's differs): its applets replace the cluster image's, all in /bin.
    derive e2e-busybox busybox
    umoci unpack --image "$LN:e2e-busybox" "$W/e2e-busybox"
    R=$W/e2e-busybox/rootfs
    find "$R/bin" "$R/sbin" "$R/usr/bin" "$R/usr/sbin" -maxdepth 1 \( -name busybox -o -lname busybox \
        -o -lname '*/busybox' \) -delete 2>/dev/null || true
    install -m 0755 "$BUSYBOX" "$R/bin/busybox"
    "$BUSYBOX" --list | while read -r applet; do
        [[ -e $R/bin/$applet || -L $R/bin/$applet ]] || ln -s busybox "$R/bin/$applet"
    done
    # getent (Alpine has it, busybox not): the DNS specs check /etc/hosts entries with it.
    mkdir -p "$R/usr/bin"
    install -m 0755 /usr/bin/getent "$R/usr/bin/getent"
    with_libs "$R" "$R/usr/bin/getent"
    # Upstream's images are Alpine-based and the ImageVolume specs read an image's os-release
    # through the volume, expecting the name of that base.
    cat >"$R/etc/os-release" <<'EOF'
NAME="Berth e2e test image"
ID=berth-e2e
PRETTY_NAME="Berth e2e test image (busybox 1.37.0, Debian 12's getent), standing in for the Alpine Linux base of upstream's e2e-test-images"
HOME_URL="https://github.com/kubernetes/kubernetes/tree/master/test/images"
EOF
    chroot "$R" /bin/sh -c 'command -v nmeter >/dev/null && getent passwd root >/dev/null' ||
        { echo "$0: busybox or getent does not run in the e2e busybox image" >&2; exit 1; }
    umoci repack --image "$LN:e2e-busybox" "$W/e2e-busybox"
    derive e2e-busybox-prev e2e-busybox
    umoci config --image "$LN:e2e-busybox-prev" --config.label io.berth.e2e.tag=1.36.1-1

    # agnhost: as its Dockerfile (alpine + packages), from e2e-busybox + Debian's equivalents.
    derive agnhost e2e-busybox
    umoci unpack --image "$LN:agnhost" "$W/agnhost"
    R=$W/agnhost/rootfs
    mkdir -p "$R/usr/bin" "$R/uploads"
    install -m 0755 "${BIN[agnhost]}" "$R/agnhost"
    ln -s agnhost "$R/agnhost-2"
    install -m 0755 "${BIN[coredns]}" "$R/coredns"
    install -m 0644 "$K8S_MOD/test/images/agnhost/porter/localhost.crt" "$R/localhost.crt"
    install -m 0644 "$K8S_MOD/test/images/agnhost/porter/localhost.key" "$R/localhost.key"
    rm -f "$R/bin/nc" "$R/bin/ss" "$R/bin/nslookup"
    install -m 0755 "$X/usr/bin/dig" "$X/usr/bin/nslookup" "$R/usr/bin/"
    install -m 0755 "$X/bin/nc.openbsd" "$R/usr/bin/nc"
    install -m 0755 "$X/usr/bin/socat" "$R/usr/bin/socat"
    install -m 0755 /usr/bin/curl /usr/bin/ss /usr/bin/ipcs /usr/bin/bash "$R/usr/bin/"
    ln -s ../usr/bin/bash "$R/bin/bash"
    with_libs "$R" "$R/usr/bin/bash" "$R/usr/bin/dig" "$R/usr/bin/nslookup" "$R/usr/bin/nc" "$R/usr/bin/socat" "$R/usr/bin/curl" "$R/usr/bin/ss" "$R/usr/bin/ipcs"
    # curl verifies TLS against the host's CA bundle.
    mkdir -p "$R/etc/ssl/certs"
    cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/" 2>/dev/null || true
    # Its Dockerfile: user-defined-in-image (1000) in group-defined-in-image (50000).
    sed -i '/:1000:/d' "$R/etc/passwd" "$R/etc/group"
    echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$R/etc/passwd"
    printf '%s\n' 'user-defined-in-image:x:1000:' 'group-defined-in-image:x:50000:user-defined-in-image' >>"$R/etc/group"
    mkdir -p "$R/home/user-defined-in-image"
    chown 1000:1000 "$R/home/user-defined-in-image"
    # Each tool runs in the image (127: the loader found no library or no binary).
    for tool in dig nslookup nc socat curl ss ipcs bash; do
        rc=0
        timeout 10 chroot "$R" /bin/sh -c "$tool --help" </dev/null >/dev/null 2>&1 || rc=$?
        ((rc != 127)) || { echo "$0: $tool does not run in the agnhost image" >&2; exit 1; }
    done
    umoci repack --image "$LN:agnhost" "$W/agnhost"
    umoci config --image "$LN:agnhost" --config.env "$PATHENV" --clear=config.cmd \
        --config.entrypoint /agnhost --config.cmd pause \
        --config.exposedports 80/tcp --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
        --config.exposedports 9376/tcp --config.exposedports 5000/tcp \
        --author "hack/conformance/images.sh (agnhost of k8s.io/kubernetes)"
    derive agnhost-prev agnhost
    umoci config --image "$LN:agnhost-prev" --config.label io.berth.e2e.tag=2.55

    # kitten, nautilus: agnhost + a picture and its data.json at /, serving them (their Dockerfiles).
    for pet in kitten nautilus; do
        derive "$pet" agnhost
        umoci unpack --image "$LN:$pet" "$W/$pet"
        install -m 0644 "$K8S_MOD/test/images/$pet/html/$pet.jpg" "$K8S_MOD/test/images/$pet/html/data.json" \
            "$W/$pet/rootfs/"
        umoci repack --image "$LN:$pet" "$W/$pet"
        umoci config --image "$LN:$pet" --clear=config.cmd --config.cmd test-webserver
    done

    # glibc-dns-testing: Debian with dnsutils and coredns (its Dockerfile), the DNS specs' second
    # querier: e2e-busybox + Debian's dig and nslookup (glibc) + the coredns binary.
    derive glibc-dns-testing e2e-busybox
    umoci unpack --image "$LN:glibc-dns-testing" "$W/glibc-dns"
    R=$W/glibc-dns/rootfs
    mkdir -p "$R/usr/bin"
    rm -f "$R/bin/nslookup"
    install -m 0755 "$X/usr/bin/dig" "$X/usr/bin/nslookup" "$R/usr/bin/"
    with_libs "$R" "$R/usr/bin/dig" "$R/usr/bin/nslookup"
    install -m 0755 "${BIN[coredns]}" "$R/coredns"
    umoci repack --image "$LN:glibc-dns-testing" "$W/glibc-dns"

    derive nginx-new nginx
    umoci config --image "$LN:nginx-new" --config.label io.berth.e2e.tag=1.28.0-2

    derive nonewprivs e2e-busybox
    umoci unpack --image "$LN:nonewprivs" "$W/nnp"
    mkdir -p "$W/nnp/rootfs/usr/local/bin"
    install -m 4755 "${BIN[nnp]}" "$W/nnp/rootfs/usr/local/bin/nnp"
    umoci repack --image "$LN:nonewprivs" "$W/nnp"
    umoci config --image "$LN:nonewprivs" --clear=config.cmd --config.cmd nnp

    derive nonroot e2e-busybox
    umoci config --image "$LN:nonroot" --config.user 1234

    derive sample-apiserver e2e-busybox
    umoci unpack --image "$LN:sample-apiserver" "$W/sample"
    install -m 0755 "${BIN[sample-apiserver]}" "$W/sample/rootfs/sample-apiserver"
    umoci repack --image "$LN:sample-apiserver" "$W/sample"
    umoci config --image "$LN:sample-apiserver" --clear=config.cmd --config.entrypoint /sample-apiserver

    derive etcd e2e-busybox
    umoci unpack --image "$LN:etcd" "$W/etcd"
    mkdir -p "$W/etcd/rootfs/usr/local/bin"
    install -m 0755 "${BIN[etcd]}" "${BIN[etcdctl]}" "$W/etcd/rootfs/usr/local/bin/"
    umoci repack --image "$LN:etcd" "$W/etcd"
    umoci config --image "$LN:etcd" --clear=config.cmd --config.cmd /usr/local/bin/etcd

    umoci gc --layout "$LN"
    rm -rf "$L"
    mv "$LN" "$L"
    echo "$STAMP" >"$CACHE/stamp"
fi

# Pushing what the registry has already costs one HEAD per blob.
while IFS=$'\t' read -r ref name; do
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false --preserve-digests \
        "oci:$L:$ref" "docker://$REG/$name"
done <<<"$IMAGES"
cut -f2 <<<"$IMAGES"
