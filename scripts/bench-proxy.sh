#!/usr/bin/env bash
# Benchmarks roost's HTTP proxy against nginx proxy_pass (keepalive upstream, 2 workers) and
# the SSH forwarder against a direct connection, in one run, on loopback: real SSH sessions
# (OpenSSH client and server, two ciphers) and raw TCP (splice and copy forwarders).
# Prints a markdown table. Bounded (about 2 minutes) and cleans up every process it starts.
#
#   scripts/bench-proxy.sh [ROUNDS] [all|http|ssh]
#       ROUNDS of 10 s wrk runs per proxy (default 2); the second argument picks the parts
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${1:-2}"
PARTS="${2:-all}"
BYTES=$((1 << 30))
P_UP=18081 P_NGX=18082 P_ROOST=18083 P_SINK=18091 P_SPLICE=18092 P_COPY=18093
P_SSHD=18094 P_SSHFWD=18095

had_nginx=0
dpkg-query -W -f='${Status}' nginx-light 2>/dev/null | grep -q "install ok installed" && had_nginx=1
# libwrap0: a shared library of the unpacked sshd below that openssh-client does not bring.
apt_install wrk nginx-light libwrap0
# Debian starts nginx.service on :80 when it installs it, where roost listens: the bench only
# needs the binary, so a service this script brought in is stopped and disabled again.
if [ "$had_nginx" = 0 ] && command -v systemctl >/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
fi
for p in $P_UP $P_NGX $P_ROOST $P_SINK $P_SPLICE $P_COPY $P_SSHD $P_SSHFWD; do
    ss -Hltn "sport = :$p" | grep -q . && die "port $p is busy"
done

log "cargo build --release --example proxy_bench"
(cd "$ROOT" && cargo build -q --release --example proxy_bench)
BIN="$ROOT/target/release/examples/proxy_bench"

WORK=$(mktemp -d /tmp/roost-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 100); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    die "nothing listens on port $1"
}

# A 612-byte static page, as nginx's default index.
head -c 612 /dev/zero | tr '\0' 'x' > "$WORK/index.html"

nginx_conf() { # name workers server-block
    mkdir -p "$WORK/$1"
    cat > "$WORK/$1/nginx.conf" <<CONF
user root;
worker_processes $2;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1/body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
    keepalive_requests 1000000;
    $3
}
CONF
    nginx -p "$WORK/$1" -c "$WORK/$1/nginx.conf" -g 'daemon off;' &
    PIDS+=($!)
}

# The upstream: one nginx serving the page (the VM's nginx in production).
nginx_conf up 1 "server { listen 127.0.0.1:$P_UP; root $WORK; location /bench/ { alias $WORK/; } location / { } }"
# nginx as the reverse proxy, same worker count as roost's workers (2), sending the VM the
# same forwarding headers roost sends.
nginx_conf ngx 2 "upstream vm { server 127.0.0.1:$P_UP; keepalive 64; }
    server { listen 127.0.0.1:$P_NGX;
      location /bench/ { proxy_pass http://vm/; proxy_http_version 1.1;
        proxy_set_header Connection \"\"; proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Forwarded-Prefix /bench; proxy_set_header X-Real-IP \$remote_addr;
        proxy_set_header X-Forwarded-Host \$host;
        proxy_set_header Forwarded \"for=\$remote_addr;host=\\\"\$host\\\";proto=\$scheme\"; } }"
"$BIN" http "127.0.0.1:$P_ROOST" "127.0.0.1:$P_UP" & PIDS+=($!)
"$BIN" sink "127.0.0.1:$P_SINK" & PIDS+=($!)
"$BIN" forward $P_SPLICE "127.0.0.1:$P_SINK" splice & PIDS+=($!)
"$BIN" forward $P_COPY "127.0.0.1:$P_SINK" copy & PIDS+=($!)
for p in $P_UP $P_NGX $P_ROOST $P_SINK $P_SPLICE $P_COPY; do wait_port $p; done
curl -fsS "http://127.0.0.1:$P_ROOST/bench/index.html" | cmp -s - "$WORK/index.html" || die "roost proxy does not serve the page"
curl -fsS "http://127.0.0.1:$P_NGX/bench/index.html" | cmp -s - "$WORK/index.html" || die "nginx proxy does not serve the page"

# A real OpenSSH server for the SSH-session rows. Its binary is taken from Debian's package
# without installing it (no ssh service appears on the host); it runs on loopback only, as
# root, with privilege separation (hence the `sshd` system user the package would create).
SSHD_DIR=/var/cache/roost/bench/openssh-server
SSHD="$SSHD_DIR/usr/sbin/sshd"
if [ "$PARTS" != http ]; then
    if [ ! -x "$SSHD" ]; then
        log "fetching OpenSSH's sshd (unpacked, not installed) into $SSHD_DIR"
        apt_lists_fresh || apt_update
        (cd "$WORK" && apt-get download -qq openssh-server >/dev/null)
        rm -rf "$SSHD_DIR.tmp" && mkdir -p "$SSHD_DIR.tmp"
        dpkg-deb -x "$WORK"/openssh-server_*.deb "$SSHD_DIR.tmp"
        rm -rf "$SSHD_DIR" && mv "$SSHD_DIR.tmp" "$SSHD_DIR"
    fi
    missing=$(ldd "$SSHD" | awk '/not found/{print $1}')
    [ -z "$missing" ] || die "the unpacked sshd lacks shared libraries: $missing (add their packages to apt_install above)"
    id sshd >/dev/null 2>&1 || useradd --system --home-dir /run/sshd --shell /usr/sbin/nologin sshd
    mkdir -p /run/sshd && chmod 755 /run/sshd
    ssh-keygen -q -t ed25519 -N "" -f "$WORK/hostkey"
    ssh-keygen -q -t ed25519 -N "" -f "$WORK/userkey"
    cp "$WORK/userkey.pub" "$WORK/authorized_keys"
    cat > "$WORK/sshd_config" <<CONF
ListenAddress 127.0.0.1:$P_SSHD
HostKey $WORK/hostkey
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
LogLevel ERROR
CONF
    "$SSHD" -D -e -f "$WORK/sshd_config" & PIDS+=($!)
    "$BIN" forward $P_SSHFWD "127.0.0.1:$P_SSHD" "${SSH_FORWARD_MODE:-splice}" & PIDS+=($!)
    wait_port $P_SSHD; wait_port $P_SSHFWD
fi

# wrk → "requests/s p99_ms"
bench_http() {
    local out rps p99
    out=$(wrk -t2 -c50 -d10s --latency "$1")
    rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
    p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
    echo "$rps $p99"
}

declare -A RPS P99
for name in direct roost nginx; do RPS[$name]=0; P99[$name]=0; done
if [ "$PARTS" != ssh ]; then
log "wrk: direct baseline"
read -r "RPS[direct]" "P99[direct]" < <(bench_http "http://127.0.0.1:$P_UP/bench/index.html")
for r in $(seq "$ROUNDS"); do
    for name in roost nginx; do
        port=$P_ROOST; [ $name = nginx ] && port=$P_NGX
        log "wrk round $r: $name"
        read -r rps p99 < <(bench_http "http://127.0.0.1:$port/bench/index.html")
        echo "  $name round $r: $rps req/s, p99 $p99 ms" >&2
        RPS[$name]=$(awk -v a="${RPS[$name]}" -v b="$rps" 'BEGIN{print a+b}')
        P99[$name]=$(awk -v a="${P99[$name]}" -v b="$p99" 'BEGIN{print a+b}')
    done
done
for name in roost nginx; do
    RPS[$name]=$(awk -v a="${RPS[$name]}" -v n="$ROUNDS" 'BEGIN{printf "%.0f", a/n}')
    P99[$name]=$(awk -v a="${P99[$name]}" -v n="$ROUNDS" 'BEGIN{printf "%.2f", a/n}')
done
fi

# 1 GiB through each path, best of 3 → MiB/s
bench_tcp() {
    local best=0 v
    for _ in 1 2 3; do
        v=$("$BIN" send "127.0.0.1:$1" $BYTES)
        best=$(awk -v a="$best" -v b="$v" 'BEGIN{print (b>a)?b:a}')
    done
    echo "$best"
}
# 1 GiB through one SSH session (`cat > /dev/null` on the server) → MiB/s
ssh_once() { # port cipher
    local t0 t1
    t0=$(date +%s.%N)
    head -c $BYTES /dev/zero | ssh -p "$1" -c "$2" -i "$WORK/userkey" -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        root@127.0.0.1 'cat > /dev/null' || die "ssh through port $1 failed"
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v n=$BYTES 'BEGIN{printf "%.1f", n/1048576/(b-a)}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# Direct and forwarded runs alternate, so a slow spell of this shared machine hits both;
# the medians of SSH_RUNS each → "direct forwarded".
bench_ssh() { # cipher
    local d=() f=()
    for _ in $(seq "${SSH_RUNS:-5}"); do
        d+=("$(ssh_once $P_SSHD "$1")")
        f+=("$(ssh_once $P_SSHFWD "$1")")
    done
    echo "$(median "${d[@]}") $(median "${f[@]}")"
}

if [ "$PARTS" != http ]; then
log "1 GiB over SSH: direct and through the forwarder, two ciphers"
read -r S_DIRECT_CHACHA S_FWD_CHACHA < <(bench_ssh chacha20-poly1305@openssh.com)
read -r S_DIRECT_AES S_FWD_AES < <(bench_ssh aes128-gcm@openssh.com)
log "1 GiB: direct, splice forwarder, copy forwarder"
T_DIRECT=$(bench_tcp $P_SINK)
T_SPLICE=$(bench_tcp $P_SPLICE)
T_COPY=$(bench_tcp $P_COPY)
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(uname -r)"
echo
if [ "$PARTS" != ssh ]; then
echo "| HTTP (wrk -t2 -c50 -d10s, 612 B page, mean of $ROUNDS) | requests/s | p99 ms | vs nginx |"
echo "|---|---:|---:|---:|"
echo "| roost proxy | ${RPS[roost]} | ${P99[roost]} | $(ratio "${RPS[roost]}" "${RPS[nginx]}") |"
echo "| nginx proxy_pass keepalive, 2 workers | ${RPS[nginx]} | ${P99[nginx]} | 1.00 |"
echo "| direct to upstream (reference) | ${RPS[direct]} | ${P99[direct]} | $(ratio "${RPS[direct]}" "${RPS[nginx]}") |"
echo
fi
[ "$PARTS" = http ] && exit 0
echo "| SSH session (1 GiB to \`cat > /dev/null\`, OpenSSH 9.2 on loopback, median of ${SSH_RUNS:-5}, alternating) | MiB/s | vs direct |"
echo "|---|---:|---:|"
echo "| forwarder, chacha20-poly1305 (OpenSSH's default) | $S_FWD_CHACHA | $(ratio "$S_FWD_CHACHA" "$S_DIRECT_CHACHA") |"
echo "| direct, chacha20-poly1305 | $S_DIRECT_CHACHA | 1.00 |"
echo "| forwarder, aes128-gcm | $S_FWD_AES | $(ratio "$S_FWD_AES" "$S_DIRECT_AES") |"
echo "| direct, aes128-gcm | $S_DIRECT_AES | 1.00 |"
echo
echo "| Raw TCP, no SSH (1 GiB, best of 3; the forwarder's worst case) | MiB/s | vs direct |"
echo "|---|---:|---:|"
echo "| forwarder, splice(2) | $T_SPLICE | $(ratio "$T_SPLICE" "$T_DIRECT") |"
echo "| forwarder, copy_bidirectional | $T_COPY | $(ratio "$T_COPY" "$T_DIRECT") |"
echo "| direct | $T_DIRECT | 1.00 |"
