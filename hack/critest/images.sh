#!/usr/bin/env bash
# Builds the images critest (sigs.k8s.io/cri-tools at CRITEST_VERSION, pkg/validate and
# pkg/framework) pulls, offline (umoci + skopeo, no Docker), and pushes them to a local
# plain-HTTP registry under REGISTRY/<public registry host>/<path>, where hack/critest.sh's
# registries.conf sends registry.k8s.io, k8s.gcr.io and gcr.io/k8s-staging-cri-tools.
#
#   images.sh REGISTRY      REGISTRY is host:port of the plain-HTTP registry; prints the
#                           public names pushed, one a line
#   images.sh --list        print those names only
#
# Built on the project's own images, reused as they are: the cluster's busybox, nginx and pause
# (hack/cluster/images.sh, run first: it pushes its own images to REGISTRY too, and needs the
# coredns of hack/k8s/build-tools.sh), and the nonewprivs recipe of hack/conformance/images.sh
# with the same nnp binary (build-tools' nnp). Not the conformance e2e-busybox: its /bin/sh is
# bash, and the MaskedPaths spec compares the shell's own error text ("/bin/sh: ls: Permission
# denied" from busybox ash, "/bin/sh: line 1: /bin/ls: Permission denied" from bash). What each
# stand-in is, and how it differs from upstream's image (only what a critest spec checks has to
# be faithful):
#
#   registry.k8s.io/e2e-test-images/busybox:1.29-2
#       critest's default image (most specs). The cluster busybox's layer, then Debian's glibc
#       busybox 1.35 (package busybox, with its libraries) as /bin/busybox and every applet a
#       hard link to it in /bin, as in upstream's image: the MaskedPaths spec masks /bin/ls and
#       expects `sh -c ls` to fail with exactly "/bin/sh: ls: Permission denied", which needs an
#       ash that execs /bin/ls (busybox-static's runs applets in-process, so nothing fails) and a
#       /bin/ls that is not a symlink (masking a symlink to busybox masks busybox). Plus the host's
#       pgrep (procps) and ipcs (util-linux) with their libraries: Debian's busybox has neither
#       applet, and the execSync-timeout spec runs `pgrep sleep`, the HostIpc specs `ipcs -m`.
#   registry.k8s.io/e2e-test-images/nginx:1.14-2
#       The cluster nginx: Debian's nginx on the busybox layer, on :80, plus /var/run -> /run so
#       its pid file is /var/run/nginx.pid (the HostPID spec reads it there); its master shows
#       "nginx: master process" in /proc/1/cmdline (the PID specs grep for it).
#   gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest
#       That nginx with upstream's server config: listening on :12003 only (host-network
#       port-forward spec). Upstream: the official nginx:1.25.0 image.
#   registry.k8s.io/e2e-test-images/httpd:2.4.39-4
#       The cluster busybox + an httpd-foreground script that prints a start line naming httpd
#       (the multi-container log spec looks for "httpd" in the log) and runs busybox httpd on
#       :80 for /usr/local/apache2/htdocs (an index.html: the network spec wants 200 on /).
#       Upstream: Apache httpd 2.4.39, whose start-up messages name httpd.
#   registry.k8s.io/e2e-test-images/nonewprivs:1.3
#       As test/images/nonewprivs (and hack/conformance/images.sh's 1.4): busybox + the setuid
#       root /usr/local/bin/nnp of k8s.io/kubernetes (prints "Effective uid: N"), CMD nnp.
#   registry.k8s.io/pause:3.9, k8s.gcr.io/pause:3.9
#       One image (same digest) under both names, as upstream: the cluster's pause
#       (hack/cluster/pause.c) with another config label. The "removing image from one registry"
#       spec needs the two names to be one image.
#   gcr.io/k8s-staging-cri-tools/test-image-{latest:latest,tag:test,tag:all,1:latest,2:latest,
#   3:latest,tags:1,tags:2,tags:3}
#       As upstream's images/image-test (busybox + one file named after the image, ADDed at /):
#       the cluster busybox + a layer with busybox's users (below) and the file /<name>, so every
#       name has its own digest except test-image-tags:1/2/3, one image with three tags. The
#       image-volume specs run /bin/ls of the volume (busybox's applets link to /bin/busybox
#       relatively, so it runs from the volume) and read /etc/passwd.
#   gcr.io/k8s-staging-cri-tools/test-image-user-{uid,username,uid-group,username-group}:latest
#       As images/image-user (busybox + USER): USER 1002, www-data, 1003:users, www-data:users.
#       ImageStatus must report uid 1002 / username www-data / uid 1003 / username www-data.
#       (Upstream's exact group in the two -group images is not known here; no spec reads it.)
#   gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest
#       As images/image-predefined-group: user default-user 1000 (group 1000) also in
#       group-defined-in-image 50000, USER 1000 (the SupplementalGroupsPolicy specs expect
#       `id -G` to give "1000 <supplemental> 50000" with Merge and no 50000 with Strict).
#
#   The test images' /etc/passwd and /etc/group are those of upstream busybox's base (root,
#   daemon, www-data 33, nobody; groups root, daemon, www-data 33, users 100, nogroup) instead of
#   Berth's test user; the cluster busybox is Debian's busybox-static 1.35, upstream's 1.37.
#
# Not built: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2... (a digest of
# upstream's own build, which no offline build can reproduce: hack/critest/skip.txt), the
# Windows images, and public.ecr.aws/docker/library/busybox:* (the benchmarks only).
#
# The layout is cached in $BERTH_CACHE/critest-images/oci and rebuilt when this script, an input
# image or a host binary copied in changes.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SELF=$HERE/$(basename "$0")
CACHE_ROOT=${BERTH_CACHE:-$HOME/.cache/berth}
CACHE=$CACHE_ROOT/critest-images
CLUSTER_L=$CACHE_ROOT/cluster-images/oci
K8S_TOOLS=${BERTH_K8S_TOOLS:-$REPO/hack/k8s/build-tools.sh}
L=$CACHE/oci
E2E=registry.k8s.io/e2e-test-images
STAGING=gcr.io/k8s-staging-cri-tools

# REF<TAB>PUBLIC NAME: what is pushed (the layout's ref names).
IMAGES="busybox	$E2E/busybox:1.29-2
nginx	$E2E/nginx:1.14-2
hostnet-nginx	$STAGING/hostnet-nginx-amd64:latest
httpd	$E2E/httpd:2.4.39-4
nonewprivs	$E2E/nonewprivs:1.3
pause	registry.k8s.io/pause:3.9
pause	k8s.gcr.io/pause:3.9
test-image-latest	$STAGING/test-image-latest:latest
test-image-tag-test	$STAGING/test-image-tag:test
test-image-tag-all	$STAGING/test-image-tag:all
test-image-1	$STAGING/test-image-1:latest
test-image-2	$STAGING/test-image-2:latest
test-image-3	$STAGING/test-image-3:latest
test-image-tags	$STAGING/test-image-tags:1
test-image-tags	$STAGING/test-image-tags:2
test-image-tags	$STAGING/test-image-tags:3
test-image-user-uid	$STAGING/test-image-user-uid:latest
test-image-user-username	$STAGING/test-image-user-username:latest
test-image-user-uid-group	$STAGING/test-image-user-uid-group:latest
test-image-user-username-group	$STAGING/test-image-user-username-group:latest
test-image-predefined-group	$STAGING/test-image-predefined-group:latest"

if [[ ${1:-} == --list ]]; then
    cut -f2 <<<"$IMAGES"
    exit 0
fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 REGISTRY | --list" >&2
    exit 2
fi
REG=$1
die() {
    echo "critest/images.sh: $*" >&2
    exit 1
}

for tool in umoci skopeo jq ldd flock chroot unshare sha256sum apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install umoci skopeo jq)"
done
# The host binaries copied into the default image.
HOST_BINS=(/usr/bin/pgrep /usr/bin/ipcs)
for bin in "${HOST_BINS[@]}"; do
    [[ -x $bin ]] || die "missing $bin (apt-get install procps util-linux)"
done

# The project's images this one is built on (cached; the script pushes its own images too), and
# the Go binaries: coredns for those, nnp for nonewprivs.
bash "$K8S_TOOLS" --only coredns nnp >&2 || die "$K8S_TOOLS --only coredns nnp failed"
IFS=: read -r -a TOOL_DIRS <<<"$(bash "$K8S_TOOLS" --print-path --only coredns nnp)"
COREDNS_BIN='' NNP_BIN=''
for dir in "${TOOL_DIRS[@]}"; do
    [[ -x $dir/coredns ]] && COREDNS_BIN=$dir/coredns
    [[ -x $dir/nnp ]] && NNP_BIN=$dir/nnp
done
[[ -n $COREDNS_BIN && -n $NNP_BIN ]] || die "$K8S_TOOLS built no coredns or nnp"
"$REPO/hack/cluster/images.sh" "$REG" "$COREDNS_BIN" >/dev/null || die "hack/cluster/images.sh failed"
[[ -f $CLUSTER_L/index.json ]] || die "no cluster image layout in $CLUSTER_L"

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock"
flock 9

# Debian's glibc busybox (the host has busybox-static, which conflicts with it: only fetched).
deb_of() { find "$CACHE/debs" -name "$1_*_amd64.deb" | sort -V | tail -n1; }
if [[ -z $(deb_of busybox) ]]; then
    (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root busybox >/dev/null) ||
        die "'apt-get download busybox' failed; put busybox_*_amd64.deb into $CACHE/debs"
fi
BUSYBOX_DEB=$(deb_of busybox)

# Libraries of the host binaries, as ldd resolves them (one path a line).
host_libs() {
    ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u
}
STAMP=$( (cat "$SELF" "$CLUSTER_L/index.json" "$NNP_BIN" "$BUSYBOX_DEB" "${HOST_BINS[@]}"
    host_libs "${HOST_BINS[@]}" | xargs cat) | sha256sum | cut -d' ' -f1)
if [[ ! -f $CACHE/stamp || "$(cat "$CACHE/stamp")" != "$STAMP" ]]; then
    rm -f "$CACHE/stamp"
    W=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf "$W"' EXIT
    LN=$W/oci

    # from LAYOUT REF NEW: a copy of an image of another layout (blobs shared by digest).
    from() { skopeo copy --quiet --insecure-policy --preserve-digests "oci:$1:$2" "oci:$LN:$3"; }
    derive() { skopeo copy --quiet --insecure-policy "oci:$LN:$2" "oci:$LN:$1"; }
    # unpack REF: unpacks REF's rootfs to change it (prints its path); repack REF: one new layer
    # with the changes.
    unpack() {
        umoci unpack --image "$LN:$1" "$W/bundle-$1" >/dev/null
        echo "$W/bundle-$1/rootfs"
    }
    repack() { umoci repack --image "$LN:$1" "$W/bundle-$1"; }
    label() { umoci config --image "$LN:$1" --config.label "io.berth.critest.image=$2"; }

    for ref in busybox nginx pause; do
        from "$CLUSTER_L" "$ref" "cluster-$ref"
    done

    # busybox:1.29-2: Debian's glibc busybox, applets hard-linked in /bin, + pgrep and ipcs.
    derive busybox cluster-busybox
    R=$(unpack busybox)
    dpkg-deb -x "$BUSYBOX_DEB" "$W/busybox-deb"
    find "$R" -type l -lname '*busybox' -delete
    install -m 0755 "$W/busybox-deb/bin/busybox" "$R/bin/busybox"
    mkdir -p "$R/usr/bin" "$R/lib/x86_64-linux-gnu" "$R/lib64"
    install -m 0755 "${HOST_BINS[@]}" "$R/usr/bin/"
    { host_libs "${HOST_BINS[@]}"; host_libs "$W/busybox-deb/bin/busybox"; } | sort -u | while read -r lib; do
        case $lib in
            */ld-linux-x86-64.so.2) cp -L "$lib" "$R/lib64/ld-linux-x86-64.so.2" ;;
            *) cp -L "$lib" "$R/lib/x86_64-linux-gnu/" ;;
        esac
    done
    for applet in $(chroot "$R" /bin/busybox --list); do
        [[ -e $R/bin/$applet ]] || ln "$R/bin/busybox" "$R/bin/$applet"
    done
    ln "$R/bin/busybox" "$R/usr/bin/env"
    # Each added tool runs in the image (127: no binary, or the loader found no library).
    for tool in "pgrep -V" "ipcs -V" "ls /"; do
        rc=0
        timeout 10 chroot "$R" /bin/sh -c "$tool" </dev/null >/dev/null 2>&1 || rc=$?
        ((rc == 0)) || die "'$tool' does not run in the busybox image (exit $rc)"
    done
    # What the MaskedPaths spec checks, with /bin/ls masked as a runtime masks it.
    out=$(unshare -m sh -c "mount --bind /dev/null '$R/bin/ls' && chroot '$R' /bin/sh -c ls 2>&1 >/dev/null" || true)
    [[ $out == "/bin/sh: ls: Permission denied" ]] ||
        die "the busybox image's sh runs a masked /bin/ls: '$out'"
    repack busybox
    label busybox "$E2E/busybox:1.29-2"

    # nginx:1.14-2: the cluster nginx with /var/run -> /run.
    derive nginx cluster-nginx
    R=$(unpack nginx)
    rm -rf "$R/var/run"
    ln -s /run "$R/var/run"
    repack nginx
    label nginx "$E2E/nginx:1.14-2"

    # hostnet-nginx-amd64: that nginx, serving on :12003 only.
    derive hostnet-nginx nginx
    R=$(unpack hostnet-nginx)
    cat >"$R/etc/nginx/conf.d/default.conf" <<'EOF'
# hack/critest/images.sh: cri-tools' hostnet-nginx listens on 12003 only (host network specs).
server {
    listen 12003;
    server_name localhost;
    root /usr/share/nginx/html;
    index index.html;
    location / { try_files $uri $uri/ =404; }
}
EOF
    chroot "$R" /usr/sbin/nginx -t -q || die "nginx does not run in the hostnet-nginx image"
    rm -f "$R/run/nginx.pid"
    repack hostnet-nginx
    umoci config --image "$LN:hostnet-nginx" --clear=config.exposedports --config.exposedports 12003/tcp
    label hostnet-nginx "$STAGING/hostnet-nginx-amd64"

    # httpd:2.4.39-4: busybox httpd behind an httpd-foreground that names itself on start.
    derive httpd cluster-busybox
    R=$(unpack httpd)
    mkdir -p "$R/usr/local/bin" "$R/usr/local/apache2/htdocs" "$R/usr/local/apache2/logs"
    cat >"$R/usr/local/bin/httpd-foreground" <<'EOF'
#!/bin/sh
# hack/critest/images.sh: stands in for Apache httpd 2.4.39 (busybox httpd, same port and docroot).
echo "httpd-foreground: busybox httpd (stand-in for httpd 2.4.39) serving /usr/local/apache2/htdocs on :80" >&2
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
EOF
    echo '<html><body><h1>It works!</h1></body></html>' >"$R/usr/local/apache2/htdocs/index.html"
    chmod 0755 "$R/usr/local/bin/httpd-foreground"
    repack httpd
    umoci config --image "$LN:httpd" --clear=config.cmd --config.cmd httpd-foreground \
        --config.workingdir /usr/local/apache2 --config.exposedports 80/tcp \
        --config.env PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    label httpd "$E2E/httpd:2.4.39-4"

    derive nonewprivs cluster-busybox
    R=$(unpack nonewprivs)
    mkdir -p "$R/usr/local/bin"
    install -m 4755 "$NNP_BIN" "$R/usr/local/bin/nnp"
    repack nonewprivs
    umoci config --image "$LN:nonewprivs" --clear=config.cmd --config.cmd nnp
    label nonewprivs "$E2E/nonewprivs:1.3"

    derive pause cluster-pause
    label pause "registry.k8s.io/pause:3.9"

    # The cri-tools test images: busybox + upstream busybox's users + their own files.
    # test_image REF NAME USER [EXTRA-PASSWD EXTRA-GROUP]: NAME's file at /NAME.
    test_image() {
        local ref=$1 name=$2 user=$3 passwd=${4:-} group=${5:-}
        derive "$ref" cluster-busybox
        local R
        R=$(unpack "$ref")
        {
            echo 'root:x:0:0:root:/root:/bin/sh'
            echo 'daemon:x:1:1:daemon:/usr/sbin:/bin/false'
            echo 'www-data:x:33:33:www-data:/var/www:/bin/false'
            [[ -z $passwd ]] || echo "$passwd"
            echo 'nobody:x:65534:65534:nobody:/home:/bin/false'
        } >"$R/etc/passwd"
        {
            echo 'root:x:0:'
            echo 'daemon:x:1:'
            echo 'www-data:x:33:'
            echo 'users:x:100:'
            [[ -z $group ]] || printf '%s\n' "$group"
            echo 'nogroup:x:65534:'
        } >"$R/etc/group"
        echo "$name" >"$R/$name"
        chmod 0644 "$R/$name"
        if [[ -n $passwd ]]; then
            local home
            home=$(cut -d: -f6 <<<"$passwd")
            mkdir -p "$R$home"
            chown "$(cut -d: -f3,4 <<<"$passwd")" "$R$home"
        fi
        repack "$ref"
        local args=(--config.label "io.berth.critest.image=$STAGING/$name")
        [[ -z $user ]] || args+=(--config.user "$user")
        umoci config --image "$LN:$ref" "${args[@]}"
    }
    test_image test-image-latest test-image-latest ""
    test_image test-image-tag-test test-image-tag-test ""
    test_image test-image-tag-all test-image-tag-all ""
    for n in 1 2 3; do test_image "test-image-$n" "test-image-$n" ""; done
    test_image test-image-tags test-image-tags ""
    test_image test-image-user-uid test-image-user-uid 1002
    test_image test-image-user-username test-image-user-username www-data
    test_image test-image-user-uid-group test-image-user-uid-group 1003:users
    test_image test-image-user-username-group test-image-user-username-group www-data:users
    test_image test-image-predefined-group test-image-predefined-group 1000 \
        'default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh' \
        "$(printf '%s\n' 'default-user:x:1000:' 'group-defined-in-image:x:50000:default-user')"

    # Only what is pushed stays in the layout.
    for ref in cluster-busybox cluster-nginx cluster-pause; do
        umoci rm --image "$LN:$ref"
    done
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
