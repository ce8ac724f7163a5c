# Shared by build.sh and run.sh: where the image work lives and how buildah is called.
# Everything (debootstrap base, build context, image storage, runc state) stays under var/image/
# of the checkout, so `rm -rf var/image` undoes it all; no daemon, no registry.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VAR=${IMAGE_VAR:-$REPO/var/image}
IMAGE=${IMAGE:-localhost/dow30-forecaster:cpu}
BASE_IMAGE=localhost/python:3.11-slim  # what the Dockerfile's FROM python:3.11-slim resolves to
# vfs: plain copies, works in any container; chroot isolation: no user namespaces needed.
BUILDAH=(buildah --storage-driver vfs --root "$VAR/storage" --runroot "$VAR/storage-run")
RUNC=(runc --root "$VAR/runc")
mkdir -p "$VAR"

# `step "what" cmd...`: prints the command, runs it, prints how long it took.
step() {
  local what=$1 started=$SECONDS
  shift
  printf '\n### %s\n$ %s\n' "$what" "$*"
  "$@"
  printf '(%s: %d s)\n' "$what" "$((SECONDS - started))"
}

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    echo "missing: ${missing[*]} (Debian: apt-get install -y ${missing[*]}; or make system-deps)" >&2
    exit 2
  fi
}
