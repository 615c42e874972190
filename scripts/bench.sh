#!/usr/bin/env bash
# All benchmarks, in one run: create-to-ready (roost vs bare QEMU + seed, and SSH into the
# real VM through the forwarder vs direct), HTTP proxy (roost vs nginx proxy_pass), SSH path
# on loopback (forwarder vs direct), daemon memory per VM and overlay creation, an idle VM
# awake vs asleep and the first request to a sleeping site. Appends the tables, the
# machine and the command to docs/benchmarks.md. Timings never decide a test: compare the
# ratios measured within one run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_runtime_deps
build_image
OUT="$ROOT/docs/benchmarks.md"
{
    echo
    echo "## Run of $(date -u +%Y-%m-%dT%H:%MZ): scripts/bench.sh"
    echo
    echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB,"
    echo "kernel $(uname -r), $(qemu-system-x86_64 --version | head -1), image $(basename "$(readlink -f "$IMAGE_DIR")")."
    echo
    echo "### Create-to-ready (scripts/bench-create.sh)"
    echo
    "$ROOT/scripts/bench-create.sh" "${CREATE_RUNS:-6}"
    echo
    echo "### HTTP proxy and SSH path (scripts/bench-proxy.sh)"
    echo
    "$ROOT/scripts/bench-proxy.sh" "${PROXY_ROUNDS:-3}"
    echo
    echo "### Daemon memory per VM and overlay creation (scripts/bench-scale.sh)"
    echo
    "$ROOT/scripts/bench-scale.sh" "${SCALE_VMS:-8}"
    echo
    echo "### Sleeping while idle (scripts/bench-sleep.sh)"
    echo
    "$ROOT/scripts/bench-sleep.sh" "${SLEEP_ROUNDS:-5}"
} | tee -a "$OUT"
