// Block formats of quantized tensors: reference dequantization and quantization, one row at a time.
// These are the ground truth the fast kernels in backend/cpu are tested against; they favour clarity
// over speed. A "row" is n consecutive elements; n must be a multiple of the type's block size.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tappa/tensor_type.h"

namespace tappa::quant {

// Bytes taken by n elements of type t. Throws tappa::Error if t is unsupported or n is not a multiple
// of the block size.
size_t row_bytes(TensorType t, int64_t n);

// dst[0..n) = the values stored in src. Supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q4_K Q5_K Q6_K Q8_K.
void dequantize_row(TensorType t, const void* src, float* dst, int64_t n);

// Round-to-nearest quantization of src[0..n) into dst (row_bytes(t, n) bytes), for the same types.
// Used for activations (Q8_0, Q8_K), for writing test models and for kernel tests.
void quantize_row(TensorType t, const float* src, void* dst, int64_t n);

// Rewrites n elements of Q5_0 as Q8_0 (dst: row_bytes(Q8_0, n) bytes). Exact: each block keeps its
// scale d and its integers q - 16 (in [-16, 15]) fit int8, so every value and every integer dot product
// with 8-bit activations is unchanged. ggml's Q5_0 x Q8_0 dot product is, like its Q8_0 x Q8_0 one,
// sum over blocks of d_w * d_a * (integer sum), so the repacked row computes the same numbers.
void repack_q5_0_as_q8_0(const void* src, void* dst, int64_t n);

// Scalar half/bfloat conversions (IEEE binary16 with subnormals, bfloat16 round-to-nearest-even).
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

}  // namespace tappa::quant
