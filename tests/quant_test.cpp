// Block formats: layouts, dequantization (bit-exact with ggml), round-to-nearest quantization and the
// fp16 / bf16 conversions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa {
namespace {

using quant::bf16_to_fp32;
using quant::dequantize_row;
using quant::fp16_to_fp32;
using quant::fp32_to_bf16;
using quant::fp32_to_fp16;
using quant::quantize_row;
using quant::row_bytes;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// ------------------------------------------------------------------ fp16 / bf16

TEST(QuantFp16, KnownValues) {
  EXPECT_EQ(fp32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_fp16(0.5f), 0x3800);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);  // largest finite half
  EXPECT_EQ(fp16_to_fp32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_fp32(0xC000), -2.0f);
  EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_fp32(0x3555), 0x1.554p-2f);
  EXPECT_TRUE(std::signbit(fp16_to_fp32(0x8000)));
}

TEST(QuantFp16, Subnormals) {
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(fp16_to_fp32(0x03FF), 1023.0f * std::ldexp(1.0f, -24));
  EXPECT_EQ(fp16_to_fp32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(fp16_to_fp32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);          // tie -> even (0)
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.5f, -25)), 0x0001);          // above the tie
  EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);          // 1.5 units: tie -> even (2)
  EXPECT_EQ(fp32_to_fp16(std::ldexp(5.0f, -25)), 0x0002);          // 2.5 units: tie -> even (2)
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -30)), 0x0000);          // underflow
  EXPECT_EQ(fp32_to_fp16(-std::ldexp(1.0f, -30)), 0x8000);         // keeps the sign
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1023.5f, -24)), 0x0400);       // rounds up into the normals
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(QuantFp16, InfNanOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fp32_to_fp16(inf), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-inf), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);          // halfway to 2^16 rounds to even = inf
  EXPECT_EQ(fp32_to_fp16(65519.996f), 0x7BFF);        // just below the tie
  EXPECT_EQ(fp32_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(fp16_to_fp32(0x7C00), inf);
  EXPECT_EQ(fp16_to_fp32(0xFC00), -inf);
  const uint16_t n = fp32_to_fp16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(n & 0x7C00, 0x7C00);
  EXPECT_NE(n & 0x03FF, 0);
  EXPECT_NE(fp32_to_fp16(float_of(0x7F800001u)) & 0x03FF, 0);  // signalling NaN payload in low bits stays NaN
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7E00)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7C01)));
}

TEST(QuantFp16, RoundToNearestEven) {
  const float ulp = std::ldexp(1.0f, -10);  // half ulp at 1.0
  EXPECT_EQ(fp32_to_fp16(1.0f + ulp / 2), 0x3C00);                           // tie -> even
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * ulp / 2), 0x3C02);                       // tie -> even
  EXPECT_EQ(fp32_to_fp16(1.0f + ulp / 2 + std::ldexp(1.0f, -20)), 0x3C01);  // above the tie
  EXPECT_EQ(fp32_to_fp16(1.0f + ulp / 2 - std::ldexp(1.0f, -20)), 0x3C00);  // below the tie
  EXPECT_EQ(fp32_to_fp16(2.0f - std::ldexp(1.0f, -12)), 0x4000);  // mantissa carry into the exponent
}

TEST(QuantFp16, AllHalvesRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << h;
  }
}

TEST(QuantFp16, MatchesDoubleRounding) {
  // Every rounding decision against a double-precision reference on random floats.
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  std::uniform_int_distribution<int> ex(-26, 16);
  for (int i = 0; i < 200000; ++i) {
    const float f = static_cast<float>(std::ldexp(mant(rng), ex(rng)));
    const uint16_t h = fp32_to_fp16(f);
    const double got = fp16_to_fp32(h);
    // Neighbouring halves must not be strictly closer.
    const double up = fp16_to_fp32(static_cast<uint16_t>(h + 1));
    const double err = std::fabs(got - f);
    if (std::isinf(got)) continue;
    ASSERT_LE(err, std::fabs(up - f)) << f;
    if (h > 0) {
      const double down = fp16_to_fp32(static_cast<uint16_t>(h - 1));
      ASSERT_LE(err, std::fabs(down - f)) << f;
    }
  }
}

TEST(QuantBf16, Conversions) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_fp32(0x4049), 3.140625f);
  const float ulp = std::ldexp(1.0f, -7);
  EXPECT_EQ(fp32_to_bf16(1.0f + ulp / 2), 0x3F80);                           // tie -> even
  EXPECT_EQ(fp32_to_bf16(1.0f + 3 * ulp / 2), 0x3F82);                       // tie -> even
  EXPECT_EQ(fp32_to_bf16(1.0f + ulp / 2 + std::ldexp(1.0f, -20)), 0x3F81);  // above the tie
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fp32_to_bf16(inf), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(-inf), 0xFF80);
  EXPECT_EQ(fp32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to infinity
  EXPECT_EQ(bf16_to_fp32(0x7F80), inf);
  // NaNs stay NaN, including a signalling NaN whose payload lives only in the dropped low bits.
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(float_of(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(float_of(0xFFFFFFFFu)))));
  // Subnormals are kept (no flush to zero).
  EXPECT_EQ(fp32_to_bf16(float_of(0x00010000u)), 0x0001);
  EXPECT_EQ(bf16_to_fp32(0x0001), float_of(0x00010000u));
  EXPECT_EQ(fp32_to_bf16(float_of(0x00008000u)), 0x0000);  // tie -> even
  EXPECT_EQ(fp32_to_bf16(float_of(0x00018000u)), 0x0002);  // tie -> even
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_bf16(f), h);
    ASSERT_EQ(bits_of(f), h << 16);
  }
}

// ------------------------------------------------------------------ sizes

TEST(QuantRowBytes, Sizes) {
  EXPECT_EQ(row_bytes(TensorType::F32, 7), 28u);
  EXPECT_EQ(row_bytes(TensorType::F16, 3), 6u);
  EXPECT_EQ(row_bytes(TensorType::BF16, 5), 10u);
  EXPECT_EQ(row_bytes(TensorType::Q4_0, 64), 36u);
  EXPECT_EQ(row_bytes(TensorType::Q4_1, 576), 18u * 20u);
  EXPECT_EQ(row_bytes(TensorType::Q8_0, 32), 34u);
  EXPECT_EQ(row_bytes(TensorType::Q4_K, 512), 288u);
  EXPECT_EQ(row_bytes(TensorType::Q5_K, 256), 176u);
  EXPECT_EQ(row_bytes(TensorType::Q6_K, 256), 210u);
  EXPECT_EQ(row_bytes(TensorType::Q8_K, 256), 292u);
  EXPECT_EQ(row_bytes(TensorType::Q4_0, 0), 0u);
  EXPECT_THROW(row_bytes(TensorType::Q4_0, 33), Error);
  EXPECT_THROW(row_bytes(TensorType::Q4_K, 32), Error);
  EXPECT_EQ(row_bytes(TensorType::Q5_0, 64), 44u);
  EXPECT_THROW(row_bytes(TensorType::Q5_1, 32), Error);  // not supported here
  EXPECT_THROW(row_bytes(static_cast<TensorType>(1000), 32), Error);
  float out[32];
  uint8_t blk[64] = {};
  EXPECT_THROW(dequantize_row(TensorType::IQ2_XXS, blk, out, 256), Error);
  EXPECT_THROW(quantize_row(TensorType::Q4_0, out, blk, 31), Error);
}

// ------------------------------------------------------------------ hand-made blocks

TEST(QuantDequant, Q4_0Block) {
  uint8_t b[18];
  put16(b, fp32_to_fp16(0.5f));
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  dequantize_row(TensorType::Q4_0, b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;               // low nibbles: elements 0..15
    EXPECT_EQ(y[16 + j], (15 - j - 8) * 0.5f) << j;     // high nibbles: elements 16..31
  }
}

TEST(QuantDequant, Q4_1Block) {
  uint8_t b[20];
  put16(b, fp32_to_fp16(0.25f));
  put16(b + 2, fp32_to_fp16(-1.0f));
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<uint8_t>(((j * 3) & 15) | (j << 4));
  float y[32];
  dequantize_row(TensorType::Q4_1, b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], ((j * 3) & 15) * 0.25f - 1.0f);
    EXPECT_EQ(y[16 + j], j * 0.25f - 1.0f);
  }
}

TEST(QuantDequant, Q8_0Block) {
  uint8_t b[34];
  put16(b, fp32_to_fp16(2.0f));
  const int vals[4] = {-128, 127, 0, -1};
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j < 4 ? vals[j] : j - 16));
  float y[32];
  dequantize_row(TensorType::Q8_0, b, y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 2.0f * (j < 4 ? vals[j] : j - 16));
}

// Packs 6-bit scales and mins as the K-quant format defines them (ggml's get_scale_min_k4 layout).
void pack_k4(const int sc[8], const int mn[8], uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] & 63);
    s[j + 4] = static_cast<uint8_t>(mn[j] & 63);
  }
  for (int j = 4; j < 8; ++j) {
    s[j + 4] = static_cast<uint8_t>((sc[j] & 15) | ((mn[j] & 15) << 4));
    s[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
    s[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
  }
}

const int kSc[8] = {1, 5, 17, 33, 63, 40, 20, 7};
const int kMn[8] = {0, 63, 2, 31, 16, 48, 1, 60};

TEST(QuantDequant, Q4_KBlock) {
  uint8_t b[144];
  put16(b, fp32_to_fp16(1.0f));
  put16(b + 2, fp32_to_fp16(0.5f));
  pack_k4(kSc, kMn, b + 4);
  auto code = [](int e) { return (e * 7 + e / 32) % 16; };
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) b[16 + 32 * c + l] = static_cast<uint8_t>(code(64 * c + l) | (code(64 * c + 32 + l) << 4));
  float y[256];
  dequantize_row(TensorType::Q4_K, b, y, 256);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32;
    EXPECT_EQ(y[e], 1.0f * kSc[j] * code(e) - 0.5f * kMn[j]) << e;
  }
}

TEST(QuantDequant, Q5_KBlock) {
  uint8_t b[176];
  put16(b, fp32_to_fp16(0.25f));
  put16(b + 2, fp32_to_fp16(2.0f));
  pack_k4(kSc, kMn, b + 4);
  auto code = [](int e) { return (e * 11 + e / 64) % 32; };
  uint8_t* qh = b + 16;
  uint8_t* qs = b + 48;
  std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int lo = code(64 * c + l), hi = code(64 * c + 32 + l);
      qs[32 * c + l] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
      qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
  float y[256];
  dequantize_row(TensorType::Q5_K, b, y, 256);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32;
    EXPECT_EQ(y[e], 0.25f * kSc[j] * code(e) - 2.0f * kMn[j]) << e;
  }
}

TEST(QuantDequant, Q6_KBlock) {
  uint8_t b[210];
  auto code = [](int e) { return (e * 13 + 5) % 64; };
  int8_t sc[16];
  for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(j * 17 - 128);
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  std::memset(qh, 0, 64);
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int e = 128 * h + l;
      ql[64 * h + l] = static_cast<uint8_t>((code(e) & 15) | ((code(e + 64) & 15) << 4));
      ql[64 * h + l + 32] = static_cast<uint8_t>((code(e + 32) & 15) | ((code(e + 96) & 15) << 4));
      qh[32 * h + l] = static_cast<uint8_t>((code(e) >> 4) | ((code(e + 32) >> 4) << 2) | ((code(e + 64) >> 4) << 4) |
                                            ((code(e + 96) >> 4) << 6));
    }
  }
  std::memcpy(b + 192, sc, 16);
  put16(b + 208, fp32_to_fp16(0.5f));
  float y[256];
  dequantize_row(TensorType::Q6_K, b, y, 256);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(y[e], 0.5f * sc[e / 16] * (code(e) - 32)) << e;
}

TEST(QuantDequant, Q8_KBlock) {
  uint8_t b[292] = {};
  const float d = -0.125f;
  std::memcpy(b, &d, 4);
  for (int j = 0; j < 256; ++j) b[4 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 128));
  float y[256];
  dequantize_row(TensorType::Q8_K, b, y, 256);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(y[j], d * (j - 128));
}

// Golden checksums of ggml's own dequantize_row_* (libggml-base of the llama.cpp vendored by
// llama-cpp-python 0.3.36) over pseudo-random blocks: 8 blocks per type, random bytes with finite
// fp16 scales. Pins the exact expressions (operation order, no FMA) as well as the layouts.
struct Lcg {
  uint64_t s;
  uint32_t next() {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(s >> 32);
  }
};

std::vector<uint8_t> golden_blocks(TensorType t, int nblocks, uint64_t seed) {
  const size_t bs = row_bytes(t, t == TensorType::Q4_0 || t == TensorType::Q4_1 || t == TensorType::Q8_0 ? 32 : 256);
  std::vector<uint8_t> v(bs * nblocks);
  Lcg g{seed};
  for (auto& c : v) c = static_cast<uint8_t>(g.next() >> 24);
  auto half = [&] {
    const uint32_t r = g.next();
    return static_cast<uint16_t>(0x2C00 + (r % 0x1000) + (((r >> 16) & 1) ? 0x8000 : 0));
  };
  for (int b = 0; b < nblocks; ++b) {
    uint8_t* p = v.data() + b * bs;
    switch (t) {
      case TensorType::Q4_0:
      case TensorType::Q8_0: put16(p, half()); break;
      case TensorType::Q4_1:
      case TensorType::Q4_K:
      case TensorType::Q5_K: put16(p, half()); put16(p + 2, half()); break;
      case TensorType::Q6_K: put16(p + 208, half()); break;
      default: {
        const float d = 0.001f * static_cast<float>(1 + g.next() % 1000) * ((g.next() & 1) ? -1.0f : 1.0f);
        std::memcpy(p, &d, 4);
        break;
      }
    }
  }
  return v;
}

uint64_t fnv1a(const float* x, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  const auto* b = reinterpret_cast<const uint8_t*>(x);
  for (size_t i = 0; i < 4 * n; ++i) {
    h ^= b[i];
    h *= 1099511628211ULL;
  }
  return h;
}

TEST(QuantDequant, MatchesGgmlGolden) {
  struct Golden {
    TensorType t;
    uint64_t hash;
    float first, last;
  };
  const Golden golden[] = {
      {TensorType::Q4_0, 0x2a2f356f8a1d8963ULL, 0x1.fb8p-1f, 0x1.b04p+0f},
      {TensorType::Q4_1, 0xa7751fa8af9af09bULL, 0x1.874p-1f, 0x1.6f3p+0f},
      {TensorType::Q8_0, 0xda051066513c0ad8ULL, 0x1.d48p+0f, 0x1.d87bp+4f},
      {TensorType::Q4_K, 0xfa6125e8b3a912f2ULL, -0x1.a5a6p+4f, 0x1.18958p+6f},
      {TensorType::Q5_K, 0x890035dbb50d6454ULL, 0x1.babcp+0f, 0x1.32c0cp+6f},
      {TensorType::Q6_K, 0xb09443e901c7788cULL, -0x1.d0b5p+7f, 0x1.9a05ep+10f},
      {TensorType::Q8_K, 0xea2c4b39e345328fULL, -0x1.171aap+5f, -0x1.1e041ap+2f},
  };
  for (const Golden& g : golden) {
    const int64_t n = 8 * ((g.t == TensorType::Q4_0 || g.t == TensorType::Q4_1 || g.t == TensorType::Q8_0) ? 32 : 256);
    const auto blocks = golden_blocks(g.t, 8, 1000 + static_cast<uint32_t>(g.t));
    std::vector<float> y(n);
    dequantize_row(g.t, blocks.data(), y.data(), n);
    EXPECT_EQ(y.front(), g.first) << static_cast<int>(g.t);
    EXPECT_EQ(y.back(), g.last) << static_cast<int>(g.t);
    EXPECT_EQ(fnv1a(y.data(), y.size()), g.hash) << static_cast<int>(g.t);
  }
}

// ------------------------------------------------------------------ round trips

// Random rows: normal, shifted (exercises the mins), with outliers, plus degenerate blocks.
std::vector<float> random_row(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t blk = i / 256;
    float v = nd(rng);
    switch (blk % 5) {
      case 1: v = 0.3f + 0.1f * v; break;         // all positive, narrow
      case 2: v = -2.0f + 0.5f * v; break;        // all negative
      case 3: v = (i % 97 == 0) ? 40.0f * v : v; break;  // outliers
      default: break;
    }
    x[i] = v;
  }
  // One all-zero and one constant 32-block.
  if (n >= 1024) {
    std::fill(x.begin() + 256 * 4, x.begin() + 256 * 4 + 32, 0.0f);
    std::fill(x.begin() + 256 * 4 + 32, x.begin() + 256 * 4 + 64, 1.25f);
  }
  return x;
}

std::vector<float> round_trip(TensorType t, const std::vector<float>& x, std::vector<uint8_t>& q) {
  const int64_t n = static_cast<int64_t>(x.size());
  q.assign(row_bytes(t, n), 0);
  quantize_row(t, x.data(), q.data(), n);
  std::vector<float> y(n);
  dequantize_row(t, q.data(), y.data(), n);
  return y;
}

constexpr int64_t kN = 256 * 10;
const float kHalfEps = std::ldexp(1.0f, -11);  // fp16 relative rounding error bound

TEST(QuantRoundTrip, FloatTypes) {
  const auto x = random_row(kN, 1);
  std::vector<uint8_t> q;
  const auto y32 = round_trip(TensorType::F32, x, q);
  const auto y16 = round_trip(TensorType::F16, x, q);
  const auto yb = round_trip(TensorType::BF16, x, q);
  for (int64_t i = 0; i < kN; ++i) {
    EXPECT_EQ(y32[i], x[i]);
    // Half an ulp of 11 bits; below 2^-14 the halves are subnormal with a fixed spacing of 2^-24.
    EXPECT_LE(std::fabs(y16[i] - x[i]), std::max(std::fabs(x[i]) * kHalfEps, std::ldexp(1.0f, -25)));
    EXPECT_LE(std::fabs(yb[i] - x[i]), std::fabs(x[i]) * std::ldexp(1.0f, -8));  // half an ulp of 8 bits
  }
}

// Q8_0: q = round(x / d), d = amax / 127, stored as fp16. Error <= d/2 from rounding plus
// |q| * |d16 - d| <= 127 * d * 2^-11 from the stored scale.
TEST(QuantRoundTrip, Q8_0) {
  const auto x = random_row(kN, 2);
  std::vector<uint8_t> q;
  const auto y = round_trip(TensorType::Q8_0, x, q);
  for (int64_t b = 0; b < kN / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
    const float d = amax / 127.0f;
    for (int j = 0; j < 32; ++j) {
      const int64_t i = 32 * b + j;
      ASSERT_LE(std::fabs(y[i] - x[i]), d * (0.5f + 127.0f * kHalfEps) + 1e-7f * amax) << i;
    }
  }
}

// Q4_0: d = vmax / -8 (the largest-magnitude value maps to code 0 exactly). Values of the other sign
// reach at most 8|d| but the top code is 7|d| away from zero, so the worst case is one step |d|;
// everywhere else the error is at most half a step. Plus the fp16 rounding of d (|q - 8| <= 8).
TEST(QuantRoundTrip, Q4_0) {
  const auto x = random_row(kN, 3);
  std::vector<uint8_t> q;
  const auto y = round_trip(TensorType::Q4_0, x, q);
  double sq = 0.0, sq_step = 0.0;
  for (int64_t b = 0; b < kN / 32; ++b) {
    const float d = std::fabs(fp16_to_fp32(static_cast<uint16_t>(q[18 * b] | (q[18 * b + 1] << 8))));
    for (int j = 0; j < 32; ++j) {
      const int64_t i = 32 * b + j;
      const float err = std::fabs(y[i] - x[i]);
      ASSERT_LE(err, d * (1.0f + 8.0f * kHalfEps) + 1e-7f) << i;
      // Only values beyond the top code (x / d above 7.5 in the positive-code direction) may exceed d/2.
      if (err > d * (0.5f + 8.0f * kHalfEps) + 1e-7f) {
        ASSERT_GT(std::fabs(x[i]), 7.5f * d * (1.0f - 8 * kHalfEps)) << i;
      }
      sq += static_cast<double>(err) * err;
      sq_step += static_cast<double>(d) * d;
    }
  }
  EXPECT_LT(sq / sq_step, 0.1);  // uniform rounding error would give 1/12
}

// Q4_1: grid m + d * [0, 15] with d = (max - min) / 15 rounded up and m = fp16(min): error <= d/2
// plus |m - min| <= |min| 2^-11 (the grid may be shifted by the rounding of m).
TEST(QuantRoundTrip, Q4_1) {
  const auto x = random_row(kN, 4);
  std::vector<uint8_t> q;
  const auto y = round_trip(TensorType::Q4_1, x, q);
  for (int64_t b = 0; b < kN / 32; ++b) {
    const float d = fp16_to_fp32(static_cast<uint16_t>(q[20 * b] | (q[20 * b + 1] << 8)));
    float lo = x[32 * b], hi = x[32 * b];
    for (int j = 0; j < 32; ++j) lo = std::min(lo, x[32 * b + j]), hi = std::max(hi, x[32 * b + j]);
    EXPECT_GE(d * 15.0f, (hi - lo) * (1.0f - 1e-6f));
    EXPECT_LE(d * 15.0f, (hi - lo) * (1.0f + 2 * kHalfEps) + 1e-7f);
    for (int j = 0; j < 32; ++j) {
      const int64_t i = 32 * b + j;
      ASSERT_LE(std::fabs(y[i] - x[i]), 0.5f * d + std::fabs(lo) * kHalfEps + 1e-6f * std::max(std::fabs(lo), std::fabs(hi)) + 1e-7f) << i;
    }
  }
}

// Q4_K / Q5_K: in sub-block j the grid is -dmin*m_j + d*sc_j * [0, nmax]. The quantizer rounds the
// 6-bit scale and min up, so the grid covers the sub-block and the error is at most half a step
// d*sc_j (plus float rounding, bounded by 1e-5 of the super-block's largest magnitude).
template <int kMax>
void check_k_affine(TensorType t, size_t block_bytes, uint32_t seed) {
  const auto x = random_row(kN, seed);
  std::vector<uint8_t> q;
  const auto y = round_trip(t, x, q);
  for (int64_t i = 0; i < kN / 256; ++i) {
    const uint8_t* blk = q.data() + block_bytes * i;
    const float d = fp16_to_fp32(static_cast<uint16_t>(blk[0] | (blk[1] << 8)));
    const uint8_t* s = blk + 4;
    float amax = 0.0f;
    for (int e = 0; e < 256; ++e) amax = std::max(amax, std::fabs(x[256 * i + e]));
    for (int j = 0; j < 8; ++j) {
      const int sc = j < 4 ? (s[j] & 63) : ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
      const float step = d * sc;
      for (int l = 0; l < 32; ++l) {
        const int64_t e = 256 * i + 32 * j + l;
        ASSERT_LE(std::fabs(y[e] - x[e]), 0.5f * step + 1e-5f * amax) << e << " step " << step;
      }
      // The step is not much larger than needed: (range of the sub-block, min clamped to <= 0) / nmax,
      // plus one quantum of the super-block scale and of dmin.
      float lo = 0.0f, hi = x[256 * i + 32 * j];
      for (int l = 0; l < 32; ++l) lo = std::min(lo, x[256 * i + 32 * j + l]), hi = std::max(hi, x[256 * i + 32 * j + l]);
      const float dmin = fp16_to_fp32(static_cast<uint16_t>(blk[2] | (blk[3] << 8)));
      EXPECT_LE(step, (hi - lo + dmin) / kMax + d + 1e-6f * amax);
    }
  }
}

TEST(QuantRoundTrip, Q4_K) { check_k_affine<15>(TensorType::Q4_K, 144, 5); }
TEST(QuantRoundTrip, Q5_K) { check_k_affine<31>(TensorType::Q5_K, 176, 6); }

// Q6_K: symmetric grid d*sc_j * [-32, 31] per 16 elements, scale rounded up so that amax <= 31 steps:
// error <= half a step.
TEST(QuantRoundTrip, Q6_K) {
  const auto x = random_row(kN, 7);
  std::vector<uint8_t> q;
  const auto y = round_trip(TensorType::Q6_K, x, q);
  for (int64_t i = 0; i < kN / 256; ++i) {
    const uint8_t* blk = q.data() + 210 * i;
    const float d = fp16_to_fp32(static_cast<uint16_t>(blk[208] | (blk[209] << 8)));
    float amax = 0.0f;
    for (int e = 0; e < 256; ++e) amax = std::max(amax, std::fabs(x[256 * i + e]));
    for (int j = 0; j < 16; ++j) {
      const float step = d * static_cast<int8_t>(blk[192 + j]);
      float sub_max = 0.0f;
      for (int l = 0; l < 16; ++l) sub_max = std::max(sub_max, std::fabs(x[256 * i + 16 * j + l]));
      EXPECT_LE(step, sub_max / 31.0f + d + 1e-6f * amax);
      for (int l = 0; l < 16; ++l) {
        const int64_t e = 256 * i + 16 * j + l;
        ASSERT_LE(std::fabs(y[e] - x[e]), 0.5f * step + 1e-5f * amax) << e;
      }
    }
  }
}

// Q8_K: float scale d = -vmax/127 per 256, so the error is at most |d|/2 (no scale rounding).
TEST(QuantRoundTrip, Q8_K) {
  const auto x = random_row(kN, 8);
  std::vector<uint8_t> q;
  const auto y = round_trip(TensorType::Q8_K, x, q);
  for (int64_t i = 0; i < kN / 256; ++i) {
    float d;
    std::memcpy(&d, q.data() + 292 * i, 4);
    float amax = 0.0f;
    int first = 0;
    for (int e = 0; e < 256; ++e) {
      if (std::fabs(x[256 * i + e]) > amax) {
        amax = std::fabs(x[256 * i + e]);
        first = e;
      }
    }
    EXPECT_FLOAT_EQ(std::fabs(d), amax / 127.0f);
    EXPECT_EQ(std::signbit(d), !std::signbit(x[256 * i + first]));  // the largest value maps to -127
    const auto* qs = reinterpret_cast<const int8_t*>(q.data() + 292 * i + 4);
    const auto* bs = reinterpret_cast<const int16_t*>(q.data() + 292 * i + 260);
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += qs[16 * g + l];
      EXPECT_EQ(bs[g], s);
    }
    for (int e = 0; e < 256; ++e) ASSERT_LE(std::fabs(y[256 * i + e] - x[256 * i + e]), 0.5f * std::fabs(d) * (1 + 1e-6f)) << e;
  }
}

TEST(QuantRoundTrip, ZeroRowsStayZero) {
  for (TensorType t : {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K,
                       TensorType::Q6_K, TensorType::Q8_K, TensorType::F16, TensorType::BF16}) {
    std::vector<float> x(512, 0.0f);
    std::vector<uint8_t> q;
    const auto y = round_trip(t, x, q);
    for (float v : y) ASSERT_EQ(v, 0.0f) << static_cast<int>(t);
  }
}

}  // namespace
}  // namespace tappa
