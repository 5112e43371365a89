#include "backend/cpu/gemm_vnni.h"

#include <algorithm>
#include <cstring>

#include "backend/cpu/simd.h"
#include "quant/blocks.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

namespace {

enum class Mode { kOffset, kMin };

Mode mode_of(TensorType t) {
  switch (t) {
    case TensorType::Q4_1:
    case TensorType::Q5_K: return Mode::kMin;
    default: return Mode::kOffset;  // Q4_0, Q8_0
  }
}

constexpr size_t header_bytes(Mode m) { return m == Mode::kOffset ? 64 : 128; }
constexpr size_t block_bytes(Mode m) { return header_bytes(m) + 32 * kPanelRows; }

#if TAPPA_X86_GEMM512

// Header floats of one row in one block.
inline void put_header(uint8_t* blk, Mode mode, int row, float h0, float h1) {
  float* hdr = reinterpret_cast<float*>(blk);
  hdr[row] = h0;
  if (mode != Mode::kOffset) hdr[kPanelRows + row] = h1;
}

// One row's 32 codes (bytes of v) into the interleaved layout q[k][row][4].
inline void put_codes(uint8_t* blk, Mode mode, int row, __m256i v) {
  uint8_t* q = blk + header_bytes(mode) + 4 * row;
  const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
  const auto st = [&](int k, int val) { std::memcpy(q + 4 * kPanelRows * k, &val, 4); };
  st(0, _mm_cvtsi128_si32(lo));
  st(1, _mm_extract_epi32(lo, 1));
  st(2, _mm_extract_epi32(lo, 2));
  st(3, _mm_extract_epi32(lo, 3));
  st(4, _mm_cvtsi128_si32(hi));
  st(5, _mm_extract_epi32(hi, 1));
  st(6, _mm_extract_epi32(hi, 2));
  st(7, _mm_extract_epi32(hi, 3));
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

void repack_row_q5k(const uint8_t* w, int64_t cols, int row, uint8_t* panel) {
  constexpr Mode mode = Mode::kMin;
  constexpr size_t bb = block_bytes(mode);
  const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < cols / 256; ++i) {
    const auto* x = reinterpret_cast<const quant::BlockQ5_K*>(w) + i;
    const uint8_t *scales = x->scales, *qs = x->qs, *qh = x->qh;
    const uint16_t dh = x->d, dminh = x->dmin;
    const float d = half_to_float_fast(dh), dmin = half_to_float_fast(dminh);
    uint8_t sc[8], mn[8];
    quant::unpack_scales_mins_k4(scales, sc, mn);
    __m256i hb = load256(qh);
    uint8_t* blk = panel + 8 * i * bb;
    for (int c = 0; c < 4; ++c, blk += 2 * bb) {
      const __m256i qv = load256(qs + 32 * c);
      __m256i lo = _mm256_and_si256(qv, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
      lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
      hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
      hb = _mm256_srli_epi16(hb, 2);
      put_codes(blk, mode, row, lo);
      put_codes(blk + bb, mode, row, hi);
      put_header(blk, mode, row, d * sc[2 * c], -(dmin * mn[2 * c]));
      put_header(blk + bb, mode, row, d * sc[2 * c + 1], -(dmin * mn[2 * c + 1]));
    }
  }
}

void repack_row(TensorType t, const uint8_t* w, int64_t cols, int row, uint8_t* panel) {
  const Mode mode = mode_of(t);
  const size_t bb = block_bytes(mode);
  const int64_t nb = cols / 32;
  switch (t) {
    case TensorType::Q4_0: {
      const auto* x = reinterpret_cast<const quant::BlockQ4_0*>(w);
      for (int64_t b = 0; b < nb; ++b) {
        put_codes(panel + b * bb, mode, row, unpack_nibbles16(x[b].qs));
        put_header(panel + b * bb, mode, row, half_to_float_fast(x[b].d), 0.0f);
      }
      break;
    }
    case TensorType::Q4_1: {
      const auto* x = reinterpret_cast<const quant::BlockQ4_1*>(w);
      for (int64_t b = 0; b < nb; ++b) {
        put_codes(panel + b * bb, mode, row, unpack_nibbles16(x[b].qs));
        put_header(panel + b * bb, mode, row, half_to_float_fast(x[b].d), half_to_float_fast(x[b].m));
      }
      break;
    }
    case TensorType::Q8_0: {
      const auto* x = reinterpret_cast<const quant::BlockQ8_0*>(w);
      const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
      for (int64_t b = 0; b < nb; ++b) {
        put_codes(panel + b * bb, mode, row, _mm256_xor_si256(load256(x[b].qs), flip));
        put_header(panel + b * bb, mode, row, half_to_float_fast(x[b].d), 0.0f);
      }
      break;
    }
    case TensorType::Q5_K: repack_row_q5k(w, cols, row, panel); break;
    default: break;
  }
}

// A whole panel of 16 rows at once for Q4_0, Q4_1 and Q8_0: the same bytes repack_row writes row by
// row, built with two-source dword permutes of 16-byte row loads (codes and scales alike). Row by row
// the repack cost about as much as 19 tokens' products over the panel, so calls of 4-16 tokens ran at
// half the GEMM's rate; this form costs a few instructions per row and block.
inline __m512i load_rows4x16(const uint8_t* p, size_t row_stride) {
  return load_rows16(p, p + row_stride, p + 2 * row_stride, p + 3 * row_stride);
}

// Lanes 0..7 from (a, b) and 8..15 from (c, d) by the same index: lane r takes, of the pair, source
// (r % 8) / 4 and lane idx's low four bits.
inline __m512i gather_quads(__m512i idx, __m512i a, __m512i b, __m512i c, __m512i d) {
  return _mm512_mask_blend_epi32(0xFF00, _mm512_permutex2var_epi32(a, idx, b), _mm512_permutex2var_epi32(c, idx, d));
}

// The first dword of each of the 16 rows' blocks at `blk` (its f16 scale, for Q4_1 then its f16 min):
// four 16-byte loads and the quads' lane 0s (a 16-lane gather was most of this repack's time).
inline __m512i first_dwords(const uint8_t* blk, size_t row_stride, __m512i quad) {
  return gather_quads(quad, load_rows4x16(blk, row_stride), load_rows4x16(blk + 4 * row_stride, row_stride),
                      load_rows4x16(blk + 8 * row_stride, row_stride), load_rows4x16(blk + 12 * row_stride, row_stride));
}
inline __m512 low_halves(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }

template <TensorType kType>
void repack_panel16(const uint8_t* w, size_t row_stride, int64_t cols, uint8_t* panel) {
  constexpr Mode mode = kType == TensorType::Q4_1 ? Mode::kMin : Mode::kOffset;
  constexpr size_t bb = block_bytes(mode), hb = header_bytes(mode);
  constexpr size_t in_block = kType == TensorType::Q4_0 ? 18 : kType == TensorType::Q4_1 ? 20 : 34;
  constexpr size_t qs_off = kType == TensorType::Q4_1 ? 4 : 2;
  // Lane r: of the four 4-row vectors, the one holding row r, its lane 4 (r % 4) (+ k for group k).
  const __m512i quad = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < cols / 32; ++b, panel += bb) {
    const uint8_t* blk = w + b * in_block;
    float* hdr = reinterpret_cast<float*>(panel);
    const __m512i head = first_dwords(blk, row_stride, quad);
    _mm512_store_ps(hdr, low_halves(head));
    if constexpr (mode == Mode::kMin) _mm512_store_ps(hdr + kPanelRows, low_halves(_mm512_srli_epi32(head, 16)));
    uint8_t* q = panel + hb;
    if constexpr (kType == TensorType::Q8_0) {
      // v[j]: rows 2j (lanes 0..7) and 2j + 1 (8..15), a dword per group of 4 codes.
      const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
      __m512i v[8];
      for (int j = 0; j < 8; ++j) {
        const uint8_t* r0 = blk + 2 * j * row_stride + qs_off;
        v[j] = _mm512_xor_si512(
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0))),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + row_stride)), 1),
            flip);
      }
      // s[p][h]: rows 4p..4p+3 of groups 4h..4h+3, lane 4 kk + i = row 4p + i, group 4h + kk.
      __m512i s[4][2];
      for (int h = 0; h < 2; ++h) {
        const __m512i idx = _mm512_setr_epi32(4 * h, 8 + 4 * h, 16 + 4 * h, 24 + 4 * h, 4 * h + 1, 9 + 4 * h,
                                              17 + 4 * h, 25 + 4 * h, 4 * h + 2, 10 + 4 * h, 18 + 4 * h, 26 + 4 * h,
                                              4 * h + 3, 11 + 4 * h, 19 + 4 * h, 27 + 4 * h);
        for (int p = 0; p < 4; ++p) s[p][h] = _mm512_permutex2var_epi32(v[2 * p], idx, v[2 * p + 1]);
      }
      for (int k = 0; k < 8; ++k) {
        const int h = k / 4, kk = k % 4;
        const __m512i idx = _mm512_add_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 0, 1, 2, 3, 16, 17, 18, 19), _mm512_set1_epi32(4 * kk));
        _mm512_store_si512(q + 64 * k, gather_quads(idx, s[0][h], s[1][h], s[2][h], s[3][h]));
      }
    } else {
      // lo[j] / hi[j]: rows 4j..4j+3, lane 4 i + d = row 4j + i, group d (lo) or 4 + d (hi).
      __m512i lo[4], hi[4];
      for (int j = 0; j < 4; ++j) {
        const __m512i v = load_rows4x16(blk + 4 * j * row_stride + qs_off, row_stride);
        lo[j] = _mm512_and_si512(v, m4);
        hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      }
      for (int k = 0; k < 4; ++k) {
        const __m512i idx = _mm512_add_epi32(quad, _mm512_set1_epi32(k));
        _mm512_store_si512(q + 64 * k, gather_quads(idx, lo[0], lo[1], lo[2], lo[3]));
        _mm512_store_si512(q + 64 * (k + 4), gather_quads(idx, hi[0], hi[1], hi[2], hi[3]));
      }
    }
  }
}

void zero_row(TensorType t, int64_t cols, int row, uint8_t* panel) {
  const Mode mode = mode_of(t);
  for (int64_t b = 0; b < cols / 32; ++b) {
    put_codes(panel + b * block_bytes(mode), mode, row, _mm256_setzero_si256());
    put_header(panel + b * block_bytes(mode), mode, row, 0.0f, 0.0f);
  }
}

#endif

// Grouped activation block: q[32 G] (dword (k, t) at 4 (k G + t)), d[G], s[G], c0[G], and for Q8_0's
// lanes kernel c8[8 G] (c8[k G + t] = -128 * the sum of token t's four codes of group k, the start
// of that group's integer sum: computed once per token instead of once per token and 16-row panel).
constexpr size_t act_block_bytes(int g) { return static_cast<size_t>(76 * g); }

#if TAPPA_X86_GEMM512

template <int G, int NT, Mode kMode>
void kernel(const uint8_t* panel, int64_t nb, const uint8_t* act, float* y, int64_t ldy, __mmask16 rows) {
  constexpr size_t bb = block_bytes(kMode);
  constexpr size_t hb = header_bytes(kMode);
  constexpr size_t ab = act_block_bytes(G);
  __m512 acc[NT];
  #pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, panel += bb, act += ab) {
    const uint8_t* q = panel + hb;
    const float* ad = reinterpret_cast<const float*>(act + 32 * G);
    const float* as = ad + G;
    const int32_t* c0 = reinterpret_cast<const int32_t*>(as + G);
    {
      __m512i ia[NT];
      #pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) {
        ia[t] = kMode == Mode::kOffset ? _mm512_set1_epi32(c0[t]) : _mm512_setzero_si512();
      }
      #pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m512i wv = _mm512_load_si512(q + 64 * k);
        #pragma GCC unroll 8
        for (int t = 0; t < NT; ++t)
          ia[t] = _mm512_dpbusd_epi32(ia[t], wv, _mm512_set1_epi32(static_cast<int>(load_u32(act + 4 * (k * G + t)))));
      }
      const __m512 da = _mm512_load_ps(reinterpret_cast<const float*>(panel));
      #pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) {
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), _mm512_mul_ps(da, _mm512_set1_ps(ad[t])), acc[t]);
      }
      if constexpr (kMode == Mode::kMin) {
        const __m512 mn = _mm512_load_ps(reinterpret_cast<const float*>(panel) + kPanelRows);
        #pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) acc[t] = _mm512_fmadd_ps(mn, _mm512_set1_ps(as[t]), acc[t]);
      }
    }
  }
  #pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
}

// Q4_1 and Q8_0 in llama.cpp's order (see vec_dot_q4_1 / vec_dot_q8_0 in vec_dot_q.cpp): for each
// output, eight float accumulators, one per 4-element group k of the 32-element block (ggml's
// lanes), acc[k] = fma(dw*da, int lane sum, acc[k]) block after block; then hsum256's fold
// ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), and for Q4_1 the min terms accumulated with their own
// FMA and added last. Every product and sum is the one ggml computes, so prompt processing gives
// the same bits as llama.cpp's row-by-row dot products. Costs one convert and one FMA per group
// instead of one per block; tokens go two at a time so the 2 x 8 accumulators stay in registers.
template <int G, int NT, bool kQ8>
void kernel_lanes(const uint8_t* panel, int64_t nb, const uint8_t* act, int t_base, float* y, int64_t ldy,
                  __mmask16 rows) {
  constexpr Mode kMode = kQ8 ? Mode::kOffset : Mode::kMin;
  constexpr size_t bb = block_bytes(kMode);
  constexpr size_t hb = header_bytes(kMode);
  constexpr size_t ab = act_block_bytes(G);
  __m512 acc[NT][8];
  __m512 mins[NT];
  #pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    mins[t] = _mm512_setzero_ps();
    #pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) acc[t][k] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b, panel += bb, act += ab) {
    const uint8_t* q = panel + hb;
    const float* ad = reinterpret_cast<const float*>(act + 32 * G);
    const float* as = ad + G;
    const int32_t* c8 = reinterpret_cast<const int32_t*>(as + 2 * G);
    const __m512 dw = _mm512_load_ps(reinterpret_cast<const float*>(panel));
    __m512 sc[NT];
    #pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) sc[t] = _mm512_mul_ps(dw, _mm512_set1_ps(ad[t_base + t]));
    #pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const __m512i wv = _mm512_load_si512(q + 64 * k);
      #pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) {
        const __m512i av = _mm512_set1_epi32(static_cast<int>(load_u32(act + 4 * (k * G + t_base + t))));
        // Q8_0 codes are stored +128 (unsigned for vpdpbusd): start at -128 * sum(a of the group).
        const __m512i init = kQ8 ? _mm512_set1_epi32(c8[k * G + t_base + t]) : _mm512_setzero_si512();
        acc[t][k] = _mm512_fmadd_ps(sc[t], _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wv, av)), acc[t][k]);
      }
    }
    if constexpr (!kQ8) {
      const __m512 mn = _mm512_load_ps(reinterpret_cast<const float*>(panel) + kPanelRows);
      #pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) mins[t] = _mm512_fmadd_ps(mn, _mm512_set1_ps(as[t_base + t]), mins[t]);
    }
  }
  #pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    const __m512 t0 = _mm512_add_ps(acc[t][4], acc[t][0]), t1 = _mm512_add_ps(acc[t][5], acc[t][1]);
    const __m512 t2 = _mm512_add_ps(acc[t][6], acc[t][2]), t3 = _mm512_add_ps(acc[t][7], acc[t][3]);
    __m512 r = _mm512_add_ps(_mm512_add_ps(t0, t2), _mm512_add_ps(t1, t3));
    if constexpr (!kQ8) r = _mm512_add_ps(r, mins[t]);
    _mm512_mask_storeu_ps(y + t * ldy, rows, r);
  }
}

template <int G, bool kQ8>
void run_groups_lanes(const uint8_t* panel, int nrows, int64_t cols, const uint8_t* act, int64_t m, float* y,
                      int64_t ldy) {
  const int64_t nb = cols / 32;
  const __mmask16 rows = static_cast<__mmask16>((1u << nrows) - 1);
  const size_t group_bytes = static_cast<size_t>(nb) * act_block_bytes(G);
  for (int64_t g0 = 0; g0 < m; g0 += G, act += group_bytes) {
    const int in_group = static_cast<int>(std::min<int64_t>(G, m - g0));
    int t = 0;
    for (; t + 2 <= in_group; t += 2) kernel_lanes<G, 2, kQ8>(panel, nb, act, t, y + (g0 + t) * ldy, ldy, rows);
    if (t < in_group) kernel_lanes<G, 1, kQ8>(panel, nb, act, t, y + (g0 + t) * ldy, ldy, rows);
  }
}

template <int G, Mode kMode>
void run_groups(const uint8_t* panel, int nrows, int64_t cols, const uint8_t* act, int64_t m, float* y, int64_t ldy) {
  const int64_t nb = cols / 32;
  const __mmask16 rows = static_cast<__mmask16>((1u << nrows) - 1);
  const size_t group_bytes = static_cast<size_t>(nb) * act_block_bytes(G);
  int64_t t0 = 0;
  for (; t0 + G <= m; t0 += G, act += group_bytes) kernel<G, G, kMode>(panel, nb, act, y + t0 * ldy, ldy, rows);
  const int64_t rest = m - t0;
  if (rest <= 0) return;
  float* yt = y + t0 * ldy;
  switch (rest) {
    case 1: kernel<G, 1, kMode>(panel, nb, act, yt, ldy, rows); break;
    case 2: kernel<G, 2, kMode>(panel, nb, act, yt, ldy, rows); break;
    case 3: kernel<G, 3, kMode>(panel, nb, act, yt, ldy, rows); break;
    case 4: if constexpr (G > 4) kernel<G, 4, kMode>(panel, nb, act, yt, ldy, rows); break;
    case 5: if constexpr (G > 5) kernel<G, 5, kMode>(panel, nb, act, yt, ldy, rows); break;
    case 6: if constexpr (G > 6) kernel<G, 6, kMode>(panel, nb, act, yt, ldy, rows); break;
    case 7: if constexpr (G > 7) kernel<G, 7, kMode>(panel, nb, act, yt, ldy, rows); break;
    default: break;
  }
}

template <int G>
void run_mode(TensorType t, const uint8_t* panel, int nrows, int64_t cols, const uint8_t* act, int64_t m, float* y,
              int64_t ldy) {
  if (t == TensorType::Q4_1) return run_groups_lanes<G, false>(panel, nrows, cols, act, m, y, ldy);
  if (t == TensorType::Q8_0) return run_groups_lanes<G, true>(panel, nrows, cols, act, m, y, ldy);
  switch (mode_of(t)) {
    case Mode::kOffset: run_groups<G, Mode::kOffset>(panel, nrows, cols, act, m, y, ldy); break;
    case Mode::kMin: run_groups<G, Mode::kMin>(panel, nrows, cols, act, m, y, ldy); break;
  }
}

#endif

}  // namespace

bool gemm_supported(TensorType t) {
#if TAPPA_X86_GEMM512
  switch (t) {
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q8_0:
    case TensorType::Q5_K: return true;  // Q4_K / Q6_K: gemm_kquant.cpp (llama.cpp's order)
    default: return false;
  }
#else
  (void)t;
  return false;
#endif
}

bool gemm_in_token_order(TensorType t) {
  return gemm_supported(t) && (t == TensorType::Q4_1 || t == TensorType::Q8_0);
}

size_t gemm_panel_bytes(TensorType t, int64_t cols) { return static_cast<size_t>(cols / 32) * block_bytes(mode_of(t)); }

void gemm_repack_panel(TensorType t, const uint8_t* w, size_t row_stride, int nrows, int64_t cols, uint8_t* panel) {
#if TAPPA_X86_GEMM512
  if (nrows == kPanelRows) {
    switch (t) {
      case TensorType::Q4_0: return repack_panel16<TensorType::Q4_0>(w, row_stride, cols, panel);
      case TensorType::Q4_1: return repack_panel16<TensorType::Q4_1>(w, row_stride, cols, panel);
      case TensorType::Q8_0: return repack_panel16<TensorType::Q8_0>(w, row_stride, cols, panel);
      default: break;
    }
  }
  for (int r = 0; r < kPanelRows; ++r) {
    if (r < nrows) {
      repack_row(t, w + r * row_stride, cols, r, panel);
    } else {
      zero_row(t, cols, r, panel);
    }
  }
#else
  (void)t, (void)w, (void)row_stride, (void)nrows, (void)cols, (void)panel;
#endif
}

int gemm_group_size(int64_t m) { return m >= 8 ? 8 : 4; }

size_t gemm_act_bytes(int64_t m, int64_t cols, int group) {
  const int64_t groups = (m + group - 1) / group;
  return static_cast<size_t>(groups * (cols / 32)) * act_block_bytes(group);
}

void gemm_quantize_token(TensorType t, const float* x_t, int64_t cols, int64_t token, int group, uint8_t* act,
                         uint8_t* record) {
  const bool k256 = t == TensorType::Q5_K;
  quantize_activation(k256 ? ActKind::K256 : ActKind::B32, x_t, cols, record);
  const ActRow a = ActBuffer(record, cols).row(0);
  const int64_t nb = cols / 32;
  const int64_t g = token / group;
  const int ti = static_cast<int>(token % group);
  const size_t abb = act_block_bytes(group);
  uint8_t* base = act + static_cast<size_t>(g * nb) * abb;
  const int off = t == TensorType::Q4_0 ? 8 : t == TensorType::Q8_0 ? 128 : 0;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* blk = base + b * abb;
    for (int k = 0; k < 8; ++k) std::memcpy(blk + 4 * (k * group + ti), a.q + 32 * b + 4 * k, 4);
    float* d = reinterpret_cast<float*>(blk + 32 * group);
    float* s = d + group;
    int32_t* c0 = reinterpret_cast<int32_t*>(s + group);
    d[ti] = a.d[b];
    s[ti] = t == TensorType::Q4_1 ? a.s1[b] : a.s[b];  // Q4_1: ggml's fp16 Q8_1 sum
    c0[ti] = -off * a.isum[b];
    if (t == TensorType::Q8_0) {
      int32_t* c8 = c0 + group;
      for (int k = 0; k < 8; ++k) {
        const int8_t* qk = a.q + 32 * b + 4 * k;
        c8[k * group + ti] = -128 * (qk[0] + qk[1] + qk[2] + qk[3]);
      }
    }
  }
}

void gemm_run_panel(TensorType t, const uint8_t* panel, int nrows, int64_t cols, const uint8_t* act, int64_t m,
                    int group, float* y, int64_t ldy) {
#if TAPPA_X86_GEMM512
  if (group == 8) {
    run_mode<8>(t, panel, nrows, cols, act, m, y, ldy);
  } else {
    run_mode<4>(t, panel, nrows, cols, act, m, y, ldy);
  }
#else
  (void)t, (void)panel, (void)nrows, (void)cols, (void)act, (void)m, (void)group, (void)y, (void)ldy;
#endif
}

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
