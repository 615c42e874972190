# shellcheck shell=bash
# Shared by run.sh and test.sh: idempotent installation of what roost needs on Debian 12.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:/usr/local/cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (roost manages bridges, taps and QEMU)"

APT_UPDATED=
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -z "$APT_UPDATED" ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# qemu-system-x86 must come with qemu-utils of the same version: installing it alone next
# to a newer qemu-utils (as some images ship) removes qemu-img. Pin both to the candidate.
install_qemu() {
    if command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; then
        return 0
    fi
    [ -n "$APT_UPDATED" ] || { DEBIAN_FRONTEND=noninteractive apt-get update -qq; APT_UPDATED=1; }
    local v
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "no qemu-system-x86 package candidate"
    log "apt-get install qemu-system-x86=$v qemu-utils=$v"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "qemu-system-x86=$v" "qemu-utils=$v" "qemu-block-extra=$v" "qemu-system-common=$v" \
        "qemu-system-data=$v" >/dev/null
    command -v qemu-img >/dev/null || die "qemu-img missing after install"
}

install_runtime_deps() {
    install_qemu
    apt_install ca-certificates iproute2 nftables e2fsprogs dosfstools mtools mmdebstrap \
        openssh-client curl procps iputils-ping
    # QEMU runs as this unprivileged user (see [vm] run_as).
    if ! id roost-qemu >/dev/null 2>&1; then
        log "adding system user roost-qemu"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin roost-qemu
    fi
}

install_rust() {
    if command -v cargo >/dev/null; then return 0; fi
    # No rustup downloads here: fall back to Debian's toolchain and say if it is too old.
    apt_install cargo rustc gcc libc6-dev
    command -v cargo >/dev/null || die "cargo not found; install a Rust toolchain (rustup) first"
}

build_image() {
    log "guest image"
    IMAGE_DIR=$("$ROOT/scripts/build-image.sh" | tail -n 1)
    [ -f "$IMAGE_DIR/manifest.json" ] || die "build-image.sh did not produce $IMAGE_DIR/manifest.json"
    export IMAGE_DIR
}
