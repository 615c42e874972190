#!/usr/bin/env bash
# Create-to-ready: seconds from `POST /api/v1/host` until the site answers 200 through
# roost's proxy and an SSH login through roost's forwarder succeeds, against a bare QEMU +
# NoCloud seed boot of the same image by scripts/bare-boot.sh, in the same run.
# Everything runs in network namespaces this script creates; all of it is removed.
#
#   scripts/bench-create.sh [RUNS]      (default 6 pairs, bare then roost; the mean and median
#                                        of the per-pair differences close the table)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS="${1:-6}"
XFER_ROUNDS="${XFER_ROUNDS:-5}"   # SSH transfers into the last run's VM, each way
XFER_MIB="${XFER_MIB:-64}"
IMAGE="${IMAGE_DIR:-/var/cache/roost/images/default}"
(cd "$ROOT" && cargo build -q --release)
BIN="$ROOT/target/release/roost"

roost_once() {
    unshare --net bash -euo pipefail -c '
        BIN=$1 IMAGE=$2 XFER=$3 XFER_MIB=$4
        ip link set lo up
        W=$(mktemp -d /tmp/roost-bench-create.XXXXXX)
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
        t0=$(date +%s.%N); up0=$(cut -d" " -f1 /proc/uptime)
        H=$(curl -sf -H "authorization: Bearer $T" -H "content-type: application/json" -d "{\"ssh_public_key\":\"$KEY\"}" http://127.0.0.1:8080/api/v1/host)
        ID=$(sed -E "s/.*\"id\":\"([^\"]+)\".*/\1/" <<<"$H")
        VMIP=$(sed -E "s/.*\"ip\":\"([^\"]+)\".*/\1/" <<<"$H")
        web=""; ssh_s=""; web_cpu=nan; ssh_cpu=nan; qpid=""
        # CPU seconds QEMU has used so far (as bare-boot.sh reports it).
        qemu_cpu() {
            awk -v hz="$(getconf CLK_TCK)" "{ sub(/^.*\\) /, \"\"); printf \"%.2f\", (\$12 + \$13) / hz }" \
                "/proc/$qpid/stat" 2>/dev/null || echo nan
        }
        for i in $(seq 3000); do
            now=$(date +%s.%N)
            [ -n "$qpid" ] || qpid=$(cat "$W"/state/vms/*/qemu.pid 2>/dev/null | head -1 || true)
            if [ -z "$web" ] && [ "$(curl -s -m 2 -o /dev/null -w "%{http_code}" http://127.0.0.1:8080/bench/)" = 200 ]; then
                web=$(echo "$now - $t0" | bc); web_cpu=$(qemu_cpu)
            fi
            if [ -n "$web" ] && ssh -p 22000 -i "$W/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=3 -o LogLevel=ERROR bench@127.0.0.1 true 2>/dev/null; then
                ssh_s=$(echo "$(date +%s.%N) - $t0" | bc); ssh_cpu=$(qemu_cpu); break
            fi
            sleep 0.1
        done
        # When QEMU started, in seconds after the POST: the host-side part of create-to-ready.
        st=$(awk "{ sub(/^.*\\) /, \"\"); print \$20 }" "/proc/$qpid/stat")
        spawn=$(echo "$st / $(getconf CLK_TCK) - $up0" | bc -l)
        # SSH bulk throughput into the real VM: through the roost forwarder (host port 22000)
        # and directly to the address of the VM on the bridge, alternating, XFER rounds of
        # XFER_MIB MiB each into `cat > /dev/null`. The guest times its own `cat` (the
        # session set-up is not part of the transfer).
        xfer=""
        if [ "$XFER" -gt 0 ] && [ -n "$ssh_s" ]; then
            head -c "${XFER_MIB}M" /dev/urandom > "$W/blob"
            so="-i $W/key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
            remote="s=\$(date +%s%N); cat > /dev/null; e=\$(date +%s%N); echo \$((e - s))"
            rate() { echo "scale=1; $XFER_MIB * 1000000000 / $1" | bc; }
            fwd=() dir=()
            for i in $(seq "$XFER"); do
                fwd+=("$(rate "$(ssh $so -p 22000 bench@127.0.0.1 "$remote" < "$W/blob")")")
                dir+=("$(rate "$(ssh $so "bench@$VMIP" "$remote" < "$W/blob")")")
            done
            xfer="xfer_fwd=$(printf "%s," "${fwd[@]}") xfer_direct=$(printf "%s," "${dir[@]}")"
        fi
        echo "web_s=$web ssh_s=$ssh_s spawn_s=$spawn web_cpu_s=$web_cpu ssh_cpu_s=$ssh_cpu $xfer"
    ' _ "$BIN" "$IMAGE" "${1:-0}" "$XFER_MIB"
}

apt_install bc
echo "| run | bare web s | bare ssh s | roost web s | roost ssh s | roost − bare web / ssh s | roost: QEMU started s | QEMU CPU s to web, bare / roost |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
BW=() BS=() RW=() RS=() DW=() DS=() SP=()
num() { sed -E "s/.*$1=([0-9.]*|nan|timeout).*/\1/" <<<"$2"; }
for r in $(seq "$RUNS"); do
    bare=$("$ROOT/scripts/bare-boot.sh" -i "$IMAGE" -n 1 | grep '^run=' | head -1)
    x=0; [ "$r" = "$RUNS" ] && x=$XFER_ROUNDS
    rst=$(roost_once "$x" | tail -1)
    [ "$x" = 0 ] || XF=$rst
    bw=$(num web_s "$bare") bs=$(num ssh_s "$bare") bc_=$(num web_cpu_s "$bare")
    rw=$(num web_s "$rst") rs=$(num ssh_s "$rst") sp=$(num spawn_s "$rst") rc_=$(num web_cpu_s "$rst")
    [[ "$bw$bs" =~ ^[0-9.]+$ ]] || die "bare run $r did not become ready: $bare"
    [[ "$rw$rs" =~ ^[0-9.]+$ ]] || die "roost run $r did not become ready: $rst"
    dw=$(echo "$rw - $bw" | bc) ds=$(echo "$rs - $bs" | bc)
    BW+=("$bw") BS+=("$bs") RW+=("$rw") RS+=("$rs") DW+=("$dw") DS+=("$ds") SP+=("$sp")
    printf "| %s | %.2f | %.2f | %.2f | %.2f | %+.2f / %+.2f | %.2f | %s / %s |\n" \
        "$r" "$bw" "$bs" "$rw" "$rs" "$dw" "$ds" "$sp" "$bc_" "$rc_"
done
mean() { printf '%s\n' "$@" | awk '{s+=$1} END {printf "%.2f", s/NR}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.2f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf "| mean of %s | %s | %s | %s | %s | %+.2f / %+.2f | %s | |\n" "$RUNS" \
    "$(mean "${BW[@]}")" "$(mean "${BS[@]}")" "$(mean "${RW[@]}")" "$(mean "${RS[@]}")" \
    "$(mean "${DW[@]}")" "$(mean "${DS[@]}")" "$(mean "${SP[@]}")"
printf "| median of %s | %s | %s | %s | %s | %+.2f / %+.2f | %s | |\n" "$RUNS" \
    "$(median "${BW[@]}")" "$(median "${BS[@]}")" "$(median "${RW[@]}")" "$(median "${RS[@]}")" \
    "$(median "${DW[@]}")" "$(median "${DS[@]}")" "$(median "${SP[@]}")"
echo
echo "Target: roost − bare ≤ 1 s. \"QEMU started\" is when roost's QEMU process began, counted"
echo "from the POST; everything after it is the guest's boot, through roost's proxy and forwarder."

if [ "${XFER_ROUNDS}" -gt 0 ]; then
    list() { sed -E "s/.*$1=([0-9.,]*).*/\1/; s/,$//; s/,/ /g" <<<"$XF"; }
    read -r -a F <<<"$(list xfer_fwd)"; read -r -a D <<<"$(list xfer_direct)"
    [ "${#F[@]}" -gt 0 ] && [ "${#D[@]}" -gt 0 ] || die "no SSH transfer results: $XF"
    mf=$(median "${F[@]}") md=$(median "${D[@]}")
    echo
    echo "| SSH into the last run's VM ($XFER_MIB MiB to \`cat > /dev/null\`, timed by the guest, median of $XFER_ROUNDS, alternating) | MiB/s | vs direct |"
    echo "|---|---:|---:|"
    printf "| through roost's forwarder (host port → VM :22) | %s | %.2f |\n" "$mf" "$(echo "$mf / $md" | bc -l)"
    printf "| direct to the VM's address on the bridge | %s | 1.00 |\n" "$md"
    echo "(each run: forwarder ${F[*]}; direct ${D[*]})"
fi
