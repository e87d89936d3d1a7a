#!/usr/bin/env bash
# Builds the Helm chart's installer image (charts/berth/README.md, "The installer image"),
# offline, as an OCI archive: a Debian root (bash, coreutils, sed, grep, nsenter) with Berth's
# binaries in /opt/berth/bin and hack/install.sh with the files it installs in /opt/berth/hack.
#
#   hack/build-installer-image.sh OUT_TAR BIN_DIR DEBIAN_ROOT [REF]
#
# BIN_DIR holds berthd, berth-monitor and berthctl (debug info is stripped in the image);
# DEBIAN_ROOT is a Debian root to start from (hack/kind.sh caches one from debootstrap);
# REF is the image's name in the archive (default localhost/berth-installer:<berthd version>).
# Load it into a node's store with `berthctl image import OUT_TAR` (or `ctr images import`),
# or push it to a registry with skopeo (`skopeo copy oci-archive:OUT_TAR docker://...`).
set -euo pipefail

[[ $# -ge 3 && $# -le 4 ]] || { echo "usage: $0 OUT_TAR BIN_DIR DEBIAN_ROOT [REF]" >&2; exit 2; }
OUT=$1 BIN=$2 ROOT=$3
REPO=$(cd "$(dirname "$0")/.." && pwd)
for tool in umoci skopeo; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (apt-get install umoci skopeo)" >&2; exit 1; }
done
for b in berthd berth-monitor berthctl; do
    [[ -x $BIN/$b ]] || { echo "$0: no $BIN/$b" >&2; exit 1; }
done
[[ -x $ROOT/bin/bash && -x $ROOT/usr/bin/nsenter ]] || { echo "$0: $ROOT is no Debian root with bash and nsenter" >&2; exit 1; }
version=$("$BIN/berthd" --version | awk '{ print $NF }')
REF=${4:-localhost/berth-installer:$version}

W=$(mktemp -d "${TMPDIR:-/tmp}/berth-installer.XXXXXX")
trap 'rm -rf "$W"' EXIT
umoci init --layout "$W/oci"
umoci new --image "$W/oci:installer"
umoci unpack --image "$W/oci:installer" "$W/bundle"
R=$W/bundle/rootfs
cp -a "$ROOT/." "$R/"
# What an installer never needs: docs, man pages, apt's and dpkg's state.
rm -rf "$R"/usr/share/{doc,man,info,locale} "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/*
install -d "$R/opt/berth/bin" "$R/opt/berth/hack/cni" "$R/opt/berth/hack/systemd"
install -m 0755 "$BIN/berthd" "$BIN/berth-monitor" "$BIN/berthctl" "$R/opt/berth/bin/"
strip --strip-debug "$R"/opt/berth/bin/*
# hack/install.sh and exactly the files it reads (it runs from /opt/berth).
install -m 0755 "$REPO/hack/install.sh" "$R/opt/berth/hack/"
install -m 0644 "$REPO/hack/config.example.toml" "$REPO/hack/registries.conf" "$R/opt/berth/hack/"
install -m 0644 "$REPO/hack/cni/10-berth.conflist" "$R/opt/berth/hack/cni/"
install -m 0644 "$REPO/hack/systemd/berth.service" "$R/opt/berth/hack/systemd/"
umoci repack --image "$W/oci:installer" "$W/bundle"
umoci config --image "$W/oci:installer" --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd /bin/bash --author "hack/build-installer-image.sh (Berth $version)"
rm -f "$OUT"
skopeo copy --quiet --insecure-policy "oci:$W/oci:installer" "oci-archive:$OUT:$REF"
echo "$REF"
