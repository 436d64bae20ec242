#!/usr/bin/env bash
# bench/idle.sh: RSS per idle keep-alive client connection, kelpie, HAProxy
# and nginx side by side (issue 20), with bench/run.sh's setup: one thread
# each, round robin over three backends, keep-alive upstream, the same
# forwarding headers and health checks. For each count (COUNTS, 10000 and
# 50000) and proxy, a fresh proxy serves one request (the baseline is taken
# then), then gets COUNT connections, each past one request and then idle;
# the growth of the proxy's RSS (VmRSS, all its processes) over the
# baseline, SETTLE seconds after the last one opened, divided by COUNT, is
# the row. What grows once (pools, buffers) is charged to the connections. Every connection then sends
# a second request: `alive` says how many the proxy still served.
#
# A count beyond what the open-file hard limit allows (one descriptor per
# client connection in the proxy, and in the client) is lowered to fit, and
# the table says so: the conns key is the count measured.
#
# Run from a clone: bench/idle.sh  (COUNTS="10000 50000" SETTLE=8 by default)
# Prints a Markdown table (kept in $OUT/idle-latest.md); with RAW=FILE it
# appends raw lines "load=idle target=T run=1 conns=N rss_kb_per_conn=X ...".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COUNTS=${COUNTS:-10000 50000}
SETTLE=${SETTLE:-8}
PROXIES=${PROXIES:-haproxy nginx kelpie}
LB_CPU=${LB_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
OUT=${OUT:-$ROOT/bench/results}
export PATH=$PATH:/usr/sbin:/sbin
for c in haproxy nginx taskset curl; do command -v $c >/dev/null || { echo "idle.sh: needs $c (bench/run.sh installs it)" >&2; exit 1; }; done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kelpie-idle.XXXXXX")
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'idle.sh: %s\n' "$*" >&2; exit 1; }

go build -o "$TMP/kelpie" ./cmd/kelpie
go build -o "$TMP/backend" ./bench/cmd/backend
go build -o "$TMP/idleconns" ./bench/cmd/idleconns

# The descriptor limit: raise the soft one to the hard one (which needs
# CAP_SYS_RESOURCE to raise); the proxies and the client inherit it.
ulimit -n "$(ulimit -Hn)"
FDMAX=$(ulimit -n)

taskset -c "$GEN_CPU" "$TMP/backend" -n 3 -addrs "$TMP/addrs3" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 150); do [ -s "$TMP/addrs3" ] && break; sleep 0.1; done
mapfile -t BACKENDS <"$TMP/addrs3"

# Configs: bench/run.sh's own writers (write_haproxy from bench/lib.sh,
# write_nginx and write_kelpie: its "configs" section, taken from it so that
# the shape stays the same; DEFER as there), with the
# connection limits raised to the count (HAProxy's maxconn, nginx's
# worker_connections, kelpie's max_conns), and one idle timeout for all
# three, kelpie's default of 120 s (HAProxy's timeout client, 30 s in run.sh,
# and nginx's keepalive_timeout, 75 s by default), so that none closes the
# first connections before the measurement ends. Ports are chosen anew for
# each proxy, and the client connects from 127.0.0.2 and up: its thousands of
# ephemeral ports never take a port a proxy is about to listen on.
# HAProxy's ulimit-n is the hard limit, with "no strict-limits": it reserves
# two descriptors per maxconn and would refuse to start past the limit, but
# an idle client connection uses one (it alerts, and runs).
. bench/lib.sh
DEFER=${DEFER:-1}
eval "$(sed -n '/^# ---- configs/,/^# ---- start the proxies/p' bench/run.sh)"
declare -F write_haproxy write_nginx write_kelpie >/dev/null || die "bench/run.sh's config writers not found"

config() { # config NAME LIMIT: the proxy's config, run.sh's with the limits raised
	case $1 in
	haproxy)
		write_haproxy "$TMP/haproxy.cfg" "$PORT"
		sed -i -e "s/^\( *maxconn\) .*/\1 $2\n    ulimit-n $FDMAX\n    no strict-limits/" -e 's/^\( *timeout client\) .*/\1 120s/' "$TMP/haproxy.cfg"
		;;
	nginx)
		write_nginx
		sed -i -e "s/worker_connections [0-9]*;/worker_connections $(($2 + 200));/" \
			-e "s/^worker_processes \(.*\)/worker_processes \1\nworker_rlimit_nofile $FDMAX;/" \
			-e 's/^http {/http {\n    keepalive_timeout 120s;/' "$TMP/nginx.conf"
		;;
	kelpie)
		write_kelpie "$TMP/kelpie.yaml" "$PORT" "$ADMIN" round_robin "${BACKENDS[@]}"
		printf 'limits:\n  max_conns: %d\n' "$2" >>"$TMP/kelpie.yaml"
		;;
	esac
}

PPIDS=() # the proxy's processes
start_proxy() { # start_proxy NAME COUNT
	mapfile -t PORTS < <("$TMP/backend" -free 2)
	PORT=${PORTS[0]} ADMIN=${PORTS[1]} NGINX_PORT=${PORTS[0]}
	config "$1" $(($2 + 100))
	case $1 in
	haproxy)
		taskset -c "$LB_CPU" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
		;;
	nginx)
		taskset -c "$LB_CPU" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
		;;
	kelpie)
		GOMAXPROCS=1 taskset -c "$LB_CPU" "$TMP/kelpie" run -config "$TMP/kelpie.yaml" >"$TMP/kelpie.log" 2>&1 &
		;;
	esac
	PPIDS=($!)
	PIDS+=($!)
	local i
	for i in $(seq 150); do
		curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" 2>/dev/null && break
		kill -0 "${PPIDS[0]}" 2>/dev/null || die "$1 exited: $(tail -5 "$TMP/$1.log")"
		[ "$i" -lt 150 ] || die "$1 did not answer at 127.0.0.1:$PORT"
		sleep 0.1 # a process just started: no readiness event to wait on
	done
	if [ "$1" = nginx ]; then
		PPIDS+=($(ps -o pid= --ppid "${PPIDS[0]}"))
	fi
}

stop_proxy() {
	local p
	for p in "${PPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait "${PPIDS[0]}" 2>/dev/null || true
}

rss_kb() { # the proxy's VmRSS, summed over its processes
	local t=0 p v
	for p in "${PPIDS[@]}"; do
		v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status")
		t=$((t + v))
	done
	echo "$t"
}

# hold NAME N: start idleconns with N connections; waits until all are open.
hold() {
	local f=$TMP/$1
	rm -f "$f.in" "$f.out"
	mkfifo "$f.in"
	local src=$(($2 / 20000 + 1)) # ephemeral ports: ~28k per source address
	taskset -c "$GEN_CPU" "$TMP/idleconns" -addr "127.0.0.1:$PORT" -n "$2" -src "$src" <"$f.in" >"$f.out" 2>&1 &
	PIDS+=($!)
	eval "exec {fd_$1}>\"$f.in\""
	until grep -q '^open ' "$f.out" 2>/dev/null; do
		kill -0 "$!" 2>/dev/null || die "idleconns: $(cat "$f.out")"
		sleep 0.2
	done
}
# release NAME: a second request on every connection, then close; prints alive.
release() {
	local f=$TMP/$1 fdv="fd_$1"
	echo >&"${!fdv}"
	eval "exec ${!fdv}>&-"
	until grep -q '^alive ' "$f.out" 2>/dev/null; do sleep 0.2; done
	awk '/^alive / { print $2 }' "$f.out"
}

read -r LOAD1 _ </proc/loadavg
log "load average $LOAD1; open-file limit $FDMAX"
: >"$TMP/raw.txt"
for want in $COUNTS; do
	n=$want
	# The proxy holds n client descriptors and some of its own; so does the
	# client (one process).
	if [ $((n + 500)) -gt "$FDMAX" ]; then
		n=$(((FDMAX - 500) / 1000 * 1000))
		log "$want connections need more descriptors than the hard limit $FDMAX allows; measuring $n"
	fi
	for p in $PROXIES; do
		log "$p: $n idle connections"
		start_proxy "$p" "$n"
		base=$(rss_kb)
		hold idle "$n"
		opened=$(awk '/^open / { print $3 }' "$TMP/idle.out")
		sleep "$SETTLE" # kelpie parks a connection idle 1-2 s, then releases memory
		after=$(rss_kb)
		alive=$(release idle)
		per=$(awk -v a="$after" -v b="$base" -v n="$n" 'BEGIN { printf "%.3f", (a - b) / n }')
		echo "load=idle target=$p run=1 conns=$n want=$want rss_kb_per_conn=$per rss_kb_base=$base rss_kb_idle=$after alive=$alive open_s=$opened" | tee -a "$TMP/raw.txt" >&2
		stop_proxy
	done
done

[ -z "${RAW:-}" ] || cat "$TMP/raw.txt" >>"$RAW"
mkdir -p "$OUT"
{
	echo "### Idle keep-alive connections: RSS per connection"
	echo
	echo "load average $LOAD1 at the start; RSS growth over the proxy after one request, $SETTLE s after the last connection opened."
	echo
	echo "| connections | kelpie KB/conn | HAProxy KB/conn | nginx KB/conn | kelpie / best | alive (k / h / n) |"
	echo "|---|---|---|---|---|---|"
	awk '
		{ for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
		  c = f["conns"]; if (!(c in seen)) { seen[c] = 1; order[++k] = c }
		  v[c, f["target"]] = f["rss_kb_per_conn"]; a[c, f["target"]] = f["alive"]
		  if (f["want"] != c) note[c] = " (" f["want"] " wanted; the open-file limit)" }
		END {
			for (j = 1; j <= k; j++) {
				c = order[j]; h = v[c, "haproxy"]; g = v[c, "nginx"]; kk = v[c, "kelpie"]
				best = (h != "" && (g == "" || h + 0 < g + 0)) ? h : g
				r = (best + 0 > 0 && kk != "") ? sprintf("%.1fx", kk / best) : "-"
				printf "| %s%s | %s | %s | %s | %s | %s / %s / %s |\n", c, note[c], kk, h, g, r, a[c, "kelpie"], a[c, "haproxy"], a[c, "nginx"]
			}
		}' "$TMP/raw.txt"
	echo
	echo "Target (issue 20): kelpie at most 2 KB per idle connection."
} | tee "$OUT/idle-latest.md"
