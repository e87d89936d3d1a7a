#!/usr/bin/env bash
# Installs a CRIU that works on this kind of machine into a cache outside the repo, for
# checkpoint/restore (the CRI CheckpointContainer RPC, kubelet forensic checkpointing).
#
#   hack/install-criu.sh               # build and install if missing (idempotent)
#   hack/install-criu.sh --force       # rebuild even if cached
#   hack/install-criu.sh --print-path  # install nothing; print the bin dir (for PATH)
#
# Result: ${BERTH_CACHE:-$HOME/.cache/berth}/criu-<version>/bin/criu
#
# Why not Debian 12's criu: bookworm ships criu 3.17.1, which cannot even start on recent
# kernels (seen on 6.18): `criu check` fails in kernel-feature detection with
#   Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
#   Error (criu/kerndat.c:...): kerndat_vdso_fill_symtable failed when initializing kerndat.
# (CRIU 3.17 does not know the newer kernels' vDSO/vvar layout). bookworm-backports has no
# criu, and trixie's binary package (criu 4.1.1-1) needs glibc 2.38 (__isoc23_strtol & co.;
# bookworm has 2.36), so it cannot be installed on bookworm as it is.
#
# What it does: downloads the upstream source tarball of trixie's criu (criu_4.1.1.orig.tar.xz)
# from Debian's archive pool, checks its SHA-256 (the one in trixie's signed Sources index),
# installs the build dependencies from bookworm with apt (only those missing; apt-get update
# only then), builds just the criu binary with make (nice'd), and installs it into the cache.
# No patches are applied: CRIU 4.1.1 builds on bookworm as it is. Debian's packaging
# (criu_4.1.1-1.debian.tar.xz) is not used; its changelog lists no source changes for 4.1.1-1.
# A run with the binary present does nothing (no network, no apt). Concurrent runs serialise
# on the cache's .criu.lock; the binary is moved into place only once it is built and runs.
#
# At run time criu also execs ip (iproute2) and iptables-save/-restore for network
# namespaces, so those are installed too. Debian's own /usr/sbin/criu (3.17.1), if installed,
# is left alone: use this one by its full path or put --print-path first on PATH.
#
# Needs root only to install missing Debian packages.
set -euo pipefail

CRIU_VERSION=4.1.1
# Debian source package the tarball belongs to (trixie): criu 4.1.1-1.
ORIG_TARBALL=criu_${CRIU_VERSION}.orig.tar.xz
ORIG_SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# Build dependencies (from the source package's Build-Depends, minus the docs/python/packaging
# ones criu's binary does not need), and run-time tools criu execs.
PACKAGES=(
    gcc make pkgconf xz-utils curl ca-certificates python3
    libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev libnl-3-dev
    libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler uuid-dev
    iproute2 iptables
)

cache_root=${BERTH_CACHE:-$HOME/.cache/berth}
prefix=$cache_root/criu-$CRIU_VERSION
bin_dir=$prefix/bin

die() {
    echo "install-criu: $*" >&2
    exit 1
}
log() {
    echo "install-criu: $*" >&2
}

force=0
case ${1:-} in
'') ;;
--force) force=1 ;;
--print-path)
    echo "$bin_dir"
    exit 0
    ;;
-h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
*) die "unknown argument: $1 (see --help)" ;;
esac
(($# <= 1)) || die "one argument at most (see --help)"

installed() {
    [[ -x $bin_dir/criu ]] && "$bin_dir/criu" --version 2>/dev/null | grep -qx "Version: $CRIU_VERSION"
}

if ((!force)) && installed; then
    exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.criu.lock"
flock 9
# Another run may have installed it while this one waited for the lock.
if ((!force)) && installed; then
    exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    [[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}); run as root to install them"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-criu-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

url=$DEBIAN_MIRROR/pool/main/c/criu/$ORIG_TARBALL
log "downloading $url"
curl -fsSL --retry 3 -o "$work/$ORIG_TARBALL" "$url" ||
    die "cannot download $url (if trixie's pool no longer has it, set DEBIAN_MIRROR to a snapshot.debian.org archive URL)"
echo "$ORIG_SHA256  $work/$ORIG_TARBALL" | sha256sum -c --quiet - ||
    die "SHA-256 mismatch for $ORIG_TARBALL"

tar -xJf "$work/$ORIG_TARBALL" -C "$work"
src=$work/criu-$CRIU_VERSION
[[ -f $src/Makefile ]] || die "unexpected tarball layout (no criu-$CRIU_VERSION/Makefile)"

log "building criu $CRIU_VERSION (make criu, nice -n 10)"
if ! nice -n 10 make -C "$src" -j"$(nproc)" criu >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "build failed"
fi
"$src/criu/criu" --version | grep -qx "Version: $CRIU_VERSION" ||
    die "built criu does not report Version: $CRIU_VERSION"

# Install atomically: a complete prefix is renamed into place.
staging=$cache_root/.criu-$CRIU_VERSION.tmp.$$
rm -rf "$staging"
mkdir -p "$staging/bin"
install -m 0755 "$src/criu/criu" "$staging/bin/criu"
rm -rf "$prefix"
mv "$staging" "$prefix"
log "installed $bin_dir/criu ($("$bin_dir/criu" --version | head -n 1))"
