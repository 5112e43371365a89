// The CPU backend: the quantized GEMV/GEMM kernels, the llama.cpp-ordered attention and the
// elementwise ops of backend/cpu, run on this backend's own thread pool with its own scratch. It owns
// the work split of every op (rows over threads; attention tasks from a shared counter), so the model
// code above it holds no loop.
#pragma once
#include "backend/cpu/isa.h"
#include <memory>

#include "backend/backend.h"

namespace tappa::backend {
TAPPA_ISA_BEGIN

std::unique_ptr<Backend> make_cpu_backend(int n_threads);

TAPPA_ISA_END
}  // namespace tappa::backend
