#!/usr/bin/env bash
# Regenerates tests/data/tokenizer/golden_*.txt: llama.cpp's token ids (the oracle) for every document
# of the tokenizer corpus (scripts/make_tokenizer_corpus.py), for SmolLM2's own pre-tokenizer ("smollm")
# and for copies of its vocabulary that name the "llama-bpe", "qwen2" and "default" pre-tokenizers
# (scripts/make_vocab_variant.py; tokenizer.ggml.add_bos_token is dropped in them so that each
# pre-tokenizer's default BOS rule applies, as tests/tokenizer_test.cpp does with its own copies).
#
# Each golden file starts with one '#' line naming the document set, the variant and the flags; then one
# line per document: the ids, space-separated (empty line for no tokens). Ids are what llama-tokenize
# prints with add_special = the model's add_bos, i.e. what tappa's encode(text, add_special=true, ...)
# returns.
#
# With the optional Gemma 3 model present (scripts/fetch_model.sh --gemma), the same sets are also
# tokenized with its SentencePiece vocabulary into golden_gemma3{,_special,_hostile}.txt, and with
# Qwen2.5-Coder-0.5B-Instruct present (scripts/fetch_model.sh --qwen) with its own qwen2 vocabulary into
# golden_qwen25{,_special,_hostile}.txt.
#
# Usage: scripts/gen_tokenizer_golden.sh [MODEL.gguf]
# Env:   ORACLE_BIN      llama-tokenize binary (default: LLAMA_TOKENIZE of scripts/oracle/build_oracle.sh's
#                        oracle.env when it exists, else
#                        /opt/oracle/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-tokenize)
#        TAPPA_DATA_DIR  data dir holding wikitext2/ (default <repo>/../shared/data)
#        PYTHON          (default python3; needs the gguf package)
#        GEMMA_MODEL     (default <repo>/models/gemma-3-270m-q4_k_m.gguf; skipped when absent)
#        QWEN_MODEL      (default <repo>/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; skipped when absent)
#        ONLY_GEMMA=1    regenerate only the Gemma 3 files
#        ONLY_QWEN=1     regenerate only the Qwen2.5 files
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORACLE_ENV="${TAPPA_ORACLE_DIR:-${HOME}/.cache/tappa/oracle}/oracle.env"
if [[ -z "${ORACLE_BIN:-}" && -f "${ORACLE_ENV}" ]]; then
  # shellcheck disable=SC1090
  ORACLE_BIN="$(. "${ORACLE_ENV}" && echo "${LLAMA_TOKENIZE:-}")"
fi
ORACLE_BIN="${ORACLE_BIN:-/opt/oracle/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-tokenize}"
PYTHON="${PYTHON:-python3}"
MODEL="${1:-${REPO}/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
GEMMA_MODEL="${GEMMA_MODEL:-${REPO}/models/gemma-3-270m-q4_k_m.gguf}"
QWEN_MODEL="${QWEN_MODEL:-${REPO}/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
ONLY_GEMMA="${ONLY_GEMMA:-0}"
ONLY_QWEN="${ONLY_QWEN:-0}"
OUT_DIR="${REPO}/tests/data/tokenizer"

die() { echo "gen_tokenizer_golden.sh: error: $*" >&2; exit 1; }
[[ -x "$ORACLE_BIN" ]] || die "oracle binary not found: $ORACLE_BIN (set ORACLE_BIN)"
[[ "$ONLY_GEMMA" == 1 || "$ONLY_QWEN" == 1 || -f "$MODEL" ]] || die "model not found: $MODEL"
[[ "$ONLY_QWEN" != 1 || -f "$QWEN_MODEL" ]] || die "Qwen2.5 model not found: $QWEN_MODEL (scripts/fetch_model.sh --qwen)"
[[ "$ONLY_GEMMA" != 1 || -f "$GEMMA_MODEL" ]] || die "Gemma 3 model not found: $GEMMA_MODEL (scripts/fetch_model.sh --gemma)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" "$REPO/scripts/make_tokenizer_corpus.py" "$WORK/corpus"
[[ "$ONLY_GEMMA" == 1 || "$ONLY_QWEN" == 1 ]] || for pre in llama-bpe qwen2 default; do
  "$PYTHON" "$REPO/scripts/make_vocab_variant.py" "$MODEL" "$WORK/$pre.gguf" --pre "$pre" \
    --drop-key tokenizer.ggml.add_bos_token
done

# tokenize_set MODEL SET PARSE_SPECIAL(0|1) VARIANT OUT_NAME
tokenize_set() {
  local model="$1" set="$2" parse_special="$3" variant="$4" out="$OUT_DIR/$5"
  local flags=(--ids --no-escape --log-disable)
  [[ "$parse_special" == 1 ]] || flags+=(--no-parse-special)
  local tmp="$WORK/out.txt"
  echo "# set=$set variant=$variant parse_special=$parse_special add_special=1" > "$tmp"
  local n=0
  for doc in "$WORK/corpus/$set"/*.txt; do
    local ids
    ids="$("$ORACLE_BIN" -m "$model" -f "$doc" "${flags[@]}" 2>/dev/null)" || die "oracle failed on $doc ($variant)"
    [[ "$ids" == \[*\] ]] || die "unexpected oracle output for $doc: ${ids:0:200}"
    ids="${ids#[}"; ids="${ids%]}"
    echo "${ids//, / }" >> "$tmp"
    n=$((n + 1))
  done
  mv "$tmp" "$out"
  echo "$5: $n documents, $(tail -n +2 "$out" | wc -w) tokens"
}

if [[ -f "$QWEN_MODEL" && "$ONLY_GEMMA" != 1 ]]; then
  tokenize_set "$QWEN_MODEL"        all     0 qwen25    golden_qwen25.txt
  tokenize_set "$QWEN_MODEL"        mixed   1 qwen25    golden_qwen25_special.txt
  tokenize_set "$QWEN_MODEL"        hostile 0 qwen25    golden_qwen25_hostile.txt
fi
[[ "$ONLY_QWEN" != 1 ]] || exit 0

if [[ -f "$GEMMA_MODEL" ]]; then
  tokenize_set "$GEMMA_MODEL"       all     0 gemma3    golden_gemma3.txt
  tokenize_set "$GEMMA_MODEL"       mixed   1 gemma3    golden_gemma3_special.txt
  tokenize_set "$GEMMA_MODEL"       hostile 0 gemma3    golden_gemma3_hostile.txt
fi
[[ "$ONLY_GEMMA" != 1 ]] || exit 0

tokenize_set "$MODEL"               all     0 smollm    golden_smollm2.txt
tokenize_set "$MODEL"               mixed   1 smollm    golden_smollm2_special.txt
tokenize_set "$MODEL"               hostile 0 smollm    golden_smollm2_hostile.txt
tokenize_set "$WORK/llama-bpe.gguf" all     0 llama-bpe golden_llama-bpe.txt
tokenize_set "$WORK/llama-bpe.gguf" hostile 0 llama-bpe golden_llama-bpe_hostile.txt
tokenize_set "$WORK/qwen2.gguf"     all     0 qwen2     golden_qwen2.txt
tokenize_set "$WORK/qwen2.gguf"     hostile 0 qwen2     golden_qwen2_hostile.txt
tokenize_set "$WORK/default.gguf"   mixed   0 default   golden_default.txt
