#!/usr/bin/env bash
# Builds nbgate's images with no container registry (DESIGN.md "Verified" 1):
#   Debian rootfs by mmdebstrap -> `docker import` -> notebook Dockerfile on top.
# Each image carries a label with the hash of its inputs; an image whose label
# matches is kept, so `make images` is cheap when nothing changed, even in a
# fresh clone on the same machine.
#
# Environment:
#   NOTEBOOK_IMAGE  tag to build            (default nbgate/notebook:latest)
#   BASE_IMAGE      start from this image instead of a mmdebstrap rootfs
#   SUITE           Debian suite            (default bookworm)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
NOTEBOOK_IMAGE=${NOTEBOOK_IMAGE:-nbgate/notebook:latest}
SUITE=${SUITE:-bookworm}
BASE_IMAGE=${BASE_IMAGE:-}
BASE_PACKAGES="python3,python3-venv,tini,ca-certificates,git,procps,less"
BASE_RECIPE=1   # bump when the mmdebstrap command below changes

die() { echo "build-images: $*" >&2; exit 1; }
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running? is DOCKER_HOST right?)"

label_of() { docker image inspect -f '{{ index .Config.Labels "nbgate.inputs" }}' "$1" 2>/dev/null || true; }

if [ -z "$BASE_IMAGE" ]; then
  BASE_IMAGE="nbgate/base:$SUITE"
  base_hash=$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "$BASE_RECIPE" | sha256sum | cut -c1-16)
  if [ "$(label_of "$BASE_IMAGE")" = "$base_hash" ]; then
    echo "build-images: $BASE_IMAGE is up to date ($base_hash)"
  else
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install -y mmdebstrap (or set BASE_IMAGE=<registry image>)"
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    echo "build-images: building the $SUITE rootfs with mmdebstrap"
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --aptopt='APT::Install-Recommends "false"' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$SUITE" "$tmp/base.tar"
    docker import \
      --change "LABEL nbgate.inputs=$base_hash" \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      "$tmp/base.tar" "$BASE_IMAGE" >/dev/null
    echo "build-images: imported $BASE_IMAGE"
  fi
fi

# Registry TLS may go through an intercepting CA: pip inside the build needs the
# host's bundle. Harmless where TLS is not intercepted.
ctx=$(mktemp -d); trap 'rm -rf "$ctx" ${tmp:-}' EXIT
cp -r "$here/notebook/." "$ctx/"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt" 2>/dev/null || : > "$ctx/host-ca.crt"

base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
[ -n "$base_id" ] || die "base image $BASE_IMAGE is not present (docker pull it, or leave BASE_IMAGE empty to build one)"
nb_hash=$( (cd "$here/notebook" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$base_id") | sha256sum | cut -c1-16)
if [ "$(label_of "$NOTEBOOK_IMAGE")" = "$nb_hash" ]; then
  echo "build-images: $NOTEBOOK_IMAGE is up to date ($nb_hash)"
  exit 0
fi
echo "build-images: building $NOTEBOOK_IMAGE from $BASE_IMAGE"
old_id=$(docker image inspect -f '{{.Id}}' "$NOTEBOOK_IMAGE" 2>/dev/null || true)
docker build --quiet --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "nbgate.inputs=$nb_hash" \
  -t "$NOTEBOOK_IMAGE" "$ctx" >/dev/null
echo "build-images: built $NOTEBOOK_IMAGE ($nb_hash)"
# The previous build, now untagged, would keep ~0.5 GB per rebuild. Docker refuses
# to remove it while containers still run from it (they finish on the old image).
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$NOTEBOOK_IMAGE")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 && echo "build-images: removed the previous build ${old_id:7:12}" || true
fi
