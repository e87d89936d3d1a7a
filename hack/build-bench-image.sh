#!/usr/bin/env bash
# Builds the pull benchmark's image (hack/bench-pull.sh): a multi-layer OCI image of this
# machine's own /usr files, offline, without Docker.
#
#   hack/build-bench-image.sh OUTDIR
#
# Output:
#   OUTDIR/oci/         OCI layout with one ref, "bench" (oci:OUTDIR/oci:bench)
#   OUTDIR/layers.tsv   one line per layer, in order:
#                       NAME DIGEST COMPRESSED_BYTES DIFFID UNCOMPRESSED_BYTES ENTRIES
#   OUTDIR/stamp        written last; a hash of this script and of the metadata (path, size,
#                       mtime, mode, owner) of every source file. If it matches, exit at once.
#
# Five gzip -6 layers, each of some /usr trees: their dirs and symlinks, and the files that fit
# in the layer's size budget, so the image is ~370 MB uncompressed (~150 MB gzip, ~35k
# entries) on any Debian-like host, with a realistic mix: shared libraries (some of 10-30
# MB, hardlinks), binaries (setuid ones too), a Python stdlib (thousands of small .py/.pyc),
# man pages and docs (~30k tiny files) and a small data layer. Content is whatever this machine has, so digests differ between machines;
# on one machine they are stable (fixed mtimes, sorted entries, PAX headers without
# atime/ctime, gzip -n). Run as root to read every file. Concurrent runs serialise on
# OUTDIR/.lock.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
SELF=$(readlink -f "$0")

# NAME|BUDGET_MB|TREES (relative to /). The last layer is the "application" layer.
LAYERS=(
    "libs|120|usr/lib/x86_64-linux-gnu"
    "bin|80|usr/bin usr/sbin"
    "python|80|usr/lib/python3.11 usr/lib/python3"
    "docs|50|usr/share/man usr/share/doc"
    "data|20|usr/share/zoneinfo usr/share/i18n usr/share/mime"
)
MIN_TOTAL=$((200 * 1000 * 1000))

for tool in tar gzip jq sha256sum flock perl find sort; do
    command -v "$tool" >/dev/null || { echo "$0: missing $tool" >&2; exit 1; }
done

# Trees that exist here (a missing one just makes its layer smaller).
trees_of() {
    local t
    for t in $1; do
        [[ -d /$t ]] && printf '%s\n' "$t"
    done
    return 0
}

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

# Cheap compared with a rebuild: one metadata walk over the source trees.
meta_hash() {
    local spec trees
    for spec in "${LAYERS[@]}"; do
        echo "$spec"
        mapfile -t trees < <(trees_of "${spec##*|}")
        ((${#trees[@]})) || continue
        (cd / && find "${trees[@]}" -printf '%p %s %T@ %m %U %G %y %l\n' | LC_ALL=C sort)
    done | sha256sum | cut -d' ' -f1
}
STAMP="$(sha256sum <"$SELF" | cut -d' ' -f1) $(meta_hash)"
if [[ -f $OUT/stamp && "$(cat "$OUT/stamp")" == "$STAMP" ]]; then
    exit 0
fi

rm -f "$OUT/stamp"
rm -rf "$OUT/oci" "$OUT/layers.tsv" "$OUT"/.build.*
BUILD=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT

EPOCH=1767225600 # 2026-01-01T00:00:00Z: every file mtime and config "created"
CREATED=2026-01-01T00:00:00Z
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_INDEX=application/vnd.oci.image.index.v1+json
MT_CONFIG=application/vnd.oci.image.config.v1+json
MT_GZIP=application/vnd.oci.image.layer.v1.tar+gzip
LAYOUT=$BUILD/oci
mkdir -p "$LAYOUT/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"

# add_blob FILE: move FILE into the layout; prints "sha256:HEX SIZE".
add_blob() {
    local hex size
    hex=$(sha256sum <"$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$LAYOUT/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

# select_entries BUDGET_BYTES TREE...: NUL-separated entry list for tar: the trees' ancestor
# dirs (real layers carry them too), then every dir and symlink of the trees and, tree by
# tree in path order, each regular file that still fits in the budget (a hardlinked file counts once and
# its other names follow its first one in or out: tar stores them as links).
select_entries() {
    local budget=$1
    shift
    printf '%s\n' "$@" | perl -ne 'chomp; my @p = split m{/}; pop @p;
        while (@p) { my $d = join "/", @p; print "$d\0" unless $seen{$d}++; pop @p }' |
        perl -0 -ne 'push @d, $_; END { print sort @d }'
    local tree
    for tree in "$@"; do
        (cd / && find "$tree" \( -type f -o -type l -o -type d \) -printf '%p\t%y\t%s\t%D:%i\0') |
            LC_ALL=C sort -z -t $'\t' -k1,1
    done |
        perl -0 -ne 'chomp; my ($p, $y, $s, $ino) = split /\t/;
            if ($y eq "f") {
                $in{$ino} //= ($total + $s <= '"$budget"') && (($total += $s), 1);
                next unless $in{$ino};
            }
            print "$p\0"'
}

# GNU tar in PAX format (as Go-built images use) for long names; no atime/ctime and a fixed
# extended-header name (the default has the PID in it), so the bytes are reproducible.
# shellcheck disable=SC2054 # the commas belong to --pax-option
TAR_OPTS=(--format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime
    --no-recursion --numeric-owner "--mtime=@$EPOCH" -C / --null -T -)

declare -a NAMES TARS
for spec in "${LAYERS[@]}"; do
    IFS='|' read -r name budget_mb trees <<<"$spec"
    mapfile -t tree_list < <(trees_of "$trees")
    if ((${#tree_list[@]} == 0)); then
        echo "$0: layer $name: none of $trees exists here, skipped" >&2
        continue
    fi
    select_entries $((budget_mb * 1000 * 1000)) "${tree_list[@]}" >"$BUILD/$name.list"
    tar "${TAR_OPTS[@]}" -cf "$BUILD/$name.tar" <"$BUILD/$name.list"
    NAMES+=("$name")
    TARS+=("$BUILD/$name.tar")
done

# Compress the layers in parallel (gzip is single-threaded); fail if any job failed.
pids=()
for t in "${TARS[@]}"; do
    gzip -n -6 -c "$t" >"$t.gz" &
    pids+=($!)
done
for p in "${pids[@]}"; do
    wait "$p"
done

total=0
: >"$BUILD/layers.tsv"
for i in "${!NAMES[@]}"; do
    t=${TARS[$i]}
    usize=$(stat -c %s "$t")
    total=$((total + usize))
    diffid=sha256:$(sha256sum <"$t" | cut -d' ' -f1)
    entries=$(tr -cd '\0' <"$BUILD/${NAMES[$i]}.list" | wc -c)
    read -r dg sz <<<"$(add_blob "$t.gz")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${NAMES[$i]}" "$dg" "$sz" "$diffid" "$usize" "$entries" \
        >>"$BUILD/layers.tsv"
    rm -f "$t"
done
if ((total < MIN_TOTAL)); then
    echo "$0: only $((total / 1000000)) MB of content found under /usr; the benchmark wants >= 200 MB" >&2
    exit 1
fi

jq -cjn --arg created "$CREATED" --rawfile layers "$BUILD/layers.tsv" '
    [$layers | split("\n")[] | select(. != "") | split("\t")] as $l |
    {created: $created, architecture: "amd64", os: "linux",
     config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
              Cmd: ["/usr/bin/python3"], WorkingDir: "/"},
     rootfs: {type: "layers", diff_ids: [$l[] | .[3]]},
     history: [$l[] | {created: $created, created_by: ("hack/build-bench-image.sh: " + .[0])}]}' \
    >"$BUILD/config.json"
read -r cdg csz <<<"$(add_blob "$BUILD/config.json")"
jq -cjn --arg mt "$MT_MANIFEST" --arg cmt "$MT_CONFIG" --arg lmt "$MT_GZIP" \
    --arg cdg "$cdg" --argjson csz "$csz" --rawfile layers "$BUILD/layers.tsv" '
    {schemaVersion: 2, mediaType: $mt, config: {mediaType: $cmt, digest: $cdg, size: $csz},
     layers: [$layers | split("\n")[] | select(. != "") | split("\t") |
              {mediaType: $lmt, digest: .[1], size: (.[2] | tonumber)}]}' \
    >"$BUILD/manifest.json"
read -r mdg msz <<<"$(add_blob "$BUILD/manifest.json")"
jq -cn --arg mt "$MT_INDEX" --arg mmt "$MT_MANIFEST" --arg dg "$mdg" --argjson sz "$msz" \
    '{schemaVersion: 2, mediaType: $mt, manifests: [{mediaType: $mmt, digest: $dg, size: $sz,
      annotations: {"org.opencontainers.image.ref.name": "bench"}}]}' >"$LAYOUT/index.json"

mv "$LAYOUT" "$OUT/oci"
mv "$BUILD/layers.tsv" "$OUT/layers.tsv"
echo "$STAMP" >"$OUT/stamp"
