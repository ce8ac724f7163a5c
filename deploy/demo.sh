#!/usr/bin/env bash
# The main job on the embedded default (`make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

echo "### 1. Domain core: prompts from the bundled snapshot, GPT-4 and naive baselines scored"
"$PY" -m forecast.demo --tickers AAPL MSFT KO | sed -e '/^\[Headline\]/d' -e '/^\[Summary\]/d'
