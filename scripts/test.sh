#!/usr/bin/env bash
# Installs what the tests need and runs every test: formatting, lints, unit and API tests,
# then the privileged tests (root, network namespaces, real QEMU guests).
# Idempotent. Fails if a test leaves a QEMU, a roost tap or a network namespace behind.
source "$(dirname "$0")/lib.sh"
# pebble (with pebble-challtestsrv) and unbound: the ACME tests' certificate authority
# and the resolver that stands in for the operator's delegation of _acme-challenge.
# prometheus: its promtool checks the /metrics body (tests/metrics.rs).
# chromium and chromium-driver: tests/browser.rs drives the dashboard in a real browser.
install_runtime_deps shellcheck python3 dnsmasq-base pebble unbound prometheus chromium chromium-driver
# The tests run their own unbound in a namespace; the packaged service must not take the
# host's port 53 (its install may have started it). Nor may a Prometheus server run: only
# its promtool is wanted.
for service in unbound prometheus; do
    if command -v systemctl >/dev/null && systemctl is-enabled "$service" >/dev/null 2>&1; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
done
install_rust
build_image
cd "$ROOT" || exit 1

# Match the command line: the process name is cut to 15 characters (qemu-system-x86).
qemus() { pgrep -c -f '^(/usr/bin/)?qemu-system-x86_64 ' || true; }
qemus_before=$(qemus)
netns_before=$(ip netns list | wc -l)

log "shellcheck"
shellcheck -S warning scripts/*.sh tests/*.sh
log "vendored browser code matches its checksums"
scripts/vendor-web.sh --check
log "cargo fmt --check"
cargo fmt --check
log "cargo clippy"
cargo clippy --locked --all-targets -q -- -D warnings
log "unit and API tests (no root needed)"
cargo test --locked -q
log "privileged tests (netns, QEMU, the install step, the README's commands)"
# One test at a time: tests boot TCG guests, and two at once on two cores only slow both.
# ROOST_UNDER_TEST_SH tells tests/readme.rs that the README's `scripts/test.sh` is this run.
ROOST_PRIVILEGED_TESTS=1 ROOST_TEST_IMAGE="$IMAGE_DIR" ROOST_UNDER_TEST_SH=1 \
    cargo test --locked -q -- --test-threads=1

log "leak check"
leaks=0
qemus_after=$(qemus)
if [ "${qemus_after:-0}" -gt "${qemus_before:-0}" ]; then
    echo "leak: qemu processes left running:" >&2; pgrep -a -f '^(/usr/bin/)?qemu-system-x86_64 ' >&2 || true; leaks=1
fi
if [ "$(ip netns list | wc -l)" -gt "$netns_before" ]; then
    echo "leak: network namespaces left:" >&2; ip netns list >&2; leaks=1
fi
if ip -o link show | awk -F': ' '{print $2}' | grep -E '^rt[a-z0-9]+' >&2; then
    echo "leak: roost taps left in the host namespace" >&2; leaks=1
fi
# The daemons under test put their VMs' cgroups under this shell's own cgroups (v1:
# <controller>/<own path>/roost-vms/<id>). A VM cgroup left there is a leak; the empty
# roost-vms parents stay behind by design (daemons are killed, VMs outlive them), so they
# are removed here.
while IFS=: read -r _ ctrls path; do
    case "$ctrls" in '' | name=*) continue ;; esac
    d="/sys/fs/cgroup/$ctrls${path%/}/roost-vms"
    [ -d "$d" ] || continue
    if find "$d" -mindepth 1 -maxdepth 1 -type d | grep -q .; then
        echo "leak: VM cgroups left in $d:" >&2; ls "$d" >&2; leaks=1
    else
        rmdir "$d" 2>/dev/null || true
    fi
done < /proc/self/cgroup
[ "$leaks" = 0 ] || die "a test left something behind"
log "all tests passed"
