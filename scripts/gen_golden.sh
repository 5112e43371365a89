#!/usr/bin/env bash
# Regenerates the golden logits in tests/data/golden/ from the llama.cpp oracle.
#
# For every tests/data/prompts/<name>.txt it runs the oracle's dump_logits on the default model with
# 256 positions, top-k 40, 64 greedy tokens from a 64-token prefix, 1 thread, and llama.cpp's default
# context settings except the K/V cache and attention: f32 K/V cache and flash attention off, the
# most exact CPU configuration of llama.cpp and the same arithmetic tappa uses (docs/ORACLE.md), and writes tests/data/golden/<name>.json.
# See docs/ORACLE.md for the format.
#
# With --gemma it does the same for Gemma 3 270M (scripts/fetch_model.sh --gemma) into
# tests/data/gemma3/golden/: prose_lighthouse, code_python_csv and chat_chatml at 256 positions, and
# code_interval_tree at 768 positions (top-k 20), which runs past the 512-token sliding window of the
# local layers (the sliding-window test).
#
# With --qwen the same for Qwen2.5-Coder-0.5B-Instruct (scripts/fetch_model.sh --qwen) into
# tests/data/qwen25/golden/: prose_lighthouse, code_python_csv and chat_chatml at 256 positions, and
# code_interval_tree at 768 positions (top-k 20): more than one of tappa's 512-token batches.
#
# Usage: scripts/gen_golden.sh [MODEL]     (default: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#        scripts/gen_golden.sh --gemma [MODEL]   (default: <repo>/models/gemma-3-270m-q4_k_m.gguf)
#        scripts/gen_golden.sh --qwen [MODEL]    (default: <repo>/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf)
# Env:   ORACLE_LLAMA_DIR / TAPPA_ORACLE_DIR as for scripts/oracle/build_oracle.sh
#        GOLDEN_THREADS (default 1), GOLDEN_POSITIONS (256), GOLDEN_TOP_K (40), GOLDEN_N_GEN (64)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEMMA=0
QWEN=0
if [[ "${1:-}" == "--gemma" ]]; then
  GEMMA=1
  shift
  MODEL="${1:-${REPO_ROOT}/models/gemma-3-270m-q4_k_m.gguf}"
elif [[ "${1:-}" == "--qwen" ]]; then
  QWEN=1
  shift
  MODEL="${1:-${REPO_ROOT}/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
else
  MODEL="${1:-${REPO_ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
fi
ORACLE_DIR="${TAPPA_ORACLE_DIR:-${HOME}/.cache/tappa/oracle}"
THREADS="${GOLDEN_THREADS:-1}"
POSITIONS="${GOLDEN_POSITIONS:-256}"
TOP_K="${GOLDEN_TOP_K:-40}"
N_GEN="${GOLDEN_N_GEN:-64}"
PROMPT_DIR="${REPO_ROOT}/tests/data/prompts"
OUT_DIR="${REPO_ROOT}/tests/data/golden"

die() { echo "gen_golden.sh: error: $*" >&2; exit 1; }

if [[ ! -f "${MODEL}" && -z "${1:-}" ]]; then
  if [[ ${GEMMA} -eq 1 ]]; then "${REPO_ROOT}/scripts/fetch_model.sh" --gemma
  elif [[ ${QWEN} -eq 1 ]]; then "${REPO_ROOT}/scripts/fetch_model.sh" --qwen
  else "${REPO_ROOT}/scripts/fetch_model.sh"; fi
fi
[[ -f "${MODEL}" ]] || die "model ${MODEL} not found"

"${REPO_ROOT}/scripts/oracle/build_oracle.sh"
# shellcheck disable=SC1091
. "${ORACLE_DIR}/oracle.env"
[[ -x "${DUMP_LOGITS}" ]] || die "dump_logits missing (${DUMP_LOGITS})"

sha="$(sha256sum "${MODEL}" | awk '{print $1}')"

if [[ ${GEMMA} -eq 1 || ${QWEN} -eq 1 ]]; then
  if [[ ${GEMMA} -eq 1 ]]; then OUT_DIR="${REPO_ROOT}/tests/data/gemma3/golden"; else OUT_DIR="${REPO_ROOT}/tests/data/qwen25/golden"; fi
  mkdir -p "${OUT_DIR}"
  # name positions top_k
  for spec in "prose_lighthouse 256 ${TOP_K}" "code_python_csv 256 ${TOP_K}" "chat_chatml 256 ${TOP_K}" \
              "code_interval_tree 768 20"; do
    read -r name n k <<< "${spec}"
    out="${OUT_DIR}/${name}.json"
    "${DUMP_LOGITS}" -m "${MODEL}" -f "${PROMPT_DIR}/${name}.txt" -n "${n}" -k "${k}" -g "${N_GEN}" -p 64 \
      -t "${THREADS}" --flash-attn off --kv-type f32 --decimals 4 --model-sha256 "${sha}" --oracle-tag "${ORACLE_TAG}" -o "${out}"
    echo "gen_golden.sh: wrote ${out}"
  done
  exit 0
fi
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
