#!/usr/bin/env bash
# Installs what roost needs (apt packages, guest image, release build) and runs the daemon
# with its embedded defaults. Extra arguments go to `roost serve` (e.g. --config FILE).
# Idempotent: a second run reuses everything already in place.
source "$(dirname "$0")/lib.sh"
install_runtime_deps
install_rust
build_image
log "cargo build --release"
(cd "$ROOT" && cargo build --release --locked -q)
log "preflight"
"$ROOT/target/release/roost" check "$@" || true
log "roost serve $*"
exec "$ROOT/target/release/roost" serve "$@"
