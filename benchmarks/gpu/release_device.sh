#!/usr/bin/env bash
# The release run on one GPU machine, in back-to-back calls while it stays warm (parts built
# here by build_release_payload.sh; the machine keeps /tmp between calls). Each step is one call:
#
#   keep              keep the parts this call carries (.whl/release/part.NN)
#   sites             keep; unpack the training and serving sites (the first parts)
#   structured BASE   keep; the structured-output cost at the 8B shape for BASE (vLLM's default
#                     backend, xgrammar; pass --backend guidance to compare)
#   mask              keep; one decode step's answer masks on this host's CPU (answer_mask.py)
#   release           keep; join and check every part, unpack the tiny model; train the release
#                     adapter of each base (training/configs/release_tiny.json: deepspeed,
#                     every checkpoint scored through vLLM), then the training report
#   fold              keep; the promoted version folded into the weights vs plain LoRA vs base at
#                     the 8B shape, and a promote under load (fold_throughput.py)
#   accuracy          speed vs accuracy through the service on the GPU: release adapters, the
#                     untrained stand-ins, the naive baselines
#
# Usage on the device:  bash benchmarks/gpu/release_device.sh STEP [args]
set -uo pipefail
step=$1; shift
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=/tmp/site:/tmp/tsite:/tmp/model:$(pwd) PATH=/tmp/tsite/bin:$PATH
OUT=${OUT:-/tmp/out}
R=/tmp/release
mkdir -p /tmp/parts "$OUT" "$R"
for p in .whl/release/part.*; do [ -f "$p" ] && cp "$p" /tmp/parts/; done
cp .whl/release/*.sha256 /tmp/parts/ 2>/dev/null
ls -la /tmp/parts | tail -n +2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

sites() {  # the two sites lie in the first parts of the stream: extract them as soon as they are here
  [ -d /tmp/site/vllm ] && return 0
  mkdir -p /tmp/blob && cat /tmp/parts/part.* | tar -C /tmp/blob --occurrence=1 -xf - train.tar.xz serve.tar.xz 2>/dev/null
  (cd /tmp/blob && sha256sum -c /tmp/parts/sites.sha256) || return 3
  mkdir -p /tmp/site /tmp/tsite && tar -C /tmp/tsite -xJf /tmp/blob/train.tar.xz \
    && tar -C /tmp/site -xJf /tmp/blob/serve.tar.xz && rm -f /tmp/blob/*.tar.xz
}

[ -f .whl/extra/rouge.tgz ] && tar -C /tmp/site -xzf .whl/extra/rouge.tgz
# .whl/overlay/*.whl (carried): packages that replace the site's own, e.g. a newer xgrammar
if ls .whl/overlay/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/overlay .whl/overlay/*.whl
fi
export PYTHONPATH=/tmp/overlay:$PYTHONPATH
case $step in
keep) ;;
sites) sites || exit 3 ;;
structured)
  sites || exit 3
  base=$1; shift
  timeout "${STRUCT_TIMEOUT:-570}" python3 benchmarks/structured_output.py --shape 8b --bases "$base" --backend auto \
    --n 64 --max-tokens 1024 --rounds 2 --max-model-len 8192 --work /tmp/bench \
    --name "structured_output_gpu_$base" "$@" > "$OUT/structured_$base.log" 2>&1
  grep -n "Error\|error\|Traceback\|structured_vs_free\|free\|wrote" "$OUT/structured_$base.log" | grep -v "^.*INFO" | head -60
  cp benchmarks/results/structured_output_gpu_"$base"*.json "$OUT/" 2>/dev/null
  ;;
mask)
  sites || exit 3
  timeout 300 python3 benchmarks/answer_mask.py --threads 8 --out "$OUT/answer_mask_gpu_host.json" "$@" 2>&1 | grep -v Warn | tail -5
  ;;
release)
  sites || exit 3
  (cd /tmp/parts && cat part.* > /tmp/release.tar && sed 's#release.tar#/tmp/release.tar#' release.sha256 | sha256sum -c) || exit 3
  mkdir -p /tmp/model && tar -C /tmp -xf /tmp/release.tar model && rm -f /tmp/release.tar || exit 3
  python3 -c "from forecast.basemodels import materialize_tiny_model as m; from training.config import TINY_MODEL_DIR as d; print(m(d))" || exit 4
  timeout 560 python3 -m training both --config training/configs/release_tiny.json \
    --adapter-root "$R/adapters" --report-dir "$R/report" "$@" 2>&1 | grep -v "^INFO\|it/s\]\|s/it\]" | tail -40
  # the untrained stand-ins as the reference row of the accuracy step
  python3 -c "
from pathlib import Path
from forecast.basemodels import BASES, TINY_MODEL_ID
from service.demo_adapters import write_peft_adapter
for i, b in enumerate(BASES):
    write_peft_adapter(Path('var/models/smollm2-135m-instruct'), Path('$R/adapters'), f'fingpt-{b}', 'v0', b, base_model=TINY_MODEL_ID, seed=i)
"
  for b in llama deepseek; do cp var/runs/release/$b/eval.json "$R/report/eval_$b.json" 2>/dev/null; \
    cp var/runs/release/$b/train_log.json "$R/report/train_log_$b.json" 2>/dev/null; done
  tar -C "$R" -czf "$OUT/release.tar.gz" adapters report
  ;;
fold)
  sites || exit 3
  timeout 580 python3 benchmarks/gpu/fold_throughput.py --out "$OUT/fold_gpu.json" "$@" > "$OUT/fold.log" 2>&1
  grep -v "^INFO\|it/s\]" "$OUT/fold.log" | tail -50
  ;;
accuracy)
  timeout 570 python3 benchmarks/speed_accuracy.py --adapter-root "$R/adapters" \
    --engine '{"gpu_memory_utilization": 0.4, "structured_output_backend": "guidance", "max_num_seqs": 64, "kv_cache_gib": 4, "enforce_eager": true}' \
    --tickers AAPL MSFT KO JPM HD CVX NKE WMT IBM DIS --concurrency 32 --max-new-tokens 1536 --out "$OUT/speed_accuracy.json" "$@" 2>&1 | grep -v "^INFO\|it/s\]" | tail -40
  cp benchmarks/results/speed_accuracy.png "$OUT/" 2>/dev/null
  ;;
*) echo "unknown step $step" >&2; exit 2 ;;
esac
ls -la "$OUT"
