#!/usr/bin/env bash
# `make container`: builds the release image from the Dockerfile with docker or podman
# (see container/engine.sh). IMAGE names it (default set-backend, i.e. set-backend:latest).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=container/engine.sh
. container/engine.sh
IMAGE=${IMAGE:-set-backend}
container_build "$IMAGE"
size=$(image_size "$IMAGE")
echo "==> built $IMAGE with $ENGINE: $((size / 1000000)) MB ($size bytes)" >&2
