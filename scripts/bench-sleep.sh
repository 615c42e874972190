#!/usr/bin/env bash
# Sleeping while idle: what an idle VM costs awake and asleep (its QEMU's CPU seconds over
# the same wall time), and what the first request to a sleeping site costs against one to
# an awake site (curl's total time, through roost's proxy), all in one run on one VM.
# Everything runs in a network namespace this script creates; all of it is removed.
#
#   scripts/bench-sleep.sh [ROUNDS]     (default 5 wake-ups; WINDOW=20 s of CPU sampling)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS="${1:-5}"
WINDOW="${WINDOW:-20}"
IMAGE="${IMAGE_DIR:-/var/cache/roost/images/default}"
(cd "$ROOT" && cargo build -q --release)
BIN="$ROOT/target/release/roost"
apt_install bc

unshare --net bash -euo pipefail -c '
    BIN=$1 IMAGE=$2 ROUNDS=$3 WINDOW=$4
    ip link set lo up
    W=$(mktemp -d /tmp/roost-bench-sleep.XXXXXX)
    # Each VM QEMU runs as the VM uid and must pass through to the VM directory.
    chmod 711 "$W"
    cleanup() {
        curl -s -m 10 -X DELETE -H "authorization: Bearer ${T:-x}" "http://127.0.0.1:8080/api/v1/host/${ID:-x}" >/dev/null 2>&1 || true
        for i in $(seq 300); do
            [ -z "$(ls "$W/state/vms" 2>/dev/null)" ] && break
            sleep 0.1
        done
        for f in "$W"/state/vms/*/qemu.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
        kill "$RP" 2>/dev/null || true; wait "$RP" 2>/dev/null || true
        rm -rf "$W"
    }
    trap cleanup EXIT
    cat > "$W/roost.toml" <<CFG
state_dir = "$W/state"
domain = "bench.test"
[http]
listen = "127.0.0.1:8080"
[network]
bridge = "rbench0"
subnet = "10.231.9.0/24"
[vm]
accel = "tcg"
image = "$IMAGE"
sleep_after_secs = 5
CFG
    "$BIN" serve --config "$W/roost.toml" >"$W/log" 2>&1 & RP=$!
    for i in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:8080/readyz && break; sleep 0.1; done
    api() { curl -sf -H "authorization: Bearer $T" -H "content-type: application/json" "$@"; }
    curl -sf -o /dev/null -H "content-type: application/json" -d "{\"username\":\"bench\",\"password\":\"password123\"}" http://127.0.0.1:8080/api/v1/auth/register
    T=$(curl -sf -H "content-type: application/json" -d "{\"username\":\"bench\",\"password\":\"password123\"}" http://127.0.0.1:8080/api/v1/auth/login | sed -E "s/.*\"access_token\":\"([^\"]+)\".*/\1/")
    H=$(api -X POST -d "{}" http://127.0.0.1:8080/api/v1/host)
    ID=$(sed -E "s/.*\"id\":\"([^\"]+)\".*/\1/" <<<"$H")
    field() { api http://127.0.0.1:8080/api/v1/host | sed -E "s/.*\"$1\":(\"?)([a-z0-9]+)\1.*/\2/"; }
    for i in $(seq 3000); do [ "$(field state)" = running ] && break; sleep 0.1; done
    [ "$(field state)" = running ] || { echo "the VM never ran: $(api http://127.0.0.1:8080/api/v1/host)" >&2; tail -20 "$W/log" >&2; exit 1; }
    qpid=$(cat "$W"/state/vms/*/qemu.pid)
    cpu() { awk -v hz="$(getconf CLK_TCK)" "{ sub(/^.*\\) /, \"\"); printf \"%.3f\", (\$12 + \$13) / hz }" "/proc/$qpid/stat"; }
    # Settle after the boot (cloud-init final stage, first requests), then sample awake.
    for i in $(seq 200); do curl -s -o /dev/null http://127.0.0.1:8080/bench/; sleep 0.1; done
    sleep 10
    c0=$(cpu); sleep "$WINDOW"; c1=$(cpu)
    awake=$(echo "$c1 - $c0" | bc)
    # Asleep: the same window.
    api -X PUT -d "{\"enabled\":true}" http://127.0.0.1:8080/api/v1/host/sleep >/dev/null
    asleep_wait() { for i in $(seq 600); do [ "$(field asleep)" = true ] && return 0; sleep 0.1; done; echo "never asleep" >&2; exit 1; }
    asleep_wait
    c0=$(cpu); sleep "$WINDOW"; c1=$(cpu)
    asleep=$(echo "$c1 - $c0" | bc)
    # Wake-ups: the first request to a sleeping site, then one to the same site awake.
    wakes=() warm=()
    for r in $(seq "$ROUNDS"); do
        asleep_wait
        wakes+=("$(curl -s -o /dev/null -w "%{time_total}" http://127.0.0.1:8080/bench/)")
        warm+=("$(curl -s -o /dev/null -w "%{time_total}" http://127.0.0.1:8080/bench/)")
    done
    echo "awake_cpu=$awake asleep_cpu=$asleep wakes=$(IFS=,; echo "${wakes[*]}") warm=$(IFS=,; echo "${warm[*]}")"
' _ "$BIN" "$IMAGE" "$ROUNDS" "$WINDOW" | tail -1 > /tmp/roost-bench-sleep.out
R=$(cat /tmp/roost-bench-sleep.out); rm -f /tmp/roost-bench-sleep.out
num() { sed -E "s/.*$1=([0-9.,]*).*/\1/" <<<"$R"; }
aw=$(num awake_cpu) as=$(num asleep_cpu)
[[ "$aw$as" =~ ^[0-9.]+$ ]] || die "no CPU figures: $R"
median() { tr , '\n' <<<"$1" | sort -g | awk '{a[NR]=$1} END {printf "%.4f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mw=$(median "$(num wakes)") mr=$(median "$(num warm)")
echo "| one idle VM (TCG, 1 vCPU), ${WINDOW} s of wall time | QEMU CPU s | share of a core |"
echo "|---|---:|---:|"
printf "| awake, nobody visiting | %.2f | %.1f %% |\n" "$aw" "$(echo "100 * $aw / $WINDOW" | bc -l)"
printf "| asleep (paused by roost) | %.2f | %.1f %% |\n" "$as" "$(echo "100 * $as / $WINDOW" | bc -l)"
echo
echo "| GET /bench/ through roost's proxy (curl time_total, median of $ROUNDS) | ms | vs awake |"
echo "|---|---:|---:|"
printf "| first request to the sleeping site (wakes it) | %.1f | %.2f |\n" "$(echo "1000 * $mw" | bc -l)" "$(echo "$mw / $mr" | bc -l)"
printf "| next request, site awake | %.1f | 1.00 |\n" "$(echo "1000 * $mr" | bc -l)"
echo "(each round: wake $(num wakes | tr , ' '); awake $(num warm | tr , ' '))"
