#!/usr/bin/env bash
# The dashboard's third-party files (xterm.js and its fit addon), vendored into web/vendor/
# from the npm registry at pinned versions. No node, no npm: curl, tar and openssl.
#
#   scripts/vendor-web.sh            download each package of web/vendor/LOCK, check its
#                                    tarball against the lock's sha512 integrity, copy the
#                                    files the dashboard serves into web/vendor/ and write
#                                    web/vendor/SHA256SUMS
#   scripts/vendor-web.sh --check    offline: the files in web/vendor/ are exactly those of
#                                    SHA256SUMS, with those digests (CI runs this)
#   scripts/vendor-web.sh --update   rewrite LOCK from the registry's metadata for the pinned
#                                    versions (PINS below), then vendor as above
#
# LOCK has one line per package: `name version integrity`, the integrity being npm's
# `dist.integrity` (`sha512-` and the base64 digest of the tarball).
#
# Environment: ROOST_NPM_REGISTRY (default https://registry.npmjs.org).

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/web/vendor"
LOCK="$VENDOR/LOCK"
SUMS="$VENDOR/SHA256SUMS"
REGISTRY="${ROOST_NPM_REGISTRY:-https://registry.npmjs.org}"

# The pinned versions; `--update` writes their integrity into LOCK.
PINS=("@xterm/xterm 5.5.0" "@xterm/addon-fit 0.10.0")

# What is copied of each package: `path in the package` → `name in web/vendor/`.
files_of() {
    case "$1" in
    @xterm/xterm) printf '%s\n' "lib/xterm.js xterm.js" "css/xterm.css xterm.css" \
        "LICENSE LICENSE.xterm" ;;
    @xterm/addon-fit) printf '%s\n' "lib/addon-fit.js addon-fit.js" "LICENSE LICENSE.addon-fit" ;;
    *) die "no file list for package $1 (add it to files_of in $0)" ;;
    esac
}

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || die "$c is needed"
    done
}

# The files SHA256SUMS must cover: everything in web/vendor/ but SHA256SUMS itself.
vendored_files() {
    (cd "$VENDOR" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort)
}

check() {
    need sha256sum find sort
    [ -f "$SUMS" ] || die "$SUMS is missing; run scripts/vendor-web.sh"
    local listed present
    listed=$(sed -E 's/^[0-9a-f]{64} [ *]//' "$SUMS" | LC_ALL=C sort)
    present=$(vendored_files)
    if [ "$listed" != "$present" ]; then
        printf 'error: the files in web/vendor/ are not those of SHA256SUMS:\n' >&2
        diff <(printf '%s\n' "$listed") <(printf '%s\n' "$present") |
            sed -n 's/^< /  listed but missing: /p; s/^> /  present but not listed: /p' >&2
        exit 1
    fi
    if ! (cd "$VENDOR" && sha256sum --check --strict --quiet SHA256SUMS); then
        die "web/vendor/ does not match SHA256SUMS (a vendored file was changed; run scripts/vendor-web.sh)"
    fi
    log "web/vendor/ matches SHA256SUMS ($(wc -l <"$SUMS") files)"
}

fetch() { # url file
    curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 \
        --retry 3 --retry-delay 2 --connect-timeout 20 --max-time 300 -o "$2" "$1"
}

# https://registry.npmjs.org/@scope/name/-/name-1.2.3.tgz
tarball_url() {
    printf '%s/%s/-/%s-%s.tgz' "$REGISTRY" "$1" "${1##*/}" "$2"
}

update_lock() {
    need curl
    local tmp="$1" pin name version meta integrity
    : >"$tmp/LOCK"
    for pin in "${PINS[@]}"; do
        read -r name version <<<"$pin"
        log "registry metadata of $name@$version"
        meta="$tmp/meta.json"
        fetch "$REGISTRY/$name/$version" "$meta"
        integrity=$(grep -oE '"integrity" *: *"sha512-[A-Za-z0-9+/=]+"' "$meta" |
            head -n 1 | sed -E 's/.*"(sha512-[^"]+)"$/\1/') || true
        [ -n "$integrity" ] || die "no sha512 dist.integrity in the registry's metadata of $name@$version"
        printf '%s %s %s\n' "$name" "$version" "$integrity" >>"$tmp/LOCK"
    done
    mkdir -p "$VENDOR"
    cp "$tmp/LOCK" "$LOCK"
    log "wrote $LOCK"
}

vendor() {
    need curl tar openssl base64 sha256sum find sort
    [ -f "$LOCK" ] || die "$LOCK is missing (scripts/vendor-web.sh --update writes it)"
    local tmp="$1" stage="$1/stage" name version integrity want got tgz pkg src dst n=0
    mkdir -p "$stage"
    cp "$LOCK" "$stage/LOCK"
    while read -r name version integrity rest; do
        case "$name" in '' | '#'*) continue ;; esac
        [ -z "${rest:-}" ] || die "LOCK: more than three fields on the line of $name"
        [[ "$integrity" == sha512-* ]] || die "LOCK: $name $version: the integrity must be sha512-<base64>"
        want=${integrity#sha512-}
        tgz="$tmp/${name//\//_}-$version.tgz"
        log "downloading $name@$version"
        fetch "$(tarball_url "$name" "$version")" "$tgz"
        got=$(openssl dgst -sha512 -binary "$tgz" | base64 -w 0)
        if [ "$got" != "$want" ]; then
            printf 'error: INTEGRITY MISMATCH for %s@%s\n  LOCK says sha512-%s\n  download is sha512-%s\n' \
                "$name" "$version" "$want" "$got" >&2
            die "refusing to vendor $name@$version: its tarball is not the one LOCK pins"
        fi
        pkg="$tmp/pkg-$n"
        n=$((n + 1))
        mkdir -p "$pkg"
        tar -xzf "$tgz" -C "$pkg" --no-same-owner --no-same-permissions package/package.json
        grep -qE "\"version\" *: *\"${version//./\\.}\"" "$pkg/package/package.json" ||
            die "$name@$version: the tarball's package.json has another version"
        while read -r src dst; do
            tar -xzf "$tgz" -C "$pkg" --no-same-owner --no-same-permissions "package/$src" ||
                die "$name@$version has no $src"
            if [ ! -f "$pkg/package/$src" ] || [ -L "$pkg/package/$src" ]; then
                die "$name@$version: $src is not a regular file"
            fi
            install -m 0644 "$pkg/package/$src" "$stage/$dst"
        done < <(files_of "$name")
        log "  verified sha512; copied $(files_of "$name" | awk '{print $2}' | tr '\n' ' ')"
    done <"$LOCK"
    [ "$n" -gt 0 ] || die "LOCK lists no package"
    (cd "$stage" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) \
        >"$tmp/SHA256SUMS"
    # Only now, with every package verified, replace what web/vendor/ held.
    mkdir -p "$VENDOR"
    find "$VENDOR" -mindepth 1 -maxdepth 1 ! -name LOCK -exec rm -rf {} +
    find "$stage" -mindepth 1 -maxdepth 1 ! -name LOCK -exec cp -p {} "$VENDOR/" \;
    cp "$tmp/SHA256SUMS" "$SUMS"
    log "wrote $SUMS"
    check
}

main() {
    local mode="${1:-vendor}"
    case "$mode" in
    --check)
        check
        return
        ;;
    vendor | --update) ;;
    -h | --help)
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
        return
        ;;
    *) die "unknown argument $mode (use --check, --update or nothing)" ;;
    esac
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" EXIT
    if [ "$mode" = --update ]; then
        update_lock "$tmp"
    fi
    vendor "$tmp"
}

main "$@"
