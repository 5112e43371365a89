// fp32 dot products for F32, F16 and BF16 weights (F16 converted with F16C / AVX-512, BF16 by a
// 16-bit shift), and a register-tiled (up to 4 rows x 6 tokens) kernel for prompt processing.
#include "backend/cpu/simd.h"
#include "backend/cpu/vec_dot.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

namespace {

inline float scalar_w(TensorType t, const uint8_t* w, int64_t k) {
  switch (t) {
    case TensorType::F16: return quant::half_to_float(load_u16(w + 2 * k));
    case TensorType::BF16: return quant::bf16_to_fp32(load_u16(w + 2 * k));
    default: {
      float f;
      std::memcpy(&f, w + 4 * k, 4);
      return f;
    }
  }
}

#if defined(__AVX512F__) && TAPPA_X86_AVX2

constexpr int kLanes = 16;
using VecF = __m512;

template <TensorType T>
inline __m512 load_w(const uint8_t* w, int64_t k) {
  if constexpr (T == TensorType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(w) + k);
  } else if constexpr (T == TensorType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2 * k)));
  } else {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2 * k)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
}
inline __m512 load_x(const float* x, int64_t k) { return _mm512_loadu_ps(x + k); }
inline __m512 vzero() { return _mm512_setzero_ps(); }
inline __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(__m512 v) { return _mm512_reduce_add_ps(v); }
inline __m512 vadd(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }

#elif TAPPA_X86_AVX2

constexpr int kLanes = 8;
using VecF = __m256;

template <TensorType T>
inline __m256 load_w(const uint8_t* w, int64_t k) {
  if constexpr (T == TensorType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(w) + k);
  } else if constexpr (T == TensorType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * k)));
  } else {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
}
inline __m256 load_x(const float* x, int64_t k) { return _mm256_loadu_ps(x + k); }
inline __m256 vzero() { return _mm256_setzero_ps(); }
inline __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(__m256 v) { return hsum256(v); }
inline __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }

#endif

#if TAPPA_X86_AVX2

// Decode reads each weight once, so this product is bound by memory bandwidth, not by the FMAs: four
// independent accumulators keep the FMA latency chain (two accumulators: 32 columns per 4 cycles,
// already faster than DRAM delivers) out of the way when rows do come from cache. A software
// prefetch 1 KiB ahead was tried and measured slower than leaving the single sequential stream to
// the hardware prefetcher (docs/PERFORMANCE.md).
template <TensorType T>
float dot_impl(const uint8_t* w, const float* x, int64_t cols) {
  VecF a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  int64_t k = 0;
  for (; k + 4 * kLanes <= cols; k += 4 * kLanes) {
    a0 = vfma(load_w<T>(w, k), load_x(x, k), a0);
    a1 = vfma(load_w<T>(w, k + kLanes), load_x(x, k + kLanes), a1);
    a2 = vfma(load_w<T>(w, k + 2 * kLanes), load_x(x, k + 2 * kLanes), a2);
    a3 = vfma(load_w<T>(w, k + 3 * kLanes), load_x(x, k + 3 * kLanes), a3);
  }
  for (; k + kLanes <= cols; k += kLanes) a0 = vfma(load_w<T>(w, k), load_x(x, k), a0);
  float s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
  for (; k < cols; ++k) s += scalar_w(T, w, k) * x[k];
  return s;
}

template <TensorType T, int NR, int NT>
void tile_impl(const uint8_t* w, size_t row_stride, const float* x, int64_t ldx, int64_t cols, float* y, int64_t ldy) {
  VecF acc[NR][NT];
  #pragma GCC unroll 4
  for (int r = 0; r < NR; ++r)
    #pragma GCC unroll 6
    for (int t = 0; t < NT; ++t) acc[r][t] = vzero();
  int64_t k = 0;
  for (; k + kLanes <= cols; k += kLanes) {
    // The NR converted weight vectors stay in registers and each token's activations are loaded
    // once per step: NR + NT loads for NR x NT FMAs (loading per FMA made the tile load-bound).
    VecF wv[NR];
    #pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) wv[r] = load_w<T>(w + r * row_stride, k);
    #pragma GCC unroll 6
    for (int t = 0; t < NT; ++t) {
      const VecF xv = load_x(x + t * ldx, k);
      #pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) acc[r][t] = vfma(wv[r], xv, acc[r][t]);
    }
  }
  #pragma GCC unroll 4
  for (int r = 0; r < NR; ++r) {
    #pragma GCC unroll 6
    for (int t = 0; t < NT; ++t) {
      float s = vsum(acc[r][t]);
      for (int64_t kk = k; kk < cols; ++kk) s += scalar_w(T, w + r * row_stride, kk) * x[t * ldx + kk];
      y[t * ldy + r] = s;
    }
  }
}

#else

template <TensorType T>
float dot_impl(const uint8_t* w, const float* x, int64_t cols) {
  float s = 0.0f;
  for (int64_t k = 0; k < cols; ++k) s += scalar_w(T, w, k) * x[k];
  return s;
}

template <TensorType T, int NR, int NT>
void tile_impl(const uint8_t* w, size_t row_stride, const float* x, int64_t ldx, int64_t cols, float* y, int64_t ldy) {
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) y[t * ldy + r] = dot_impl<T>(w + r * row_stride, x + t * ldx, cols);
}

#endif

template <TensorType T, int NR>
void tile_nt(const uint8_t* w, size_t row_stride, const float* x, int64_t ldx, int nt, int64_t cols, float* y,
             int64_t ldy) {
  switch (nt) {
    case 1: tile_impl<T, NR, 1>(w, row_stride, x, ldx, cols, y, ldy); break;
    case 2: tile_impl<T, NR, 2>(w, row_stride, x, ldx, cols, y, ldy); break;
    case 3: tile_impl<T, NR, 3>(w, row_stride, x, ldx, cols, y, ldy); break;
    case 4: tile_impl<T, NR, 4>(w, row_stride, x, ldx, cols, y, ldy); break;
    case 5: tile_impl<T, NR, 5>(w, row_stride, x, ldx, cols, y, ldy); break;
    default: tile_impl<T, NR, 6>(w, row_stride, x, ldx, cols, y, ldy); break;
  }
}

template <TensorType T>
void tile_dispatch(const uint8_t* w, size_t row_stride, int nr, const float* x, int64_t ldx, int nt, int64_t cols,
                   float* y, int64_t ldy) {
  switch (nr) {
    case 1: tile_nt<T, 1>(w, row_stride, x, ldx, nt, cols, y, ldy); break;
    case 2: tile_nt<T, 2>(w, row_stride, x, ldx, nt, cols, y, ldy); break;
    case 3: tile_nt<T, 3>(w, row_stride, x, ldx, nt, cols, y, ldy); break;
    default: tile_nt<T, 4>(w, row_stride, x, ldx, nt, cols, y, ldy); break;
  }
}

}  // namespace

float vec_dot_f32(const uint8_t* w, const float* x, int64_t cols) { return dot_impl<TensorType::F32>(w, x, cols); }
float vec_dot_f16(const uint8_t* w, const float* x, int64_t cols) { return dot_impl<TensorType::F16>(w, x, cols); }
float vec_dot_bf16(const uint8_t* w, const float* x, int64_t cols) { return dot_impl<TensorType::BF16>(w, x, cols); }

void gemm_float_tile(TensorType type, const uint8_t* w, size_t row_stride, int nr, const float* x, int64_t ldx, int nt,
                     int64_t cols, float* y, int64_t ldy) {
  switch (type) {
    case TensorType::F16: tile_dispatch<TensorType::F16>(w, row_stride, nr, x, ldx, nt, cols, y, ldy); break;
    case TensorType::BF16: tile_dispatch<TensorType::BF16>(w, row_stride, nr, x, ldx, nt, cols, y, ldy); break;
    default: tile_dispatch<TensorType::F32>(w, row_stride, nr, x, ldx, nt, cols, y, ldy); break;
  }
}

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
