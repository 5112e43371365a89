// Q4_K gemm order (16-row panels) and Q6_K row kernels in llama.cpp's float order; see
// gemm_kquant.h for the arithmetic that is reproduced.
//
// Q4_K panel layout, per super-block (5248 bytes):
//   codes  64 groups x 16 rows x 4 bytes: group g holds elements 4g..4g+3 of each row (0..15),
//          so one vpdpbusd against a broadcast activation dword gives one sum per row and lane
//   fD[16], fDM[16]   the rows' d and dmin as floats
//   fSC[8][16], fM[8][16]  the rows' sub-block scales and mins as floats
// Sub-block products sc * dot (|.| <= 63 * 32 * 15 * 127 < 2^22) and their pair sums stay below
// 2^24, so they are formed exactly in float; ggml forms the same integers and converts them once.
#include "backend/cpu/gemm_kquant.h"

#include <cmath>
#include <cstring>

#include "backend/cpu/simd.h"
#include "quant/blocks.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

using quant::BlockQ4_K;
using quant::BlockQ6_K;

namespace {

constexpr size_t kCodeBytes = 64 * 64;                 // 64 groups x 16 rows x 4
constexpr size_t kSbBytes = kCodeBytes + (2 + 16) * 64;  // + fD, fDM, fSC[8], fM[8]

// One super-block of a Q4_K panel as the kernels read it: the codes, then the float tables.
struct Q4kPanelSb {
  const uint8_t* codes;
  const float *D, *DM, *SC, *M;
};
inline Q4kPanelSb q4k_panel_sb(const uint8_t* panel, int64_t b) {
  const uint8_t* codes = panel + b * kSbBytes;
  const float* d = reinterpret_cast<const float*>(codes + kCodeBytes);
  return {codes, d, d + 16, d + 32, d + 32 + 128};
}

// The code area shared by both panel layouts: element e of row r sits in group e / 4, at byte e % 4
// of the row's dword there.
inline void put_code(uint8_t* codes, int r, int e, uint8_t v) { codes[(e / 4) * 64 + r * 4 + (e % 4)] = v; }
inline void zero_codes(uint8_t* codes, int r) {
  for (int g = 0; g < 64; ++g) std::memset(codes + g * 64 + r * 4, 0, 4);
}

}  // namespace

// Q6_K panel, per super-block (5184 bytes): codes as for Q4_K (6-bit values), fD[16], then the
// sub-block scales as int32 iSC[16][16] (sub-block j, row r).
constexpr size_t kSb6Bytes = kCodeBytes + 64 + 16 * 64;

size_t q6k_panel_bytes(int64_t cols) { return static_cast<size_t>(cols / 256) * kSb6Bytes; }

void q6k_repack_panel(const uint8_t* w, size_t row_stride, int nrows, int64_t cols, uint8_t* panel) {
  const int64_t nb = cols / 256;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* codes = panel + b * kSb6Bytes;
    float* fD = reinterpret_cast<float*>(codes + kCodeBytes);
    int32_t* iSC = reinterpret_cast<int32_t*>(fD + 16);
    for (int r = 0; r < kKqPanelRows; ++r) {
      if (r >= nrows) {
        zero_codes(codes, r);
        fD[r] = 0.0f;
        for (int j = 0; j < 16; ++j) iSC[j * 16 + r] = 0;
        continue;
      }
      const auto* x = reinterpret_cast<const BlockQ6_K*>(w + static_cast<size_t>(r) * row_stride) + b;
      fD[r] = quant::half_to_float(x->d);
      for (int j = 0; j < 16; ++j) iSC[j * 16 + r] = x->scales[j];
      for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = x->ql + 64 * h;
        const uint8_t* qh = x->qh + 32 * h;
        for (int l = 0; l < 32; ++l) {
          const uint8_t q[4] = {static_cast<uint8_t>((ql[l] & 0x0F) | ((qh[l] & 3) << 4)),
                                static_cast<uint8_t>((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)),
                                static_cast<uint8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)),
                                static_cast<uint8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4))};
          for (int k = 0; k < 4; ++k) {
            put_code(codes, r, 128 * h + 32 * k + l, q[k]);
          }
        }
      }
    }
  }
}

size_t q4k_panel_bytes(int64_t cols) { return static_cast<size_t>(cols / 256) * kSbBytes; }

void q4k_repack_panel(const uint8_t* w, size_t row_stride, int nrows, int64_t cols, uint8_t* panel) {
  const int64_t nb = cols / 256;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* codes = panel + b * kSbBytes;
    float* fD = reinterpret_cast<float*>(codes + kCodeBytes);
    float* fDM = fD + 16;
    float* fSC = fDM + 16;
    float* fM = fSC + 128;
    for (int r = 0; r < kKqPanelRows; ++r) {
      if (r >= nrows) {
        zero_codes(codes, r);
        fD[r] = fDM[r] = 0.0f;
        for (int j = 0; j < 8; ++j) fSC[j * 16 + r] = fM[j * 16 + r] = 0.0f;
        continue;
      }
      const auto* x = reinterpret_cast<const BlockQ4_K*>(w + static_cast<size_t>(r) * row_stride) + b;
      fD[r] = quant::half_to_float(x->d);
      fDM[r] = quant::half_to_float(x->dmin);
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        quant::unpack_scale_min_k4(j, x->scales, sc, m);
        fSC[j * 16 + r] = static_cast<float>(sc);
        fM[j * 16 + r] = static_cast<float>(m);
      }
      // Element 64c + l (l < 32) is the low nibble of qs[32c + l], 64c + 32 + l the high nibble.
      for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t v = x->qs[32 * c + l];
          put_code(codes, r, 64 * c + l, v & 0x0F);
          put_code(codes, r, 64 * c + 32 + l, v >> 4);
        }
      }
    }
  }
}

#if TAPPA_X86_GEMM512

void q4k_panel_group4(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, float* y, int64_t ldy) {
  const int64_t nb = cols / 256;
  __m512 acc[4], accm[4];
  for (int t = 0; t < 4; ++t) acc[t] = accm[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const Q4kPanelSb sb = q4k_panel_sb(panel, b);
    const uint8_t* codes = sb.codes;
    const float *fD = sb.D, *fDM = sb.DM, *fSC = sb.SC, *fM = sb.M;
    const __m512 D = _mm512_loadu_ps(fD), DM = _mm512_loadu_ps(fDM);
    for (int p = 0; p < 4; ++p) {
      __m512i s0[4], s1[4];
      for (int t = 0; t < 4; ++t) s0[t] = s1[t] = _mm512_setzero_si512();
      const uint8_t* cp = codes + p * 16 * 64;
      for (int g = 0; g < 8; ++g) {
        const __m512i wv = _mm512_loadu_si512(cp + g * 64);
        for (int t = 0; t < 4; ++t) {
          const __m512i av = _mm512_set1_epi32(static_cast<int>(load_u32(a[t].q + 256 * b + 64 * p + 4 * g)));
          s0[t] = _mm512_dpbusd_epi32(s0[t], wv, av);
        }
      }
      for (int g = 8; g < 16; ++g) {
        const __m512i wv = _mm512_loadu_si512(cp + g * 64);
        for (int t = 0; t < 4; ++t) {
          const __m512i av = _mm512_set1_epi32(static_cast<int>(load_u32(a[t].q + 256 * b + 64 * p + 4 * g)));
          s1[t] = _mm512_dpbusd_epi32(s1[t], wv, av);
        }
      }
      const __m512 sc0 = _mm512_loadu_ps(fSC + 32 * p), sc1 = _mm512_loadu_ps(fSC + 32 * p + 16);
      const __m512 m0 = _mm512_loadu_ps(fM + 32 * p), m1 = _mm512_loadu_ps(fM + 32 * p + 16);
      for (int t = 0; t < 4; ++t) {
        const float da = a[t].d[8 * b];
        const __m512 iv = _mm512_fmadd_ps(sc1, _mm512_cvtepi32_ps(s1[t]), _mm512_mul_ps(sc0, _mm512_cvtepi32_ps(s0[t])));
        acc[t] = _mm512_fmadd_ps(iv, _mm512_mul_ps(D, _mm512_set1_ps(da)), acc[t]);
        const __m512 mv = _mm512_fmadd_ps(m1, _mm512_set1_ps(static_cast<float>(a[t].isum[8 * b + 2 * p + 1])),
                                          _mm512_mul_ps(m0, _mm512_set1_ps(static_cast<float>(a[t].isum[8 * b + 2 * p]))));
        accm[t] = _mm512_fmadd_ps(mv, _mm512_mul_ps(DM, _mm512_set1_ps(da)), accm[t]);
      }
    }
  }
  const __mmask16 k = static_cast<__mmask16>((1u << nrows) - 1u);
  for (int t = 0; t < 4; ++t) _mm512_mask_storeu_ps(y + t * ldy, k, _mm512_sub_ps(acc[t], accm[t]));
}

namespace {

template <int NT>
void q6k_panel_nt(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, float* y, int64_t ldy) {
  const int64_t nb = cols / 256;
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* codes = panel + b * kSb6Bytes;
    const float* fD = reinterpret_cast<const float*>(codes + kCodeBytes);
    const int32_t* iSC = reinterpret_cast<const int32_t*>(fD + 16);
    __m512i s[NT];
    for (int t = 0; t < NT; ++t) s[t] = _mm512_setzero_si512();
    for (int j = 0; j < 16; ++j) {
      __m512i dot[NT];
      for (int t = 0; t < NT; ++t) dot[t] = _mm512_set1_epi32(-32 * a[t].bsum[16 * b + j]);
      for (int g = 0; g < 4; ++g) {
        const __m512i wv = _mm512_loadu_si512(codes + (4 * j + g) * 64);
        for (int t = 0; t < NT; ++t) {
          const __m512i av = _mm512_set1_epi32(static_cast<int>(load_u32(a[t].q + 256 * b + 16 * j + 4 * g)));
          dot[t] = _mm512_dpbusd_epi32(dot[t], wv, av);
        }
      }
      const __m512i sc = _mm512_loadu_si512(iSC + 16 * j);
      for (int t = 0; t < NT; ++t) s[t] = _mm512_add_epi32(s[t], _mm512_mullo_epi32(dot[t], sc));
    }
    const __m512 D = _mm512_loadu_ps(fD);
    for (int t = 0; t < NT; ++t) {
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s[t]), D), _mm512_set1_ps(a[t].d[8 * b]), acc[t]);
    }
  }
  const __mmask16 k = static_cast<__mmask16>((1u << nrows) - 1u);
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, k, acc[t]);
}

}  // namespace

namespace {

inline __m512i idx4(int k) {  // lanes 4i..4i+3 <- 4k + i
  const int s = 4 * k;
  return _mm512_setr_epi32(s, s, s, s, s + 1, s + 1, s + 1, s + 1, s + 2, s + 2, s + 2, s + 2, s + 3, s + 3, s + 3, s + 3);
}

template <int NT>
void q6k_row_nt(const uint8_t* w, const ActRow* a, int64_t cols, float* out) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
  const __m512i sh_a = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2), sh_b = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  const __m512i i0 = idx4(0), i1 = idx4(1), i2 = idx4(2), i3 = idx4(3);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < cols / 256; ++b) {
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].scales));
    const __m512i sc32 = _mm512_cvtepi8_epi32(sc8);
    const __m512i S0 = _mm512_permutexvar_epi32(i0, sc32), S1 = _mm512_permutexvar_epi32(i1, sc32);
    const __m512i S2 = _mm512_permutexvar_epi32(i2, sc32), S3 = _mm512_permutexvar_epi32(i3, sc32);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    __m512i W[4];  // elements 0..63, 64..127, 128..191, 192..255
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(x[b].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qh + 32 * h)));
      W[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh_a), m2), 4));
      W[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                     _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh_b), m2), 4));
    }
    const float dw = half_to_float_fast(x[b].d);
    for (int t = 0; t < NT; ++t) {
      const int8_t* aq = a[t].q + 256 * b;
      __m512i s = _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], _mm512_loadu_si512(aq)), S0);
      s = _mm512_add_epi32(s, _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[1], _mm512_loadu_si512(aq + 64)), S1));
      s = _mm512_add_epi32(s, _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[2], _mm512_loadu_si512(aq + 128)), S2));
      s = _mm512_add_epi32(s, _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[3], _mm512_loadu_si512(aq + 192)), S3));
      __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
      const __m256i off = _mm256_slli_epi32(
          _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].bsum + 16 * b)), sc16), 5);
      s8 = _mm256_sub_epi32(s8, off);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t].d[8 * b] * dw), _mm256_cvtepi32_ps(s8), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum256(acc[t]);
}

}  // namespace

#elif TAPPA_X86_AVX2
// AVX2 without VNNI: the same float steps as above, eight rows per vector (a panel's 16 rows in two
// halves, the half loop outermost so each half's accumulators stay in registers). The integer dot
// products use vpmaddubsw (u8 codes x s8 activations -> pairwise int16 sums) and vpmaddwd; every
// 16-bit intermediate is bounded below 2^15 (stated where it is formed), so all integers are exact
// and only the float order matters — which is per output, hence unchanged by vectorising over rows.

namespace {

inline __m256i bcast_u32(const int8_t* p) { return _mm256_set1_epi32(static_cast<int>(load_u32(p))); }

// Sum of 8 maddubs products of one row-half's codes (groups g0..g0+7 of a super-block's code area)
// against a token's activations: each int16 lane adds 8 pairs of (code <= 15) x (|a| <= 127), so
// |lane| <= 8 * 2 * 15 * 127 = 30480 < 2^15. Returns the 8 per-row int32 sums.
inline __m256i q4_dot8(const uint8_t* cp, const int8_t* aq) {
  __m256i s = _mm256_setzero_si256();
  for (int g = 0; g < 8; ++g) {
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp + g * 64)),
                                                 bcast_u32(aq + 4 * g)));
  }
  return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
}

}  // namespace

void q4k_panel_group4(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, float* y, int64_t ldy) {
  const int64_t nb = cols / 256;
  for (int h = 0; h < 2; ++h) {
    if (8 * h >= nrows) break;
    __m256 acc[4], accm[4];
    for (int t = 0; t < 4; ++t) acc[t] = accm[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const Q4kPanelSb sb = q4k_panel_sb(panel, b);
      const uint8_t* codes = sb.codes;
      const float *fD = sb.D, *fDM = sb.DM, *fSC = sb.SC, *fM = sb.M;
      const __m256 D = _mm256_loadu_ps(fD + 8 * h), DM = _mm256_loadu_ps(fDM + 8 * h);
      for (int p = 0; p < 4; ++p) {
        const uint8_t* cp = codes + p * 16 * 64 + 32 * h;
        const __m256 sc0 = _mm256_loadu_ps(fSC + 32 * p + 8 * h), sc1 = _mm256_loadu_ps(fSC + 32 * p + 16 + 8 * h);
        const __m256 m0 = _mm256_loadu_ps(fM + 32 * p + 8 * h), m1 = _mm256_loadu_ps(fM + 32 * p + 16 + 8 * h);
        for (int t = 0; t < 4; ++t) {
          const int8_t* aq = a[t].q + 256 * b + 64 * p;
          const __m256i s0 = q4_dot8(cp, aq), s1 = q4_dot8(cp + 8 * 64, aq + 32);
          const float da = a[t].d[8 * b];
          const __m256 iv = _mm256_fmadd_ps(sc1, _mm256_cvtepi32_ps(s1), _mm256_mul_ps(sc0, _mm256_cvtepi32_ps(s0)));
          acc[t] = _mm256_fmadd_ps(iv, _mm256_mul_ps(D, _mm256_set1_ps(da)), acc[t]);
          const __m256 mv = _mm256_fmadd_ps(m1, _mm256_set1_ps(static_cast<float>(a[t].isum[8 * b + 2 * p + 1])),
                                            _mm256_mul_ps(m0, _mm256_set1_ps(static_cast<float>(a[t].isum[8 * b + 2 * p]))));
          accm[t] = _mm256_fmadd_ps(mv, _mm256_mul_ps(DM, _mm256_set1_ps(da)), accm[t]);
        }
      }
    }
    const int n = nrows - 8 * h < 8 ? nrows - 8 * h : 8;
    for (int t = 0; t < 4; ++t) {
      alignas(32) float out[8];
      _mm256_store_ps(out, _mm256_sub_ps(acc[t], accm[t]));
      std::memcpy(y + t * ldy + 8 * h, out, sizeof(float) * static_cast<size_t>(n));
    }
  }
}

namespace {

template <int NT>
void q6k_panel_nt(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, float* y, int64_t ldy) {
  const int64_t nb = cols / 256;
  for (int h = 0; h < 2; ++h) {
    if (8 * h >= nrows) break;
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* codes = panel + b * kSb6Bytes + 32 * h;
      const float* fD = reinterpret_cast<const float*>(panel + b * kSb6Bytes + kCodeBytes);
      const int32_t* iSC = reinterpret_cast<const int32_t*>(fD + 16);
      // s = sum_j sc_j * dot_j and z = sum_j sc_j * bsum_j, so that s - 32 z is the exact integer
      // sum_j sc_j * (dot_j - 32 bsum_j) of the scalar form.
      __m256i s[NT], z[NT];
      for (int t = 0; t < NT; ++t) s[t] = z[t] = _mm256_setzero_si256();
      for (int j = 0; j < 16; ++j) {
        // The rows' scale of sub-block j in both 16-bit halves of each lane: vpmaddwd against it
        // multiplies the sum of a lane's two int16 by the scale.
        const __m256i sc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(iSC + 16 * j + 8 * h));
        const __m256i scp = _mm256_or_si256(_mm256_and_si256(sc, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(sc, 16));
        const uint8_t* cj = codes + 4 * j * 64;
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cj));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cj + 64));
        const __m256i w2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cj + 128));
        const __m256i w3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cj + 192));
        for (int t = 0; t < NT; ++t) {
          const int8_t* aq = a[t].q + 256 * b + 16 * j;
          // Two groups per int16 sum: 2 * 2 * 63 * 127 = 32004 < 2^15.
          const __m256i x0 = _mm256_add_epi16(_mm256_maddubs_epi16(w0, bcast_u32(aq)), _mm256_maddubs_epi16(w1, bcast_u32(aq + 4)));
          const __m256i x1 = _mm256_add_epi16(_mm256_maddubs_epi16(w2, bcast_u32(aq + 8)), _mm256_maddubs_epi16(w3, bcast_u32(aq + 12)));
          s[t] = _mm256_add_epi32(s[t], _mm256_add_epi32(_mm256_madd_epi16(x0, scp), _mm256_madd_epi16(x1, scp)));
          const __m256i bs = _mm256_set1_epi32(static_cast<int>(static_cast<uint16_t>(a[t].bsum[16 * b + j])));
          z[t] = _mm256_add_epi32(z[t], _mm256_madd_epi16(bs, scp));
        }
      }
      const __m256 D = _mm256_loadu_ps(fD + 8 * h);
      for (int t = 0; t < NT; ++t) {
        const __m256i st = _mm256_sub_epi32(s[t], _mm256_slli_epi32(z[t], 5));
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(st), D), _mm256_set1_ps(a[t].d[8 * b]), acc[t]);
      }
    }
    const int n = nrows - 8 * h < 8 ? nrows - 8 * h : 8;
    for (int t = 0; t < NT; ++t) {
      alignas(32) float out[8];
      _mm256_store_ps(out, acc[t]);
      std::memcpy(y + t * ldy + 8 * h, out, sizeof(float) * static_cast<size_t>(n));
    }
  }
}

// Q6_K row order: eight int32 lanes per token, lane l holding elements 4l..4l+3 of every 32-element
// chunk times the chunk half's scale — exactly what vpmaddubsw (codes <= 63 times |a| <= 127: pair
// sums <= 16002) followed by vpmaddwd against the scale pair (sc_2c in the low 128 bits, sc_2c+1 in
// the high) leaves in lane l.
template <int NT>
void q6k_row_nt(const uint8_t* w, const ActRow* a, int64_t cols, float* out) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < cols / 256; ++b) {
    const int8_t* sc = x[b].scales;
    __m256i lane[NT];
    for (int t = 0; t < NT; ++t) lane[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qh + 32 * h));
      // Codes of chunks 4h..4h+3 (each bit field is masked after the 16-bit shifts, so no bits
      // cross from the neighbouring byte).
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
          _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4))};
      for (int k = 0; k < 4; ++k) {
        const int c = 4 * h + k;
        const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]));
        for (int t = 0; t < NT; ++t) {
          const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].q + 256 * b + 32 * c));
          lane[t] = _mm256_add_epi32(lane[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], av), scv));
        }
      }
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    const float dw = half_to_float_fast(x[b].d);
    for (int t = 0; t < NT; ++t) {
      const __m256i off = _mm256_slli_epi32(
          _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].bsum + 16 * b)), sc16), 5);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(a[t].d[8 * b] * dw), _mm256_cvtepi32_ps(_mm256_sub_epi32(lane[t], off)), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum256(acc[t]);
}

}  // namespace

#endif

#if TAPPA_X86_GEMM512 || TAPPA_X86_AVX2
// Both SIMD families take the token count as a template argument (the accumulators are registers).
void q6k_panel_tokens(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, int nt, float* y, int64_t ldy) {
  switch (nt) {
    case 1: q6k_panel_nt<1>(panel, nrows, cols, a, y, ldy); break;
    case 2: q6k_panel_nt<2>(panel, nrows, cols, a, y, ldy); break;
    case 3: q6k_panel_nt<3>(panel, nrows, cols, a, y, ldy); break;
    default: q6k_panel_nt<4>(panel, nrows, cols, a, y, ldy); break;
  }
}

void q6k_row_tokens(const uint8_t* w, const ActRow* a, int nt, int64_t cols, float* out) {
  switch (nt) {
    case 1: q6k_row_nt<1>(w, a, cols, out); break;
    case 2: q6k_row_nt<2>(w, a, cols, out); break;
    case 3: q6k_row_nt<3>(w, a, cols, out); break;
    default: q6k_row_nt<4>(w, a, cols, out); break;
  }
}

#else  // portable scalar: the same float steps, one output at a time

void q4k_panel_group4(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, float* y, int64_t ldy) {
  const int64_t nb = cols / 256;
  for (int t = 0; t < 4; ++t) {
    for (int r = 0; r < nrows; ++r) {
      float acc = 0.0f, accm = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const Q4kPanelSb sb = q4k_panel_sb(panel, b);
        const uint8_t* codes = sb.codes;
        const float *fD = sb.D, *fDM = sb.DM, *fSC = sb.SC, *fM = sb.M;
        const float da = a[t].d[8 * b];
        for (int p = 0; p < 4; ++p) {
          int32_t dot[2] = {0, 0};
          for (int h = 0; h < 2; ++h) {
            for (int g = 0; g < 8; ++g) {
              const int gg = 16 * p + 8 * h + g;
              for (int e = 0; e < 4; ++e) dot[h] += codes[gg * 64 + r * 4 + e] * a[t].q[256 * b + 4 * gg + e];
            }
          }
          const int32_t iv = static_cast<int32_t>(fSC[(2 * p) * 16 + r]) * dot[0] +
                             static_cast<int32_t>(fSC[(2 * p + 1) * 16 + r]) * dot[1];
          const int32_t mv = static_cast<int32_t>(fM[(2 * p) * 16 + r]) * a[t].isum[8 * b + 2 * p] +
                             static_cast<int32_t>(fM[(2 * p + 1) * 16 + r]) * a[t].isum[8 * b + 2 * p + 1];
          acc = std::fma(static_cast<float>(iv), fD[r] * da, acc);
          accm = std::fma(static_cast<float>(mv), fDM[r] * da, accm);
        }
      }
      y[t * ldy + r] = acc - accm;
    }
  }
}

void q6k_panel_tokens(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, int nt, float* y, int64_t ldy) {
  const int64_t nb = cols / 256;
  for (int t = 0; t < nt; ++t) {
    for (int r = 0; r < nrows; ++r) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* codes = panel + b * kSb6Bytes;
        const float* fD = reinterpret_cast<const float*>(codes + kCodeBytes);
        const int32_t* iSC = reinterpret_cast<const int32_t*>(fD + 16);
        int32_t s = 0;
        for (int j = 0; j < 16; ++j) {
          int32_t dot = -32 * a[t].bsum[16 * b + j];
          for (int e = 0; e < 16; ++e) {
            const int el = 16 * j + e;
            dot += codes[(el / 4) * 64 + r * 4 + (el % 4)] * a[t].q[256 * b + el];
          }
          s += iSC[j * 16 + r] * dot;
        }
        acc = std::fma(static_cast<float>(s) * fD[r], a[t].d[8 * b], acc);
      }
      y[t * ldy + r] = acc;
    }
  }
}

void q6k_row_tokens(const uint8_t* w, const ActRow* a, int nt, int64_t cols, float* out) {
  const auto* x = reinterpret_cast<const BlockQ6_K*>(w);
  for (int t = 0; t < nt; ++t) {
    float lane_acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t b = 0; b < cols / 256; ++b) {
      const int8_t* aq = a[t].q + 256 * b;
      const int8_t* sc = x[b].scales;
      int32_t lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = x[b].ql + 64 * h;
        const uint8_t* qh = x[b].qh + 32 * h;
        for (int l = 0; l < 32; ++l) {
          const int q[4] = {(ql[l] & 0x0F) | ((qh[l] & 3) << 4), (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                            (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4), (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)};
          for (int k = 0; k < 4; ++k) {
            const int c = 4 * h + k;  // chunk of 32 elements
            lane[l / 4] += sc[2 * c + (l >= 16 ? 1 : 0)] * q[k] * aq[32 * c + l];
          }
        }
      }
      const float d = a[t].d[8 * b] * quant::half_to_float(x[b].d);
      for (int l = 0; l < 8; ++l) {
        lane[l] -= 32 * (a[t].bsum[16 * b + 2 * l] * sc[2 * l] + a[t].bsum[16 * b + 2 * l + 1] * sc[2 * l + 1]);
        lane_acc[l] = std::fma(d, static_cast<float>(lane[l]), lane_acc[l]);
      }
    }
    out[t] = ((lane_acc[0] + lane_acc[4]) + (lane_acc[2] + lane_acc[6])) +
             ((lane_acc[1] + lane_acc[5]) + (lane_acc[3] + lane_acc[7]));
  }
}

#endif

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
