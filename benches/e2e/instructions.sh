#!/usr/bin/env bash
# User-space instructions per proxied request of one nginx worker, counted by callgrind: the
# same whatever else the machine is doing, where CPU time per request moves ±5–8% from one
# round to the next. Runs configurations the last `bench.py throughput` run rendered in
# target-bench/e2e (run one first, e.g. `python3 benches/e2e/bench.py throughput --sets --sizes
# 1000 --rounds 1`), each as a single worker under valgrind, driven by wrk with the benchmark's
# host pick. The count of a 10-second window minus that of a 5-second window, divided by the
# difference in the requests the upstream's stub_status saw in each: what a window costs
# whatever its length (wrk's connections, timers) cancels out.
# Usage: [CACHE_SIM=1] benches/e2e/instructions.sh [DIST] [CONTENDER-DIR ...]
#   DIST uniform (default) or zipf; CONTENDER-DIR names under target-bench/e2e
#   (default: set-backend-peer-2set-1000 keepalive-2-1000). Needs valgrind and wrk.
#   CACHE_SIM=1 also simulates the caches (callgrind's model of this machine's L1s) and prints
#   the first-level instruction and data cache misses per request: code and data a contender
#   adds beyond what fits cost more than their instruction count says.
set -euo pipefail
cd "$(dirname "$0")/../.."
run=$PWD/target-bench/e2e
dist=${1:-uniform}
shift || true
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(set-backend-peer-2set-1000 keepalive-2-1000)
nginx=$(ls "$PWD"/target-bench/release/build/nginx-sys-*/out/objs/nginx | head -1)
status_port=$((${BENCH_BASE_PORT:-18000} + 5))
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -QUIT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$1 " && return; sleep 0.3; done; exit 1; }
requests() { curl -s "127.0.0.1:$status_port/status" | awk 'NR == 3 {print $3}'; }
# the summary line's counts: Ir, or with the cache simulation Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
total() { awk '/^(summary|totals):/ {$1 = ""; print; exit}' "$1"; }
sim=()
[ -n "${CACHE_SIM:-}" ] && sim=(--cache-sim=yes)

/usr/sbin/nginx -p "$run/upstream" -c "$run/upstream/nginx.conf" -e "$run/upstream/error.log" &
pids+=($!)
wait_port "$status_port"

printf '%-32s %s\n' contender "instructions/request ($dist)${CACHE_SIM:+, I1 misses, D1 misses}"
for d in "${dirs[@]}"; do
  conf="$tmp/$d.conf"
  sed -e 's/^worker_processes .*/worker_processes 1;\nmaster_process off;/' "$run/$d/nginx.conf" > "$conf"
  port=$(grep -o 'listen 127.0.0.1:[0-9]*' "$conf" | head -1 | cut -d: -f2)
  out="$tmp/$d.cg"
  valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out" "$nginx" -p "$run/$d" -c "$conf" \
    -e "$run/$d/error.log" 2> "$tmp/$d.valgrind" &
  vg=$!
  pids+=($vg)
  wait_port "$port"
  drive() { wrk -t1 -c8 -d"$1"s -s benches/e2e/wrk/hosts.lua "http://127.0.0.1:$port/" -- 1000 "$dist" > /dev/null; }
  drive 3
  r0=$(requests); callgrind_control -z "$vg" > /dev/null 2>&1
  drive 5
  r1=$(requests); callgrind_control -d w1 "$vg" > /dev/null 2>&1
  drive 10
  r2=$(requests); callgrind_control -d w2 "$vg" > /dev/null 2>&1
  # each dump counts from the previous one; each stub_status read is a request of its own
  i1=$(total "$out.1"); i2=$(total "$out.2")
  awk -v a="$i1" -v b="$i2" -v n1=$((r1 - r0 - 1)) -v n2=$((r2 - r1 - 1)) -v d="$d" 'BEGIN {
    split(a, x); split(b, y); n = n2 - n1
    misses = length(x) > 1 ? sprintf(", %.0f, %.0f", (y[4] - x[4]) / n, (y[5] + y[6] - x[5] - x[6]) / n) : ""
    printf "%-32s %.0f%s   (windows of %d and %d requests)\n", d, (y[1] - x[1]) / n, misses, n1, n2 }'
  kill -QUIT "$vg"; wait "$vg" 2>/dev/null || true
done
