#!/usr/bin/env bash
# The MPI acceptance test (#20, docs/DISTRIBUTED.md), run by ctest in a -DTAPPA_MPI=ON build:
#   1. ppl and eval-mc under mpirun -np 1, 2, 4 (oversubscribed on a small machine) write files identical
#      byte for byte to one plain process (per-item results are the same bits, sums are formed on rank 0
#      in item order, so the identity is exact, not within a tolerance);
#   2. one rank of a 2-rank ppl run is killed with SIGKILL midway; mpirun stops, naming the rank; the
#      relaunch with --resume computes only the missing chunks and writes the same file as one process;
#   3. calibrate under -np 1, 2, 4: its four files (scores, .bi, .qsim, checkpoint) and its printout
#      byte-identical to one process (rank 0 adds the per-window scores in window order);
#   4. eval-kv under -np 1, 2, 4: every file of OUT identical to one process once the wall-clock fields
#      are set aside (results.json's seconds/prefill_seconds, results.csv's seconds column, table.md's
#      "Compute:" line); then one rank of a 2-rank eval-kv run is killed midway and a 4-rank --resume
#      completes it, again identical to one process, with no rank checkpoint left behind.
# Usage: tests/mpi_test.sh TAPPA_BINARY MPIRUN
# Needs the default model and ../shared/data (wikitext2, piqa, winogrande, ruler); skips (exit 77)
# without them.
set -euo pipefail
TAPPA="$(realpath "$1")"
MPIRUN="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA="${TAPPA_DATA_DIR:-${ROOT}/../shared/data}"
TEXT="${DATA}/wikitext2/wiki.test.reconstructed.raw"
for f in "${MODEL}" "${TEXT}" "${DATA}/piqa/valid.jsonl" "${DATA}/winogrande/winogrande_dev.llmfoundry.jsonl" \
         "${DATA}/ruler/PaulGrahamEssays.json"; do
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

# 3. calibrate: -np 1, 2, 4 against one process (each run in its own folder: the printout names -o)
CAL=(calibrate -m "${MODEL}" -f "${TEXT}" --window 128 --stride 128 --max-windows 12 -t 1 -q -o s.json)
mkdir cal_one && (cd cal_one && "${TAPPA}" "${CAL[@]}" > out.txt)
for np in 1 2 4; do
  mkdir "cal_${np}" && (cd "cal_${np}" && mpi "${np}" "${TAPPA}" "${CAL[@]}" > out.txt)
  for f in s.json s.bi.json s.qsim.json s.json.ckpt.json out.txt; do
    cmp -s "cal_one/$f" "cal_${np}/$f" || fail "calibrate -np ${np}: $f differs from one process: $(diff "cal_one/$f" "cal_${np}/$f" | head -5)"
  done
  [[ "$(ls "cal_${np}")" == "$(ls cal_one)" ]] || fail "calibrate -np ${np} leaves other files: $(ls "cal_${np}")"
  echo "mpi_test: -np ${np}: calibrate identical to one process"
done

# 4. eval-kv: 8 samples (passkey, vt × 4) × 5 cells (fullkv, snapkv and tappa at 2 budgets)
KV=(eval-kv -m "${MODEL}" --data-dir "${DATA}" --tasks passkey,vt --lengths 320 --samples 4
    --methods fullkv,snapkv,tappa --budgets 64,128 -t 1 --no-progress)
same_kv() {  # same_kv A B: the files of two eval-kv folders agree but for the wall-clock fields
  python3 - "$1" "$2" <<'PY'
import csv, io, json, os, sys
a, b = sys.argv[1:3]
def files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
def norm(path):
    text = open(path, "rb").read()
    name = os.path.basename(path)
    if name == "results.json":
        def strip(j):
            if isinstance(j, dict):
                return {k: strip(v) for k, v in j.items() if k not in ("seconds", "prefill_seconds")}
            return [strip(v) for v in j] if isinstance(j, list) else j
        return json.dumps(strip(json.loads(text)), sort_keys=True)
    if name == "results.csv":
        rows = list(csv.reader(io.StringIO(text.decode("utf-8", "surrogateescape"))))
        i = rows[0].index("seconds")
        return [r[:i] + r[i + 1:] for r in rows]
    if name == "table.md":
        return [l for l in text.split(b"\n") if not l.startswith(b"Compute:")]
    return text
if files(a) != files(b):
    sys.exit(f"files differ: {files(a)} vs {files(b)}")
for f in files(a):
    if norm(os.path.join(a, f)) != norm(os.path.join(b, f)):
        sys.exit(f"{f} differs")
PY
}
"${TAPPA}" "${KV[@]}" -o kv_one > /dev/null
for np in 1 2 4; do
  mpi "${np}" "${TAPPA}" "${KV[@]}" -o "kv_${np}" > /dev/null
  why="$(same_kv kv_one "kv_${np}" 2>&1)" || fail "eval-kv -np ${np} differs from one process: ${why}"
  echo "mpi_test: -np ${np}: eval-kv identical to one process (timings aside)"
done
count_cells() {  # cells in the rank checkpoints of kv_kill
  python3 - <<'PY'
import glob, json
n = 0
for p in glob.glob("kv_kill/results.json.rank*"):
    if p[-1].isdigit():
        try:
            n += len(json.load(open(p))["cells"])
        except (OSError, ValueError):
            pass
print(n)
PY
}
mpi 2 "${TAPPA}" "${KV[@]}" -o kv_kill > kv_kill.out 2> kv_kill.err &
MPI_PID=$!
for _ in $(seq 1 600); do  # up to 60 s for both ranks to have checkpointed a sample or more
  [[ -f kv_kill/results.json.rank1 && $(count_cells) -ge 10 ]] && break
  sleep 0.1
done
VICTIM="$(pgrep -n -f "^${TAPPA} eval-kv .*kv_kill" || true)"
[[ -n "${VICTIM}" ]] || fail "no eval-kv rank process to kill (finished too early?)"
kill -9 "${VICTIM}"
if wait "${MPI_PID}"; then fail "mpirun exited 0 after an eval-kv rank was killed"; fi
[[ ! -f kv_kill/results.json ]] || fail "eval-kv wrote results.json although a rank died"
before="$(count_cells)"
[[ ${before} -gt 0 && ${before} -lt 40 ]] || fail "the eval-kv kill did not land midway (${before} of 40 cells checkpointed)"
grep -qi "rank" kv_kill.err || fail "mpirun's failure report does not name the rank: $(head -3 kv_kill.err)"
echo "mpi_test: killed eval-kv rank pid ${VICTIM} with ${before} of 40 cells checkpointed"
if mpi 2 "${TAPPA}" "${KV[@]}" -o kv_kill > /dev/null 2> kv_norestart.err; then
  fail "eval-kv started over a killed run's checkpoints without --resume"
fi
mpi 4 "${TAPPA}" "${KV[@]}" -o kv_kill --resume > kv_resume.out 2> kv_resume.err
grep -q "resuming with ${before} of 40 cells" kv_resume.err || fail "the resume did not start from the checkpoints: $(head -3 kv_resume.err)"
why="$(same_kv kv_one kv_kill 2>&1)" || fail "resumed eval-kv differs from one process: ${why}"
echo "mpi_test: eval-kv resumed (4 ranks) after a killed rank (2 ranks): identical to one process"
echo "mpi_test: PASS"
