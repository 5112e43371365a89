// Row dot products for the K-quants (Q4_K, Q5_K, Q6_K) against K256-quantized activations (one scale
// da per 256 elements, as Q8_K).
//
// Q4_K / Q5_K super-block: sum_j [ d*da * sc_j * sum_{i in j}(q_i a_i) - dmin*da * m_j * sum_{i in j} a_i ]
// Q6_K super-block:        d*da * sum_j sc_j * ( sum_{i in j}(q_i a_i) - 32 * sum_{i in j} a_i )
// with q unsigned (0..15, 0..31, 0..63). The byte products go through vpmaddubsw (16-bit pair sums,
// which cannot saturate for these ranges) and the sub-block scales are applied with vpmaddwd /
// vpdpwssd, so everything up to the super-block stays in exact 32-bit integers.
#include <type_traits>

#include "backend/cpu/simd.h"
#include "backend/cpu/vec_dot.h"
#include "quant/blocks.h"

namespace tappa::cpu::detail {

using quant::BlockQ4_K;
using quant::BlockQ5_K;
using quant::BlockQ6_K;

namespace {

// sum_j m_j * (sum of the activation codes of sub-block j)
inline int min_term(const uint8_t m[8], const int32_t* isum) {
  int s = 0;
  for (int j = 0; j < 8; ++j) s += m[j] * isum[j];
  return s;
}

inline int q6_offset_term(const int8_t* sc, const int16_t* bsum) {
  int s = 0;
  for (int j = 0; j < 16; ++j) s += sc[j] * bsum[j];
  return 32 * s;
}

}  // namespace

#if TAPPA_X86_GEMM512

// AVX-512 VNNI versions: 64 codes per vector, one vpdpbusd per 64 codes, sub-block scales applied in
// float through a lane permute, scales and mins unpacked with 32-bit word operations.
namespace {

// The eight 6-bit scales (bytes 0..7) and mins (bytes 0..7) of a Q4_K / Q5_K super-block.
inline void scales_mins_k4(const uint8_t* s, uint64_t& sc, uint64_t& mn) {
  const uint32_t u0 = load_u32(s), u1 = load_u32(s + 4), u2 = load_u32(s + 8);
  const uint32_t sc_lo = u0 & 0x3F3F3F3Fu, mn_lo = u1 & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (u2 & 0x0F0F0F0Fu) | ((u0 >> 2) & 0x30303030u);
  const uint32_t mn_hi = ((u2 >> 4) & 0x0F0F0F0Fu) | ((u1 >> 2) & 0x30303030u);
  sc = (static_cast<uint64_t>(sc_hi) << 32) | sc_lo;
  mn = (static_cast<uint64_t>(mn_hi) << 32) | mn_lo;
}

inline __m512i idx_pair(int j) {  // lanes 0..7 <- j, lanes 8..15 <- j + 1
  return _mm512_setr_epi32(j, j, j, j, j, j, j, j, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1);
}

template <bool kFive>
float dot_k45_512(const uint8_t* w, const ActRow& a, int64_t cols) {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  const auto* x = reinterpret_cast<const Block*>(w);
  const __m512i m4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
  const __m512i p01 = idx_pair(0), p23 = idx_pair(2), p45 = idx_pair(4), p67 = idx_pair(6);
  __m512 acc = _mm512_setzero_ps();
  __m128 mins = _mm_setzero_ps();
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    uint64_t sc8, mn8;
    scales_mins_k4(x[i].scales, sc8, mn8);
    const __m256 scf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(sc8)))),
                                     _mm256_set1_ps(half_to_float_fast(x[i].d) * da));
    const __m512 scz = _mm512_castps256_ps512(scf);
    // Min term: sum_j m_j * (sum of the activation codes of sub-block j), in 16-bit pairs.
    const __m128i isum16 = _mm_packs_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.isum + 8 * i)),
                                           _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.isum + 8 * i + 4)));
    const __m128i mprod = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(mn8))), isum16);
    mins = _mm_fmadd_ps(_mm_cvtepi32_ps(mprod), _mm_set1_ps(half_to_float_fast(x[i].dmin) * da), mins);

    const int8_t* aq = a.q + 256 * i;
    __m512i hb;
    if constexpr (kFive) hb = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh)));
    for (int h = 0; h < 2; ++h) {
      const __m512i z = _mm512_loadu_si512(x[i].qs + 64 * h);
      const __m512i lo = _mm512_and_si512(z, m4);                         // sub-blocks 4h, 4h+2
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);  // sub-blocks 4h+1, 4h+3
      __m512i wa = _mm512_shuffle_i64x2(lo, hi, 0x44);                    // 4h | 4h+1
      __m512i wb = _mm512_shuffle_i64x2(lo, hi, 0xEE);                    // 4h+2 | 4h+3
      if constexpr (kFive) {
        const int j = 4 * h;
        const __m512i sa = _mm512_setr_epi64(j, j, j, j, j + 1, j + 1, j + 1, j + 1);
        const __m512i sb = _mm512_setr_epi64(j + 2, j + 2, j + 2, j + 2, j + 3, j + 3, j + 3, j + 3);
        wa = _mm512_or_si512(wa, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(hb, sa), one), 4));
        wb = _mm512_or_si512(wb, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(hb, sb), one), 4));
      }
      const __m512i sa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wa, _mm512_loadu_si512(aq + 128 * h));
      const __m512i sb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wb, _mm512_loadu_si512(aq + 128 * h + 64));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sa), _mm512_permutexvar_ps(h ? p45 : p01, scz), acc);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sb), _mm512_permutexvar_ps(h ? p67 : p23, scz), acc);
    }
  }
  float m[4];
  _mm_storeu_ps(m, mins);
  return _mm512_reduce_add_ps(acc) - (m[0] + m[1] + m[2] + m[3]);
}

}  // namespace

float vec_dot_q4_k(const uint8_t* w, const ActRow& a, int64_t cols) { return dot_k45_512<false>(w, a, cols); }
float vec_dot_q5_k(const uint8_t* w, const ActRow& a, int64_t cols) { return dot_k45_512<true>(w, a, cols); }

float vec_dot_q6_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
  const __m512i sh_a = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2), sh_b = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m512i four = _mm512_set1_epi32(4);
  __m512 acc = _mm512_setzero_ps();
  __m256 corr = _mm256_setzero_ps();
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float dd = half_to_float_fast(x[i].d) * a.d[8 * i];
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m512 scz = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8)), _mm512_set1_ps(dd));
    // Offset term: -32 * sum_j sc_j * (sum of the activation codes of sub-block j).
    const __m256i cp = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsum + 16 * i)));
    corr = _mm256_fmadd_ps(_mm256_cvtepi32_ps(cp), _mm256_set1_ps(dd), corr);
    const int8_t* aq = a.q + 256 * i;
    __m512i idx = spread;
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(x[i].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh + 32 * h)));
      const __m512i wa = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                         _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh_a), m2), 4));
      const __m512i wb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                         _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh_b), m2), 4));
      const __m512i sa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wa, _mm512_loadu_si512(aq + 128 * h));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sa), _mm512_permutexvar_ps(idx, scz), acc);
      idx = _mm512_add_epi32(idx, four);
      const __m512i sb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wb, _mm512_loadu_si512(aq + 128 * h + 64));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sb), _mm512_permutexvar_ps(idx, scz), acc);
      idx = _mm512_add_epi32(idx, four);
    }
  }
  return _mm512_reduce_add_ps(acc) - 32.0f * hsum256(corr);
}

#elif TAPPA_X86_AVX2

float vec_dot_q4_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ4_K*>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0.0f;
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    uint8_t sc[8], mn[8];
    quant::unpack_scales_mins_k4(x[i].scales, sc, mn);
    const int8_t* aq = a.q + 256 * i;
    __m256i iacc = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(qv, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
      const __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 64 * c)));
      const __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 64 * c + 32)));
      iacc = dot_s16(iacc, p0, _mm256_set1_epi16(sc[2 * c]));
      iacc = dot_s16(iacc, p1, _mm256_set1_epi16(sc[2 * c + 1]));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc), _mm256_set1_ps(half_to_float_fast(x[i].d) * da), acc);
    mins += half_to_float_fast(x[i].dmin) * da * static_cast<float>(min_term(mn, a.isum + 8 * i));
  }
  return hsum256(acc) - mins;
}

float vec_dot_q5_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ5_K*>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0.0f;
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    uint8_t sc[8], mn[8];
    quant::unpack_scales_mins_k4(x[i].scales, sc, mn);
    const int8_t* aq = a.q + 256 * i;
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh));
    __m256i iacc = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * c));
      const __m128i sh_lo = _mm_cvtsi32_si128(2 * c), sh_hi = _mm_cvtsi32_si128(2 * c + 1);
      const __m256i h_lo = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hb, sh_lo), one), 4);
      const __m256i h_hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hb, sh_hi), one), 4);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(qv, m4), h_lo);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qv, 4), m4), h_hi);
      const __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 64 * c)));
      const __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 64 * c + 32)));
      iacc = dot_s16(iacc, p0, _mm256_set1_epi16(sc[2 * c]));
      iacc = dot_s16(iacc, p1, _mm256_set1_epi16(sc[2 * c + 1]));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc), _mm256_set1_ps(half_to_float_fast(x[i].d) * da), acc);
    mins += half_to_float_fast(x[i].dmin) * da * static_cast<float>(min_term(mn, a.isum + 8 * i));
  }
  return hsum256(acc) - mins;
}

float vec_dot_q6_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m2 = _mm256_set1_epi8(0x03);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    const int8_t* aq = a.q + 256 * i;
    const int8_t* sc = x[i].scales;
    __m256i iacc = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].ql + 64 * h));
      const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh + 32 * h));
      __m256i e[4];
      e[0] = _mm256_or_si256(_mm256_and_si256(qa, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
      e[1] = _mm256_or_si256(_mm256_and_si256(qb, m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
      e[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
      e[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
      for (int k = 0; k < 4; ++k) {
        const int s0 = sc[8 * h + 2 * k], s1 = sc[8 * h + 2 * k + 1];
        const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(s1)), _mm_set1_epi16(static_cast<short>(s0)));
        const __m256i p = _mm256_maddubs_epi16(e[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 128 * h + 32 * k)));
        iacc = dot_s16(iacc, p, scv);
      }
    }
    iacc = _mm256_sub_epi32(iacc, _mm256_setr_epi32(q6_offset_term(sc, a.bsum + 16 * i), 0, 0, 0, 0, 0, 0, 0));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc), _mm256_set1_ps(half_to_float_fast(x[i].d) * da), acc);
  }
  return hsum256(acc);
}

#else  // portable scalar

float vec_dot_q4_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ4_K*>(w);
  float sum = 0.0f;
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    uint8_t sc[8], mn[8];
    quant::unpack_scales_mins_k4(x[i].scales, sc, mn);
    const int8_t* aq = a.q + 256 * i;
    int isum = 0;
    for (int c = 0; c < 4; ++c) {
      int s0 = 0, s1 = 0;
      for (int l = 0; l < 32; ++l) {
        s0 += (x[i].qs[32 * c + l] & 0x0F) * aq[64 * c + l];
        s1 += (x[i].qs[32 * c + l] >> 4) * aq[64 * c + 32 + l];
      }
      isum += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
    }
    sum += half_to_float_fast(x[i].d) * da * static_cast<float>(isum) -
           half_to_float_fast(x[i].dmin) * da * static_cast<float>(min_term(mn, a.isum + 8 * i));
  }
  return sum;
}

float vec_dot_q5_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ5_K*>(w);
  float sum = 0.0f;
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    uint8_t sc[8], mn[8];
    quant::unpack_scales_mins_k4(x[i].scales, sc, mn);
    const int8_t* aq = a.q + 256 * i;
    int isum = 0;
    for (int c = 0; c < 4; ++c) {
      int s0 = 0, s1 = 0;
      for (int l = 0; l < 32; ++l) {
        const int q0 = (x[i].qs[32 * c + l] & 0x0F) | (((x[i].qh[l] >> (2 * c)) & 1) << 4);
        const int q1 = (x[i].qs[32 * c + l] >> 4) | (((x[i].qh[l] >> (2 * c + 1)) & 1) << 4);
        s0 += q0 * aq[64 * c + l];
        s1 += q1 * aq[64 * c + 32 + l];
      }
      isum += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
    }
    sum += half_to_float_fast(x[i].d) * da * static_cast<float>(isum) -
           half_to_float_fast(x[i].dmin) * da * static_cast<float>(min_term(mn, a.isum + 8 * i));
  }
  return sum;
}

float vec_dot_q6_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  float sum = 0.0f;
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    const int8_t* aq = a.q + 256 * i;
    int isum = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      int s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int l = 0; l < 32; ++l) {
        const int g = l / 16;
        s[0 + g] += ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) * aq[128 * h + l];
        s[2 + g] += ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) * aq[128 * h + 32 + l];
        s[4 + g] += ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) * aq[128 * h + 64 + l];
        s[6 + g] += ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) * aq[128 * h + 96 + l];
      }
      for (int j = 0; j < 8; ++j) isum += x[i].scales[8 * h + j] * s[j];
    }
    isum -= q6_offset_term(x[i].scales, a.bsum + 16 * i);
    sum += half_to_float_fast(x[i].d) * da * static_cast<float>(isum);
  }
  return sum;
}

#endif

}  // namespace tappa::cpu::detail
