#!/usr/bin/env bash
# Everything the tests need on a fresh Debian 12 machine, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh -DTAPPA_MPI=ON -DTAPPA_PYTHON_MODULE=ON  # the Python module too (ctest python_module); the CLI also for mpirun: ctest runs the MPI test (tests/mpi_test.sh)
scripts/fetch_model.sh
scripts/fetch_model.sh --gemma  # the Gemma 3 tests (golden logits, SentencePiece tokenizer) need it
scripts/fetch_model.sh --qwen   # the Qwen2.5 tests (golden logits, qwen2 tokenizer) need it (~490 MB)
cd build
export TAPPA_REQUIRE_OPENAI=1  # install_deps.sh installed the openai package: its client test must run, not skip
ctest --output-on-failure -j"$(nproc)" --timeout 1800
