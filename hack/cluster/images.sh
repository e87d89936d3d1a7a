#!/usr/bin/env bash
# Builds the cluster's images offline (umoci + skopeo, no Docker) and pushes them to the
# cluster's local registry, under the paths that hack/cluster.sh's registries.conf maps
# the public names to.
#
#   images.sh REGISTRY COREDNS_BINARY
#
# REGISTRY is host:port of a plain-HTTP registry on loopback, or "-" to only build the OCI
# layout (hack/kind/images.sh takes the images from there). Pushed:
#   REGISTRY/library/busybox:latest      docker.io/library/busybox: Berth's test image
#                                        berth-test/busybox (Debian's busybox-static)
#   REGISTRY/library/nginx:latest        docker.io/library/nginx: that busybox layer + a layer
#                                        with Debian's nginx and the libraries it links
#   REGISTRY/registry.k8s.io/coredns/coredns:vX.Y.Z
#                                        the CoreDNS binary built by hack/k8s/build-tools.sh
#   REGISTRY/registry.k8s.io/pause:3.10.2
#                                        hack/cluster/pause.c, static: the sandbox image of
#                                        the cluster's containerd runs (Berth needs none)
# Prints the CoreDNS image's public name (registry.k8s.io/coredns/coredns:vX.Y.Z) last.
#
# The OCI layout is cached in ${BERTH_CACHE:-~/.cache/berth}/cluster-images (rebuilt when this
# script, the test images, the nginx packages or the CoreDNS binary change); Debian's nginx
# packages are fetched once with `apt-get download` into its debs/ dir.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 REGISTRY COREDNS_BINARY" >&2
    exit 2
fi
REG=$1 COREDNS_BIN=$2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/rootfs.sh
source "$REPO/hack/lib/rootfs.sh"
SELF=$HERE/$(basename "$0")
CACHE=${BERTH_CACHE:-$HOME/.cache/berth}/cluster-images
TEST_IMAGES=${BERTH_TEST_IMAGES:-$REPO/target/test-images}
L=$CACHE/oci
PATHENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

for tool in umoci skopeo jq ldd apt-get dpkg-deb chroot flock cc; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (apt-get install umoci skopeo jq)" >&2; exit 1; }
done
[[ -x $COREDNS_BIN ]] || { echo "$0: no CoreDNS binary at $COREDNS_BIN" >&2; exit 1; }
COREDNS_VERSION=$("$COREDNS_BIN" -version | sed -n 's/^CoreDNS-\([0-9.]*\).*/\1/p' | head -n1)
[[ -n $COREDNS_VERSION ]] || { echo "$0: cannot read the version of $COREDNS_BIN" >&2; exit 1; }
COREDNS_REPO=registry.k8s.io/coredns/coredns
COREDNS_TAG=v$COREDNS_VERSION
PAUSE_REF=registry.k8s.io/pause:3.10.2

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock"
flock 9

"$REPO/hack/build-test-images.sh" "$TEST_IMAGES"

deb_of() { find "$CACHE/debs" -name "$1_*_$2.deb" | sort -V | tail -n1; }
for pa in nginx:amd64 nginx-common:all; do
    p=${pa%:*} arch=${pa#*:}
    if [[ -z $(deb_of "$p" "$arch") ]]; then
        (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$p" >/dev/null) ||
            { echo "$0: 'apt-get download $p' failed; put ${p}_*_$arch.deb into $CACHE/debs" >&2; exit 1; }
    fi
done
NGINX_DEB=$(deb_of nginx amd64)
NGINX_COMMON_DEB=$(deb_of nginx-common all)

STAMP=$(cat "$SELF" "$HERE/pause.c" "$TEST_IMAGES/stamp" "$NGINX_DEB" "$NGINX_COMMON_DEB" "$COREDNS_BIN" | sha256sum | cut -d' ' -f1)
if [[ ! -f $CACHE/stamp || "$(cat "$CACHE/stamp")" != "$STAMP" ]]; then
    rm -f "$CACHE/stamp"
    W=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf "$W"' EXIT
    LN=$W/oci

    # busybox: Berth's test image, byte for byte (same digests as in the e2e tests).
    skopeo copy --quiet --insecure-policy --preserve-digests \
        "oci:$TEST_IMAGES/oci:busybox" "oci:$LN:busybox"

    # nginx: the busybox layer (shared) + Debian's nginx with the host's libraries (same release).
    X=$W/nginx-deb
    dpkg-deb -x "$NGINX_DEB" "$X"
    dpkg-deb -x "$NGINX_COMMON_DEB" "$X"
    umoci unpack --image "$LN:busybox" "$W/nginx"
    R=$W/nginx/rootfs
    mkdir -p "$R/usr/sbin" "$R/etc/nginx/conf.d" \
        "$R/usr/share/nginx/html" "$R/var/log/nginx" "$R/var/lib/nginx" "$R/var/cache/nginx" "$R/run"
    install_with_libs "$X/usr/sbin/nginx" "$R" /usr/sbin/nginx
    cp "$X/etc/nginx/mime.types" "$R/etc/nginx/"
    # The official image's users: nginx (101) runs the workers.
    cat >>"$R/etc/passwd" <<'EOF'
nginx:x:101:101:nginx user:/nonexistent:/bin/false
EOF
    cat >>"$R/etc/group" <<'EOF'
nginx:x:101:
EOF
    cat >"$R/etc/nginx/nginx.conf" <<'EOF'
# Berth cluster test image: Debian's nginx, logging to the container's stdout/stderr.
user nginx;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr notice;
events { worker_connections 512; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
EOF
    cat >"$R/etc/nginx/conf.d/default.conf" <<'EOF'
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name _;
    root /usr/share/nginx/html;
    index index.html;
    location / { try_files $uri $uri/ =404; }
}
EOF
    cat >"$R/usr/share/nginx/html/index.html" <<EOF
<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1><p>Berth cluster image (Debian nginx $(dpkg-deb -f "$NGINX_DEB" Version))</p></body></html>
EOF
    ln -sf /dev/stdout "$R/var/log/nginx/access.log"
    ln -sf /dev/stderr "$R/var/log/nginx/error.log"
    chroot "$R" /usr/sbin/nginx -t -q || { echo "$0: nginx does not run in its image" >&2; exit 1; }
    rm -f "$R/run/nginx.pid"
    umoci repack --image "$LN:nginx" "$W/nginx"
    umoci config --image "$LN:nginx" --config.env "$PATHENV" --clear=config.cmd \
        --config.cmd nginx --config.cmd -g --config.cmd 'daemon off;' \
        --config.stopsignal SIGQUIT --config.exposedports 80/tcp \
        --author "hack/cluster/images.sh (Debian nginx $(dpkg-deb -f "$NGINX_DEB" Version))"

    # coredns: the static binary alone, as the upstream (distroless) image.
    umoci new --image "$LN:coredns"
    umoci unpack --image "$LN:coredns" "$W/coredns"
    install -m 0755 "$COREDNS_BIN" "$W/coredns/rootfs/coredns"
    umoci repack --image "$LN:coredns" "$W/coredns"
    umoci config --image "$LN:coredns" --os linux --architecture amd64 \
        --config.entrypoint /coredns --config.exposedports 53/tcp --config.exposedports 53/udp \
        --config.exposedports 9153/tcp --author "hack/cluster/images.sh (CoreDNS $COREDNS_VERSION)"

    # pause: one static binary, as upstream's image.
    umoci new --image "$LN:pause"
    umoci unpack --image "$LN:pause" "$W/pause"
    cc -static -Os -s -o "$W/pause/rootfs/pause" "$HERE/pause.c" ||
        { echo "$0: cannot build a static pause (apt-get install gcc libc6-dev)" >&2; exit 1; }
    umoci repack --image "$LN:pause" "$W/pause"
    umoci config --image "$LN:pause" --os linux --architecture amd64 --config.entrypoint /pause \
        --config.user 65535:65535 --author "hack/cluster/images.sh (hack/cluster/pause.c)"

    umoci gc --layout "$LN"
    rm -rf "$L"
    mv "$LN" "$L"
    echo "$STAMP" >"$CACHE/stamp"
fi

[[ $REG == - ]] && { echo "$COREDNS_REPO:$COREDNS_TAG"; exit 0; }
# Pushing what the registry has already costs one HEAD per blob.
push() {
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false --preserve-digests \
        "oci:$1:$2" "docker://$REG/$3"
}
push "$L" busybox library/busybox:latest
push "$L" nginx library/nginx:latest
push "$L" coredns "$COREDNS_REPO:$COREDNS_TAG"
push "$L" pause "$PAUSE_REF"
echo "$COREDNS_REPO:$COREDNS_TAG"
