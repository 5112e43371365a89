#!/usr/bin/env bash
# SLOW (a full build of the library, ~minutes at -j2): `pip install .` of a clean `git clone` of HEAD into a
# fresh venv, then `import tappa` generates text with the default model (issue #19's install check).
# Needs the Debian packages of scripts/install_deps.sh and PyPI (scikit-build-core, pybind11, numpy).
#   scripts/test_pip_install.sh [MODEL]     # MODEL: default models/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh >/dev/null  # python3-dev, python3-venv and the C++ libraries
[ -n "${1:-}" ] || [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] || scripts/fetch_model.sh
MODEL=$(realpath "${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}")
[ -f "$MODEL" ] || { echo "test_pip_install.sh: $MODEL missing (scripts/fetch_model.sh)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/tappa-pip.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
t0=$(date +%s)
git clone -q --no-local . "$TMP/src"
git -C "$TMP/src" checkout -q "$(git rev-parse HEAD)"
/usr/bin/python3 -m venv "$TMP/venv"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
(cd "$TMP/src" && "$TMP/venv/bin/python" -m pip install -q --disable-pip-version-check .)
cd "$TMP"  # not the source tree: the installed package must be the one imported
out=$("$TMP/venv/bin/python" -c "
import sys, tappa
m = tappa.Model(sys.argv[1]); e = tappa.Engine(m, n_threads=2)
r = e.generate('The capital of France is', max_tokens=8, ignore_eos=True)
assert len(r['tokens']) == 8 and r['text'].strip(), r
print(tappa.__file__); print(repr(r['text']))
" "$MODEL")
echo "$out"
case "$(echo "$out" | head -1)" in "$TMP/venv/"*) ;; *) echo "test_pip_install.sh: imported tappa from outside the venv" >&2; exit 1;; esac
echo "test_pip_install.sh: ok in $(( $(date +%s) - t0 )) s"
