// exp(x) for softmax and SiLU, rounded exactly as llama.cpp's CPU backend rounds it.
//
// ggml evaluates exp in its vectorised softmax and SiLU with a range reduction plus a degree-5
// polynomial (the single-precision expf of Arm's optimized-routines: x = n ln2 + b, |b| <= ln2/2,
// exp(b) ~ 1 + c1 b + ... + c5 b^5, result scaled by 2^n), not with libm. The result differs
// from expf in the last bit for some inputs; every such difference moves an 8-bit activation
// rounding somewhere in the next matmul, and 30 layers turn that into a different token now and
// then. Using the same reduction constants, coefficients and fused-operation order gives
// bit-identical values, which is what lets tappa's logits match llama.cpp's (docs/ORACLE.md).
// The maximum error of the approximation is about 1.5 ulp, far below what softmax needs.
#pragma once
#include "backend/cpu/isa.h"
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace tappa::cpu {
TAPPA_ISA_BEGIN

namespace exp_approx_detail {
constexpr float kShift = 0x1.8p23f;      // adding it rounds to an integer in the low mantissa bits
constexpr float kLog2e = 0x1.715476p+0f;
constexpr float kLn2Hi = 0x1.62e4p-1f;   // ln2 split in two so n*ln2 is subtracted without error
constexpr float kLn2Lo = 0x1.7f7d1cp-20f;
constexpr float kC1 = 0x1.ffffecp-1f, kC2 = 0x1.fffdb6p-2f, kC3 = 0x1.555e66p-3f;
constexpr float kC4 = 0x1.573e2ep-5f, kC5 = 0x1.0e4020p-7f;
}  // namespace exp_approx_detail

// Scalar form: the same operations one lane at a time (std::fma is a single rounding, like the
// vector FMA; ldexp is exact or correctly rounded like vscalefps).
inline float exp_approx(float x) {
  using namespace exp_approx_detail;
  const float z = std::fma(x, kLog2e, kShift);
  const float n = z - kShift;
  if (std::isnan(n)) return n;
  const float b = std::fma(-n, kLn2Lo, std::fma(-n, kLn2Hi, x));
  if (std::fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(kC5, b, kC4), u, std::fma(kC3, b, kC2)), u, std::fma(kC1, b, 1.0f));
  return std::ldexp(j, static_cast<int>(n));
}

#if defined(__AVX512F__)
inline __m512 exp_approx16(__m512 x) {
  using namespace exp_approx_detail;
  const __m512 shift = _mm512_set1_ps(kShift);
  const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(kLog2e), shift);
  const __m512 n = _mm512_sub_ps(z, shift);
  const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x));
  const __mmask16 out_of_range = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0f), _CMP_GT_OQ);
  const __m512 u = _mm512_mul_ps(b, b);
  const __m512 hi = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(kC5), b, _mm512_set1_ps(kC4)), u,
                                    _mm512_fmadd_ps(_mm512_set1_ps(kC3), b, _mm512_set1_ps(kC2)));
  const __m512 j = _mm512_fmadd_ps(hi, u, _mm512_fmadd_ps(_mm512_set1_ps(kC1), b, _mm512_set1_ps(1.0f)));
  const __m512 r = _mm512_scalef_ps(j, n);
  if (out_of_range == 0) return r;
  const __m512 big = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                                          _mm512_set1_ps(INFINITY), _mm512_setzero_ps());
  return _mm512_mask_blend_ps(out_of_range, r, big);
}
#elif defined(__AVX2__) && defined(__FMA__)
// Eight lanes of exp_approx, bit for bit (AVX2 has no vscalefps): 2^n is written into the exponent
// field, which is exact for |n| <= 126, and then j·2^n is the one correctly rounded product that
// ldexp gives as well. A vector with any other lane (a weight below 2^-126, -inf from a mask, NaN)
// takes the scalar form lane by lane, so every input gets exp_approx's value. Without it the AVX2
// variant called ldexp per value: ~7 % of SmolLM2's prompt time in libm's scalbnf.
inline __m256 exp_approx8(__m256 x) {
  using namespace exp_approx_detail;
  const __m256 shift = _mm256_set1_ps(kShift);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), shift);
  const __m256 n = _mm256_sub_ps(z, shift);
  const __m256 in_range = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n), _mm256_set1_ps(126.0f), _CMP_LE_OQ);
  if (_mm256_movemask_ps(in_range) != 0xFF) {
    alignas(32) float v[8];
    _mm256_store_ps(v, x);
    for (float& e : v) e = exp_approx(e);
    return _mm256_load_ps(v);
  }
  const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 hi = _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(kC5), b, _mm256_set1_ps(kC4)), u,
                                    _mm256_fmadd_ps(_mm256_set1_ps(kC3), b, _mm256_set1_ps(kC2)));
  const __m256 j = _mm256_fmadd_ps(hi, u, _mm256_fmadd_ps(_mm256_set1_ps(kC1), b, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(j, _mm256_castsi256_ps(e));
}
#endif

TAPPA_ISA_END
}  // namespace tappa::cpu
