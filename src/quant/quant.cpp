// Reference (scalar) dequantization and round-to-nearest quantization of the GGUF block formats.
// Dequantization evaluates exactly the expressions ggml's reference code does (same operations, same
// order, no fused multiply-add), so the results are bit-identical to ggml's.
#include "quant/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "quant/blocks.h"
#include "tappa/error.h"

// ggml computes these expressions as a separate multiply and add; never contract them into an FMA.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace tappa::quant {

namespace {

struct Layout {
  int64_t block;  // elements per block
  size_t bytes;   // bytes per block
};

bool layout_of(TensorType t, Layout& out) {
  switch (t) {
    case TensorType::F32: out = {1, 4}; return true;
    case TensorType::F16: out = {1, 2}; return true;
    case TensorType::BF16: out = {1, 2}; return true;
    case TensorType::Q4_0: out = {kQK, sizeof(BlockQ4_0)}; return true;
    case TensorType::Q4_1: out = {kQK, sizeof(BlockQ4_1)}; return true;
    case TensorType::Q5_0: out = {kQK, sizeof(BlockQ5_0)}; return true;
    case TensorType::Q8_0: out = {kQK, sizeof(BlockQ8_0)}; return true;
    case TensorType::Q4_K: out = {kQKK, sizeof(BlockQ4_K)}; return true;
    case TensorType::Q5_K: out = {kQKK, sizeof(BlockQ5_K)}; return true;
    case TensorType::Q6_K: out = {kQKK, sizeof(BlockQ6_K)}; return true;
    case TensorType::Q8_K: out = {kQKK, sizeof(BlockQ8_K)}; return true;
    default: return false;
  }
}

Layout checked_layout(TensorType t, int64_t n) {
  Layout l;
  if (!layout_of(t, l)) {
    throw Error("tensor type " + std::to_string(static_cast<uint32_t>(t)) + " is not supported by quant");
  }
  if (n < 0 || n % l.block != 0) {
    throw Error("row length " + std::to_string(n) + " is not a multiple of the block size " +
                std::to_string(l.block) + " of tensor type " + std::to_string(static_cast<uint32_t>(t)));
  }
  return l;
}

// Round half to even (the FPU default), as an int.
inline int round_int(float x) { return static_cast<int>(std::nearbyint(x)); }

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// fp16 of a positive scale, rounded up so that the stored scale is never smaller than `v` (keeps the
// quantization grid covering the whole range).
inline uint16_t fp16_ceil(float v) {
  uint16_t h = fp32_to_fp16(v);
  if (half_to_float(h) < v && (h & 0x7FFF) < 0x7BFF) ++h;
  return h;
}

// ---------------------------------------------------------------- dequantization

void deq_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int x0 = (b[i].qs[j] & 0x0F) - 8;
      const int x1 = (b[i].qs[j] >> 4) - 8;
      y[j] = x0 * d;
      y[j + kQK / 2] = x1 * d;
    }
  }
}

void deq_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = half_to_float(b[i].d);
    const float m = half_to_float(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      const int x0 = b[i].qs[j] & 0x0F;
      const int x1 = b[i].qs[j] >> 4;
      const float p0 = x0 * d, p1 = x1 * d;  // separate statements: never fused
      y[j] = p0 + m;
      y[j + kQK / 2] = p1 + m;
    }
  }
}

void deq_q5_0(const BlockQ5_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = (q5_0_value(b[i], j) - 16) * d;
  }
}

void deq_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = b[i].qs[j] * d;
  }
}

void deq_q4_k(const BlockQ4_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(b[i].d);
    const float dmin = half_to_float(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc, m;
      unpack_scale_min_k4(2 * c, b[i].scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      unpack_scale_min_k4(2 * c + 1, b[i].scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) {
        const float p = d1 * (q[l] & 0x0F);
        *y++ = p - m1;
      }
      for (int l = 0; l < 32; ++l) {
        const float p = d2 * (q[l] >> 4);
        *y++ = p - m2;
      }
    }
  }
}

void deq_q5_k(const BlockQ5_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(b[i].d);
    const float dmin = half_to_float(b[i].dmin);
    const uint8_t* q = b[i].qs;
    const uint8_t* qh = b[i].qh;
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc, m;
      unpack_scale_min_k4(2 * c, b[i].scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      unpack_scale_min_k4(2 * c + 1, b[i].scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      const int lo_bit = 2 * c, hi_bit = 2 * c + 1;
      for (int l = 0; l < 32; ++l) {
        const float p = d1 * ((q[l] & 0x0F) + (((qh[l] >> lo_bit) & 1) << 4));
        *y++ = p - m1;
      }
      for (int l = 0; l < 32; ++l) {
        const float p = d2 * ((q[l] >> 4) + (((qh[l] >> hi_bit) & 1) << 4));
        *y++ = p - m2;
      }
    }
  }
}

void deq_q6_k(const BlockQ6_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      float* yy = y + 256 * i + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        yy[l] = d * sc[s + 0] * q1;
        yy[l + 32] = d * sc[s + 2] * q2;
        yy[l + 64] = d * sc[s + 4] * q3;
        yy[l + 96] = d * sc[s + 6] * q4;
      }
    }
  }
}

void deq_q8_k(const BlockQ8_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    for (int j = 0; j < kQKK; ++j) y[j] = b[i].d * b[i].qs[j];
  }
}

// ---------------------------------------------------------------- quantization

void q_q4_0(const float* x, BlockQ4_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // The value of largest magnitude maps to -8 exactly (uses the full asymmetric range).
    float amax = 0.0f, vmax = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    }
    b[i].d = fp32_to_fp16(vmax / -8.0f);
    const float d = half_to_float(b[i].d);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = clampi(round_int(x[j] * id) + 8, 0, 15);
      const int q1 = clampi(round_int(x[j + kQK / 2] * id) + 8, 0, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void q_q4_1(const float* x, BlockQ4_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < kQK; ++j) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    b[i].d = fp16_ceil((hi - lo) / 15.0f);
    b[i].m = fp32_to_fp16(lo);
    const float d = half_to_float(b[i].d);
    const float m = half_to_float(b[i].m);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = clampi(round_int((x[j] - m) * id), 0, 15);
      const int q1 = clampi(round_int((x[j + kQK / 2] - m) * id), 0, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// Q5_0 as ggml's reference: the value of largest magnitude maps to -16 exactly (d = max / -16).
void q_q5_0(const float* x, BlockQ5_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(31, static_cast<int>(x[j] * id + 16.5f));
      const int q1 = std::min(31, static_cast<int>(x[j + kQK / 2] * id + 16.5f));
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j;
      qh |= static_cast<uint32_t>((q1 >> 4) & 1) << (j + kQK / 2);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

void q_q8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = static_cast<int8_t>(round_int(x[j] * id));
  }
}

// Q4_K / Q5_K: per sub-block of 32 an affine grid lo + step * q, q in [0, nmax]. Mins are stored as
// non-negative offsets (x = d*sc*q - dmin*m), so lo is clamped to <= 0. Scales and offsets are rounded
// up so the grid always covers the sub-block's range; the error is then at most half a step.
template <int kMax>
void k_affine_params(const float* x, uint16_t& d16, uint16_t& dmin16, uint8_t sc[8], uint8_t mn[8]) {
  float offs[8], his[8];
  float max_off = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float lo = 0.0f, hi = x[32 * j];
    for (int l = 0; l < 32; ++l) {
      lo = std::min(lo, x[32 * j + l]);
      hi = std::max(hi, x[32 * j + l]);
    }
    offs[j] = -lo;
    his[j] = hi;
    max_off = std::max(max_off, offs[j]);
  }
  dmin16 = fp16_ceil(max_off / 63.0f);
  const float dmin = half_to_float(dmin16);
  float steps[8], max_step = 0.0f;
  for (int j = 0; j < 8; ++j) {
    mn[j] = dmin > 0.0f ? static_cast<uint8_t>(clampi(static_cast<int>(std::ceil(offs[j] / dmin)), 0, 63)) : 0;
    steps[j] = std::max(0.0f, (his[j] + dmin * mn[j]) / kMax);
    max_step = std::max(max_step, steps[j]);
  }
  d16 = fp16_ceil(max_step / 63.0f);
  const float d = half_to_float(d16);
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0.0f ? static_cast<uint8_t>(clampi(static_cast<int>(std::ceil(steps[j] / d)), 0, 63)) : 0;
  }
}

void pack_scales_mins_k4(const uint8_t sc[8], const uint8_t mn[8], uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
  }
}

template <int kMax>
void k_affine_codes(const float* x, float d, float dmin, const uint8_t sc[8], const uint8_t mn[8], uint8_t* q) {
  for (int j = 0; j < 8; ++j) {
    const float step = d * sc[j];
    const float off = dmin * mn[j];
    const float is = step > 0.0f ? 1.0f / step : 0.0f;
    for (int l = 0; l < 32; ++l) q[32 * j + l] = static_cast<uint8_t>(clampi(round_int((x[32 * j + l] + off) * is), 0, kMax));
  }
}

void q_q4_k(const float* x, BlockQ4_K* b, int64_t nb) {
  uint8_t sc[8], mn[8], q[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    k_affine_params<15>(x, b[i].d, b[i].dmin, sc, mn);
    pack_scales_mins_k4(sc, mn, b[i].scales);
    k_affine_codes<15>(x, half_to_float(b[i].d), half_to_float(b[i].dmin), sc, mn, q);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void q_q5_k(const float* x, BlockQ5_K* b, int64_t nb) {
  uint8_t sc[8], mn[8], q[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    k_affine_params<31>(x, b[i].d, b[i].dmin, sc, mn);
    pack_scales_mins_k4(sc, mn, b[i].scales);
    k_affine_codes<31>(x, half_to_float(b[i].d), half_to_float(b[i].dmin), sc, mn, q);
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
        b[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

// Q6_K: symmetric, 16 sub-blocks of 16 with codes in [-31, 31] (the format allows -32, unused here)
// and int8 sub-block scales, rounded up so the grid covers the sub-block.
void q_q6_k(const float* x, BlockQ6_K* b, int64_t nb) {
  int q[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float steps[16], max_step = 0.0f;
    for (int j = 0; j < 16; ++j) {
      float amax = 0.0f;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * j + l]));
      steps[j] = amax / 31.0f;
      max_step = std::max(max_step, steps[j]);
    }
    b[i].d = fp16_ceil(max_step / 127.0f);
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < 16; ++j) {
      const int s = d > 0.0f ? clampi(static_cast<int>(std::ceil(steps[j] / d)), 0, 127) : 0;
      b[i].scales[j] = static_cast<int8_t>(s);
      const float step = d * s;
      const float is = step > 0.0f ? 1.0f / step : 0.0f;
      for (int l = 0; l < 16; ++l) q[16 * j + l] = clampi(round_int(x[16 * j + l] * is), -32, 31) + 32;
    }
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int h = 0; h < 2; ++h) {
      uint8_t* ql = b[i].ql + 64 * h;
      uint8_t* qh = b[i].qh + 32 * h;
      const int* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((qq[l] & 0x0F) | ((qq[l + 64] & 0x0F) << 4));
        ql[l + 32] = static_cast<uint8_t>((qq[l + 32] & 0x0F) | ((qq[l + 96] & 0x0F) << 4));
        qh[l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) |
                                     ((qq[l + 96] >> 4) << 6));
      }
    }
  }
}

// Q8_K as ggml defines it: the value of largest magnitude maps to -127 (so d has the opposite sign).
void q_q8_k(const float* x, BlockQ8_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float amax = 0.0f, vmax = 0.0f;
    for (int j = 0; j < kQKK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    }
    if (amax == 0.0f) {
      b[i].d = 0.0f;
      std::memset(b[i].qs, 0, sizeof(b[i].qs));
      std::memset(b[i].bsums, 0, sizeof(b[i].bsums));
      continue;
    }
    const float iscale = -127.0f / vmax;
    for (int j = 0; j < kQKK; ++j) b[i].qs[j] = static_cast<int8_t>(std::min(127, round_int(iscale * x[j])));
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += b[i].qs[16 * j + l];
      b[i].bsums[j] = static_cast<int16_t>(s);
    }
    b[i].d = 1.0f / iscale;
  }
}

}  // namespace

size_t row_bytes(TensorType t, int64_t n) {
  const Layout l = checked_layout(t, n);
  return static_cast<size_t>(n / l.block) * l.bytes;
}

void dequantize_row(TensorType t, const void* src, float* dst, int64_t n) {
  const Layout l = checked_layout(t, n);
  const int64_t nb = n / l.block;
  switch (t) {
    case TensorType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case TensorType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(s[i]);
      break;
    }
    case TensorType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
      break;
    }
    case TensorType::Q4_0: deq_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb); break;
    case TensorType::Q4_1: deq_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb); break;
    case TensorType::Q5_0: deq_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb); break;
    case TensorType::Q8_0: deq_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb); break;
    case TensorType::Q4_K: deq_q4_k(static_cast<const BlockQ4_K*>(src), dst, nb); break;
    case TensorType::Q5_K: deq_q5_k(static_cast<const BlockQ5_K*>(src), dst, nb); break;
    case TensorType::Q6_K: deq_q6_k(static_cast<const BlockQ6_K*>(src), dst, nb); break;
    case TensorType::Q8_K: deq_q8_k(static_cast<const BlockQ8_K*>(src), dst, nb); break;
    default: break;  // unreachable: checked_layout throws
  }
}

void quantize_row(TensorType t, const float* src, void* dst, int64_t n) {
  const Layout l = checked_layout(t, n);
  const int64_t nb = n / l.block;
  switch (t) {
    case TensorType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case TensorType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
      break;
    }
    case TensorType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
      break;
    }
    case TensorType::Q4_0: q_q4_0(src, static_cast<BlockQ4_0*>(dst), nb); break;
    case TensorType::Q4_1: q_q4_1(src, static_cast<BlockQ4_1*>(dst), nb); break;
    case TensorType::Q5_0: q_q5_0(src, static_cast<BlockQ5_0*>(dst), nb); break;
    case TensorType::Q8_0: q_q8_0(src, static_cast<BlockQ8_0*>(dst), nb); break;
    case TensorType::Q4_K: q_q4_k(src, static_cast<BlockQ4_K*>(dst), nb); break;
    case TensorType::Q5_K: q_q5_k(src, static_cast<BlockQ5_K*>(dst), nb); break;
    case TensorType::Q6_K: q_q6_k(src, static_cast<BlockQ6_K*>(dst), nb); break;
    case TensorType::Q8_K: q_q8_k(src, static_cast<BlockQ8_K*>(dst), nb); break;
    default: break;
  }
}

void repack_q5_0_as_q8_0(const void* src, void* dst, int64_t n) {
  checked_layout(TensorType::Q5_0, n);
  const auto* in = static_cast<const BlockQ5_0*>(src);
  auto* out = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i) {
    out[i].d = in[i].d;
    for (int j = 0; j < kQK; ++j) out[i].qs[j] = static_cast<int8_t>(q5_0_value(in[i], j) - 16);
  }
}

float fp16_to_fp32(uint16_t h) { return half_to_float(h); }

uint16_t fp32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00 | ((a >> 13) & 0x3FF));  // NaN (quiet)
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00);  // rounds to infinity
  const uint32_t e = a >> 23;
  if (e < 113) {
    // Result is subnormal (or zero): units of 2^-24.
    if (e < 102) return sign;
    const uint32_t m = (a & 0x7FFFFF) | 0x800000;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t h = ((e - 112) << 10) | ((a >> 13) & 0x3FF);
  const uint32_t rem = a & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_fp32(uint16_t h) {
  const uint32_t x = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t fp32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
}

}  // namespace tappa::quant
