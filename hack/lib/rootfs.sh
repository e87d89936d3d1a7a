# shellcheck shell=bash
# Putting a host binary into an image or node root of the same Debian release, with the shared
# libraries it links. Sourced by hack/kind.sh, hack/kind/images.sh and hack/cluster/images.sh;
# defines functions only.

# install_with_libs BINARY ROOT [DEST]: BINARY as ROOT/DEST (default: its own path), with every
# library `ldd` names (and the dynamic loader) at the same path under ROOT, unless ROOT has it
# already. Mode 0755 for all: the kernel runs the loader only if it is executable.
install_with_libs() {
    local bin=$1 r=$2 dest=${3:-$1} lib
    install -D -m 0755 "$bin" "$r$dest"
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
        while read -r lib; do
            [[ -e $r$lib ]] || install -D -m 0755 "$(readlink -f "$lib")" "$r$lib"
        done
}
