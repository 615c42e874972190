#!/usr/bin/env bash
# Benchmarks roost's HTTP proxy against nginx proxy_pass (keepalive upstream, 2 workers) and
# the SSH forwarder (splice and copy) against a direct connection, in one run, on loopback.
# Prints a markdown table. Bounded (about 2 minutes) and cleans up every process it starts.
#
#   scripts/bench-proxy.sh [ROUNDS] [all|http|ssh]
#       ROUNDS of 10 s wrk runs per proxy (default 2); the second argument picks the parts
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${1:-2}"
PARTS="${2:-all}"
BYTES=$((1 << 30))
P_UP=18081 P_NGX=18082 P_ROOST=18083 P_SINK=18091 P_SPLICE=18092 P_COPY=18093

apt_install wrk nginx-light
for p in $P_UP $P_NGX $P_ROOST $P_SINK $P_SPLICE $P_COPY; do
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
    local i
    for i in $(seq 100); do
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
# nginx as the reverse proxy, same worker count as roost's runtime (2).
nginx_conf ngx 2 "upstream vm { server 127.0.0.1:$P_UP; keepalive 64; }
    server { listen 127.0.0.1:$P_NGX;
      location /bench/ { proxy_pass http://vm/; proxy_http_version 1.1;
        proxy_set_header Connection \"\"; proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Forwarded-Prefix /bench; } }"
"$BIN" http "127.0.0.1:$P_ROOST" "127.0.0.1:$P_UP" & PIDS+=($!)
"$BIN" sink "127.0.0.1:$P_SINK" & PIDS+=($!)
"$BIN" forward $P_SPLICE "127.0.0.1:$P_SINK" splice & PIDS+=($!)
"$BIN" forward $P_COPY "127.0.0.1:$P_SINK" copy & PIDS+=($!)
for p in $P_UP $P_NGX $P_ROOST $P_SINK $P_SPLICE $P_COPY; do wait_port $p; done
curl -fsS "http://127.0.0.1:$P_ROOST/bench/index.html" | cmp -s - "$WORK/index.html" || die "roost proxy does not serve the page"
curl -fsS "http://127.0.0.1:$P_NGX/bench/index.html" | cmp -s - "$WORK/index.html" || die "nginx proxy does not serve the page"

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
read -r RPS[direct] P99[direct] < <(bench_http "http://127.0.0.1:$P_UP/bench/index.html")
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
    local best=0 i v
    for i in 1 2 3; do
        v=$("$BIN" send "127.0.0.1:$1" $BYTES)
        best=$(awk -v a="$best" -v b="$v" 'BEGIN{print (b>a)?b:a}')
    done
    echo "$best"
}
if [ "$PARTS" != http ]; then
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
echo "| SSH path (1 GiB, best of 3) | MiB/s | vs direct |"
echo "|---|---:|---:|"
echo "| forwarder, splice(2) | $T_SPLICE | $(ratio "$T_SPLICE" "$T_DIRECT") |"
echo "| forwarder, copy_bidirectional | $T_COPY | $(ratio "$T_COPY" "$T_DIRECT") |"
echo "| direct | $T_DIRECT | 1.00 |"
