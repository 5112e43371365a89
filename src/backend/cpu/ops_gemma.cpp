#include "backend/cpu/ops_gemma.h"

#include <array>
#include <cmath>
#include <cstring>

#include "quant/quant.h"

namespace tappa::cpu {
TAPPA_ISA_BEGIN

namespace {

constexpr float kGeluCoefA = 0.044715f;
constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;

// GeLU of every fp16 value, stored as fp16 (what ggml's table holds), widened once to fp32 here so
// the hot loop is a lookup. Built on first use; static-local initialisation is thread-safe.
const std::array<float, 1 << 16>& gelu_table() {
  static const auto table = [] {
    std::array<float, 1 << 16> t{};
    for (uint32_t i = 0; i < (1u << 16); ++i) {
      const float x = quant::fp16_to_fp32(static_cast<uint16_t>(i));
      t[i] = quant::fp16_to_fp32(quant::fp32_to_fp16(gelu_tanh_exact(x)));
    }
    return t;
  }();
  return table;
}

}  // namespace

float gelu_tanh_exact(float x) { return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kGeluCoefA * x * x))); }

void geglu_tanh(const float* gate, const float* up, float* out, int64_t n) {
  const auto& table = gelu_table();
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    if (x <= -10.0f) {
      out[i] = 0.0f;
    } else if (x >= 10.0f) {
      out[i] = x * up[i];
    } else {
      out[i] = table[quant::fp32_to_fp16(x)] * up[i];
    }
  }
}

void scale_inplace(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void softcap_inplace(float* x, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i] * inv) * cap;
}

TAPPA_ISA_END
}  // namespace tappa::cpu
