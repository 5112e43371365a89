#!/usr/bin/env bash
# Configures and builds tappa (Release) into build/. Extra arguments go to cmake's configure step.
# Where nvcc is installed (on PATH or in /usr/local/cuda/bin) the CUDA backend is built too
# (-DTAPPA_CUDA=ON; its tests skip without a GPU); TAPPA_CUDA=OFF in the environment turns that off.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=()
if [ "${TAPPA_CUDA:-}" != OFF ]; then
  if command -v nvcc >/dev/null 2>&1; then
    cuda=(-DTAPPA_CUDA=ON)
  elif [ -x /usr/local/cuda/bin/nvcc ]; then
    cuda=(-DTAPPA_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  fi
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTAPPA_MPI=OFF "${cuda[@]}" "$@" >/dev/null
cmake --build build -j"$(nproc)"
