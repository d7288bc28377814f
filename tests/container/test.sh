#!/usr/bin/env bash
# `make container-test`: builds the release image from the Dockerfile and checks the runtime
# contract of README.md's "Container" section, through nginx's port on 127.0.0.1:
#
#   image     size ≤ 40 MB; no shell, package manager, compiler, curl or git; a HEALTHCHECK
#   API       api.example.test: the docs at /, create / list / get / delete with the token,
#             401 without it
#   routing   a host → an upstream this script runs on 127.0.0.1; the 404 page for an unknown
#             host; the 502 page for a dead backend (the 503 page: see "template")
#   security  nginx workers run as `nginx`, the writer as `set-backend`; the workers can read
#             the table and reach the API socket, nobody else can reach the socket; the table
#             and its directory are the writer's (the workers cannot write them)
#   logs      nginx (error and access) and the writer in the container log
#   life      HEALTHCHECK healthy; entries survive `restart` and a new container on the same
#             volume; SIGTERM (docker stop) stops it cleanly in a few seconds with status 0;
#             the container exits non-zero when the writer or nginx dies
#   template  a template of one's own, mounted; with a table path that does not exist: the 503
#             page, and an unhealthy health check
#   README    the default form: port 80 published with -p, no API_TOKEN (the generated one,
#             printed by `set-backend-init token`)
#   HTTPS     with a certificate this script makes (openssl, a test CA; TLS_CERT, TLS_KEY,
#             HTTPS_PORT): the API's create / list / get / delete over HTTPS (curl --cacert), a
#             routed host over HTTPS and HTTP/2, TLS 1.2 with the intermediate ciphers and TLS 1.3;
#             the API over plain HTTP refuses the token (403 https_required) and the writer
#             never sees the request; healthy; a missing certificate stops the start
#   API_ALLOW 127.0.0.1/32: 127.0.0.1 reaches the API, 127.0.0.2 (curl --interface) gets 403
#             and nothing of its request reaches the writer's log; a bad CIDR stops the start
#   throttle  a burst of wrong tokens from one address: 401 for the first AUTH_BURST, then 429
#             (the API's JSON error, Retry-After); the right token works at once from another
#             address, and from the throttled one a second later
#
# The container runs with --network host (so it reaches the upstream on the host's loopback)
# and PORT set to a free port, except for the README's form. Everything it starts (containers,
# volume, upstream, the test certificate) is removed on exit. Environment: IMAGE (default localhost/set-backend:test), SKIP_BUILD=1 to test an
# image already built, CONTAINER_ENGINE (see container/engine.sh), MAX_IMAGE_MB (40).
set -euo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS

say() { echo "==> [+$((SECONDS - T0))s] $*" >&2; }
ok() { echo "  ok: $*" >&2; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# The test's own tools (the test certificate, the HTTPS checks): installed as root, else named.
scripts/deps.sh curl openssl
# shellcheck source=container/engine.sh
. container/engine.sh

IMAGE=${IMAGE:-localhost/set-backend:test}
MAX_IMAGE_MB=${MAX_IMAGE_MB:-40}
NAME=sb-test-$$
VOL=sb-test-data-$$
DOMAIN=example.test
API_HOST=api.$DOMAIN
TOKEN=$(openssl rand -hex 32)
# The writer's budget of failed authentications per client address (writer/src/throttle.rs).
AUTH_BURST=10
WORK=$(mktemp -d)
UPSTREAM_PID=""

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
HTTPS_PORT=$(free_port)
UPSTREAM_PORT=$(free_port)
DEAD_PORT=$(free_port) # nothing listens there
BASE=http://127.0.0.1:$PORT

cleanup() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ] && "$ENGINE" inspect "$NAME" >/dev/null 2>&1; then
    echo "---- container log ($NAME), last 80 lines ----" >&2
    "$ENGINE" logs "$NAME" 2>&1 | tail -n 80 >&2
    echo "----" >&2
  fi
  "$ENGINE" rm -f -v -t 0 "$NAME" >/dev/null 2>&1 || eng rm -f -v "$NAME" >/dev/null 2>&1
  "$ENGINE" rm -f -v "$NAME-fs" >/dev/null 2>&1
  "$ENGINE" volume rm -f "$VOL" >/dev/null 2>&1
  [ -n "$UPSTREAM_PID" ] && kill "$UPSTREAM_PID" 2>/dev/null && wait "$UPSTREAM_PID" 2>/dev/null
  rm -rf "$WORK"
  if [ $rc -eq 0 ]; then
    say "container test passed in $((SECONDS - T0))s"
  else
    echo "container test FAILED (exit $rc) after $((SECONDS - T0))s" >&2
  fi
}
trap cleanup EXIT

# The engine, without podman's complaint that there is no systemd to run health checks on a
# timer (this test runs them itself).
eng() {
  local rc=0
  "$ENGINE" "$@" 2>"$WORK/engine.err" || rc=$?
  grep -v 'systemd connection' "$WORK/engine.err" >&2 || true
  return $rc
}

# curl through nginx: prints "STATUS BODY" (body on one line).
req() {
  local host=$1 method=$2 path=$3
  shift 3
  curl -sS -o "$WORK/body" -w '%{http_code}' -X "$method" -H "Host: $host" "$@" "$BASE$path" \
    >"$WORK/status" || echo 000 >"$WORK/status"
  STATUS=$(cat "$WORK/status")
  BODY=$(tr '\n' ' ' <"$WORK/body" 2>/dev/null || true)
}
api() { req "$API_HOST" "$@" -H "Authorization: Bearer $TOKEN"; }
# The same over HTTPS, by name (SNI) on HTTPS_PORT, verified against the test CA; also sets
# PROTO (curl's %{http_version}: 1.1 or 2).
sreq() {
  local host=$1 method=$2 path=$3
  shift 3
  curl -sS -o "$WORK/body" -w '%{http_code} %{http_version}' -X "$method" --cacert "$WORK/tls/ca.pem" \
    --resolve "$host:$HTTPS_PORT:127.0.0.1" "$@" "https://$host:$HTTPS_PORT$path" \
    >"$WORK/status" 2>"$WORK/curl.err" || echo "000 0" >"$WORK/status"
  read -r STATUS PROTO <"$WORK/status" || true
  BODY=$(tr '\n' ' ' <"$WORK/body" 2>/dev/null || true)
  [ "$STATUS" != 000 ] || BODY="curl: $(cat "$WORK/curl.err")"
}
sapi() { sreq "$API_HOST" "$@" -H "Authorization: Bearer $TOKEN"; }
expect() { # expect STATUS [substring-of-body] description
  local want=$1 sub=$2 what=$3
  [ "$STATUS" = "$want" ] || fail "$what: status $STATUS, expected $want; body: ${BODY:0:300}"
  if [ -n "$sub" ]; then
    [[ "$BODY" == *"$sub"* ]] || fail "$what: body lacks \"$sub\": ${BODY:0:300}"
  fi
  ok "$what ($STATUS)"
}
create() { # create api|sapi HOST BACKEND [note]: the entry must be created or updated
  local call=$1 host=$2 backend=$3 note=${4:+ $4}
  "$call" POST /entries.json -H 'Content-Type: application/json' \
    -d "{\"host\": \"$host\", \"backend\": \"$backend\"}"
  [[ "$STATUS" =~ ^20[01]$ ]] || fail "create $host$note: status $STATUS: $BODY"
  ok "create $host → $backend$note ($STATUS)"
}

# The host pid of the container's PID 1, and its children's.
init_pid() { "$ENGINE" inspect --format '{{.State.Pid}}' "$NAME"; }
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true; }
cmdline() { tr '\0' ' ' </proc/"$1"/cmdline 2>/dev/null || true; }
uid_of() { awk '/^Uid:/ {print $2}' /proc/"$1"/status; }
child_matching() { # child_matching PARENT PATTERN
  local c
  for c in $(children_of "$1"); do
    if [[ "$(cmdline "$c")" == *"$2"* ]]; then
      echo "$c"
      return
    fi
  done
}

start_container() { # start_container [MODE]
  eng run -d --name "$NAME" --network host \
    -e DOMAIN="$DOMAIN" -e API_TOKEN="$TOKEN" -e PORT="$PORT" -e MODE="${1:-}" \
    -v "$VOL:/var/lib/set-backend" "$IMAGE" >/dev/null
}

# The readiness probe: api.$DOMAIN/healthz over plain HTTP, or over HTTPS when READY_HTTPS=1.
ready_probe() {
  if [ -n "${READY_HTTPS:-}" ]; then
    curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/tls/ca.pem" \
      --resolve "$API_HOST:$HTTPS_PORT:127.0.0.1" "https://$API_HOST:$HTTPS_PORT/healthz"
  else
    curl -s -o /dev/null -w '%{http_code}' -H "Host: $API_HOST" "$BASE/healthz"
  fi
}

wait_ready() {
  local i
  for i in $(seq 120); do
    if [ "$(ready_probe)" = 200 ]; then
      ok "ready after $((i / 4)).$(((i % 4) * 25))s"
      return
    fi
    [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$NAME")" = true ] ||
      fail "the container exited during start"
    sleep 0.25
  done
  fail "the API did not answer through nginx within 30s"
}

wait_exited() { # wait_exited SECONDS: waits for the container to stop running
  local i
  for i in $(seq $(($1 * 10))); do
    [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$NAME")" = true ] || return 0
    sleep 0.1
  done
  return 1
}

exit_code() { "$ENGINE" inspect --format '{{.State.ExitCode}}' "$NAME"; }

# ---------------------------------------------------------------------------------------------
say "building the image $IMAGE with $ENGINE"
if [ -z "${SKIP_BUILD:-}" ]; then
  tb=$SECONDS
  container_build "$IMAGE" >"$WORK/build.log" 2>&1 || {
    tail -n 60 "$WORK/build.log" >&2
    fail "the image did not build"
  }
  ok "built in $((SECONDS - tb))s"
fi

say "image: size and contents"
size=$(image_size "$IMAGE")
size_mb=$(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1000000}')
[ "$size" -le $((MAX_IMAGE_MB * 1000000)) ] || fail "image is $size_mb MB, more than $MAX_IMAGE_MB MB"
ok "image size $size_mb MB ($size bytes) ≤ $MAX_IMAGE_MB MB"
eng create --name "$NAME-fs" "$IMAGE" >/dev/null
"$ENGINE" export -o "$WORK/fs.tar" "$NAME-fs"
eng rm -v "$NAME-fs" >/dev/null
tar -tf "$WORK/fs.tar" | sed 's#^\./##' | sort >"$WORK/files"
tar -xOf "$WORK/fs.tar" etc/passwd >"$WORK/passwd" 2>/dev/null || tar -xOf "$WORK/fs.tar" ./etc/passwd >"$WORK/passwd"
rm -f "$WORK/fs.tar"
UID_NGINX=$(awk -F: '$1 == "nginx" {print $3}' "$WORK/passwd")
UID_WRITER=$(awk -F: '$1 == "set-backend" {print $3}' "$WORK/passwd")
[ -n "$UID_NGINX" ] && [ -n "$UID_WRITER" ] || fail "no nginx or set-backend user in the image's /etc/passwd"
for f in usr/sbin/nginx usr/bin/set-backend usr/bin/set-backend-init \
  usr/lib/nginx/modules/ngx_http_set_backend_module.so etc/set-backend/nginx.conf.template \
  usr/share/set-backend/html/404.html etc/nginx/mime.types etc/passwd; do
  grep -qx "$f" "$WORK/files" || fail "the image lacks $f"
done
if grep -E '(^|/)(sh|bash|dash|busybox|apt|apt-get|dpkg|gcc|cc|ld|rustc|cargo|curl|wget|git|perl|python3?)$' \
  "$WORK/files"; then
  fail "the image holds a tool it should not (above)"
fi
if grep -m3 -E '^(var/lib/apt|var/cache/apt|var/lib/dpkg|usr/share/man|usr/include)/' "$WORK/files"; then
  fail "the image holds package manager or build leftovers (above)"
fi
ok "$(grep -cv '/$' "$WORK/files") entries; no shell, package manager, compiler, curl or git"
health=$("$ENGINE" image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" 2>/dev/null || true)
[[ "$health" == *set-backend-init* ]] || fail "no HEALTHCHECK in the image: $health"
ok "HEALTHCHECK: $health"

say "upstream on 127.0.0.1:$UPSTREAM_PORT"
mkdir -p "$WORK/www"
echo "hello from the test upstream" >"$WORK/www/index.html"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$UPSTREAM_PORT" \
  >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
for _ in $(seq 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/" 2>/dev/null && break
  sleep 0.1
done

say "starting the container (DOMAIN=$DOMAIN PORT=$PORT, volume $VOL)"
"$ENGINE" volume create "$VOL" >/dev/null
start_container
wait_ready

say "the API through nginx (Host: $API_HOST)"
req "$API_HOST" GET /
expect 200 "entries.json" "GET / documents the API"
req "$API_HOST" POST /entries.json -H 'Content-Type: application/json' \
  -d '{"host": "site.example.org", "backend": "127.0.0.1:1"}'
expect 401 "" "POST /entries.json without the token is refused"
create api site.example.org "127.0.0.1:$UPSTREAM_PORT"
create api Dead.Example.ORG. "127.0.0.1:$DEAD_PORT" "(nothing listens)"
api GET /entries.json
expect 200 "site.example.org" "list"
[[ "$BODY" == *dead.example.org* ]] || fail "list lacks the normalized dead.example.org: $BODY"
api GET /entries/site.example.org.json
expect 200 "127.0.0.1:$UPSTREAM_PORT" "get one"

say "routing by the table"
req site.example.org GET /
expect 200 "hello from the test upstream" "site.example.org → the upstream"
req SITE.example.org. GET /index.html
expect 200 "hello from the test upstream" "SITE.example.org. (normalized by nginx) → the upstream"
req nowhere.example.org GET /
expect 404 "There isn't a site here" "unknown host → the 404 page"
req dead.example.org GET /
expect 502 "This site is not answering" "dead backend → the 502 page"
api DELETE /entries/dead.example.org.json
[[ "$STATUS" =~ ^20[04]$ ]] || fail "delete: status $STATUS: $BODY"
ok "delete dead.example.org ($STATUS)"
api GET /entries/dead.example.org.json
expect 404 "" "get after delete"
req dead.example.org GET /
expect 404 "There isn't a site here" "deleted host → the 404 page"

say "health check"
if [ "$ENGINE" = podman ]; then
  eng healthcheck run "$NAME" >"$WORK/health" 2>&1 || fail "podman healthcheck run: $(cat "$WORK/health")"
  ok "podman healthcheck run: healthy"
else
  for _ in $(seq 60); do
    [ "$("$ENGINE" inspect --format '{{.State.Health.Status}}' "$NAME")" = healthy ] && break
    sleep 1
  done
  [ "$("$ENGINE" inspect --format '{{.State.Health.Status}}' "$NAME")" = healthy ] || fail "not healthy"
  ok "health status: healthy"
fi

say "processes, users and permissions"
init=$(init_pid)
[ -n "$init" ] && [ "$init" != 0 ] || fail "no PID for the container"
[[ "$(cmdline "$init")" == *set-backend-init* ]] || fail "PID 1 is not set-backend-init: $(cmdline "$init")"
ok "PID 1: $(cmdline "$init")"
writer=$(child_matching "$init" "set-backend serve")
master=$(child_matching "$init" "nginx: master")
[ -n "$writer" ] || fail "no writer under PID 1"
[ -n "$master" ] || fail "no nginx master under PID 1"
[ "$(uid_of "$master")" = 0 ] || fail "the nginx master is not root"
[ "$(uid_of "$writer")" = "$UID_WRITER" ] ||
  fail "the writer runs as uid $(uid_of "$writer"), not set-backend ($UID_WRITER)"
ok "writer: uid $UID_WRITER (set-backend); nginx master: uid 0"
workers=$(children_of "$master")
[ -n "$workers" ] || fail "no nginx workers"
for w in $workers; do
  [[ "$(cmdline "$w")" == *"worker process"* ]] || continue
  [ "$(uid_of "$w")" = "$UID_NGINX" ] || fail "nginx worker $w runs as uid $(uid_of "$w")"
done
ok "nginx workers: uid $UID_NGINX (nginx), $(echo "$workers" | wc -w) of them"
"$ENGINE" exec --user nginx "$NAME" set-backend check /var/lib/set-backend/table >"$WORK/check" 2>&1 ||
  fail "the nginx user cannot read the table: $(cat "$WORK/check")"
ok "the nginx user reads the table (set-backend check)"
"$ENGINE" exec --user nginx "$NAME" set-backend list >"$WORK/list" 2>&1 ||
  fail "the nginx user cannot reach the API socket: $(cat "$WORK/list")"
grep -q site.example.org "$WORK/list" || fail "set-backend list as nginx: $(cat "$WORK/list")"
ok "the nginx user reaches the API socket"
if "$ENGINE" exec --user nobody "$NAME" set-backend list >"$WORK/list" 2>&1; then
  fail "the nobody user reaches the API socket"
fi
grep -qi "permission denied" "$WORK/list" || fail "nobody: unexpected error: $(cat "$WORK/list")"
ok "any other user is refused by the socket (permission denied)"
mp=$("$ENGINE" volume inspect --format '{{.Mountpoint}}' "$VOL" 2>/dev/null || true)
if [ -n "$mp" ] && [ -e "$mp/table" ]; then
  [ "$(stat -c '%u %a' "$mp")" = "$UID_WRITER 755" ] || fail "data directory: $(stat -c '%u %a' "$mp")"
  [ "$(stat -c '%u %a' "$mp/table")" = "$UID_WRITER 644" ] || fail "table: $(stat -c '%u %a' "$mp/table")"
  [ "$(stat -c '%a' "$mp/store.redb")" = 600 ] || fail "store: $(stat -c '%u %a' "$mp/store.redb")"
  ok "table 0644 and its directory 0755, both the writer's: the workers cannot write them"
else
  echo "  (volume not reachable from here: the table's owner and mode are not checked)" >&2
fi

say "logs"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
grep -q 'set-backend-init: starting nginx on port .* in upstream mode' "$WORK/log" ||
  fail "no set-backend-init line saying nginx started in upstream mode (the default)"
grep -q 'listening' "$WORK/log" || fail "no writer lines in the log"
grep -q 'start worker process' "$WORK/log" || fail "no nginx error-log lines in the log"
grep -q '"site.example.org" "GET / HTTP/1.1" 200 .*set_backend=hit' "$WORK/log" ||
  fail "no nginx access-log line for site.example.org in the log"
grep -q '"nowhere.example.org" "GET / HTTP/1.1" 404 .*set_backend=miss' "$WORK/log" ||
  fail "no access-log line for the 404"
if grep 'cannot map table' "$WORK/log"; then
  fail "an nginx worker started before the writer had published the table"
fi
ok "writer, nginx error log and access log all in the container log"

say "persistence: restart"
eng restart "$NAME" >/dev/null
wait_ready
api GET /entries/site.example.org.json
expect 200 "127.0.0.1:$UPSTREAM_PORT" "the entry survived the restart"
req site.example.org GET /
expect 200 "hello from the test upstream" "still routed after the restart"

say "clean stop on SIGTERM"
ts=$(date +%s.%N)
eng stop -t 30 "$NAME" >/dev/null
elapsed=$(awk -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
[ "$(exit_code)" = 0 ] || fail "exit status $(exit_code) after SIGTERM"
awk -v e="$elapsed" 'BEGIN {exit !(e < 5)}' || fail "the stop took ${elapsed}s"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
grep -q 'SIGTERM received' "$WORK/log" || fail "the writer did not get SIGTERM"
grep -q 'set-backend-init: stopped' "$WORK/log" || fail "no clean stop in the log"
ok "stopped in ${elapsed}s, exit status 0"

say "persistence: a new container on the same volume, in variable mode (MODE=variable)"
eng rm -v "$NAME" >/dev/null
start_container variable
wait_ready
api GET /entries/site.example.org.json
expect 200 "127.0.0.1:$UPSTREAM_PORT" "the entry survived re-creating the container"
req site.example.org GET /
expect 200 "hello from the test upstream" "routed by the new container, in variable mode"
req nowhere.example.org GET /
expect 404 "There isn't a site here" "unknown host → the 404 page, in variable mode"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
grep -q 'starting nginx on port .* in variable mode' "$WORK/log" ||
  fail "the log does not say nginx started in variable mode"

say "a dying child stops the container with a non-zero status"
writer=$(child_matching "$(init_pid)" "set-backend serve")
kill -KILL "$writer"
wait_exited 15 || fail "the container still runs 15s after its writer was killed"
code=$(exit_code)
[ "$code" != 0 ] || fail "exit status 0 after the writer died"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
grep -q 'the writer exited unexpectedly' "$WORK/log" || fail "no log line for the writer's death"
ok "writer killed: the container exited with status $code"
eng start "$NAME" >/dev/null
wait_ready
master=$(child_matching "$(init_pid)" "nginx: master")
kill -KILL "$master"
wait_exited 15 || fail "the container still runs 15s after nginx was killed"
code=$(exit_code)
[ "$code" != 0 ] || fail "exit status 0 after nginx died"
ok "nginx killed: the container exited with status $code"

say "a template of one's own; the 503 page when the table is unavailable"
eng rm -f -v "$NAME" >/dev/null 2>&1
sed 's#^\( *set_backend_table\) .*#\1 /var/lib/set-backend/no-such-table;#' \
  container/nginx.conf.template >"$WORK/nginx.conf.template"
grep -q 'no-such-table' "$WORK/nginx.conf.template" || fail "set_backend_table not found in the template"
eng run -d --name "$NAME" --network host -e DOMAIN="$DOMAIN" -e API_TOKEN="$TOKEN" -e PORT="$PORT" \
  -v "$WORK/nginx.conf.template:/etc/set-backend/nginx.conf.template:ro" \
  -v "$VOL:/var/lib/set-backend" "$IMAGE" >/dev/null
wait_ready
req site.example.org GET /
expect 503 "Routing is temporarily unavailable" "table unavailable → the 503 page"
if "$ENGINE" exec "$NAME" set-backend-init health >"$WORK/health" 2>&1; then
  fail "healthy although the workers cannot map the table"
fi
grep -q 'cannot use the table' "$WORK/health" || fail "health check: $(cat "$WORK/health")"
ok "the health check notices it: $(cat "$WORK/health")"
eng rm -f -v "$NAME" >/dev/null 2>&1

say "the README's form: default PORT 80 published with -p, no API_TOKEN (a generated one)"
PUB_PORT=$(free_port)
eng run -d --name "$NAME" -e DOMAIN="$DOMAIN" -p "127.0.0.1:$PUB_PORT:80" \
  -v "$VOL:/var/lib/set-backend" "$IMAGE" >/dev/null 2>"$WORK/run.err" ||
  fail "docker run -p: $(cat "$WORK/run.err")"
BASE=http://127.0.0.1:$PUB_PORT
wait_ready
TOKEN=$("$ENGINE" exec "$NAME" set-backend-init token)
[ ${#TOKEN} -ge 32 ] || fail "set-backend-init token printed \"$TOKEN\""
api GET /entries/site.example.org.json
expect 200 "127.0.0.1:$UPSTREAM_PORT" "the generated token works; the entry is there"
req nowhere.example.org GET /
expect 404 "There isn't a site here" "unknown host → the 404 page, through the published port"
eng stop "$NAME" >/dev/null
[ "$(exit_code)" = 0 ] || fail "exit status $(exit_code) after docker stop"
ok "stopped, exit status 0"

# ---------------------------------------------------------------------------------------------
# HTTPS, API_ALLOW and the throttle of failed authentication (README, "HTTPS and who may use
# the API"). The containers below run with --network host again, on PORT and HTTPS_PORT.
BASE=http://127.0.0.1:$PORT
TOKEN=$(openssl rand -hex 32)

start_tls() { # start_tls [engine run options…]: with the test certificate
  eng run -d --name "$NAME" --network host -e DOMAIN="$DOMAIN" -e API_TOKEN="$TOKEN" \
    -e PORT="$PORT" -e TLS_CERT=/tls/cert.pem -e TLS_KEY=/tls/key.pem -e HTTPS_PORT="$HTTPS_PORT" \
    -e RUST_LOG=info,tower_http=debug "$@" \
    -v "$WORK/tls:/tls:ro" -v "$VOL:/var/lib/set-backend" "$IMAGE" >/dev/null
}

# The writer's request lines (tower_http, debug level) name the URI; nginx's access log lines
# name it too, after the client address: this tells whether the writer saw a request.
writer_saw() { grep -v '^[0-9a-f.:]* "' "$WORK/log" | grep -q "uri=$1"; }

say "HTTPS: a test CA, and a certificate for $DOMAIN and *.$DOMAIN signed by it"
mkdir -p "$WORK/tls"
(
  cd "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
    -subj "/CN=set-backend test CA" -days 2 -out ca.pem
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem \
    -subj "/CN=$DOMAIN" -out cert.csr
  printf 'subjectAltName=DNS:%s,DNS:*.%s\n' "$DOMAIN" "$DOMAIN" >ext
  openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext -out cert.pem
  rm ca.key cert.csr ext
) >"$WORK/openssl.log" 2>&1 || fail "openssl: $(cat "$WORK/openssl.log")"
ok "ECDSA P-256 certificate for $DOMAIN, *.$DOMAIN"

say "HTTPS on port $HTTPS_PORT (TLS_CERT, TLS_KEY, HTTPS_PORT), plain HTTP on $PORT"
eng rm -f -v "$NAME" >/dev/null 2>&1
start_tls
READY_HTTPS=1 wait_ready
sreq "$API_HOST" GET /
expect 200 "entries.json" "GET / over HTTPS, certificate verified against the test CA"
create sapi "www.$DOMAIN" "127.0.0.1:$UPSTREAM_PORT" "over HTTPS"
sapi GET /entries.json
expect 200 "www.$DOMAIN" "list over HTTPS"
sapi GET "/entries/www.$DOMAIN.json"
expect 200 "127.0.0.1:$UPSTREAM_PORT" "get over HTTPS"
sreq "www.$DOMAIN" GET / --http2
expect 200 "hello from the test upstream" "www.$DOMAIN over HTTPS → the upstream"
[ "$PROTO" = 2 ] || fail "www.$DOMAIN over HTTPS: HTTP version $PROTO, expected 2 (curl --http2)"
ok "www.$DOMAIN over HTTPS with HTTP/2 (ALPN h2)"
req "www.$DOMAIN" GET /
expect 200 "hello from the test upstream" "www.$DOMAIN over plain HTTP still (sites are not forced to HTTPS)"
tls_hello() { # tls_hello OPENSSL-OPTIONS…: "protocol cipher" of a handshake, or "refused"
  { openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "www.$DOMAIN" \
    -CAfile "$WORK/tls/ca.pem" "$@" </dev/null 2>/dev/null || true; } |
    awk '/^New, / {sub(",", "", $2); p = $2; c = $NF} END {print (c != "" && c != "(NONE)") ? p " " c : "refused"}'
}
h=$(tls_hello -tls1_2)
[[ "$h" =~ ^TLSv1\.2\ ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$ ]] ||
  fail "TLS 1.2 handshake: $h"
ok "TLS 1.2: $h"
h=$(tls_hello -tls1_3)
[[ "$h" == TLSv1.3\ TLS_* ]] || fail "TLS 1.3 handshake: $h"
ok "TLS 1.3: $h"
h=$(tls_hello -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA)
[ "$h" = refused ] || fail "a CBC cipher outside Mozilla's intermediate list was accepted: $h"
ok "TLS 1.2 with ECDHE-ECDSA-AES128-SHA (CBC, not in the intermediate list): refused"

marker=plain-$RANDOM$RANDOM
api GET "/entries/$marker.$DOMAIN.json"
expect 403 "https_required" "the API over plain HTTP refuses (the token would cross the network in clear)"
api POST /entries.json -H 'Content-Type: application/json' \
  -d "{\"host\": \"$marker.$DOMAIN\", \"backend\": \"127.0.0.1:$UPSTREAM_PORT\"}"
expect 403 "https_required" "a write over plain HTTP is refused too"
sapi GET /entries.json
expect 200 "" "list over HTTPS"
[[ "$BODY" != *"$marker"* ]] || fail "the plain-HTTP write was stored: $BODY"
ok "nothing was written"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
writer_saw "/entries/www.$DOMAIN.json" || fail "no writer log line for a request over HTTPS"
if writer_saw "/entries/$marker.$DOMAIN.json" || grep -q "$marker.*HTTP/1.1\" [^4]" "$WORK/log"; then
  fail "a plain-HTTP API request reached the writer"
fi
ok "the writer logged the HTTPS requests, and none of the plain-HTTP ones"
if [ "$ENGINE" = podman ]; then
  eng healthcheck run "$NAME" >"$WORK/health" 2>&1 || fail "podman healthcheck run with HTTPS: $(cat "$WORK/health")"
  ok "healthy with HTTPS on"
fi
sapi DELETE "/entries/www.$DOMAIN.json"
[[ "$STATUS" =~ ^20[04]$ ]] || fail "delete over HTTPS: status $STATUS: $BODY"
ok "delete www.$DOMAIN over HTTPS ($STATUS)"
sreq "www.$DOMAIN" GET /
expect 404 "There isn't a site here" "deleted host over HTTPS → the 404 page"

say "a missing certificate stops the start"
eng rm -f -v "$NAME" >/dev/null 2>&1
start_tls -e TLS_CERT=/tls/missing.pem
wait_exited 15 || fail "the container still runs with TLS_CERT=/tls/missing.pem"
[ "$(exit_code)" != 0 ] || fail "exit status 0 with a missing certificate"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
grep -q 'set-backend-init: TLS_CERT=/tls/missing.pem' "$WORK/log" || fail "no clear error: $(tail -n 3 "$WORK/log")"
ok "exit status $(exit_code): $(grep 'missing.pem' "$WORK/log" | head -n 1)"

say "API_ALLOW=127.0.0.1/32,127.0.0.3 (and API_ALLOW_PLAIN_HTTP=1)"
eng rm -f -v "$NAME" >/dev/null 2>&1
start_tls -e API_ALLOW="127.0.0.1/32,127.0.0.3" -e API_ALLOW_PLAIN_HTTP=1
READY_HTTPS=1 wait_ready
api GET /entries.json
expect 200 "" "from 127.0.0.1 over plain HTTP (API_ALLOW_PLAIN_HTTP=1): the API answers"
marker=denied-$RANDOM$RANDOM
api GET "/entries/$marker.$DOMAIN.json" --interface 127.0.0.2
expect 403 '"forbidden"' "from 127.0.0.2 over plain HTTP: 403"
sapi GET "/entries/$marker.$DOMAIN.json" --interface 127.0.0.2
expect 403 '"forbidden"' "from 127.0.0.2 over HTTPS: 403"
control=allowed-$RANDOM$RANDOM
api GET "/entries/$control.$DOMAIN.json" --interface 127.0.0.3
expect 404 "not_found" "from 127.0.0.3 (in the list): the writer answers"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
grep -q "^127.0.0.2 \"$API_HOST\" \"GET /entries/$marker.$DOMAIN.json HTTP/[0-9.]*\" 403" "$WORK/log" ||
  fail "no nginx access-log line for 127.0.0.2's 403"
writer_saw "/entries/$control.$DOMAIN.json" || fail "the writer did not log the allowed request"
if writer_saw "/entries/$marker"; then
  fail "127.0.0.2's request reached the writer"
fi
ok "nginx logged 127.0.0.2's 403s; the writer saw nothing of them (and did see 127.0.0.3's)"

say "a burst of wrong tokens: $AUTH_BURST × 401, then 429"
# One curl, the requests one after the other on one connection: the burst takes milliseconds,
# far less than the second that gives one attempt back.
urls=()
for _ in $(seq $((AUTH_BURST + 1))); do urls+=(-o /dev/null "$BASE/entries.json"); done
codes=$(curl -sS -w '%{http_code} ' -H "Host: $API_HOST" -H "Authorization: Bearer wrong-$TOKEN" \
  "${urls[@]}")
want="$(printf '401 %.0s' $(seq "$AUTH_BURST"))429 "
[ "$codes" = "$want" ] || fail "$((AUTH_BURST + 1)) wrong tokens: $codes, expected $want"
ok "$AUTH_BURST wrong tokens: 401 each; the next one: 429"
req "$API_HOST" GET /entries.json -H "Authorization: Bearer wrong-again-$TOKEN"
expect 429 '"too_many_requests"' "another wrong token: throttled, in the API's JSON error shape"
grep -qi '^retry-after' <(curl -sS -D - -o /dev/null -H "Host: $API_HOST" \
  -H "Authorization: Bearer wrong-$TOKEN" "$BASE/entries.json") || fail "no Retry-After on the 429"
api GET /entries.json
expect 429 '"too_many_requests"' "the right token from the throttled address, at once: not even checked"
api GET /entries.json --interface 127.0.0.3
expect 200 "" "the right token from another address: at once"
sleep 1.2
api GET /entries.json
expect 200 "" "the right token from the throttled address, a second later"
eng rm -f -v "$NAME" >/dev/null 2>&1

say "a bad API_ALLOW stops the start"
eng run -d --name "$NAME" --network host -e DOMAIN="$DOMAIN" -e PORT="$PORT" \
  -e API_ALLOW="10.0.0.0/33" -v "$VOL:/var/lib/set-backend" "$IMAGE" >/dev/null
wait_exited 15 || fail "the container still runs with API_ALLOW=10.0.0.0/33"
[ "$(exit_code)" != 0 ] || fail "exit status 0 with API_ALLOW=10.0.0.0/33"
"$ENGINE" logs "$NAME" >"$WORK/log" 2>&1
grep -q 'set-backend-init: API_ALLOW: "10.0.0.0/33" is not an address or CIDR block' "$WORK/log" ||
  fail "no clear error: $(tail -n 3 "$WORK/log")"
ok "exit status $(exit_code): $(grep -m1 'API_ALLOW' "$WORK/log")"
eng rm -f -v "$NAME" >/dev/null 2>&1

say "image $IMAGE: $size_mb MB"
