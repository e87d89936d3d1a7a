#!/usr/bin/env bash
# Builds Berth's test images from Debian's busybox-static, offline, without Docker.
#
#   hack/build-test-images.sh OUTDIR
#
# Output (one shared OCI image layout, so shared layers are stored once):
#   OUTDIR/oci/          OCI layout; each image is one ref (annotation
#                        org.opencontainers.image.ref.name), e.g. oci:OUTDIR/oci:busybox
#   OUTDIR/images.list   what to push: "REF<TAB>REPO:TAG<TAB>MODE" per line, where MODE is
#                          oci    push as is (skopeo --preserve-digests)
#                          index  push the whole index (skopeo --all --preserve-digests)
#                          v2s2   convert to Docker v2 schema 2 (skopeo --format v2s2)
#   OUTDIR/stamp         written last; holds a hash of this script and of /bin/busybox.
#                        If it matches, the script exits at once (cache hit).
#
# Images (repository names under a registry):
#   berth-test/busybox        one gzip layer: busybox, an applet symlink per applet, passwd/group
#   berth-test/layered        busybox's layer (same blob) + a layer of files + a layer of
#                             OCI whiteouts (.wh.gone.txt, .wh..wh..opq) and replacements
#   berth-test/multiarch      OCI index: linux/arm64 FIRST, then linux/amd64 (/arch says which)
#   berth-test/busybox-zstd   busybox's tar, zstd-compressed (layer.v1.tar+zstd)
#   berth-test/busybox-plain  busybox's tar, uncompressed (layer.v1.tar)
#   berth-test/docker-v2      busybox, converted to Docker v2 schema 2 at push time
#   berth-test/user           busybox with config User "berth"
#
# Layers and JSON are built by hand (tar, gzip -n, zstd, jq, sha256sum, perl) with fixed mtimes,
# owners and entry order, so digests are the same on every run with the same tools.
# Root is not needed. Concurrent runs on one OUTDIR serialise on OUTDIR/.lock.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
BUSYBOX=${BUSYBOX:-/bin/busybox}
SELF=$(readlink -f "$0")

for tool in tar gzip zstd jq sha256sum flock perl "$BUSYBOX"; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool (apt-get install busybox-static zstd jq)" >&2; exit 1; }
done

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

# The stamp covers everything that changes the output: this script and the busybox binary.
STAMP="$(sha256sum <"$SELF" | cut -d' ' -f1) $(sha256sum <"$BUSYBOX" | cut -d' ' -f1)"
if [[ -f $OUT/stamp && "$(cat "$OUT/stamp")" == "$STAMP" ]]; then
    exit 0
fi

rm -f "$OUT/stamp"
rm -rf "$OUT/oci" "$OUT/images.list" "$OUT"/.build.*
BUILD=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT

EPOCH=1767225600 # 2026-01-01T00:00:00Z: every file mtime and config "created"
CREATED=2026-01-01T00:00:00Z
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_INDEX=application/vnd.oci.image.index.v1+json
MT_CONFIG=application/vnd.oci.image.config.v1+json
MT_TAR=application/vnd.oci.image.layer.v1.tar
LAYOUT=$BUILD/oci
mkdir -p "$LAYOUT/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
: >"$BUILD/refs.jsonl"
: >"$BUILD/images.list"

# det_tar SRC OUT: tar of SRC's contents, sorted, no "./" prefix, owned 0:0, fixed mtime.
# Paths under SRC listed in $BUILD/owned-1000 are appended afterwards as 1000:1000.
det_tar() {
    local src=$1 out=$2 owned=${3:-}
    (cd "$src" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$BUILD/tarlist"
    if [[ -n $owned ]]; then
        grep -vxF -f "$owned" "$BUILD/tarlist" >"$BUILD/tarlist.root" || true
    else
        cp "$BUILD/tarlist" "$BUILD/tarlist.root"
    fi
    local common=(--format=ustar --no-recursion --numeric-owner --mtime=@$EPOCH -C "$src")
    tar "${common[@]}" --owner=0 --group=0 -cf "$out" -T "$BUILD/tarlist.root"
    if [[ -n $owned ]]; then
        tar "${common[@]}" --owner=1000 --group=1000 -rf "$out" -T "$owned"
    fi
}

# add_blob FILE: move FILE into the layout; prints "sha256:HEX SIZE".
add_blob() {
    local hex size
    hex=$(sha256sum <"$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$LAYOUT/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

# layer TAR COMPRESSION (gzip|zstd|none): adds the blob; prints "MEDIATYPE DIGEST SIZE DIFFID".
layer() {
    local tarfile=$1 comp=$2 diffid blob mt
    diffid=sha256:$(sha256sum <"$tarfile" | cut -d' ' -f1)
    case $comp in
        gzip) gzip -n -6 -c "$tarfile" >"$tarfile.c"; mt=$MT_TAR+gzip ;;
        zstd) zstd -q -3 -c "$tarfile" >"$tarfile.c"; mt=$MT_TAR+zstd ;;
        none) cp "$tarfile" "$tarfile.c"; mt=$MT_TAR ;;
    esac
    blob=$(add_blob "$tarfile.c")
    echo "$mt $blob $diffid"
}

# image ARCH USER LAYER... (each LAYER as printed by `layer`): writes config + manifest,
# prints the manifest's "DIGEST SIZE".
image() {
    local arch=$1 user=$2
    shift 2
    jq -cjn --arg arch "$arch" --arg user "$user" --arg created "$CREATED" --arg path "$PATH_ENV" '
        [$ARGS.positional[] | split(" ")[3]] as $diffids |
        {created: $created, architecture: $arch} + (if $arch == "arm64" then {variant: "v8"} else {} end) +
        {os: "linux",
         config: ({Env: [$path], Cmd: ["sh"], WorkingDir: "/"} + (if $user != "" then {User: $user} else {} end)),
         rootfs: {type: "layers", diff_ids: $diffids},
         history: [$diffids[] | {created: $created, created_by: "hack/build-test-images.sh"}]}' \
        --args "$@" >"$BUILD/config.json"
    local cfg cdg csz
    cfg=$(add_blob "$BUILD/config.json")
    read -r cdg csz <<<"$cfg"
    jq -cjn --arg mt "$MT_MANIFEST" --arg cmt "$MT_CONFIG" --arg cdg "$cdg" --argjson csz "$csz" '
        {schemaVersion: 2, mediaType: $mt, config: {mediaType: $cmt, digest: $cdg, size: $csz},
         layers: [$ARGS.positional[] | split(" ") | {mediaType: .[0], digest: .[1], size: (.[2] | tonumber)}]}' \
        --args "$@" >"$BUILD/manifest.json"
    add_blob "$BUILD/manifest.json"
}

# ref NAME MEDIATYPE "DIGEST SIZE" REPO MODE: names a manifest/index in the layout and lists it for pushing.
ref() {
    local name=$1 mt=$2 dg sz
    read -r dg sz <<<"$3"
    # Plain printf: every field is a fixed identifier or a digest, nothing to escape.
    printf '{"mediaType":"%s","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}\n' \
        "$mt" "$dg" "$sz" "$name" >>"$BUILD/refs.jsonl"
    printf '%s\t%s\t%s\n' "$name" "$4" "$5" >>"$BUILD/images.list"
}

# --- busybox root filesystem -------------------------------------------------------------
ROOT=$BUILD/rootfs
mkdir -p "$ROOT"/{bin,dev,etc,home/berth,proc,root,sys,tmp,usr/bin,var}
install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
# One symlink per applet this busybox has (sh, ls, wget, nc, ip, httpd, ...), all in /bin,
# relative, so the layer works wherever it is unpacked.
# (perl-base is Essential in Debian; one process instead of ~270 `ln -s`.)
(cd "$ROOT/bin" && "$BUSYBOX" --list | grep -vx busybox |
    perl -nle 'symlink("busybox", $_) or die "bin/$_: $!\n"')
# An absolute symlink, as real images have: runtimes must resolve it inside the rootfs.
ln -s /bin/busybox "$ROOT/usr/bin/env"
cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
berth:x:1000:1000:Berth test user:/home/berth:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
staff:x:50:berth
berth:x:1000:
nogroup:x:65534:
EOF
find "$ROOT" -type d -exec chmod 0755 {} +
find "$ROOT" -type f -exec chmod 0644 {} +
chmod 0755 "$ROOT/bin/busybox"
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"
echo home/berth >"$BUILD/owned-1000"
det_tar "$ROOT" "$BUILD/busybox.tar" "$BUILD/owned-1000"

BB_GZ=$(layer "$BUILD/busybox.tar" gzip)
BB_ZSTD=$(layer "$BUILD/busybox.tar" zstd)
BB_PLAIN=$(layer "$BUILD/busybox.tar" none)

BB_MANIFEST=$(image amd64 "" "$BB_GZ")
ref busybox $MT_MANIFEST "$BB_MANIFEST" berth-test/busybox:latest oci
ref busybox-zstd $MT_MANIFEST "$(image amd64 "" "$BB_ZSTD")" berth-test/busybox-zstd:latest oci
ref busybox-plain $MT_MANIFEST "$(image amd64 "" "$BB_PLAIN")" berth-test/busybox-plain:latest oci
ref docker-v2 $MT_MANIFEST "$BB_MANIFEST" berth-test/docker-v2:latest v2s2
ref user $MT_MANIFEST "$(image amd64 berth "$BB_GZ")" berth-test/user:latest oci

# --- layered: lower files, then whiteouts / replacement / opaque dir -----------------------
L2=$BUILD/l2
mkdir -p "$L2/data" "$L2/opaque/sub"
echo keep >"$L2/data/keep.txt"
echo old >"$L2/data/replace.txt"
echo gone >"$L2/data/gone.txt"
echo a >"$L2/opaque/a.txt"
echo b >"$L2/opaque/b.txt"
echo c >"$L2/opaque/sub/c.txt"
L3=$BUILD/l3
mkdir -p "$L3/data" "$L3/opaque"
: >"$L3/data/.wh.gone.txt"     # deletes /data/gone.txt
echo new >"$L3/data/replace.txt"
: >"$L3/opaque/.wh..wh..opq"   # hides everything /opaque had below
echo new >"$L3/opaque/new.txt"
for d in "$L2" "$L3"; do
    find "$d" -type d -exec chmod 0755 {} +
    find "$d" -type f -exec chmod 0644 {} +
done
det_tar "$L2" "$BUILD/l2.tar"
det_tar "$L3" "$BUILD/l3.tar"
ref layered $MT_MANIFEST \
    "$(image amd64 "" "$BB_GZ" "$(layer "$BUILD/l2.tar" gzip)" "$(layer "$BUILD/l3.tar" gzip)")" \
    berth-test/layered:latest oci

# --- multiarch: an index with the foreign (arm64) entry first ----------------------------
declare -A ARCH_MANIFEST
for arch in arm64 amd64; do
    A=$BUILD/arch-$arch
    mkdir -p "$A"
    echo $arch >"$A/arch"
    chmod 0644 "$A/arch"
    det_tar "$A" "$BUILD/arch-$arch.tar"
    ARCH_MANIFEST[$arch]=$(image $arch "" "$BB_GZ" "$(layer "$BUILD/arch-$arch.tar" gzip)")
done
read -r ARM_DG ARM_SZ <<<"${ARCH_MANIFEST[arm64]}"
read -r AMD_DG AMD_SZ <<<"${ARCH_MANIFEST[amd64]}"
jq -cjn --arg mt "$MT_INDEX" --arg mmt "$MT_MANIFEST" \
    --arg armdg "$ARM_DG" --argjson armsz "$ARM_SZ" --arg amddg "$AMD_DG" --argjson amdsz "$AMD_SZ" \
    '{schemaVersion: 2, mediaType: $mt, manifests: [
        {mediaType: $mmt, digest: $armdg, size: $armsz, platform: {architecture: "arm64", os: "linux", variant: "v8"}},
        {mediaType: $mmt, digest: $amddg, size: $amdsz, platform: {architecture: "amd64", os: "linux"}}]}' \
    >"$BUILD/index.json"
ref multiarch $MT_INDEX "$(add_blob "$BUILD/index.json")" berth-test/multiarch:latest index

# --- finish: layout index, then move into place, stamp last ------------------------------
jq -cs --arg mt "$MT_INDEX" '{schemaVersion: 2, mediaType: $mt, manifests: .}' \
    <"$BUILD/refs.jsonl" >"$LAYOUT/index.json"
mv "$LAYOUT" "$OUT/oci"
mv "$BUILD/images.list" "$OUT/images.list"
echo "$STAMP" >"$OUT/stamp"
