#!/usr/bin/env bash
# Build the vLLM payload that travels to the GPU machine (no internet there) as <=40 MiB parts.
# Run here (CPU machine with PyPI), from the repo root. Output: .whl/vsite.partNN, .whl/vsite.sha256
# and .whl/ct/ (compressed-tensors + loguru, only needed for quantization="fp8").
# .whl/ is git-ignored (.gitignore: /.whl/).
#
# On the device (3 consecutive calls while the machine stays warm, ~30 s between calls):
#   call 1..3: carry [".whl/vsite.partNN"]:  mkdir -p /tmp/parts && cp .whl/vsite.partNN /tmp/parts/
#   last call: cat /tmp/parts/vsite.part0* > /tmp/vsite.tar.xz && mkdir -p /tmp/vsite &&
#              tar -C /tmp/vsite -xJf /tmp/vsite.tar.xz && export PYTHONPATH=/tmp/vsite && python3 ...
set -euo pipefail
VLLM_VERSION=${VLLM_VERSION:-0.20.2}   # 0.20.0-0.26.0 pin torch==2.11.0 (the device's torch 2.11.0+cu130)
W=${WORK:-/tmp/vllm_payload}
rm -rf "$W" && mkdir -p "$W/whl" "$W/site"
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64)
dl() { python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$W/whl" "$@"; }

dl "vllm==$VLLM_VERSION"
# what vLLM needs for offline LLM(...) that the device image lacks (checked against KINDS.md's list
# with an import walk of vllm.v1 / lora / compilation / model_loader / config / utils)
dl pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.7.0 typing-inspection==0.4.2 \
   openai==2.8.1 jiter==0.19.0 distro==1.9.0 sniffio==1.3.1 fastapi==0.121.3 starlette==0.50.0 \
   cachetools==8.0.2 blake3==1.0.11 msgspec==0.22.0 pyzmq==27.3.0 cbor2==6.3.0 pybase64==1.5.1 \
   gguf==0.19.0 openai-harmony==0.0.8 llguidance==1.3.0 partial-json-parser==0.2.1.1.post7 \
   setproctitle==1.3.8 depyf==0.20.0 astor==0.8.1 dill==0.4.1

cd "$W/site"
for w in "$W"/whl/*.whl; do unzip -q -o "$w"; done
# Hopper runs FA3; FA2 and the MoE kernels are not used by a dense Llama (saves ~110 MB compressed)
rm -f vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/_moe_C.abi3.so
# xgrammar (42 MB) is only for structured output: stub it so vLLM's module-level annotations import
mkdir -p xgrammar
cat > xgrammar/__init__.py <<'EOF'
"""Stub of xgrammar for the GPU benchmark (structured output unused)."""
__version__ = "0.0.0-stub"


def __getattr__(name):
    if name[:1].isupper():
        return type(name, (), {})
    raise ImportError(f"xgrammar stub: '{name}' is unavailable")
EOF
cd - >/dev/null
tar -C "$W/site" -cf - . | xz -6 -T0 > "$W/vsite.tar.xz"
mkdir -p .whl && rm -f .whl/vsite.part*
split -b 40M -d "$W/vsite.tar.xz" .whl/vsite.part
(cd "$W" && sha256sum vsite.tar.xz) > .whl/vsite.sha256
mkdir -p .whl/ct
python3 -m pip download -q --no-deps "${PLAT[@]}" -d .whl/ct compressed-tensors==0.15.0.1 loguru==0.7.3
ls -la .whl .whl/ct
