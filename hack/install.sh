#!/usr/bin/env bash
# Installs Berth on this node: berthd, berth-monitor and berthctl, the default
# config (/etc/berth/config.toml, as `berthd config default` prints it), an
# empty registries.conf, Berth's default CNI network (only where the node has
# none) and the systemd unit berth.service, then enables and starts it where
# systemd runs. Files that exist already (an admin's config) are kept.
# Every file it creates is listed in PREFIX/share/berth/installed-files, which
# --uninstall reads: it removes exactly those, and leaves nothing behind.
#
#   hack/install.sh [--prefix /usr/local] [--destdir DIR] [--bin-dir DIR] [--no-start]
#   hack/install.sh --uninstall [--prefix /usr/local] [--destdir DIR] [--purge]
#
#   --prefix    where bin/ and share/ go (default /usr/local); config goes to /etc
#   --destdir   stage everything under DIR (packaging, tests); implies --no-start
#   --bin-dir   take the binaries from DIR instead of building them (cargo build --release)
#   --no-start  install files only: no systemctl
#   --purge     with --uninstall: also remove Berth's data (/var/lib/berth, /run/berth),
#               its pod bridge's FORWARD rules (iptables chains BERTH-FWD-*) and its cgroup
#               hierarchy name=berth (cgroup_favordynmods); refused while pods exist
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=/usr/local
DESTDIR=
BIN_DIR=
START=1
UNINSTALL=0
PURGE=0
while (($#)); do
    case $1 in
        --prefix) PREFIX=${2:?--prefix needs a dir}; shift ;;
        --destdir) DESTDIR=${2:?--destdir needs a dir}; START=0; shift ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a dir}; shift ;;
        --no-start) START=0 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $PREFIX == /* ]] || { echo "install.sh: --prefix must be absolute" >&2; exit 2; }
DESTDIR=${DESTDIR%/}

MANIFEST=$PREFIX/share/berth/installed-files
UNIT=/etc/systemd/system/berth.service
# The paths berthd uses by default (crates/berthd/src/config.rs).
ROOT_DIR=/var/lib/berth
STATE_DIR=/run/berth
CNI_DIR=/etc/cni/net.d

systemd_running() { [[ -z $DESTDIR && -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

installed=()
created_dirs=()
# Dirs an earlier install created stay ours (and are removed by --uninstall).
if [[ -f $DESTDIR$MANIFEST ]]; then
    while IFS= read -r line; do
        [[ $line == "dir "* ]] && created_dirs+=("${line#dir }")
    done <"$DESTDIR$MANIFEST"
fi
# mkdir_p DIR: like mkdir -p, recording each dir it creates.
mkdir_p() {
    local d=$1 missing=()
    while [[ $d != / && ! -d $DESTDIR$d ]]; do
        missing+=("$d")
        d=$(dirname "$d")
    done
    mkdir -p "$DESTDIR$1"
    created_dirs+=("${missing[@]}")
}
# install_file MODE SRC DST: DST is a path on the node (without DESTDIR).
install_file() {
    mkdir_p "$(dirname "$3")"
    install -m "$1" "$2" "$DESTDIR$3"
    installed+=("$3")
}
# keep_or_install MODE SRC DST: for config an admin may edit. An existing file
# is kept as it is: still ours (and removed by --uninstall) when an earlier
# install created it, the admin's otherwise.
keep_or_install() {
    if [[ ! -e $DESTDIR$3 ]]; then
        install_file "$@"
    elif grep -qxF "$3" "$DESTDIR$MANIFEST" 2>/dev/null; then
        installed+=("$3")
    else
        echo "kept the node's own $3"
    fi
}

# remove_forward_rules: berthd's FORWARD rules for its pod bridges (the chains
# BERTH-FWD-<bridge> and the jumps to them, and the admin's BERTH-FORWARD-ADMIN;
# [network] bridge_forward_rules),
# once no pod needs them.
remove_forward_rules() {
    local cmd chain
    for cmd in iptables ip6tables; do
        command -v "$cmd" >/dev/null || continue
        for chain in $("$cmd" -w -t filter -S | awk '$1 == "-N" && $2 ~ /^BERTH-FWD-/ {print $2}'); do
            while "$cmd" -w -t filter -D FORWARD -m comment --comment "berth: pods on a CNI bridge" -j "$chain" 2>/dev/null; do :; done
            "$cmd" -w -t filter -F "$chain"
            "$cmd" -w -t filter -X "$chain"
            echo "removed $cmd's chain $chain"
        done
        if "$cmd" -w -t filter -S BERTH-FORWARD-ADMIN >/dev/null 2>&1; then
            "$cmd" -w -t filter -F BERTH-FORWARD-ADMIN
            "$cmd" -w -t filter -X BERTH-FORWARD-ADMIN && echo "removed $cmd's chain BERTH-FORWARD-ADMIN"
        fi
    done
}

# remove_favordynmods: berthd's named cgroup v1 hierarchy (name=berth, cgroup_favordynmods:
# kept alive by its one child cgroup `keepalive`, mounted nowhere; see
# crates/cgroup/src/favordynmods.rs), once no pod runs, and the mount of it an older berthd
# left at $STATE_DIR/cgroup-favordynmods. The kernel frees a v1 hierarchy at its last unmount
# when it has no cgroup left; a removed cgroup goes asynchronously, so the mount and unmount
# are repeated until the hierarchy is gone from /proc/self/cgroup.
hierarchy_listed() { grep -q '^[0-9]*:name=berth:' /proc/self/cgroup; }
remove_favordynmods() {
    local legacy=$STATE_DIR/cgroup-favordynmods mnt _ _w
    if mountpoint -q "$legacy"; then umount -l "$legacy"; fi
    hierarchy_listed || return 0
    mnt=$(mktemp -d)
    for _ in 1 2 3 4 5; do
        mount -t cgroup -o none,name=berth berth "$mnt" || break
        rmdir "$mnt/keepalive" 2>/dev/null || true
        umount "$mnt"
        for _w in 1 2 3 4 5 6 7 8 9 10; do
            hierarchy_listed || break 2
            sleep 0.2
        done
    done
    rmdir "$mnt"
    if hierarchy_listed; then
        echo "install.sh: berthd's cgroup hierarchy name=berth is still there (it goes at the next boot)" >&2
    else
        echo "removed berthd's cgroup hierarchy name=berth (cgroup_favordynmods)"
    fi
}

uninstall() {
    if [[ ! -f $DESTDIR$MANIFEST ]]; then
        echo "install.sh: $DESTDIR$MANIFEST is missing: Berth is not installed under prefix $PREFIX" >&2
        exit 1
    fi
    if systemd_running && systemctl cat berth.service >/dev/null 2>&1; then
        # KillMode=process: this stops berthd; pods keep running until purged.
        systemctl disable --now berth.service
    fi
    if ((PURGE)); then
        if compgen -G "$DESTDIR$STATE_DIR/pods/*" >/dev/null || pgrep -x berth-monitor >/dev/null; then
            echo "install.sh: pods still exist (see: crictl pods); remove them first (crictl rmp -fa) before --purge" >&2
            exit 1
        fi
    fi
    local line dirs=()
    while IFS= read -r line; do
        case $line in
            "") ;;
            "dir "*) dirs+=("${line#dir }") ;;
            *) rm -f "$DESTDIR$line" ;;
        esac
    done <"$DESTDIR$MANIFEST"
    rm -f "$DESTDIR$MANIFEST"
    if ((PURGE)); then
        if [[ -z $DESTDIR ]]; then remove_favordynmods; fi
        # berthd stacks two binds of its state dir onto itself (crates/berthd/src/state_mount.rs).
        if [[ -z $DESTDIR ]]; then
            while mountpoint -q "$STATE_DIR"; do umount -l "$STATE_DIR" || break; done
        fi
        rm -rf "${DESTDIR:?}$ROOT_DIR" "${DESTDIR:?}$STATE_DIR"
        if [[ -z $DESTDIR ]]; then remove_forward_rules; fi
    fi
    # The dirs install created, deepest first; one that holds something
    # else now (an admin's file) stays.
    local d
    for d in $( ((${#dirs[@]})) && printf '%s\n' "${dirs[@]}" | sort -u -r); do
        rmdir "$DESTDIR$d" 2>/dev/null || true
    done
    if systemd_running; then systemctl daemon-reload; fi
    echo "Berth uninstalled from ${DESTDIR:-/} (prefix $PREFIX)"
    if ((!PURGE)); then echo "kept its data: $ROOT_DIR and $STATE_DIR and its pods' FORWARD rules (iptables chains BERTH-FWD-*) (remove with --uninstall --purge)"; fi
}

if ((UNINSTALL)); then
    uninstall
    exit 0
fi

if [[ -z $BIN_DIR ]]; then
    cargo build --release --locked -p berthd -p berth-shim -p berthctl
    BIN_DIR=target/release
fi
for b in berthd berth-monitor berthctl; do
    [[ -x $BIN_DIR/$b ]] || { echo "install.sh: $BIN_DIR/$b is missing" >&2; exit 1; }
done

# berthd starts each pod's monitor from its own directory.
for b in berthd berth-monitor berthctl; do
    install_file 0755 "$BIN_DIR/$b" "$PREFIX/bin/$b"
done
keep_or_install 0644 hack/config.example.toml /etc/berth/config.toml
keep_or_install 0644 hack/registries.conf /etc/berth/registries.conf
# The default pod network, unless the node has one (hack/cni/README.md).
if grep -qxF "$CNI_DIR/10-berth.conflist" "$DESTDIR$MANIFEST" 2>/dev/null \
    || { ! compgen -G "$DESTDIR$CNI_DIR/*.conflist" >/dev/null && ! compgen -G "$DESTDIR$CNI_DIR/*.conf" >/dev/null \
        && ! compgen -G "$DESTDIR$CNI_DIR/*.json" >/dev/null; }; then
    keep_or_install 0644 hack/cni/10-berth.conflist "$CNI_DIR/10-berth.conflist"
else
    echo "kept the node's own CNI network in $CNI_DIR"
fi
unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s|@BINDIR@|$PREFIX/bin|g" hack/systemd/berth.service >"$unit"
install_file 0644 "$unit" "$UNIT"
# What --uninstall removes: the files, then the dirs install created.
mkdir_p "$(dirname "$MANIFEST")"
{
    printf '%s\n' "${installed[@]}"
    if ((${#created_dirs[@]})); then printf '%s\n' "${created_dirs[@]}" | sort -u | sed 's/^/dir /'; fi
} >"$DESTDIR$MANIFEST"

if [[ ! -x /opt/cni/bin/bridge && ! -x /usr/lib/cni/bridge ]]; then
    echo "note: no CNI plugins in /opt/cni/bin or /usr/lib/cni: install them (Debian: containernetworking-plugins)"
fi
echo "installed Berth under ${DESTDIR:-/} (prefix $PREFIX):"
printf '  %s\n' "${installed[@]}"
if ((START)) && systemd_running; then
    systemctl daemon-reload
    systemctl enable berth.service
    # restart, not start: an upgrade replaces a running berthd (its pods stay).
    systemctl restart berth.service
    echo "berth.service is running: crictl --runtime-endpoint unix://$STATE_DIR/berth.sock version"
elif ((START)); then
    echo "systemd is not running here: start berthd yourself ($PREFIX/bin/berthd)"
fi
