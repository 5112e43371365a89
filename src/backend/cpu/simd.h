// ISA selection and small SIMD helpers shared by the matmul kernels (private to backend/cpu).
// Tiers, chosen at compile time from the target flags:
//   TAPPA_X86_AVX2    AVX2 + FMA + F16C: 256-bit integer/float kernels
//   TAPPA_X86_VNNI256 additionally AVX512-VNNI + VL: vpdpbusd/vpdpwssd on 256-bit vectors
//   TAPPA_X86_GEMM512 AVX512 F/BW/VL/VNNI: the repacked 16-row GEMM kernel for prompt processing
// Without AVX2 everything falls back to portable scalar code.
#pragma once
#include "backend/cpu/isa.h"
#include <cstdint>

// GCC 12 reports false -W(maybe-)uninitialized warnings from inside the AVX-512 intrinsic headers
// (their _mm512_undefined_* helpers) wherever reductions are inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <cstring>

#include "quant/blocks.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TAPPA_X86_AVX2 1
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define TAPPA_X86_VNNI256 1
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define TAPPA_X86_GEMM512 1
#endif
#endif

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline uint16_t load_u16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

#if TAPPA_X86_AVX2

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float half_to_float_fast(uint16_t h) { return _cvtsh_ss(h); }

// acc + sum over groups of 4 of u8 x s8 products (u <= 128 and |s| <= 127 keep the 16-bit
// intermediate of the AVX2 form exact).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if TAPPA_X86_VNNI256
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// acc + pairwise int16 x int16 products summed into int32.
inline __m256i dot_s16(__m256i acc, __m256i a, __m256i b) {
#if TAPPA_X86_VNNI256
  return _mm256_dpwssd_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

// 16 packed nibbles -> 32 bytes: low nibbles (elements 0..15) then high nibbles (16..31).
inline __m256i unpack_nibbles16(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i w = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
  return _mm256_and_si256(w, _mm256_set1_epi8(0x0F));
}

#if TAPPA_X86_GEMM512
// 16 bytes from each of four places (four rows' blocks), row r in 128-bit lane r.
inline __m512i load_rows16(const uint8_t* p0, const uint8_t* p1, const uint8_t* p2, const uint8_t* p3) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p2)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p3)), 3);
}
#endif

#else

inline float half_to_float_fast(uint16_t h) { return quant::half_to_float(h); }

#endif

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
