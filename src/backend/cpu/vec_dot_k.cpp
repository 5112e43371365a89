// Row dot products for the K-quants (Q4_K, Q5_K, Q6_K) against K256-quantized activations (one scale
// da per 256 elements, as Q8_K).
//
// Q4_K / Q5_K super-block: sum_j [ d*da * sc_j * sum_{i in j}(q_i a_i) - dmin*da * m_j * sum_{i in j} a_i ]
// Q6_K super-block:        d*da * sum_j sc_j * ( sum_{i in j}(q_i a_i) - 32 * sum_{i in j} a_i )
// with q unsigned (0..15, 0..31, 0..63). The integer parts are exact; the float steps of Q4_K and
// Q6_K follow llama.cpp's x86 CPU backend (gemm_kquant.h): Q4_K one token at a time is its
// repacked GEMV order (one fma per super-block for the scaled sums and one for the mins), Q6_K is
// its 8-lane row dot product. Q5_K keeps its own order (not used by the reference models).
#include <cmath>
#include <type_traits>

#include "backend/cpu/gemm_kquant.h"
#include "backend/cpu/simd.h"
#include "backend/cpu/vec_dot.h"
#include "quant/blocks.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

using quant::BlockQ4_K;
using quant::BlockQ5_K;
using quant::BlockQ6_K;

namespace {

// sum_j m_j * (sum of the activation codes of sub-block j); the AVX-512 build sums the mins in vectors
// and does not call it.
[[maybe_unused]] inline int min_term(const uint8_t m[8], const int32_t* isum) {
  int s = 0;
  for (int j = 0; j < 8; ++j) s += m[j] * isum[j];
  return s;
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

// Q4_K in ggml's one-token order (its repacked q4_K 8x8 GEMV): integer sums over the whole
// super-block, then acc = fma(float(sum sc*dot), d*da, acc), accm = fma(float(sum m*bs), dmin*da, accm).
float vec_dot_q4_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ4_K*>(w);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i p01 = idx_pair(0), p23 = idx_pair(2), p45 = idx_pair(4), p67 = idx_pair(6);
  float acc = 0.0f, accm = 0.0f;
  for (int64_t i = 0; i < cols / 256; ++i) {
    const float da = a.d[8 * i];
    uint64_t sc8, mn8;
    scales_mins_k4(x[i].scales, sc8, mn8);
    const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(sc8))));
    const __m256i mprod = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(mn8))),
                                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.isum + 8 * i)));
    const int8_t* aq = a.q + 256 * i;
    __m512i iacc = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i z = _mm512_loadu_si512(x[i].qs + 64 * h);
      const __m512i lo = _mm512_and_si512(z, m4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
      const __m512i wa = _mm512_shuffle_i64x2(lo, hi, 0x44);  // sub-blocks 4h, 4h+1
      const __m512i wb = _mm512_shuffle_i64x2(lo, hi, 0xEE);  // sub-blocks 4h+2, 4h+3
      const __m512i sa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wa, _mm512_loadu_si512(aq + 128 * h));
      const __m512i sb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wb, _mm512_loadu_si512(aq + 128 * h + 64));
      iacc = _mm512_add_epi32(iacc, _mm512_mullo_epi32(sa, _mm512_permutexvar_epi32(h ? p45 : p01, sc)));
      iacc = _mm512_add_epi32(iacc, _mm512_mullo_epi32(sb, _mm512_permutexvar_epi32(h ? p67 : p23, sc)));
    }
    const int isum = _mm512_reduce_add_epi32(iacc);
    __m128i m4s = _mm_add_epi32(_mm256_castsi256_si128(mprod), _mm256_extracti128_si256(mprod, 1));
    m4s = _mm_add_epi32(m4s, _mm_unpackhi_epi64(m4s, m4s));
    const int msum = _mm_cvtsi128_si32(m4s) + _mm_extract_epi32(m4s, 1);
    acc = std::fma(static_cast<float>(isum), half_to_float_fast(x[i].d) * da, acc);
    accm = std::fma(static_cast<float>(msum), half_to_float_fast(x[i].dmin) * da, accm);
  }
  return acc - accm;
}
float vec_dot_q5_k(const uint8_t* w, const ActRow& a, int64_t cols) { return dot_k45_512<true>(w, a, cols); }

#elif TAPPA_X86_AVX2

float vec_dot_q4_k(const uint8_t* w, const ActRow& a, int64_t cols) {  // gemv order (see the AVX-512 version)
  const auto* x = reinterpret_cast<const BlockQ4_K*>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  float acc = 0.0f;
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
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(iacc), _mm256_extracti128_si256(iacc, 1));
    s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
    const int isum = _mm_cvtsi128_si32(s4) + _mm_extract_epi32(s4, 1);
    acc = std::fma(static_cast<float>(isum), half_to_float_fast(x[i].d) * da, acc);
    mins = std::fma(static_cast<float>(min_term(mn, a.isum + 8 * i)), half_to_float_fast(x[i].dmin) * da, mins);
  }
  return acc - mins;
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

#else  // portable scalar

float vec_dot_q4_k(const uint8_t* w, const ActRow& a, int64_t cols) {  // gemv order (see the AVX-512 version)
  const auto* x = reinterpret_cast<const BlockQ4_K*>(w);
  float sum = 0.0f, mins = 0.0f;
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
    sum = std::fma(static_cast<float>(isum), half_to_float_fast(x[i].d) * da, sum);
    mins = std::fma(static_cast<float>(min_term(mn, a.isum + 8 * i)), half_to_float_fast(x[i].dmin) * da, mins);
  }
  return sum - mins;
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

#endif

// Q6_K in ggml's x86 row order (gemm_kquant.cpp).
float vec_dot_q6_k(const uint8_t* w, const ActRow& a, int64_t cols) {
  float out;
  q6k_row_tokens(w, &a, 1, cols, &out);
  return out;
}

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
