#!/usr/bin/env bash
# One call on the H200 machine (issue #17): the CUDA tests, the speed figures of docs/PERFORMANCE.md
# and the PyTorch side-by-side, with prebuilt binaries. Run from a folder holding bin/ (tappa,
# tappa_tests built with -DTAPPA_CUDA=ON), lib/ (libraries the image lacks) and bench/ (this script,
# pytorch_baseline.py); logs go to $OUT (or ./out).
#
#   bench/cuda_h200.sh tests|speed|torch|model|all
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/lib:${LD_LIBRARY_PATH:-}"
# cuBLAS: the toolkit's, else the one PyTorch's wheels carry.
if ! ldconfig -p | grep -q libcublasLt.so.13; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 $(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null)/cu13/lib $(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null)/cublas/lib; do
    [ -e "$d/libcublasLt.so.13" ] && export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH" && break
  done
fi
B=bin/tappa
R8=(--backend cuda --random-weights llama-3.1-8b)
phase=${1:-all}

run() {  # name, timeout, command...
  local name=$1 t=$2; shift 2
  echo "=== $name: $*" | tee -a "$OUT/summary.log"
  local s=$SECONDS
  timeout "$t" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc $rc, $((SECONDS - s)) s" | tee -a "$OUT/summary.log"
  grep -E "^\| |KV cache held|\[cuda|FAILED|PASSED|Failure|Expected|actual|SKIPPED|rc |tokens_per_s|Error|error" "$OUT/$name.log" | head -80 | tee -a "$OUT/summary.log"
}

if [ "$phase" = tests ] || [ "$phase" = all ]; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,driver_version --format=csv | tee -a "$OUT/summary.log"
  ldd $B | grep -E "not found|cublas" | tee -a "$OUT/summary.log"
  run tests 240 bin/tappa_tests --gtest_filter='CudaBackend*:CudaEngine*' --gtest_color=no
fi
if [ "$phase" = speed ] || [ "$phase" = all ]; then
  run pp8k 120 $B bench "${R8[@]}" -p 8192 -b 8192 -n 0 -r 3
  run tg4k 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  # The other paper shape, decode only (Qwen2.5-7B: 28 layers, 4 KV heads).
  run tg4k_qwen 150 $B bench --backend cuda --random-weights qwen2.5-7b -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  run pp32k 120 $B bench "${R8[@]}" -p 32768 -b 32768 -n 0 -r 2
  # 32K context, full cache against TAPPA budget 1024, at batch 1 and at the largest batch that fits
  # about 104 GiB of KV cache each way (26 x 4.0 GiB full, 800 x ~0.13 GiB compressed).
  run tg32k_full 150 $B bench "${R8[@]}" -d 32768 -b 8192 -p 0 -n 32 -r 2 --share-depth --batch 1,8,26
  KV=(--kv tappa --budget 1024 --no-decode-evict)
  run tg32k_tappa 150 $B bench "${R8[@]}" -d 32768 -b 8192 -p 0 -n 32 -r 2 --share-depth --batch 1,64 "${KV[@]}"
  run tg32k_tappa800 200 $B bench "${R8[@]}" -d 32768 -b 8192 -p 0 -n 32 -r 2 --share-depth --batch 800 "${KV[@]}"
fi
if [ "$phase" = profile ]; then  # GPU time per op (TAPPA_CUDA_PROFILE), one shape at a time
  export TAPPA_CUDA_PROFILE=1
  run prof_tg1 120 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 2 --share-depth --batch 1
  run prof_tg16 120 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 2 --share-depth --batch 16
  run prof_pp8k 120 $B bench "${R8[@]}" -p 8192 -b 8192 -n 0 -r 2
  unset TAPPA_CUDA_PROFILE
fi
if [ "$phase" = torch ] || [ "$phase" = all ]; then
  export PYTHONUNBUFFERED=1
  run torch 400 python3 bench/pytorch_baseline.py
fi
if [ "$phase" = model ]; then
  run model_tests 240 env TAPPA_MODEL="$MODEL" bin/tappa_tests --gtest_filter='CudaEngine.DefaultModel*' --gtest_color=no
  run model_bench 120 $B bench --backend cuda -m "$MODEL" -p 512 -n 128 -r 3
fi
