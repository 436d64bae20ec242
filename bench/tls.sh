#!/usr/bin/env bash
# bench/tls.sh: kelpie, HAProxy and nginx side by side as TLS terminators,
# with the same ECDSA P-256 certificate, TLS 1.3 with the same suite
# (TLS_AES_128_GCM_SHA256) and key exchange (X25519), in front of the same
# plain backend:
#   - handshakes/s with a new connection per request (tlsload -mode
#     handshake, full handshakes: no resumption) and CPU µs per handshake;
#   - requests/s and the proxy's CPU µs per request on TLS keep-alive.
# RUNS rounds (3; QUICK=1: one), each proxy once per round in a rotated
# order; the table gives medians and each proxy's per-round ratio to
# HAProxy's CPU per keep-alive request (median, and the range of rounds).
# KELPIE_B=BINARY adds a second kelpie (target kelpie-b), for A/B runs of a
# change: both kelpies then alternate within each round.
# Run from a clone: bench/tls.sh   (DURATION=5 CONC=8 by default)
# Results are printed as a Markdown table (and kept in $OUT/tls-latest.md);
# with RAW=FILE, "load=tls-hs ... hs_per_s= cpu_us_hs=" and "load=tls-ka ...
# rps= cpu_us_req=" lines are appended there.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROOT=$PWD
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
[ -n "${QUICK:-}" ] && RUNS=1
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
go build -o "$TMP/report" ./bench/cmd/report

# One CA and one certificate for all three.
openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/ca.key" 2>/dev/null
openssl req -x509 -new -key "$TMP/ca.key" -subj "/CN=bench CA" -days 1 -out "$TMP/ca.crt" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/site.key" 2>/dev/null
openssl req -new -key "$TMP/site.key" -subj "/CN=bench.test" -out "$TMP/site.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.test\n' >"$TMP/ext"
openssl x509 -req -in "$TMP/site.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -CAcreateserial -days 1 -extfile "$TMP/ext" -out "$TMP/site.crt" 2>/dev/null
cat "$TMP/site.crt" "$TMP/site.key" >"$TMP/site.pem"

read -r P_H P_N P_K P_KA P_KP P_BK P_BA P_BP <<<"$("$TMP/backend" -free 8 | tr '\n' ' ')"
taskset -c "$GEN_CPU" "$TMP/backend" -n 1 -addrs "$TMP/be" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/be" ] && break; sleep 0.1; done
BE=$(head -1 "$TMP/be")

# OpenSSL prefers AES-256-GCM in TLS 1.3, Go AES-128-GCM on AES hardware:
# AES-128-GCM first for all three (tlsload prints what was negotiated).
SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
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
    bind 127.0.0.1:$P_H ssl crt $TMP/site.pem alpn http/1.1 ssl-min-ver TLSv1.2 ciphersuites $SUITES curves X25519:P-256
    default_backend be
backend be
    http-reuse always
    server s1 $BE
EOF
{
	nginx_head 8192
	cat <<EOF
    upstream be { server $BE; keepalive 128; }
    server {
        listen 127.0.0.1:$P_N ssl;
        ssl_certificate $TMP/site.crt;
        ssl_certificate_key $TMP/site.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_conf_command Ciphersuites $SUITES;
        ssl_ecdh_curve X25519:prime256v1;
        keepalive_requests 1000000;
        location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
} >"$TMP/nginx.conf"
kelpie_yaml() { # plain-port admin-port tls-port
	printf 'listen: "127.0.0.1:%s"\nadmin: {listen: "127.0.0.1:%s"}\ntls:\n  listen: "127.0.0.1:%s"\n' "$1" "$2" "$3"
	printf '  certificates: [{cert: "%s", key: "%s"}]\nupstreams:\n  - name: bench\n    backends: [{address: "%s"}]\n' "$TMP/site.crt" "$TMP/site.key" "$BE"
}
kelpie_yaml "$P_K" "$P_KA" "$P_KP" >"$TMP/kelpie.yaml"
kelpie_yaml "$P_BK" "$P_BA" "$P_BP" >"$TMP/kelpie-b.yaml"

declare -A ADDR=([haproxy]=127.0.0.1:$P_H [nginx]=127.0.0.1:$P_N [kelpie]=127.0.0.1:$P_KP [kelpie-b]=127.0.0.1:$P_BP)
declare -A PID=()
taskset -c "$LB_CPU" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!); PID[haproxy]=$!
taskset -c "$LB_CPU" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
PIDS+=($!); PID[nginx]=$!
GOMAXPROCS=1 taskset -c "$LB_CPU" "$TMP/kelpie" run -config "$TMP/kelpie.yaml" >"$TMP/kelpie.log" 2>&1 &
PIDS+=($!); PID[kelpie]=$!
TARGETS=(haproxy nginx kelpie)
if [ -n "${KELPIE_B:-}" ]; then
	GOMAXPROCS=1 taskset -c "$LB_CPU" "$KELPIE_B" run -config "$TMP/kelpie-b.yaml" >"$TMP/kelpie-b.log" 2>&1 &
	PIDS+=($!); PID[kelpie-b]=$!
	TARGETS+=(kelpie-b)
fi
sleep 1
for p in "${TARGETS[@]}"; do
	if ! kill -0 "${PID[$p]}" 2>/dev/null; then echo "tls.sh: $p exited:" >&2; cat "$TMP/$p.log" "$TMP/nginx/error.log" >&2 2>/dev/null; exit 1; fi
done

get() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
RAWF=$TMP/raw.txt
: >"$RAWF"
ORDER=("${TARGETS[@]}")
for r in $(seq "$RUNS"); do
	for p in "${ORDER[@]}"; do
		hs=$(taskset -c "$GEN_CPU" "$TMP/tlsload" -addr "${ADDR[$p]}" -ca "$TMP/ca.crt" -mode handshake -d "${DURATION}s" -c "$CONC" -pid "${PID[$p]}")
		ka=$(taskset -c "$GEN_CPU" "$TMP/tlsload" -addr "${ADDR[$p]}" -ca "$TMP/ca.crt" -mode keepalive -d "${DURATION}s" -c "$CONC" -pid "${PID[$p]}")
		echo "tls round $r $p: $hs | $ka" >&2
		echo "load=tls-hs target=$p run=$r hs_per_s=$(get per_s "$hs") cpu_us_hs=$(get cpu_us_per_req "$hs") suite=$(get suite "$hs")" >>"$RAWF"
		echo "load=tls-ka target=$p run=$r rps=$(get per_s "$ka") cpu_us_req=$(get cpu_us_per_req "$ka") suite=$(get suite "$ka")" >>"$RAWF"
	done
	ORDER=("${ORDER[@]:1}" "${ORDER[0]}")
done
if [ -n "${RAW:-}" ]; then cat "$RAWF" >>"$RAW"; fi

med() { "$TMP/report" median -load "$1" -target "$2" -key "$3" "$RAWF"; }
# ratio LOAD KEY TARGET: TARGET's value over HAProxy's in the same round,
# as "median (lowest-highest)" over the rounds.
ratio() {
	awk -v l="load=$1" -v k="$2" -v t="target=$3" '
		function val(   i) { for (i = 4; i <= NF; i++) if (index($i, k "=") == 1) return substr($i, length(k) + 2); return "" }
		$1 == l && $2 == "target=haproxy" { h[$3] = val() }
		$1 == l && $2 == t { v[$3] = val() }
		END {
			n = 0
			for (r in v) if ((r in h) && h[r] > 0) rs[++n] = v[r] / h[r]
			if (n == 0) { print "-"; exit }
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (rs[j] < rs[i]) { x = rs[i]; rs[i] = rs[j]; rs[j] = x }
			m = (n % 2) ? rs[(n + 1) / 2] : (rs[n / 2] + rs[n / 2 + 1]) / 2
			printf "%.2fx (%.2f-%.2f)", m, rs[1], rs[n]
		}' "$RAWF"
}
{
	echo "| proxy | handshakes/s | CPU µs per handshake | keep-alive req/s | CPU µs per keep-alive request | keep-alive CPU vs HAProxy, per round |"
	echo "|---|---|---|---|---|---|"
	for p in "${TARGETS[@]}"; do
		echo "| $p | $(med tls-hs "$p" hs_per_s) | $(med tls-hs "$p" cpu_us_hs) | $(med tls-ka "$p" rps) | $(med tls-ka "$p" cpu_us_req) | $(ratio tls-ka cpu_us_req "$p") |"
	done
	echo
	echo "Medians of $RUNS round(s), $CONC connections, ${DURATION}s per cell; negotiated: $(sed -n 's/.*suite=\([^ ]*\).*/\1/p' "$RAWF" | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$TMP/table.md"
mkdir -p "$OUT"
cp "$TMP/table.md" "$OUT/tls-latest.md"
