#!/usr/bin/env bash
# Create-to-ready: seconds from `POST /api/v1/host` until the site answers 200 through
# roost's proxy and an SSH login through roost's forwarder succeeds, against a bare QEMU +
# NoCloud seed boot of the same image by scripts/bare-boot.sh, in the same run.
# Everything runs in network namespaces this script creates; all of it is removed.
#
#   scripts/bench-create.sh [RUNS]      (default 3 runs of each, alternating; means and the
#                                        difference of the means close the table)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS="${1:-3}"
IMAGE="${IMAGE_DIR:-/var/cache/roost/images/default}"
(cd "$ROOT" && cargo build -q --release)
BIN="$ROOT/target/release/roost"

roost_once() {
    unshare --net bash -euo pipefail -c '
        BIN=$1 IMAGE=$2
        ip link set lo up
        W=$(mktemp -d /tmp/roost-bench-create.XXXXXX)
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
subnet = "10.231.8.0/24"
[vm]
accel = "tcg"
image = "$IMAGE"
CFG
        "$BIN" serve --config "$W/roost.toml" >"$W/log" 2>&1 & RP=$!
        for i in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:8080/readyz && break; sleep 0.1; done
        ssh-keygen -q -t ed25519 -N "" -f "$W/key"
        curl -sf -o /dev/null -H "content-type: application/json" -d "{\"username\":\"bench\",\"password\":\"password123\"}" http://127.0.0.1:8080/api/v1/auth/register
        T=$(curl -sf -H "content-type: application/json" -d "{\"username\":\"bench\",\"password\":\"password123\"}" http://127.0.0.1:8080/api/v1/auth/login | sed -E "s/.*\"access_token\":\"([^\"]+)\".*/\1/")
        KEY=$(cat "$W/key.pub")
        t0=$(date +%s.%N)
        ID=$(curl -sf -H "authorization: Bearer $T" -H "content-type: application/json" -d "{\"ssh_public_key\":\"$KEY\"}" http://127.0.0.1:8080/api/v1/host | sed -E "s/.*\"id\":\"([^\"]+)\".*/\1/")
        web=""; ssh_s=""
        for i in $(seq 3000); do
            now=$(date +%s.%N)
            if [ -z "$web" ] && [ "$(curl -s -m 2 -o /dev/null -w "%{http_code}" http://127.0.0.1:8080/bench/)" = 200 ]; then
                web=$(echo "$now - $t0" | bc)
            fi
            if [ -n "$web" ] && ssh -p 22000 -i "$W/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=3 -o LogLevel=ERROR bench@127.0.0.1 true 2>/dev/null; then
                ssh_s=$(echo "$(date +%s.%N) - $t0" | bc); break
            fi
            sleep 0.1
        done
        echo "web_s=$web ssh_s=$ssh_s"
    ' _ "$BIN" "$IMAGE"
}

apt_install bc
echo "| run | bare QEMU web s | bare QEMU ssh s | roost web s | roost ssh s |"
echo "|---|---:|---:|---:|---:|"
BW=() BS=() RW=() RS=()
for r in $(seq "$RUNS"); do
    bare=$("$ROOT/scripts/bare-boot.sh" -i "$IMAGE" -n 1 | grep '^run=' | head -1)
    rst=$(roost_once | tail -1)
    bw=$(sed -E 's/.*web_s=([0-9.]+).*/\1/' <<<"$bare"); bs=$(sed -E 's/.*ssh_s=([0-9.]+).*/\1/' <<<"$bare")
    rw=$(sed -E 's/.*web_s=([0-9.]*).*/\1/' <<<"$rst"); rs=$(sed -E 's/.*ssh_s=([0-9.]*).*/\1/' <<<"$rst")
    [ -n "$rw" ] && [ -n "$rs" ] || die "roost run $r did not become ready: $rst"
    BW+=("$bw") BS+=("$bs") RW+=("$rw") RS+=("$rs")
    printf "| %s | %.2f | %.2f | %.2f | %.2f |\n" "$r" "$bw" "$bs" "$rw" "$rs"
done
mean() { printf '%s\n' "$@" | awk '{s+=$1} END {printf "%.2f", s/NR}'; }
mbw=$(mean "${BW[@]}") mbs=$(mean "${BS[@]}") mrw=$(mean "${RW[@]}") mrs=$(mean "${RS[@]}")
printf "| mean of %s | %s | %s | %s | %s |\n" "$RUNS" "$mbw" "$mbs" "$mrw" "$mrs"
printf "| roost − bare (target ≤ 1 s) | | | %+.2f | %+.2f |\n" \
    "$(echo "$mrw - $mbw" | bc)" "$(echo "$mrs - $mbs" | bc)"
