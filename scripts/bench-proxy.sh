#!/usr/bin/env bash
# Benchmarks roost's HTTP proxy against nginx proxy_pass (keepalive upstream, 2 workers) and
# the SSH forwarder against a direct connection, in one run, on loopback: real SSH sessions
# (OpenSSH client and server, two ciphers) and raw TCP (splice and copy forwarders).
# The `https` part measures roost's proxy with its TLS listener against nginx terminating TLS
# (the same ECDSA P-256 certificate, made here by openssl for bench.test and *.bench.test),
# both proxying to the `http` part's upstream: requests on keep-alive connections, and a
# new connection with a full handshake per request (`openssl s_time -new`).
# The `transparent` part measures, in network namespaces of its own (a client, the host with
# its bridge, a guest behind it), direct routed sessions against the forwarder connecting
# from the host's address and from the client's own (`ForwardLimits::client_mark`).
# Prints markdown tables. Bounded (on a busy 2-core machine: http about 2 minutes, https 2
# plus its build, ssh and transparent 3 to 7 each; every session has a timeout) and cleans
# up every process and namespace it creates, also when it fails or is interrupted.
#
#   scripts/bench-proxy.sh [ROUNDS] [all|http|https|ssh|transparent]
#       ROUNDS of 10 s wrk (and s_time) runs per proxy (default 2); the second argument picks
#       the parts.
#       SSH_RUNS (default 5): SSH sessions per path and cipher; the median is reported.
#       TLS_CLIENTS (default 2 per CPU): parallel `openssl s_time` clients of the handshake rows.
#       The binaries are built into ${CARGO_TARGET_DIR:-$ROOT/target}.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${1:-2}"
PARTS="${2:-all}"
case "$PARTS" in
    all | http | https | ssh | transparent) ;;
    *) die "unknown part '$PARTS' (all, http, https, ssh or transparent)" ;;
esac
want() { [ "$PARTS" = all ] || [ "$PARTS" = "$1" ]; }
BYTES=$((1 << 30))
P_UP=18081 P_NGX=18082 P_ROOST=18083 P_NGX_TLS=18084 P_ROOST_TLS=18085 P_SINK=18091 P_SPLICE=18092 P_COPY=18093
P_SSHD=18094 P_SSHFWD=18095

had_nginx=0
pkgs=()
if want http || want https; then
    dpkg-query -W -f='${Status}' nginx-light 2>/dev/null | grep -q "install ok installed" && had_nginx=1
    pkgs+=(wrk nginx-light)
fi
# The https part's openssl comes with ca-certificates (in the runtime set), its unshare with
# util-linux (essential): neither is listed, so that installing never upgrades them.
# libwrap0: a shared library of the unpacked sshd below that openssh-client does not bring.
if want ssh || want transparent; then pkgs+=(libwrap0); fi
apt_install "${pkgs[@]}"
# Debian starts nginx.service on :80 when it installs it, where roost listens: the bench only
# needs the binary, so a service this script brought in is stopped and disabled again.
if { want http || want https; } && [ "$had_nginx" = 0 ] && command -v systemctl >/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
fi
busy=()
{ want http || want https; } && busy+=("$P_UP")
want http && busy+=("$P_NGX" "$P_ROOST")
want https && busy+=("$P_NGX_TLS" "$P_ROOST_TLS")
want ssh && busy+=("$P_SINK" "$P_SPLICE" "$P_COPY" "$P_SSHD" "$P_SSHFWD")
for p in "${busy[@]}"; do
    ss -Hltn "sport = :$p" | grep -q . && die "port $p is busy"
done

log "cargo build --release --example proxy_bench"
(cd "$ROOT" && cargo build -q --release --example proxy_bench)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/examples/proxy_bench"
[ -x "$BIN" ] || die "no $BIN after the build"

WORK=$(mktemp -d /tmp/roost-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
NETNS=()
STAGE=
cleanup() {
    local pid ns
    [ -z "$STAGE" ] || kill "$STAGE" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Whatever is still inside this script's namespaces (sshd's session processes) is
    # this script's too; a namespace with a process left would outlive its deletion.
    for ns in "${NETNS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a measurement in the background and waits for it, leaving its output in
# $WORK/stage.out: bash runs the INT/TERM trap only between foreground commands, so a
# measurement in the foreground (minutes of SSH sessions) would hold the cleanup back.
stage() {
    "$@" >"$WORK/stage.out" &
    STAGE=$!
    wait "$STAGE"
    STAGE=
}

# Runs a command in network namespace $1, or here when $1 is "-".
in_ns() {
    local ns=$1
    shift
    if [ "$ns" = - ]; then "$@"; else ip netns exec "$ns" "$@"; fi
}

wait_port() { # port [netns]
    for _ in $(seq 100); do
        in_ns "${2:--}" ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    die "nothing listens on port $1${2:+ in $2}"
}

# A 612-byte static page, as nginx's default index.
head -c 612 /dev/zero | tr '\0' 'x' > "$WORK/index.html"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

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

# nginx as the reverse proxy, sending the VM the same forwarding headers roost sends.
NGX_UPSTREAM="upstream vm { server 127.0.0.1:$P_UP; keepalive 64; }"
NGX_LOCATION="location /bench/ { proxy_pass http://vm/; proxy_http_version 1.1;
        proxy_set_header Connection \"\"; proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Forwarded-Prefix /bench; proxy_set_header X-Real-IP \$remote_addr;
        proxy_set_header X-Forwarded-Host \$host;
        proxy_set_header Forwarded \"for=\$remote_addr;host=\\\"\$host\\\";proto=\$scheme\"; }"
if want http || want https; then
# The upstream: one nginx serving the page (the VM's nginx in production).
nginx_conf up 1 "server { listen 127.0.0.1:$P_UP; root $WORK; location /bench/ { alias $WORK/; } location / { } }"
wait_port $P_UP
fi
if want http; then
# Same worker count as roost's workers (2).
nginx_conf ngx 2 "$NGX_UPSTREAM
    server { listen 127.0.0.1:$P_NGX;
      $NGX_LOCATION }"
"$BIN" http "127.0.0.1:$P_ROOST" "127.0.0.1:$P_UP" & PIDS+=($!)
for p in $P_NGX $P_ROOST; do wait_port $p; done
curl -fsS "http://127.0.0.1:$P_ROOST/bench/index.html" | cmp -s - "$WORK/index.html" || die "roost proxy does not serve the page"
curl -fsS "http://127.0.0.1:$P_NGX/bench/index.html" | cmp -s - "$WORK/index.html" || die "nginx proxy does not serve the page"
fi

# The https part: a test CA and one leaf for bench.test and *.bench.test, ECDSA P-256 keys
# (PKCS#8), served by both proxies from the same two files.
TLS="$WORK/tls"
# Runs a command for which bench.test is 127.0.0.1 (wrk then sends it as SNI and Host): in
# a mount namespace of its own where $WORK/hosts is bound over /etc/hosts, which stays as
# it is for everything else.
resolving() {
    # shellcheck disable=SC2016 # expanded by that sh
    unshare --mount --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' \
        "$WORK/hosts" "$@"
}
# The TLS version, cipher suite and key-exchange group a handshake with port $1 settles on.
tls_params() {
    timeout 20 openssl s_client -connect "127.0.0.1:$1" -servername bench.test </dev/null 2>/dev/null |
        awk '/^New, /{gsub(",", ""); v=$2; c=$NF} /^Server Temp Key:/{gsub(",", ""); k=$4} END{print v, c, k}'
}
# Session tickets sent by port $1 in one TLS 1.3 handshake (and its HTTP/1.0 request).
tls_tickets() {
    printf 'GET /bench/index.html HTTP/1.0\r\n\r\n' |
        timeout 20 openssl s_client -msg -ign_eof -connect "127.0.0.1:$1" -servername bench.test 2>/dev/null |
        grep -c 'NewSessionTicket' || true
}
# "yes" when port $1 resumes the session of an earlier handshake (with its ticket), else "no".
tls_resumes() {
    local out
    printf 'GET /bench/index.html HTTP/1.0\r\n\r\n' |
        timeout 20 openssl s_client -ign_eof -sess_out "$TLS/session.$1" -connect "127.0.0.1:$1" \
            -servername bench.test >/dev/null 2>&1 || true
    out=$(timeout 20 openssl s_client -sess_in "$TLS/session.$1" -connect "127.0.0.1:$1" \
        -servername bench.test </dev/null 2>/dev/null) || true
    if grep -q '^Reused,' <<<"$out"; then echo yes; else echo no; fi
}
if want https; then
    mkdir -p "$TLS"
    cat > "$TLS/x509.cnf" <<'CNF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:bench.test, DNS:*.bench.test
authorityKeyIdentifier = keyid
CNF
    for k in ca key; do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/$k.pem"
    done
    openssl req -x509 -new -key "$TLS/ca.pem" -subj "/CN=roost bench CA" -days 2 -sha256 \
        -config "$TLS/x509.cnf" -extensions ca -out "$TLS/ca.crt"
    openssl req -new -key "$TLS/key.pem" -subj "/CN=bench.test" -config "$TLS/x509.cnf" \
        -out "$TLS/leaf.csr"
    openssl x509 -req -in "$TLS/leaf.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.pem" \
        -CAserial "$TLS/ca.srl" -CAcreateserial -days 2 -sha256 \
        -extfile "$TLS/x509.cnf" -extensions leaf -out "$TLS/cert.pem" 2>/dev/null
    openssl verify -CAfile "$TLS/ca.crt" "$TLS/cert.pem" >/dev/null || die "the benchmark's certificate does not verify"
    echo "127.0.0.1 localhost bench.test" > "$WORK/hosts"
    # nginx terminating TLS: one worker per CPU (as roost's proxy has), TLS 1.2 and 1.3, the
    # key-exchange groups of roost's rustls (ring) in its order; no session cache and no
    # ticket keys, so it resumes nothing (OpenSSL still sends TLS 1.3 tickets). Keep-alive
    # and upstream as in the http part; server_name gives \$host a value for s_time's
    # requests, which have no Host header.
    nginx_conf ngxs "$(nproc)" "$NGX_UPSTREAM
    server { listen 127.0.0.1:$P_NGX_TLS ssl; server_name bench.test;
      ssl_certificate $TLS/cert.pem; ssl_certificate_key $TLS/key.pem;
      ssl_protocols TLSv1.2 TLSv1.3; ssl_ecdh_curve X25519:prime256v1:secp384r1;
      ssl_session_cache off; ssl_session_tickets off;
      $NGX_LOCATION }"
    PID_NGX_TLS=$!
    "$BIN" https "127.0.0.1:$P_ROOST_TLS" "127.0.0.1:$P_UP" "$TLS/cert.pem" "$TLS/key.pem" & PIDS+=($!)
    PID_ROOST_TLS=$!
    for p in $P_NGX_TLS $P_ROOST_TLS; do wait_port $p; done
    for p in $P_ROOST_TLS $P_NGX_TLS; do
        # What wrk asks (SNI and Host bench.test, HTTP/1.1), the certificate verified.
        curl -fsS --http1.1 --cacert "$TLS/ca.crt" --resolve "bench.test:$p:127.0.0.1" \
            "https://bench.test:$p/bench/index.html" | cmp -s - "$WORK/index.html" ||
            die "HTTPS on port $p does not serve the page"
        # What s_time asks (no SNI, HTTP/1.0 without Host).
        out=$(printf 'GET /bench/index.html HTTP/1.0\r\n\r\n' |
            timeout 20 openssl s_client -quiet -connect "127.0.0.1:$p" 2>/dev/null) || true
        [[ "$out" == "HTTP/1."[01]" 200 "* && "$out" == *"$(<"$WORK/index.html")" ]] ||
            die "HTTPS on port $p does not serve the page to s_time's request: ${out:0:200}"
    done
    # A site's own name, under the wildcard (host-routed by roost).
    curl -fsS --cacert "$TLS/ca.crt" --resolve "bench.bench.test:$P_ROOST_TLS:127.0.0.1" \
        "https://bench.bench.test:$P_ROOST_TLS/index.html" | cmp -s - "$WORK/index.html" ||
        die "roost does not serve bench.bench.test over HTTPS"
    TLS_ROOST=$(tls_params $P_ROOST_TLS)
    TLS_NGX=$(tls_params $P_NGX_TLS)
    [ "$TLS_ROOST" = "$TLS_NGX" ] || die "the handshakes differ: roost $TLS_ROOST, nginx $TLS_NGX"
    TICKETS_ROOST=$(tls_tickets $P_ROOST_TLS)
    TICKETS_NGX=$(tls_tickets $P_NGX_TLS)
    RESUMES_ROOST=$(tls_resumes $P_ROOST_TLS)
    RESUMES_NGX=$(tls_resumes $P_NGX_TLS)
    log "https: both $TLS_ROOST; tickets per handshake / resumes: roost $TICKETS_ROOST / $RESUMES_ROOST, nginx $TICKETS_NGX / $RESUMES_NGX"
fi
if want ssh; then
"$BIN" sink "127.0.0.1:$P_SINK" & PIDS+=($!)
"$BIN" forward $P_SPLICE "127.0.0.1:$P_SINK" splice & PIDS+=($!)
"$BIN" forward $P_COPY "127.0.0.1:$P_SINK" copy & PIDS+=($!)
for p in $P_SINK $P_SPLICE $P_COPY; do wait_port $p; done
fi

# A real OpenSSH server for the SSH-session rows. Its binary is taken from Debian's package
# without installing it (no ssh service appears on the host); it runs on loopback only (or
# in the guest namespace), as root, with privilege separation (hence the `sshd` system user
# the package would create).
SSHD_DIR=/var/cache/roost/bench/openssh-server
SSHD="$SSHD_DIR/usr/sbin/sshd"
sshd_config() { # name listen-address:port
    cat > "$WORK/sshd_config.$1" <<CONF
ListenAddress $2
HostKey $WORK/hostkey
PidFile $WORK/sshd.$1.pid
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
LogLevel ERROR
CONF
}
if want ssh || want transparent; then
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
fi
if want ssh; then
    sshd_config lo "127.0.0.1:$P_SSHD"
    "$SSHD" -D -e -f "$WORK/sshd_config.lo" & PIDS+=($!)
    "$BIN" forward $P_SSHFWD "127.0.0.1:$P_SSHD" "${SSH_FORWARD_MODE:-splice}" & PIDS+=($!)
    wait_port $P_SSHD; wait_port $P_SSHFWD
fi

# The transparent part's world, all in namespaces of this script (documentation and private
# addresses only; no namespace has a route out of the three):
#   client 198.51.100.7/24 (default via 198.51.100.1) ── veth ── host 198.51.100.1/24
#   host: bridge bbr0 10.99.0.1/24, forwarding on, the forwarders on 198.51.100.1, the
#         policy route of transparent replies and the firewall's two mark chains
#   guest 10.99.0.2/24 (default via 10.99.0.1) ── veth, a port of bbr0; sshd and a sink
NS_CLIENT="roost-bench-$$-client" NS_HOST="roost-bench-$$-host" NS_GUEST="roost-bench-$$-guest"
BRIDGE=bbr0 CLIENT_IP=198.51.100.7 HOST_IP=198.51.100.1 GW_IP=10.99.0.1 GUEST_IP=10.99.0.2
# In the namespaces (no clash with anything on the machine): sshd, the sink, and the
# forwarders of SSH and raw TCP, each from the host's and from the client's address.
T_SSHD=22 T_SINK=9000 T_FWD=2201 T_TFWD=2202 T_FWD_TCP=2211 T_TFWD_TCP=2212
if want transparent; then
    log "transparent: namespaces $NS_CLIENT, $NS_HOST, $NS_GUEST"
    for ns in "$NS_CLIENT" "$NS_HOST" "$NS_GUEST"; do
        ip netns add "$ns"
        NETNS+=("$ns")
        ip -n "$ns" link set lo up
    done
    ip -n "$NS_HOST" link add "$BRIDGE" type bridge
    ip -n "$NS_HOST" addr add "$GW_IP/24" dev "$BRIDGE"
    ip -n "$NS_HOST" link set "$BRIDGE" up
    ip -n "$NS_HOST" link add vguest type veth peer name eth0 netns "$NS_GUEST"
    ip -n "$NS_HOST" link set vguest master "$BRIDGE" up
    ip -n "$NS_GUEST" addr add "$GUEST_IP/24" dev eth0
    ip -n "$NS_GUEST" link set eth0 up
    ip -n "$NS_GUEST" route add default via "$GW_IP"
    ip -n "$NS_HOST" link add vclient type veth peer name eth0 netns "$NS_CLIENT"
    ip -n "$NS_HOST" addr add "$HOST_IP/24" dev vclient
    ip -n "$NS_HOST" link set vclient up
    ip -n "$NS_CLIENT" addr add "$CLIENT_IP/24" dev eth0
    ip -n "$NS_CLIENT" link set eth0 up
    ip -n "$NS_CLIENT" route add default via "$HOST_IP"
    # The direct path is routed by the host (these sysctls are the host namespace's own).
    ip netns exec "$NS_HOST" sysctl -qw net.ipv4.conf.all.forwarding=1
    # roost's own code for the policy route (net::egress::ensure_client_routing), and the
    # firewall's client_mark_out/client_mark_in chains (net::firewall) with its mark.
    MARK=$(ip netns exec "$NS_HOST" "$BIN" client-routing "$BRIDGE")
    ip -n "$NS_HOST" rule show | grep -q "fwmark $MARK iif $BRIDGE lookup" ||
        die "no policy rule for mark $MARK after client-routing: $(ip -n "$NS_HOST" rule show)"
    ip netns exec "$NS_HOST" nft -f - <<NFT
table inet roost_bench {
    chain client_mark_out {
        type filter hook output priority mangle; policy accept;
        oifname "$BRIDGE" meta mark $MARK ct mark set $MARK
    }
    chain client_mark_in {
        type filter hook prerouting priority mangle; policy accept;
        iifname "$BRIDGE" ct mark $MARK meta mark set $MARK
    }
}
NFT
    sshd_config guest "$GUEST_IP:$T_SSHD"
    ip netns exec "$NS_GUEST" "$SSHD" -D -e -f "$WORK/sshd_config.guest" & PIDS+=($!)
    ip netns exec "$NS_GUEST" "$BIN" sink "$GUEST_IP:$T_SINK" & PIDS+=($!)
    # The forwarders log their own lines (e.g. "ssh client address not kept") here.
    fwd_ns() { # port target log [transparent]
        RUST_LOG=info ip netns exec "$NS_HOST" "$BIN" forward "$1" "$2" splice "$HOST_IP" \
            ${4:+"$4"} 2>"$WORK/$3.log" &
        PIDS+=($!)
    }
    fwd_ns $T_FWD "$GUEST_IP:$T_SSHD" fwd
    fwd_ns $T_TFWD "$GUEST_IP:$T_SSHD" tfwd transparent
    fwd_ns $T_FWD_TCP "$GUEST_IP:$T_SINK" fwd-tcp
    fwd_ns $T_TFWD_TCP "$GUEST_IP:$T_SINK" tfwd-tcp transparent
    wait_port $T_SSHD "$NS_GUEST"; wait_port $T_SINK "$NS_GUEST"
    for p in $T_FWD $T_TFWD $T_FWD_TCP $T_TFWD_TCP; do wait_port "$p" "$NS_HOST"; done
fi

# wrk → "requests/s p99_ms requests" (https URLs name bench.test, see `resolving`)
bench_http() {
    local out rps p99 n
    case "$1" in
        https://*) out=$(resolving wrk -t2 -c50 -d10s --latency "$1") ;;
        *) out=$(wrk -t2 -c50 -d10s --latency "$1") ;;
    esac
    rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
    p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
    n=$(awk '/ requests in /{print $1}' <<<"$out")
    echo "$rps $p99 $n"
}

# TLS_CLIENTS parallel `openssl s_time -new` clients on port $1 for 10 s: each connection is
# a full handshake (the client never offers a session to resume), one HTTP/1.0 GET of the
# page and the server's close → "handshakes/s handshakes"
bench_tls_new() {
    local t0 t1 i pids=()
    rm -f "$WORK"/s_time.*
    t0=$(date +%s.%N)
    for i in $(seq "$TLS_CLIENTS"); do
        timeout 60 openssl s_time -connect "127.0.0.1:$1" -new -time 10 -www /bench/index.html \
            >"$WORK/s_time.$i" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "openssl s_time to port $1 failed"; done
    t1=$(date +%s.%N)
    # Every client must have run to its end, each connection having read at least the page.
    cat "$WORK"/s_time.* | awk -v t0="$t0" -v t1="$t1" -v clients="$TLS_CLIENTS" '
        /connections in .* real seconds/ {n += $1; runs++; if ($(NF-4) < 612) short = 1}
        END {if (runs != clients || short || !n) exit 1; printf "%.0f %d\n", n / (t1 - t0), n}' ||
        die "openssl s_time to port $1: $(grep -ah 'connections in\|rror' "$WORK"/s_time.* | head -n 4)"
}

# CPU time (user and system, in clock ticks) a process and its children (nginx's workers)
# have used so far.
cpu_ticks() {
    local t=0 p kids
    mapfile -t kids < <(pgrep -P "$1")
    for p in "$1" "${kids[@]}"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
sum() { awk -v a="$1" -v b="$2" 'BEGIN{print a+b}'; }
# Microseconds of CPU per item: ticks items
per_item() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t * 1e6 / hz / n}'; }

declare -A RPS P99
for name in direct roost nginx; do RPS[$name]=0; P99[$name]=0; done
if want http; then
log "wrk: direct baseline"
read -r "RPS[direct]" "P99[direct]" _ < <(bench_http "http://127.0.0.1:$P_UP/bench/index.html")
for r in $(seq "$ROUNDS"); do
    for name in roost nginx; do
        port=$P_ROOST; [ $name = nginx ] && port=$P_NGX
        log "wrk round $r: $name"
        read -r rps p99 _ < <(bench_http "http://127.0.0.1:$port/bench/index.html")
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

# HTTPS: per round, keep-alive then new connections, roost and nginx alternating; each
# with the CPU time the proxy's own processes used per request.
declare -A K_RPS K_P99 K_CPU N_HPS N_CPU
for name in roost nginx; do K_RPS[$name]=0; K_P99[$name]=0; K_CPU[$name]=0; N_HPS[$name]=0; N_CPU[$name]=0; done
TLS_CLIENTS=${TLS_CLIENTS:-$((2 * $(nproc)))}
if want https; then
for r in $(seq "$ROUNDS"); do
    for name in roost nginx; do
        port=$P_ROOST_TLS pid=$PID_ROOST_TLS
        [ $name = nginx ] && port=$P_NGX_TLS pid=$PID_NGX_TLS
        log "https round $r: $name, keep-alive (wrk)"
        c0=$(cpu_ticks "$pid")
        n=
        read -r rps p99 n < <(bench_http "https://bench.test:$port/bench/index.html") || true
        [ -n "$n" ] || die "wrk over HTTPS to $name failed"
        cpu=$(per_item $(($(cpu_ticks "$pid") - c0)) "$n")
        echo "  $name round $r: $rps req/s, p99 $p99 ms, $cpu µs CPU/request" >&2
        K_RPS[$name]=$(sum "${K_RPS[$name]}" "$rps")
        K_P99[$name]=$(sum "${K_P99[$name]}" "$p99")
        K_CPU[$name]=$(sum "${K_CPU[$name]}" "$cpu")
    done
    for name in roost nginx; do
        port=$P_ROOST_TLS pid=$PID_ROOST_TLS
        [ $name = nginx ] && port=$P_NGX_TLS pid=$PID_NGX_TLS
        log "https round $r: $name, a new connection per request ($TLS_CLIENTS × openssl s_time -new)"
        c0=$(cpu_ticks "$pid")
        n=
        read -r hps n < <(bench_tls_new "$port") || true
        [ -n "$n" ] || die "openssl s_time to $name failed"
        cpu=$(per_item $(($(cpu_ticks "$pid") - c0)) "$n")
        echo "  $name round $r: $hps handshakes/s, $cpu µs CPU/handshake" >&2
        N_HPS[$name]=$(sum "${N_HPS[$name]}" "$hps")
        N_CPU[$name]=$(sum "${N_CPU[$name]}" "$cpu")
    done
done
for name in roost nginx; do
    K_RPS[$name]=$(awk -v a="${K_RPS[$name]}" -v n="$ROUNDS" 'BEGIN{printf "%.0f", a/n}')
    K_P99[$name]=$(awk -v a="${K_P99[$name]}" -v n="$ROUNDS" 'BEGIN{printf "%.2f", a/n}')
    K_CPU[$name]=$(awk -v a="${K_CPU[$name]}" -v n="$ROUNDS" 'BEGIN{printf "%.1f", a/n}')
    N_HPS[$name]=$(awk -v a="${N_HPS[$name]}" -v n="$ROUNDS" 'BEGIN{printf "%.0f", a/n}')
    N_CPU[$name]=$(awk -v a="${N_CPU[$name]}" -v n="$ROUNDS" 'BEGIN{printf "%.1f", a/n}')
done
fi

# 1 GiB through each path, best of 3 → MiB/s
bench_tcp() { # netns|- address:port
    local best=0 v
    for _ in 1 2 3; do
        v=$(in_ns "$1" timeout 300 "$BIN" send "$2" $BYTES) || die "sending to $2 failed"
        best=$(awk -v a="$best" -v b="$v" 'BEGIN{print (b>a)?b:a}')
    done
    echo "$best"
}
# One SSH command as root on host:port, from netns $1 (or here, "-"). Bounded by `timeout`.
ssh_cmd() { # netns|- host port cipher command
    in_ns "$1" timeout 300 ssh -p "$3" -c "$4" -i "$WORK/userkey" -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        -o ConnectTimeout=10 "root@$2" "$5"
}
# 1 GiB through one SSH session (`cat > /dev/null` on the server) → MiB/s
ssh_once() { # netns|- host port cipher
    local t0 t1
    t0=$(date +%s.%N)
    head -c $BYTES /dev/zero | ssh_cmd "$1" "$2" "$3" "$4" 'cat > /dev/null' ||
        die "ssh to $2:$3 failed"
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v n=$BYTES 'BEGIN{printf "%.1f", n/1048576/(b-a)}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# The paths' runs alternate, so a slow spell of this shared machine hits them all; the
# medians of SSH_RUNS each, in the order of the paths. A path is "netns|- host port".
bench_ssh() { # cipher path...
    local cipher=$1 runs=() out=() i r path ns host port v
    shift
    for r in $(seq "${SSH_RUNS:-5}"); do
        i=0
        for path in "$@"; do
            read -r ns host port <<<"$path"
            # A failed run fails the stage (whatever `set -e` is in this subshell).
            v=$(ssh_once "$ns" "$host" "$port" "$cipher") || return 1
            runs[i]+=" $v"
            i=$((i + 1))
        done
        echo "  ${cipher%%@*} run $r (MiB/s, in the order of the paths):$(for i in "${!runs[@]}"; do printf ' %s' "${runs[i]##* }"; done)" >&2
    done
    for i in "${!runs[@]}"; do
        # shellcheck disable=SC2086 # the runs are words on purpose
        out+=("$(median ${runs[i]})")
    done
    echo "${out[*]}"
}

CHACHA=chacha20-poly1305@openssh.com AES=aes128-gcm@openssh.com
if want ssh; then
log "1 GiB over SSH: direct and through the forwarder, two ciphers"
stage bench_ssh $CHACHA "- 127.0.0.1 $P_SSHD" "- 127.0.0.1 $P_SSHFWD"
read -r S_DIRECT_CHACHA S_FWD_CHACHA <"$WORK/stage.out"
stage bench_ssh $AES "- 127.0.0.1 $P_SSHD" "- 127.0.0.1 $P_SSHFWD"
read -r S_DIRECT_AES S_FWD_AES <"$WORK/stage.out"
log "1 GiB: direct, splice forwarder, copy forwarder"
stage bench_tcp - "127.0.0.1:$P_SINK"; T_DIRECT=$(<"$WORK/stage.out")
stage bench_tcp - "127.0.0.1:$P_SPLICE"; T_SPLICE=$(<"$WORK/stage.out")
stage bench_tcp - "127.0.0.1:$P_COPY"; T_COPY=$(<"$WORK/stage.out")
fi

if want transparent; then
    # Who sshd sees through each path; the transparent forwarder must show the client.
    seen() { # host port
        local out
        # shellcheck disable=SC2016 # expanded by the server's shell
        out=$(ssh_cmd "$NS_CLIENT" "$1" "$2" $CHACHA 'echo $SSH_CLIENT') ||
            die "ssh to $1:$2 from $NS_CLIENT failed (forwarder logs: $(cat "$WORK"/*fwd.log))"
        echo "${out%% *}"
    }
    SEEN_DIRECT=$(seen $GUEST_IP $T_SSHD)
    SEEN_FWD=$(seen $HOST_IP $T_FWD)
    SEEN_TFWD=$(seen $HOST_IP $T_TFWD)
    log "sshd sees: direct $SEEN_DIRECT, forwarder $SEEN_FWD, transparent forwarder $SEEN_TFWD"
    [ "$SEEN_TFWD" = $CLIENT_IP ] ||
        die "through the transparent forwarder sshd sees '$SEEN_TFWD', not $CLIENT_IP (its log: $(cat "$WORK/tfwd.log"))"
    [ "$SEEN_DIRECT" = $CLIENT_IP ] || die "directly, sshd sees '$SEEN_DIRECT', not $CLIENT_IP"
    [ "$SEEN_FWD" = $GW_IP ] || die "through the forwarder, sshd sees '$SEEN_FWD', not $GW_IP"
    paths=("$NS_CLIENT $GUEST_IP $T_SSHD" "$NS_CLIENT $HOST_IP $T_FWD" "$NS_CLIENT $HOST_IP $T_TFWD")
    log "1 GiB over SSH from the client namespace: direct, forwarder, transparent forwarder"
    stage bench_ssh $CHACHA "${paths[@]}"
    read -r X_DIRECT_CHACHA X_FWD_CHACHA X_TFWD_CHACHA <"$WORK/stage.out"
    stage bench_ssh $AES "${paths[@]}"
    read -r X_DIRECT_AES X_FWD_AES X_TFWD_AES <"$WORK/stage.out"
    log "1 GiB raw TCP from the client namespace: direct, forwarder, transparent forwarder"
    stage bench_tcp "$NS_CLIENT" "$GUEST_IP:$T_SINK"; XT_DIRECT=$(<"$WORK/stage.out")
    stage bench_tcp "$NS_CLIENT" "$HOST_IP:$T_FWD_TCP"; XT_FWD=$(<"$WORK/stage.out")
    stage bench_tcp "$NS_CLIENT" "$HOST_IP:$T_TFWD_TCP"; XT_TFWD=$(<"$WORK/stage.out")
    if grep -h "not kept" "$WORK/tfwd.log" "$WORK/tfwd-tcp.log"; then
        die "the transparent forwarders fell back to the host's address (above)"
    fi
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(uname -r)"
echo "Load (1, 5, 15 min): $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
if want http; then
echo "| HTTP (wrk -t2 -c50 -d10s, 612 B page, mean of $ROUNDS) | requests/s | p99 ms | vs nginx |"
echo "|---|---:|---:|---:|"
echo "| roost proxy | ${RPS[roost]} | ${P99[roost]} | $(ratio "${RPS[roost]}" "${RPS[nginx]}") |"
echo "| nginx proxy_pass keepalive, 2 workers | ${RPS[nginx]} | ${P99[nginx]} | 1.00 |"
echo "| direct to upstream (reference) | ${RPS[direct]} | ${P99[direct]} | $(ratio "${RPS[direct]}" "${RPS[nginx]}") |"
echo
fi
if want https; then
RUSTLS=$(awk '$0=="name = \"rustls\"" {getline; gsub(/"/, "", $3); print $3; exit}' "$ROOT/Cargo.lock")
echo "HTTPS: both $TLS_ROOST, ECDSA P-256 leaf; roost: rustls $RUSTLS (ring), $(nproc) workers;" \
    "$(nginx -v 2>&1 | sed 's/.*version: //') with $(openssl version | cut -d' ' -f1-2), $(nproc) workers." \
    "Session tickets sent per handshake / a session resumed: roost $TICKETS_ROOST / $RESUMES_ROOST," \
    "nginx $TICKETS_NGX / $RESUMES_NGX (ssl_session_cache off, ssl_session_tickets off)." \
    "No client here resumes: wrk keeps its 50 connections, s_time -new offers no session."
echo
echo "| HTTPS, keep-alive (wrk -t2 -c50 -d10s, HTTP/1.1, 612 B page, mean of $ROUNDS) | requests/s | p99 ms | proxy CPU µs/request | vs nginx |"
echo "|---|---:|---:|---:|---:|"
echo "| roost proxy | ${K_RPS[roost]} | ${K_P99[roost]} | ${K_CPU[roost]} | $(ratio "${K_RPS[roost]}" "${K_RPS[nginx]}") |"
echo "| nginx ssl + proxy_pass keepalive, $(nproc) workers | ${K_RPS[nginx]} | ${K_P99[nginx]} | ${K_CPU[nginx]} | 1.00 |"
echo
echo "| HTTPS, a new connection and full handshake per request ($TLS_CLIENTS × openssl s_time -new, 10 s, mean of $ROUNDS) | handshakes/s | proxy CPU µs/handshake | vs nginx |"
echo "|---|---:|---:|---:|"
echo "| roost proxy | ${N_HPS[roost]} | ${N_CPU[roost]} | $(ratio "${N_HPS[roost]}" "${N_HPS[nginx]}") |"
echo "| nginx ssl + proxy_pass keepalive, $(nproc) workers | ${N_HPS[nginx]} | ${N_CPU[nginx]} | 1.00 |"
echo
fi
if want ssh; then
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
echo
fi
if want transparent; then
echo "sshd sees: directly $SEEN_DIRECT, through the forwarder $SEEN_FWD, through the transparent forwarder $SEEN_TFWD"
echo
echo "| SSH session, client → host → guest namespaces (1 GiB to \`cat > /dev/null\`, OpenSSH 9.2, median of ${SSH_RUNS:-5}, alternating) | MiB/s | vs direct | vs forwarder |"
echo "|---|---:|---:|---:|"
echo "| transparent forwarder (client's address), chacha20-poly1305 | $X_TFWD_CHACHA | $(ratio "$X_TFWD_CHACHA" "$X_DIRECT_CHACHA") | $(ratio "$X_TFWD_CHACHA" "$X_FWD_CHACHA") |"
echo "| forwarder (host's address), chacha20-poly1305 | $X_FWD_CHACHA | $(ratio "$X_FWD_CHACHA" "$X_DIRECT_CHACHA") | 1.00 |"
echo "| direct, routed by the host, chacha20-poly1305 | $X_DIRECT_CHACHA | 1.00 | $(ratio "$X_DIRECT_CHACHA" "$X_FWD_CHACHA") |"
echo "| transparent forwarder (client's address), aes128-gcm | $X_TFWD_AES | $(ratio "$X_TFWD_AES" "$X_DIRECT_AES") | $(ratio "$X_TFWD_AES" "$X_FWD_AES") |"
echo "| forwarder (host's address), aes128-gcm | $X_FWD_AES | $(ratio "$X_FWD_AES" "$X_DIRECT_AES") | 1.00 |"
echo "| direct, routed by the host, aes128-gcm | $X_DIRECT_AES | 1.00 | $(ratio "$X_DIRECT_AES" "$X_FWD_AES") |"
echo
echo "| Raw TCP, client → host → guest namespaces (1 GiB, best of 3) | MiB/s | vs direct | vs forwarder |"
echo "|---|---:|---:|---:|"
echo "| transparent forwarder, splice(2) | $XT_TFWD | $(ratio "$XT_TFWD" "$XT_DIRECT") | $(ratio "$XT_TFWD" "$XT_FWD") |"
echo "| forwarder, splice(2) | $XT_FWD | $(ratio "$XT_FWD" "$XT_DIRECT") | 1.00 |"
echo "| direct, routed by the host | $XT_DIRECT | 1.00 | $(ratio "$XT_DIRECT" "$XT_FWD") |"
fi
