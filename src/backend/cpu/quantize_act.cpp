#include "backend/cpu/quantize_act.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/quant.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // false positives from the AVX-512 headers (GCC 12)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define TAPPA_ACT_AVX512 1
#endif

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

namespace {

struct Out {
  int8_t* q;
  float* d;
  float* s;
  int32_t* isum;
  int16_t* bsum;
  float* s1;
};

Out out_of(uint8_t* rec, int64_t cols) {
  const size_t nb = static_cast<size_t>(cols / 32);
  Out o;
  o.q = reinterpret_cast<int8_t*>(rec);
  o.d = reinterpret_cast<float*>(rec + cols);
  o.s = o.d + nb;
  o.isum = reinterpret_cast<int32_t*>(o.s + nb);
  o.bsum = reinterpret_cast<int16_t*>(o.isum + nb);
  o.s1 = reinterpret_cast<float*>(o.bsum + cols / 16);
  return o;
}

// Fills isum / bsum / s from q and d.
[[maybe_unused]] void finish_sums(const Out& o, int64_t cols) {
  for (int64_t g = 0; g < cols / 16; ++g) {
    int s = 0;
    for (int l = 0; l < 16; ++l) s += o.q[16 * g + l];
    o.bsum[g] = static_cast<int16_t>(s);
  }
  for (int64_t b = 0; b < cols / 32; ++b) {
    o.isum[b] = o.bsum[2 * b] + o.bsum[2 * b + 1];
    o.s[b] = o.d[b] * static_cast<float>(o.isum[b]);
  }
}

#if TAPPA_ACT_AVX512

// Horizontal reductions of 16 vectors at once: lane i of the result reduces v[i]. A tree of lane
// permutes halves the partial width at each level (15 steps for 16 vectors instead of 4 per vector).
inline __m512 permute2(__m512 a, __m512i idx, __m512 b) { return _mm512_permutex2var_ps(a, idx, b); }
inline __m512i permute2(__m512i a, __m512i idx, __m512i b) { return _mm512_permutex2var_epi32(a, idx, b); }

template <class V, class Op>
[[gnu::always_inline]] inline V reduce16x16(V* v, Op op) {
  const __m512i l1a = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
  const __m512i l1b = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const __m512i l2a = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i l2b = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  const __m512i l3a = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
  const __m512i l3b = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  const __m512i l4a = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i l4b = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const auto step = [&](V a, V b, __m512i ia, __m512i ib) { return op(permute2(a, ia, b), permute2(a, ib, b)); };
  for (int i = 0; i < 8; ++i) v[i] = step(v[2 * i], v[2 * i + 1], l1a, l1b);
  for (int i = 0; i < 4; ++i) v[i] = step(v[2 * i], v[2 * i + 1], l2a, l2b);
  for (int i = 0; i < 2; ++i) v[i] = step(v[2 * i], v[2 * i + 1], l3a, l3b);
  return step(v[0], v[1], l4a, l4b);
}

struct AddI32 {
  __m512i operator()(__m512i a, __m512i b) const { return _mm512_add_epi32(a, b); }
};
struct MaxPs {
  __m512 operator()(__m512 a, __m512 b) const { return _mm512_max_ps(a, b); }
};

// Stores the 32 group sums of 16 blocks (even[i], odd[i] = first and second half of block i) as int16
// bsum[0..32), the block sums isum[0..16) and s = d * isum.
inline void store_sums16(__m512i even, __m512i odd, __m512 d, __m512 d_f32, int16_t* bsum, int32_t* isum, float* s,
                         float* s1) {
  const __m512i lo = _mm512_permutex2var_epi32(even, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), odd);
  const __m512i hi = _mm512_permutex2var_epi32(even, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), odd);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(bsum), _mm512_cvtepi32_epi16(lo));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(bsum + 16), _mm512_cvtepi32_epi16(hi));
  const __m512i tot = _mm512_add_epi32(even, odd);
  _mm512_storeu_si512(isum, tot);
  _mm512_storeu_ps(s, _mm512_mul_ps(d, _mm512_cvtepi32_ps(tot)));
  const __m512 s81 = _mm512_mul_ps(d_f32, _mm512_cvtepi32_ps(tot));
  _mm512_storeu_ps(s1, _mm512_cvtph_ps(_mm512_cvtps_ph(s81, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
}

void quantize_b32(const float* x, int64_t cols, const Out& o) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const int64_t nb = cols / 32;
  int64_t b = 0;
  // 16 blocks at a time: scales computed as vectors, sums reduced by reduce16x16.
  for (; b + 16 <= nb; b += 16) {
    const float* xb = x + 32 * b;
    __m512 am[16];
    for (int j = 0; j < 16; ++j) {
      am[j] = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(xb + 32 * j)),
                            _mm512_andnot_ps(sign, _mm512_loadu_ps(xb + 32 * j + 16)));
    }
    const __m512 amax = reduce16x16(am, MaxPs{});
    const __m512 d = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
    // ggml: id = 127 / amax (not 1 / d: the two differ in the last bit and flip some roundings).
    const __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_NEQ_OQ), _mm512_set1_ps(127.0f), amax);
    const __m512 d16 = _mm512_cvtph_ps(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    alignas(64) float ids[16];
    _mm512_store_ps(ids, id);
    _mm512_storeu_ps(o.d + b, d16);
    __m512i s0[16], s1[16];
    for (int j = 0; j < 16; ++j) {
      const __m512 vid = _mm512_set1_ps(ids[j]);
      const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 32 * j), vid));
      const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 32 * j + 16), vid));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q + 32 * (b + j)), _mm512_cvtepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q + 32 * (b + j) + 16), _mm512_cvtepi32_epi8(q1));
      s0[j] = q0;
      s1[j] = q1;
    }
    store_sums16(reduce16x16(s0, AddI32{}), reduce16x16(s1, AddI32{}), d16, d, o.bsum + 2 * b, o.isum + b, o.s + b,
                 o.s1 + b);
  }
  for (; b < nb; ++b) {
    const __m512 x0 = _mm512_loadu_ps(x + 32 * b);
    const __m512 x1 = _mm512_loadu_ps(x + 32 * b + 16);
    const __m512 am = _mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1));
    const float amax = _mm512_reduce_max_ps(am);
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const float d16 = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q + 32 * b), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
    const int s0 = _mm512_reduce_add_epi32(q0), s1 = _mm512_reduce_add_epi32(q1);
    o.bsum[2 * b] = static_cast<int16_t>(s0);
    o.bsum[2 * b + 1] = static_cast<int16_t>(s1);
    o.isum[b] = s0 + s1;
    o.d[b] = d16;
    o.s[b] = d16 * static_cast<float>(s0 + s1);
    o.s1[b] = _cvtsh_ss(_cvtss_sh(d * static_cast<float>(s0 + s1), _MM_FROUND_TO_NEAREST_INT));
  }
}

void quantize_k256(const float* x, int64_t cols, const Out& o, bool positive_wins) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t sb = 0; sb < cols / 256; ++sb, x += 256) {
    __m512 am = _mm512_setzero_ps();
    for (int j = 0; j < 16; ++j) am = _mm512_max_ps(am, _mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * j)));
    const float amax = _mm512_reduce_max_ps(am);
    int8_t* q = o.q + 256 * sb;
    if (amax == 0.0f) {
      std::memset(q, 0, 256);
      for (int b = 0; b < 8; ++b) {
        o.d[8 * sb + b] = 0.0f;
        o.s[8 * sb + b] = 0.0f;
        o.isum[8 * sb + b] = 0;
        o.bsum[16 * sb + 2 * b] = 0;
        o.bsum[16 * sb + 2 * b + 1] = 0;
      }
      continue;
    }
    // The first element of largest magnitude decides the sign of the scale (group rule: +amax if
    // it occurs).
    float vmax = 0.0f;
    const __m512 vam = _mm512_set1_ps(amax);
    if (positive_wins) {
      vmax = -amax;
      for (int j = 0; j < 16; ++j) {
        if (_mm512_cmp_ps_mask(_mm512_loadu_ps(x + 16 * j), vam, _CMP_EQ_OQ)) {
          vmax = amax;
          break;
        }
      }
    }
    for (int j = 0; j < 16 && !positive_wins; ++j) {
      const __m512 v = _mm512_loadu_ps(x + 16 * j);
      const __mmask16 k = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, v), vam, _CMP_EQ_OQ);
      if (k) {
        vmax = x[16 * j + __builtin_ctz(k)];
        break;
      }
    }
    const float iscale = -127.0f / vmax;
    const float d = 1.0f / iscale;
    const __m512 vis = _mm512_set1_ps(iscale);
    const __m512i lim = _mm512_set1_epi32(127);
    __m512i qs[16];
    for (int g = 0; g < 16; ++g) {
      qs[g] = _mm512_min_epi32(lim, _mm512_cvtps_epi32(_mm512_mul_ps(vis, _mm512_loadu_ps(x + 16 * g))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * g), _mm512_cvtepi32_epi8(qs[g]));
    }
    const __m512i g16 = reduce16x16(qs, AddI32{});  // lane g: sum of group g
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.bsum + 16 * sb), _mm512_cvtepi32_epi16(g16));
    // Lane 2b + lane 2b+1 into the low half of each 64-bit lane, then keep the low halves: block sums.
    const __m256i pairs = _mm512_cvtepi64_epi32(_mm512_add_epi32(g16, _mm512_srli_epi64(g16, 32)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.isum + 8 * sb), pairs);
    _mm256_storeu_ps(o.d + 8 * sb, _mm256_set1_ps(d));
    _mm256_storeu_ps(o.s + 8 * sb, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(pairs)));
  }
}

#else

void quantize_b32(const float* x, int64_t cols, const Out& o) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    o.d[b] = quant::fp16_to_fp32(quant::fp32_to_fp16(d));
    o.s1[b] = d;  // unrounded scale, turned into the Q8_1 sum below
    for (int j = 0; j < 32; ++j) o.q[32 * b + j] = static_cast<int8_t>(std::nearbyint(x[32 * b + j] * id));
  }
  finish_sums(o, cols);
  for (int64_t b = 0; b < cols / 32; ++b)
    o.s1[b] = quant::fp16_to_fp32(quant::fp32_to_fp16(o.s1[b] * static_cast<float>(o.isum[b])));
}

void quantize_k256(const float* x, int64_t cols, const Out& o, bool positive_wins) {
  for (int64_t sb = 0; sb < cols / 256; ++sb, x += 256) {
    float amax = 0.0f, vmax = 0.0f;
    for (int j = 0; j < 256; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    }
    if (positive_wins && amax != 0.0f) {
      for (int j = 0; j < 256; ++j) {
        if (x[j] == amax) vmax = amax;
      }
    }
    int8_t* q = o.q + 256 * sb;
    float d = 0.0f;
    if (amax == 0.0f) {
      std::memset(q, 0, 256);
    } else {
      const float iscale = -127.0f / vmax;
      for (int j = 0; j < 256; ++j) q[j] = static_cast<int8_t>(std::min(127, static_cast<int>(std::nearbyint(iscale * x[j]))));
      d = 1.0f / iscale;
    }
    for (int b = 0; b < 8; ++b) o.d[8 * sb + b] = d;
  }
  finish_sums(o, cols);
}

#endif

}  // namespace

void quantize_activation(ActKind kind, const float* x, int64_t cols, uint8_t* record) {
  const Out o = out_of(record, cols);
  if (kind == ActKind::B32) {
    quantize_b32(x, cols, o);
  } else {
    quantize_k256(x, cols, o, false);
  }
}

void quantize_activation_k256_group(const float* x, int64_t cols, uint8_t* record) {
  quantize_k256(x, cols, out_of(record, cols), true);
}

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
