#!/usr/bin/env bash
# One H200 call (issue #17, decode attention A/B): builds the tree S (a copy of the checkout carried
# beside build-h200deps from bench/h200_collect_deps.sh) with bench/h200_build.sh, then runs the CUDA
# tests and the decode benches of docs/PERFORMANCE.md with each kernel choice. Logs to $OUT.
#   OUT=... S=copy PHASES="tests ab qwen" bench/h200_decode_ab.sh   (phases: tests tests_pdl ab pdl rpw rows2 pdl2 qwen h17 ncu)
set -uo pipefail
S=${S:-build-cuda2src}
R=/tmp/r; mkdir -p $R/bin $R/lib $R/bench
if [ ! -x /tmp/b/tappa ] || [ "${REBUILD:-1}" = 1 ]; then
  bash $S/bench/h200_build.sh build-h200deps $S /tmp/b -DTAPPA_CUDA=ON -DTAPPA_BUILD_BENCH=OFF -DTAPPA_NATIVE=ON > $OUT/build.txt 2>&1
  echo "build rc $?"; tail -5 $OUT/build.txt
fi
cp /tmp/b/tappa /tmp/b/tappa_tests $R/bin/ && cp $S/bench/*.sh $S/bench/*.py $R/bench/ && cp -aL build-h200deps/rt/* $R/lib/ 2>/dev/null
cd $R
export OUT
source <(sed -n '/^OUT=/,/^}/p' bench/cuda_h200.sh | sed '1,2d')  # LD paths + run()
B=bin/tappa; R8=(--backend cuda --random-weights llama-3.1-8b)
for ph in ${PHASES:-tests ab}; do
case $ph in
tests) run tests 300 bin/tappa_tests --gtest_filter='CudaBackend*:CudaEngine*' --gtest_color=no ;;
ab)
  run tg4k_new 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  TAPPA_CUDA_DECODE_KERNEL=head run tg4k_head 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  TAPPA_CUDA_DECODE_CHUNK=256 run tg4k_c256 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
  TAPPA_CUDA_DECODE_CHUNK=64 run tg4k_c64 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
  TAPPA_CUDA_PROFILE=1 TAPPA_CUDA_GRAPHS=0 run prof_tg1 120 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 2 --share-depth --batch 1
  grep "cuda profile" $OUT/prof_tg1.log | head -45 ;;
pdl)  # programmatic dependent launch (common.cuh; off by default) against the same binary without it
  run tg4k_def 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  TAPPA_CUDA_PDL=1 run tg4k_pdl1 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  run pp8k_def 120 $B bench "${R8[@]}" -p 8192 -b 8192 -n 0 -r 3
  TAPPA_CUDA_PDL=1 run pp8k_pdl1 120 $B bench "${R8[@]}" -p 8192 -b 8192 -n 0 -r 3 ;;
rpw)  # GEMV weight rows per warp at one activation row (gemv.cu): the default against forced choices
  TAPPA_CUDA_GRAPH_STATS=1 run tg4k_rdef 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  for r in 2 8; do TAPPA_CUDA_GEMV_R=$r run tg4k_r$r 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1; done
  TAPPA_CUDA_GEMV_GLU_R=4 run tg4k_glu4 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
  TAPPA_CUDA_GEMV_R=8 TAPPA_CUDA_GEMV_GLU_R=4 run tg4k_r8glu4 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
  TAPPA_CUDA_PDL=1 run tg4k_pdl1 150 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
  TAPPA_CUDA_PROFILE=1 TAPPA_CUDA_GRAPHS=0 run prof_rdef 120 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 2 --share-depth --batch 1
  run tg4k_qwen 150 $B bench --backend cuda --random-weights qwen2.5-7b -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16 ;;
rows2)  # the same, both shapes: the default against GLU 2 features per warp and 2 rows per warp
  for m in llama-3.1-8b qwen2.5-7b; do
    run tg4k_${m}_def 150 $B bench --backend cuda --random-weights $m -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
    TAPPA_CUDA_GEMV_GLU_R=4 run tg4k_${m}_glu4 150 $B bench --backend cuda --random-weights $m -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
    TAPPA_CUDA_GEMV_R=2 run tg4k_${m}_r2 150 $B bench --backend cuda --random-weights $m -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
    TAPPA_CUDA_PDL=1 run tg4k_${m}_pdl1 150 $B bench --backend cuda --random-weights $m -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
  done ;;
pdl2)  # PDL on and off, interleaved twice, both shapes, batch 1
  for i in 1 2; do for m in llama-3.1-8b qwen2.5-7b; do for p in 1 0; do
    TAPPA_CUDA_PDL=$p run tg4k_${m}_pdl${p}_$i 150 $B bench --backend cuda --random-weights $m -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1
  done; done; done ;;
tests_pdl) TAPPA_CUDA_PDL=1 run tests_pdl 300 bin/tappa_tests --gtest_filter='CudaBackend*:CudaEngine*' --gtest_color=no ;;
qwen) run tg4k_qwen 150 $B bench --backend cuda --random-weights qwen2.5-7b -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16 ;;
h17)  # L2 prefetch of the o weights during the decode attention, the fused combine, the GEMV's L2
      # lookahead and its spread norm output (2026-12-07): all on, each one off, all off (explicit switches)
  NEW=(TAPPA_CUDA_DECODE_COMBINE=fused TAPPA_CUDA_PREFETCH_MB=32 TAPPA_CUDA_GEMV_PREFETCH=1 TAPPA_CUDA_GEMV_NORM_OUT=spread)
  OLD=(TAPPA_CUDA_DECODE_COMBINE=separate TAPPA_CUDA_PREFETCH_MB=0 TAPPA_CUDA_GEMV_PREFETCH=0 TAPPA_CUDA_GEMV_NORM_OUT=warp0)
  T1=(-d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1)
  run tg4k_new 150 env "${NEW[@]}" $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  run tg4k_old 150 env "${OLD[@]}" $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 3 --share-depth --batch 1,16
  run tg4k_new_2 150 env "${NEW[@]}" $B bench "${R8[@]}" "${T1[@]}"
  run tg4k_old_2 150 env "${OLD[@]}" $B bench "${R8[@]}" "${T1[@]}"
  run tg4k_sepcomb 150 env "${NEW[@]}" TAPPA_CUDA_DECODE_COMBINE=separate $B bench "${R8[@]}" "${T1[@]}"
  run tg4k_pf0 150 env "${NEW[@]}" TAPPA_CUDA_PREFETCH_MB=0 $B bench "${R8[@]}" "${T1[@]}"
  run tg4k_gpf0 150 env "${NEW[@]}" TAPPA_CUDA_GEMV_PREFETCH=0 $B bench "${R8[@]}" "${T1[@]}"
  run tg4k_nw0 150 env "${NEW[@]}" TAPPA_CUDA_GEMV_NORM_OUT=warp0 $B bench "${R8[@]}" "${T1[@]}"
  run prof_new 120 env "${NEW[@]}" TAPPA_CUDA_PROFILE=1 TAPPA_CUDA_GRAPHS=0 $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 64 -r 2 --share-depth --batch 1
  [ -n "${QWEN:-}" ] && for v in NEW OLD; do eval "E=(\"\${$v[@]}\")"; run tg4k_qwen_$v 150 env "${E[@]}" $B bench --backend cuda --random-weights qwen2.5-7b "${T1[@]}"; done ;;
ncu)  # per-kernel GPU time of decode steps (graphs off), no clock control
  N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  TAPPA_CUDA_GRAPHS=0 timeout 150 $N --clock-control none --metrics gpu__time_duration.sum --csv \
    -k regex:"gemv_kernel|group_decode|combine_kernel|rope_append" --launch-skip 400 --launch-count 48 \
    $B bench "${R8[@]}" -d 4096 -b 4096 -p 0 -n 4 -r 1 --share-depth --batch 1 > $OUT/ncu.csv 2> $OUT/ncu.err
  echo "ncu rc $?"; tail -3 $OUT/ncu.err
  python3 - $OUT/ncu.csv <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: print("ncu: no rows"); sys.exit()
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value")
for r in rows[1:]: print("%10s ns  %s" % (r[vi], r[ki][:110]))
PY
  ;;
esac
done
