#!/usr/bin/env bash
# The MPI acceptance test (#20, docs/DISTRIBUTED.md), run by ctest in a -DTAPPA_MPI=ON build:
#   1. ppl and eval-mc under mpirun -np 1, 2, 4 (oversubscribed on a small machine) write files identical
#      byte for byte to one plain process (per-item results are the same bits, sums are formed on rank 0
#      in item order, so the identity is exact, not within a tolerance);
#   2. one rank of a 2-rank ppl run is killed with SIGKILL midway; mpirun stops, naming the rank; the
#      relaunch with --resume computes only the missing chunks and writes the same file as one process.
# Usage: tests/mpi_test.sh TAPPA_BINARY MPIRUN
# Needs the default model and ../shared/data (wikitext2, piqa, winogrande); skips (exit 77) without them.
set -euo pipefail
TAPPA="$(realpath "$1")"
MPIRUN="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA="${TAPPA_DATA_DIR:-${ROOT}/../shared/data}"
TEXT="${DATA}/wikitext2/wiki.test.reconstructed.raw"
for f in "${MODEL}" "${TEXT}" "${DATA}/piqa/valid.jsonl" "${DATA}/winogrande/winogrande_dev.llmfoundry.jsonl"; do
  [[ -f "$f" ]] || { echo "mpi_test: skipped: $f not found (scripts/fetch_model.sh; ../shared/data)"; exit 77; }
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tappa-mpi.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
cd "${WORK}"
mpi() {  # mpirun as root in a container needs both flags; a few ranks on 2 cores need --oversubscribe
  local np="$1"; shift
  "${MPIRUN}" --allow-run-as-root --oversubscribe -np "${np}" "$@"
}
fail() { echo "mpi_test: FAIL: $*" >&2; exit 1; }
PPL=(ppl -m "${MODEL}" -f "${TEXT}" -c 128 --chunks 12 -t 1 -q)
MC=(eval-mc -m "${MODEL}" --data "${DATA}" --tasks piqa,winogrande --limit 10 -t 1 -q)

# 1. identity with one plain process
"${TAPPA}" "${PPL[@]}" -o ppl_one.json > ppl_one.txt
"${TAPPA}" "${MC[@]}" -o mc_one.json > mc_one.txt
for np in 1 2 4; do
  mpi "${np}" "${TAPPA}" "${PPL[@]}" -o "ppl_${np}.json" > "ppl_${np}.txt"
  mpi "${np}" "${TAPPA}" "${MC[@]}" -o "mc_${np}.json" > "mc_${np}.txt"
  cmp -s ppl_one.json "ppl_${np}.json" || fail "ppl -np ${np} differs from one process: $(diff ppl_one.json "ppl_${np}.json" | head -5)"
  cmp -s ppl_one.txt "ppl_${np}.txt" || fail "ppl -np ${np} prints another result"
  cmp -s mc_one.json "mc_${np}.json" || fail "eval-mc -np ${np} differs from one process"
  cmp -s mc_one.txt "mc_${np}.txt" || fail "eval-mc -np ${np} prints another table"
  echo "mpi_test: -np ${np}: ppl and eval-mc identical to one process"
done

# 2. kill one rank midway, resume
N=64
KILL=(ppl -m "${MODEL}" -f "${TEXT}" -c 128 --chunks "${N}" -t 1 -q)
"${TAPPA}" "${KILL[@]}" -o kill_one.json > /dev/null
count_items() {  # chunks finished in the rank checkpoints of kill.json
  python3 - "$@" <<'PY'
import glob, json, sys
n = 0
for p in glob.glob("kill.json.ckpt.json.rank*"):
    if p.endswith(tuple("0123456789")):
        try:
            n += len(json.load(open(p))["items"])
        except (OSError, ValueError):
            pass
print(n)
PY
}
mpi 2 "${TAPPA}" "${KILL[@]}" -o kill.json > kill_run.out 2> kill_run.err &
MPI_PID=$!
for _ in $(seq 1 600); do  # up to 60 s for both ranks to have checkpointed a few chunks
  [[ -f kill.json.ckpt.json.rank1 && $(count_items) -ge 6 ]] && break
  sleep 0.1
done
# A rank's command line starts with the binary (mpirun's with mpirun): kill the newest rank.
VICTIM="$(pgrep -n -f "^${TAPPA} ppl .*kill[.]json" || true)"
[[ -n "${VICTIM}" ]] || fail "no rank process to kill (finished too early?)"
kill -9 "${VICTIM}"
if wait "${MPI_PID}"; then fail "mpirun exited 0 after a rank was killed"; fi
[[ ! -f kill.json ]] || fail "a result file was written although a rank died"
before="$(count_items)"
[[ ${before} -gt 0 && ${before} -lt ${N} ]] || fail "the kill did not land midway (${before} of ${N} chunks checkpointed)"
grep -qi "rank" kill_run.err || fail "mpirun's failure report does not name the rank: $(head -3 kill_run.err)"
echo "mpi_test: killed rank pid ${VICTIM} with ${before} of ${N} chunks checkpointed"
mpi 2 "${TAPPA}" "${KILL[@]}" -o kill.json --resume > /dev/null 2> resume.err
cmp -s kill_one.json kill.json || fail "resumed run differs from one process: $(diff kill_one.json kill.json | head -5)"
echo "mpi_test: resumed after a killed rank: identical to one process"
echo "mpi_test: PASS"
