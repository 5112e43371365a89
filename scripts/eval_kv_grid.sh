#!/usr/bin/env bash
# The default-model KV-compression grid of docs/RESULTS.md §2: every method (FullKV, StreamingLLM, H2O,
# SnapKV, PyramidKV, CAKE, Expected Attention, TAPPA α=∞ and α=1, tappa-head) × budgets 64/128/256/512
# × every task (9 generated RULER-style tasks, LongBench multi_news, 2 fidelity texts) at 2048 tokens,
# 3 samples each, query-aware. Resumable: run it again after an interruption (it passes --resume).
#
#   scripts/eval_kv_grid.sh                      # build/ binary, output in out/eval-kv-grid/
#   TAPPA=build-evalkv/tappa OUT=/tmp/grid THREADS=2 scripts/eval_kv_grid.sh
#   MODES=query-agnostic OUT=eval-kv-agnostic scripts/eval_kv_grid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TAPPA=${TAPPA:-build/tappa}
OUT=${OUT:-out/eval-kv-grid}
THREADS=${THREADS:-1}        # 1: steadiest on a shared 2-core machine (the thread pool spins)
LENGTHS=${LENGTHS:-2048}
SAMPLES=${SAMPLES:-3}
MODES=${MODES:-query-aware}
DATA=${TAPPA_DATA_DIR:-../shared/data}
RESUME=()
[[ -f "$OUT/results.json" ]] && RESUME=(--resume)
exec "$TAPPA" eval-kv \
  --methods fullkv,streamingllm,h2o,snapkv,pyramidkv,cake,expected-attention,tappa,tappa:alpha=1,tappa-head \
  --budgets 64,128,256,512 \
  --tasks niah_single_words,niah_single_numbers,niah_single_uuids,niah_multikey,niah_multivalue,niah_multiquery,vt,cwe,passkey,longbench_multi_news,fidelity_wikitext,fidelity_essays \
  --lengths "$LENGTHS" --samples "$SAMPLES" --modes "$MODES" --seed 0 \
  -t "$THREADS" --data-dir "$DATA" -o "$OUT" "${RESUME[@]}"
