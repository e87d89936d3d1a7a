# Sourced by hack/soak.sh and hack/hostile.sh (after they set HERE): builds (unless DO_BUILD=0)
# and runs one of the e2e crate's long-run binaries against that profile's berthd, with the test
# images built. The caller's option loop fills ARGS, PROFILE and DO_BUILD.
#
#   run_e2e_bin NAME   (never returns)

ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PROFILE=release
DO_BUILD=1
ARGS=()

# parse_args "OPTS" "$@": the caller's options. Those named in OPTS (space-separated) take a
# value and go to ARGS for the binary; --debug, --no-build and -h/--help are the scripts' own.
parse_args() {
    local valued=" $1 "
    shift
    while (($#)); do
        case $1 in
            --debug) PROFILE=debug; shift ;;
            --no-build) DO_BUILD=0; shift ;;
            -h | --help) usage ;;
            *)
                [[ $valued == *" $1 "* ]] || { echo "$0: unknown argument $1" >&2; usage; }
                ARGS+=("$1" "${2:?$1 needs a value}")
                shift 2
                ;;
        esac
    done
}

# need_root_and WHY TOOL...: root (for WHY) and each tool on PATH, or exit saying which.
need_root_and() {
    local why=$1 tool
    shift
    [[ $EUID -eq 0 ]] || { echo "$0: needs root ($why)" >&2; exit 1; }
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$0: missing $tool (hack/install-deps.sh)" >&2; exit 1; }
    done
}

# The caller's header comment, from its second line to `set -euo`, as its usage.
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

run_e2e_bin() {
    local name=$1 bin b
    # anyhow errors without the environment's backtraces: the message says what failed.
    export RUST_LIB_BACKTRACE=0
    if ((DO_BUILD)); then
        local flags=(--quiet -p berthd -p berth-shim -p berth-e2e --bins)
        [[ $PROFILE == release ]] && flags=(--release "${flags[@]}")
        (cd "$ROOT" && cargo build "${flags[@]}")
    fi
    bin=$TARGET/$PROFILE/$name
    export BERTHD_BIN=$TARGET/$PROFILE/berthd
    for b in "$bin" "$BERTHD_BIN" "$TARGET/$PROFILE/berth-monitor"; do
        [[ -x $b ]] || { echo "$0: $b missing (run without --no-build)" >&2; exit 1; }
    done
    # The test images (cached in target/test-images; the run's registry pushes them).
    "$HERE/build-test-images.sh" "${BERTH_TEST_IMAGES:-$ROOT/target/test-images}"
    echo "$name: $bin ${ARGS[*]}"
    echo "berthd: $BERTHD_BIN ($PROFILE); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    exec "$bin" "${ARGS[@]}"
}
