// The CUDA backend (issue #17): the ops of backend.h on an NVIDIA GPU. Weights are copied to device
// memory once (prepare_weights: dequantized to bfloat16; random-weight models are drawn on the device),
// activations stay fp32 matrices in device memory (the interface's Mat), products accumulate in
// fp32, KV caches are bfloat16 lists in device memory (cuda_kv_cache.cuh). See docs/CUDA.md.
// Built only with -DTAPPA_CUDA=ON (cmake/cuda.cmake).
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"

namespace tappa::backend {

// The first CUDA device. Throws tappa::Error (one line) when none can be used, saying why (no
// driver, no device, a device older than the kernels' architecture).
std::unique_ptr<Backend> make_cuda_backend();

// "" when a CUDA device can be used, else why not (for tests that skip).
std::string cuda_unavailable_reason();

}  // namespace tappa::backend
