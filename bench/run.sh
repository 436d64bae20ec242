#!/usr/bin/env bash
# bench/run.sh: the side-by-side load benchmark (kelpie, HAProxy, nginx).
# Run from anywhere in a clone:  bench/run.sh      (or QUICK=1 bench/run.sh)
# What it measures and why: bench/README.md. Results: bench/results/latest.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib.sh

# ---- knobs (environment) ---------------------------------------------------
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1}; OPEN_RUNS=${OPEN_RUNS:-1}; PAIR_RUNS=${PAIR_RUNS:-1}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}
	EXTRA_RUNS=${EXTRA_RUNS:-1}; EXTRA_DURATION=${EXTRA_DURATION:-3}; SCALING=${SCALING:-0}
fi
RUNS=${RUNS:-5}               # closed-loop repetitions; the table shows medians
OPEN_RUNS=${OPEN_RUNS:-5}     # open-loop repetitions: its p99 moves more from run to run
PAIR_RUNS=${PAIR_RUNS:-5}     # paired open-loop repetitions (each proxy beside HAProxy, one generator); 0 skips
CONTROL=${CONTROL:-1}         # 1: a second, identical HAProxy (haproxy-b) runs everywhere as the control
DURATION=${DURATION:-10}      # seconds per measured run
WARMUP=${WARMUP:-2}           # seconds of unrecorded load before each run
CONNS=${CONNS:-50}            # wrk connections (closed loop)
OL_CONNS=${OL_CONNS:-128}     # open-loop generator: max connections
RATE=${RATE:-}                # open-loop rate; default RATE_FRACTION x HAProxy's closed-loop req/s
RATE_FRACTION=${RATE_FRACTION:-0.6}
GEN_MAX_BUSY=${GEN_MAX_BUSY:-80} # lower the default RATE until the generator's CPU is at most this busy
PROXIES=${PROXIES:-haproxy nginx kelpie}
SCALING=${SCALING:-1}         # 0 skips the kelpie pool-size/algorithm table
SCALE_RUNS=${SCALE_RUNS:-3}
SCALE_DURATION=${SCALE_DURATION:-5}
CHURN=${CHURN:-1}             # 0 skips the churn rows (wrk -H 'Connection: close': a new connection per request)
DEFER=${DEFER:-1}             # 1: HAProxy and nginx listen with defer-accept / deferred (TCP_DEFER_ACCEPT), as kelpie always does; 0: their defaults
CHURN_CONNS=${CHURN_CONNS:-32}
BULK=${BULK:-1}               # 0 skips the large-body rows (upload and download through each proxy)
BULK_BYTES=${BULK_BYTES:-67108864} # bytes per body (64 MiB)
BULK_CONNS=${BULK_CONNS:-4}
TWO=${TWO:-1}                 # 0 skips the two-thread rows (GOMAXPROCS=2, nbthread 2, two nginx workers)
EXTRA_RUNS=${EXTRA_RUNS:-3}   # repetitions of each churn, bulk and two-thread cell
EXTRA_DURATION=${EXTRA_DURATION:-5} # seconds per churn, bulk and two-thread run
SUBSCRIPTS=${SUBSCRIPTS-bench/tls.sh bench/ws.sh bench/idle.sh} # run after the rest, their raw lines in the same report
PROFILE=${PROFILE:-1}         # profile kelpie (CPU + allocs) during one extra open-loop run
SYSCALLS=${SYSCALLS:-0}       # 1: also count each proxy's syscalls per request (strace -c; installs strace)
# KELPIE_BIN=path benchmarks that binary instead of building ./cmd/kelpie
LB_CPU=${LB_CPU:-1}           # CPU for the proxy under test
GEN_CPU=${GEN_CPU:-0}         # CPU for the load generators and the backends
OUT=${OUT:-$ROOT/bench/results}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---- tools -----------------------------------------------------------------
ensure_tools() {
	local missing=()
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v taskset >/dev/null || missing+=(util-linux)
	command -v curl >/dev/null || missing+=(curl)
	command -v ps >/dev/null || missing+=(procps)
	[ "$SYSCALLS" != 1 ] || command -v strace >/dev/null || missing+=(strace)
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]} with apt-get"
		local sudo=
		[ "$(id -u)" = 0 ] || sudo=sudo
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	export PATH=$PATH:/usr/sbin:/sbin
	command -v go >/dev/null || die "go is not on PATH"
	[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (proxy on one, load + backends on the other)"
}

# ---- processes -------------------------------------------------------------
PIDS=()
TMP=
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ -n "$TMP" ] && [ "${KEEP_TMP:-0}" != 1 ]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # stop PID: stop one process we started and forget it
	local pid=$1 keep=() p
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

wait_http() { # wait_http URL NAME [PID]: until URL answers 200, for up to 15 s
	local i
	for i in $(seq 150); do
		curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
		if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then
			die "$2 exited; its log is in $TMP (KEEP_TMP=1 keeps it)"
		fi
		sleep 0.1 # polling a process we just started; it has no readiness event
	done
	die "$2 did not answer 200 at $1 (logs in $TMP; KEEP_TMP=1 keeps them)"
}

wait_file() {
	local i
	for i in $(seq 150); do [ -s "$1" ] && return 0; sleep 0.1; done
	die "timed out waiting for $1"
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # cpu_ticks PID...: utime+stime summed, in clock ticks
	local t=0 p v
	for p in "$@"; do
		v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")
		t=$((t + v))
	done
	echo "$t"
}

core_ticks() { # core_ticks N: "busy total steal" jiffies of CPU N from /proc/stat
	awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t, $9 }' /proc/stat
}
# snapshot: core_ticks of the generator's CPU, then of the proxies' CPU.
snapshot() { echo "$(core_ticks "$GEN_CPU") $(core_ticks "$LB_CPU")"; }
# usage BEFORE AFTER (snapshots): how busy the generator's CPU was, and how
# much of each CPU's time the hypervisor gave to something else (steal).
usage() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		printf "gen_busy=%.0f steal_gen=%.1f steal_lb=%.1f",
			(y[2] > x[2] ? (y[1] - x[1]) / (y[2] - x[2]) * 100 : 0),
			(y[2] > x[2] ? (y[3] - x[3]) / (y[2] - x[2]) * 100 : 0),
			(y[5] > x[5] ? (y[6] - x[6]) / (y[5] - x[5]) * 100 : 0) }'
}
# pid_list TARGET: the target's PIDs, comma-separated (loadgen's -pids).
pid_list() {
	local p
	# shellcheck disable=SC2086 # split on purpose: collapses nginx's "master  worker "
	p=$(echo ${CPU_PIDS[$1]})
	echo "${p// /,}"
}
busy_pct() { # busy_pct "B0 T0" "B1 T1"
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.0f", (d > 0 ? (y[1] - x[1]) / d * 100 : 0) }'
}

# ---- setup -----------------------------------------------------------------
ensure_tools
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kelpie-bench.XXXXXX")
log "work dir $TMP"
read -r LOAD1 _ </proc/loadavg
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 1.0) }'; then
	log "warning: load average is $LOAD1; other work on this machine will add noise"
fi

log "building"
go build -o "$TMP/backend" ./bench/cmd/backend
go build -o "$TMP/loadgen" ./bench/cmd/loadgen
go build -o "$TMP/bulk" ./bench/cmd/bulk
go build -o "$TMP/report" ./bench/cmd/report # statistics, tables, verdicts
HAVE_KELPIE=0
if [[ " $PROXIES " == *" kelpie "* ]]; then
	if [ -n "${KELPIE_BIN:-}" ]; then
		cp "$KELPIE_BIN" "$TMP/kelpie" && HAVE_KELPIE=1
	elif go build -o "$TMP/kelpie" ./cmd/kelpie 2>"$TMP/kelpie-build.log"; then
		HAVE_KELPIE=1
	else
		log "warning: kelpie does not build; continuing without it"
		sed 's/^/    /' "$TMP/kelpie-build.log" >&2
		PROXIES=${PROXIES//kelpie/}
	fi
fi
[ "$HAVE_KELPIE" = 1 ] || SCALING=0

# Backends: one process, pinned with the load generator.
taskset -c "$GEN_CPU" "$TMP/backend" -n 3 -addrs "$TMP/addrs3" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_file "$TMP/addrs3"
mapfile -t BACKENDS <"$TMP/addrs3"
DIRECT_URL="http://${BACKENDS[0]}/"

mapfile -t PORTS < <("$TMP/backend" -free 8)
HAPROXY_PORT=${PORTS[0]} NGINX_PORT=${PORTS[1]} KELPIE_PORT=${PORTS[2]}
KELPIE_ADMIN=${PORTS[3]} KELPIE_PPROF=${PORTS[4]} SCALE_PORT=${PORTS[5]} SCALE_ADMIN=${PORTS[6]}
HAPROXY_B_PORT=${PORTS[7]}


# ---- configs ---------------------------------------------------------------
# Equivalent setups: round robin over the same three backends, keep-alive to the
# backends, one thread, the same forwarding headers, active /health probes every
# 1 s where the proxy has them (nginx's open-source build does not).
write_nginx() { # write_nginx [WORKERS]
	mkdir -p "$TMP/nginx"
	{
		cat <<EOF
worker_processes ${1:-1};
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
    upstream be {
EOF
		local a
		for a in "${BACKENDS[@]}"; do echo "        server $a;"; done
		cat <<EOF
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT$([ "$DEFER" = 1 ] && echo ' deferred');
        keepalive_requests 1000000;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-ID \$request_id;
        }
        # The bulk rows: stream bodies both ways as HAProxy and kelpie do,
        # instead of spooling them to temporary files.
        location /bulk {
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
	} >"$TMP/nginx.conf"
}

# write_kelpie FILE PORT ADMIN ALGORITHM ADDR...
write_kelpie() {
	local file=$1 port=$2 admin=$3 algo=$4 a
	shift 4
	{
		cat <<EOF
listen: "127.0.0.1:$port"
admin:
  listen: "127.0.0.1:$admin"
upstreams:
  - name: bench
    balance: $algo
    backends:
EOF
		for a in "$@"; do echo "      - address: \"$a\""; done
		cat <<EOF
    health:
      active:
        path: /health
        interval: 1s
        timeout: 1s
EOF
	} >"$file"
}

# ---- start the proxies -----------------------------------------------------
declare -A URL CPU_PIDS
URL[direct]=$DIRECT_URL
CPU_PIDS[direct]=

THREADS=1      # threads per proxy; the two-thread rows set 2
PROXY_CPUS=$LB_CPU # CPUs the proxies are pinned to
start_kelpie() { # start_kelpie CONFIG LOG [extra flags]: sets KPID
	local cfg=$1 logf=$2
	shift 2
	GOMAXPROCS=$THREADS taskset -c "$PROXY_CPUS" "$TMP/kelpie" run -config "$cfg" "$@" >"$logf" 2>&1 &
	KPID=$!
	PIDS+=("$KPID")
}

# start_proxies: each of $PROXIES with $THREADS threads on $PROXY_CPUS; sets
# URL and CPU_PIDS.
start_proxies() {
	for p in $PROXIES; do
		case $p in
		haproxy)
			write_haproxy "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$THREADS"
			haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
			taskset -c "$PROXY_CPUS" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
			PIDS+=($!)
			CPU_PIDS[haproxy]=$!
			URL[haproxy]="http://127.0.0.1:$HAPROXY_PORT/"
			if [ "$CONTROL" = 1 ] && [ "$THREADS" = 1 ]; then
				# The control: a second, identical HAProxy. How far apart it and
				# HAProxy come out is how far apart two equal proxies come out.
				write_haproxy "$TMP/haproxy-b.cfg" "$HAPROXY_B_PORT"
				taskset -c "$PROXY_CPUS" haproxy -db -f "$TMP/haproxy-b.cfg" >"$TMP/haproxy-b.log" 2>&1 &
				PIDS+=($!)
				CPU_PIDS[haproxy-b]=$!
				URL[haproxy-b]="http://127.0.0.1:$HAPROXY_B_PORT/"
				wait_http "${URL[haproxy-b]}" haproxy-b "${CPU_PIDS[haproxy-b]}"
			fi
			;;
		nginx)
			write_nginx "$THREADS"
			taskset -c "$PROXY_CPUS" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
			PIDS+=($!)
			CPU_PIDS[nginx]=$!
			URL[nginx]="http://127.0.0.1:$NGINX_PORT/"
			;;
		kelpie)
			write_kelpie "$TMP/kelpie.yaml" "$KELPIE_PORT" "$KELPIE_ADMIN" round_robin "${BACKENDS[@]}"
			PPROF_FLAGS=()
			# `kelpie run -h` exits non-zero; read its usage before grepping (pipefail).
			khelp=$("$TMP/kelpie" run -h 2>&1 || true)
			if [ "$PROFILE" = 1 ] && [[ $khelp == *-pprof* ]]; then
				PPROF_FLAGS=(-pprof "127.0.0.1:$KELPIE_PPROF")
			fi
			start_kelpie "$TMP/kelpie.yaml" "$TMP/kelpie.log" "${PPROF_FLAGS[@]}"
			CPU_PIDS[kelpie]=$KPID
			URL[kelpie]="http://127.0.0.1:$KELPIE_PORT/"
			wait_http "http://127.0.0.1:$KELPIE_ADMIN/readyz" kelpie "$KPID"
			;;
		*) die "unknown proxy $p (PROXIES=$PROXIES)" ;;
		esac
	done
	for p in $PROXIES; do
		wait_http "${URL[$p]}" "$p" "${CPU_PIDS[$p]}"
	done
	# nginx does its work in its worker; measure master and worker together.
	if [ -n "${CPU_PIDS[nginx]:-}" ]; then
		CPU_PIDS[nginx]="${CPU_PIDS[nginx]} $(ps -o pid= --ppid "${CPU_PIDS[nginx]}" | tr -s ' \n' ' ')"
	fi
}
start_proxies
TARGETS="direct $PROXIES"
[ -z "${CPU_PIDS[haproxy-b]:-}" ] || TARGETS=${TARGETS/haproxy/haproxy haproxy-b}
# in_order RUN: the targets, reversed in even runs, so that no proxy always
# runs right after another one (the machine's noise drifts within a round too).
in_order() {
	if (($1 % 2)); then echo "$TARGETS"; else echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}
log "backends ${BACKENDS[*]}; targets: $TARGETS"

# ---- runs ------------------------------------------------------------------
RAW=$TMP/raw.txt
: >"$RAW"

cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("rps=%.1f n=%d errors=%d p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
EOF

WRK_THREADS=1
# closed_run TARGET RUN [LOAD CONNS SECONDS CPUS WRK-ARGS...]: one wrk run,
# by default the closed loop's.
closed_run() {
	local t=$1 r=$2 load=${3:-closed} conns=${4:-$CONNS} secs=${5:-$DURATION} cpus=${6:-$GEN_CPU} c0 c1 t0 t1 g0 g1 line cpu=- pct=-
	shift $(($# < 6 ? $# : 6))
	taskset -c "$cpus" wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" "$@" "${URL[$t]}" >/dev/null
	# shellcheck disable=SC2086
	[ -z "${CPU_PIDS[$t]}" ] || c0=$(cpu_ticks ${CPU_PIDS[$t]})
	g0=$(core_ticks "$GEN_CPU")
	t0=$(date +%s%N)
	line=$(taskset -c "$cpus" wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" -s "$TMP/report.lua" "$@" "${URL[$t]}" | grep '^rps=')
	t1=$(date +%s%N)
	g1=$(core_ticks "$GEN_CPU")
	if [ -n "${CPU_PIDS[$t]}" ]; then
		# shellcheck disable=SC2086
		c1=$(cpu_ticks ${CPU_PIDS[$t]})
		local n=${line#*n=}
		n=${n%% *}
		cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
		pct=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v w=$((t1 - t0)) 'BEGIN { printf "%.1f", d / hz / (w / 1e9) * 100 }')
	fi
	echo "load=$load target=$t run=$r $line cpu_us_req=$cpu cpu_pct=$pct gen_busy=$(busy_pct "$g0" "$g1")" | tee -a "$RAW" >&2
}

pair_run() { # pair_run TARGET RUN: TARGET and HAProxy under one generator
	local t=$1 r=$2 s0 out busy
	s0=$(snapshot)
	out=$(taskset -c "$GEN_CPU" "$TMP/loadgen" -rate "$PAIR_RATE" -duration "${DURATION}s" -warmup "${WARMUP}s" -conns "$OL_CONNS" \
		-url "${URL[haproxy]}" -pids "$(pid_list haproxy)" -url "${URL[$t]}" -pids "$(pid_list "$t")")
	busy=$(usage "$s0" "$(snapshot)")
	echo "load=pair-$t target=haproxy run=$r $(sed -n 1p <<<"$out") $busy" | tee -a "$RAW" >&2
	echo "load=pair-$t target=$t run=$r $(sed -n 2p <<<"$out") $busy" | tee -a "$RAW" >&2
}

open_run() { # open_run TARGET RUN [LABEL]
	local t=$1 r=$2 label=${3:-$1} line s0
	s0=$(snapshot)
	line=$(taskset -c "$GEN_CPU" "$TMP/loadgen" -url "${URL[$t]}" -rate "$RATE" -duration "${DURATION}s" \
		-warmup "${WARMUP}s" -conns "$OL_CONNS" -pids "$(pid_list "$t")")
	echo "load=open target=$label run=$r $line $(usage "$s0" "$(snapshot)")" | tee -a "$RAW" >&2
}

log "closed loop: wrk -t1 -c$CONNS -d${DURATION}s, $RUNS runs, ${WARMUP}s warm-up each"
for r in $(seq "$RUNS"); do
	for t in $(in_order "$r"); do closed_run "$t" "$r"; done
done

median() { # median LOAD TARGET KEY: median over runs, "-" if none
	"$TMP/report" median -load "$1" -target "$2" -key "$3" "$RAW"
}

if [ -z "$RATE" ]; then
	base=haproxy
	[[ " $PROXIES " == *" haproxy "* ]] || base=$(echo "$PROXIES" | awk '{ print $1 }')
	RATE=$(awk -v m="$(median closed "$base" rps)" -v f="$RATE_FRACTION" 'BEGIN { printf "%d", int(m * f / 100) * 100 }')
	[ "$RATE" -gt 0 ] || die "could not derive an open-loop rate from $base"
	log "open-loop rate: $RATE req/s ($RATE_FRACTION x $base's closed-loop median)"
	# The open-loop generator costs more per request than wrk, and it shares its
	# CPU with the backends: lower the rate until that CPU keeps up with room to
	# spare, or the latencies measure the generator instead of the proxy.
	for _ in 1 2 3 4 5 6 7 8; do
		g0=$(core_ticks "$GEN_CPU")
		line=$(taskset -c "$GEN_CPU" "$TMP/loadgen" -url "$DIRECT_URL" -rate "$RATE" -duration 2s -warmup 1s -conns "$OL_CONNS")
		busy=$(busy_pct "$g0" "$(core_ticks "$GEN_CPU")")
		late=${line#*late=}
		late=${late%% *}
		if [ "$busy" -le "$GEN_MAX_BUSY" ] && [ "$late" = 0 ]; then break; fi
		RATE=$(awk -v r="$RATE" 'BEGIN { printf "%d", int(r * 0.75 / 100) * 100 }')
		log "CPU $GEN_CPU was $busy% busy (over $GEN_MAX_BUSY%) driving the backends directly; open-loop rate lowered to $RATE req/s"
		[ "$RATE" -ge 100 ] || die "the load generator cannot keep up even at 100 req/s; is the machine busy?"
	done
fi

log "open loop: $RATE req/s, up to $OL_CONNS connections, ${DURATION}s, $OPEN_RUNS runs"
for r in $(seq "$OPEN_RUNS"); do
	for t in $(in_order "$r"); do open_run "$t" "$r"; done
done

# ---- paired open loop ----------------------------------------------------------
# One generator drives HAProxy and another proxy at the same time on the same
# schedule, RATE/2 each (the same total load as above). The runs above are the
# proxies' absolute latencies, but each ran alone in its own seconds, and on a
# noisy machine a stall of the generator's CPU or of the host lands on
# whichever proxy ran then. Here a stall delays both streams alike, so the
# ratio of the two p99s compares the proxies, not the seconds they ran in.
# HAProxy beside a second HAProxy (haproxy-b) is the control: how far apart
# two equal proxies come out.
PAIRED=
if [ "$PAIR_RUNS" -gt 0 ] && [ -n "${CPU_PIDS[haproxy]:-}" ]; then
	PAIRED=${PROXIES//haproxy/}
	[ -z "${CPU_PIDS[haproxy-b]:-}" ] || PAIRED="haproxy-b $PAIRED"
	PAIR_RATE=$((RATE / 2))
	log "paired open loop: HAProxy beside each of$(printf ' %s' $PAIRED), $PAIR_RATE req/s each, ${DURATION}s, $PAIR_RUNS runs"
	for r in $(seq "$PAIR_RUNS"); do
		for t in $PAIRED; do pair_run "$t" "$r"; done
	done
fi

# ---- connection churn and large bodies ------------------------------------------
# Churn: wrk with "Connection: close", so every request opens (and the proxy
# closes) a connection; the proxies keep their backend connections alive, so
# this measures accept, per-connection setup and close. Bulk: large bodies
# through each proxy (bench/cmd/bulk, BULK_CONNS connections of BULK_BYTES
# bodies to the backends' /bulk), the proxy's CPU per GB in each direction.
bulk_run() { # bulk_run TARGET RUN DIR
	local t=$1 r=$2 dir=$3 line s0
	s0=$(snapshot)
	line=$(taskset -c "$GEN_CPU" "$TMP/bulk" -url "${URL[$t]}bulk" -dir "$dir" -bytes "$BULK_BYTES" -conns "$BULK_CONNS" \
		-duration "${EXTRA_DURATION}s" -warmup "${WARMUP}s" -pids "$(pid_list "$t")")
	echo "load=bulk-$dir target=$t run=$r $line $(usage "$s0" "$(snapshot)")" | tee -a "$RAW" >&2
}
if [ "$CHURN" = 1 ]; then
	log "churn: wrk -t1 -c$CHURN_CONNS -H 'Connection: close', ${EXTRA_DURATION}s, $EXTRA_RUNS runs"
	for r in $(seq "$EXTRA_RUNS"); do
		for t in $(in_order "$r"); do
			closed_run "$t" "$r" churn "$CHURN_CONNS" "$EXTRA_DURATION" "$GEN_CPU" -H 'Connection: close'
		done
	done
fi
if [ "$BULK" = 1 ]; then
	log "bulk: $BULK_CONNS connections of $BULK_BYTES-byte bodies, up and down, ${EXTRA_DURATION}s, $EXTRA_RUNS runs"
	for r in $(seq "$EXTRA_RUNS"); do
		for t in $(in_order "$r"); do
			bulk_run "$t" "$r" up
			bulk_run "$t" "$r" down
		done
	done
fi

# ---- profile kelpie ----------------------------------------------------------
PROFILE_NOTE=
if [ "$HAVE_KELPIE" = 1 ] && [ "$PROFILE" = 1 ]; then
	if [ ${#PPROF_FLAGS[@]} -gt 0 ]; then
		log "profiling kelpie during one more open-loop run"
		pp="http://127.0.0.1:$KELPIE_PPROF/debug/pprof"
		secs=$((DURATION - 1))
		curl -fsS -o "$OUT/kelpie.cpu.prof" "$pp/profile?seconds=$secs" &
		cpid=$!
		PIDS+=("$cpid")
		curl -fsS -o "$OUT/kelpie.allocs.prof" "$pp/allocs?seconds=$secs" &
		apid=$!
		PIDS+=("$apid")
		open_run kelpie 1 kelpie-profiled
		wait "$cpid" "$apid" || true
		# And at saturation, where the per-request cost is lowest.
		curl -fsS -o "$OUT/kelpie.closed.cpu.prof" "$pp/profile?seconds=$secs" &
		cpid=$!
		PIDS+=("$cpid")
		taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${URL[kelpie]}" >/dev/null
		wait "$cpid" || true
		go tool pprof -top -nodecount=30 "$TMP/kelpie" "$OUT/kelpie.closed.cpu.prof" >"$OUT/kelpie.closed.cpu.top.txt" 2>/dev/null || true
		go tool pprof -top -nodecount=30 "$TMP/kelpie" "$OUT/kelpie.cpu.prof" >"$OUT/kelpie.cpu.top.txt" 2>/dev/null || true
		go tool pprof -top -sample_index=alloc_space -nodecount=20 "$TMP/kelpie" "$OUT/kelpie.allocs.prof" >"$OUT/kelpie.allocs.top.txt" 2>/dev/null || true
		cp "$TMP/kelpie" "$OUT/kelpie.bin"
		PROFILE_NOTE="Profiles (in ${OUT#"$ROOT"/}/): kelpie.cpu.prof and kelpie.allocs.prof (open loop), kelpie.closed.cpu.prof (wrk), binary kelpie.bin; -top summaries in the matching .top.txt files."
	else
		PROFILE_NOTE="No profile: this kelpie has no -pprof flag."
	fi
fi

# ---- syscalls per request (optional) --------------------------------------------
# strace slows the proxy a lot, so this is a separate short run whose only
# output is counts: how many read/write/epoll/futex calls each proxy makes per request.
syscall_run() { # syscall_run TARGET
	local t=$1 sp p args=() line n
	for p in ${CPU_PIDS[$t]}; do args+=(-p "$p"); done
	strace -c -f -o "$TMP/strace-$t.txt" "${args[@]}" 2>/dev/null &
	sp=$!
	PIDS+=("$sp")
	sleep 0.5 # let strace attach; it signals nothing when it has
	line=$(taskset -c "$GEN_CPU" "$TMP/loadgen" -url "${URL[$t]}" -rate "$RATE" -duration 3s -warmup 0s -conns "$OL_CONNS")
	kill -INT "$sp" 2>/dev/null || true
	wait "$sp" 2>/dev/null || true
	n=${line#*n=}
	n=${n%% *}
	awk -v t="$t" -v n="$n" '
		$NF == "total" || NF < 5 || $1 !~ /^[0-9.]+$/ { next }
		{ calls = $4; errs = (NF == 6) ? $5 : 0; name = $NF; all += calls
		  if (name ~ /^(read|readv|recvfrom|recvmsg)$/) { rd += calls; again += errs }
		  else if (name ~ /^(write|writev|sendto|sendmsg)$/) wr += calls
		  else if (name ~ /^epoll/) ep += calls
		  else if (name == "futex") fx += calls
		  else if (name ~ /^(nanosleep|clock_nanosleep)$/) sl += calls }
		END { printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", t, all / n, rd / n, again / n, wr / n, ep / n, fx / n, sl / n }' \
		"$TMP/strace-$t.txt" >>"$TMP/syscalls.md"
}
if [ "$SYSCALLS" = 1 ]; then
	log "syscalls per request (strace -c, 3 s at $RATE req/s)"
	: >"$TMP/syscalls.md"
	for t in $PROXIES; do syscall_run "$t"; done
fi

stop_proxies() {
	local t
	for t in $PROXIES haproxy-b; do [ -z "${CPU_PIDS[$t]:-}" ] || stop "${CPU_PIDS[$t]%% *}"; done
	CPU_PIDS[haproxy-b]=
}

# ---- two threads each -------------------------------------------------------------
# GOMAXPROCS=2, nbthread 2, two nginx workers, each proxy on both CPUs. The
# generator (wrk -t2) and the backends then share those CPUs with it: there is
# no third CPU. CPU per request is still the proxy's own utime+stime over its
# requests, and every proxy gets the same sharing, so the rows compare; the
# change from one thread is closed-2t over the one-thread closed loop above.
if [ "$TWO" = 1 ]; then
	stop_proxies
	THREADS=2 PROXY_CPUS="$GEN_CPU,$LB_CPU" WRK_THREADS=2
	start_proxies
	log "two threads each: wrk -t2 -c$CONNS on CPUs $PROXY_CPUS, ${EXTRA_DURATION}s, $EXTRA_RUNS runs"
	for r in $(seq "$EXTRA_RUNS"); do
		for t in $(in_order "$r"); do
			[ "$t" = direct ] || [ "$t" = haproxy-b ] || closed_run "$t" "$r" closed-2t "$CONNS" "$EXTRA_DURATION" "$PROXY_CPUS"
		done
	done
	THREADS=1 PROXY_CPUS=$LB_CPU WRK_THREADS=1
fi

# ---- scaling: kelpie's cost by pool size and algorithm -------------------------
if [ "$SCALING" = 1 ]; then
	# Only the kelpie under test runs: the others' health checks would add noise.
	stop_proxies
	taskset -c "$GEN_CPU" "$TMP/backend" -n 300 -addrs "$TMP/addrs300" >"$TMP/backend300.log" 2>&1 &
	PIDS+=($!)
	wait_file "$TMP/addrs300"
	mapfile -t MANY <"$TMP/addrs300"
	log "scaling: kelpie at $RATE req/s, ${SCALE_DURATION}s, $SCALE_RUNS runs per cell"
	saved_d=$DURATION
	DURATION=$SCALE_DURATION
	for n in 3 30 300; do
		for algo in round_robin least_conn ip_hash; do
			cfg=$TMP/kelpie-$n-$algo.yaml
			write_kelpie "$cfg" "$SCALE_PORT" "$SCALE_ADMIN" "$algo" "${MANY[@]:0:$n}"
			start_kelpie "$cfg" "$TMP/kelpie-$n-$algo.log"
			wait_http "http://127.0.0.1:$SCALE_ADMIN/readyz" "kelpie ($n backends, $algo)" "$KPID"
			URL[scale]="http://127.0.0.1:$SCALE_PORT/"
			CPU_PIDS[scale]=$KPID
			for r in $(seq "$SCALE_RUNS"); do open_run scale "$r" "kelpie-$n-$algo"; done
			stop "$KPID"
		done
	done
	DURATION=$saved_d
fi

# ---- the other benchmark scripts --------------------------------------------------
# Each runs its own proxies and appends its raw lines to $RAW (TLS, WebSocket,
# idle connections: bench/README.md); ours are stopped first.
stop_proxies
for sub in $SUBSCRIPTS; do
	[ -x "$ROOT/$sub" ] || continue
	log "running $sub"
	RAW=$RAW OUT=$OUT LB_CPU=$LB_CPU GEN_CPU=$GEN_CPU QUICK=$QUICK "$ROOT/$sub" >"$TMP/$(basename "$sub").out" 2>&1 ||
		log "warning: $sub failed; its output is in $TMP/$(basename "$sub").out (KEEP_TMP=1 keeps it)"
done

# ---- report ----------------------------------------------------------------
# bench/cmd/report computes every median, ratio, interval and verdict from the
# raw lines (tested in bench/internal/report); this script only adds the facts
# the raw lines do not carry: when, where and with what.
{
	echo "\`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r)."
	echo "Proxies pinned to CPU $LB_CPU with one thread each; load generator and backends on CPU $GEN_CPU. Medians of $RUNS runs of ${DURATION}s after ${WARMUP}s warm-up."
	echo "Versions: $(haproxy -v 2>/dev/null | head -1 | awk '{ print "HAProxy " $3 }'), $(nginx -v 2>&1 | sed 's|nginx version: nginx/|nginx |'), kelpie $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(go version | awk '{ print $3 }'). Load average at start: $LOAD1."
} >"$TMP/context.md"
{
	"$TMP/report" -gen-cpu "$GEN_CPU" -lb-cpu "$LB_CPU" -conns "$CONNS" -scale-duration "${SCALE_DURATION}s" -context "$TMP/context.md" "$RAW"
	if [ "$SYSCALLS" = 1 ]; then
		echo
		echo "### Syscalls per request (strace -c, open loop at $RATE req/s for 3 s; strace itself slows the proxy)"
		echo
		echo "| proxy | all | reads | reads that returned EAGAIN | writes | epoll | futex | nanosleep |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|"
		cat "$TMP/syscalls.md"
	fi
	echo
	[ -z "$PROFILE_NOTE" ] || echo "$PROFILE_NOTE"
} >"$OUT/latest.md"
cp "$RAW" "$OUT/latest.raw.txt"
echo
cat "$OUT/latest.md"
log "written to $OUT/latest.md (raw runs: $OUT/latest.raw.txt)"
