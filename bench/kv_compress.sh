#!/usr/bin/env bash
# KV-cache compression on the default model (docs/PERFORMANCE.md, "KV-cache compression"):
# a 4096-token prompt (Paul Graham essays) at budget 256 tokens per layer. For every method in
# METHODS, `tappa compress` prefills the prompt with the compressed cache and with the full one,
# decodes DECODE greedy tokens on each (alternating, REPEAT times, medians), and reports
#   - KvCache::bytes_held before / after vs the expected C·L·H_kv·d·2·4 bytes,
#   - the compression step's time (measured inside the policy) as a fraction of the prefill,
#   - decode tokens/s with the compressed vs the full cache.
# Methods in PREFILL_METHODS are run once without decoding (bytes and compression time only).
#
# Usage: bench/kv_compress.sh                      # tappa with decoding, the rest prefill-only
#        METHODS="tappa snapkv" REPEAT=5 THREADS=2 bench/kv_compress.sh
# Environment: BUILD (build), TAPPA (binary), MODEL, TEXT (default: the essays, concatenated),
#              N (4096), BUDGET (256), DECODE (128), REPEAT (3), THREADS (1), OUT (out/kv_compress),
#              METHODS ("tappa"), PREFILL_METHODS (every other method; "" to skip),
#              EXTRA (more `tappa compress` flags, e.g. "--no-decode-evict").
# The machine this was measured on is shared and noisy: a spinning thread pool suffers badly when
# the cores are oversubscribed, so THREADS=1 gives the steadiest numbers there.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
TAPPA=${TAPPA:-$BUILD/tappa}
N=${N:-4096}
BUDGET=${BUDGET:-256}
DECODE=${DECODE:-128}
REPEAT=${REPEAT:-3}
THREADS=${THREADS:-1}
OUT=${OUT:-out/kv_compress}
METHODS=${METHODS:-tappa}
PREFILL_METHODS=${PREFILL_METHODS-"streamingllm h2o snapkv pyramidkv cake tappa-head expected-attention knorm random"}
DATA=${TAPPA_DATA_DIR:-../shared/data}
MODEL_ARGS=()
[[ -n "${MODEL:-}" ]] && MODEL_ARGS=(-m "$MODEL")

[[ -x "$TAPPA" ]] || { echo "kv_compress.sh: $TAPPA not found (build first: cmake --build $BUILD --target tappa)" >&2; exit 1; }
mkdir -p "$OUT"
if [[ -z "${TEXT:-}" ]]; then
  TEXT=$OUT/essays.txt
  cat "$DATA"/niah_paulgraham_essays/*.txt > "$TEXT"
fi
CTX=$((N + DECODE + 64))

run() {  # method decode repeat
  local m=$1 dec=$2 rep=$3
  echo "== $m (N=$N, budget $BUDGET, decode $dec, repeat $rep, threads $THREADS)" >&2
  "$TAPPA" compress "${MODEL_ARGS[@]}" -f "$TEXT" --max-tokens "$N" -c "$CTX" -t "$THREADS" \
    --kv "$m" --budget "$BUDGET" --decode "$dec" --repeat "$rep" --json "$OUT/$m.json" ${EXTRA:-} > "$OUT/$m.txt"
  tail -n 6 "$OUT/$m.txt" >&2
}

for m in $METHODS; do run "$m" "$DECODE" "$REPEAT"; done
for m in $PREFILL_METHODS; do
  [[ " $METHODS " == *" $m "* ]] && continue
  run "$m" 0 1
done

python3 - "$OUT" $METHODS $PREFILL_METHODS <<'EOF'
import json, os, sys
out, methods = sys.argv[1], list(dict.fromkeys(sys.argv[2:]))
MiB = 1048576
print(f"| method | N | C | bytes before (MiB) | after (MiB) | expected C·L·H_kv·d·8 (MiB) | after/before | "
      f"compression ms | prefill s | compression / prefill | decode tok/s compressed | full | speed-up |")
print("|" + " --- |" * 13)
for m in methods:
    p = os.path.join(out, m + ".json")
    if not os.path.exists(p):
        continue
    j = json.load(open(p))
    r = j["record"]
    exp = r["capacity"] * j["n_layer"] * j["n_head_kv"] * j["head_dim"] * 8
    dec = ("| %.2f | %.2f | x%.2f |" % (j["decode_tps_median"], j["decode_tps_full_median"],
                                       j["decode_tps_median"] / j["decode_tps_full_median"])
           if "decode_tps_median" in j else "| - | - | - |")
    print(f"| {m} | {r['n_prompt']} | {r['capacity']} | {r['bytes_held_before']/MiB:.2f} | "
          f"{r['bytes_held_after']/MiB:.3f} | {exp/MiB:.3f} | {r['bytes_held_after']/r['bytes_held_before']:.4f} | "
          f"{j['compress_s_median']*1e3:.1f} | {j['prefill_s_median']:.2f} | "
          f"{100*j['compress_fraction_of_prefill']:.2f}% {dec}")
EOF
