// Attention of one query row, summed in the order llama.cpp's CPU backend sums it (non-flash
// attention path, f32 K/V), so that the two agree bit for bit (docs/ORACLE.md):
//
//   q·k      ggml_vec_dot_f32: four 16-lane FMA accumulators over 64-element steps, folded as
//            (a0 + a2) + (a1 + a3), then a 16-lane tree (i, i+8), (i, i+4), (i, i+2), (0, 1)
//            — the tree of GCC's _mm512_reduce_add_ps.
//   softmax  x·scale, max, exp (exp_approx.h) in 16-wide chunks counted from key 0, each chunk's
//            sum folded by the same tree and accumulated in double; weights scaled by
//            float(1 / sum).
//   p·V      a batch (several query tokens) goes through llamafile's tinyBLAS: one 16-lane
//            accumulator per output over the keys, key j in lane j mod 16, then the tree. A single
//            token goes through ggml_vec_dot_f32 over the keys instead: key j in accumulator
//            (j mod 64) / 16, lane j mod 16.
// Keys outside the visible range contribute exact zeros in llama.cpp (masked to -inf, exp = 0),
// so they are skipped here. Lanes are vectorised over the head dimension: "lane r" below is a row
// of head_dim partial sums. The AVX-512 code holds a 16-lane accumulator in one vector, the AVX2
// code in two 8-float halves; both keep the scalar form's operations and order (attention_test.cpp).
// GCC 12 reports a false -Wmaybe-uninitialized inside _mm512_reduce_add_ps; silence it here only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/exp_approx.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace tappa::cpu {
TAPPA_ISA_BEGIN
namespace {

// Sum of 16 values in the tree order of _mm512_reduce_add_ps.
inline float reduce16(const float* v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps(_mm512_loadu_ps(v));
#else
  float t[8];
  for (int i = 0; i < 8; ++i) t[i] = v[i + 8] + v[i];
  float u[4];
  for (int i = 0; i < 4; ++i) u[i] = t[i + 4] + t[i];
  return (u[0] + u[2]) + (u[1] + u[3]);
#endif
}

// ggml_vec_dot_f32 for the lengths attention uses (head_dim; any n works).
inline float dot_ggml(const float* x, const float* y, int n) {
  const int np = n & ~63;
  float sumf = 0.0f;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int i = 0; i < np; i += 64) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32), a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48), a3);
  }
  sumf = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3)));
#elif defined(__AVX2__) && defined(__FMA__)
  // The same sixteen-lane accumulators as two 8-float halves each, then reduce16's tree: halves
  // (v[i + 8] + v[i]), 128-bit halves (t[i + 4] + t[i]), (u0 + u2) + (u1 + u3). Float addition
  // commutes bit for bit, so the operand order inside each pair does not matter.
  __m256 lo[4], hi[4];
  for (int k = 0; k < 4; ++k) lo[k] = hi[k] = _mm256_setzero_ps();
  for (int i = 0; i < np; i += 64)
    for (int k = 0; k < 4; ++k) {
      lo[k] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16 * k), _mm256_loadu_ps(y + i + 16 * k), lo[k]);
      hi[k] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16 * k + 8), _mm256_loadu_ps(y + i + 16 * k + 8), hi[k]);
    }
  const __m256 s_lo = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
  const __m256 s_hi = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
  const __m256 t = _mm256_add_ps(s_hi, s_lo);
  const __m128 u = _mm_add_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
  const __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));  // (u0 + u2, u1 + u3)
  sumf = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
#else
  float a[4][16] = {};
  for (int i = 0; i < np; i += 64)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 16; ++l) a[k][l] = std::fma(x[i + 16 * k + l], y[i + 16 * k + l], a[k][l]);
  float s[16];
  for (int l = 0; l < 16; ++l) s[l] = (a[0][l] + a[2][l]) + (a[1][l] + a[3][l]);
  sumf = reduce16(s);
#endif
  // ggml's scalar tail (`sumf += x*y`, contracted to an FMA by its GNU-mode build).
  for (int i = np; i < n; ++i) sumf = std::fma(x[i], y[i], sumf);
  return sumf;
}

// acc[r][0..n) += p * v[0..n)  (fused per element, as the vector FMA).
inline void fma_row(float p, const float* v, float* acc, int n) {
  int i = 0;
#if defined(__AVX512F__)
  const __m512 vp = _mm512_set1_ps(p);
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(_mm512_loadu_ps(v + i), vp, _mm512_loadu_ps(acc + i)));
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 vp = _mm256_set1_ps(p);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(_mm256_loadu_ps(v + i), vp, _mm256_loadu_ps(acc + i)));
#endif
  for (; i < n; ++i) acc[i] = std::fma(v[i], p, acc[i]);
}

// dst[0..n) = a[0..n) + b[0..n)
inline void add_rows(const float* a, const float* b, float* dst, int n) {
  int i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
#endif
  for (; i < n; ++i) dst[i] = a[i] + b[i];
}

// Per-thread lane rows (64 × head_dim floats at most); grows once, then the hot loop is allocation-free.
float* lane_scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

}  // namespace

namespace {

// Softmax of probs[first, n) in place (scores in, weights out), in ggml's order (see the header).
void softmax_ggml(float* probs, int first, int n, float mx) {
  double sum = 0.0;
  for (int c = first & ~15; c < n; c += 16) {
    alignas(64) float chunk[16];
#if defined(__AVX512F__)
    const int lo = std::max(first - c, 0), hi = std::min(n - c, 16);
    const __mmask16 m = static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
    const __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, probs + c);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_approx16(_mm512_sub_ps(x, _mm512_set1_ps(mx))));
    _mm512_store_ps(chunk, e);
    _mm512_mask_storeu_ps(probs + c, m, e);
#else
#if defined(__AVX2__) && defined(__FMA__)
    if (c >= first && c + 16 <= n) {  // a whole chunk: two vectors (exp_approx8 = exp_approx bit for bit)
      for (int h = 0; h < 16; h += 8) {
        const __m256 e = exp_approx8(_mm256_sub_ps(_mm256_loadu_ps(probs + c + h), _mm256_set1_ps(mx)));
        _mm256_store_ps(chunk + h, e);
        _mm256_storeu_ps(probs + c + h, e);
      }
      sum += static_cast<double>(reduce16(chunk));
      continue;
    }
#endif
    for (int l = 0; l < 16; ++l) {
      const int j = c + l;
      const bool in = j >= first && j < n;
      chunk[l] = in ? exp_approx(probs[j] - mx) : 0.0f;
      if (in) probs[j] = chunk[l];
    }
#endif
    sum += static_cast<double>(reduce16(chunk));
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int j = first; j < n; ++j) probs[j] *= inv;
}

// The lanes that receive at least one key of [first, n) (key j goes to lane j mod lanes); bit r = lane r.
uint64_t live_lanes(int first, int n, int lanes) {
  if (n - first >= lanes) return lanes == 64 ? ~uint64_t{0} : (uint64_t{1} << lanes) - 1;
  uint64_t live = 0;
  for (int j = first; j < n; ++j) live |= uint64_t{1} << (j % lanes);
  return live;
}

// Folds `lanes` lane rows of acc into out[HD] (ggml_vec_dot_f32's / tinyBLAS's reduction). Lanes not
// in `live` received no key: in llama.cpp they hold +0, and x + (+0) = x exactly for every x a lane can
// hold (a lane starts at +0 and is only ever FMA'd or added to, which never yields -0 in round-to-
// nearest), so their adds are skipped and their rows need not even be written. A short list (the
// first 64 tokens of a decode) fills few of the 64 lanes: this is most of its p·V cost otherwise.
void fold_lanes(float* acc, int lanes, int HD, float* out, uint64_t live) {
  const auto pair = [&](int d, int s) {  // lane d <- lane d + lane s
    const uint64_t bd = uint64_t{1} << d, bs = uint64_t{1} << s;
    if ((live & bs) == 0) return;
    if (live & bd) {
      add_rows(acc + d * HD, acc + s * HD, acc + d * HD, HD);
    } else {
      std::copy(acc + s * HD, acc + (s + 1) * HD, acc + d * HD);
      live |= bd;
    }
  };
  if (lanes == 64) {  // ggml_vec_dot_f32's four accumulators: (a0 + a2) + (a1 + a3)
    for (int r = 0; r < 32; ++r) pair(r, r + 32);
    for (int r = 0; r < 16; ++r) pair(r, r + 16);
  }
  for (int r = 0; r < 8; ++r) pair(r, r + 8);
  for (int r = 0; r < 4; ++r) pair(r, r + 4);
  pair(0, 2);
  pair(1, 3);
  pair(0, 1);
  if (live & 1) {
    std::copy(acc, acc + HD, out);
  } else {
    std::fill(out, out + HD, 0.0f);
  }
}

}  // namespace

namespace {

#if defined(__AVX512F__)
// Scores of 16 consecutive keys against one query, head_dim a multiple of 64: each key's four
// 16-lane accumulators are formed and folded as in dot_ggml, and the 16 folded vectors are then
// reduced together by a transposing tree whose pairings are exactly those of _mm512_reduce_add_ps
// — (i, i+8), (i, i+4), (i, i+2), (0, 1) — so every score is bit-identical to dot_ggml's while the
// horizontal work is shared by 16 keys (15 adds and 30 shuffles instead of 16 full reductions).
inline __m512 dot16_ggml(const float* K, int HD, const float* q) {
  __m512 v[16];
  for (int k = 0; k < 16; ++k) {
    const float* x = K + static_cast<int64_t>(k) * HD;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < HD; i += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(q + i), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(q + i + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(q + i + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(q + i + 48), a3);
    }
    v[k] = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3));
  }
  // (i, i+8): w[m] = [key 2m's eight sums | key 2m+1's].
  __m512 w[8];
  for (int m = 0; m < 8; ++m)
    w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0x44), _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0xEE));
  // (i, i+4): x[p] = keys 4p .. 4p+3, four sums each (one per 128-bit lane).
  __m512 x[4];
  for (int p = 0; p < 4; ++p)
    x[p] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0x88), _mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0xDD));
  // (i, i+2) within each 128-bit lane L: y[0] holds keys L and 4+L, y[1] keys 8+L and 12+L.
  const __m512 y0 = _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], 0x44), _mm512_shuffle_ps(x[0], x[1], 0xEE));
  const __m512 y1 = _mm512_add_ps(_mm512_shuffle_ps(x[2], x[3], 0x44), _mm512_shuffle_ps(x[2], x[3], 0xEE));
  // (0, 1): element 4L + c holds key L + 4c; put the keys in order.
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(y0, y1, 0x88), _mm512_shuffle_ps(y0, y1, 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, z);
}

// p·V for one lane of the summation order and up to four query heads: lane r collects the keys
// j ≡ r (mod lanes) in increasing order, in registers (64 columns = four vectors per head), so each
// partial sum is stored once instead of once per key. Same operations, same order as fma_row per key.
constexpr int kPvCols = 64;  // columns per lane_pv pass
template <int G>
void lane_pv(const float* V, int HD, int d0, int j0, int n, int lanes, const float* const* p, float* const* acc_rows) {
  __m512 acc[G][4];
  for (int h = 0; h < G; ++h)
    for (int c = 0; c < 4; ++c) acc[h][c] = _mm512_setzero_ps();
  for (int j = j0; j < n; j += lanes) {
    const float* vj = V + static_cast<int64_t>(j) * HD + d0;
    const __m512 v0 = _mm512_loadu_ps(vj), v1 = _mm512_loadu_ps(vj + 16), v2 = _mm512_loadu_ps(vj + 32),
                 v3 = _mm512_loadu_ps(vj + 48);
    for (int h = 0; h < G; ++h) {
      const __m512 ph = _mm512_set1_ps(p[h][j]);
      acc[h][0] = _mm512_fmadd_ps(v0, ph, acc[h][0]);
      acc[h][1] = _mm512_fmadd_ps(v1, ph, acc[h][1]);
      acc[h][2] = _mm512_fmadd_ps(v2, ph, acc[h][2]);
      acc[h][3] = _mm512_fmadd_ps(v3, ph, acc[h][3]);
    }
  }
  for (int h = 0; h < G; ++h)
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(acc_rows[h] + d0 + 16 * c, acc[h][c]);
}
#elif defined(__AVX2__) && defined(__FMA__)
// The same on AVX2: 16 columns (two 8-float vectors) and up to four heads per pass, so that the
// partial sums, the V vectors and the broadcast p fit AVX2's 16 registers (11 used) and V is read
// once per group of four heads. Without it each key's FMA reloads and stores its lane row (fma_row).
constexpr int kPvCols = 16;
template <int G>
void lane_pv(const float* V, int HD, int d0, int j0, int n, int lanes, const float* const* p, float* const* acc_rows) {
  __m256 acc[G][2];
  for (int h = 0; h < G; ++h) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
  for (int j = j0; j < n; j += lanes) {
    const float* vj = V + static_cast<int64_t>(j) * HD + d0;
    const __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
    for (int h = 0; h < G; ++h) {
      const __m256 ph = _mm256_set1_ps(p[h][j]);
      acc[h][0] = _mm256_fmadd_ps(v0, ph, acc[h][0]);
      acc[h][1] = _mm256_fmadd_ps(v1, ph, acc[h][1]);
    }
  }
  for (int h = 0; h < G; ++h) {
    _mm256_storeu_ps(acc_rows[h] + d0, acc[h][0]);
    _mm256_storeu_ps(acc_rows[h] + d0 + 8, acc[h][1]);
  }
}
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// p·V of heads [h0, h0 + g) into their lane rows (acc: per_head floats a head), lane by lane,
// kPvCols columns and up to four heads at a time, partial sums in registers; HD % kPvCols == 0.
void register_pv(const float* V, int HD, int first, int n, int lanes, const float* const* probs, int h0, int g,
                 float* acc, size_t per_head) {
  for (int r = 0; r < lanes; ++r) {
    // The first key of lane r at or after `first`; a lane without keys is left unwritten (fold_lanes).
    const int j0 = first + ((r - first % lanes) % lanes + lanes) % lanes;
    if (j0 >= n) continue;
    for (int hb = 0; hb < g; hb += 4) {
      const int gb = std::min(4, g - hb);
      const float* p[4];
      float* dst[4];
      for (int h = 0; h < gb; ++h) {
        p[h] = probs[h0 + hb + h];
        dst[h] = acc + per_head * (hb + h) + static_cast<size_t>(r) * HD;
      }
      for (int d0 = 0; d0 < HD; d0 += kPvCols) {
        switch (gb) {
          case 1: lane_pv<1>(V, HD, d0, j0, n, lanes, p, dst); break;
          case 2: lane_pv<2>(V, HD, d0, j0, n, lanes, p, dst); break;
          case 3: lane_pv<3>(V, HD, d0, j0, n, lanes, p, dst); break;
          default: lane_pv<4>(V, HD, d0, j0, n, lanes, p, dst); break;
        }
      }
    }
  }
}
#endif

}  // namespace

void attention_rows(const AttentionRow* rows, int count, float* const* probs, float* const* outs) {
  const AttentionRow& a = rows[0];  // K, V, first, n_vis, head_dim, single_token are shared
  const int HD = a.head_dim;
  const int first = a.first, n = a.n_vis;
  constexpr int kMaxGroup = 16;
  float mx[kMaxGroup];
#if defined(__AVX512F__)
  const bool wide = HD % 64 == 0;  // the vectorised paths below need whole 64-column blocks
#endif
  for (int h0 = 0; h0 < count; h0 += kMaxGroup) {
    const int g = std::min(kMaxGroup, count - h0);
    // Scores: each key row is loaded once for the whole group of query heads.
    for (int h = 0; h < g; ++h) {
      std::fill(probs[h0 + h], probs[h0 + h] + first, 0.0f);
      mx[h] = -INFINITY;
    }
    int j = first;
#if defined(__AVX512F__)
    if (wide) {
      __m512 vmx[kMaxGroup];
      for (int h = 0; h < g; ++h) vmx[h] = _mm512_set1_ps(-INFINITY);
      for (; j + 16 <= n; j += 16) {
        const float* kj = a.K + static_cast<int64_t>(j) * HD;
        for (int h = 0; h < g; ++h) {
          const __m512 s = _mm512_mul_ps(dot16_ggml(kj, HD, rows[h0 + h].q), _mm512_set1_ps(rows[h0 + h].scale));
          _mm512_storeu_ps(probs[h0 + h] + j, s);
          vmx[h] = _mm512_max_ps(vmx[h], s);
        }
      }
      for (int h = 0; h < g; ++h) mx[h] = _mm512_reduce_max_ps(vmx[h]);  // max is exact in any order
    }
#endif
    for (; j < n; ++j) {
      const float* kj = a.K + static_cast<int64_t>(j) * HD;
      for (int h = 0; h < g; ++h) {
        const float s = dot_ggml(kj, rows[h0 + h].q, HD) * rows[h0 + h].scale;
        probs[h0 + h][j] = s;
        mx[h] = std::max(mx[h], s);
      }
    }
    for (int h = 0; h < g; ++h) softmax_ggml(probs[h0 + h], first, n, mx[h]);

    // Weighted sum of V in lane rows (one set per head), each V row loaded once for the group.
    const int lanes = a.single_token ? 64 : 16;
    const size_t per_head = static_cast<size_t>(lanes) * HD;
    float* acc = lane_scratch(per_head * g);
    // In registers where the kernel applies: AVX-512 for whole 64-column blocks; AVX2 for 16-column
    // ones and prompts only: a decode row spreads its keys over 64 lanes (about n/64 keys each), too
    // few for the registers to pay, and it measured no faster than fma_row (BM_DecodeAttention,
    // avx2 variant, 2026-12-04).
#if defined(__AVX512F__)
    const bool in_registers = wide;
#elif defined(__AVX2__) && defined(__FMA__)
    const bool in_registers = HD % kPvCols == 0 && !a.single_token;
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    const uint64_t live = live_lanes(first, n, lanes);
    if (in_registers) {
      register_pv(a.V, HD, first, n, lanes, probs, h0, g, acc, per_head);
      for (int h = 0; h < g; ++h) fold_lanes(acc + per_head * h, lanes, HD, outs[h0 + h], live);
      continue;
    }
#endif
    std::fill(acc, acc + per_head * g, 0.0f);
    for (int jj = first; jj < n; ++jj) {
      const float* vj = a.V + static_cast<int64_t>(jj) * HD;
      const size_t lane_off = static_cast<size_t>(jj % lanes) * HD;
      for (int h = 0; h < g; ++h) fma_row(probs[h0 + h][jj], vj, acc + per_head * h + lane_off, HD);
    }
    for (int h = 0; h < g; ++h) fold_lanes(acc + per_head * h, lanes, HD, outs[h0 + h], live_lanes(first, n, lanes));
  }
}

void attention_row(const AttentionRow& a, float* probs, float* out) { attention_rows(&a, 1, &probs, &out); }

TAPPA_ISA_END
}  // namespace tappa::cpu
