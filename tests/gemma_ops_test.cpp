// Pieces Gemma 3 needs below the engine: the Q5_0 block format (reference dequantization and
// quantization, and its exact rewrite as Q8_0 that the loader uses) and the GeLU-tanh gating op.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/ops_gemma.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa {
namespace {

// Random Q5_0 blocks: any bit pattern is a valid block; the scale is kept finite and moderate.
std::vector<uint8_t> random_q5_0(int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> bytes(quant::row_bytes(TensorType::Q5_0, n));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  auto* blocks = reinterpret_cast<quant::BlockQ5_0*>(bytes.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    blocks[b].d = quant::fp32_to_fp16(scale(rng));
    for (auto& q : blocks[b].qh) q = static_cast<uint8_t>(byte(rng));
    for (auto& q : blocks[b].qs) q = static_cast<uint8_t>(byte(rng));
  }
  return bytes;
}

TEST(GemmaQuant, Q5_0DequantizeFollowsTheBlockLayout) {
  std::mt19937 rng(5);
  const int64_t n = 32 * 64;
  const auto bytes = random_q5_0(n, rng);
  std::vector<float> got(n);
  quant::dequantize_row(TensorType::Q5_0, bytes.data(), got.data(), n);
  // Independent reading of the layout: qh is a little-endian uint32, bit j = 5th bit of element j;
  // qs[j] holds element j (low nibble) and j + 16 (high nibble).
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* blk = bytes.data() + 22 * b;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const uint32_t qh = blk[2] | (blk[3] << 8) | (blk[4] << 16) | (static_cast<uint32_t>(blk[5]) << 24);
    const float d = quant::fp16_to_fp32(dh);
    for (int j = 0; j < 32; ++j) {
      const int lo = j < 16 ? (blk[6 + j] & 15) : (blk[6 + j - 16] >> 4);
      const int q = lo | static_cast<int>(((qh >> j) & 1) << 4);
      ASSERT_EQ(got[32 * b + j], static_cast<float>(q - 16) * d) << "block " << b << " element " << j;
    }
  }
}

TEST(GemmaQuant, Q5_0QuantizeErrorIsBoundedByTheGrid) {
  std::mt19937 rng(6);
  std::normal_distribution<float> x(0.0f, 1.0f);
  const int64_t n = 32 * 128;
  std::vector<float> src(n), back(n);
  for (auto& v : src) v = x(rng);
  std::vector<uint8_t> q(quant::row_bytes(TensorType::Q5_0, n));
  quant::quantize_row(TensorType::Q5_0, src.data(), q.data(), n);
  quant::dequantize_row(TensorType::Q5_0, q.data(), back.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(src[32 * b + j]));
    const float step = amax / 16.0f;
    // ggml's grid is d * (-16 .. 15) with the largest-magnitude value at -16 exactly: inside the grid
    // the error is at most half a step; beyond its far end (|x| > 15.5 steps, opposite sign) the code
    // is clamped to 15, up to one step off. Plus the fp16 rounding of the scale (2^-11 relative) over
    // at most 16 steps.
    const float fp16_term = 16 * step * 0x1p-11f + 1e-6f;
    for (int j = 0; j < 32; ++j) {
      const float v = src[32 * b + j];
      const float bound = std::fabs(v) <= 15.5f * step ? 0.5f * step : 1.0f * step;
      EXPECT_LE(std::fabs(back[32 * b + j] - v), bound + fp16_term);
    }
  }
}

TEST(GemmaQuant, Q5_0RewriteAsQ8_0IsExact) {
  std::mt19937 rng(7);
  const int64_t n = 32 * 40;
  const auto bytes = random_q5_0(n, rng);
  std::vector<uint8_t> q8(quant::row_bytes(TensorType::Q8_0, n));
  quant::repack_q5_0_as_q8_0(bytes.data(), q8.data(), n);
  std::vector<float> a(n), b(n);
  quant::dequantize_row(TensorType::Q5_0, bytes.data(), a.data(), n);
  quant::dequantize_row(TensorType::Q8_0, q8.data(), b.data(), n);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), sizeof(float) * n), 0);
  EXPECT_THROW(quant::repack_q5_0_as_q8_0(bytes.data(), q8.data(), 33), Error);
}

TEST(GemmaOps, GegluTanhFollowsTheFp16Table) {
  // Inside (-10, 10) the GeLU is taken at the fp16 rounding of x and rounded to fp16, so it differs
  // from the exact fp32 GeLU by at most the two fp16 roundings: |gelu'| <= 1.13 times the input's
  // (2^-11 relative) plus the output's (2^-11 relative), with an absolute floor for tiny values.
  for (float x = -12.0f; x <= 12.0f; x += 0.0137f) {
    const float up = 1.5f;
    float out;
    cpu::geglu_tanh(&x, &up, &out, 1);
    if (x <= -10.0f) {
      EXPECT_EQ(out, 0.0f) << x;
    } else if (x >= 10.0f) {
      EXPECT_EQ(out, x * up) << x;
    } else {
      const float exact = cpu::gelu_tanh_exact(x) * up;
      EXPECT_NEAR(out, exact, up * (1.2f * std::fabs(x) * 0x1p-11f + std::fabs(exact / up) * 0x1p-11f + 1e-6f)) << x;
      // And exactly the table's value: gelu of the fp16 input, rounded to fp16, times up.
      const float xh = quant::fp16_to_fp32(quant::fp32_to_fp16(x));
      EXPECT_EQ(out, quant::fp16_to_fp32(quant::fp32_to_fp16(cpu::gelu_tanh_exact(xh))) * up) << x;
    }
  }
  // Known values of the tanh approximation.
  EXPECT_NEAR(cpu::gelu_tanh_exact(1.0f), 0.841192f, 1e-5f);
  EXPECT_NEAR(cpu::gelu_tanh_exact(-1.0f), -0.158808f, 1e-5f);
  EXPECT_EQ(cpu::gelu_tanh_exact(0.0f), 0.0f);
}

TEST(GemmaOps, SoftcapBoundsLogits) {
  std::vector<float> x = {-100.0f, -1.0f, 0.0f, 1.0f, 100.0f};
  cpu::softcap_inplace(x.data(), static_cast<int64_t>(x.size()), 30.0f);
  EXPECT_LT(x[4], 30.0f);
  EXPECT_GT(x[0], -30.0f);
  EXPECT_NEAR(x[3], 30.0f * std::tanh(1.0f / 30.0f), 1e-6f);
  EXPECT_EQ(x[2], 0.0f);
}

}  // namespace
}  // namespace tappa
