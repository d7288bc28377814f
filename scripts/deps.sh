#!/usr/bin/env bash
# The Debian packages the build and the tests need (`make deps`; `make build`, `make run`,
# `make test` and `make lint` run it first, `.ci/run` too): installed when run as root, else
# one line naming the `apt-get install` to run, and a non-zero exit before anything is built.
#
#   scripts/deps.sh              the build's and the tests' packages (PKGS below)
#   scripts/deps.sh PKG…         these packages instead (benches/e2e/deps.sh passes its own)
#
# On a system without dpkg it only says which packages it could not check.
set -euo pipefail

# One package per line, with who needs it.
PKGS=(
  libclang-dev       # bindgen, for nginx-sys (the module's nginx bindings)
  libpcre2-dev       # nginx, built from the nginx-src crate
  libssl-dev         # nginx
  zlib1g-dev         # nginx
  protobuf-compiler  # the etcd client of the fleet mode: its build script runs protoc
  libprotobuf-dev    # the same: protobuf's well-known .proto files
  etcd-server        # the fleet tests and `make fleet`: a real etcd cluster on loopback
  etcd-client        # the same: etcdctl (compaction, reading etcd's keys in the tests)
  curl               # make run (waits for the writer and nginx), the end-to-end tests
  strace             # the end-to-end tests (syscalls on the request path)
)
[ $# -gt 0 ] && PKGS=("$@")

if ! command -v dpkg-query >/dev/null; then
  echo "deps.sh: no dpkg here; make sure these (Debian names) are installed: ${PKGS[*]}" >&2
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: missing Debian packages; run: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "==> installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
