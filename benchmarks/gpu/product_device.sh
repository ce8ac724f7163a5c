#!/usr/bin/env bash
# The product on one GPU machine, in back-to-back calls while it stays warm (parts built here by
# build_product_payload.sh; the machine keeps /tmp between calls). Each step is one call:
#
#   train   carry .whl/product/train.tar.xz + the last serve part: unpack the training site,
#           keep the part, train an adapter per 8B base under the deepspeed launcher
#   part    carry one more serve part: keep it
#   serve   carry the last missing part + serve.sha256: join, check, unpack, then the service
#           with both 8B-shaped engines vs raw AsyncLLM (product_serve.py)
#   raw     only the raw-AsyncLLM peer again, from the serve step's saved workload
#
# Usage on the device:  bash benchmarks/gpu/product_device.sh STEP [args for the python script]
set -uo pipefail
step=$1; shift
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=/tmp/site:/tmp/tsite PATH=/tmp/tsite/bin:$PATH
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/parts "$OUT" /tmp/product/work
keep_parts() { for p in .whl/product/serve.p*; do [ -f "$p" ] && cp "$p" /tmp/parts/; done; true; }

case $step in
train)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  keep_parts
  mkdir -p /tmp/tsite && tar -C /tmp/tsite -xJf .whl/product/train.tar.xz || exit 3
  timeout 560 python3 benchmarks/gpu/product_train.py --root /tmp/product --out "$OUT/train.json" "$@" \
    2>&1 | tail -40
  cp /tmp/product/runs/*/train_log.json "$OUT/" 2>/dev/null
  for b in llama deepseek; do cp "/tmp/product/runs/$b/train_log.json" "$OUT/train_log_$b.json" 2>/dev/null; done
  ;;
part)
  keep_parts; ls -la /tmp/parts
  ;;
serve)
  keep_parts
  cat /tmp/parts/serve.p* > /tmp/serve.tar.xz && (cd /tmp && sha256sum -c "$OLDPWD/.whl/product/serve.sha256") \
    && mkdir -p /tmp/site && tar -C /tmp/site -xJf /tmp/serve.tar.xz && rm -f /tmp/serve.tar.xz || exit 3
  timeout 575 python3 benchmarks/gpu/product_serve.py --root /tmp/product --out "$OUT/serve.json" "$@" \
    2>&1 | tee /tmp/product/work/serve_run.log | grep -v "^INFO\|it/s\]" | tail -60
  tar -C /tmp/product -czf "$OUT/serve_logs.tar.gz" work
  ;;
raw)
  timeout 575 python3 benchmarks/gpu/product_serve.py --root /tmp/product --out "$OUT/serve.json" \
    --phases raw "$@" 2>&1 | tee /tmp/product/work/raw_run.log | tail -60
  tar -C /tmp/product -czf "$OUT/serve_logs.tar.gz" work
  ;;
*) echo "unknown step $step" >&2; exit 2 ;;
esac
