#include "backend/cpu/ops.h"

#include <cmath>

#include "backend/cpu/exp_approx.h"
#include "backend/cpu/vec.h"

namespace tappa::cpu {
TAPPA_ISA_BEGIN

void rms_norm_row(const float* x, const float* w, float* out, int64_t n, float eps) {
  // As ggml_rms_norm: each square rounded to float, the sum accumulated in double.
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i] * x[i]);
  const float scale = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

void rope_angles(const RopeParams& p, int64_t pos, float* cos_sin) {
  if (p.inv_freq) {
    for (int i = 0; i < p.n_rot / 2; ++i) {
      const double t = static_cast<double>(pos) * p.inv_freq[i];
      cos_sin[2 * i] = static_cast<float>(std::cos(t));
      cos_sin[2 * i + 1] = static_cast<float>(std::sin(t));
    }
    return;
  }
  const float theta_scale = std::pow(p.base, -2.0f / static_cast<float>(p.n_rot));
  float theta = static_cast<float>(pos);
  for (int i = 0; i < p.n_rot / 2; ++i) {
    float t = theta;
    if (p.freq_factors) t /= p.freq_factors[i];
    t *= p.freq_scale;
    cos_sin[2 * i] = std::cos(t);
    cos_sin[2 * i + 1] = std::sin(t);
    theta *= theta_scale;
  }
}

void rope_apply(const RopeParams& p, const float* cos_sin, float* x, int n_heads) {
  const int half = p.n_rot / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * p.head_dim;
    for (int i = 0; i < half; ++i) {
      const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
      const int a = p.neox ? i : 2 * i;
      const int b = p.neox ? i + half : 2 * i + 1;
      const float x0 = v[a], x1 = v[b];
      // llama.cpp's build contracts x0*c - x1*s and x0*s + x1*c into one FMA each (GNU C mode,
      // -O2 and up); written out here so tappa rounds the same way at every optimisation level.
      v[a] = std::fma(x0, c, -(x1 * s));
      v[b] = std::fma(x0, s, x1 * c);
    }
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  // silu(g) = g / (1 + exp(-g)) with ggml's exp (exp_approx.h), so the result is bit-identical to
  // llama.cpp's SwiGLU whatever the split of the range.
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 e = exp_approx16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp_approx8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
  }
#endif
  for (; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + exp_approx(0.0f - g)) * up[i];
  }
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

TAPPA_ISA_END
}  // namespace tappa::cpu
