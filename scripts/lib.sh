# shellcheck shell=bash
# Shared by run.sh, test.sh, build-image.sh and the benchmarks: installation of what roost
# needs on Debian 12.
#
# Every run resolves the whole package set against apt's lists, also on a machine that has
# it all: `apt-get install --simulate` with the exact versions decides what is missing, so
# a wrong pin or a renamed package fails here on every machine, not only on a fresh one.
# Network steps (update, download) are retried; resolution is not (it is deterministic).
#
# Test hooks (environment):
#   ROOST_PKG_OVERRIDE="name=version ..."  replaces the computed spec of those packages
#                                          (tests/install.rs injects a wrong pin with it)
#   ROOST_APT_OFFLINE=1   never use the network: resolve against the lists at hand and fail
#                         if anything is missing (tests in a namespace without a network)
#   ROOST_APT_RETRIES (default 4), ROOST_APT_RETRY_PAUSE (seconds, default 15)

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${HOME:-/root}/.cargo/bin:/usr/local/cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (roost manages bridges, taps and QEMU)"

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=
APT_RETRIES=${ROOST_APT_RETRIES:-4}
APT_RETRY_PAUSE=${ROOST_APT_RETRY_PAUSE:-15}

# What roost runs with (`roost serve`, the README's commands) and what the tests use.
RUNTIME_PACKAGES=(ca-certificates debian-archive-keyring iproute2 nftables e2fsprogs
    dosfstools mtools mmdebstrap openssh-client curl jq procps iputils-ping)
# QEMU comes from one source version: the emulator and qemu-img side by side. Installing
# qemu-system-x86 alone next to a newer qemu-utils (as some images ship) removes qemu-img.
QEMU_PACKAGES=(qemu-system-x86 qemu-system-common qemu-system-data qemu-block-extra qemu-utils)

# Runs `apt-get "$@"` until it succeeds, at most APT_RETRIES times, pausing in between:
# the first update on a fresh machine can fail on name resolution, a mirror can hiccup.
apt_retry() {
    local i=1
    while ! apt-get "$@"; do
        [ "$i" -lt "$APT_RETRIES" ] ||
            die "apt-get $1 failed $i times; check the network and the mirrors in /etc/apt/sources.list*"
        log "apt-get $1 failed (attempt $i of $APT_RETRIES; a name-resolution or mirror hiccup?); retrying in ${APT_RETRY_PAUSE} s"
        sleep "$APT_RETRY_PAUSE"
        i=$((i + 1))
    done
}

apt_update() {
    [ "${ROOST_APT_OFFLINE:-}" != 1 ] || die "apt's lists need a refresh, but ROOST_APT_OFFLINE=1"
    log "apt-get update"
    # apt-get update only warns (exit 0) when a source cannot be fetched, e.g. when a name
    # does not resolve; make that an error so that it is retried.
    apt_retry update -qq -o APT::Update::Error-Mode=any
    APT_UPDATED=1
    mkdir -p "$(dirname "$APT_STAMP")" && touch "$APT_STAMP"
}

# When this script last refreshed apt's lists (their own mtimes are the mirror's dates).
APT_STAMP=/var/cache/roost/apt-lists.stamp

# True when apt has package lists that this script refreshed less than a day ago: older
# lists name versions the mirror may no longer carry, and a fresh machine may have none.
apt_lists_fresh() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null &&
        [ -n "$(find "$APT_STAMP" -mmin -1440 2>/dev/null)" ]
}

# The version of package $1 that was built from source version $2, from apt's lists.
# Architecture-dependent packages may carry a binNMU suffix (+b2) that `Architecture: all`
# packages such as qemu-system-data never have, so versions cannot simply be copied
# between them; the Source field ties them together.
version_from_source() {
    apt-cache show "$1" 2>/dev/null | awk -v want="$2" '
        function flush() { if (ver != "" && (srcver == "" ? ver : srcver) == want) { print ver; found = 1; exit } }
        /^Package:/ { flush(); ver = ""; srcver = "" }
        /^Version:/ { ver = $2 }
        /^Source:/ { if (match($0, /\(.*\)/)) srcver = substr($0, RSTART + 1, RLENGTH - 2) }
        END { if (!found) flush() }'
}

# The source version a binary package version was built from ("qemu (1:7.2+dfsg-7)").
source_version() {
    apt-cache show "$1=$2" 2>/dev/null | awk -v v="$2" '
        /^Source:/ && match($0, /\(.*\)/) { print substr($0, RSTART + 1, RLENGTH - 2); done = 1; exit }
        END { if (!done) print v }'
}

# Prints the exact package specs (name=version for QEMU, names for the rest), one per line.
package_specs() {
    local v src p pv
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "apt knows no qemu-system-x86 package (check /etc/apt/sources.list*)"
    src=$(source_version qemu-system-x86 "$v")
    for p in "${QEMU_PACKAGES[@]}"; do
        pv=$(version_from_source "$p" "$src")
        [ -n "$pv" ] || die "no version of $p built from qemu $src (the one of qemu-system-x86 $v) in apt's lists"
        echo "$p=$pv"
    done
    printf '%s\n' "${RUNTIME_PACKAGES[@]}" "$@"
}

# Applies ROOST_PKG_OVERRIDE to a list of specs on stdin.
apply_overrides() {
    local spec o name
    while read -r spec; do
        name=${spec%%=*}
        for o in ${ROOST_PKG_OVERRIDE:-}; do
            [ "${o%%=*}" = "$name" ] && spec=$o
        done
        echo "$spec"
    done
}

# Resolves the specs with apt (no changes); prints apt's Inst/Remv lines. Fails, printing
# apt's reason, when they cannot be resolved.
apt_plan() {
    local out
    if ! out=$(apt-get install --simulate --no-install-recommends --allow-downgrades "$@" 2>&1); then
        printf '%s\n' "$out" | grep -E '^(E|W):' >&2 || printf '%s\n' "$out" >&2
        return 1
    fi
    printf '%s\n' "$out" | grep -E '^(Inst|Remv) ' || true
}

# Sets the array `specs` to the exact package set; fails when apt's lists cannot give it
# (no QEMU in them, e.g. lists that do not match the sources).
resolve_specs() {
    local out
    specs=()
    out=$(package_specs "$@" | apply_overrides) || return 1
    mapfile -t specs <<<"$out"
    [ "${#specs[@]}" -gt "${#RUNTIME_PACKAGES[@]}" ] || return 1
}

# Makes the given specs (and the runtime set) installed, resolving them on every run.
ensure_packages() {
    local specs plan
    apt_lists_fresh || [ "${ROOST_APT_OFFLINE:-}" = 1 ] || apt_update
    if ! resolve_specs "$@" || ! plan=$(apt_plan "${specs[@]}"); then
        # Stale lists can name versions the mirror no longer has: refresh once, then decide.
        [ -z "$APT_UPDATED" ] && [ "${ROOST_APT_OFFLINE:-}" != 1 ] ||
            die "apt cannot resolve roost's packages: ${specs[*]:-(no QEMU package in the lists)}"
        log "apt cannot resolve roost's packages with the current lists; updating them"
        apt_update
        resolve_specs "$@" || die "no QEMU package set in apt's lists, even after apt-get update"
        plan=$(apt_plan "${specs[@]}") || die "apt cannot resolve roost's packages: ${specs[*]}"
    fi
    if [ -z "$plan" ]; then
        log "packages: all ${#specs[@]} present at the resolved versions"
        return 0
    fi
    if printf '%s\n' "$plan" | grep -q '^Remv '; then
        log "installing roost's packages removes: $(printf '%s\n' "$plan" | awk '/^Remv /{printf "%s ", $2}')"
    fi
    log "apt-get install $(printf '%s\n' "$plan" | awk '/^Inst /{printf "%s ", $2}')"
    [ "${ROOST_APT_OFFLINE:-}" != 1 ] || die "packages are missing or outdated, but ROOST_APT_OFFLINE=1"
    if ! apt-get install -y -qq --no-install-recommends --allow-downgrades "${specs[@]}" >/dev/null; then
        # A download that failed: fresh lists (the mirror may have moved on), then retries.
        apt_update
        resolve_specs "$@" || die "no QEMU package set in apt's lists, even after apt-get update"
        apt_retry install -y -qq --no-install-recommends --allow-downgrades "${specs[@]}" >/dev/null
    fi
    plan=$(apt_plan "${specs[@]}") || die "apt cannot resolve roost's packages after installing them"
    [ -z "$plan" ] || die "packages still missing after apt-get install: $plan"
    local q i
    q=$(qemu-system-x86_64 --version | sed -n '1s/.*version \([^ ]*\).*/\1/p')
    i=$(qemu-img --version | sed -n '1s/.*version \([^ ]*\).*/\1/p')
    [ -n "$q" ] && [ "$q" = "$i" ] || die "qemu-system-x86_64 ($q) and qemu-img ($i) differ after install"
}

# Kept for the benchmarks: extra packages on top of the runtime set, resolved the same way.
apt_install() { ensure_packages "$@"; }

# Runtime packages plus any extra ones (test.sh's linters), resolved together.
install_runtime_deps() {
    ensure_packages "$@"
    # No QEMU user to add: each VM's QEMU runs as its own uid from [vm] uid_base, which
    # needs no passwd entry.
    export ROOST_DEPS_OK=1
}

install_rust() {
    if command -v cargo >/dev/null; then return 0; fi
    # No rustup downloads here: fall back to Debian's toolchain and say if it is too old.
    ensure_packages cargo rustc gcc libc6-dev
    command -v cargo >/dev/null || die "cargo not found; install a Rust toolchain (rustup) first"
}

build_image() {
    log "guest image"
    IMAGE_DIR=$("$ROOT/scripts/build-image.sh" | tail -n 1)
    [ -f "$IMAGE_DIR/manifest.json" ] || die "build-image.sh did not produce $IMAGE_DIR/manifest.json"
    export IMAGE_DIR
}
