#!/usr/bin/env bash
# Builds the llama.cpp "oracle" that tappa's logits are checked against, outside the repository.
#
#   1. Source: the llama.cpp tree vendored in the llama-cpp-python 0.3.36 source distribution,
#      downloaded with pip (--no-binary :all: --no-deps) into $ORACLE_DIR and extracted there.
#   2. A CMake Release build of that tree (CPU only, LLAMA_CURL/OpenSSL/tests/server/examples off) for
#      libllama and the tools llama-bench, llama-batched-bench, llama-tokenize, llama-perplexity and
#      llama-quantize (all under tools/, built by LLAMA_BUILD_TOOLS=ON).
#   3. Our own scripts/oracle/dump_logits.cpp, compiled against libllama into $ORACLE_DIR/bin.
#   4. $ORACLE_DIR/oracle.env: shell variables naming what was built, for other scripts to source:
#        ORACLE_LLAMA_DIR ORACLE_BUILD_DIR ORACLE_BIN_DIR LLAMA_BENCH LLAMA_BATCHED_BENCH LLAMA_TOKENIZE
#        LLAMA_PERPLEXITY LLAMA_QUANTIZE DUMP_LOGITS ORACLE_TAG
#
# Cached: each step is skipped when its output exists (dump_logits is recompiled only when its source
# is newer than the binary). Re-running is cheap.
#
# Environment:
#   TAPPA_ORACLE_DIR   where everything goes (default $HOME/.cache/tappa/oracle)
#   ORACLE_LLAMA_DIR   use an existing llama.cpp source tree instead of downloading one
#                      (e.g. /opt/oracle/llama_cpp_python-0.3.36/vendor/llama.cpp)
#   ORACLE_BUILD_DIR   its build directory (default $ORACLE_LLAMA_DIR/build); an existing build is used
#                      as it is when all the tools are there, otherwise only the missing targets are built
#   ORACLE_ISA         native (default), avx2 or avx512: which instruction set the build targets. native
#                      is GGML_NATIVE=ON (the oracle of the golden tests); avx2 / avx512 are GGML_NATIVE=OFF
#                      with that ISA's flags, built into build-ISA/ beside the native build and described
#                      by oracle-ISA.env (bench/compare.sh --isa; issue #22), from the same source tree
#   ORACLE_JOBS        parallel build jobs (default 2)
#   CXX                compiler for dump_logits (default c++)
#
# When ORACLE_LLAMA_DIR is not set but an earlier run recorded one in $ORACLE_DIR/oracle.env and its
# build directory is still there (configured), that tree is reused (so setting it once is enough); tools
# added to this script since that run are then built there, the others are not rebuilt.
#
# Usage: scripts/oracle/build_oracle.sh [--print-env] [--fetch-only]
#   --print-env   print oracle.env on stdout at the end
#   --fetch-only  stop after downloading/extracting the source (for testing the download step)
set -euo pipefail

PRINT_ENV=0
FETCH_ONLY=0
for arg in "$@"; do
  case "${arg}" in
    --print-env) PRINT_ENV=1 ;;
    --fetch-only) FETCH_ONLY=1 ;;
    *) echo "build_oracle.sh: error: unknown argument ${arg}" >&2; exit 2 ;;
  esac
done

LLAMA_CPP_PYTHON_VERSION="0.3.36"
ORACLE_TAG="llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} vendor/llama.cpp"
TOOLS=(llama-bench llama-batched-bench llama-tokenize llama-perplexity llama-quantize)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ORACLE_DIR="${TAPPA_ORACLE_DIR:-${HOME}/.cache/tappa/oracle}"
ISA="${ORACLE_ISA:-native}"
case "${ISA}" in
  native) ISA_FLAGS=(-DGGML_NATIVE=ON); ISA_SUFFIX="" ;;
  avx2) ISA_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
                   -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF); ISA_SUFFIX="-avx2" ;;
  avx512) ISA_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
                     -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON); ISA_SUFFIX="-avx512" ;;
  *) echo "build_oracle.sh: error: ORACLE_ISA must be native, avx2 or avx512 (got ${ISA})" >&2; exit 2 ;;
esac
JOBS="${ORACLE_JOBS:-2}"
PYTHON="${PYTHON:-python3}"
CXX="${CXX:-c++}"

log() { echo "build_oracle.sh: $*" >&2; }
die() { echo "build_oracle.sh: error: $*" >&2; exit 1; }

mkdir -p "${ORACLE_DIR}"
ENV_FILE="${ORACLE_DIR}/oracle${ISA_SUFFIX}.env"

tools_complete() {  # $1 = bin dir
  local t
  for t in "${TOOLS[@]}"; do [[ -x "$1/${t}" ]] || return 1; done
  [[ -e "$1/libllama.so" || -e "$1/libllama.dylib" ]]
}

# Reuse the tree recorded by an earlier run when none is given.
if [[ -z "${ORACLE_LLAMA_DIR:-}" && -f "${ENV_FILE}" ]]; then
  # shellcheck disable=SC1090
  prev_llama_dir="$(. "${ENV_FILE}" && echo "${ORACLE_LLAMA_DIR:-}")"
  # shellcheck disable=SC1090
  prev_build_dir="$(. "${ENV_FILE}" && echo "${ORACLE_BUILD_DIR:-}")"
  # A complete build, or a configured one that lacks only tools added later (built below).
  if [[ -n "${prev_llama_dir}" && -f "${prev_llama_dir}/include/llama.h" ]] \
     && { tools_complete "${prev_build_dir}/bin" || [[ -f "${prev_build_dir}/CMakeCache.txt" ]]; }; then
    ORACLE_LLAMA_DIR="${prev_llama_dir}"
    ORACLE_BUILD_DIR="${ORACLE_BUILD_DIR:-${prev_build_dir}}"
  fi
fi

# --- 1. source tree --------------------------------------------------------------------------------
if [[ -n "${ORACLE_LLAMA_DIR:-}" ]]; then
  LLAMA_DIR="${ORACLE_LLAMA_DIR}"
  [[ -f "${LLAMA_DIR}/include/llama.h" ]] || die "ORACLE_LLAMA_DIR=${LLAMA_DIR} has no include/llama.h"
else
  SRC_ROOT="${ORACLE_DIR}/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}"
  LLAMA_DIR="${SRC_ROOT}/vendor/llama.cpp"
  if [[ ! -f "${LLAMA_DIR}/include/llama.h" ]]; then
    log "downloading llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION} (sdist) with pip"
    rm -rf "${ORACLE_DIR}/sdist"
    "${PYTHON}" -m pip download --quiet --no-binary :all: --no-deps \
      "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -d "${ORACLE_DIR}/sdist" \
      || die "pip download of llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION} failed"
    shopt -s nullglob
    tarballs=("${ORACLE_DIR}"/sdist/llama_cpp_python-"${LLAMA_CPP_PYTHON_VERSION}".tar.gz)
    shopt -u nullglob
    [[ ${#tarballs[@]} -eq 1 ]] || die "no llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz in ${ORACLE_DIR}/sdist"
    log "extracting ${tarballs[0]}"
    tar -xzf "${tarballs[0]}" -C "${ORACLE_DIR}"
    [[ -f "${LLAMA_DIR}/include/llama.h" ]] || die "the sdist has no vendor/llama.cpp/include/llama.h"
  fi
fi
LLAMA_DIR="$(cd "${LLAMA_DIR}" && pwd)"
if [[ ${FETCH_ONLY} -eq 1 ]]; then
  log "source ready in ${LLAMA_DIR} (--fetch-only)"
  exit 0
fi
BUILD_DIR="${ORACLE_BUILD_DIR:-${LLAMA_DIR}/build${ISA_SUFFIX}}"
BIN_DIR="${BUILD_DIR}/bin"

# --- 2. llama.cpp build ----------------------------------------------------------------------------
missing=()
for t in "${TOOLS[@]}"; do
  [[ -x "${BIN_DIR}/${t}" ]] || missing+=("${t}")
done
[[ -e "${BIN_DIR}/libllama.so" || -e "${BIN_DIR}/libllama.dylib" ]] || missing+=(llama)
# Do not start a second build in a tree where one is already running.
if [[ ${#missing[@]} -gt 0 ]] && command -v pgrep >/dev/null 2>&1 \
   && pgrep -f -- "--build ${BUILD_DIR}( |$)" >/dev/null 2>&1; then
  die "a build is already running in ${BUILD_DIR}; wait for it to finish and re-run"
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  command -v cmake >/dev/null 2>&1 || die "cmake not found"
  if [[ ! -f "${BUILD_DIR}/CMakeCache.txt" ]]; then
    log "configuring ${BUILD_DIR}"
    cmake -S "${LLAMA_DIR}" -B "${BUILD_DIR}" \
      -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_SHARED_LIBS=ON \
      -DLLAMA_CURL=OFF \
      -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_TOOLS=ON \
      "${ISA_FLAGS[@]}" \
      >&2
  fi
  log "building ${missing[*]} with -j${JOBS} (this takes a while on 2 cores)"
  cmake --build "${BUILD_DIR}" -j"${JOBS}" --target "${missing[@]}" >&2
  for t in "${TOOLS[@]}"; do
    [[ -x "${BIN_DIR}/${t}" ]] || die "${t} was not built in ${BIN_DIR}"
  done
else
  log "llama.cpp tools already built in ${BIN_DIR}"
fi

# --- 3. our dump program ---------------------------------------------------------------------------
OUR_BIN="${ORACLE_DIR}/bin${ISA_SUFFIX}"
mkdir -p "${OUR_BIN}"
DUMP_SRC="${REPO_ROOT}/scripts/oracle/dump_logits.cpp"
DUMP_BIN="${OUR_BIN}/dump_logits"
# Rebuild when the source is newer, or when the binary was linked against a different llama.cpp.
stamp="${OUR_BIN}/dump_logits.llama_dir"
if [[ ! -x "${DUMP_BIN}" || "${DUMP_SRC}" -nt "${DUMP_BIN}" || "$(cat "${stamp}" 2>/dev/null)" != "${BIN_DIR}" ]]; then
  log "compiling ${DUMP_BIN}"
  "${CXX}" -std=c++17 -O2 -Wall -Wextra "${DUMP_SRC}" \
    -I"${LLAMA_DIR}/include" -I"${LLAMA_DIR}/ggml/include" \
    -L"${BIN_DIR}" -lllama -Wl,-rpath,"${BIN_DIR}" -o "${DUMP_BIN}.tmp"
  mv -f "${DUMP_BIN}.tmp" "${DUMP_BIN}"
  echo "${BIN_DIR}" > "${stamp}"
else
  log "dump_logits up to date"
fi

# --- 4. env file -----------------------------------------------------------------------------------
{
  echo "# written by scripts/oracle/build_oracle.sh"
  printf 'ORACLE_LLAMA_DIR=%q\n' "${LLAMA_DIR}"
  printf 'ORACLE_BUILD_DIR=%q\n' "${BUILD_DIR}"
  printf 'ORACLE_BIN_DIR=%q\n' "${BIN_DIR}"
  printf 'LLAMA_BENCH=%q\n' "${BIN_DIR}/llama-bench"
  printf 'LLAMA_BATCHED_BENCH=%q\n' "${BIN_DIR}/llama-batched-bench"
  printf 'LLAMA_TOKENIZE=%q\n' "${BIN_DIR}/llama-tokenize"
  printf 'LLAMA_PERPLEXITY=%q\n' "${BIN_DIR}/llama-perplexity"
  printf 'LLAMA_QUANTIZE=%q\n' "${BIN_DIR}/llama-quantize"
  printf 'DUMP_LOGITS=%q\n' "${DUMP_BIN}"
  printf 'ORACLE_TAG=%q\n' "${ORACLE_TAG}"
  printf 'ORACLE_ISA=%q\n' "${ISA}"
} > "${ENV_FILE}.tmp"
mv -f "${ENV_FILE}.tmp" "${ENV_FILE}"
log "oracle ready; source ${ENV_FILE}"

if [[ ${PRINT_ENV} -eq 1 ]]; then
  cat "${ENV_FILE}"
fi
