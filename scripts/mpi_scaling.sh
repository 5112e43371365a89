#!/usr/bin/env bash
# The scaling table of docs/DISTRIBUTED.md: wall time of ppl, eval-mc, eval-kv and calibrate as one
# plain process, under `mpirun -np 1` and under `mpirun -np 2` (every rank -t 1), REPEATS times each
# (default 2), with the 1-minute load average read before every run (the machine may be shared).
# Prints a Markdown table (min and max of the repeats) and the raw timings.
# Usage: scripts/mpi_scaling.sh [BUILD_DIR] [REPEATS]      (BUILD_DIR: a -DTAPPA_MPI=ON build; default build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAPPA="$(realpath "${1:-${ROOT}/build}")/tappa"
REPEATS="${2:-2}"
MODEL="${ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA="${TAPPA_DATA_DIR:-${ROOT}/../shared/data}"
TEXT="${DATA}/wikitext2/wiki.test.reconstructed.raw"
MPIRUN=(mpirun --allow-run-as-root --oversubscribe)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tappa-scaling.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
cd "${WORK}"

declare -A CMD
CMD[ppl]="ppl -m ${MODEL} -f ${TEXT} -c 512 --chunks 16 -t 1 -q -o out.json"
CMD[eval-mc]="eval-mc -m ${MODEL} --data ${DATA} --tasks piqa,winogrande --limit 40 -t 1 -q -o out.json"
CMD[eval-kv]="eval-kv -m ${MODEL} --data-dir ${DATA} --tasks passkey,vt --lengths 320 --samples 4 --methods fullkv,snapkv,tappa --budgets 64,128 -t 1 --no-progress -o out"
CMD[calibrate]="calibrate -m ${MODEL} -f ${TEXT} --window 256 --stride 256 --max-windows 24 -t 1 -q -o out.json"
ORDER=(ppl eval-mc eval-kv calibrate)
RUNS=(plain np1 np2)

declare -A TIMES LOADS
run_one() {  # run_one COMMAND HOW: prints the seconds
  local cmd="$1" how="$2"
  rm -rf out out.json out.*json*
  local t0 t1
  t0=$(date +%s.%N)
  case "${how}" in
    plain) "${TAPPA}" ${CMD[${cmd}]} > /dev/null 2>&1 ;;
    np1) "${MPIRUN[@]}" -np 1 "${TAPPA}" ${CMD[${cmd}]} > /dev/null 2>&1 ;;
    np2) "${MPIRUN[@]}" -np 2 "${TAPPA}" ${CMD[${cmd}]} > /dev/null 2>&1 ;;
  esac
  t1=$(date +%s.%N)
  echo "${t0} ${t1}" | awk '{printf "%.1f", $2 - $1}'
}
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, ${REPEATS} repeats" >&2
for r in $(seq 1 "${REPEATS}"); do
  for cmd in "${ORDER[@]}"; do
    for how in "${RUNS[@]}"; do
      load="$(cut -d' ' -f1 /proc/loadavg)"
      s="$(run_one "${cmd}" "${how}")"
      echo "# repeat ${r}: ${cmd} ${how}: ${s} s (load ${load})" >&2
      TIMES[${cmd},${how}]+="${s} "
      LOADS[${cmd},${how}]+="${load} "
    done
  done
done
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{if (lo==hi) printf "%s", lo; else printf "%s–%s", lo, hi}'; }
echo "| command | plain -t 1 (s) | mpirun -np 1 (s) | mpirun -np 2 (s) | load average during the runs |"
echo "|---|---:|---:|---:|---|"
for cmd in "${ORDER[@]}"; do
  loads=""
  for how in "${RUNS[@]}"; do loads+="${LOADS[${cmd},${how}]}"; done
  echo "| \`${cmd}\` | $(echo "${TIMES[${cmd},plain]}" | range) | $(echo "${TIMES[${cmd},np1]}" | range) | $(echo "${TIMES[${cmd},np2]}" | range) | $(echo "${loads}" | range) |"
done
