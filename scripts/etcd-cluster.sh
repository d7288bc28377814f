# Sourced (bash): `etcd_cluster DIR PORT` starts a 3-member etcd cluster on loopback (Debian's
# `etcd`) and waits until every member is healthy. Member i (1..3) listens for clients on
# PORT+2(i-1) and for its peers on the next port, keeps its data in DIR/m<i> (a cluster
# restarted on the same DIR and PORT comes back with its data) and logs to stderr prefixed
# `[etcd m<i>]`. Sets ETCD_URLS (the client URLs, comma-separated) and ETCD_PIDS; the
# caller stops them (TERM). Used by scripts/fleet.sh (`make fleet`) and tests/container/fleet.sh.

etcd_cluster() {
  local dir=$1 base=$2 i client cluster=""
  command -v etcd >/dev/null || { echo "etcd not found (make deps: etcd-server)" >&2; return 1; }
  ETCD_URLS=""
  ETCD_PIDS=()
  for i in 1 2 3; do
    client=$((base + 2 * (i - 1)))
    cluster+="${cluster:+,}m$i=http://127.0.0.1:$((client + 1))"
    ETCD_URLS+="${ETCD_URLS:+,}http://127.0.0.1:$client"
  done
  mkdir -p "$dir"
  for i in 1 2 3; do
    client=$((base + 2 * (i - 1)))
    etcd --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$((client + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((client + 1))" \
      --initial-cluster "$cluster" --initial-cluster-token set-backend-fleet \
      --initial-cluster-state new --logger zap --log-outputs stderr --log-level warn \
      2> >(sed -u "s/^/[etcd m$i] /" >&2) &
    ETCD_PIDS+=($!)
  done
  for i in 1 2 3; do
    client=$((base + 2 * (i - 1)))
    for _ in $(seq 200); do
      curl -fsS "http://127.0.0.1:$client/health" 2>/dev/null | grep -q '"true"' && break
      kill -0 "${ETCD_PIDS[$((i - 1))]}" 2>/dev/null || { echo "etcd m$i exited" >&2; return 1; }
      sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$client/health" 2>/dev/null | grep -q '"true"' \
      || { echo "etcd m$i is not healthy" >&2; return 1; }
  done
}
