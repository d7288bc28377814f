# Sourced (bash) by container/build.sh and tests/container/test.sh, from the repository root.
#
# Picks the container engine: $CONTAINER_ENGINE if set, else docker when it can reach an
# engine, else podman. On a machine that cannot reach a container registry but has the
# project's ../shared/container/setup-local-images.sh (a sibling checkout of the shared
# tooling), that script runs first (idempotent: seconds when already done): it installs podman
# and builds local debian:bookworm-slim and rust:1-bookworm images; builds then use
# --pull=never and its containers.conf.
#
# CONTAINER_BUILD_ARGS adds build options (e.g. --no-cache).
# Sets ENGINE and BUILD_ARGS; defines container_build IMAGE and image_size IMAGE (bytes).

SETUP_LOCAL_IMAGES=${SETUP_LOCAL_IMAGES:-../shared/container/setup-local-images.sh}
LOCAL_IMAGES_DIR=${LOCAL_IMAGES_DIR:-/var/tmp/local-images}

if [ -n "${CONTAINER_ENGINE:-}" ]; then
  ENGINE=$CONTAINER_ENGINE
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  ENGINE=podman
fi

BUILD_ARGS=()
if [ "$ENGINE" = podman ]; then
  if [ -f "$SETUP_LOCAL_IMAGES" ]; then
    echo "==> no registry here: preparing local base images ($SETUP_LOCAL_IMAGES)" >&2
    bash "$SETUP_LOCAL_IMAGES" "$LOCAL_IMAGES_DIR" >&2
    export CONTAINERS_CONF="$LOCAL_IMAGES_DIR/containers.conf"
    BUILD_ARGS+=(--pull=never)
  fi
  # podman's default (OCI) image format has no HEALTHCHECK; the build stage fetches crates,
  # through this machine's network setup.
  BUILD_ARGS+=(--format docker --network host)
fi
# Extra build options, e.g. CONTAINER_BUILD_ARGS=--no-cache.
read -r -a _extra <<<"${CONTAINER_BUILD_ARGS:-}"
BUILD_ARGS+=("${_extra[@]}")
command -v "$ENGINE" >/dev/null || {
  echo "container: neither docker (with a reachable engine) nor podman found" >&2
  exit 1
}

container_build() {
  echo "==> $ENGINE build ${BUILD_ARGS[*]} -t $1 ." >&2
  "$ENGINE" build "${BUILD_ARGS[@]}" -t "$1" .
}

image_size() {
  "$ENGINE" image inspect --format '{{.Size}}' "$1"
}
