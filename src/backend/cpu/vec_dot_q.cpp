// Row dot products for Q4_0, Q4_1 and Q8_0 weights against B32-quantized activations.
//
// Per 32-element block b with weight scale dw and activation scale da = a.d[b]:
//   Q4_0: dw*da * sum((q-8)*a)  = dw*da * sum(q*a) - 8 * dw * a.s[b]
//   Q4_1: dw*da * sum(q*a) + m * a.s1[b]                (a.s1[b] = fp16(da_f32 * sum(a)), ggml's Q8_1 s)
//   Q8_0: dw*da * sum(q*a)
// The integer sums use unsigned-by-signed byte products (vpdpbusd / vpmaddubsw): the nibbles are
// unsigned as stored; Q8_0 uses |w| against sign(a, w) in the single-row kernels and w + 128 with an
// exact -128 * sum(a) correction in the AVX-512 four-row kernel.
#include <cmath>

#include "backend/cpu/simd.h"
#include "backend/cpu/vec_dot.h"
#include "quant/blocks.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

using quant::BlockQ4_0;
using quant::BlockQ4_1;
using quant::BlockQ8_0;

#if TAPPA_X86_AVX2

// Software prefetch for the four-row kernels. The four rows are read in parallel, a pattern the
// hardware prefetcher follows poorly (measured: a third of the single-stream bandwidth from DRAM);
// fetching the same bytes linearly kPrefetchBytes ahead restores it. Each call to step() advances
// the read position by `step` bytes and prefetches every cache line that has come into range once.
// The four rows must be contiguous (row_stride == bytes per row, as in every GGUF weight).
class LinearPrefetch {
 public:
  static constexpr size_t kPrefetchBytes = 6144;
  LinearPrefetch(const void* base, size_t step)
      : target_(static_cast<const char*>(base) + kPrefetchBytes),
        next_(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(target_) & ~uintptr_t{63})),
        step_(step) {}
  void step() {
    target_ += step_;
    while (next_ < target_) {
      _mm_prefetch(next_, _MM_HINT_T0);
      next_ += 64;
    }
  }

 private:
  const char* target_;
  const char* next_;
  size_t step_;
};

float vec_dot_q4_0(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ4_0*>(w);
  const int64_t nb = cols / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float corr = 0.0f;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const float d0 = half_to_float_fast(x[b].d), d1 = half_to_float_fast(x[b + 1].d);
    const __m256i s0 = dot_u8s8(_mm256_setzero_si256(), unpack_nibbles16(x[b].qs),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b)));
    const __m256i s1 = dot_u8s8(_mm256_setzero_si256(), unpack_nibbles16(x[b + 1].qs),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b + 32)));
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d0 * a.d[b]), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_set1_ps(d1 * a.d[b + 1]), acc1);
    corr += d0 * a.s[b] + d1 * a.s[b + 1];
  }
  for (; b < nb; ++b) {
    const float d0 = half_to_float_fast(x[b].d);
    const __m256i s0 = dot_u8s8(_mm256_setzero_si256(), unpack_nibbles16(x[b].qs),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b)));
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d0 * a.d[b]), acc0);
    corr += d0 * a.s[b];
  }
  return hsum256(_mm256_add_ps(acc0, acc1)) - 8.0f * corr;
}

// Q4_1 and Q8_0 follow ggml's x86 order exactly (ggml_vec_dot_q4_1_q8_1 / _q8_0_q8_0): one 8-lane
// accumulator, lane j holding elements 4j..4j+3 of every block, acc = fma(dw*da, lane sum, acc)
// block after block, the 8 lanes folded as hsum256 does, and for Q4_1 the min terms accumulated
// separately with a scalar FMA and added last. Same operations, same roundings: bit-identical
// dot products, which is what keeps tappa's logits on llama.cpp's (docs/ORACLE.md).
float vec_dot_q4_1(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ4_1*>(w);
  const int64_t nb = cols / 32;
  __m256 acc = _mm256_setzero_ps();
  float mins = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const float d = half_to_float_fast(x[b].d);
    mins = std::fma(half_to_float_fast(x[b].m), a.s1[b], mins);
    const __m256i s = dot_u8s8(_mm256_setzero_si256(), unpack_nibbles16(x[b].qs),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b)));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d[b]), _mm256_cvtepi32_ps(s), acc);
  }
  return hsum256(acc) + mins;
}

namespace {
inline __m256i dot_q8_block(const int8_t* wq, const int8_t* aq) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq));
  const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
  return dot_u8s8(_mm256_setzero_si256(), _mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
}
}  // namespace

float vec_dot_q8_0(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ8_0*>(w);
  const int64_t nb = cols / 32;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i s = dot_q8_block(x[b].qs, a.q + 32 * b);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float_fast(x[b].d) * a.d[b]), _mm256_cvtepi32_ps(s), acc);
  }
  return hsum256(acc);
}

#if TAPPA_X86_GEMM512

// AVX-512 VNNI, four rows at a time (the decode path).
//
// Q4_0 / Q4_1: the 16 nibble bytes of the four rows' block b fill one zmm (row r in 128-bit lane r);
// masking gives the elements 0..15 of every row, shifting the elements 16..31, and the activation's
// halves are broadcast to all four lanes, so two vpdpbusd produce four partial sums per row. The
// per-row scales are spread over the lanes with one permute.
namespace {

// Sum of each group of four lanes: out[r] = v[4r] + ... + v[4r+3].
inline __m128 sum_groups4(__m512 v) {
  const __m128 g0 = _mm512_castps512_ps128(v), g1 = _mm512_extractf32x4_ps(v, 1);
  const __m128 g2 = _mm512_extractf32x4_ps(v, 2), g3 = _mm512_extractf32x4_ps(v, 3);
  const __m128 s01 = _mm_hadd_ps(g0, g1), s23 = _mm_hadd_ps(g2, g3);  // [g0a g0b g1a g1b], [g2a ...]
  return _mm_hadd_ps(s01, s23);
}

// Q4_0 (Q4_1 has its own kernel below, in llama.cpp's lane order).
void dot4_q4_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  const BlockQ4_0* x0 = reinterpret_cast<const BlockQ4_0*>(w);
  const BlockQ4_0* x1 = reinterpret_cast<const BlockQ4_0*>(w + row_stride);
  const BlockQ4_0* x2 = reinterpret_cast<const BlockQ4_0*>(w + 2 * row_stride);
  const BlockQ4_0* x3 = reinterpret_cast<const BlockQ4_0*>(w + 3 * row_stride);
  const int64_t nb = cols / 32;
  LinearPrefetch prefetch(w, 4 * sizeof(BlockQ4_0));
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  __m512 acc = _mm512_setzero_ps();
  __m128 mins = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m512i alo = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.q + 32 * b)));
    const __m512i ahi = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.q + 32 * b + 16)));
    const __m512i v = load_rows16(x0[b].qs, x1[b].qs, x2[b].qs, x3[b].qs);
    __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v, m4), alo);
    isum = _mm512_dpbusd_epi32(isum, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), ahi);
    const __m128i dh = _mm_setr_epi16(static_cast<short>(x0[b].d), static_cast<short>(x1[b].d),
                                      static_cast<short>(x2[b].d), static_cast<short>(x3[b].d), 0, 0, 0, 0);
    const __m128 dw = _mm_cvtph_ps(dh);
    // x = d q - 8 d: the "min" is -8 d (the factor -8 is applied at the end)
    mins = _mm_fmadd_ps(dw, _mm_set1_ps(a.s[b]), mins);
    const __m512 sc = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_set1_ps(a.d[b]))));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), sc, acc);
  }
  mins = _mm_mul_ps(mins, _mm_set1_ps(-8.0f));
  _mm_storeu_ps(out, _mm_add_ps(sum_groups4(acc), mins));
}

}  // namespace

void vec_dot4_q4_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  dot4_q4_0(w, row_stride, a, cols, out);
}

// Q4_1, four rows, in ggml's order (see vec_dot_q4_1): the low-nibble vpdpbusd leaves ggml's lanes
// 0..3 of each row (elements 0..15) and the high-nibble one its lanes 4..7, so two float
// accumulators hold exactly ggml's eight lanes per row. The fold lo + hi is hsum256's first step;
// then (t0 + t2) + (t1 + t3) per row.
void vec_dot4_q4_1(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  const BlockQ4_1* x0 = reinterpret_cast<const BlockQ4_1*>(w);
  const BlockQ4_1* x1 = reinterpret_cast<const BlockQ4_1*>(w + row_stride);
  const BlockQ4_1* x2 = reinterpret_cast<const BlockQ4_1*>(w + 2 * row_stride);
  const BlockQ4_1* x3 = reinterpret_cast<const BlockQ4_1*>(w + 3 * row_stride);
  const int64_t nb = cols / 32;
  LinearPrefetch prefetch(w, 4 * sizeof(BlockQ4_1));
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  __m512 acc_lo = _mm512_setzero_ps(), acc_hi = _mm512_setzero_ps();
  __m128 mins = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m512i alo = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.q + 32 * b)));
    const __m512i ahi = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.q + 32 * b + 16)));
    const __m512i v = load_rows16(x0[b].qs, x1[b].qs, x2[b].qs, x3[b].qs);
    const __m512i slo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v, m4), alo);
    const __m512i shi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), ahi);
    const __m128i dm = _mm_setr_epi32(static_cast<int>(load_u32(&x0[b].d)), static_cast<int>(load_u32(&x1[b].d)),
                                      static_cast<int>(load_u32(&x2[b].d)), static_cast<int>(load_u32(&x3[b].d)));
    const __m256 dmf = _mm256_cvtph_ps(dm);  // d0 m0 d1 m1 | d2 m2 d3 m3
    const __m128 lo = _mm256_castps256_ps128(dmf), hi = _mm256_extractf128_ps(dmf, 1);
    const __m128 dw = _mm_shuffle_ps(lo, hi, 0x88);
    const __m128 mw = _mm_shuffle_ps(lo, hi, 0xDD);
    mins = _mm_fmadd_ps(mw, _mm_set1_ps(a.s1[b]), mins);
    const __m512 sc = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_set1_ps(a.d[b]))));
    acc_lo = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(slo), acc_lo);
    acc_hi = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(shi), acc_hi);
  }
  const __m512 t = _mm512_add_ps(acc_hi, acc_lo);                            // t0..t3 per row
  const __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));             // t0+t2, t1+t3
  const __m512 r = _mm512_add_ps(u, _mm512_permute_ps(u, 0xB1));             // (t0+t2)+(t1+t3)
  const __m128 sums = _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), r));
  _mm_storeu_ps(out, _mm_add_ps(sums, mins));
}

// Q8_0: two rows' blocks per zmm against the activation block broadcast twice. The signed weights
// are offset to unsigned (w ^ 0x80 = w + 128) for vpdpbusd and the offset is removed exactly by
// starting one lane of each row's sum at -128 * (sum of the activation codes).
void vec_dot4_q8_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  const BlockQ8_0* x0 = reinterpret_cast<const BlockQ8_0*>(w);
  const BlockQ8_0* x1 = reinterpret_cast<const BlockQ8_0*>(w + row_stride);
  const BlockQ8_0* x2 = reinterpret_cast<const BlockQ8_0*>(w + 2 * row_stride);
  const BlockQ8_0* x3 = reinterpret_cast<const BlockQ8_0*>(w + 3 * row_stride);
  const int64_t nb = cols / 32;
  LinearPrefetch prefetch(w, 4 * sizeof(BlockQ8_0));
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i lo_idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i hi_idx = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  __m512 acc01 = _mm512_setzero_ps(), acc23 = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m512i av = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b)));
    // Each lane starts at -128 * (its four activation codes' sum), so every lane ends exactly at
    // ggml's lane sum of w * a (the 8 lanes per row are ggml's lanes; see vec_dot_q8_0).
    const __m512i init = _mm512_sub_epi32(_mm512_setzero_si512(),
                                          _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, av), 7));
    const __m512i v01 = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x0[b].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x1[b].qs)), 1);
    const __m512i v23 = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x2[b].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x3[b].qs)), 1);
    const __m512i s01 = _mm512_dpbusd_epi32(init, _mm512_xor_si512(v01, flip), av);
    const __m512i s23 = _mm512_dpbusd_epi32(init, _mm512_xor_si512(v23, flip), av);
    const __m128i dh = _mm_setr_epi16(static_cast<short>(x0[b].d), static_cast<short>(x1[b].d),
                                      static_cast<short>(x2[b].d), static_cast<short>(x3[b].d), 0, 0, 0, 0);
    const __m512 sc = _mm512_castps128_ps512(_mm_mul_ps(_mm_cvtph_ps(dh), _mm_set1_ps(a.d[b])));
    acc01 = _mm512_fmadd_ps(_mm512_permutexvar_ps(lo_idx, sc), _mm512_cvtepi32_ps(s01), acc01);
    acc23 = _mm512_fmadd_ps(_mm512_permutexvar_ps(hi_idx, sc), _mm512_cvtepi32_ps(s23), acc23);
  }
  out[0] = hsum256(_mm512_castps512_ps256(acc01));
  out[1] = hsum256(_mm512_extractf32x8_ps(acc01, 1));
  out[2] = hsum256(_mm512_castps512_ps256(acc23));
  out[3] = hsum256(_mm512_extractf32x8_ps(acc23, 1));
}

#else

// Four rows at a time: the activation block is loaded once and used four times.
void vec_dot4_q4_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  const BlockQ4_0* x[4];
  for (int r = 0; r < 4; ++r) x[r] = reinterpret_cast<const BlockQ4_0*>(w + r * row_stride);
  const int64_t nb = cols / 32;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  __m128 corr = _mm_setzero_ps();
  LinearPrefetch prefetch(w, 4 * sizeof(BlockQ4_0));
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b));
    const __m128i dh = _mm_setr_epi16(static_cast<short>(x[0][b].d), static_cast<short>(x[1][b].d),
                                      static_cast<short>(x[2][b].d), static_cast<short>(x[3][b].d), 0, 0, 0, 0);
    const __m128 dw = _mm_cvtph_ps(dh);
    const __m128 sc = _mm_mul_ps(dw, _mm_set1_ps(a.d[b]));
    corr = _mm_fmadd_ps(dw, _mm_set1_ps(a.s[b]), corr);
    #pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m256i s = dot_u8s8(_mm256_setzero_si256(), unpack_nibbles16(x[r][b].qs), av);
      const __m256 scr = _mm256_broadcastss_ps(r == 0   ? sc
                                               : r == 1 ? _mm_shuffle_ps(sc, sc, 0x55)
                                               : r == 2 ? _mm_shuffle_ps(sc, sc, 0xAA)
                                                        : _mm_shuffle_ps(sc, sc, 0xFF));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scr, acc[r]);
    }
  }
  float c[4];
  _mm_storeu_ps(c, corr);
  for (int r = 0; r < 4; ++r) out[r] = hsum256(acc[r]) - 8.0f * c[r];
}

void vec_dot4_q4_1(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  const BlockQ4_1* x[4];
  for (int r = 0; r < 4; ++r) x[r] = reinterpret_cast<const BlockQ4_1*>(w + r * row_stride);
  const int64_t nb = cols / 32;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  __m128 mins = _mm_setzero_ps();
  LinearPrefetch prefetch(w, 4 * sizeof(BlockQ4_1));
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b));
    // d and m of four rows: (d0 m0 d1 m1 d2 m2 d3 m3) as halves.
    const __m128i dm = _mm_setr_epi32(static_cast<int>(load_u32(&x[0][b].d)), static_cast<int>(load_u32(&x[1][b].d)),
                                      static_cast<int>(load_u32(&x[2][b].d)), static_cast<int>(load_u32(&x[3][b].d)));
    const __m256 dmf = _mm256_cvtph_ps(dm);  // d0 m0 d1 m1 | d2 m2 d3 m3
    const __m128 lo = _mm256_castps256_ps128(dmf), hi = _mm256_extractf128_ps(dmf, 1);
    const __m128 dw = _mm_shuffle_ps(lo, hi, 0x88);  // d0 d1 d2 d3
    const __m128 mw = _mm_shuffle_ps(lo, hi, 0xDD);  // m0 m1 m2 m3
    const __m128 sc = _mm_mul_ps(dw, _mm_set1_ps(a.d[b]));
    mins = _mm_fmadd_ps(mw, _mm_set1_ps(a.s1[b]), mins);
    #pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m256i s = dot_u8s8(_mm256_setzero_si256(), unpack_nibbles16(x[r][b].qs), av);
      const __m256 scr = _mm256_broadcastss_ps(r == 0   ? sc
                                               : r == 1 ? _mm_shuffle_ps(sc, sc, 0x55)
                                               : r == 2 ? _mm_shuffle_ps(sc, sc, 0xAA)
                                                        : _mm_shuffle_ps(sc, sc, 0xFF));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scr, acc[r]);
    }
  }
  float mm[4];
  _mm_storeu_ps(mm, mins);
  for (int r = 0; r < 4; ++r) out[r] = hsum256(acc[r]) + mm[r];
}

void vec_dot4_q8_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  const BlockQ8_0* x[4];
  for (int r = 0; r < 4; ++r) x[r] = reinterpret_cast<const BlockQ8_0*>(w + r * row_stride);
  const int64_t nb = cols / 32;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  LinearPrefetch prefetch(w, 4 * sizeof(BlockQ8_0));
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 32 * b));
    const __m128i dh = _mm_setr_epi16(static_cast<short>(x[0][b].d), static_cast<short>(x[1][b].d),
                                      static_cast<short>(x[2][b].d), static_cast<short>(x[3][b].d), 0, 0, 0, 0);
    const __m128 sc = _mm_mul_ps(_mm_cvtph_ps(dh), _mm_set1_ps(a.d[b]));
    #pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r][b].qs));
      const __m256i s = dot_u8s8(_mm256_setzero_si256(), _mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
      const __m256 scr = _mm256_broadcastss_ps(r == 0   ? sc
                                               : r == 1 ? _mm_shuffle_ps(sc, sc, 0x55)
                                               : r == 2 ? _mm_shuffle_ps(sc, sc, 0xAA)
                                                        : _mm_shuffle_ps(sc, sc, 0xFF));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scr, acc[r]);
    }
  }
  for (int r = 0; r < 4; ++r) out[r] = hsum256(acc[r]);
}

#endif  // TAPPA_X86_GEMM512

#else  // portable scalar

namespace {
inline int dot_nibbles(const uint8_t* qs, const int8_t* aq) {
  int s = 0;
  for (int j = 0; j < 16; ++j) s += (qs[j] & 0x0F) * aq[j] + (qs[j] >> 4) * aq[j + 16];
  return s;
}
}  // namespace

float vec_dot_q4_0(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ4_0*>(w);
  float sum = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float d = half_to_float_fast(x[b].d);
    sum += d * a.d[b] * static_cast<float>(dot_nibbles(x[b].qs, a.q + 32 * b) - 8 * a.isum[b]);
  }
  return sum;
}

float vec_dot_q4_1(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ4_1*>(w);
  float sum = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float d = half_to_float_fast(x[b].d), m = half_to_float_fast(x[b].m);
    sum += d * a.d[b] * static_cast<float>(dot_nibbles(x[b].qs, a.q + 32 * b)) + m * a.s1[b];
  }
  return sum;
}

float vec_dot_q8_0(const uint8_t* w, const ActRow& a, int64_t cols) {
  const auto* x = reinterpret_cast<const BlockQ8_0*>(w);
  float sum = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b) {
    int s = 0;
    for (int j = 0; j < 32; ++j) s += x[b].qs[j] * a.q[32 * b + j];
    sum += half_to_float_fast(x[b].d) * a.d[b] * static_cast<float>(s);
  }
  return sum;
}

void vec_dot4_q4_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  for (int r = 0; r < 4; ++r) out[r] = vec_dot_q4_0(w + r * row_stride, a, cols);
}
void vec_dot4_q4_1(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  for (int r = 0; r < 4; ++r) out[r] = vec_dot_q4_1(w + r * row_stride, a, cols);
}
void vec_dot4_q8_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out) {
  for (int r = 0; r < 4; ++r) out[r] = vec_dot_q8_0(w + r * row_stride, a, cols);
}

#endif

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
