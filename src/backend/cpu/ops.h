// Elementwise and row-wise ops of the forward pass, on fp32 rows. Each works on a range of rows so
// the caller can split it over threads; none allocates.
#pragma once
#include "backend/cpu/isa.h"
#include <cstdint>

namespace tappa::cpu {

TAPPA_ISA_BEGIN
// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]
void rms_norm_row(const float* x, const float* w, float* out, int64_t n, float eps);

TAPPA_ISA_END

// Rotates the first n_rot dims of each of n_heads heads (head_dim apart) at position `pos`.
// neox: pairs (i, i + n_rot/2); otherwise adjacent pairs (2i, 2i+1). Angles follow llama.cpp's
// arithmetic (theta_i = pos * base^(-2i/n_rot) by repeated fp32 multiplication, divided by the
// optional frequency factor, times freq_scale) so logits agree with it closely at long positions.
struct RopeParams {
  int n_rot = 0;
  int head_dim = 0;
  float base = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;  // [n_rot/2] or nullptr
  bool neox = false;
  // Explicit angular frequency per channel ([n_rot/2]); when set it replaces base/factors/scale.
  // Used by the analysis interventions (another RoPE base, a channel moved to another frequency).
  const float* inv_freq = nullptr;
};
TAPPA_ISA_BEGIN
// cos_sin must hold n_rot floats: filled as (cos, sin) pairs for the position.
void rope_angles(const RopeParams& p, int64_t pos, float* cos_sin);
void rope_apply(const RopeParams& p, const float* cos_sin, float* x, int n_heads);

// out[i] = silu(gate[i]) * up[i]
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// In-place softmax over x[0..n); returns nothing. Uses the max for stability.
void softmax(float* x, int64_t n);
TAPPA_ISA_END

}  // namespace tappa::cpu
