#!/usr/bin/env bash
# bench/ab.sh: two kelpie builds side by side under one open-loop generator,
# the way the benchmark pairs kelpie with HAProxy (bench/README.md, "paired
# runs"): request i goes to both at the same intended time, so a stall of the
# machine lands on both. Use it to judge a change to the data path:
#
#   bench/ab.sh BASE_REV            # BASE_REV's kelpie against the work tree's
#   RATE=3000 ROUNDS=6 bench/ab.sh e550db2
#   MODE=churn bench/ab.sh e550db2  # a new connection per request instead
#   MODE=churn bench/ab.sh haproxy  # the work tree against HAProxy (bench/run.sh's
#                                   # config; DEFER=0: without defer-accept)
#
# MODE=churn compares CPU per request when every request brings a new
# connection: in each round two wrk -H 'Connection: close' (CHURN_CONNS
# connections each, both on CPU 0) drive the two kelpies at once, and each
# kelpie's CPU time over its requests is its cpu_us_req.
#
# Both kelpies run with GOMAXPROCS=1 on CPU 1, the generator and 3 backends on
# CPU 0 (THREADS=2: GOMAXPROCS=2 and HAProxy's nbthread 2, on both CPUs, which
# the generator and backends then share). Each round's raw lines are written
# as the benchmark writes paired
# runs (the base labelled haproxy, the work tree kelpie), and bench/cmd/report
# pools them: "kelpie" over "haproxy" is then the work tree over the base.
# Bounded: ROUNDS x (WARMUP + DURATION) seconds of load, on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: bench/ab.sh BASE_REV}
MODE=${MODE:-paired} CHURN_CONNS=${CHURN_CONNS:-16}
RATE=${RATE:-2000} ROUNDS=${ROUNDS:-6} DURATION=${DURATION:-8} WARMUP=${WARMUP:-2} CONNS=${CONNS:-64}
THREADS=${THREADS:-1} # 2: both proxies with two threads (GOMAXPROCS=2, nbthread 2) on both CPUs
GEN_CPU=${GEN_CPU:-0} LB_CPU=${LB_CPU:-$([ "$THREADS" = 1 ] && echo 1 || echo 0-1)}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	git worktree remove --force "$TMP/base" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

. bench/lib.sh
DEFER=${DEFER:-1}
echo "ab: building $base and the work tree" >&2
if [ "$base" != haproxy ]; then
	git worktree add -q --detach "$TMP/base" "$base"
	(cd "$TMP/base" && go build -o "$TMP/kelpie-base" ./cmd/kelpie)
fi
go build -o "$TMP/kelpie-new" ./cmd/kelpie
go build -o "$TMP/loadgen" ./bench/cmd/loadgen
go build -o "$TMP/backend" ./bench/cmd/backend
go build -o "$TMP/report" ./bench/cmd/report

taskset -c "$GEN_CPU" "$TMP/backend" -n 3 -addrs "$TMP/addrs" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/addrs" ] && [ "$(wc -l <"$TMP/addrs")" -ge 3 ] && break; sleep 0.1; done
mapfile -t BACKENDS <"$TMP/addrs"
ports=($("$TMP/backend" -free 4))

start() { # start NAME PORT ADMIN: writes the config, starts kelpie, sets PID
	local name=$1 port=$2 admin=$3 a
	{
		printf 'listen: "127.0.0.1:%s"\nadmin:\n  listen: "127.0.0.1:%s"\nupstreams:\n  - name: bench\n    balance: round_robin\n    backends:\n' "$port" "$admin"
		for a in "${BACKENDS[@]}"; do printf '      - address: "%s"\n' "$a"; done
		printf '    health:\n      active:\n        path: /health\n        interval: 1s\n        timeout: 1s\n'
	} >"$TMP/$name.yaml"
	GOMAXPROCS=$THREADS taskset -c "$LB_CPU" "$TMP/kelpie-$name" run -config "$TMP/$name.yaml" >"$TMP/$name.log" 2>&1 &
	PID=$!
	PIDS+=("$PID")
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "ab: kelpie $name did not become ready; its log:" >&2
	cat "$TMP/$name.log" >&2
	exit 1
}
if [ "$base" = haproxy ]; then
	write_haproxy "$TMP/haproxy.cfg" "${ports[0]}" "$THREADS"
	taskset -c "$LB_CPU" haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
	PID=$!
	PIDS+=("$PID")
	for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:${ports[0]}/" 2>/dev/null && break; sleep 0.1; done
else
	start base "${ports[0]}" "${ports[1]}"
fi
BASE_PID=$PID
start new "${ports[2]}" "${ports[3]}"
NEW_PID=$PID

RAW=$TMP/raw.txt
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
churn_round() { # churn_round RUN: both kelpies under wrk -H 'Connection: close' at once
	local r=$1 b0 n0 b1 n1 wb wn w=()
	for p in "${ports[0]}" "${ports[2]}"; do
		taskset -c "$GEN_CPU" wrk -t1 -c"$CHURN_CONNS" -d"${WARMUP}s" -H 'Connection: close' "http://127.0.0.1:$p/" >/dev/null &
		w+=($!)
	done
	wait "${w[@]}" # only the generators: a bare wait would wait for the kelpies too
	b0=$(ticks "$BASE_PID") n0=$(ticks "$NEW_PID")
	taskset -c "$GEN_CPU" wrk -t1 -c"$CHURN_CONNS" -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:${ports[0]}/" >"$TMP/wrk-base" &
	w=($!)
	taskset -c "$GEN_CPU" wrk -t1 -c"$CHURN_CONNS" -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:${ports[2]}/" >"$TMP/wrk-new" &
	w+=($!)
	wait "${w[@]}"
	b1=$(ticks "$BASE_PID") n1=$(ticks "$NEW_PID")
	wb=$(awk '/requests in/ { print $1 }' "$TMP/wrk-base") wn=$(awk '/requests in/ { print $1 }' "$TMP/wrk-new")
	echo "load=pair-kelpie target=haproxy run=$r n=$wb cpu_us_req=$(awk -v d=$((b1 - b0)) -v n="$wb" 'BEGIN { printf "%.2f", d / 100 * 1e6 / n }')" | tee -a "$RAW" >&2
	echo "load=pair-kelpie target=kelpie run=$r n=$wn cpu_us_req=$(awk -v d=$((n1 - n0)) -v n="$wn" 'BEGIN { printf "%.2f", d / 100 * 1e6 / n }')" | tee -a "$RAW" >&2
}
for r in $(seq "$ROUNDS"); do
	if [ "$MODE" = churn ]; then
		churn_round "$r"
		continue
	fi
	a=(-url "http://127.0.0.1:${ports[0]}/" -pids "$BASE_PID")
	b=(-url "http://127.0.0.1:${ports[2]}/" -pids "$NEW_PID")
	if ((r % 2)); then args=("${a[@]}" "${b[@]}"); else args=("${b[@]}" "${a[@]}"); fi
	out=$(taskset -c "$GEN_CPU" "$TMP/loadgen" -rate "$RATE" -duration "${DURATION}s" -warmup "${WARMUP}s" -conns "$CONNS" "${args[@]}")
	if ((r % 2)); then base_line=$(sed -n 1p <<<"$out") new_line=$(sed -n 2p <<<"$out")
	else new_line=$(sed -n 1p <<<"$out") base_line=$(sed -n 2p <<<"$out"); fi
	echo "load=pair-kelpie target=haproxy run=$r $base_line" | tee -a "$RAW" >&2
	echo "load=pair-kelpie target=kelpie run=$r $new_line" | tee -a "$RAW" >&2
done
cpu() { # cpu TARGET: median CPU µs per request over the rounds
	"$TMP/report" median -load pair-kelpie -target "$1" -key cpu_us_req "$RAW"
}
echo
echo "base $base: median CPU $(cpu haproxy) µs/req; work tree: $(cpu kelpie) µs/req"
if [ "$MODE" != churn ]; then
	echo "p99 of the work tree over the base (\"kelpie\" over \"haproxy\" below):"
	"$TMP/report" pool "$RAW"
fi
echo
echo "CPU per request of the work tree over the base:"
"$TMP/report" pool -key cpu_us_req "$RAW"
