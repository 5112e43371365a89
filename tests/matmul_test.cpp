// Matrix products for every weight type against references computed in double precision.
//
// For quantized weights the kernels first quantize the activations to 8 bits (Q8_0-style for Q4_0,
// Q4_1, Q8_0 and Q8_K-style for the K-quants). Two checks:
//  (A) against the reference built from the SAME quantized activations (quant::quantize_row with
//      Q8_0 / Q8_K, then dequantized): only float rounding separates the two. Every product term is
//      bounded by max|W_row| * |xq_k| and the kernels round a few times per 32-element block and once
//      per accumulation step (<= cols/32 + 16 roundings of 2^-24), so
//      |y - refA| <= 1e-5 * max|W_row| * sum_k |xq_k|.
//  (B) against the exact fp32 product: the activation quantization moves x_k by at most half a step
//      of its block: Q8_0 step d = amax_b / 127 (plus the fp16 rounding of d: |q| * |d16 - d| <=
//      127 * d * 2^-11), Q8_K step amax_sb / 127 (float scale). Hence
//      |y - exact| <= sum_blocks e_b * sum_{k in b} |W_k| + tolerance(A),
//      e_b = (0.5 + 127 * 2^-11) * amax_b / 127 (Q8_0) or 0.5 * amax_sb / 127 (Q8_K).
// Float weights (F32, F16, BF16) use fp32 FMAs: |y - exact| <= (cols + 16) * 2^-24 * sum_k |W_k x_k|.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/quantize_act.h"
#include "backend/cpu/thread_pool.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa {
namespace {

using cpu::matmul;
using cpu::Scratch;
using cpu::ThreadPool;
using cpu::WeightView;

bool is_float_type(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }
bool is_k(TensorType t) { return t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K; }

ThreadPool& pool(int threads) {
  static ThreadPool p1(1), p2(2);
  return threads == 1 ? p1 : p2;
}

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // rows x cols, the values the kernel must use
};

Weights make_weights(TensorType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Weights w;
  const size_t rb = quant::row_bytes(t, cols);
  w.bytes.resize(rb * rows);
  w.deq.resize(rows * cols);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = 0.02f * (1 + r % 5);
    const float shift = (r % 3 == 1) ? 0.03f : 0.0f;  // some rows with a non-zero mean (mins / offsets)
    for (int64_t k = 0; k < cols; ++k) row[k] = shift + scale * nd(rng);
    quant::quantize_row(t, row.data(), w.bytes.data() + rb * r, cols);
    quant::dequantize_row(t, w.bytes.data() + rb * r, w.deq.data() + cols * r, cols);
  }
  return w;
}

std::vector<float> make_acts(int64_t m, int64_t cols, int64_t ldx, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(m * ldx, std::numeric_limits<float>::quiet_NaN());  // padding must never be read
  for (int64_t t = 0; t < m; ++t) {
    const float scale = 0.5f * (1 + t % 7);
    for (int64_t k = 0; k < cols; ++k) {
      float v = scale * nd(rng);
      if ((k + 3 * t) % 61 == 0) v *= 8.0f;  // outliers, as real hidden states have
      x[t * ldx + k] = (t == 1) ? 0.0f : v;   // token 1: all zeros
    }
  }
  return x;
}

// The activations exactly as the kernels see them, and the per-element half-step bound e_k.
// The activations as the kernels see them. 32-blocks follow ggml's x86 quantize_row_q8_0/q8_1 (the
// code llama.cpp runs here): d = fp16(amax/127), q = round-to-even(x * (127/amax)). For Q4_1,
// s1_minus_s[b] = fp16(d_f32 * Σq) − d16 * Σq: the kernel's min term uses ggml's fp16 Q8_1 sum.
void quantized_acts(TensorType wt, const float* x, int64_t cols, std::vector<float>& xq, std::vector<float>& e,
                    std::vector<double>& s1_minus_s) {
  const TensorType at = is_k(wt) ? TensorType::Q8_K : TensorType::Q8_0;
  xq.resize(cols);
  if (at == TensorType::Q8_K) {
    std::vector<uint8_t> q(quant::row_bytes(at, cols));
    quant::quantize_row(at, x, q.data(), cols);
    quant::dequantize_row(at, q.data(), xq.data(), cols);
  } else {
    s1_minus_s.assign(cols / 32, 0.0);
    for (int64_t b = 0; b < cols / 32; ++b) {
      float amax = 0.0f;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[32 * b + k]));
      const float d = amax / 127.0f;
      const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
      const float d16 = quant::fp16_to_fp32(quant::fp32_to_fp16(d));
      int isum = 0;
      for (int k = 0; k < 32; ++k) {
        const int q = static_cast<int>(std::nearbyint(x[32 * b + k] * id));
        isum += q;
        xq[32 * b + k] = d16 * static_cast<float>(q);
      }
      s1_minus_s[b] = static_cast<double>(quant::fp16_to_fp32(quant::fp32_to_fp16(d * static_cast<float>(isum)))) -
                      static_cast<double>(d16) * isum;
    }
  }
  const int64_t bs = is_k(wt) ? 256 : 32;
  const float factor = is_k(wt) ? 0.5f * (1 + 1e-4f) : 0.5f + 127.0f * std::ldexp(1.0f, -11) + 1e-4f;
  e.resize(cols);
  for (int64_t b = 0; b < cols / bs; ++b) {
    float amax = 0.0f;
    for (int64_t k = 0; k < bs; ++k) amax = std::max(amax, std::fabs(x[b * bs + k]));
    for (int64_t k = 0; k < bs; ++k) e[b * bs + k] = factor * amax / 127.0f;
  }
}

void check_matmul(TensorType t, int64_t rows, int64_t cols, int64_t m, int threads, Scratch& scratch) {
  SCOPED_TRACE(testing::Message() << "type " << static_cast<int>(t) << " rows " << rows << " cols " << cols << " m " << m
                                  << " threads " << threads);
  const Weights w = make_weights(t, rows, cols, static_cast<uint32_t>(rows * 131 + cols));
  const int64_t ldx = cols + 5, ldy = rows + 3;
  const auto x = make_acts(m, cols, ldx, static_cast<uint32_t>(m * 7 + cols));
  const float sentinel = -12345.0f;
  std::vector<float> y(m * ldy, sentinel);
  matmul(WeightView{t, w.bytes.data(), rows, cols}, x.data(), m, ldx, y.data(), ldy, pool(threads), scratch);

  std::vector<float> xq, e;
  std::vector<double> s1_minus_s;
  const size_t w_row_bytes = quant::row_bytes(t, cols);
  for (int64_t tok = 0; tok < m; ++tok) {
    const float* xt = x.data() + tok * ldx;
    if (!is_float_type(t)) quantized_acts(t, xt, cols, xq, e, s1_minus_s);
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = w.deq.data() + r * cols;
      const float got = y[tok * ldy + r];
      double exact = 0.0, abs_exact = 0.0, ref_q = 0.0, sum_xq = 0.0, act_err = 0.0;
      float wmax = 0.0f;
      for (int64_t k = 0; k < cols; ++k) {
        exact += static_cast<double>(wr[k]) * xt[k];
        abs_exact += std::fabs(static_cast<double>(wr[k]) * xt[k]);
        wmax = std::max(wmax, std::fabs(wr[k]));
        if (!is_float_type(t)) {
          ref_q += static_cast<double>(wr[k]) * xq[k];
          sum_xq += std::fabs(xq[k]);
          act_err += std::fabs(static_cast<double>(wr[k])) * e[k];
        }
      }
      if (t == TensorType::Q4_1) {  // Q4_1 block: fp16 d, fp16 m, 16 bytes of nibbles
        for (int64_t b = 0; b < cols / 32; ++b) {
          uint16_t mh;
          std::memcpy(&mh, w.bytes.data() + r * w_row_bytes + b * 20 + 2, 2);
          ref_q += static_cast<double>(quant::fp16_to_fp32(mh)) * s1_minus_s[b];
        }
      }
      if (is_float_type(t)) {
        const double tol = (cols + 16) * std::ldexp(1.0, -24) * abs_exact + 1e-30;
        ASSERT_NEAR(got, exact, tol) << "token " << tok << " row " << r;
      } else {
        const double tol_a = 1e-5 * wmax * sum_xq + 1e-30;
        ASSERT_NEAR(got, ref_q, tol_a) << "token " << tok << " row " << r << " (same quantized activations)";
        ASSERT_NEAR(got, exact, act_err + tol_a) << "token " << tok << " row " << r << " (exact activations)";
      }
    }
    for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(y[tok * ldy + r], sentinel) << "wrote past the row range";
  }
}

void check_type(TensorType t, const std::vector<int64_t>& col_sizes) {
  Scratch scratch;
  for (int threads : {1, 2})
    for (int64_t cols : col_sizes)
      for (int64_t rows : {5, 37, 64})
        // 100 tokens at 576 columns span two of the float GEMM's token chunks (78 tokens there).
        for (int64_t m : {1, 3, 17, 64, 100}) check_matmul(t, rows, cols, m, threads, scratch);
}

TEST(MatmulTypes, F32) { check_type(TensorType::F32, {7, 64, 576}); }
TEST(MatmulTypes, F16) { check_type(TensorType::F16, {7, 64, 576}); }
TEST(MatmulTypes, BF16) { check_type(TensorType::BF16, {7, 64, 576}); }
TEST(MatmulTypes, Q4_0) { check_type(TensorType::Q4_0, {32, 96, 576, 1536}); }
TEST(MatmulTypes, Q4_1) { check_type(TensorType::Q4_1, {32, 96, 576, 1536}); }
TEST(MatmulTypes, Q8_0) { check_type(TensorType::Q8_0, {32, 96, 576, 1536}); }
TEST(MatmulTypes, Q4_K) { check_type(TensorType::Q4_K, {256, 512, 1536}); }
TEST(MatmulTypes, Q5_K) { check_type(TensorType::Q5_K, {256, 512, 1536}); }
TEST(MatmulTypes, Q6_K) { check_type(TensorType::Q6_K, {256, 512, 1536}); }

// Extreme but valid blocks: every code at its maximum / minimum and activations at +-127 exercise
// the integer ranges (no 16-bit saturation, no 32-bit overflow).
TEST(MatmulTypes, ExtremeCodes) {
  Scratch scratch;
  for (TensorType t : {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K,
                       TensorType::Q6_K}) {
    for (int64_t m : {1, 8}) {
      const int64_t rows = 17, cols = 512;
      std::vector<float> wrow(cols);
      const size_t rb = quant::row_bytes(t, cols);
      std::vector<uint8_t> wb(rb * rows);
      std::vector<float> wd(rows * cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t k = 0; k < cols; ++k) wrow[k] = ((k + r) % 3 == 0) ? -1.0f : 1.0f;
        if (r % 2) for (int64_t k = 0; k < cols; ++k) wrow[k] = -wrow[k];
        quant::quantize_row(t, wrow.data(), wb.data() + rb * r, cols);
        quant::dequantize_row(t, wb.data() + rb * r, wd.data() + cols * r, cols);
      }
      std::vector<float> x(m * cols);
      for (int64_t i = 0; i < m * cols; ++i) x[i] = (i % 2) ? 1.0f : -1.0f;
      std::vector<float> y(m * rows);
      matmul(WeightView{t, wb.data(), rows, cols}, x.data(), m, cols, y.data(), rows, pool(2), scratch);
      for (int64_t tok = 0; tok < m; ++tok) {
        for (int64_t r = 0; r < rows; ++r) {
          double ref = 0.0, abs = 0.0;
          for (int64_t k = 0; k < cols; ++k) {
            ref += static_cast<double>(wd[r * cols + k]) * x[tok * cols + k];
            abs += std::fabs(wd[r * cols + k] * x[tok * cols + k]);
          }
          ASSERT_NEAR(y[tok * rows + r], ref, 1e-5 * abs) << static_cast<int>(t) << " m " << m << " row " << r;
        }
      }
    }
  }
}

// Big enough that both threads get several 16-row panels, with a row count that leaves a remainder.
TEST(MatmulTypes, ManyRows) {
  Scratch scratch;
  for (TensorType t : {TensorType::Q4_1, TensorType::Q8_0, TensorType::Q6_K, TensorType::F16}) {
    check_matmul(t, 203, 256, 1, 2, scratch);
    check_matmul(t, 203, 256, 9, 2, scratch);
  }
}

// MatmulOrder::PerToken (batched decoding): every token row of an m-token call equals, bit for bit,
// the same row computed by a one-token call, for every weight type and thread count — what lets a
// sequence decode the same tokens in a batch as alone. Batch order is allowed to differ (GEMM).
TEST(MatmulOrder, PerTokenRowsEqualOneTokenCalls) {
  Scratch scratch;
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1,
                       TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
    const int64_t rows = 203, cols = 512, ldx = cols + 3, ldy = rows + 5;
    const Weights w = make_weights(t, rows, cols, 7);
    const WeightView wv{t, w.bytes.data(), rows, cols};
    // 13 tokens take the row kernels, 19 the GEMM where it keeps the one-token order (matmul.cpp).
    for (const int64_t m : {13, 19}) {
      const std::vector<float> x = make_acts(m, cols, ldx, 11);
      for (int threads : {1, 2}) {
        std::vector<float> y(static_cast<size_t>(m * ldy), -1.0f), y1(static_cast<size_t>(rows));
        matmul(wv, x.data(), m, ldx, y.data(), ldy, pool(threads), scratch, cpu::MatmulOrder::PerToken);
        for (int64_t i = 0; i < m; ++i) {
          matmul(wv, x.data() + i * ldx, 1, ldx, y1.data(), rows, pool(threads), scratch);
          ASSERT_EQ(0, std::memcmp(y1.data(), y.data() + i * ldy, sizeof(float) * rows))
              << "type " << static_cast<int>(t) << " m " << m << " token " << i << " threads " << threads;
        }
      }
    }
  }
}

// The CPU backend keeps the GEMM panels of matrices that batched decoding runs through the GEMM
// (cpu::prepack, made on the first such call): the first call makes them, the second reads them, and
// both must equal one-token calls bit for bit, as the repack-per-call path does (above). 203 rows:
// the last panel is partial. m = 16 and 19: from prepack_min_tokens() on; 13 takes the row kernels.
TEST(MatmulOrder, BackendKeptPanelsEqualOneTokenCalls) {
  for (TensorType t : {TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_0}) {
    const int64_t rows = 203, cols = 512;
    const Weights w = make_weights(t, rows, cols, 5);
    const WeightView wv{t, w.bytes.data(), rows, cols};
    Scratch scratch;
    for (int threads : {1, 2}) {
      auto be = backend::make_backend("cpu", threads);
      for (const int64_t m : {13, 16, 19}) {
        const std::vector<float> x = make_acts(m, cols, cols, 17 + static_cast<int>(m));
        std::vector<float> y1(static_cast<size_t>(rows));
        for (int call = 0; call < 2; ++call) {
          std::vector<float> y(static_cast<size_t>(m * rows), -1.0f);
          be->matmul(wv, backend::Mat{const_cast<float*>(x.data()), m, cols, cols}, backend::Mat{y.data(), m, rows, rows},
                     backend::Order::PerToken);
          for (int64_t i = 0; i < m; ++i) {
            matmul(wv, x.data() + i * cols, 1, cols, y1.data(), rows, pool(threads), scratch);
            ASSERT_EQ(0, std::memcmp(y1.data(), y.data() + i * rows, sizeof(float) * rows))
                << "type " << static_cast<int>(t) << " m " << m << " token " << i << " threads " << threads << " call "
                << call;
          }
        }
      }
    }
  }
}

// Q4_K and Q6_K follow llama.cpp's x86 float order (backend/cpu/gemm_kquant.h); this recomputes
// every output from the GGUF blocks and Q8_K activation blocks (quant::quantize_row) with those
// float steps written out one by one, and requires bit equality:
//   Q4_K, tokens in whole groups of 4: per pair of sub-blocks acc = fma(sc·dot, d·da, acc) and
//         accm = fma(m·bs, dmin·da, accm); the other tokens: one fma per super-block; y = acc - accm.
//   Q6_K, < 8 tokens: eight int lanes (elements 4l..4l+3 of each 32-chunk, offset from the 16-sums
//         2l, 2l+1), lane = fma(da·d, lane sum, lane), ggml's 8-lane tree; >= 8 tokens:
//         y = fma(float(s)·d, da, y) per super-block.
namespace korder {

using quant::BlockQ4_K;
using quant::BlockQ6_K;
using quant::BlockQ8_K;

float q4k(const BlockQ4_K* x, const BlockQ8_K* a, int64_t nb, bool group) {
  float acc = 0.0f, accm = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t sc[8], mn[8];
    quant::unpack_scales_mins_k4(x[b].scales, sc, mn);
    int32_t dot[8] = {}, bs[8] = {};
    for (int e = 0; e < 256; ++e) {
      const int c = e / 64, l = e % 64;
      const int q = l < 32 ? (x[b].qs[32 * c + l] & 0x0F) : (x[b].qs[32 * c + l - 32] >> 4);
      dot[e / 32] += q * a[b].qs[e];
      bs[e / 32] += a[b].qs[e];
    }
    const float dd = quant::half_to_float(x[b].d) * a[b].d, dm = quant::half_to_float(x[b].dmin) * a[b].d;
    if (group) {
      for (int p = 0; p < 4; ++p) {
        acc = std::fma(static_cast<float>(sc[2 * p] * dot[2 * p] + sc[2 * p + 1] * dot[2 * p + 1]), dd, acc);
        accm = std::fma(static_cast<float>(mn[2 * p] * bs[2 * p] + mn[2 * p + 1] * bs[2 * p + 1]), dm, accm);
      }
    } else {
      int32_t is = 0, ms = 0;
      for (int j = 0; j < 8; ++j) {
        is += sc[j] * dot[j];
        ms += mn[j] * bs[j];
      }
      acc = std::fma(static_cast<float>(is), dd, acc);
      accm = std::fma(static_cast<float>(ms), dm, accm);
    }
  }
  return acc - accm;
}

int q6_value(const BlockQ6_K& x, int e) {
  const int h = e / 128, k = (e % 128) / 32, l = e % 32;
  const uint8_t ql = x.ql[64 * h + l + (k & 1) * 32], qh = x.qh[32 * h + l];
  return ((k < 2 ? ql : ql >> 4) & 0x0F) | (((qh >> (2 * k)) & 3) << 4);
}

float q6k(const BlockQ6_K* x, const BlockQ8_K* a, int64_t nb, bool tiled) {
  if (tiled) {
    float y = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      int32_t s = 0;
      for (int j = 0; j < 16; ++j) {
        int32_t dot = 0;
        for (int e = 16 * j; e < 16 * j + 16; ++e) dot += q6_value(x[b], e) * a[b].qs[e];
        s += x[b].scales[j] * (dot - 32 * a[b].bsums[j]);
      }
      y = std::fma(static_cast<float>(s) * quant::half_to_float(x[b].d), a[b].d, y);
    }
    return y;
  }
  float lane[8] = {};
  for (int64_t b = 0; b < nb; ++b) {
    int32_t li[8] = {};
    for (int e = 0; e < 256; ++e) {
      const int c = e / 32, l = (e % 32) / 4;
      li[l] += x[b].scales[2 * c + (l >= 4)] * q6_value(x[b], e) * a[b].qs[e];
    }
    const float d = a[b].d * quant::half_to_float(x[b].d);
    for (int l = 0; l < 8; ++l) {
      li[l] -= 32 * (a[b].bsums[2 * l] * x[b].scales[2 * l] + a[b].bsums[2 * l + 1] * x[b].scales[2 * l + 1]);
      lane[l] = std::fma(d, static_cast<float>(li[l]), lane[l]);
    }
  }
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

}  // namespace korder

TEST(MatmulKQuantOrder, BitIdenticalToLlamaCppOrder) {
  Scratch scratch;
  for (TensorType t : {TensorType::Q4_K, TensorType::Q6_K}) {
    for (int64_t cols : {256, 1024, 2048}) {
      for (int64_t rows : {16, 40}) {
        const Weights w = make_weights(t, rows, cols, static_cast<uint32_t>(rows * 17 + cols));
        for (int64_t m : {1, 3, 4, 6, 7, 8, 13, 20}) {
          for (int threads : {1, 2}) {
            SCOPED_TRACE(testing::Message() << "type " << static_cast<int>(t) << " rows " << rows << " cols " << cols
                                            << " m " << m << " threads " << threads);
            const int64_t ldx = cols + 3, ldy = rows + 1;
            const auto x = make_acts(m, cols, ldx, static_cast<uint32_t>(m * 5 + cols));
            std::vector<float> y(m * ldy, 0.0f);
            matmul(WeightView{t, w.bytes.data(), rows, cols}, x.data(), m, ldx, y.data(), ldy, pool(threads), scratch);
            const size_t rb = quant::row_bytes(t, cols);
            std::vector<quant::BlockQ8_K> act(cols / 256);
            for (int64_t tok = 0; tok < m; ++tok) {
              quant::quantize_row(TensorType::Q8_K, x.data() + tok * ldx, reinterpret_cast<uint8_t*>(act.data()), cols);
              for (int64_t r = 0; r < rows; ++r) {
                const uint8_t* wr = w.bytes.data() + rb * r;
                const float want =
                    t == TensorType::Q4_K
                        ? korder::q4k(reinterpret_cast<const quant::BlockQ4_K*>(wr), act.data(), cols / 256, tok < m - m % 4)
                        : korder::q6k(reinterpret_cast<const quant::BlockQ6_K*>(wr), act.data(), cols / 256, m >= 8);
                ASSERT_EQ(y[tok * ldy + r], want) << "token " << tok << " row " << r;
              }
            }
          }
        }
      }
    }
  }
}

// ggml's 4-row Q8_K quantizer (used by the Q4_K groups of 4 tokens) takes +amax for the sign of the
// scale when +amax and -amax both occur; the row quantizer takes the first.
TEST(MatmulActQuant, GroupQuantizerSignRule) {
  using cpu::detail::ActBuffer;
  using cpu::detail::ActKind;
  const int64_t cols = 256;
  std::vector<float> x(cols, 0.25f);
  x[3] = -2.0f;
  x[200] = 2.0f;
  std::vector<uint8_t> rec(ActBuffer::record_bytes(cols) + 64);
  uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(rec.data()) + 63) & ~uintptr_t{63});
  const ActBuffer buf(base, cols);
  cpu::detail::quantize_activation(ActKind::K256, x.data(), cols, base);
  EXPECT_EQ(buf.row(0).d[0], 1.0f / (127.0f / 2.0f));  // first is -2: iscale = -127 / -2
  EXPECT_EQ(buf.row(0).q[3], -127);
  cpu::detail::quantize_activation_k256_group(x.data(), cols, base);
  EXPECT_EQ(buf.row(0).d[0], 1.0f / (-127.0f / 2.0f));
  EXPECT_EQ(buf.row(0).q[200], -127);
  EXPECT_EQ(buf.row(0).q[3], 127);
  // Without a tie both quantizers agree.
  x[3] = -1.0f;
  cpu::detail::quantize_activation_k256_group(x.data(), cols, base);
  std::vector<int8_t> g(buf.row(0).q, buf.row(0).q + cols);
  const float dg = buf.row(0).d[0];
  cpu::detail::quantize_activation(ActKind::K256, x.data(), cols, base);
  EXPECT_EQ(dg, buf.row(0).d[0]);
  EXPECT_TRUE(std::equal(g.begin(), g.end(), buf.row(0).q));
}

// The kernels' activation quantization is bit-identical to quant::quantize_row (Q8_0 / Q8_K), which
// is what makes check (A) above a pure float-rounding comparison.
TEST(MatmulActQuant, MatchesQuantizeRow) {
  using cpu::detail::ActBuffer;
  using cpu::detail::ActKind;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t cols : {256, 512, 768, 1536, 4096}) {
    std::vector<float> x(cols);
    for (int64_t k = 0; k < cols; ++k) x[k] = nd(rng) * ((k / 32) % 3 == 0 ? 10.0f : 0.1f);
    std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
    x[100] = 1e-30f;                                  // tiny values
    std::vector<uint8_t> rec(ActBuffer::record_bytes(cols) + 64);
    uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(rec.data()) + 63) & ~uintptr_t{63});
    const ActBuffer buf(base, cols);

    cpu::detail::quantize_activation(ActKind::B32, x.data(), cols, base);
    const auto a = buf.row(0);
    std::vector<uint8_t> ref(quant::row_bytes(TensorType::Q8_0, cols));
    quant::quantize_row(TensorType::Q8_0, x.data(), ref.data(), cols);
    for (int64_t b = 0; b < cols / 32; ++b) {
      const uint8_t* blk = ref.data() + 34 * b;
      ASSERT_EQ(a.d[b], quant::fp16_to_fp32(static_cast<uint16_t>(blk[0] | (blk[1] << 8)))) << cols << " block " << b;
      int sum = 0;
      for (int j = 0; j < 32; ++j) {
        ASSERT_EQ(a.q[32 * b + j], static_cast<int8_t>(blk[2 + j])) << cols << " block " << b << " " << j;
        sum += a.q[32 * b + j];
      }
      ASSERT_EQ(a.isum[b], sum);
      ASSERT_EQ(a.bsum[2 * b] + a.bsum[2 * b + 1], sum);
      ASSERT_FLOAT_EQ(a.s[b], a.d[b] * static_cast<float>(sum));
    }

    cpu::detail::quantize_activation(ActKind::K256, x.data(), cols, base);
    const auto k = buf.row(0);
    std::vector<uint8_t> refk(quant::row_bytes(TensorType::Q8_K, cols));
    quant::quantize_row(TensorType::Q8_K, x.data(), refk.data(), cols);
    for (int64_t sb = 0; sb < cols / 256; ++sb) {
      const uint8_t* blk = refk.data() + 292 * sb;
      float d;
      std::memcpy(&d, blk, 4);
      for (int j = 0; j < 8; ++j) ASSERT_EQ(k.d[8 * sb + j], d);
      for (int j = 0; j < 256; ++j) ASSERT_EQ(k.q[256 * sb + j], static_cast<int8_t>(blk[4 + j])) << cols << " " << j;
      for (int g = 0; g < 16; ++g) {
        int16_t bs;
        std::memcpy(&bs, blk + 260 + 2 * g, 2);
        ASSERT_EQ(k.bsum[16 * sb + g], bs);
      }
      for (int j = 0; j < 8; ++j) ASSERT_EQ(k.isum[8 * sb + j], k.bsum[16 * sb + 2 * j] + k.bsum[16 * sb + 2 * j + 1]);
    }
  }
}

TEST(MatmulApi, SupportsAndErrors) {
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1,
                       TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
    EXPECT_TRUE(cpu::matmul_supports(t)) << static_cast<int>(t);
  }
  EXPECT_FALSE(cpu::matmul_supports(TensorType::Q5_0));
  EXPECT_FALSE(cpu::matmul_supports(TensorType::IQ2_XXS));
  Scratch scratch;
  std::vector<uint8_t> wb(4096);
  std::vector<float> x(256), y(4);
  EXPECT_THROW(matmul(WeightView{TensorType::Q5_0, wb.data(), 2, 64}, x.data(), 1, 64, y.data(), 2, pool(1), scratch),
               Error);
  EXPECT_THROW(matmul(WeightView{TensorType::Q4_0, wb.data(), 2, 48}, x.data(), 1, 48, y.data(), 2, pool(1), scratch),
               Error);
  // m == 0 and rows == 0 are no-ops.
  matmul(WeightView{TensorType::Q4_0, wb.data(), 2, 64}, x.data(), 0, 64, y.data(), 2, pool(1), scratch);
  matmul(WeightView{TensorType::Q4_0, wb.data(), 0, 64}, x.data(), 1, 64, y.data(), 2, pool(1), scratch);
}

TEST(MatmulScratch, AlignedAndStable) {
  Scratch s;
  uint8_t* a = s.get(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  uint8_t* b = s.get(10);  // smaller request: same memory, no reallocation
  EXPECT_EQ(a, b);
  uint8_t* c = s.get(100000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c) % 64, 0u);
  EXPECT_EQ(s.get(500), c);
}

}  // namespace
}  // namespace tappa
