#!/usr/bin/env bash
# The Debian packages the end-to-end benchmarks need: installed when run as root, else listed.
set -euo pipefail
PKGS=(nginx nginx-dev libnginx-mod-http-lua haproxy wrk python3 python3-matplotlib
      libclang-dev libpcre2-dev libssl-dev zlib1g-dev gcc make curl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "==> installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps.sh: missing Debian packages; run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
