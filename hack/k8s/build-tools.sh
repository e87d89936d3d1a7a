#!/usr/bin/env bash
# Builds Kubernetes' own tools from their Go modules, at the versions pinned in versions.env,
# into a cache outside the repo. Nothing it builds is committed.
#
#   hack/k8s/build-tools.sh [--only NAME...] [--verify] [--force]
#   hack/k8s/build-tools.sh --print-path [--only NAME...]
#   hack/k8s/build-tools.sh --list
#
#   --only NAME...  build only these tools (names from --list); default: all
#   --verify        after building, run each tool's version command
#   --force         rebuild even what is cached
#   --print-path    build nothing; print the tools' bin dirs joined by ':' (for PATH)
#   --list          build nothing; print the tools and where each one goes
#
# Cache layout, under ${BERTH_CACHE:-$HOME/.cache/berth}:
#   go/                     GOPATH; go/pkg/mod is GOMODCACHE (module downloads, shared by all)
#   go-build/               GOCACHE (compiled packages, shared by all)
#   k8s-<ver>/bin/          kubelet kube-apiserver kube-controller-manager kube-scheduler
#                           kube-proxy kubectl; the conformance suites e2e.test e2e_node.test
#                           and the ginkgo CLI they run under (Kubernetes' Ginkgo version);
#                           test images' binaries agnhost nnp sample-apiserver
#   etcd-<ver>/bin/         etcd etcdctl
#   cri-tools-<ver>/bin/    crictl (CRI_TOOLS_VERSION); critest ginkgo (CRITEST_VERSION: critest
#                           runs `ginkgo` from PATH for -parallel, so its own ginkgo is beside it)
#   coredns-<ver>/bin/      coredns
#   containerd-<ver>/bin/   containerd containerd-shim-runc-v2 (CONTAINERD2_VERSION; hack/bench-nri.sh)
#   <component>/build/      the generated main module (go.mod, go.sum) the tools are built in
#
# How: each component gets a small generated go.mod that requires the upstream module(s) at
# the pinned version. Upstream go.mod files replace their sibling modules with local paths
# (k8s.io/api => ./staging/src/k8s.io/api, go.etcd.io/etcd/api/v3 => ../api); replace
# directives of a dependency are ignored by Go, so each local-path replace of a module the
# upstream go.mod requires is mapped to the published module at the sibling version
# (Kubernetes v1.X.Y -> staging v0.X.Y; etcd's siblings share its version). Non-local
# replaces and excludes are copied as they are, and so are the go and godebug directives, so
# the build resolves the same dependency versions as upstream's own. Module downloads go
# through the normal GOPROXY.
#
# A tool is cached when its binary exists and the stamp beside it (.NAME.recipe) matches the
# hash of how it is built (module versions, package, flags); a run with everything cached runs
# no go command. A binary is built under a temporary name and moved into place, so a failed
# build leaves no half binary. Concurrent runs on one cache serialise on its .lock.
#
# Adding a tool: one add_tool line below (and add_component if it comes from a new module).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$here/versions.env"

cache_root=${BERTH_CACHE:-$HOME/.cache/berth}

die() {
    echo "build-tools: $*" >&2
    exit 1
}

# --- components: a build dir, the upstream modules it requires, and how local replaces resolve

declare -A component_dir component_modules component_sibling_version component_tags
component_names=()

# add_component NAME DIR SIBLING_VERSION TAGS MODULE@VERSION...
add_component() {
    local name=$1 dir=$2 sibling=$3 tags=$4
    shift 4
    component_names+=("$name")
    component_dir[$name]=$cache_root/$dir
    component_sibling_version[$name]=$sibling
    component_tags[$name]=$tags
    component_modules[$name]="$*"
}

k8s_minor_version=${K8S_VERSION#v1.}
# Tags as Kubernetes' hack/lib/golang.sh sets them for non-debug builds.
add_component k8s "k8s-$K8S_VERSION" "v0.$k8s_minor_version" "selinux,notest,grpcnotrace" \
    "k8s.io/kubernetes@$K8S_VERSION"
add_component etcd "etcd-$ETCD_VERSION" "$ETCD_VERSION" "" \
    "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
add_component cri-tools "cri-tools-$CRI_TOOLS_VERSION" "$CRI_TOOLS_VERSION" "" \
    "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION"
# critest is pinned apart from crictl (versions.env); the same dir when the two versions agree.
add_component critest "cri-tools-$CRITEST_VERSION" "$CRITEST_VERSION" "" \
    "sigs.k8s.io/cri-tools@$CRITEST_VERSION"
add_component coredns "coredns-$COREDNS_VERSION" "$COREDNS_VERSION" "" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
add_component kind "kind-$KIND_VERSION" "$KIND_VERSION" "" "sigs.k8s.io/kind@$KIND_VERSION"
add_component containerd2 "containerd-$CONTAINERD2_VERSION" "$CONTAINERD2_VERSION" "" \
    "github.com/containerd/containerd/v2@$CONTAINERD2_VERSION"

# --- tools: NAME COMPONENT MODE(build|test) PACKAGE VERSION-COMMAND-ARGS...
# MODE test builds a Ginkgo suite binary with `go test -c`, as cri-tools' Makefile does.

declare -A tool_component tool_mode tool_package tool_version_args tool_binary
tool_names=()

add_tool() {
    local name=$1
    tool_names+=("$name")
    tool_component[$name]=$2
    tool_mode[$name]=$3
    tool_package[$name]=$4
    shift 4
    tool_version_args[$name]="$*"
}

add_tool kubelet k8s build k8s.io/kubernetes/cmd/kubelet --version
add_tool kube-apiserver k8s build k8s.io/kubernetes/cmd/kube-apiserver --version
add_tool kube-controller-manager k8s build k8s.io/kubernetes/cmd/kube-controller-manager --version
add_tool kube-scheduler k8s build k8s.io/kubernetes/cmd/kube-scheduler --version
add_tool kube-proxy k8s build k8s.io/kubernetes/cmd/kube-proxy --version
add_tool kubectl k8s build k8s.io/kubernetes/cmd/kubectl version --client
# kubeadm: what a kind node (hack/kind.sh) bootstraps its control plane and joins its workers with.
add_tool kubeadm k8s build k8s.io/kubernetes/cmd/kubeadm version -o short
# The conformance suites (hack/conformance.sh): Ginkgo suite binaries built with `go test -c` and
# the same tags, as Kubernetes' `make WHAT=test/e2e/e2e.test` does. They run under the ginkgo
# CLI built beside them in the same module, so at the Ginkgo version Kubernetes requires
# (hack/conformance.sh checks it).
add_tool e2e.test k8s test k8s.io/kubernetes/test/e2e --version
add_tool e2e_node.test k8s test k8s.io/kubernetes/test/e2e_node --help
add_tool ginkgo k8s build github.com/onsi/ginkgo/v2/ginkgo version
# Test images' binaries (hack/conformance/images.sh puts them into images): agnhost, the
# nonewprivs image's nnp, and the aggregator spec's sample-apiserver (the module's release).
add_tool agnhost k8s build k8s.io/kubernetes/test/images/agnhost --version
add_tool nnp k8s build k8s.io/kubernetes/test/images/nonewprivs
add_tool sample-apiserver k8s build k8s.io/sample-apiserver --help
add_tool etcd etcd build go.etcd.io/etcd/server/v3 --version
add_tool etcdctl etcd build go.etcd.io/etcd/etcdctl/v3 version
add_tool crictl cri-tools build sigs.k8s.io/cri-tools/cmd/crictl --version
add_tool critest critest test sigs.k8s.io/cri-tools/cmd/critest -version
# The ginkgo CLI of critest's Ginkgo, installed as `ginkgo` beside critest (PATH for -parallel).
add_tool critest-ginkgo critest build github.com/onsi/ginkgo/v2/ginkgo version
tool_binary[critest-ginkgo]=ginkgo
add_tool coredns coredns build github.com/coredns/coredns -version
# kind (hack/kind.sh): clusters whose nodes are Podman containers running Berth.
add_tool kind kind build sigs.k8s.io/kind version
# containerd 2.x (its NRI), for hack/bench-nri.sh only: the daemon and its runc shim.
add_tool containerd2 containerd2 build github.com/containerd/containerd/v2/cmd/containerd --version
tool_binary[containerd2]=containerd
add_tool containerd2-shim containerd2 build github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 -v
tool_binary[containerd2-shim]=containerd-shim-runc-v2

bin_dir_of() { echo "${component_dir[${tool_component[$1]}]}/bin"; }
# binary_of NAME: the file name of a tool's binary (its name, unless tool_binary says otherwise).
binary_of() { echo "${tool_binary[$1]:-$1}"; }

# --- ldflags per component (beyond -s -w), as each project's own build sets them

# shellcheck disable=SC2317 # called indirectly
ldflags_k8s() {
    # hack/lib/version.sh: the same variables in component-base and client-go; the kubelet's
    # and apiserver's version skew checks read gitVersion. buildDate is the release's module
    # time, so the binaries are the same on every run.
    local build_date=$1 major=${K8S_VERSION#v} minor
    major=${major%%.*}
    minor=${k8s_minor_version%%.*}
    local pkg
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        printf -- "-X '%s.%s=%s' " \
            "$pkg" gitVersion "$K8S_VERSION" \
            "$pkg" gitMajor "$major" \
            "$pkg" gitMinor "$minor" \
            "$pkg" buildDate "$build_date" \
            "$pkg" gitTreeState clean
        if [[ -n ${K8S_GIT_COMMIT:-} ]]; then
            printf -- "-X '%s.gitCommit=%s' " "$pkg" "$K8S_GIT_COMMIT"
        fi
    done
}

# shellcheck disable=SC2317 # called indirectly
ldflags_etcd() { :; } # etcd's version is a constant; only its Git SHA comes from ldflags

# shellcheck disable=SC2317 # called indirectly
ldflags_cri-tools() {
    # cri-tools' Makefile: VERSION is `git describe` without the v.
    printf -- "-X 'sigs.k8s.io/cri-tools/pkg/version.Version=%s' " "${CRI_TOOLS_VERSION#v}"
}

# shellcheck disable=SC2317 # called indirectly
ldflags_critest() {
    printf -- "-X 'sigs.k8s.io/cri-tools/pkg/version.Version=%s' " "${CRITEST_VERSION#v}"
}

# shellcheck disable=SC2317 # called indirectly
ldflags_containerd2() {
    # containerd's Makefile: the version package's Version (and Package).
    printf -- "-X 'github.com/containerd/containerd/v2/version.Version=%s' " "$CONTAINERD2_VERSION"
    printf -- "-X 'github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2' "
}

# shellcheck disable=SC2317 # called indirectly
ldflags_coredns() { :; } # CoreDNS's version is a constant; only its Git commit comes from ldflags
ldflags_kind() { :; } # kind's version is a constant; only its Git commit comes from ldflags

# --- arguments
parse_args() {
    only=()
    verify=false
    force=false
    action=build
    while (($#)); do
        case $1 in
        --only)
            shift
            while (($#)) && [[ $1 != --* ]]; do
                only+=("$1")
                shift
            done
            ((${#only[@]})) || die "--only needs at least one tool name (see --list)"
            continue
            ;;
        --verify) verify=true ;;
        --force) force=true ;;
        --print-path) action=print-path ;;
        --list) action=list ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done

    selected=()
    if ((${#only[@]})); then
        for name in "${only[@]}"; do
            [[ -n ${tool_component[$name]:-} ]] || die "unknown tool '$name'; tools: ${tool_names[*]}"
            selected+=("$name")
        done
    else
        selected=("${tool_names[@]}")
    fi

    case $action in
    list)
        for name in "${tool_names[@]}"; do
            printf '%-24s %s\n' "$name" "$(bin_dir_of "$name")/$(binary_of "$name")"
        done
        exit 0
        ;;
    print-path)
        dirs=()
        for name in "${selected[@]}"; do
            dir=$(bin_dir_of "$name")
            [[ " ${dirs[*]-} " == *" $dir "* ]] || dirs+=("$dir")
        done
        (
            IFS=:
            echo "${dirs[*]}"
        )
        exit 0
        ;;
    esac
}

# --- go toolchain and environment (only looked at when something needs building)

export GOPATH=$cache_root/go
export GOMODCACHE=$cache_root/go/pkg/mod
export GOCACHE=$cache_root/go-build
# -modcacherw: the module cache can be removed with rm -rf. GOTOOLCHAIN=local: never fetch
# another toolchain behind the user's back; a too old go is reported below instead.
export GOFLAGS="-modcacherw -buildvcs=false"
export GOTOOLCHAIN=local
export GOWORK=off
export CGO_ENABLED=0

go_bin=""
find_go() {
    [[ -z $go_bin ]] || return 0
    go_bin=$(command -v go || true)
    if [[ -z $go_bin && -x /usr/local/go/bin/go ]]; then
        go_bin=/usr/local/go/bin/go
    fi
    [[ -n $go_bin ]] || die "no go command found (on PATH or /usr/local/go/bin); install Go first"
}

# version_at_least HAVE NEED: both like 1.26.8 / 1.26 / 1.26.0
version_at_least() {
    [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}

# --- the generated main module of a component

# prepare_component NAME: writes DIR/build/go.mod (once), checks the go version against it.
declare -A component_ready component_build_date
prepare_component() {
    local comp=$1
    [[ -z ${component_ready[$comp]:-} ]] || return 0
    find_go
    local dir=${component_dir[$comp]}
    local build=$dir/build
    mkdir -p "$build" "$dir/bin"

    local modules=${component_modules[$comp]}
    if [[ ! -f $build/go.mod || $(cat "$build/.spec" 2>/dev/null) != "$(component_spec "$comp")" ]]; then
        generate_go_mod "$comp" "$build" || die "$comp: could not prepare the build module in $build"
    fi

    local need have
    need=$("$go_bin" mod edit -json "$build/go.mod" | jq -r '.Go')
    have=$("$go_bin" env GOVERSION)
    have=${have#go}
    have=${have%%[-+ ]*}
    version_at_least "$have" "$need" ||
        die "$comp ($modules) needs Go >= $need, but $go_bin is go$have; install a newer Go"
    component_build_date[$comp]=$(cat "$build/.module-time")
    component_ready[$comp]=1
}

# component_spec NAME: what the generated go.mod is made from; a change regenerates it.
component_spec() {
    local comp=$1
    printf '%s %s %s\n' "${component_modules[$comp]}" "${component_sibling_version[$comp]}" \
        "$(declare -f generate_go_mod | sha256sum | cut -d' ' -f1)"
}

# generate_go_mod COMPONENT BUILD_DIR
generate_go_mod() {
    local comp=$1 build=$2
    local sibling=${component_sibling_version[$comp]}
    local tmp
    tmp=$(mktemp -d "$build/.gen.XXXXXX")
    local mod info gomod go_version="" module_time="" godebug_args=() edit_args=()
    declare -A replaced=()
    for mod in ${component_modules[$comp]}; do
        info=$(cd "$tmp" && "$go_bin" mod download -json "$mod") ||
            die "$comp: cannot download $mod: $(jq -r '.Error // empty' <<<"$info" 2>/dev/null)"
        gomod=$(jq -r '.GoMod' <<<"$info")
        [[ -n $module_time ]] || module_time=$(jq -r '.Time' "$(jq -r '.Info' <<<"$info")")
        local json
        json=$("$go_bin" mod edit -json "$gomod")

        local mod_go
        mod_go=$(jq -r '.Go // "1.21"' <<<"$json")
        if [[ -z $go_version ]] || ! version_at_least "$go_version" "$mod_go"; then
            go_version=$mod_go
        fi
        local kv
        while IFS= read -r kv; do
            [[ -n $kv ]] && godebug_args+=("-godebug=$kv")
        done < <(jq -r '.GoDebug[]? | "\(.Key)=\(.Value)"' <<<"$json")
        edit_args+=("-require=$mod")

        # Local-path replaces of required modules -> the published sibling module; others as is.
        local old old_ver new new_ver
        while IFS=$'\t' read -r old old_ver new new_ver; do
            [[ -n ${replaced[$old]:-} ]] && continue
            if [[ -z $new_ver ]]; then
                jq -e --arg p "$old" 'any(.Require[]?; .Path == $p)' <<<"$json" >/dev/null || continue
                edit_args+=("-replace=$old=$old@$sibling")
            else
                edit_args+=("-replace=$old${old_ver:+@$old_ver}=$new@$new_ver")
            fi
            replaced[$old]=1
        done < <(jq -r '.Replace[]? | [.Old.Path, (.Old.Version // ""), .New.Path, (.New.Version // "")] | @tsv' <<<"$json")
        local ex
        while IFS= read -r ex; do
            [[ -n $ex ]] && edit_args+=("-exclude=$ex")
        done < <(jq -r '.Exclude[]? | "\(.Path)@\(.Version)"' <<<"$json")
    done

    printf 'module berth-build/%s\n\ngo %s\n' "$comp" "$go_version" >"$tmp/go.mod"
    (cd "$tmp" && "$go_bin" mod edit "${godebug_args[@]}" "${edit_args[@]}")
    [[ $module_time =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T ]] || die "$comp: no release time for ${component_modules[$comp]}"
    echo "$module_time" >"$tmp/.module-time"
    component_spec "$comp" >"$tmp/.spec"
    rm -f "$build/go.sum"
    mv -f "$tmp/go.mod" "$build/go.mod"
    mv -f "$tmp/.module-time" "$build/.module-time"
    mv -f "$tmp/.spec" "$build/.spec"
    rm -rf "$tmp"
}

# --- building one tool

# recipe_of NAME: everything that decides the binary, hashed into the stamp beside it.
recipe_of() {
    local name=$1 comp=${tool_component[$1]}
    printf '%s\n' "$(component_spec "$comp")" \
        "${component_tags[$comp]}" "${tool_mode[$name]}" "${tool_package[$name]}" \
        "$(declare -f "ldflags_$comp")" "${K8S_GIT_COMMIT:-}" "cgo=0 trimpath -s -w" |
        sha256sum | cut -d' ' -f1
}

tmp_outputs=()
# shellcheck disable=SC2317 # called indirectly
cleanup() {
    local f
    for f in "${tmp_outputs[@]-}"; do
        [[ -n $f ]] && rm -f "$f"
    done
    # An EXIT trap's last status becomes the script's: never fail a run here.
    return 0
}
trap cleanup EXIT

build_tool() {
    local name=$1 comp=${tool_component[$1]}
    prepare_component "$comp"
    local dir=${component_dir[$comp]}
    local bin
    bin=$(binary_of "$name")
    local out=$dir/bin/$bin tmp_out=$dir/bin/.$bin.tmp.$$
    rm -f "$dir/bin/.$bin.tmp."* # left by a run that was killed (runs hold the lock)
    tmp_outputs+=("$tmp_out")
    local ldflags
    ldflags="$("ldflags_$comp" "${component_build_date[$comp]}")-s -w"
    local args=(-trimpath -ldflags "$ldflags" -o "$tmp_out")
    [[ -n ${component_tags[$comp]} ]] && args+=(-tags "${component_tags[$comp]}")
    # -mod=mod: the first build fills the generated module's go.sum (checked against the
    # checksum database as any download is).
    local go_cmd=(build)
    # go test -c would also vet the package: not what a binary needs, and minutes here.
    [[ ${tool_mode[$name]} == test ]] && go_cmd=(test -c -vet=off)
    (cd "$dir/build" && "$go_bin" "${go_cmd[@]}" -mod=mod "${args[@]}" "${tool_package[$name]}") ||
        die "$name: go ${go_cmd[*]} ${tool_package[$name]} failed (in $dir/build); nothing was installed"
    [[ -x $tmp_out ]] || die "$name: go produced no binary"
    mv -f "$tmp_out" "$out"
    recipe_of "$name" >"$dir/bin/.$name.recipe"
}

# --- main

seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

build_selected() {
    mkdir -p "$cache_root"
    exec 9>"$cache_root/.lock"
    flock 9

    echo "build-tools: cache $cache_root"
    total_start=$(date +%s.%N)
    built=0
    for name in "${selected[@]}"; do
        out=$(bin_dir_of "$name")/$(binary_of "$name")
        stamp=$(bin_dir_of "$name")/.$name.recipe
        start=$(date +%s.%N)
        if ! $force && [[ -x $out && -f $stamp && $(cat "$stamp") == "$(recipe_of "$name")" ]]; then
            state=cached
        else
            echo "build-tools: building $name (${tool_package[$name]})"
            build_tool "$name"
            state=built
            built=$((built + 1))
        fi
        printf 'build-tools: %-24s %-6s %7ss  %s\n' "$name" "$state" "$(seconds_since "$start")" "$out"
    done
    printf 'build-tools: %d of %d built, %ss in all\n' "$built" "${#selected[@]}" \
        "$(seconds_since "$total_start")"

    if $verify; then
        for name in "${selected[@]}"; do
            out=$(bin_dir_of "$name")/$(binary_of "$name")
            # shellcheck disable=SC2086 # the version arguments are words
            version=$("$out" ${tool_version_args[$name]} 2>&1) ||
                die "$name: '$out ${tool_version_args[$name]}' failed: $version"
            printf 'build-tools: %-24s %s\n' "$name" "$(head -n 3 <<<"$version" | tr '\n' ' ')"
        done
    fi
}

# Everything runs from here, after bash has read the whole file: editing the script while a
# long build runs cannot change what the running build does.
parse_args "$@"
build_selected
exit 0
