#!/usr/bin/env bash
# bench/tls.sh: kelpie, HAProxy and nginx side by side as TLS terminators,
# with the same ECDSA P-256 certificate and each one's default TLS 1.3
# suite, in front of the same plain backend:
#   - handshakes/s with a new connection per request (tlsload -mode handshake);
#   - requests/s and the proxy's CPU per request on TLS keep-alive.
# Run from a clone: bench/tls.sh   (DURATION=5 CONC=8 by default)
# Results are printed as a Markdown table (and kept in $OUT/tls-latest.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-5}
CONC=${CONC:-8}
LB_CPU=${LB_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
OUT=${OUT:-$ROOT/bench/results}
export PATH=$PATH:/usr/sbin:/sbin
for c in haproxy nginx openssl taskset; do command -v $c >/dev/null || { echo "tls.sh: needs $c (bench/run.sh installs it)" >&2; exit 1; }; done

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

go build -o "$TMP/kelpie" ./cmd/kelpie
go build -o "$TMP/backend" ./bench/cmd/backend
go build -o "$TMP/tlsload" ./bench/cmd/tlsload

# One CA and one certificate for all three.
openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/ca.key" 2>/dev/null
openssl req -x509 -new -key "$TMP/ca.key" -subj "/CN=bench CA" -days 1 -out "$TMP/ca.crt" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/site.key" 2>/dev/null
openssl req -new -key "$TMP/site.key" -subj "/CN=bench.test" -out "$TMP/site.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.test\n' >"$TMP/ext"
openssl x509 -req -in "$TMP/site.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -CAcreateserial -days 1 -extfile "$TMP/ext" -out "$TMP/site.crt" 2>/dev/null
cat "$TMP/site.crt" "$TMP/site.key" >"$TMP/site.pem"

read -r P_H P_N P_K P_KA P_KP <<<"$("$TMP/backend" -free 5 | tr '\n' ' ')"
taskset -c "$GEN_CPU" "$TMP/backend" -n 1 -addrs "$TMP/be" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/be" ] && break; sleep 0.1; done
BE=$(head -1 "$TMP/be")

cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$P_H ssl crt $TMP/site.pem alpn http/1.1 ssl-min-ver TLSv1.2
    default_backend be
backend be
    http-reuse always
    server s1 $BE
EOF
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream be { server $BE; keepalive 128; }
    server {
        listen 127.0.0.1:$P_N ssl;
        ssl_certificate $TMP/site.crt;
        ssl_certificate_key $TMP/site.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
cat >"$TMP/kelpie.yaml" <<EOF
listen: "127.0.0.1:$P_K"
admin: {listen: "127.0.0.1:$P_KA"}
tls:
  listen: "127.0.0.1:$P_KP"
  certificates: [{cert: "$TMP/site.crt", key: "$TMP/site.key"}]
upstreams:
  - name: bench
    backends: [{address: "$BE"}]
EOF

taskset -c "$LB_CPU" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!); PID_H=$!
taskset -c "$LB_CPU" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
PIDS+=($!); PID_N=$!
GOMAXPROCS=1 taskset -c "$LB_CPU" "$TMP/kelpie" run -config "$TMP/kelpie.yaml" >"$TMP/kelpie.log" 2>&1 &
PIDS+=($!); PID_K=$!
sleep 1
if ! kill -0 "$PID_H" 2>/dev/null; then echo "tls.sh: haproxy exited:" >&2; cat "$TMP/haproxy.log" >&2; exit 1; fi
if ! kill -0 "$PID_N" 2>/dev/null; then echo "tls.sh: nginx exited:" >&2; cat "$TMP/nginx.log" "$TMP/nginx/error.log" >&2; exit 1; fi
if ! kill -0 "$PID_K" 2>/dev/null; then echo "tls.sh: kelpie exited:" >&2; cat "$TMP/kelpie.log" >&2; exit 1; fi

declare -A ADDR=([haproxy]=127.0.0.1:$P_H [nginx]=127.0.0.1:$P_N [kelpie]=127.0.0.1:$P_KP)
declare -A PID=([haproxy]=$PID_H [nginx]=$PID_N [kelpie]=$PID_K)
get() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
{
	echo "| proxy | handshakes/s (new conn per request) | keep-alive req/s | CPU µs per keep-alive request |"
	echo "|---|---|---|---|"
	for p in haproxy nginx kelpie; do
		hs=$(taskset -c "$GEN_CPU" "$TMP/tlsload" -addr "${ADDR[$p]}" -ca "$TMP/ca.crt" -mode handshake -d "${DURATION}s" -c "$CONC" -pid "${PID[$p]}")
		ka=$(taskset -c "$GEN_CPU" "$TMP/tlsload" -addr "${ADDR[$p]}" -ca "$TMP/ca.crt" -mode keepalive -d "${DURATION}s" -c "$CONC" -pid "${PID[$p]}")
		echo "$p: $hs | $ka" >&2
		echo "| $p | $(get per_s "$hs") | $(get per_s "$ka") | $(get cpu_us_per_req "$ka") |"
	done
} | tee "$TMP/table.md"
mkdir -p "$OUT"
cp "$TMP/table.md" "$OUT/tls-latest.md"
