#!/usr/bin/env bash
# bench/ws.sh: kelpie, HAProxy and nginx side by side carrying WebSocket
# tunnels to the same echo backend (bench/cmd/wsecho):
#   - echo throughput: WS_CONC tunnels each sending 16 KiB frames as fast
#     as they go, MB/s echoed and the proxy's CPU µs per echoed MB;
#   - memory: the proxy's resident memory per open tunnel with WS_TUNNELS
#     (5,000) tunnels open and idle after one small frame each.
# Each run restarts the three proxies (the memory is measured from a fresh
# process) and measures them in a rotated order.
# Run from a clone: bench/ws.sh   (RUNS=3 DURATION=5 WS_CONC=8 WS_TUNNELS=5000)
# QUICK=1: one run. Prints a Markdown table (kept in $OUT/ws-latest.md);
# with RAW=FILE it appends "load=ws target=T run=R mb_s=.. cpu_us_mb=..
# rss_kb_per_tunnel=.." lines there.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROOT=$PWD
RUNS=${RUNS:-3}
[ -n "${QUICK:-}" ] && RUNS=1
DURATION=${DURATION:-5}
WS_CONC=${WS_CONC:-8}
WS_TUNNELS=${WS_TUNNELS:-5000}
LB_CPU=${LB_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
OUT=${OUT:-$ROOT/bench/results}
export PATH=$PATH:/usr/sbin:/sbin
for c in haproxy nginx taskset; do command -v $c >/dev/null || { echo "ws.sh: needs $c (bench/run.sh installs it)" >&2; exit 1; }; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d)
PIDS=()
declare -A PID=() # the proxy running now
cleanup() { for p in "${PIDS[@]}" "${PID[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

go build -o "$TMP/kelpie" ./cmd/kelpie
go build -o "$TMP/wsecho" ./bench/cmd/wsecho
go build -o "$TMP/wsload" ./bench/cmd/wsload
go build -o "$TMP/backend" ./bench/cmd/backend
go build -o "$TMP/report" ./bench/cmd/report

read -r P_H P_N P_K P_KA <<<"$("$TMP/backend" -free 4 | tr '\n' ' ')"
taskset -c "$GEN_CPU" "$TMP/wsecho" -addr-file "$TMP/be" >"$TMP/wsecho.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/be" ] && break; sleep 0.1; done
BE=$(head -1 "$TMP/be")

cat >"$TMP/haproxy.cfg" <<CFG
global
    maxconn 9000
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend fe
    bind 127.0.0.1:$P_H
    default_backend be
backend be
    server s1 $BE
CFG
{
	nginx_head 12000 "worker_rlimit_nofile 20000;"
	cat <<CFG
    server {
        listen 127.0.0.1:$P_N;
        location / {
            proxy_pass http://$BE;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
CFG
} >"$TMP/nginx.conf"
cat >"$TMP/kelpie.yaml" <<CFG
listen: "127.0.0.1:$P_K"
admin: {listen: "127.0.0.1:$P_KA"}
limits: {max_tunnels: 9000, max_conns: 9000}
upstreams:
  - name: bench
    backends: [{address: "$BE"}]
CFG

declare -A ADDR=([haproxy]=127.0.0.1:$P_H [nginx]=127.0.0.1:$P_N [kelpie]=127.0.0.1:$P_K)
start() {
	case $1 in
	haproxy) taskset -c "$LB_CPU" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 & ;;
	nginx) taskset -c "$LB_CPU" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 & ;;
	kelpie) GOMAXPROCS=1 taskset -c "$LB_CPU" "$TMP/kelpie" run -config "$TMP/kelpie.yaml" >"$TMP/kelpie.log" 2>&1 & ;;
	esac
	PID[$1]=$!
	sleep 1
	if ! kill -0 "${PID[$1]}" 2>/dev/null; then echo "ws.sh: $1 exited:" >&2; cat "$TMP/$1.log" >&2; exit 1; fi
}
stop() { kill "${PID[$1]}" 2>/dev/null || true; wait "${PID[$1]}" 2>/dev/null || true; unset "PID[$1]"; }
get() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }

RAWF=$TMP/raw.txt
: >"$RAWF"
ORDER=(haproxy nginx kelpie)
for r in $(seq "$RUNS"); do
	for p in "${ORDER[@]}"; do
		start "$p"
		idle=$(taskset -c "$GEN_CPU" "$TMP/wsload" -addr "${ADDR[$p]}" -mode idle -n "$WS_TUNNELS" -pid "${PID[$p]}")
		sleep 1 # the closed tunnels' sockets leave the proxy
		echo_=$(taskset -c "$GEN_CPU" "$TMP/wsload" -addr "${ADDR[$p]}" -mode echo -c "$WS_CONC" -d "${DURATION}s" -pid "${PID[$p]}")
		stop "$p"
		echo "ws run $r $p: $idle | $echo_" >&2
		echo "load=ws target=$p run=$r mb_s=$(get mb_s "$echo_") cpu_us_mb=$(get cpu_us_mb "$echo_") rss_kb_per_tunnel=$(get rss_kb_per_tunnel "$idle") tunnels=$WS_TUNNELS" >>"$RAWF"
	done
	ORDER=("${ORDER[@]:1}" "${ORDER[0]}")
done
[ -n "${RAW:-}" ] && cat "$RAWF" >>"$RAW"

med() { "$TMP/report" median -load ws -target "$1" -key "$2" "$RAWF"; }
{
	echo "| proxy | echo MB/s | CPU µs per echoed MB | RSS KiB per open tunnel ($WS_TUNNELS idle) |"
	echo "|---|---|---|---|"
	for p in haproxy nginx kelpie; do
		echo "| $p | $(med "$p" mb_s) | $(med "$p" cpu_us_mb) | $(med "$p" rss_kb_per_tunnel) |"
	done
	echo
	echo "Medians of $RUNS run(s); $WS_CONC tunnels of 16 KiB frames for ${DURATION}s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$TMP/table.md"
mkdir -p "$OUT"
cp "$TMP/table.md" "$OUT/ws-latest.md"
