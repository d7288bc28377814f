#!/usr/bin/env bash
# Upstream mode against a static `upstream {}` with keepalive and against variable mode: the
# same nginx binary (release build of this workspace), 2 workers each, one local upstream (the
# same nginx, 1 worker), wrk over HOSTS hosts (uniform), contenders alternating in rounds.
#
# Per run it prints one `RESULT` line: req/s and latency (wrk), new upstream connections (the
# upstream logs the first request of each connection only) and CPU ticks of the front workers;
# at the end, medians and per-round ratios. 127.0.0.1 only; every run is bounded; nginx is
# stopped with QUIT.
#
#   scripts/bench-upstream-mode.sh                 # HOSTS="1000 100000" ROUNDS=7 DURATION=8
#
# Environment: HOSTS, ROUNDS, DURATION (s), CONNS (wrk connections, 64), THREADS (2),
# PORT (front; the upstream gets PORT+1, default 19080), RUN_DIR, SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOSTS=${HOSTS:-"1000 100000"}; ROUNDS=${ROUNDS:-7}; DURATION=${DURATION:-8}
CONNS=${CONNS:-64}; THREADS=${THREADS:-2}
FRONT=${PORT:-19080}; UP=$((FRONT + 1))
D=${RUN_DIR:-$ROOT/target/bench-upstream-mode}
LUA=$ROOT/benches/e2e/wrk/hosts.lua
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p ngx_http_set_backend_module
  cargo build --release -p set-backend-tests --example bench_table
fi
NGINX_BIN=$(ls -t "$ROOT"/target/release/build/nginx-sys-*/out/objs/nginx | head -n 1)
MODULE=$ROOT/target/release/libngx_http_set_backend_module.so
MKTABLE=$ROOT/target/release/examples/bench_table

rm -rf "$D"; mkdir -p "$D/logs"
cat >"$D/up.conf" <<C
worker_processes 1; daemon off; pid $D/up.pid; error_log $D/up.err warn;
events { worker_connections 4096; }
http {
  map \$connection_requests \$first { 1 1; default 0; }
  log_format c '\$connection';
  access_log $D/up.conns c if=\$first;
  keepalive_requests 1000000; keepalive_timeout 120s;
  server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 "ok\n"; } }
}
C
front() { # name, location body, upstream block
cat >"$D/$1.conf" <<C
load_module $MODULE;
worker_processes 2; daemon off; pid $D/$1.pid; error_log $D/$1.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  set_backend_table $D/table;
  $3
  server { listen 127.0.0.1:$FRONT backlog=4096; location / { $2 } }
}
C
}
KA='proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host;'
front peer "proxy_pass http://set_backend; $KA" "upstream set_backend { set_backend_peer; keepalive 64; }"
front static "proxy_pass http://static; $KA" "upstream static { server 127.0.0.1:$UP; keepalive 64; }"
front variable 'set_backend $backend; proxy_pass http://$backend$request_uri; proxy_set_header Host $host;' ""

UPPID=""; FPID=""
cleanup() {
  [ -n "$FPID" ] && kill -QUIT "$FPID" 2>/dev/null || true
  [ -n "$UPPID" ] && kill -QUIT "$UPPID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
"$NGINX_BIN" -p "$D" -c "$D/up.conf" & UPPID=$!
sleep 0.5
cpu() { local t=0 p; for p in $1; do set -- $(cut -d' ' -f14,15 "/proc/$p/stat"); t=$((t + $1 + $2)); done; echo $t; }
for hosts in $HOSTS; do
  "$MKTABLE" "$D/table" "$hosts" "127.0.0.1:$UP"
  for round in $(seq "$ROUNDS"); do
    for c in peer static variable; do
      "$NGINX_BIN" -p "$D" -c "$D/$c.conf" & FPID=$!
      for _ in $(seq 50); do
        curl -fs -o /dev/null -H "Host: site0.bench.example" "http://127.0.0.1:$FRONT/" && break
        sleep 0.1
      done
      wrk -t"$THREADS" -c"$CONNS" -d2s -s "$LUA" "http://127.0.0.1:$FRONT/" -- "$hosts" uniform >/dev/null
      touch "$D/up.conns"; before=$(wc -l <"$D/up.conns")
      workers=$(ps --ppid "$FPID" -o pid= | tr -d ' ')
      cpu0=$(cpu "$workers")
      out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$LUA" "http://127.0.0.1:$FRONT/" -- "$hosts" uniform)
      cpu1=$(cpu "$workers")
      sleep 0.3
      conns=$(($(wc -l <"$D/up.conns") - before))
      echo "RESULT hosts=$hosts round=$round contender=$c conns=$conns cpu_ticks=$((cpu1 - cpu0)) $(echo "$out" | sed -n 's/^JSON //p')" | tee -a "$D/results.txt"
      kill -QUIT "$FPID"; wait "$FPID" 2>/dev/null || true; FPID=""
      sleep 0.5
    done
  done
done

python3 - "$D/results.txt" "$(getconf CLK_TCK)" <<'PY'
import json, re, statistics as st, sys
tick_us = 1e6 / int(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"RESULT hosts=(\d+) round=(\d+) contender=(\w+) conns=(\d+) cpu_ticks=(\d+) (.*)", line)
    hosts, rnd, c, conns, ticks, js = m.groups()
    j = json.loads(js)
    runs.setdefault(int(hosts), {}).setdefault(int(rnd), {})[c] = dict(
        rps=j["requests"] / (j["duration_us"] / 1e6), requests=j["requests"], conns=int(conns),
        cpu=int(ticks) * tick_us / j["requests"],
        errors=sum(v for k, v in j.items() if k.startswith("err_")))
for hosts, rounds in sorted(runs.items()):
    print(f"{hosts} hosts, {len(rounds)} rounds")
    for c in ("peer", "static", "variable"):
        rs = [r[c] for r in rounds.values() if c in r]
        print(f"  {c:9s} {st.median(x['rps'] for x in rs):8.0f} req/s (median)  "
              f"{sum(x['requests'] for x in rs) / max(1, sum(x['conns'] for x in rs)):7.1f} req/upstream conn  "
              f"{st.median(x['cpu'] for x in rs):5.1f} us CPU/req  {sum(x['errors'] for x in rs)} errors")
    for a, b in (("peer", "static"), ("peer", "variable")):
        ratio = [r[a]["rps"] / r[b]["rps"] for r in rounds.values() if a in r and b in r]
        cpu = [r[a]["cpu"] / r[b]["cpu"] for r in rounds.values() if a in r and b in r]
        print(f"  {a}/{b}: req/s {st.median(ratio):.3f} (median of per-round ratios), CPU/req {st.median(cpu):.3f}")
PY
