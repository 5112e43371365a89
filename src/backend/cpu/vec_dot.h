// Row dot products (private to backend/cpu): one weight row in its GGUF block layout against one
// activation row. Quantized weights take the activation quantized by quantize_act (B32 for Q4_0,
// Q4_1, Q8_0; K256 for the K-quants); float weights take fp32 activations.
#pragma once
#include "backend/cpu/isa.h"
#include <cstdint>

#include "backend/cpu/quantize_act.h"
#include "tappa/tensor_type.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

float vec_dot_q4_0(const uint8_t* w, const ActRow& a, int64_t cols);
float vec_dot_q4_1(const uint8_t* w, const ActRow& a, int64_t cols);
float vec_dot_q8_0(const uint8_t* w, const ActRow& a, int64_t cols);
float vec_dot_q4_k(const uint8_t* w, const ActRow& a, int64_t cols);
float vec_dot_q5_k(const uint8_t* w, const ActRow& a, int64_t cols);
float vec_dot_q6_k(const uint8_t* w, const ActRow& a, int64_t cols);

// Four consecutive weight rows (stride `row_stride` bytes) against one activation row: out[0..4).
// Shares the activation loads between the rows; used by the decode (m == 1) path.
void vec_dot4_q4_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out);
void vec_dot4_q4_1(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out);
void vec_dot4_q8_0(const uint8_t* w, size_t row_stride, const ActRow& a, int64_t cols, float* out);

// The same four rows against nt tokens a[0..nt): out[t * ldo + r], each token's four results exactly
// what vec_dot4_* gives for it alone (vec_dot_tokens.cpp; MatmulOrder::PerToken).
void vec_dot4_tokens_q4_1(const uint8_t* w, size_t row_stride, const ActRow* a, int nt, int64_t cols, float* out,
                          int64_t ldo);
void vec_dot4_tokens_q8_0(const uint8_t* w, size_t row_stride, const ActRow* a, int nt, int64_t cols, float* out,
                          int64_t ldo);

float vec_dot_f32(const uint8_t* w, const float* x, int64_t cols);
float vec_dot_f16(const uint8_t* w, const float* x, int64_t cols);
float vec_dot_bf16(const uint8_t* w, const float* x, int64_t cols);

// Float weights: rows [0, nr) x tokens [0, nt) with nr <= 4 and nt <= 6, y[t * ldy + r].
void gemm_float_tile(TensorType type, const uint8_t* w, size_t row_stride, int nr, const float* x, int64_t ldx,
                     int nt, int64_t cols, float* y, int64_t ldy);

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
