#!/usr/bin/env bash
# Compares tappa's speed with llama.cpp's on one GGUF, same thread count, runs interleaved so that
# both see the same machine load. Rows of the table (tokens/s, mean ± sample sd over the rounds):
#
#   pp512                      prompt processing of 512 random tokens
#   tg128                      generating 128 tokens from an empty cache
#   tg128 @ d4096              generating 128 tokens after 4096 tokens already in the cache
#   tappa tg128 @ d4096, tappa budget 256
#                              the same with the 4096-token context compressed by a KV method (tappa
#                              only: its ratio column compares it with tappa's own full cache)
#
# Each of R rounds runs, in this order, `llama-bench ... -r 1` and `tappa bench ... -r 1` for pp+tg,
# then both at depth, then tappa with the compressed cache (each call does its own warm-up); the R
# per-round samples of each side give mean ± sd, and the ratios are given for the means and for the
# medians.
#
# Usage: bench/compare.sh [-m MODEL] [-t THREADS] [-r ROUNDS] [-p N_PROMPT] [-n N_GEN] [-d DEPTH]
#                         [--kv METHOD] [--budget C] [--variants] [--make-variants]
#                         [--batch N1,N2,...] [--isa avx2|avx512|native] [--llama-only | --tappa-only]
#                         [--keep DIR] [--out FILE]
#   -m MODEL        GGUF to run (default: models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   -t THREADS      threads for both (default 2)
#   -r ROUNDS       interleaved rounds (default 5)
#   -p / -n         prompt and generation lengths (default 512 / 128)
#   -d DEPTH        context depth of the depth rows (default 4096; 0 skips the depth rows)
#   --depth-only    run only the depth rows (with -d > 0)
#   --kv METHOD     KV-compression method of the compressed row (default tappa; "none" skips the row)
#   --budget C      its budget, tokens per layer (default 256)
#   --batch LIST    also the batched-decode rows: tgN xB = aggregate tokens/s of B sequences decoding
#                   together from an empty cache, for each B in LIST (e.g. 1,4,16); llama.cpp's side is
#                   llama-batched-bench -npp 0 -ntg N -npl LIST (its S_TG), tappa's `tappa bench --batch`
#   --isa ISA       which instruction set both sides run (default native: each picks the best this CPU
#                   has). avx2 / avx512: tappa with TAPPA_CPU_VARIANT=ISA (its run-time kernel variant,
#                   issue #22), llama.cpp from an oracle built for that ISA (GGML_NATIVE=OFF with the
#                   ISA's flags, scripts/oracle/build_oracle.sh with ORACLE_ISA=ISA, built on first use
#                   into its own build directory). So the AVX2 comparison can be made on an AVX-512
#                   machine too: the clock, caches and memory are still this machine's, only the
#                   instructions are AVX2's. The table heading names the ISA and this CPU's SIMD flags.
#   --variants      also make (if missing) and run the Q8_0 and F16 variants of MODEL: one table each
#   --make-variants only make the variants (models/<name>.Q8_0.gguf, .F16.gguf) and exit
#   --keep DIR      keep the raw JSON of every call in DIR
#   --out FILE      also write the tables to FILE (atomically)
# Env: TAPPA_BIN (default <repo>/build/tappa), LLAMA_BENCH / LLAMA_QUANTIZE (default: from the oracle,
#      see scripts/oracle/build_oracle.sh, built on first use), LLAMA_BENCH_ARGS (extra llama-bench
#      flags, e.g. "-fa off"), TAPPA_BENCH_ARGS (extra tappa bench flags).
#
# Examples:
#   bench/compare.sh -t 2 -r 5                       # the full table for the default model
#   bench/compare.sh -t 2 -r 5 -d 0 --variants      # pp/tg for Q4_1, Q8_0 and F16
#   bench/compare.sh -m models/gemma-3-270m-q4_k_m.gguf -d 0
#   bench/compare.sh -t 2 -r 5 -d 0 -p 0 -n 32 --batch 1,4,16  # batched decode only
#   bench/compare.sh -t 2 -r 5 -d 0 --isa avx2 -m models/gemma-3-270m-q4_k_m.gguf  # both sides on AVX2
#
# Variants are requantized from MODEL with llama-quantize --allow-requantize, so their weights are
# MODEL's rounded values in the new format: the same arithmetic work and bytes as a genuine Q8_0 /
# F16 file, which is what a speed comparison needs (not for quality comparisons).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${REPO_ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS=2
ROUNDS=5
N_PROMPT=512
N_GEN=128
DEPTH=4096
KV_METHOD=tappa
KV_BUDGET=256
RUN_LLAMA=1
RUN_TAPPA=1
VARIANTS=0
MAKE_ONLY=0
BASE_ROWS=1
KEEP=""
OUT=""
BATCH=""
ISA=native

die() { echo "compare.sh: error: $*" >&2; exit 1; }
need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -m) need_arg "$@"; MODEL="$2"; shift 2 ;;
    -t) need_arg "$@"; THREADS="$2"; shift 2 ;;
    -r) need_arg "$@"; ROUNDS="$2"; shift 2 ;;
    -p) need_arg "$@"; N_PROMPT="$2"; shift 2 ;;
    -n) need_arg "$@"; N_GEN="$2"; shift 2 ;;
    -d) need_arg "$@"; DEPTH="$2"; shift 2 ;;
    --kv) need_arg "$@"; KV_METHOD="$2"; shift 2 ;;
    --budget) need_arg "$@"; KV_BUDGET="$2"; shift 2 ;;
    --variants) VARIANTS=1; shift ;;
    --depth-only) BASE_ROWS=0; shift ;;
    --make-variants) MAKE_ONLY=1; shift ;;
    --llama-only) RUN_TAPPA=0; shift ;;
    --tappa-only) RUN_LLAMA=0; shift ;;
    --batch) need_arg "$@"; BATCH="$2"; shift 2 ;;
    --isa) need_arg "$@"; ISA="$2"; shift 2 ;;
    --keep) need_arg "$@"; KEEP="$2"; shift 2 ;;
    --out) need_arg "$@"; OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,56p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ -f "${MODEL}" ]] || die "model ${MODEL} not found (scripts/fetch_model.sh fetches the default)"
for v in ROUNDS THREADS; do [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "${v} must be a positive integer"; done
for v in N_PROMPT N_GEN DEPTH KV_BUDGET; do [[ "${!v}" =~ ^[0-9]+$ ]] || die "${v} must be a non-negative integer"; done
[[ -z "${BATCH}" || "${BATCH}" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--batch takes a comma list of positive integers (e.g. 1,4,16)"
[[ -z "${BATCH}" || ${N_GEN} -gt 0 ]] || die "--batch needs -n > 0"
[[ ${RUN_LLAMA} -eq 1 || ${RUN_TAPPA} -eq 1 ]] || die "--llama-only and --tappa-only exclude each other"
case "${ISA}" in
  native) ;;
  avx2|avx512)
    grep -qw "${ISA/avx512/avx512f}" /proc/cpuinfo || die "--isa ${ISA}: this CPU has no ${ISA} (see /proc/cpuinfo)"
    export TAPPA_CPU_VARIANT="${ISA}" ;;
  *) die "--isa takes avx2, avx512 or native (got ${ISA})" ;;
esac
# This CPU's SIMD flags, for the table heading (issue #22: every table with the machine's flags).
CPU_FLAGS="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|fma|f16c|avx512[a-z_0-9]*|avx_vnni)$' | sort -u | tr '\n' ' ')"
CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"

oracle_var() {  # prints a variable of the oracle's env file (the --isa one), building it on first use
  local env_file="${TAPPA_ORACLE_DIR:-${HOME}/.cache/tappa/oracle}/oracle.env"
  [[ "${ISA}" == native ]] || env_file="${env_file%.env}-${ISA}.env"
  [[ -f "${env_file}" ]] || ORACLE_ISA="${ISA}" "${REPO_ROOT}/scripts/oracle/build_oracle.sh" >&2
  # shellcheck disable=SC1090
  (. "${env_file}" && echo "${!1}")
}

# ---- variants (Q8_0, F16) of MODEL, made once into models/ (ignored by git) ----
variant_path() { local base; base="$(basename "$1" .gguf)"; echo "${REPO_ROOT}/models/${base%.*}.$2.gguf"; }
make_variant() {
  local src="$1" type="$2" dst
  dst="$(variant_path "${src}" "${type}")"
  if [[ ! -f "${dst}" ]]; then
    [[ -n "${LLAMA_QUANTIZE:-}" ]] || LLAMA_QUANTIZE="$(oracle_var LLAMA_QUANTIZE)"
    [[ -x "${LLAMA_QUANTIZE}" ]] || die "llama-quantize not found (${LLAMA_QUANTIZE})"
    echo "compare.sh: making ${dst} (${type}) from $(basename "${src}")" >&2
    "${LLAMA_QUANTIZE}" --allow-requantize "${src}" "${dst}.tmp" "${type}" > "${dst}.log" 2>&1 \
      || { tail -5 "${dst}.log" >&2; rm -f "${dst}.tmp"; die "llama-quantize failed (log: ${dst}.log)"; }
    mv "${dst}.tmp" "${dst}"
  fi
  echo "${dst}"
}
MODELS=("${MODEL}")
if [[ ${VARIANTS} -eq 1 || ${MAKE_ONLY} -eq 1 ]]; then
  MODELS+=("$(make_variant "${MODEL}" Q8_0)" "$(make_variant "${MODEL}" F16)")
fi
if [[ ${MAKE_ONLY} -eq 1 ]]; then printf '%s\n' "${MODELS[@]:1}"; exit 0; fi

if [[ ${RUN_LLAMA} -eq 1 ]]; then
  [[ -n "${LLAMA_BENCH:-}" ]] || LLAMA_BENCH="$(oracle_var LLAMA_BENCH)"
  [[ -x "${LLAMA_BENCH}" ]] || die "llama-bench not found (${LLAMA_BENCH})"
  if [[ -n "${BATCH}" ]]; then
    [[ -n "${LLAMA_BATCHED_BENCH:-}" ]] || LLAMA_BATCHED_BENCH="$(oracle_var LLAMA_BATCHED_BENCH)"
    [[ -x "${LLAMA_BATCHED_BENCH}" ]] || die "llama-batched-bench not found (${LLAMA_BATCHED_BENCH}; rebuild the oracle)"
  fi
fi
TAPPA_BIN="${TAPPA_BIN:-${REPO_ROOT}/build/tappa}"
if [[ ${RUN_TAPPA} -eq 1 ]]; then [[ -x "${TAPPA_BIN}" ]] || die "tappa not found (${TAPPA_BIN}); build it or use --llama-only"; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tappa-compare.XXXXXX")"
trap 'if [[ -n "${KEEP}" ]]; then mkdir -p "${KEEP}" && cp -r "${WORK}"/. "${KEEP}"/ 2>/dev/null || true; fi; rm -rf "${WORK}"' EXIT

# run_one NAME OUTFILE CMD... : runs one benchmark call, its stderr kept beside the JSON.
run_one() {
  local name="$1" out="$2"
  shift 2
  echo "compare.sh: ${name}" >&2
  "$@" > "${out}" 2> "${out%.json}.err" && return 0
  # One retry: on a shared machine a call can be killed from outside (seen: SIGTERM, empty stderr).
  echo "compare.sh: ${name} failed (exit $?); retrying once" >&2
  "$@" > "${out}" 2> "${out%.json}.err" || { tail -5 "${out%.json}.err" >&2; die "${name} failed"; }
}

for mi in "${!MODELS[@]}"; do
  m="${MODELS[$mi]}"
  dir="${WORK}/model${mi}"
  mkdir -p "${dir}"
  echo "${m}" > "${dir}/model"
  # shellcheck disable=SC2086
  for ((i = 1; i <= ROUNDS; i++)); do
    tag="$(basename "${m}") round ${i}/${ROUNDS}"
    if [[ ${BASE_ROWS} -eq 1 && $((N_PROMPT + N_GEN)) -gt 0 ]]; then
      [[ ${RUN_LLAMA} -eq 0 ]] || run_one "${tag}: llama-bench pp${N_PROMPT} tg${N_GEN}" "${dir}/llama_base_${i}.json" \
        "${LLAMA_BENCH}" -m "${m}" -t "${THREADS}" -p "${N_PROMPT}" -n "${N_GEN}" -r 1 -o json ${LLAMA_BENCH_ARGS:-}
      [[ ${RUN_TAPPA} -eq 0 ]] || run_one "${tag}: tappa bench pp${N_PROMPT} tg${N_GEN}" "${dir}/tappa_base_${i}.json" \
        "${TAPPA_BIN}" bench -m "${m}" -t "${THREADS}" -p "${N_PROMPT}" -n "${N_GEN}" -r 1 -o json ${TAPPA_BENCH_ARGS:-}
    fi
    if [[ ${DEPTH} -gt 0 && ${N_GEN} -gt 0 ]]; then
      [[ ${RUN_LLAMA} -eq 0 ]] || run_one "${tag}: llama-bench tg${N_GEN} @ d${DEPTH}" "${dir}/llama_depth_${i}.json" \
        "${LLAMA_BENCH}" -m "${m}" -t "${THREADS}" -p 0 -n "${N_GEN}" -d "${DEPTH}" -r 1 -o json ${LLAMA_BENCH_ARGS:-}
      [[ ${RUN_TAPPA} -eq 0 ]] || run_one "${tag}: tappa bench tg${N_GEN} @ d${DEPTH}" "${dir}/tappa_depth_${i}.json" \
        "${TAPPA_BIN}" bench -m "${m}" -t "${THREADS}" -p 0 -n "${N_GEN}" -d "${DEPTH}" -r 1 -o json ${TAPPA_BENCH_ARGS:-}
      if [[ ${RUN_TAPPA} -eq 1 && "${KV_METHOD}" != none ]]; then
        run_one "${tag}: tappa bench tg${N_GEN} @ d${DEPTH} --kv ${KV_METHOD} --budget ${KV_BUDGET}" \
          "${dir}/tappa_kv_${i}.json" "${TAPPA_BIN}" bench -m "${m}" -t "${THREADS}" -p 0 -n "${N_GEN}" \
          -d "${DEPTH}" -r 1 -o json --kv "${KV_METHOD}" --budget "${KV_BUDGET}" ${TAPPA_BENCH_ARGS:-}
      fi
    fi
    if [[ -n "${BATCH}" ]]; then
      # The context must hold every sequence's tokens: largest B times N, plus slack for llama.cpp's cells.
      max_b="$(tr ',' '\n' <<< "${BATCH}" | sort -n | tail -1)"
      ctx=$((max_b * N_GEN + 256))
      [[ ${RUN_LLAMA} -eq 0 ]] || run_one "${tag}: llama-batched-bench tg${N_GEN} x{${BATCH}}" "${dir}/llama_batch_${i}.jsonl" \
        "${LLAMA_BATCHED_BENCH}" -m "${m}" -t "${THREADS}" -npp 0 -ntg "${N_GEN}" -npl "${BATCH}" -c "${ctx}" \
        --output-format jsonl ${LLAMA_BENCH_ARGS:-}
      [[ ${RUN_TAPPA} -eq 0 ]] || run_one "${tag}: tappa bench tg${N_GEN} x{${BATCH}}" "${dir}/tappa_batch_${i}.json" \
        "${TAPPA_BIN}" bench -m "${m}" -t "${THREADS}" -p 0 -n "${N_GEN}" -r 1 --batch "${BATCH}" -o json ${TAPPA_BENCH_ARGS:-}
    fi
  done
done

TABLE="${WORK}/table.md"
{
  echo "ISA: **${ISA}** (tappa: ${TAPPA_CPU_VARIANT:-its best variant for this CPU}; llama.cpp: $([[ ${ISA} == native ]] && echo "GGML_NATIVE=ON" || echo "GGML_NATIVE=OFF, ${ISA} flags")). CPU: ${CPU_MODEL}; SIMD flags: ${CPU_FLAGS}"
  echo
} > "${TABLE}"
python3 - "${WORK}" "${THREADS}" "${ROUNDS}" "${KV_METHOD}" "${KV_BUDGET}" >> "${TABLE}" <<'EOF'
import glob, json, math, os, statistics, sys

work, threads, rounds, kv_method, kv_budget = sys.argv[1:6]


def test_name(obj):
    # llama-bench's JSON has no test name: rebuild llama-bench's own label from the sizes.
    p, g, d = int(obj.get("n_prompt", 0)), int(obj.get("n_gen", 0)), int(obj.get("n_depth", 0))
    name = f"pp{p}" if g == 0 else f"tg{g}" if p == 0 else f"pp{p}+tg{g}"
    name += f" @ d{d}" if d else ""
    return name + (f" x{obj['n_seqs']}" if int(obj.get("n_seqs", 1)) > 1 else "")


def collect(dir_, side, kinds):
    samples = {}
    for kind in kinds:
        for path in sorted(glob.glob(os.path.join(dir_, f"{side}_{kind}_*.json"))):
            with open(path) as f:
                text = f.read().strip()
            for obj in json.loads(text) if text else []:
                vals = obj.get("samples_ts") or [obj["avg_ts"]]
                samples.setdefault(test_name(obj), []).extend(float(v) for v in vals)
    return samples


def collect_batched(dir_, samples):
    # llama-batched-bench --output-format jsonl: one object per batch size (pl), S_TG = pl * tg / t_tg.
    for path in sorted(glob.glob(os.path.join(dir_, "llama_batch_*.jsonl"))):
        for line in open(path):
            line = line.strip()
            if not line.startswith("{"):
                continue
            obj = json.loads(line.replace("-nan", "null").replace("nan", "null"))
            name = f"tg{obj['tg']}" + (f" x{obj['pl']}" if int(obj["pl"]) > 1 else "")
            samples.setdefault(name + " (batched)", []).append(float(obj["speed_tg"]))
    return samples


def stats(xs):
    if not xs:
        return None
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return statistics.mean(xs), sd, statistics.median(xs)


def fmt(s):
    return "n/a" if s is None else f"{s[0]:.2f} ± {s[1]:.2f}"


def ratio(a, b, i):
    return f"{b[i] / a[i]:.2f}" if a and b and a[i] > 0 else "n/a"


for model_dir in sorted(glob.glob(os.path.join(work, "model*"))):
    model = open(os.path.join(model_dir, "model")).read().strip()
    llama = collect(model_dir, "llama", ["base", "depth"])
    tappa = collect(model_dir, "tappa", ["base", "depth"])
    collect_batched(model_dir, llama)
    for t, xs in collect(model_dir, "tappa", ["batch"]).items():
        tappa.setdefault(t + " (batched)", []).extend(xs)
    kv = collect(model_dir, "tappa", ["kv"])
    n_rounds = max([len(v) for v in list(llama.values()) + list(tappa.values())] + [0])
    print(f"model `{os.path.basename(model)}`, {threads} threads, {n_rounds} interleaved rounds "
          f"(tokens/s, mean ± sd; ratios of the means and of the medians)\n")
    print("| test | llama.cpp t/s | tappa t/s | tappa / llama.cpp (means) | (medians) |")
    print("|---|---:|---:|---:|---:|")
    def sort_key(t):
        n_seqs = int(t.split(" x")[1].split()[0]) if " x" in t else 1
        return ("(batched)" in t, " @ " in t, not t.startswith("pp"), n_seqs, t)
    order = sorted(set(llama) | set(tappa), key=sort_key)
    for t in order:
        a, b = stats(llama.get(t, [])), stats(tappa.get(t, []))
        print(f"| {t} | {fmt(a)} | {fmt(b)} | {ratio(a, b, 0)} | {ratio(a, b, 2)} |")
    for t, xs in sorted(kv.items()):
        full, comp = stats(tappa.get(t, [])), stats(xs)
        print(f"| tappa {t}, {kv_method} budget {kv_budget} | — | {fmt(comp)} | "
              f"{ratio(full, comp, 0)} vs tappa full cache | {ratio(full, comp, 2)} vs full |")
    print()
EOF
cat "${TABLE}"
if [[ -n "${OUT}" ]]; then
  cp "${TABLE}" "${OUT}.tmp.$$" && mv "${OUT}.tmp.$$" "${OUT}"
fi
