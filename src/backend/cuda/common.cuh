// Pieces every CUDA file of the backend shares: error checks, bfloat16 helpers, the device context.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>

namespace tappa::cuda {

using bf16 = __nv_bfloat16;
using f16 = __half;
// KV cache rows: fp16, as llama.cpp's default cache (three more mantissa bits than bf16; keys and
// values stay far inside its range).
using kv_t = __half;

// Throws tappa::Error naming the failed call, the file and line, and CUDA's message.
[[noreturn]] void fail(const char* what, const std::string& msg, const char* file, int line);

#define TAPPA_CUDA_CHECK(x)                                                                       \
  do {                                                                                            \
    const cudaError_t tappa_e_ = (x);                                                             \
    if (tappa_e_ != cudaSuccess) ::tappa::cuda::fail(#x, cudaGetErrorString(tappa_e_), __FILE__, __LINE__); \
  } while (0)
#define TAPPA_CUBLAS_CHECK(x)                                                                     \
  do {                                                                                            \
    const cublasStatus_t tappa_s_ = (x);                                                          \
    if (tappa_s_ != CUBLAS_STATUS_SUCCESS)                                                        \
      ::tappa::cuda::fail(#x, cublasGetStatusString(tappa_s_), __FILE__, __LINE__);               \
  } while (0)
// After every launch: a bad configuration is reported at the call that made it.
#define TAPPA_CUDA_LAUNCHED() TAPPA_CUDA_CHECK(cudaGetLastError())

// The device, its stream and library handles, and stream-ordered allocation. Shared (shared_ptr) by
// the backend and the caches it makes, which may outlive it by a little.
struct Context {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;

  Context();
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Stream-ordered (cudaMallocAsync on `stream`, from a pool that keeps freed memory): a free
  // takes effect after the work queued before it, so no call here waits for the device.
  void* alloc(size_t bytes);
  void free(void* p);
  void sync();
  // Queued-but-not-launched work that reads or writes cache memory (the backend batches the K/V
  // appends of a layer into one launch): caches call this before they touch their device memory.
  std::function<void()> flush;
  void before_cache_access() {
    if (flush) flush();
  }
};

// A device buffer that grows (stream-ordered) and never shrinks: kernel scratch.
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
  template <class T>
  T* get(Context& ctx, size_t n) {
    if (n * sizeof(T) > bytes) {
      if (p) ctx.free(p);
      bytes = n * sizeof(T) + n * sizeof(T) / 4;
      p = ctx.alloc(bytes);
    }
    return static_cast<T*>(p);
  }
  void release(Context& ctx) {
    if (p) ctx.free(p);
    p = nullptr;
    bytes = 0;
  }
};

// fp32 <-> bfloat16 on the host (round to nearest even), as the device's __float2bfloat16_rn.
inline uint16_t host_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>((u >> 16) | ((u & 0xFFFFu) ? 0x40u : 0u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float host_from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace tappa::cuda
