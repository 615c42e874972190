#!/bin/bash
# Boot a roost guest image with plain QEMU (TCG) and a NoCloud seed, and measure
# how long it takes until the VM serves HTTP and accepts an SSH login.
#
# This is also the "bare QEMU + cloud-init" baseline for benchmarks.
#
# Usage: scripts/bare-boot.sh [-i IMAGE_DIR] [-n RUNS] [-c CPUS] [-m MEM_MIB]
#                             [-t TIMEOUT_S] [-k] [-v]
#   -i  image directory with manifest.json (default /var/cache/roost/images/default)
#   -n  number of boots (default 1)
#   -c  vCPUs (default 1), -m memory in MiB (default 512)
#   -C  QEMU CPU model (default max)
#   -t  per-boot deadline in seconds (default 180)
#   -k  keep the work directory (serial log, seed, key) and print its path
#   -v  after each boot, print systemd-analyze and cloud-init timings (via ssh)
#   -x CMD  after each boot, run CMD in the VM over ssh and print its output (stderr)
#
# Output, one line per boot on stdout:
#   run=1 web_s=12.34 ssh_s=13.45 web_cpu_s=11.9 ssh_cpu_s=13.1 load=0.52
# (seconds from QEMU start until HTTP 200 / a successful "ssh true"; *_cpu_s is
# the CPU time QEMU had used by then, a figure that host load barely affects;
# load is the host's 1-minute load average), then, after a graceful shutdown
# over QMP (system_powerdown, as roost does; 60 s deadline):
#   run=1 powerdown_s=2.10
# and a final summary line:
#   summary runs=N web_s_median=.. ssh_s_median=.. web_s_min=.. ssh_s_min=..
#           web_cpu_s_median=.. ssh_cpu_s_median=..
# A boot that misses its deadline prints web_s=timeout / ssh_s=timeout and the
# script exits 1 at the end.
#
# Everything runs in a private network namespace (unshare --net) holding a bridge
# 10.231.0.1/24 and a tap; the namespace disappears with the script. QEMU and the
# work directory are removed by an EXIT trap.
set -euo pipefail

image=/var/cache/roost/images/default
runs=1
cpus=1
cpu=max
mem=512
timeout=180
keep=0
verbose=0
probe=
while getopts "i:n:c:C:m:t:x:kvh" o; do
  case $o in
    i) image=$OPTARG ;;
    n) runs=$OPTARG ;;
    c) cpus=$OPTARG ;;
    C) cpu=$OPTARG ;;
    m) mem=$OPTARG ;;
    t) timeout=$OPTARG ;;
    k) keep=1 ;;
    v) verbose=1 ;;
    x) probe=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done

# Re-enter ourselves in a fresh network namespace: nothing we create on the
# network side can outlive the script or touch the host's interfaces.
if [ -z "${ROOST_BAREBOOT_INNS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "bare-boot: must run as root" >&2; exit 1; }
  export ROOST_BAREBOOT_INNS=1
  exec unshare --net -- "$0" "$@"
fi

image=$(readlink -f "$image")
manifest="$image/manifest.json"
[ -f "$manifest" ] || { echo "bare-boot: no manifest at $manifest" >&2; exit 1; }
for t in qemu-system-x86_64 qemu-img mkfs.vfat mcopy ssh ssh-keygen curl jq ip socat; do
  command -v "$t" >/dev/null || { echo "bare-boot: missing $t" >&2; exit 1; }
done

boot=$(jq -r .boot "$manifest")
disk="$image/$(jq -r .disk "$manifest")"
cmdline=$(jq -r '.cmdline // ""' "$manifest")

host_ip=10.231.0.1
vm_ip=10.231.0.10
mac=52:54:00:e7:00:0a
user=bench

work=$(mktemp -d /tmp/bare-boot.XXXXXX)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ]; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  jobs -p | xargs -r kill 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "bare-boot: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip link set lo up
ip link add br0 type bridge
ip addr add "$host_ip/24" dev br0
ip link set br0 up
ip tuntap add tap0 mode tap
ip link set tap0 master br0
ip link set tap0 up

ssh-keygen -q -t ed25519 -N '' -C bare-boot -f "$work/id"
pubkey=$(cat "$work/id.pub")
sshopts=(-i "$work/id" -o BatchMode=yes -o StrictHostKeyChecking=no
         -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=2)

make_seed() {
  local d=$work/seed
  rm -rf "$d" "$work/seed.img"; mkdir -p "$d"
  cat > "$d/meta-data" <<MD
instance-id: bare-boot-$1-$RANDOM$RANDOM
local-hostname: bare-boot
MD
  cat > "$d/user-data" <<UD
#cloud-config
hostname: bare-boot
users:
  - name: $user
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - $pubkey
UD
  cat > "$d/network-config" <<NC
version: 2
ethernets:
  eth0:
    match:
      macaddress: "$mac"
    set-name: eth0
    addresses: [$vm_ip/24]
    routes:
      - to: 0.0.0.0/0
        via: $host_ip
NC
  # (mkfs.vfat warns that lowercase labels are unusual; NoCloud wants "cidata".)
  mkfs.vfat -n cidata -C "$work/seed.img" 1024 >/dev/null 2>&1
  mcopy -oi "$work/seed.img" "$d/meta-data" "$d/user-data" "$d/network-config" ::
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# CPU seconds (user+sys) QEMU has used so far: unlike wall time, this hardly
# depends on what else the host is running.
qemu_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' \
    "/proc/$qemu_pid/stat" 2>/dev/null || echo nan
}

# Poll until CMD succeeds; write the elapsed seconds since T0 to FILE.
poll_until() {
  local t0=$1 file=$2; shift 2
  local deadline=$(( ${t0%.*} + timeout ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if "$@" >/dev/null 2>&1; then
      echo "$(elapsed "$t0") $(qemu_cpu)" > "$file"; return 0
    fi
    sleep 0.1
  done
  echo "timeout nan" > "$file"
}
web_ok() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$vm_ip/")" = 200 ]; }
ssh_ok() { ssh "${sshopts[@]}" "$user@$vm_ip" true; }

webs=(); sshs=(); webcpus=(); sshcpus=(); failed=0
for run in $(seq 1 "$runs"); do
  make_seed "$run"
  rm -f "$work/overlay.qcow2"
  qemu-img create -q -f qcow2 -F qcow2 -b "$disk" "$work/overlay.qcow2" 4G
  # shellcheck disable=SC2054 # QEMU option values are comma-separated, not array items
  args=(-name bare-boot -accel tcg -machine q35 -cpu "$cpu" -smp "$cpus" -m "$mem"
        -nodefaults -no-user-config -display none
        -serial "file:$work/serial-$run.log"
        -qmp "unix:$work/qmp.sock,server=on,wait=off"
        -drive "file=$work/overlay.qcow2,if=virtio,format=qcow2,discard=unmap"
        -drive "file=$work/seed.img,if=virtio,format=raw,readonly=on"
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no
        -device "virtio-net-pci,netdev=n0,mac=$mac"
        -device virtio-rng-pci)
  if [ "$boot" = kernel ]; then
    args+=(-kernel "$image/$(jq -r .kernel "$manifest")"
           -initrd "$image/$(jq -r .initrd "$manifest")"
           -append "$cmdline")
  fi
  t0=$(now)
  qemu-system-x86_64 "${args[@]}" &
  qemu_pid=$!
  rm -f "$work/web" "$work/ssh"
  poll_until "$t0" "$work/web" web_ok &
  p1=$!
  poll_until "$t0" "$work/ssh" ssh_ok &
  p2=$!
  wait "$p1" "$p2"
  read -r web webcpu < "$work/web"; read -r sshs_ sshcpu < "$work/ssh"
  echo "run=$run web_s=$web ssh_s=$sshs_ web_cpu_s=$webcpu ssh_cpu_s=$sshcpu load=$(cut -d' ' -f1 /proc/loadavg)"
  [ "$web" = timeout ] || [ "$sshs_" = timeout ] && failed=1
  if [ "$verbose" = 1 ] && [ "$sshs_" != timeout ]; then
    ssh "${sshopts[@]}" "$user@$vm_ip" \
      'systemctl is-system-running --wait >/dev/null; systemd-analyze;
       systemd-analyze blame | head -30; systemd-analyze critical-chain;
       systemd-analyze critical-chain nginx.service ssh.service;
       sudo journalctl -b -o short-monotonic | grep -E "Start|Finish|Reached|kernel: Run|Listening|Mounted" | head -150;
       sudo grep -E "Finished|finish:|running modules" /var/log/cloud-init.log | tail -60;
       sudo cloud-init analyze show 2>/dev/null | tail -40' >&2 || true
  fi
  if [ -n "$probe" ] && [ "$sshs_" != timeout ]; then
    ssh "${sshopts[@]}" "$user@$vm_ip" "$probe" >&2 || true
  fi
  webs+=("$web"); sshs+=("$sshs_"); webcpus+=("$webcpu"); sshcpus+=("$sshcpu")
  # Graceful shutdown the way roost does it (ACPI power button over QMP).
  down=timeout
  if [ "$sshs_" != timeout ]; then
    t1=$(now)
    printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"system_powerdown"}' |
      socat -t 2 - "UNIX-CONNECT:$work/qmp.sock" >/dev/null 2>&1 || true
    for _ in $(seq 1 600); do
      kill -0 "$qemu_pid" 2>/dev/null || { down=$(elapsed "$t1"); break; }
      sleep 0.1
    done
  fi
  echo "run=$run powerdown_s=$down"
  kill "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  rm -f "$work/qmp.sock"
done

stats() { printf '%s\n' "$@" | grep -v -e timeout -e nan | sort -n |
  awk '{ a[NR] = $1 } END { if (NR == 0) { print "none none"; exit }
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
        printf "%.2f %.2f\n", m, a[1] }'; }
read -r wm wmin <<<"$(stats "${webs[@]}")"
read -r sm smin <<<"$(stats "${sshs[@]}")"
read -r wcm _ <<<"$(stats "${webcpus[@]}")"
read -r scm _ <<<"$(stats "${sshcpus[@]}")"
echo "summary runs=$runs web_s_median=$wm ssh_s_median=$sm web_s_min=$wmin ssh_s_min=$smin web_cpu_s_median=$wcm ssh_cpu_s_median=$scm"
exit "$failed"
