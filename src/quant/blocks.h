// On-disk block layouts of the quantized GGUF tensor types (bit-compatible with ggml) and small
// helpers shared by the reference code in quant.cpp and the CPU kernels in backend/cpu.
#pragma once
#include <cstdint>
#include <cstring>

namespace tappa::quant {

constexpr int kQK = 32;    // elements per block of Q4_0, Q4_1, Q8_0
constexpr int kQKK = 256;  // elements per super-block of the K-quants

// Q4_0: x = d * (q - 8), q = 4-bit. qs[j] holds element j (low nibble) and j + 16 (high nibble).
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// Q4_1: x = d * q + m.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
// Q5_0: x = d * (q - 16), q = 5-bit: low 4 bits as in Q4_0 (qs[j]: element j low nibble, j + 16 high
// nibble), the fifth bit of element j in bit j of the little-endian 32-bit word qh.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// Q8_0: x = d * q, q = int8.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
// Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j]; sc, m are 6-bit numbers packed in
// `scales` (see unpack_scale_min_k4). qs[32 c + l] holds element 64 c + l (low nibble) and
// 64 c + 32 + l (high nibble).
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
// Q5_K: as Q4_K plus a fifth bit: bit 2c of qh[l] for element 64 c + l, bit 2c+1 for 64 c + 32 + l.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
// Q6_K: 16 sub-blocks of 16; x = d * scales[j] * (q - 32), q = 6-bit. For each half h of 128
// elements (ql += 64 h, qh += 32 h) and l < 32: element l uses ql[l] low nibble and qh[l] bits 0-1,
// l+32: ql[l+32] low / bits 2-3, l+64: ql[l] high / bits 4-5, l+96: ql[l+32] high / bits 6-7.
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
// Q8_K: x = d * q; bsums[j] = sum of qs[16 j .. 16 j + 15].
struct BlockQ8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ8_0) == 34);

// The 5-bit value (0..31) of element j (0..31) of a Q5_0 block.
inline int q5_0_value(const BlockQ5_0& b, int j) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  const int lo = j < kQK / 2 ? (b.qs[j] & 0x0F) : (b.qs[j - kQK / 2] >> 4);
  return lo | static_cast<int>(((qh >> j) & 1u) << 4);
}
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block.
inline void unpack_scale_min_k4(int j, const uint8_t* s, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// All eight scales and mins at once.
inline void unpack_scales_mins_k4(const uint8_t* s, uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 8; ++j) unpack_scale_min_k4(j, s, sc[j], m[j]);
}

// Exact IEEE binary16 -> binary32 (handles subnormals, inf, NaN).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13) | (mant != 0 ? 0x400000u : 0u);  // NaNs come out quiet, as with F16C
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal: value = mant * 2^-24. Normalise.
    int e = 113;  // exponent (biased for fp32) of 2^-14
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace tappa::quant
