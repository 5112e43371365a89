#!/usr/bin/env bash
# Installs what tappa needs on Debian 12 (bookworm): the compiler and build tools, the libraries it
# includes or links (nlohmann-json, CLI11, stb, cpp-httplib, Open MPI, GoogleTest, Google Benchmark),
# and a Python virtual environment under .cache/venv with numpy and gguf for the test-data scripts and the
# `openai` client package for the server's client test (ctest server_openai_client). Safe to run again.
# Each package here is found by name in cmake/TappaDeps.cmake, which stops configure with the package's
# name when it is missing; tests/deps_test.sh checks that for every library below.
#
#   scripts/install_deps.sh           # what the build and the tests need
#   scripts/install_deps.sh --list    # print the Debian packages of that, installing nothing
#   scripts/install_deps.sh --fuzz    # also clang with libFuzzer and llvm-symbolizer (scripts/fuzz.sh) and
#                                     # valgrind (leak checks, docs/RELIABILITY.md); the main build never
#                                     # needs them, and the sanitizer build (scripts/test_sanitize.sh) uses
#                                     # gcc's ASan/UBSan runtimes, which build-essential already brings
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# pkgconf: Debian 12's pkg-config (the package named pkg-config is a transitional name for it).
# ca-certificates: pip reaches PyPI over HTTPS (the venv below, scripts/fetch_model.sh).
# openmpi-bin: mpirun, for the MPI test (tests/mpi_test.sh) of the TAPPA_MPI=ON build scripts/test.sh makes.
PACKAGES=(build-essential cmake pkgconf ca-certificates
          nlohmann-json3-dev libcli11-dev libstb-dev libcpp-httplib-dev
          libgtest-dev libbenchmark-dev
          libopenmpi-dev openmpi-bin
          python3 python3-venv python3-dev pybind11-dev)
if [ "${1:-}" = "--fuzz" ]; then
  PACKAGES+=(clang libclang-rt-14-dev llvm valgrind)
elif [ "${1:-}" = "--list" ]; then  # the packages, one per line (tests/deps_test.sh reads them)
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/install_deps.sh [--fuzz | --list]" >&2
  exit 2
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install_deps] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's system Python refuses pip installs (PEP 668); a project venv keeps them separate.
VENV=.cache/venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "[install_deps] creating $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import numpy, gguf' 2>/dev/null; then
  echo "[install_deps] installing numpy and gguf into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "numpy>=1.24,<3" "gguf==0.19.0"
fi
# The server's real-client test (tests/server_openai_client.py) runs the openai package unchanged; pinned so a
# new release cannot change what the test exercises.
OPENAI_VERSION=3.57.0
if ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "[install_deps] installing openai==$OPENAI_VERSION into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "openai==$OPENAI_VERSION"
fi
# The Python module's tests (python/tests, ctest python_module) and docs/PYTHON.md's walkthrough (its figure).
if ! "$VENV/bin/python" -c "import pytest, matplotlib, sys; sys.exit(pytest.__version__ != '9.2.0' or matplotlib.__version__ != '3.10.9')" 2>/dev/null; then
  echo "[install_deps] installing pytest==9.2.0 matplotlib==3.10.9 into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "pytest==9.2.0" "matplotlib==3.10.9"
fi
echo "[install_deps] ok"
