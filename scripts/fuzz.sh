#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*_fuzz.cpp, clang + ASan + UBSan) into build-fuzz/ and runs each
# one for the given time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # default: 60 seconds each, every target
#   scripts/fuzz.sh 10                         # CI's short run
#   scripts/fuzz.sh 600 gguf_fuzz              # one target for ten minutes
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/, never written to) plus the
# inputs it found in earlier runs (build-fuzz/corpus/<target>/). A crash, sanitizer report, leak or
# timeout stops that target, leaves the input in build-fuzz/artifacts/<target>/, and makes this script
# exit non-zero after the other targets have run. The last status line of each run (executions,
# coverage `cov:`, features `ft:`) is printed at the end and kept in build-fuzz/summary.txt.
# Environment: FUZZ_FLAGS adds libFuzzer flags; TAPPA_MODEL points the tokenizer target at a model.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
shift || true
if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || [ "$SECONDS_EACH" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS>=1] [TARGET...]" >&2
  exit 2
fi
scripts/install_deps.sh --fuzz  # clang, libFuzzer, llvm-symbolizer
scripts/fetch_model.sh          # the tokenizer target reads the default model's vocabulary

cmake --preset fuzz >/dev/null
mapfile -t ALL < <(ls fuzz/*_fuzz.cpp | xargs -n1 basename | sed 's/\.cpp$//')
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]}"

MODEL="${TAPPA_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
: >build-fuzz/summary.txt
failed=()
for t in "${TARGETS[@]}"; do
  if [ "$t" = tokenizer_fuzz ] && [ ! -f "$MODEL" ]; then
    echo "[fuzz] $t skipped: needs $MODEL (scripts/fetch_model.sh)" | tee -a build-fuzz/summary.txt
    continue
  fi
  work="build-fuzz/corpus/$t"
  artifacts="build-fuzz/artifacts/$t/"
  mkdir -p "$work" "$artifacts" "fuzz/corpus/$t"
  log="build-fuzz/$t.log"
  echo "[fuzz] $t for ${SECONDS_EACH}s (log $log)"
  # -timeout: one input taking over 10 s is a hang. -rss_limit_mb: an input that makes the reader
  # allocate far more than its own size is a bug (every count is checked against the file size).
  # shellcheck disable=SC2086
  if TAPPA_MODEL="$MODEL" "build-fuzz/$t" "$work" "fuzz/corpus/$t" -max_total_time="$SECONDS_EACH" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts" ${FUZZ_FLAGS:-} >"$log" 2>&1; then
    status="ok"
  else
    status="FAILED"
    failed+=("$t")
    tail -n 40 "$log" >&2
  fi
  # The last "#N ... cov: C ft: F ... exec/s: E" status line, and the total executions.
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  echo "[fuzz] $t $status: ${runs:-?} executions in ${SECONDS_EACH}s; last status: ${last:-none}" \
    | tee -a build-fuzz/summary.txt
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "[fuzz] FAILED: ${failed[*]} (inputs in build-fuzz/artifacts/)" >&2
  exit 1
fi
echo "[fuzz] ok"
