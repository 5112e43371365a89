#!/usr/bin/env bash
# lm-evaluation-harness (PyPI lm_eval, pinned below) against `tappa serve`, then `tappa eval-mc` on the same
# items, then eval/compare_lm_eval.py: per-choice log-likelihoods within 1e-3 and the same accuracy, or exit 1.
#
#   scripts/lm_eval_server.sh                 # PIQA and ARC-Easy, the first 200 items of each
#   LIMIT=50 THREADS=2 scripts/lm_eval_server.sh
#
# lm-eval's model type is `gguf`: it sends context + continuation with echo, logprobs and max_tokens 1 and
# splits them by the returned text_offset, so it needs no tokenizer from a hub. The tasks are local copies
# (eval/lm_eval_tasks/, lm-eval's `json` loader on the files of $TAPPA_DATA_DIR written to build/lm_eval/data);
# HF_DATASETS_OFFLINE / HF_HUB_OFFLINE keep it from the network. lm_eval goes into its own venv,
# .cache/venv-lmeval (created here on first use; it pulls datasets, pandas, scikit-learn, … but no torch).
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-200}
THREADS=${THREADS:-2}
TAPPA=${TAPPA:-build/tappa}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${TAPPA_DATA_DIR:-../shared/data}
LM_EVAL_VERSION=0.4.13
VENV=.cache/venv-lmeval
OUT=build/lm_eval

[ -x "$TAPPA" ] || { echo "lm_eval_server: $TAPPA not built (scripts/build.sh)" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "lm_eval_server: $MODEL missing (scripts/fetch_model.sh)" >&2; exit 2; }
[ -f "$DATA/piqa/valid.jsonl" ] || { echo "lm_eval_server: no PIQA under $DATA (set TAPPA_DATA_DIR)" >&2; exit 2; }
if ! "$VENV/bin/python" -c "import lm_eval, sys; sys.exit(lm_eval.__version__ != '$LM_EVAL_VERSION')" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
  echo "[lm_eval_server] installing lm_eval==$LM_EVAL_VERSION into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "lm_eval==$LM_EVAL_VERSION"
fi

rm -rf "$OUT" && mkdir -p "$OUT/data"
# PIQA's labels live in a separate file: one JSONL with the label added (lm-eval's own piqa has that field).
python3 - "$DATA" "$OUT/data" <<'EOF'
import json, shutil, sys
data, out = sys.argv[1], sys.argv[2]
labels = open(f"{data}/piqa/valid-labels.lst", encoding="utf-8").read().split()
with open(f"{data}/piqa/valid.jsonl", encoding="utf-8") as f, open(f"{out}/piqa_valid.jsonl", "w", encoding="utf-8") as g:
    lines = [l for l in f if l.strip()]
    assert len(lines) == len(labels), (len(lines), len(labels))
    for line, lab in zip(lines, labels):
        d = json.loads(line)
        d["label"] = int(lab)
        g.write(json.dumps(d, ensure_ascii=False) + "\n")
shutil.copyfile(f"{data}/arc/ARC-Easy-Test.jsonl", f"{out}/ARC-Easy-Test.jsonl")
EOF

"$TAPPA" serve -m "$MODEL" --port 0 -t "$THREADS" 2> "$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 1 600); do
  URL=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$OUT/server.log" | sed 's/listening on //' || true)
  [ -n "$URL" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "lm_eval_server: the server did not start" >&2; exit 1; }
echo "[lm_eval_server] server at $URL; lm_eval --limit $LIMIT"

t0=$(date +%s)
if ! HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/lm_eval" \
    --model gguf --model_args "base_url=$URL" \
    --include_path eval/lm_eval_tasks --tasks tappa_piqa,tappa_arc_easy --limit "$LIMIT" \
    --log_samples --output_path "$OUT/out" > "$OUT/lm_eval.log" 2>&1; then
  tail -30 "$OUT/lm_eval.log" >&2
  echo "lm_eval_server: lm_eval failed (log: $OUT/lm_eval.log)" >&2
  exit 1
fi
grep -E '^\|' "$OUT/lm_eval.log" || true  # its results table
t1=$(date +%s)
kill $SERVER; wait $SERVER 2>/dev/null || true
trap - EXIT

"$TAPPA" eval-mc -m "$MODEL" --data "$DATA" --tasks piqa,arc_easy --limit "$LIMIT" -t "$THREADS" -q -o "$OUT/eval_mc.json"
t2=$(date +%s)
echo "[lm_eval_server] lm_eval over the server $((t1 - t0)) s, tappa eval-mc $((t2 - t1)) s"
python3 eval/compare_lm_eval.py --lm-eval-dir "$OUT/out" --eval-mc "$OUT/eval_mc.json" \
  --task tappa_piqa=piqa --task tappa_arc_easy=arc_easy
