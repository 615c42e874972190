#!/usr/bin/env bash
# Installs what roost needs (apt packages, guest image, release build, /usr/local/bin/roost)
# and runs the daemon with its embedded defaults. Extra arguments go to `roost serve` (e.g. --config FILE).
# Idempotent: a second run reuses everything already in place.
source "$(dirname "$0")/lib.sh"
install_runtime_deps
install_rust
build_image
log "cargo build --release"
(cd "$ROOT" && cargo build --release --locked -q)
# The operator's commands (`roost user add`, `roost vm list`, ...) are then on PATH.
# Copied beside and renamed, so a running roost's binary is never rewritten in place.
if ! cmp -s "$ROOT/target/release/roost" /usr/local/bin/roost; then
    log "install /usr/local/bin/roost"
    install -m 0755 "$ROOT/target/release/roost" /usr/local/bin/.roost.new
    mv -f /usr/local/bin/.roost.new /usr/local/bin/roost
fi
log "preflight"
/usr/local/bin/roost check "$@" || true
log "roost serve $*"
exec /usr/local/bin/roost serve "$@"
