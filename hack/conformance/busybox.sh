#!/usr/bin/env bash
# Builds busybox from its release source the way upstream's busybox image is built (its
# defconfig, statically linked), for the conformance suites' busybox-based test images
# (hack/conformance/images.sh). Debian 12's busybox-static (1.35, Debian's config) differs
# where the suites look: its ash words errors otherwise ("/bin/sh: line 1: ..." is bash's,
# "/bin/sh: can't create ..." is ash's), it lacks the `nmeter` applet the node suite's
# Containers Lifecycle specs log with, and its ash drops environment variables whose names
# are no shell identifiers (data-1), which the envFrom specs print with `sh -c env`.
#
#   hack/conformance/busybox.sh     build when not cached; print the binary's path
#
# Source: the upstream release tarball as Debian's archive serves it (busybox_<ver>.orig.tar.bz2,
# the file busybox.net publishes), checked against the SHA-256 pinned here. Cached in
# ${BERTH_CACHE:-$HOME/.cache/berth}/busybox-<ver>/ (the tarball, and bin/busybox with a stamp
# of how it was built); nothing is committed.
set -euo pipefail

VERSION=1.37.0
SHA256=3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4
URL=${BERTH_BUSYBOX_URL:-http://deb.debian.org/debian/pool/main/b/busybox/busybox_$VERSION.orig.tar.bz2}
# Applets the suites run, checked in the built binary.
NEEDED=(sh nmeter env wget nc nslookup sleep)

CACHE=${BERTH_CACHE:-$HOME/.cache/berth}/busybox-$VERSION
OUT=$CACHE/bin/busybox
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
RECIPE=$( (cat "$SELF"; gcc --version | head -n1) | sha256sum | cut -d' ' -f1)

if [[ -x $OUT && -f $CACHE/bin/.recipe && $(cat "$CACHE/bin/.recipe") == "$RECIPE" ]]; then
    echo "$OUT"
    exit 0
fi
for tool in curl gcc make bzip2 tar sha256sum flock; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (hack/install-deps.sh)" >&2; exit 1; }
done
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.lock"
flock 9

TARBALL=$CACHE/busybox-$VERSION.tar.bz2
if [[ ! -f $TARBALL ]] || ! sha256sum --status -c <<<"$SHA256  $TARBALL"; then
    curl -sSf --retry 3 -o "$TARBALL.part" "$URL" ||
        { echo "$0: cannot fetch $URL; put busybox-$VERSION.tar.bz2 into $CACHE" >&2; exit 1; }
    if ! sha256sum --status -c <<<"$SHA256  $TARBALL.part"; then
        rm -f "$TARBALL.part"
        echo "$0: $URL does not have the SHA-256 pinned here ($SHA256)" >&2
        exit 1
    fi
    mv "$TARBALL.part" "$TARBALL"
fi

W=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$W"' EXIT
tar -xjf "$TARBALL" -C "$W"
cd "$W/busybox-$VERSION"
make -s defconfig >/dev/null
# Static, as upstream's image; nothing else changed from the defconfig.
sed -i 's/^# CONFIG_STATIC is not set$/CONFIG_STATIC=y/' .config
make -s oldconfig </dev/null >/dev/null
grep -qx 'CONFIG_STATIC=y' .config || { echo "$0: CONFIG_STATIC did not take" >&2; exit 1; }
# Static glibc warns about getpwnam and friends (NSS); the images have /etc/passwd and no NSS
# modules, as upstream's glibc busybox.
make -s -j"$(nproc)" busybox >build.log 2>&1 || { tail -n 30 build.log >&2; exit 1; }

applets=$(./busybox --list)
for applet in "${NEEDED[@]}"; do
    grep -qx "$applet" <<<"$applets" || { echo "$0: the build has no $applet applet" >&2; exit 1; }
done
# The behaviours the images are built for (see the top of this file).
msg=$(./busybox sh -c 'echo >"$0"' "$W/absent/file" 2>&1 || true)
[[ $msg == *"can't create $W/absent/file:"* ]] ||
    { echo "$0: ash's error message is '$msg'" >&2; exit 1; }
env 'data-1=value-1' ./busybox sh -c './busybox env' | grep -qx 'data-1=value-1' ||
    { echo "$0: this ash drops the variable data-1" >&2; exit 1; }

install -m 0755 busybox "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$RECIPE" >"$CACHE/bin/.recipe"
echo "$OUT"
