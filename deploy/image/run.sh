#!/usr/bin/env bash
# Run the image built by build.sh with runc (no daemon) and check it from outside the container:
# /healthz, /readyz and one forecast over HTTP on the host, then a clean stop (SIGTERM).
#   - rootfs: a buildah working container of the image, mounted (its writable copy);
#   - config: `runc spec`, then the image's entrypoint + cmd, env, user and working dir; the
#     network namespace is left out so the service's port is the host's;
#   - FORECAST_SERVICE_PORT: a free host port (the image's 8000 may be taken on a shared host).
# Exit status 0 only if every check passed and the service stopped on SIGTERM.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need buildah runc curl python3
NAME=dow30-forecaster-cpu
BUNDLE=$VAR/bundle
LOG=$VAR/container.log
READY_TIMEOUT=${READY_TIMEOUT:-900}
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
# The host's thread binding for vLLM's CPU backend (as the Makefile); the rest is the image's.
EXTRA_ENV=("FORECAST_SERVICE_PORT=$PORT" "VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}")

cleanup() {
  "${RUNC[@]}" kill "$NAME" KILL 2>/dev/null || true
  "${RUNC[@]}" delete --force "$NAME" 2>/dev/null || true
  "${BUILDAH[@]}" rm "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

prepare() {
  "${BUILDAH[@]}" from --pull=never --name "$NAME" "$IMAGE" >/dev/null
  local rootfs
  rootfs=$("${BUILDAH[@]}" mount "$NAME")
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
  (cd "$BUNDLE" && runc spec)
  "${BUILDAH[@]}" inspect --type image "$IMAGE" >"$BUNDLE/image.json"
  python3 - "$BUNDLE" "$rootfs" "${EXTRA_ENV[@]}" <<'PY'
import json, sys
from pathlib import Path

bundle, rootfs, extra = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
image = json.loads((bundle / "image.json").read_text())["OCIv1"]["config"]
spec = json.loads((bundle / "config.json").read_text())
env = dict(e.split("=", 1) for e in image.get("Env") or [])
env.update(e.split("=", 1) for e in extra)
uid, _, gid = (image.get("User") or "0:0").partition(":")
spec["root"] = {"path": rootfs, "readonly": False}
spec["process"].update(
    terminal=False,
    args=(image.get("Entrypoint") or []) + (image.get("Cmd") or []),
    env=[f"{k}={v}" for k, v in env.items()],
    cwd=image.get("WorkingDir") or "/",
    user={"uid": int(uid), "gid": int(gid or uid)},
)
linux = spec["linux"]
linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]  # host network
for name in ("hosts", "resolv.conf"):  # as a container engine provides them (host network)
    spec["mounts"].append({"destination": f"/etc/{name}", "type": "bind", "source": f"/etc/{name}",
                           "options": ["rbind", "ro"]})
for mount in spec["mounts"]:
    if mount["destination"] == "/dev/shm":  # vLLM's engine processes talk through shared memory
        mount["options"] = [o for o in mount["options"] if not o.startswith("size=")] + ["size=2g"]
(bundle / "config.json").write_text(json.dumps(spec, indent=2))
print("args:", spec["process"]["args"], "user:", spec["process"]["user"], "cwd:", spec["process"]["cwd"])
PY
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    if ! "${RUNC[@]}" state "$NAME" 2>/dev/null | grep -q '"status": "running"'; then
      echo "the container stopped before it was ready; its log:" >&2; tail -50 "$LOG" >&2; return 1
    fi
    ((SECONDS < deadline)) || { echo "not ready in ${READY_TIMEOUT}s" >&2; tail -50 "$LOG" >&2; return 1; }
    sleep 5
  done
}

show() {  # a request and its response (status line + body), as a client outside sees it
  printf '$ curl %s\n' "$*"
  curl -sS -w '\nHTTP %{http_code} in %{time_total}s\n' "$@" | tee "$VAR/last-response.txt"
  grep -q '^HTTP 200 ' "$VAR/last-response.txt"
}

stop() {
  "${RUNC[@]}" kill "$NAME" TERM
  local deadline=$((SECONDS + 120))
  while "${RUNC[@]}" state "$NAME" 2>/dev/null | grep -q '"status": "running"'; do
    ((SECONDS < deadline)) || { echo "still running 120 s after SIGTERM" >&2; return 1; }
    sleep 1
  done
  "${RUNC[@]}" delete "$NAME"
  echo "stopped; the log's last lines:"
  tail -5 "$LOG"
}

step "runc bundle from $IMAGE" prepare
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE" | sed 's/^/image: /'
step "start the container (host network, port $PORT)" \
  bash -c "${RUNC[*]} run --detach --bundle '$BUNDLE' '$NAME' >'$LOG' 2>&1 </dev/null"
"${RUNC[@]}" list
step "wait for /readyz (engines up)" wait_ready
BASE="http://127.0.0.1:$PORT"
step "liveness from the host" show "$BASE/healthz"
step "readiness from the host" show "$BASE/readyz"
step "one forecast from the host" show -X POST "$BASE/v1/forecast" \
  -H 'Content-Type: application/json' -d '{"ticker": "AAPL", "as_of": "2023-12-29"}'
step "stop (SIGTERM) and delete" stop
