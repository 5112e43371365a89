// Attention over f16 / bf16 / q8_0 / q4_0 caches (see attention_kv_quant.h). Three tiers, chosen at
// compile time like attention.cpp: AVX-512 (16 lanes), AVX2 + FMA + F16C (8 lanes), portable scalar.
// Each tier provides the same three primitives — decode up to 16 stored rows into an fp32 tile,
// score a tile against one query, add a tile's p-weighted rows into the group's accumulators — and
// the driver at the end is shared. Per element the tiers compute the same products; they differ only
// in how the fp32 sums are associated (lanes), which the bounds of the parity test cover.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "backend/cpu/attention_kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/exp_approx.h"
#include "kv/kv_format.h"
#include "quant/blocks.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define TAPPA_KVQ_512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define TAPPA_KVQ_256 1
#endif

namespace tappa::cpu {
TAPPA_ISA_BEGIN
namespace {

constexpr int kTile = 16;  // rows decoded at a time (one 16-key score reduction)
constexpr int kMaxHeads = 64;

inline uint16_t u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline float fp16(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return quant::half_to_float(h);
#endif
}

inline float bf16(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// --- decoding stored rows into fp32 ---------------------------------------------------------------
// Every value is exact in fp32: an f16/bf16 value widens exactly, and d · q (an fp16 scale times an
// integer of at most 8 bits) has at most 19 significant bits.

void decode_row_scalar(KvType t, const uint8_t* s, float* y, int HD) {
  switch (t) {
    case KvType::f32: std::memcpy(y, s, sizeof(float) * static_cast<size_t>(HD)); break;
    case KvType::f16:
      for (int i = 0; i < HD; ++i) y[i] = fp16(u16(s + 2 * i));
      break;
    case KvType::bf16:
      for (int i = 0; i < HD; ++i) y[i] = bf16(u16(s + 2 * i));
      break;
    case KvType::q8_0:
      for (int b = 0; b < HD / 32; ++b, s += 34) {
        const float d = fp16(u16(s));
        for (int i = 0; i < 32; ++i) y[32 * b + i] = d * static_cast<float>(static_cast<int8_t>(s[2 + i]));
      }
      break;
    case KvType::q4_0:
      for (int b = 0; b < HD / 32; ++b, s += 18) {
        const float d = fp16(u16(s));
        for (int i = 0; i < 16; ++i) {
          y[32 * b + i] = d * static_cast<float>((s[2 + i] & 0x0F) - 8);
          y[32 * b + 16 + i] = d * static_cast<float>((s[2 + i] >> 4) - 8);
        }
      }
      break;
  }
}

#if TAPPA_KVQ_512
void decode_row_simd(KvType t, const uint8_t* s, float* y, int HD) {
  switch (t) {
    case KvType::f32: std::memcpy(y, s, sizeof(float) * static_cast<size_t>(HD)); break;
    case KvType::f16:
      for (int c = 0; c < HD; c += 16)
        _mm512_storeu_ps(y + c, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 2 * c))));
      break;
    case KvType::bf16:
      for (int c = 0; c < HD; c += 16) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 2 * c)));
        _mm512_storeu_ps(y + c, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
      }
      break;
    case KvType::q8_0:
      for (int b = 0; b < HD / 32; ++b, s += 34) {
        const __m512 d = _mm512_set1_ps(fp16(u16(s)));
        const __m512 x0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2))));
        const __m512 x1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 18))));
        _mm512_storeu_ps(y + 32 * b, _mm512_mul_ps(x0, d));
        _mm512_storeu_ps(y + 32 * b + 16, _mm512_mul_ps(x1, d));
      }
      break;
    case KvType::q4_0: {
      const __m512i lo_mask = _mm512_set1_epi32(0x0F), eight = _mm512_set1_epi32(8);
      for (int b = 0; b < HD / 32; ++b, s += 18) {
        const __m512 d = _mm512_set1_ps(fp16(u16(s)));
        const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2)));
        const __m512i lo = _mm512_sub_epi32(_mm512_and_si512(x, lo_mask), eight);
        const __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(x, 4), eight);
        _mm512_storeu_ps(y + 32 * b, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d));
        _mm512_storeu_ps(y + 32 * b + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d));
      }
      break;
    }
  }
}
constexpr int kLanes = 16;
#elif TAPPA_KVQ_256
void decode_row_simd(KvType t, const uint8_t* s, float* y, int HD) {
  switch (t) {
    case KvType::f32: std::memcpy(y, s, sizeof(float) * static_cast<size_t>(HD)); break;
    case KvType::f16:
      for (int c = 0; c < HD; c += 8)
        _mm256_storeu_ps(y + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * c))));
      break;
    case KvType::bf16:
      for (int c = 0; c < HD; c += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * c)));
        _mm256_storeu_ps(y + c, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
      break;
    case KvType::q8_0:
      for (int b = 0; b < HD / 32; ++b, s += 34) {
        const __m256 d = _mm256_set1_ps(fp16(u16(s)));
        for (int c = 0; c < 4; ++c) {
          const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + 2 + 8 * c));
          _mm256_storeu_ps(y + 32 * b + 8 * c, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
        }
      }
      break;
    case KvType::q4_0: {
      const __m256i lo_mask = _mm256_set1_epi32(0x0F), eight = _mm256_set1_epi32(8);
      for (int b = 0; b < HD / 32; ++b, s += 18) {
        const __m256 d = _mm256_set1_ps(fp16(u16(s)));
        for (int c = 0; c < 2; ++c) {
          const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + 2 + 8 * c)));
          const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(x, lo_mask), eight);
          const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(x, 4), eight);
          _mm256_storeu_ps(y + 32 * b + 8 * c, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
          _mm256_storeu_ps(y + 32 * b + 16 + 8 * c, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
        }
      }
      break;
    }
  }
}
constexpr int kLanes = 8;
#else
constexpr int kLanes = 0;
#endif

// Rows [j0, j0 + n) of a list as fp32 rows of HD floats: the stored rows themselves for an fp32 list,
// else decoded into `tile`.
const float* decode_rows(KvType t, const uint8_t* base, size_t stride, int j0, int n, int HD, bool simd, float* tile) {
  if (t == KvType::f32) return reinterpret_cast<const float*>(base + static_cast<size_t>(j0) * stride);
  for (int r = 0; r < n; ++r) {
    const uint8_t* s = base + static_cast<size_t>(j0 + r) * stride;
#if TAPPA_KVQ_512 || TAPPA_KVQ_256
    if (simd) {
      decode_row_simd(t, s, tile + static_cast<size_t>(r) * HD, HD);
      continue;
    }
#endif
    decode_row_scalar(t, s, tile + static_cast<size_t>(r) * HD, HD);
  }
  return tile;
}

// --- scores: out[r] = (q · T[r]) * scale for the n <= 16 rows of a tile ------------------------------

#if TAPPA_KVQ_512
// 16 rows at once: one accumulator per row, then a transposing reduction shared by the 16 rows (the
// pairings of _mm512_reduce_add_ps, as in attention.cpp's dot16_ggml).
inline __m512 dot16(const float* T, int HD, const float* q) {
  __m512 v[16];
  for (int k = 0; k < 16; ++k) {
    const float* x = T + static_cast<size_t>(k) * HD;
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_loadu_ps(q));
    for (int c = 16; c < HD; c += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(q + c), a);
    v[k] = a;
  }
  __m512 w[8];
  for (int m = 0; m < 8; ++m)
    w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0x44), _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0xEE));
  __m512 x[4];
  for (int p = 0; p < 4; ++p)
    x[p] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0x88), _mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0xDD));
  const __m512 y0 = _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], 0x44), _mm512_shuffle_ps(x[0], x[1], 0xEE));
  const __m512 y1 = _mm512_add_ps(_mm512_shuffle_ps(x[2], x[3], 0x44), _mm512_shuffle_ps(x[2], x[3], 0xEE));
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(y0, y1, 0x88), _mm512_shuffle_ps(y0, y1, 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, z);
}

void score_tile(const float* T, int n, int HD, const float* q, float scale, float* out, bool simd) {
  if (simd && n == 16) {
    _mm512_storeu_ps(out, _mm512_mul_ps(dot16(T, HD, q), _mm512_set1_ps(scale)));
    return;
  }
  for (int r = 0; r < n; ++r) {
    const float* x = T + static_cast<size_t>(r) * HD;
    if (simd) {
      __m512 a = _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_loadu_ps(q));
      for (int c = 16; c < HD; c += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(q + c), a);
      out[r] = _mm512_reduce_add_ps(a) * scale;
    } else {
      float s = 0.0f;
      for (int c = 0; c < HD; ++c) s = std::fma(x[c], q[c], s);
      out[r] = s * scale;
    }
  }
}
#elif TAPPA_KVQ_256
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void score_tile(const float* T, int n, int HD, const float* q, float scale, float* out, bool simd) {
  for (int r = 0; r < n; ++r) {
    const float* x = T + static_cast<size_t>(r) * HD;
    if (simd) {
      __m256 a = _mm256_mul_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(q));
      for (int c = 8; c < HD; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(q + c), a);
      out[r] = hsum8(a) * scale;
    } else {
      float s = 0.0f;
      for (int c = 0; c < HD; ++c) s = std::fma(x[c], q[c], s);
      out[r] = s * scale;
    }
  }
}
#else
void score_tile(const float* T, int n, int HD, const float* q, float scale, float* out, bool) {
  for (int r = 0; r < n; ++r) {
    const float* x = T + static_cast<size_t>(r) * HD;
    float s = 0.0f;
    for (int c = 0; c < HD; ++c) s = std::fma(x[c], q[c], s);
    out[r] = s * scale;
  }
}
#endif

// --- p·V: acc[h][c] += Σ_r p[h][r] · T[r][c], rows in increasing order -------------------------------

#if TAPPA_KVQ_512
// G heads (<= 4) × 64 columns in registers over the tile's rows: each tile row is loaded once for the
// G heads and each accumulator stored once per tile.
template <int G>
void pv_wide(const float* T, int n, int HD, int c0, const float* const* p, float* const* acc) {
  __m512 a[G][4];
  for (int h = 0; h < G; ++h)
    for (int i = 0; i < 4; ++i) a[h][i] = _mm512_loadu_ps(acc[h] + c0 + 16 * i);
  for (int r = 0; r < n; ++r) {
    const float* x = T + static_cast<size_t>(r) * HD + c0;
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16), v2 = _mm512_loadu_ps(x + 32), v3 = _mm512_loadu_ps(x + 48);
    for (int h = 0; h < G; ++h) {
      const __m512 ph = _mm512_set1_ps(p[h][r]);
      a[h][0] = _mm512_fmadd_ps(v0, ph, a[h][0]);
      a[h][1] = _mm512_fmadd_ps(v1, ph, a[h][1]);
      a[h][2] = _mm512_fmadd_ps(v2, ph, a[h][2]);
      a[h][3] = _mm512_fmadd_ps(v3, ph, a[h][3]);
    }
  }
  for (int h = 0; h < G; ++h)
    for (int i = 0; i < 4; ++i) _mm512_storeu_ps(acc[h] + c0 + 16 * i, a[h][i]);
}

template <int G>
void pv_narrow(const float* T, int n, int HD, int c0, const float* const* p, float* const* acc) {
  __m512 a[G];
  for (int h = 0; h < G; ++h) a[h] = _mm512_loadu_ps(acc[h] + c0);
  for (int r = 0; r < n; ++r) {
    const __m512 v = _mm512_loadu_ps(T + static_cast<size_t>(r) * HD + c0);
    for (int h = 0; h < G; ++h) a[h] = _mm512_fmadd_ps(v, _mm512_set1_ps(p[h][r]), a[h]);
  }
  for (int h = 0; h < G; ++h) _mm512_storeu_ps(acc[h] + c0, a[h]);
}
#define TAPPA_KVQ_BLOCK 64
#define TAPPA_KVQ_STEP 16
#elif TAPPA_KVQ_256
template <int G>
void pv_wide(const float* T, int n, int HD, int c0, const float* const* p, float* const* acc) {
  // 32 columns (four 8-lane vectors) per block here: 16 registers of accumulators for 4 heads.
  __m256 a[G][4];
  for (int h = 0; h < G; ++h)
    for (int i = 0; i < 4; ++i) a[h][i] = _mm256_loadu_ps(acc[h] + c0 + 8 * i);
  for (int r = 0; r < n; ++r) {
    const float* x = T + static_cast<size_t>(r) * HD + c0;
    const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    for (int h = 0; h < G; ++h) {
      const __m256 ph = _mm256_set1_ps(p[h][r]);
      a[h][0] = _mm256_fmadd_ps(v0, ph, a[h][0]);
      a[h][1] = _mm256_fmadd_ps(v1, ph, a[h][1]);
      a[h][2] = _mm256_fmadd_ps(v2, ph, a[h][2]);
      a[h][3] = _mm256_fmadd_ps(v3, ph, a[h][3]);
    }
  }
  for (int h = 0; h < G; ++h)
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(acc[h] + c0 + 8 * i, a[h][i]);
}

template <int G>
void pv_narrow(const float* T, int n, int HD, int c0, const float* const* p, float* const* acc) {
  __m256 a[G];
  for (int h = 0; h < G; ++h) a[h] = _mm256_loadu_ps(acc[h] + c0);
  for (int r = 0; r < n; ++r) {
    const __m256 v = _mm256_loadu_ps(T + static_cast<size_t>(r) * HD + c0);
    for (int h = 0; h < G; ++h) a[h] = _mm256_fmadd_ps(v, _mm256_set1_ps(p[h][r]), a[h]);
  }
  for (int h = 0; h < G; ++h) _mm256_storeu_ps(acc[h] + c0, a[h]);
}
#define TAPPA_KVQ_BLOCK 32
#define TAPPA_KVQ_STEP 8
#endif

void pv_tile(const float* T, int n, int HD, const float* const* p, int g, float* const* acc, bool simd) {
#if TAPPA_KVQ_512 || TAPPA_KVQ_256
  if (simd) {
    for (int h0 = 0; h0 < g; h0 += 4) {
      const int gb = std::min(4, g - h0);
      const float* const* ph = p + h0;
      float* const* ah = acc + h0;
      int c0 = 0;
      for (; c0 + TAPPA_KVQ_BLOCK <= HD; c0 += TAPPA_KVQ_BLOCK) {
        switch (gb) {
          case 1: pv_wide<1>(T, n, HD, c0, ph, ah); break;
          case 2: pv_wide<2>(T, n, HD, c0, ph, ah); break;
          case 3: pv_wide<3>(T, n, HD, c0, ph, ah); break;
          default: pv_wide<4>(T, n, HD, c0, ph, ah); break;
        }
      }
      for (; c0 < HD; c0 += TAPPA_KVQ_STEP) {
        switch (gb) {
          case 1: pv_narrow<1>(T, n, HD, c0, ph, ah); break;
          case 2: pv_narrow<2>(T, n, HD, c0, ph, ah); break;
          case 3: pv_narrow<3>(T, n, HD, c0, ph, ah); break;
          default: pv_narrow<4>(T, n, HD, c0, ph, ah); break;
        }
      }
    }
    return;
  }
#endif
  for (int h = 0; h < g; ++h)
    for (int r = 0; r < n; ++r) {
      const float* x = T + static_cast<size_t>(r) * HD;
      const float w = p[h][r];
      for (int c = 0; c < HD; ++c) acc[h][c] = std::fma(x[c], w, acc[h][c]);
    }
}

// --- exp(s - m) of p[j0, j1) in place, m = their largest; returns the sum (double) ---------------------
double exp_chunk(float* p, int j0, int j1, float& m_out) {
  float mx = -INFINITY;
  int j = j0;
#if defined(__AVX512F__)
  __m512 vm = _mm512_set1_ps(-INFINITY);
  for (; j + 16 <= j1; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(p + j));
  mx = _mm512_reduce_max_ps(vm);  // max is exact in any order
#endif
  for (; j < j1; ++j) mx = std::max(mx, p[j]);
  m_out = mx;
  double sum = 0.0;
  j = j0;
#if defined(__AVX512F__)
  for (; j < j1; j += 16) {
    const int m = std::min(16, j1 - j);
    const __mmask16 k = static_cast<__mmask16>((1u << m) - 1u);
    const __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, p + j);
    const __m512 e = _mm512_maskz_mov_ps(k, exp_approx16(_mm512_sub_ps(x, _mm512_set1_ps(mx))));
    _mm512_mask_storeu_ps(p + j, k, e);
    sum += static_cast<double>(_mm512_reduce_add_ps(e));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  for (; j + 8 <= j1; j += 8) {  // the exps eight at a time (exp_approx8 = exp_approx), summed in order
    _mm256_storeu_ps(p + j, exp_approx8(_mm256_sub_ps(_mm256_loadu_ps(p + j), _mm256_set1_ps(mx))));
    for (int l = 0; l < 8; ++l) sum += static_cast<double>(p[j + l]);
  }
#endif
  for (; j < j1; ++j) {
    p[j] = exp_approx(p[j] - mx);
    sum += static_cast<double>(p[j]);
  }
  return sum;
}

void scale_row(float* x, int n, float s) {
  int i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(s)));
#endif
  for (; i < n; ++i) x[i] *= s;
}

struct Scratch {
  std::vector<float> tile, qrot, acc;
  std::vector<double> sum;
  std::vector<float> m;
};

// Per-thread buffers (grown once, then the hot loop allocates nothing).
Scratch& scratch(int HD, int count) {
  thread_local Scratch s;
  const size_t hd = static_cast<size_t>(HD);
  if (s.tile.size() < kTile * hd) s.tile.resize(kTile * hd);
  if (s.qrot.size() < hd * count) s.qrot.resize(hd * count);
  if (s.acc.size() < hd * count) s.acc.resize(hd * count);
  if (s.sum.size() < static_cast<size_t>(count)) s.sum.resize(count), s.m.resize(count);
  return s;
}

}  // namespace

void attention_chunk_kv(const KvList& L, int j0, int j1, int HD, const float* const* q, const float* scale, int count,
                        float* const* probs, float* m, double* sum, float* const* acc) {
  Scratch& S = scratch(HD, count);
  const bool simd = kLanes > 0 && HD % (kLanes > 0 ? kLanes : 1) == 0;
  for (int h0 = 0; h0 < count; h0 += kMaxHeads) {
    const int g = std::min(kMaxHeads, count - h0);
    const float* qv[kMaxHeads];
    const float* p[kMaxHeads];
    for (int h = 0; h < g; ++h) {
      qv[h] = q[h0 + h];
      if (L.k_rot > 0) {  // (H q)·(H k) = q·k: score the stored rotated keys with a rotated query
        float* r = S.qrot.data() + static_cast<size_t>(h) * HD;
        std::memcpy(r, q[h0 + h], sizeof(float) * static_cast<size_t>(HD));
        kv::hadamard_blocks(r, HD, L.k_rot);
        qv[h] = r;
      }
      std::fill(acc[h0 + h], acc[h0 + h] + HD, 0.0f);
    }
    // Scores: each tile of keys decoded once for the group.
    for (int j = j0; j < j1; j += kTile) {
      const int n = std::min(kTile, j1 - j);
      const float* T = decode_rows(L.k_type, L.K, L.k_stride, j, n, HD, simd, S.tile.data());
      for (int h = 0; h < g; ++h) score_tile(T, n, HD, qv[h], scale[h0 + h], probs[h0 + h] + j, simd);
    }
    for (int h = 0; h < g; ++h) sum[h0 + h] = exp_chunk(probs[h0 + h], j0, j1, m[h0 + h]);
    // Weighted sum of V: each tile of values decoded once for the group.
    for (int j = j0; j < j1; j += kTile) {
      const int n = std::min(kTile, j1 - j);
      const float* T = decode_rows(L.v_type, L.V, L.v_stride, j, n, HD, simd, S.tile.data());
      for (int h = 0; h < g; ++h) p[h] = probs[h0 + h] + j;
      pv_tile(T, n, HD, p, g, acc + h0, simd);
    }
  }
}

void attention_merge_kv(const KvList& L, int HD, int count, int chunks, const int* bounds, const float* m,
                        const double* sum, float* const* acc, float* const* probs, float* const* outs) {
  for (int h = 0; h < count; ++h) {
    float M = -INFINITY;
    for (int c = 0; c < chunks; ++c) M = std::max(M, m[c * count + h]);
    double S = 0.0;
    for (int c = 0; c < chunks; ++c) S += sum[c * count + h] * static_cast<double>(std::exp(m[c * count + h] - M));
    std::fill(probs[h], probs[h] + bounds[0], 0.0f);
    float* out = outs[h];
    std::fill(out, out + HD, 0.0f);
    for (int c = 0; c < chunks; ++c) {
      // Chunk c's weights exp(s - m_c) times exp(m_c - M) / S: the row's softmax.
      const float w = static_cast<float>(static_cast<double>(std::exp(m[c * count + h] - M)) / S);
      scale_row(probs[h] + bounds[c], bounds[c + 1] - bounds[c], w);
      const float* a = acc[c * count + h];
      for (int i = 0; i < HD; ++i) out[i] = std::fma(a[i], w, out[i]);
    }
    if (L.v_rot > 0) kv::hadamard_blocks(out, HD, L.v_rot);  // Σ p (H v) = H (Σ p v)
  }
}

void attention_rows_kv(const KvList& L, int first, int n, int HD, const float* const* q, const float* scale, int count,
                       float* const* probs, float* const* outs) {
  Scratch& S = scratch(HD, count);
  // One chunk, accumulated straight into the outputs, then normalised (and un-rotated) in place.
  attention_chunk_kv(L, first, n, HD, q, scale, count, probs, S.m.data(), S.sum.data(), outs);
  for (int h = 0; h < count; ++h) {
    const float inv = static_cast<float>(1.0 / S.sum[h]);
    std::fill(probs[h], probs[h] + first, 0.0f);
    scale_row(probs[h] + first, n - first, inv);
    scale_row(outs[h], HD, inv);
    if (L.v_rot > 0) kv::hadamard_blocks(outs[h], HD, L.v_rot);
  }
}

TAPPA_ISA_END
}  // namespace tappa::cpu
