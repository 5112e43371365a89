// Elementwise ops that only Gemma-style models need: GeLU-tanh gating, scaling, logit soft-capping.
// Plain fp32 rows, no allocation; callers split ranges over threads.
#pragma once
#include "backend/cpu/isa.h"
#include <cstdint>

namespace tappa::cpu {

TAPPA_ISA_BEGIN
// out[i] = gelu_tanh(gate[i]) * up[i], with gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Evaluated as ggml's CPU backend does (llama.cpp's oracle): x is rounded to fp16 and looked up in a
// table of fp16 GeLU values, except x <= -10 (0) and x >= 10 (x). The fp16 rounding changes the result
// by up to ~1e-3 relative; following it keeps tappa's activations on the oracle's.
void geglu_tanh(const float* gate, const float* up, float* out, int64_t n);

// The exact fp32 GeLU-tanh, without the table (reference for tests).
float gelu_tanh_exact(float x);

// x[i] *= s
void scale_inplace(float* x, int64_t n, float s);

// x[i] = cap * tanh(x[i] / cap)   (final-logit soft-capping of Gemma 2 style models)
void softcap_inplace(float* x, int64_t n, float cap);
TAPPA_ISA_END

}  // namespace tappa::cpu
