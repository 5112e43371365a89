#!/usr/bin/env bash
# Compares tappa's speed with llama.cpp's on one GGUF: prompt processing (pp512) and generation
# (tg128), same thread count, runs interleaved so that both see the same machine load.
#
# Each of R rounds runs `llama-bench ... -r 1` and then `tappa bench ... -r 1` (each does its own
# warm-up); the R per-round samples of each side give mean ± sample sd. Prints one markdown table:
#
#   | test | llama.cpp t/s | tappa t/s | tappa / llama.cpp |
#
# Usage: bench/compare.sh [-m MODEL] [-t THREADS] [-r ROUNDS] [-p N_PROMPT] [-n N_GEN]
#                         [--llama-only | --tappa-only] [--keep DIR]
# Defaults: the default model in models/, -t 2, -r 5, -p 512, -n 128.
# Env: TAPPA_BIN (default <repo>/build/tappa), LLAMA_BENCH (default: from the oracle, see
#      scripts/oracle/build_oracle.sh), LLAMA_BENCH_ARGS (extra llama-bench flags, e.g. "-fa off"),
#      TAPPA_BENCH_ARGS (extra tappa bench flags).
#
# tappa's side assumes `tappa bench -m MODEL -t T -p 512 -n 128 -r R -o json` prints a JSON array of
# {"test": "pp512"|"tg128", "n_prompt": 512, "n_gen": 0, "avg_ts": .., "stddev_ts": .., "samples_ts": [..]}.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${REPO_ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS=2
ROUNDS=5
N_PROMPT=512
N_GEN=128
RUN_LLAMA=1
RUN_TAPPA=1
KEEP=""

die() { echo "compare.sh: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -m) MODEL="$2"; shift 2 ;;
    -t) THREADS="$2"; shift 2 ;;
    -r) ROUNDS="$2"; shift 2 ;;
    -p) N_PROMPT="$2"; shift 2 ;;
    -n) N_GEN="$2"; shift 2 ;;
    --llama-only) RUN_TAPPA=0; shift ;;
    --tappa-only) RUN_LLAMA=0; shift ;;
    --keep) KEEP="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ -f "${MODEL}" ]] || die "model ${MODEL} not found (scripts/fetch_model.sh fetches the default)"
[[ "${ROUNDS}" =~ ^[1-9][0-9]*$ ]] || die "-r must be a positive integer"

if [[ ${RUN_LLAMA} -eq 1 && -z "${LLAMA_BENCH:-}" ]]; then
  ORACLE_ENV="${TAPPA_ORACLE_DIR:-${HOME}/.cache/tappa/oracle}/oracle.env"
  if [[ ! -f "${ORACLE_ENV}" ]]; then
    "${REPO_ROOT}/scripts/oracle/build_oracle.sh" >&2
  fi
  # shellcheck disable=SC1090
  LLAMA_BENCH="$(. "${ORACLE_ENV}" && echo "${LLAMA_BENCH}")"
fi
TAPPA_BIN="${TAPPA_BIN:-${REPO_ROOT}/build/tappa}"
if [[ ${RUN_LLAMA} -eq 1 ]]; then [[ -x "${LLAMA_BENCH}" ]] || die "llama-bench not found (${LLAMA_BENCH})"; fi
if [[ ${RUN_TAPPA} -eq 1 ]]; then [[ -x "${TAPPA_BIN}" ]] || die "tappa not found (${TAPPA_BIN}); build it or use --llama-only"; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tappa-compare.XXXXXX")"
trap 'if [[ -n "${KEEP}" ]]; then mkdir -p "${KEEP}" && cp "${WORK}"/*.json "${KEEP}"/ 2>/dev/null || true; fi; rm -rf "${WORK}"' EXIT

# shellcheck disable=SC2086
for ((i = 1; i <= ROUNDS; i++)); do
  if [[ ${RUN_LLAMA} -eq 1 ]]; then
    echo "compare.sh: round ${i}/${ROUNDS}: llama-bench" >&2
    "${LLAMA_BENCH}" -m "${MODEL}" -t "${THREADS}" -p "${N_PROMPT}" -n "${N_GEN}" -r 1 -o json \
      ${LLAMA_BENCH_ARGS:-} > "${WORK}/llama_${i}.json" 2> "${WORK}/llama_${i}.err" \
      || { cat "${WORK}/llama_${i}.err" >&2; die "llama-bench failed"; }
  fi
  if [[ ${RUN_TAPPA} -eq 1 ]]; then
    echo "compare.sh: round ${i}/${ROUNDS}: tappa bench" >&2
    "${TAPPA_BIN}" bench -m "${MODEL}" -t "${THREADS}" -p "${N_PROMPT}" -n "${N_GEN}" -r 1 -o json \
      ${TAPPA_BENCH_ARGS:-} > "${WORK}/tappa_${i}.json" 2> "${WORK}/tappa_${i}.err" \
      || { cat "${WORK}/tappa_${i}.err" >&2; die "tappa bench failed"; }
  fi
done

python3 - "${WORK}" "${N_PROMPT}" "${N_GEN}" "${THREADS}" "${ROUNDS}" "$(basename "${MODEL}")" <<'EOF'
import glob, json, math, os, sys

work, n_prompt, n_gen, threads, rounds, model = sys.argv[1:7]
n_prompt, n_gen = int(n_prompt), int(n_gen)


def test_name(obj):
    if "test" in obj:
        return obj["test"]
    p, g = int(obj.get("n_prompt", 0)), int(obj.get("n_gen", 0))
    if p > 0 and g == 0:
        return f"pp{p}"
    if g > 0 and p == 0:
        return f"tg{g}"
    return f"pp{p}+tg{g}"


def collect(prefix):
    samples = {}
    for path in sorted(glob.glob(os.path.join(work, f"{prefix}_*.json"))):
        with open(path) as f:
            text = f.read().strip()
        if not text:
            continue
        for obj in json.loads(text):
            vals = obj.get("samples_ts") or [obj["avg_ts"]]
            samples.setdefault(test_name(obj), []).extend(float(v) for v in vals)
    return samples


def mean_sd(xs):
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


llama, tappa = collect("llama"), collect("tappa")
tests = [t for t in (f"pp{n_prompt}", f"tg{n_gen}") if t in llama or t in tappa]
tests += sorted((set(llama) | set(tappa)) - set(tests))


def fmt(ms):
    m, sd = ms
    return "n/a" if m is None else f"{m:.2f} ± {sd:.2f}"


print(f"model `{model}`, {threads} threads, {rounds} interleaved rounds\n")
print("| test | llama.cpp t/s | tappa t/s | tappa / llama.cpp |")
print("|---|---:|---:|---:|")
for t in tests:
    a, b = mean_sd(llama.get(t, [])), mean_sd(tappa.get(t, []))
    ratio = f"{b[0] / a[0]:.2f}" if a[0] and b[0] else "n/a"
    print(f"| {t} | {fmt(a)} | {fmt(b)} | {ratio} |")
EOF
