// Float-weight GEMM on k-major fp32 panels (see gemm_float.h).
#include "backend/cpu/gemm_float.h"

#include <cstring>
#include <utility>

#include "backend/cpu/simd.h"
#include "quant/quant.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

namespace {

float weight_at(TensorType t, const uint8_t* row, int64_t k) {
  switch (t) {
    case TensorType::F16: return quant::half_to_float(load_u16(row + 2 * k));
    case TensorType::BF16: return quant::bf16_to_fp32(load_u16(row + 2 * k));
    default: {
      float f;
      std::memcpy(&f, row + 4 * k, 4);
      return f;
    }
  }
}

#if defined(__AVX512F__)

// 16 consecutive weights of one row as fp32.
inline __m512 load16(TensorType t, const uint8_t* row, int64_t k) {
  switch (t) {
    case TensorType::F16: return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k)));
    case TensorType::BF16: {
      const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k)));
      return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    }
    default: return _mm512_loadu_ps(reinterpret_cast<const float*>(row + 4 * k));
  }
}

// Tokens [0, NT) of one panel (kRowVecs vectors of 16 rows); `masks` select the rows to store.
constexpr int kRowVecs = kFloatPanelRows / 16;

template <int NT>
void kernel(const float* panel, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy,
            const __mmask16* masks) {
  __m512 acc[kRowVecs][NT];
  #pragma GCC unroll 4
  for (int v = 0; v < kRowVecs; ++v)
    #pragma GCC unroll 12
    for (int t = 0; t < NT; ++t) acc[v][t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < cols; ++k) {
    __m512 w[kRowVecs];
    #pragma GCC unroll 4
    for (int v = 0; v < kRowVecs; ++v) w[v] = _mm512_load_ps(panel + k * kFloatPanelRows + 16 * v);
    #pragma GCC unroll 12
    for (int t = 0; t < NT; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
      #pragma GCC unroll 4
      for (int v = 0; v < kRowVecs; ++v) acc[v][t] = _mm512_fmadd_ps(w[v], xb, acc[v][t]);
    }
  }
  #pragma GCC unroll 12
  for (int t = 0; t < NT; ++t)
    #pragma GCC unroll 4
    for (int v = 0; v < kRowVecs; ++v) _mm512_mask_storeu_ps(y + t * ldy + 16 * v, masks[v], acc[v][t]);
}

constexpr int kTileTokens = 24 / kRowVecs;  // 24 accumulators

template <int... N>
void run_tail(int nt, const float* panel, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy,
              const __mmask16* masks, std::integer_sequence<int, N...>) {
  // One kernel instantiation per remainder 1 .. kTileTokens - 1, picked at run time.
  ((nt == N + 1 ? kernel<N + 1>(panel, cols, x, ldx, y, ldy, masks) : void()), ...);
}

#endif

}  // namespace

bool gemm_float_panel_supported() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}

size_t gemm_float_panel_bytes(int64_t cols) { return static_cast<size_t>(cols) * kFloatPanelRows * sizeof(float); }

void gemm_float_repack(TensorType type, const uint8_t* w, size_t row_stride, int nrows, int64_t cols, float* panel) {
#if defined(__AVX512F__)
  // Blocks of 16 columns x 16 rows: load 16 rows' vectors, write them k-major through a small
  // transpose buffer (the repack is a few % of the kernel's work; clarity over shuffles here).
  alignas(64) float tile[16][16];
  for (int r0 = 0; r0 < kFloatPanelRows; r0 += 16) {
    int64_t k = 0;
    for (; k + 16 <= cols; k += 16) {
      for (int r = 0; r < 16; ++r) {
        const int row = r0 + r;
        _mm512_store_ps(tile[r], row < nrows ? load16(type, w + row * row_stride, k) : _mm512_setzero_ps());
      }
      for (int kk = 0; kk < 16; ++kk)
        for (int r = 0; r < 16; ++r) panel[(k + kk) * kFloatPanelRows + r0 + r] = tile[r][kk];
    }
    for (; k < cols; ++k)
      for (int r = 0; r < 16; ++r) {
        const int row = r0 + r;
        panel[k * kFloatPanelRows + r0 + r] = row < nrows ? weight_at(type, w + row * row_stride, k) : 0.0f;
      }
  }
#else
  for (int64_t k = 0; k < cols; ++k)
    for (int r = 0; r < kFloatPanelRows; ++r)
      panel[k * kFloatPanelRows + r] = r < nrows ? weight_at(type, w + r * row_stride, k) : 0.0f;
#endif
}

void gemm_float_run(const float* panel, int nrows, int64_t cols, const float* x, int64_t ldx, int64_t m, float* y,
                    int64_t ldy) {
#if defined(__AVX512F__)
  __mmask16 masks[kRowVecs];
  for (int v = 0; v < kRowVecs; ++v) {
    const int n = nrows - 16 * v;
    masks[v] = n >= 16 ? __mmask16(0xFFFF) : n > 0 ? static_cast<__mmask16>((1u << n) - 1u) : __mmask16(0);
  }
  int64_t t = 0;
  for (; t + kTileTokens <= m; t += kTileTokens)
    kernel<kTileTokens>(panel, cols, x + t * ldx, ldx, y + t * ldy, ldy, masks);
  if (t < m)
    run_tail(static_cast<int>(m - t), panel, cols, x + t * ldx, ldx, y + t * ldy, ldy, masks,
             std::make_integer_sequence<int, kTileTokens - 1>{});
#else
  for (int64_t t = 0; t < m; ++t)
    for (int r = 0; r < nrows; ++r) {
      float s = 0.0f;
      for (int64_t k = 0; k < cols; ++k) s += panel[k * kFloatPanelRows + r] * x[t * ldx + k];
      y[t * ldy + r] = s;
    }
#endif
}

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
