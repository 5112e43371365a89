// The pseudo-random numbers of random-weight models (Model::random): one pure function of
// (seed, element index), written so that the host (model/random_model.cpp, for backends that read
// host memory) and a GPU (backend/cuda, which makes the 16 GB of an 8B model in its own memory) draw
// bit-identical values. Only integer arithmetic and one fp32 multiplication, rounded to bfloat16 by
// hand (round to nearest even), so no compiler or math library can change a bit.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define TAPPA_HD __host__ __device__ __forceinline__
#else
#define TAPPA_HD inline
#endif

namespace tappa::random_weights {

TAPPA_HD uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform on (-2^23 .. 2^23) * step: `step` = half-width / 2^23 (a power-of-two multiple is exact).
TAPPA_HD float value(uint64_t seed, uint64_t i, float step) {
  const uint64_t h = mix(seed * 0xD1B54A32D192ED03ull ^ mix(i));
  const int32_t k = static_cast<int32_t>((h >> 40) & 0xFFFFFFu) - 0x800000;
  return static_cast<float>(k) * step;
}

// fp32 -> bfloat16 bits, round to nearest even (finite inputs).
TAPPA_HD uint16_t to_bf16_bits(float f) {
  uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(f);
#else
  __builtin_memcpy(&u, &f, 4);
#endif
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Element i of a random matrix, as stored (bfloat16 bits).
TAPPA_HD uint16_t weight_bits(uint64_t seed, uint64_t i, float step) { return to_bf16_bits(value(seed, i, step)); }

}  // namespace tappa::random_weights
