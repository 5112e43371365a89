#!/usr/bin/env bash
# Layer-pruning sweep for docs/RESULTS.md §3: calibrate BI and q-sim, build the ShortGPT and TAPPA
# orders, then for every pruning depth evaluate WikiText-2 perplexity and zero-shot accuracy with the
# layers skipped in memory (identical to a pruned GGUF: tests/prune_gguf_test.cpp). Each distinct
# removed-layer set is evaluated once; every step resumes from its own output, so rerunning after an
# interruption continues where it stopped.
#
#   scripts/prune_sweep.sh                       # defaults below
#   LIMIT=100 CHUNKS=16 scripts/prune_sweep.sh   # larger samples: slower, smaller errors
#
# Environment (defaults): TAPPA=build/tappa  MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
#   DATA=../shared/data  OUT=out/prune_sweep  THREADS=0 (all)
#   CAL_WINDOWS=16, CAL_STRIDE=1024: 1024-token windows over the Paul Graham essays (PG-19 is not
#     available offline; the official stride is 256, non-overlapping windows see more text per token
#     of compute)
#   DEPTHS="1 2 3 4 5 6 7"  BETAS="0.1 0.2 0.3": orders written and perplexity measured for each
#   CHUNKS=4: perplexity chunks of 512 tokens (WikiText-2 test, llama.cpp's layout)
#   EVAL_BETAS="0.2", MC_DEPTHS="2 4 6": the TAPPA orders and depths that also get the
#     multiple-choice tasks (with ShortGPT at the same depths)
#   LIMIT=20: items per task      TASKS=piqa,arc_easy,winogrande,hellaswag
# The defaults fit the 2 shared cores this was developed on (~40 tokens/s under load); raise LIMIT
# and CHUNKS on a quiet machine — the standard errors shrink as 1/sqrt(n).
set -euo pipefail
cd "$(dirname "$0")/.."
TAPPA=${TAPPA:-build/tappa}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-../shared/data}
OUT=${OUT:-out/prune_sweep}
THREADS=${THREADS:-0}
CAL_WINDOWS=${CAL_WINDOWS:-16}
CAL_STRIDE=${CAL_STRIDE:-1024}
CHUNKS=${CHUNKS:-4}
LIMIT=${LIMIT:-20}
DEPTHS=${DEPTHS:-"1 2 3 4 5 6 7"}
BETAS=${BETAS:-"0.1 0.2 0.3"}
EVAL_BETAS=${EVAL_BETAS:-"0.2"}
MC_DEPTHS=${MC_DEPTHS:-"2 4 6"}
TASKS=${TASKS:-piqa,arc_easy,winogrande,hellaswag}
PY=${PY:-python3}
mkdir -p "$OUT/runs"

echo "== calibrate ($CAL_WINDOWS windows)"
if [[ ! -s $OUT/scores.json ]] || grep -q '"complete": false' "$OUT/scores.json"; then
  "$TAPPA" calibrate -m "$MODEL" -t "$THREADS" -f "$DATA"/niah_paulgraham_essays/*.txt \
    --stride "$CAL_STRIDE" --max-windows "$CAL_WINDOWS" -o "$OUT/scores.json" --plot "$OUT/bi_qsim.svg" --resume
fi

echo "== orders"
depth_list=$(echo $DEPTHS | tr ' ' ',')
"$TAPPA" prune-order --scores "$OUT/scores.json" --method shortgpt --show "$depth_list" -o "$OUT/order_shortgpt.json"
for b in $BETAS; do
  "$TAPPA" prune-order --scores "$OUT/scores.json" --method tappa --beta "$b" --show "$depth_list" -o "$OUT/order_tappa_b$b.json"
done

# Distinct removed sets over all methods and depths (plus the unpruned model, "none").
distinct_sets() {  # $1: depths to include ("" = all), $2: TAPPA betas
  $PY - "$OUT" "$1" $2 <<'PYEOF'
import json, sys
out, depths, betas = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
files = [f"{out}/order_shortgpt.json"] + [f"{out}/order_tappa_b{b}.json" for b in betas]
seen = ["none"]
orders = [json.load(open(f))["removed"] for f in files]
# Depth-major (ShortGPT then TAPPA at each depth), so an interrupted sweep still has matched pairs.
for n in sorted(orders[0], key=int):
    for removed in orders:
        key = ",".join(map(str, removed[n]))
        if (not depths or n in depths) and key not in seen:
            seen.append(key)
print(" ".join(seen))
PYEOF
}
sets=$(distinct_sets "" "$BETAS")
mc_sets=$(distinct_sets "$MC_DEPTHS" "$EVAL_BETAS")
echo "== $(echo $sets | wc -w) distinct layer sets: $sets"

# Perplexity for every set first (cheap), then the multiple-choice tasks.
for s in $sets; do
  tag=${s//,/_}
  skip=$([[ $s == none ]] && echo "" || echo "$s")
  if ! [[ -s $OUT/runs/ppl_$tag.json ]] || grep -q '"complete": false' "$OUT/runs/ppl_$tag.json"; then
    echo "-- ppl   skip=[$skip]"
    "$TAPPA" ppl -m "$MODEL" -t "$THREADS" -q -f "$DATA/wikitext2/wiki.test.reconstructed.raw" -c 512 --chunks "$CHUNKS" \
      --skip-layers "$skip" -o "$OUT/runs/ppl_$tag.json" --resume
  fi
done
for s in $mc_sets; do
  tag=${s//,/_}
  skip=$([[ $s == none ]] && echo "" || echo "$s")
  if ! [[ -s $OUT/runs/mc_$tag.json ]] || grep -q '"complete": false' "$OUT/runs/mc_$tag.json"; then
    echo "-- eval-mc skip=[$skip]"
    "$TAPPA" eval-mc -m "$MODEL" -t "$THREADS" -q --data "$DATA" --tasks "$TASKS" --limit "$LIMIT" \
      --skip-layers "$skip" -o "$OUT/runs/mc_$tag.json" --resume
  fi
done

echo "== tables"
$PY - "$OUT" "$TASKS" $BETAS <<'PYEOF' | tee "$OUT/tables.md"
# Markdown tables: one row per (depth, method), the unpruned model first.
import json, math, sys
out, tasks, betas = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
methods = [("ShortGPT", f"{out}/order_shortgpt.json")] + [(f"TAPPA β={b}", f"{out}/order_tappa_b{b}.json") for b in betas]
orders = {m: json.load(open(f)) for m, f in methods}
short = {"piqa": "PIQA", "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "winogrande": "WinoG", "hellaswag": "HellaS"}
import os
def run(tag):
    p = json.load(open(f"{out}/runs/ppl_{tag}.json"))
    f = f"{out}/runs/mc_{tag}.json"
    m = json.load(open(f)) if os.path.exists(f) else None
    if m is not None and not m.get("complete", False): m = None  # an interrupted run: not reported
    return p, m
def row(label, removed, tag):
    p, m = run(tag)
    if m is None:
        return (f"| {label} | {removed} | {p['ppl']:.2f} ± {p['ppl_stderr']:.2f} | " + " | ".join("—" for _ in tasks)
                + " | — |"), p["ppl"], None
    cells = []; ses = []
    for t in tasks:
        r = m["tasks"][t]; se = r["acc_norm_stderr"] if r["metric"] == "acc_norm" else r["acc_stderr"]
        cells.append(f"{100*r['value']:.1f} ± {100*se:.1f}"); ses.append(se)
    avg_se = math.sqrt(sum(x*x for x in ses)) / len(ses)
    return (f"| {label} | {removed} | {p['ppl']:.2f} ± {p['ppl_stderr']:.2f} | " + " | ".join(cells) +
            f" | **{100*m['average']:.2f}** ± {100*avg_se:.1f} |"), p["ppl"], m["average"]
p0, m0 = run("none")
n_items = {t: m0["tasks"][t]["n"] for t in tasks}
print(f"WikiText-2 ppl: {p0['n_chunks']} chunks × 512 tokens ({p0['n_scored']} tokens scored); accuracy: first "
      + ", ".join(f"{n_items[t]} {short.get(t, t)}" for t in tasks) + " items (acc_norm except WinoGrande acc). ± = 1 s.e.\n")
print("| depth | method | removed layers | WikiText-2 ppl | " + " | ".join(short.get(t, t) for t in tasks) + " | avg |")
print("|---|---|---|---|" + "---|" * len(tasks) + "---|")
line, _, _ = row("—", "none", "none")
print("| 0 " + line)
depths = sorted(int(n) for n in orders["ShortGPT"]["removed"])
diffs = {m: [] for m, _ in methods[1:]}
pdiffs = {m: [] for m, _ in methods[1:]}
for n in depths:
    base = None
    for m, _ in methods:
        s = orders[m]["removed"][str(n)]
        line, ppl, avg = row(m, ",".join(map(str, s)), "_".join(map(str, s)))
        print(f"| {n} " + line)
        if base is None: base = (ppl, avg)
        else:
            if avg is not None and base[1] is not None: diffs[m].append((n, 100 * (avg - base[1])))
            pdiffs[m].append(ppl / base[0])
print()
print("TAPPA versus ShortGPT at equal depth:")
for m in diffs:
    d = diffs[m]; g = pdiffs[m]
    if d:
        print(f"- {m}, average accuracy minus ShortGPT's (points): " + ", ".join(f"depth {n}: {x:+.2f}" for n, x in d)
              + f" (mean {sum(x for _, x in d)/len(d):+.2f})")
    print(f"- {m}, perplexity / ShortGPT's, depths {depths[0]}..{depths[-1]}: " + ", ".join(f"{x:.2f}" for x in g))
PYEOF
