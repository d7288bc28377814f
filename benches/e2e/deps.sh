#!/usr/bin/env bash
# The Debian packages the end-to-end benchmarks need: installed when run as root, else listed
# (scripts/deps.sh does the checking and installing).
set -euo pipefail
PKGS=(nginx nginx-dev libnginx-mod-http-lua haproxy wrk python3 python3-matplotlib
      libclang-dev libpcre2-dev libssl-dev zlib1g-dev gcc make curl)
exec "$(dirname "$0")/../../scripts/deps.sh" "${PKGS[@]}"
