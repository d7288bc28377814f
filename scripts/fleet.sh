#!/usr/bin/env bash
# `make fleet`: a fleet on this machine's loopback — a 3-member etcd cluster and two nodes, each
# node being what `make run` starts (scripts/run.sh: nginx, the writer, a demo backend), its
# writer in fleet mode following etcd:
#
#   etcd    members m1 m2 m3: clients on 127.0.0.1:$ETCD_PORT, +2, +4 (default 2379, 2381,
#           2383), peers on the next port of each; data in $FLEET_DIR/etcd/
#   node1   nginx on 127.0.0.1:$PORT (default 8080), demo backend on PORT+1, data in
#           $FLEET_DIR/node1
#   node2   nginx on 127.0.0.1:$PORT+2, demo backend on PORT+3, data in $FLEET_DIR/node2
#
# A write through either node's API goes into etcd; both nodes route by it. Environment: PORT,
# ETCD_PORT, DOMAIN (default localhost), MODE (upstream or variable), API_TOKEN (both nodes';
# else one is generated), FLEET_DIR (default target/fleet: the data stays there between runs,
# remove it to start afresh); SKIP_BUILD=1, NGINX_BIN, CARGO_TARGET_DIR and PROFILE as for
# run.sh.
# Ctrl-C stops everything it started (nginx with QUIT, the writers and etcd with TERM).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
ETCD_PORT=${ETCD_PORT:-2379}
DOMAIN=${DOMAIN:-localhost}
FLEET_DIR=${FLEET_DIR:-target/fleet}
CARGO=${CARGO:-cargo}
export DOMAIN

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

for tool in etcd curl; do
  command -v "$tool" >/dev/null || { echo "fleet.sh: $tool not found (make deps)" >&2; exit 1; }
done

if [ -z "${SKIP_BUILD:-}" ]; then
  say "building nginx, the module and the writer"
  $CARGO build --workspace
fi

mkdir -p "$FLEET_DIR/etcd"
FLEET_DIR=$(cd "$FLEET_DIR" && pwd)

if [ -z "${API_TOKEN:-}" ]; then
  API_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
fi
export API_TOKEN

PIDS=()
stop() {
  trap - INT TERM EXIT
  say "stopping the fleet"
  # The nodes first (run.sh stops its nginx and its writer), then etcd.
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  say "stopped"
}
trap stop INT TERM EXIT

# etcd: three members (scripts/etcd-cluster.sh).
say "starting etcd on 127.0.0.1:$ETCD_PORT, $((ETCD_PORT + 2)), $((ETCD_PORT + 4)) (data in $FLEET_DIR/etcd)"
# shellcheck source=scripts/etcd-cluster.sh
. scripts/etcd-cluster.sh
ETCD_PIDS=()
etcd_cluster "$FLEET_DIR/etcd" "$ETCD_PORT" || { PIDS=("${ETCD_PIDS[@]}"); exit 1; }
PIDS=("${ETCD_PIDS[@]}")
ENDPOINTS=$ETCD_URLS

# The nodes: run.sh each, in fleet mode, on their own ports and data.
NODE_PIDS=()
for n in 1 2; do
  port=$((PORT + 2 * (n - 1)))
  say "starting node$n: nginx on 127.0.0.1:$port, data in $FLEET_DIR/node$n"
  SKIP_BUILD=1 PORT=$port DEMO_PORT=$((port + 1)) RUN_DIR="$FLEET_DIR/node$n" \
    ETCD_ENDPOINTS="$ENDPOINTS" NODE_NAME="node$n" PRINT_FLOW=0 \
    ./scripts/run.sh > >(sed -u "s/^/[node$n] /") 2> >(sed -u "s/^/[node$n] /" >&2) &
  NODE_PIDS+=($!)
done
# Nodes before etcd in the stop order.
PIDS=("${NODE_PIDS[@]}" "${ETCD_PIDS[@]}")
for n in 1 2; do
  port=$((PORT + 2 * (n - 1)))
  for _ in $(seq 600); do
    curl -fsS -o /dev/null -H "Host: api.$DOMAIN" "http://127.0.0.1:$port/healthz" 2>/dev/null && break
    kill -0 "${NODE_PIDS[$((n - 1))]}" 2>/dev/null || { echo "fleet.sh: node$n exited" >&2; exit 1; }
    sleep 0.1
  done
done

N1="http://127.0.0.1:$PORT"
N2="http://127.0.0.1:$((PORT + 2))"
cat >&2 <<EOF

The fleet is running: etcd at $ENDPOINTS;
node1 on 127.0.0.1:$PORT, node2 on 127.0.0.1:$((PORT + 2)), API at api.$DOMAIN on both.
API token (both nodes): $API_TOKEN

  # write through node1 (answered once etcd committed it and node1's table applied it)
  curl -H 'Host: api.$DOMAIN' -H 'Authorization: Bearer $API_TOKEN' -H 'Content-Type: application/json' \\
       -d '{"host": "example.com", "backend": "127.0.0.1:$((PORT + 1))"}' $N1/entries.json

  # read through node2: its writer followed etcd, its nginx routes by it
  curl -H 'Host: example.com' $N2/
  curl -H 'Host: api.$DOMAIN' -H 'Authorization: Bearer $API_TOKEN' $N2/entries.json

  # delete through node2; node1 then answers 404 for example.com
  curl -X DELETE -H 'Host: api.$DOMAIN' -H 'Authorization: Bearer $API_TOKEN' $N2/entries/example.com.json
  curl -H 'Host: example.com' $N1/

  # what etcd holds
  etcdctl --endpoints $ENDPOINTS get /set-backend/ --prefix

Ctrl-C stops everything.
EOF

# Until any of them exits (or Ctrl-C); then stop the rest.
while true; do
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { say "a process of the fleet exited"; exit 1; }
  done
  # In the background, so that Ctrl-C runs the trap at once.
  sleep 0.5 &
  wait $! || true
done
