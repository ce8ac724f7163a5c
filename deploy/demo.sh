#!/usr/bin/env bash
# The main job on the embedded default (`make demo`): tiny real model, bundled snapshot, the
# shipped release adapters, both adapters trained here with deepspeed, the service on vLLM
# starting on the release and hot-swapping to the one trained here, a forecast before and
# after the swap, the A/B split, scoring, /metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
export TOKENIZERS_PARALLELISM=false

echo "### 1/3 Domain core: prompts from the bundled snapshot; GPT-4 and naive baselines scored"
"$BIN/python" -m forecast.demo --tickers AAPL MSFT KO | sed -e '/^\[Headline\]/d' -e '/^\[Summary\]/d'

echo
echo "### 2/3 Training: a LoRA adapter for each base (tiny stand-in model) under deepspeed"
# The shipped release adapters (trained on every real row) go in first, so the adapter trained
# here on the CPU slice becomes the next version, which the service hot-swaps to in step 3.
"$BIN/python" -m service.demo_adapters --root var/adapters
if [ -z "${DEMO_SKIP_TRAIN:-}" ]; then
  started=$SECONDS
  "$BIN/python" -m training all --config training/configs/cpu_tiny.json --report-dir var/demo/report
  echo "  training step: $((SECONDS - started)) s (both bases: fine-tune, every checkpoint scored)"
else
  echo "(DEMO_SKIP_TRAIN set: serving the adapters already under var/adapters)"
fi
ls -d var/adapters/*/* 2>/dev/null | sed 's/^/  adapter: /' || true

echo
echo "### 3/3 Service on vLLM: readiness, a forecast, the A/B split, scoring, /metrics"
started=$SECONDS
"$BIN/python" -m service.demo
echo "  service step: $((SECONDS - started)) s; the whole demo: $SECONDS s"
