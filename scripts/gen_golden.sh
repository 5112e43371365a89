#!/usr/bin/env bash
# Regenerates the golden logits in tests/data/golden/ from the llama.cpp oracle.
#
# For every tests/data/prompts/<name>.txt it runs the oracle's dump_logits on the default model with
# 256 positions, top-k 40, 64 greedy tokens from a 64-token prefix, 1 thread, and llama.cpp's default
# context settings except the K/V cache and attention: f32 K/V cache and flash attention off, the
# most exact CPU configuration of llama.cpp and the same arithmetic tappa uses (docs/ORACLE.md), and writes tests/data/golden/<name>.json.
# See docs/ORACLE.md for the format.
#
# Usage: scripts/gen_golden.sh [MODEL]     (default: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf)
# Env:   ORACLE_LLAMA_DIR / TAPPA_ORACLE_DIR as for scripts/oracle/build_oracle.sh
#        GOLDEN_THREADS (default 1), GOLDEN_POSITIONS (256), GOLDEN_TOP_K (40), GOLDEN_N_GEN (64)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:-${REPO_ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
ORACLE_DIR="${TAPPA_ORACLE_DIR:-${HOME}/.cache/tappa/oracle}"
THREADS="${GOLDEN_THREADS:-1}"
POSITIONS="${GOLDEN_POSITIONS:-256}"
TOP_K="${GOLDEN_TOP_K:-40}"
N_GEN="${GOLDEN_N_GEN:-64}"
PROMPT_DIR="${REPO_ROOT}/tests/data/prompts"
OUT_DIR="${REPO_ROOT}/tests/data/golden"

die() { echo "gen_golden.sh: error: $*" >&2; exit 1; }

if [[ ! -f "${MODEL}" && -z "${1:-}" ]]; then
  "${REPO_ROOT}/scripts/fetch_model.sh"
fi
[[ -f "${MODEL}" ]] || die "model ${MODEL} not found"

"${REPO_ROOT}/scripts/oracle/build_oracle.sh"
# shellcheck disable=SC1091
. "${ORACLE_DIR}/oracle.env"
[[ -x "${DUMP_LOGITS}" ]] || die "dump_logits missing (${DUMP_LOGITS})"

sha="$(sha256sum "${MODEL}" | awk '{print $1}')"
mkdir -p "${OUT_DIR}"
shopt -s nullglob
prompts=("${PROMPT_DIR}"/*.txt)
shopt -u nullglob
[[ ${#prompts[@]} -gt 0 ]] || die "no prompts in ${PROMPT_DIR}"

for p in "${prompts[@]}"; do
  name="$(basename "${p}" .txt)"
  out="${OUT_DIR}/${name}.json"
  "${DUMP_LOGITS}" -m "${MODEL}" -f "${p}" -n "${POSITIONS}" -k "${TOP_K}" -g "${N_GEN}" -p 64 \
    -t "${THREADS}" --flash-attn off --kv-type f32 --decimals 4 --model-sha256 "${sha}" --oracle-tag "${ORACLE_TAG}" -o "${out}"
  python3 - "${out}" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"gen_golden.sh: {sys.argv[1].split('/')[-1]}: prompt {d['n_tokens_prompt']} tokens, "
      f"{d['n_positions']} positions, greedy {len(d['greedy']['tokens'])} tokens, "
      f"flash_attn {d['oracle']['flash_attn_resolved']}")
EOF
done
