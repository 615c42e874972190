#!/usr/bin/env bash
# Two design targets that do not depend on speed:
#  - the daemon's own memory per managed VM (target: under 1 MiB): roost's RSS with N running
#    hostings minus its RSS with N/2, divided by N/2 (QEMU's memory is QEMU's, not counted);
#  - overlay creation constant in the base image's size: `qemu-img create -b` as roost runs it,
#    on the real base image and on bases 4x and 64x its virtual size.
# Runs in a network namespace it creates; every VM, file and process is removed at the end.
#
#   scripts/bench-scale.sh [N]     (default 8 hostings, 256 MiB each)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N="${1:-8}"
IMAGE="${IMAGE_DIR:-/var/cache/roost/images/default}"
apt_install bc jq
(cd "$ROOT" && cargo build -q --release)
BIN="$ROOT/target/release/roost"

echo "| base image | virtual GiB | data MiB | mean ms per \`qemu-img create -b\` (20 runs) |"
echo "|---|---:|---:|---:|"
T=$(mktemp -d /tmp/roost-bench-scale.XXXXXX)
trap 'rm -rf "$T"' EXIT
base=$(readlink -f "$IMAGE/$(jq -r .disk "$IMAGE/manifest.json")")
vsize=$(qemu-img info --output=json "$base" | jq '."virtual-size"')
# A base 64x the image's virtual size, and one with 2 GiB of data actually written.
qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$T/x64.qcow2" $((vsize * 64))
qemu-img create -q -f qcow2 "$T/data.qcow2" 8G
qemu-io -f qcow2 -c "write -P 0xab 0 1G" -c "write -P 0xab 1G 1G" "$T/data.qcow2" >/dev/null
for b in "$base" "$T/x64.qcow2" "$T/data.qcow2"; do
    info=$(qemu-img info --output=json --backing-chain "$b" | jq -s 'flatten')
    size=$(jq '.[0]."virtual-size"' <<<"$info")
    data=$(jq '[.[]."actual-size"] | add' <<<"$info")
    a=$(date +%s%N)
    for _ in $(seq 20); do
        qemu-img create -q -f qcow2 -F qcow2 -b "$b" "$T/ov.qcow2" $((size > (4 << 30) ? size : (4 << 30)))
        rm -f "$T/ov.qcow2"
    done
    z=$(date +%s%N)
    case $b in
        "$base") what="the guest image" ;;
        "$T/x64.qcow2") what="the guest image grown 64x (overlay)" ;;
        *) what="2 GiB written" ;;
    esac
    printf "| %s | %.1f | %.0f | %.1f |\n" "$what" "$(echo "$size / 1073741824" | bc -l)" \
        "$(echo "$data / 1048576" | bc -l)" "$(echo "($z - $a) / 20000000" | bc -l)"
done
echo

unshare --net bash -euo pipefail -c '
    BIN=$1 IMAGE=$2 N=$3
    ip link set lo up
    W=$(mktemp -d /tmp/roost-bench-scale.XXXXXX)
    # Each VM QEMU runs as the VM uid and must pass through to the VM directory.
    chmod 711 "$W"
    cleanup() {
        for t in "${TOKENS[@]:-}"; do
            [ -n "$t" ] || continue
            id=$(curl -s -m 10 -H "authorization: Bearer $t" http://127.0.0.1:8080/api/v1/host | sed -E "s/.*\"id\":\"([^\"]+)\".*/\1/")
            curl -s -m 10 -X DELETE -H "authorization: Bearer $t" "http://127.0.0.1:8080/api/v1/host/$id" >/dev/null 2>&1 || true
        done
        for i in $(seq 600); do
            [ -z "$(ls "$W/state/vms" 2>/dev/null)" ] && break
            sleep 0.1
        done
        for f in "$W"/state/vms/*/qemu.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
        kill "$RP" 2>/dev/null || true; wait "$RP" 2>/dev/null || true
        rm -rf "$W"
    }
    TOKENS=()
    trap cleanup EXIT
    cat > "$W/roost.toml" <<CFG
state_dir = "$W/state"
domain = "bench.test"
[http]
listen = "127.0.0.1:8080"
[network]
bridge = "rscale0"
subnet = "10.231.9.0/24"
[vm]
accel = "tcg"
image = "$IMAGE"
memory_mib = 256
boot_timeout_secs = 900
CFG
    "$BIN" serve --config "$W/roost.toml" >"$W/log" 2>&1 & RP=$!
    for i in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:8080/readyz && break; sleep 0.1; done
    ssh-keygen -q -t ed25519 -N "" -f "$W/key"
    KEY=$(cat "$W/key.pub")
    for i in $(seq "$N"); do
        curl -sf -o /dev/null -H "content-type: application/json" -d "{\"username\":\"user$i\",\"password\":\"password123\"}" http://127.0.0.1:8080/api/v1/auth/register
        TOKENS+=("$(curl -sf -H "content-type: application/json" -d "{\"username\":\"user$i\",\"password\":\"password123\"}" http://127.0.0.1:8080/api/v1/auth/login | sed -E "s/.*\"access_token\":\"([^\"]+)\".*/\1/")")
    done
    rss() { awk "/^VmRSS/ { print \$2 }" "/proc/$RP/status"; }
    # Creates hostings for users FROM..TO, waits until all of users 1..TO run, fetches each
    # site once through the proxy (its pools and routes are part of the cost).
    grow() {
        local i t0 running
        for i in $(seq "$1" "$2"); do
            curl -sf -o /dev/null -H "authorization: Bearer ${TOKENS[$((i - 1))]}" -H "content-type: application/json" -d "{\"ssh_public_key\":\"$KEY\"}" http://127.0.0.1:8080/api/v1/host
        done
        t0=$(date +%s)
        while :; do
            running=0
            for i in $(seq 1 "$2"); do
                curl -s -H "authorization: Bearer ${TOKENS[$((i - 1))]}" http://127.0.0.1:8080/api/v1/host | grep -q "\"state\":\"running\"" && running=$((running + 1))
            done
            [ "$running" = "$2" ] && break
            [ $(( $(date +%s) - t0 )) -lt 900 ] || { echo "only $running of $2 hostings reached running" >&2; exit 1; }
            sleep 1
        done
        for i in $(seq 1 "$2"); do curl -sf -o /dev/null "http://127.0.0.1:8080/user$i/"; done
    }
    # The slope between N/2 and N running hostings: a fixed start-up cost (and the memory the
    # password hashes of the sign-ups left behind) is not counted against the VMs.
    H=$((N / 2))
    grow 1 "$H"; r1=$(rss)
    grow $((H + 1)) "$N"; r2=$(rss)
    echo "| roost RSS | KiB |"
    echo "|---|---:|"
    printf "| %s hostings running | %s |\n" "$H" "$r1"
    printf "| %s hostings running | %s |\n" "$N" "$r2"
    printf "| per managed VM, (RSS at %s − RSS at %s) / %s (target < 1024) | %s |\n" "$N" "$H" "$((N - H))" "$(( (r2 - r1) / (N - H) ))"
' _ "$BIN" "$IMAGE" "$N"
