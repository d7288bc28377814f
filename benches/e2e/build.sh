#!/usr/bin/env bash
# Build everything the end-to-end benchmarks measure, in release mode, apart from the
# developers' target/ directory:
#
#   $BENCH_TARGET/release/set-backend                          the writer daemon
#   $BENCH_TARGET/release/libngx_http_set_backend_module.so    the module for the shipped nginx
#   $BENCH_TARGET/release/build/nginx-sys-*/out/objs/nginx     the shipped nginx (1.28.3, vendored)
#   $BENCH_TARGET/debian-nginx/release/libngx_http_set_backend_module.so
#                                                              the module for Debian's nginx 1.22
#
# The Debian build configures a copy of /usr/share/nginx/src (package nginx-dev) with the
# ./configure flags of Debian's binary (conf_flags), as docs/module.md describes, so the module
# loads into /usr/sbin/nginx next to Debian's lua module.
#
# Environment: BENCH_TARGET (default target-bench), CARGO, SKIP_DEBIAN=1, SKIP_VENDORED=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH_TARGET=${BENCH_TARGET:-$PWD/target-bench}
CARGO=${CARGO:-cargo}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ -z "${SKIP_VENDORED:-}" ]; then
  say "release build: the writer, the module and nginx 1.28.3 (vendored) in $BENCH_TARGET"
  CARGO_TARGET_DIR="$BENCH_TARGET" $CARGO build --release \
    -p set-backend-writer -p ngx_http_set_backend_module
fi

if [ -z "${SKIP_DEBIAN:-}" ]; then
  [ -d /usr/share/nginx/src ] || { echo "build.sh: /usr/share/nginx/src missing: apt-get install nginx-dev" >&2; exit 1; }
  SRC="$BENCH_TARGET/nginx-1.22-src"
  if [ ! -f "$SRC/objs/ngx_auto_config.h" ]; then
    say "configuring Debian's nginx sources with its conf_flags in $SRC"
    rm -rf "$SRC"
    mkdir -p "$BENCH_TARGET"
    cp -r /usr/share/nginx/src "$SRC"
    (cd "$SRC" && . ./conf_flags && ./configure "${NGX_CONF_FLAGS[@]}" >/dev/null)
  fi
  say "release build: the module against Debian's nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///')"
  NGINX_SOURCE_DIR="$SRC" NGINX_BUILD_DIR="$SRC/objs" CARGO_TARGET_DIR="$BENCH_TARGET/debian-nginx" \
    $CARGO build --release -p ngx_http_set_backend_module
fi
