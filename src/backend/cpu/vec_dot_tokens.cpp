// Four weight rows against several tokens at once, each token computed exactly as vec_dot4_* computes
// it for that token alone (MatmulOrder::PerToken, batched decoding): the weight block is loaded, its
// nibbles unpacked and its scales converted once for all tokens, and then, token after token, the
// same integer dot products and the same float operations in the same order run into that token's
// own accumulators. Only the sharing changes, not one rounding: the per-token results are the
// single-token kernel's bits (tests/matmul_test.cpp MatmulOrder.PerTokenRowsEqualOneTokenCalls).
//
// Without AVX2 the fallback calls the single-token kernel per token (same results by construction).
#include "backend/cpu/simd.h"
#include "backend/cpu/vec_dot.h"
#include "quant/blocks.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

using quant::BlockQ4_1;
using quant::BlockQ8_0;

#if TAPPA_X86_AVX2
namespace {
// The four rows are read in parallel, a pattern the hardware prefetcher follows poorly (a third of
// the single-stream bandwidth from DRAM, measured for vec_dot4_*); fetching the same bytes linearly
// ahead restores it. Each step() advances by one block of the four rows.
class RowsPrefetch {
 public:
  static constexpr size_t kAhead = 6144;
  RowsPrefetch(const void* base, size_t step)
      : target_(static_cast<const char*>(base) + kAhead),
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
}  // namespace
#endif

#if TAPPA_X86_GEMM512

namespace {

// vec_dot4_q4_1's AVX-512 kernel (vec_dot_q.cpp), NT tokens per pass over the four rows.
template <int NT>
void q4_1_tokens(const uint8_t* w, size_t row_stride, const ActRow* a, int64_t cols, float* out, int64_t ldo) {
  const BlockQ4_1* x0 = reinterpret_cast<const BlockQ4_1*>(w);
  const BlockQ4_1* x1 = reinterpret_cast<const BlockQ4_1*>(w + row_stride);
  const BlockQ4_1* x2 = reinterpret_cast<const BlockQ4_1*>(w + 2 * row_stride);
  const BlockQ4_1* x3 = reinterpret_cast<const BlockQ4_1*>(w + 3 * row_stride);
  const int64_t nb = cols / 32;
  RowsPrefetch prefetch(w, 4 * sizeof(BlockQ4_1));
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  __m512 acc_lo[NT], acc_hi[NT];
  __m128 mins[NT];
  for (int t = 0; t < NT; ++t) {
    acc_lo[t] = _mm512_setzero_ps();
    acc_hi[t] = _mm512_setzero_ps();
    mins[t] = _mm_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m512i v = load_rows16(x0[b].qs, x1[b].qs, x2[b].qs, x3[b].qs);
    const __m512i vlo = _mm512_and_si512(v, m4), vhi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    const __m128i dm = _mm_setr_epi32(static_cast<int>(load_u32(&x0[b].d)), static_cast<int>(load_u32(&x1[b].d)),
                                      static_cast<int>(load_u32(&x2[b].d)), static_cast<int>(load_u32(&x3[b].d)));
    const __m256 dmf = _mm256_cvtph_ps(dm);
    const __m128 lo = _mm256_castps256_ps128(dmf), hi = _mm256_extractf128_ps(dmf, 1);
    const __m128 dw = _mm_shuffle_ps(lo, hi, 0x88);
    const __m128 mw = _mm_shuffle_ps(lo, hi, 0xDD);
    // Row r's scale in lanes 4r..4r+3, once for all tokens: spreading dw and then multiplying by a
    // token's da gives each lane the same product (same operands, one rounding) as the single-token
    // kernel's multiply-then-spread.
    const __m512 dws = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(dw));
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const int8_t* q = a[t].q + 32 * b;
      const __m512i alo = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
      const __m512i ahi = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16)));
      const __m512i slo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), vlo, alo);
      const __m512i shi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), vhi, ahi);
      mins[t] = _mm_fmadd_ps(mw, _mm_set1_ps(a[t].s1[b]), mins[t]);
      const __m512 sc = _mm512_mul_ps(dws, _mm512_set1_ps(a[t].d[b]));
      acc_lo[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(slo), acc_lo[t]);
      acc_hi[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(shi), acc_hi[t]);
    }
  }
  for (int t = 0; t < NT; ++t) {
    const __m512 s = _mm512_add_ps(acc_hi[t], acc_lo[t]);
    const __m512 u = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));
    const __m512 r = _mm512_add_ps(u, _mm512_permute_ps(u, 0xB1));
    const __m128 sums =
        _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), r));
    _mm_storeu_ps(out + t * ldo, _mm_add_ps(sums, mins[t]));
  }
}

// vec_dot4_q8_0's AVX-512 kernel, NT tokens per pass.
template <int NT>
void q8_0_tokens(const uint8_t* w, size_t row_stride, const ActRow* a, int64_t cols, float* out, int64_t ldo) {
  const BlockQ8_0* x0 = reinterpret_cast<const BlockQ8_0*>(w);
  const BlockQ8_0* x1 = reinterpret_cast<const BlockQ8_0*>(w + row_stride);
  const BlockQ8_0* x2 = reinterpret_cast<const BlockQ8_0*>(w + 2 * row_stride);
  const BlockQ8_0* x3 = reinterpret_cast<const BlockQ8_0*>(w + 3 * row_stride);
  const int64_t nb = cols / 32;
  RowsPrefetch prefetch(w, 4 * sizeof(BlockQ8_0));
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i lo_idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i hi_idx = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  __m512 acc01[NT], acc23[NT];
  for (int t = 0; t < NT; ++t) acc01[t] = acc23[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m512i v01 = _mm512_xor_si512(
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x0[b].qs))),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x1[b].qs)), 1),
        flip);
    const __m512i v23 = _mm512_xor_si512(
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x2[b].qs))),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x3[b].qs)), 1),
        flip);
    const __m128i dh = _mm_setr_epi16(static_cast<short>(x0[b].d), static_cast<short>(x1[b].d),
                                      static_cast<short>(x2[b].d), static_cast<short>(x3[b].d), 0, 0, 0, 0);
    const __m128 dw = _mm_cvtph_ps(dh);
    // Rows 0/1 and 2/3's scales spread over their lanes once for all tokens (see q4_1_tokens).
    const __m512 dw01 = _mm512_permutexvar_ps(lo_idx, _mm512_castps128_ps512(dw));
    const __m512 dw23 = _mm512_permutexvar_ps(hi_idx, _mm512_castps128_ps512(dw));
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const __m512i av = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].q + 32 * b)));
      const __m512i init =
          _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, av), 7));
      const __m512i s01 = _mm512_dpbusd_epi32(init, v01, av);
      const __m512i s23 = _mm512_dpbusd_epi32(init, v23, av);
      const __m512 da = _mm512_set1_ps(a[t].d[b]);
      acc01[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw01, da), _mm512_cvtepi32_ps(s01), acc01[t]);
      acc23[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw23, da), _mm512_cvtepi32_ps(s23), acc23[t]);
    }
  }
  for (int t = 0; t < NT; ++t) {
    float* o = out + t * ldo;
    o[0] = hsum256(_mm512_castps512_ps256(acc01[t]));
    o[1] = hsum256(_mm512_extractf32x8_ps(acc01[t], 1));
    o[2] = hsum256(_mm512_castps512_ps256(acc23[t]));
    o[3] = hsum256(_mm512_extractf32x8_ps(acc23[t], 1));
  }
}

}  // namespace

#elif TAPPA_X86_AVX2

namespace {

inline __m256 lane(__m128 sc, int r) {
  return _mm256_broadcastss_ps(r == 0   ? sc
                               : r == 1 ? _mm_shuffle_ps(sc, sc, 0x55)
                               : r == 2 ? _mm_shuffle_ps(sc, sc, 0xAA)
                                        : _mm_shuffle_ps(sc, sc, 0xFF));
}

// vec_dot4_q4_1's AVX2 kernel, NT tokens per pass: the four rows' nibbles unpacked once per block.
template <int NT>
void q4_1_tokens(const uint8_t* w, size_t row_stride, const ActRow* a, int64_t cols, float* out, int64_t ldo) {
  const BlockQ4_1* x[4];
  for (int r = 0; r < 4; ++r) x[r] = reinterpret_cast<const BlockQ4_1*>(w + r * row_stride);
  const int64_t nb = cols / 32;
  RowsPrefetch prefetch(w, 4 * sizeof(BlockQ4_1));
  __m256 acc[NT][4];
  __m128 mins[NT];
  for (int t = 0; t < NT; ++t) {
    for (int r = 0; r < 4; ++r) acc[t][r] = _mm256_setzero_ps();
    mins[t] = _mm_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m128i dm = _mm_setr_epi32(static_cast<int>(load_u32(&x[0][b].d)), static_cast<int>(load_u32(&x[1][b].d)),
                                      static_cast<int>(load_u32(&x[2][b].d)), static_cast<int>(load_u32(&x[3][b].d)));
    const __m256 dmf = _mm256_cvtph_ps(dm);
    const __m128 lo = _mm256_castps256_ps128(dmf), hi = _mm256_extractf128_ps(dmf, 1);
    const __m128 dw = _mm_shuffle_ps(lo, hi, 0x88);
    const __m128 mw = _mm_shuffle_ps(lo, hi, 0xDD);
    __m256i u[4];
    for (int r = 0; r < 4; ++r) u[r] = unpack_nibbles16(x[r][b].qs);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].q + 32 * b));
      const __m128 sc = _mm_mul_ps(dw, _mm_set1_ps(a[t].d[b]));
      mins[t] = _mm_fmadd_ps(mw, _mm_set1_ps(a[t].s1[b]), mins[t]);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const __m256i s = dot_u8s8(_mm256_setzero_si256(), u[r], av);
        acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), lane(sc, r), acc[t][r]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) {
    float mm[4];
    _mm_storeu_ps(mm, mins[t]);
    for (int r = 0; r < 4; ++r) out[t * ldo + r] = hsum256(acc[t][r]) + mm[r];
  }
}

// vec_dot4_q8_0's AVX2 kernel, NT tokens per pass.
template <int NT>
void q8_0_tokens(const uint8_t* w, size_t row_stride, const ActRow* a, int64_t cols, float* out, int64_t ldo) {
  const BlockQ8_0* x[4];
  for (int r = 0; r < 4; ++r) x[r] = reinterpret_cast<const BlockQ8_0*>(w + r * row_stride);
  const int64_t nb = cols / 32;
  RowsPrefetch prefetch(w, 4 * sizeof(BlockQ8_0));
  __m256 acc[NT][4];
  for (int t = 0; t < NT; ++t)
    for (int r = 0; r < 4; ++r) acc[t][r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const __m128i dh = _mm_setr_epi16(static_cast<short>(x[0][b].d), static_cast<short>(x[1][b].d),
                                      static_cast<short>(x[2][b].d), static_cast<short>(x[3][b].d), 0, 0, 0, 0);
    const __m128 dw = _mm_cvtph_ps(dh);
    __m256i wv[4], wabs[4];
    for (int r = 0; r < 4; ++r) {
      wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r][b].qs));
      wabs[r] = _mm256_sign_epi8(wv[r], wv[r]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t].q + 32 * b));
      const __m128 sc = _mm_mul_ps(dw, _mm_set1_ps(a[t].d[b]));
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const __m256i s = dot_u8s8(_mm256_setzero_si256(), wabs[r], _mm256_sign_epi8(av, wv[r]));
        acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), lane(sc, r), acc[t][r]);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int r = 0; r < 4; ++r) out[t * ldo + r] = hsum256(acc[t][r]);
}

}  // namespace

#endif

#if TAPPA_X86_AVX2

namespace {

struct Q4_1 {
  template <int NT>
  static void run(const uint8_t* w, size_t rs, const ActRow* a, int64_t cols, float* out, int64_t ldo) {
    q4_1_tokens<NT>(w, rs, a, cols, out, ldo);
  }
};
struct Q8_0 {
  template <int NT>
  static void run(const uint8_t* w, size_t rs, const ActRow* a, int64_t cols, float* out, int64_t ldo) {
    q8_0_tokens<NT>(w, rs, a, cols, out, ldo);
  }
};

// nt tokens in passes of MAX, the rest in one smaller pass.
template <class K, int MAX>
void by_passes(const uint8_t* w, size_t row_stride, const ActRow* a, int nt, int64_t cols, float* out, int64_t ldo) {
  int t = 0;
  for (; t + MAX <= nt; t += MAX) K::template run<MAX>(w, row_stride, a + t, cols, out + t * ldo, ldo);
  const int left = nt - t;
  if constexpr (MAX > 3)
    if (left == 3) K::template run<3>(w, row_stride, a + t, cols, out + t * ldo, ldo);
  if constexpr (MAX > 2)
    if (left == 2) K::template run<2>(w, row_stride, a + t, cols, out + t * ldo, ldo);
  if (left == 1) K::template run<1>(w, row_stride, a + t, cols, out + t * ldo, ldo);
}

// Tokens per pass: AVX-512 has 32 registers for four tokens' accumulators; AVX2's 16 hold two.
#if TAPPA_X86_GEMM512
constexpr int kTokensPerPass = 4;
#else
constexpr int kTokensPerPass = 2;
#endif

}  // namespace

#endif

#if TAPPA_X86_AVX2

void vec_dot4_tokens_q4_1(const uint8_t* w, size_t row_stride, const ActRow* a, int nt, int64_t cols, float* out,
                          int64_t ldo) {
  by_passes<Q4_1, kTokensPerPass>(w, row_stride, a, nt, cols, out, ldo);
}

void vec_dot4_tokens_q8_0(const uint8_t* w, size_t row_stride, const ActRow* a, int nt, int64_t cols, float* out,
                          int64_t ldo) {
  by_passes<Q8_0, kTokensPerPass>(w, row_stride, a, nt, cols, out, ldo);
}

#else

void vec_dot4_tokens_q4_1(const uint8_t* w, size_t row_stride, const ActRow* a, int nt, int64_t cols, float* out,
                          int64_t ldo) {
  for (int t = 0; t < nt; ++t) vec_dot4_q4_1(w, row_stride, a[t], cols, out + t * ldo);
}

void vec_dot4_tokens_q8_0(const uint8_t* w, size_t row_stride, const ActRow* a, int nt, int64_t cols, float* out,
                          int64_t ldo) {
  for (int t = 0; t < nt; ++t) vec_dot4_q8_0(w, row_stride, a[t], cols, out + t * ldo);
}

#endif

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
