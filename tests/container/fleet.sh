#!/usr/bin/env bash
# The image in fleet mode (`make container-test` runs it after test.sh, on the image test.sh
# built): README.md's "A fleet of containers on etcd", with etcd on the host's loopback.
#
#   etcd      3 members on 127.0.0.1 (scripts/etcd-cluster.sh), authentication on: user root
#             with a password
#   nodes     two containers (--network host, own ports and volumes), ETCD_ENDPOINTS,
#             ETCD_USER and ETCD_PASSWORD_FILE (a root-only 0600 file mounted read-only: the
#             init copies it for the writer's user), NODE_NAME
#   checks    both register in etcd; a write through node1's API is routed by node2's nginx;
#             a delete through node2 reaches node1; the entries are in etcd; a bad
#             ETCD_ENDPOINTS stops the start with an error naming it
#
# Environment: IMAGE (default localhost/set-backend:test), SKIP_BUILD=1 to test an image
# already built, CONTAINER_ENGINE (see container/engine.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS

say() { echo "==> [+$((SECONDS - T0))s] fleet: $*" >&2; }
ok() { echo "  ok: $*" >&2; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

scripts/deps.sh curl openssl etcd-server etcd-client
# shellcheck source=container/engine.sh
. container/engine.sh
# shellcheck source=scripts/etcd-cluster.sh
. scripts/etcd-cluster.sh

IMAGE=${IMAGE:-localhost/set-backend:test}
DOMAIN=example.test
TOKEN=$(openssl rand -hex 32)
WORK=$(mktemp -d)
NODES=(sb-fleet1-$$ sb-fleet2-$$)
ETCD_PIDS=()
UPSTREAM_PID=""

# Runs of free ports: etcd's 6 from ETCD_BASE, the two nodes' and the upstream's from BASE.
free_run() {
  python3 -c '
import socket, sys
n = int(sys.argv[1])
for base in range(24000, 32000, 16):
    try:
        socks = [socket.socket() for _ in range(n)]
        for i, s in enumerate(socks):
            s.bind(("127.0.0.1", base + i))
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
' "$1"
}
BASE=$(free_run 16)
ETCD_BASE=$((BASE + 8))
PORT1=$BASE PORT2=$((BASE + 1)) UPSTREAM_PORT=$((BASE + 2))
PASSWORD=$(openssl rand -hex 16)

cleanup() {
  local rc=$? n
  set +e
  for n in "${NODES[@]}" sb-fleet-bad-$$; do
    if [ $rc -ne 0 ] && "$ENGINE" inspect "$n" >/dev/null 2>&1; then
      echo "---- container log ($n), last 40 lines ----" >&2
      "$ENGINE" logs "$n" 2>&1 | tail -n 40 >&2
    fi
    "$ENGINE" rm -f -v -t 0 "$n" >/dev/null 2>&1
  done
  for n in "${NODES[@]}"; do "$ENGINE" volume rm -f "$n" >/dev/null 2>&1; done
  [ -n "$UPSTREAM_PID" ] && kill "$UPSTREAM_PID" 2>/dev/null
  for n in "${ETCD_PIDS[@]}"; do kill -TERM "$n" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
  if [ $rc -eq 0 ]; then
    say "passed in $((SECONDS - T0))s"
  else
    echo "container fleet test FAILED (exit $rc) after $((SECONDS - T0))s" >&2
  fi
}
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
  say "building the image $IMAGE with $ENGINE"
  container_build "$IMAGE" >"$WORK/build.log" 2>&1 || {
    tail -n 60 "$WORK/build.log" >&2
    fail "the image did not build"
  }
fi

say "etcd: 3 members from 127.0.0.1:$ETCD_BASE, authentication on"
etcd_cluster "$WORK/etcd" "$ETCD_BASE" 2>"$WORK/etcd.log" || fail "etcd did not start: $(tail -5 "$WORK/etcd.log")"
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URLS" "$@"; }
ctl user add "root:$PASSWORD" >/dev/null
ctl role add root >/dev/null
ctl user grant-role root root >/dev/null
ctl auth enable >/dev/null
ctl --user "root:$PASSWORD" get /probe >/dev/null || fail "etcd with authentication does not answer"
! ctl get /probe >/dev/null 2>&1 || fail "etcd answers without authentication"
ok "etcd at $ETCD_URLS"
# The password file: root's alone, as a docker or compose secret is.
printf '%s\n' "$PASSWORD" >"$WORK/etcd-password"
chmod 0600 "$WORK/etcd-password"

mkdir -p "$WORK/www"
echo "hello from the fleet upstream" >"$WORK/www/index.html"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!

start_node() { # start_node INDEX
  local i=$1 port
  port=$((BASE + i))
  "$ENGINE" run -d --name "${NODES[$i]}" --network host -e DOMAIN="$DOMAIN" -e API_TOKEN="$TOKEN" \
    -e PORT="$port" -e ETCD_ENDPOINTS="$ETCD_URLS" -e ETCD_USER=root \
    -e ETCD_PASSWORD_FILE=/run/secrets/etcd-password -e NODE_NAME="node$((i + 1))" \
    -v "$WORK/etcd-password:/run/secrets/etcd-password:ro" \
    -v "${NODES[$i]}:/var/lib/set-backend" "$IMAGE" >/dev/null 2>"$WORK/run.err" ||
    fail "run ${NODES[$i]}: $(cat "$WORK/run.err")"
}
ready() { # ready PORT
  local i
  for i in $(seq 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: api.$DOMAIN" "http://127.0.0.1:$1/healthz")" = 200 ] && return 0
    sleep 0.25
  done
  return 1
}
api() { # api PORT METHOD PATH [curl options…]: prints "STATUS BODY"
  local port=$1 method=$2 path=$3
  shift 3
  curl -sS -w ' %{http_code}' -X "$method" -H "Host: api.$DOMAIN" -H "Authorization: Bearer $TOKEN" \
    "$@" "http://127.0.0.1:$port$path"
}
routed() { curl -s -o /dev/null -w '%{http_code}' -H "Host: $2" "http://127.0.0.1:$1/"; }

say "two nodes: ${NODES[*]} on ports $PORT1 and $PORT2"
start_node 0
start_node 1
ready "$PORT1" || fail "node1 did not get ready"
ready "$PORT2" || fail "node2 did not get ready"
# (grep reads a variable, not a pipe: with pipefail, grep -q closing the pipe early would fail
# the pipeline.)
grep -q "fleet mode: the writer follows etcd" <<<"$("$ENGINE" logs "${NODES[0]}" 2>&1)" ||
  fail "node1's log does not say fleet mode"
ok "both ready"
for n in node1 node2; do
  registered() { grep -q applied <<<"$(ctl --user "root:$PASSWORD" get "/set-backend/v1/nodes/$1" --print-value-only)"; }
  for _ in $(seq 50); do
    registered "$n" && break
    sleep 0.2
  done
  registered "$n" || fail "$n is not registered in etcd"
done
ok "both registered in etcd (authenticated with the password file)"

out=$(api "$PORT1" POST /entries.json -H 'Content-Type: application/json' \
  -d "{\"host\": \"fleet.example.org\", \"backend\": \"127.0.0.1:$UPSTREAM_PORT\"}")
[[ "$out" == *'"revision"'*' 201' ]] || fail "write through node1: $out"
ok "write through node1: $out"
for _ in $(seq 100); do
  [ "$(routed "$PORT2" fleet.example.org)" = 200 ] && break
  sleep 0.05
done
body=$(curl -s -H 'Host: fleet.example.org' "http://127.0.0.1:$PORT2/")
[ "$body" = "hello from the fleet upstream" ] || fail "node2 does not route the host: $body"
ok "node2's nginx routes it"
grep -qx "127.0.0.1:$UPSTREAM_PORT" <<<"$(ctl --user "root:$PASSWORD" get /set-backend/v1/data/ --prefix)" ||
  fail "the entry is not in etcd"
ok "the entry is in etcd"

out=$(api "$PORT2" DELETE /entries/fleet.example.org.json)
[[ "$out" == *' 200' || "$out" == *' 204' ]] || fail "delete through node2: $out"
for _ in $(seq 100); do
  [ "$(routed "$PORT1" fleet.example.org)" = 404 ] && break
  sleep 0.05
done
[ "$(routed "$PORT1" fleet.example.org)" = 404 ] || fail "node1 still routes the deleted host"
ok "a delete through node2 reaches node1"

say "a bad ETCD_ENDPOINTS stops the start"
"$ENGINE" run --name sb-fleet-bad-$$ --network host -e DOMAIN="$DOMAIN" -e PORT="$((BASE + 3))" \
  -e ETCD_ENDPOINTS=etcd1:2379 "$IMAGE" >"$WORK/bad.log" 2>&1 && fail "it started"
grep -q "ETCD_ENDPOINTS" "$WORK/bad.log" || fail "the error does not name ETCD_ENDPOINTS: $(cat "$WORK/bad.log")"
ok "refused: $(grep -m1 ETCD_ENDPOINTS "$WORK/bad.log")"
