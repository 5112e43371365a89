// Activation quantization for the integer matmul kernels (private to backend/cpu).
//
// Each token's activation row x[0..cols) is quantized to int8 once per matmul call, in one of two
// ways that are bit-identical to quant::quantize_row:
//   B32:  like Q8_0/Q8_1 - one scale per 32 elements, d = fp16(amax / 127), q = round(x * (127 / amax))
//         (ties to even), exactly as ggml's x86 quantize_row_q8_0/q8_1 compute it.
//   K256: like Q8_K - one scale per 256 elements, the value of largest magnitude maps to -127.
// The result is stored in a kernel-friendly layout (not a GGUF block layout), one record per token:
//   int8  q[cols]        the codes, contiguous
//   float d[cols/32]     scale of each 32-element block (K256: the super-block scale, repeated)
//   float s[cols/32]     d * (sum of the block's codes): the min/offset terms of Q4_1, Q4_K, Q5_K
//   int32 isum[cols/32]  sum of the block's codes
//   int16 bsum[cols/16]  sum of each 16-element group's codes (Q6_K)
//   float s1[cols/32]    fp16(d_f32 * isum) with the unrounded scale: ggml's Q8_1 "s", which its
//                        Q4_1 dot product uses for the min term (B32 only; matching it keeps
//                        tappa's Q4_1 logits on llama.cpp's to rounding level)
// Records are padded to 64 bytes.
#pragma once
#include "backend/cpu/isa.h"
#include <cstddef>
#include <cstdint>

namespace tappa::cpu::detail {

enum class ActKind { B32, K256 };

struct ActRow {
  const int8_t* q;
  const float* d;
  const float* s;
  const int32_t* isum;
  const int16_t* bsum;
  const float* s1;
};

class ActBuffer {
 public:
  ActBuffer() = default;
  ActBuffer(uint8_t* base, int64_t cols) : base_(base), cols_(cols), stride_(record_bytes(cols)) {}

  static size_t record_bytes(int64_t cols) {
    const size_t nb = static_cast<size_t>(cols / 32);
    const size_t b = static_cast<size_t>(cols) + nb * 16 + static_cast<size_t>(cols / 16) * 2;
    return (b + 63) & ~size_t{63};
  }

  ActRow row(int64_t t) const {
    const uint8_t* p = base_ + static_cast<size_t>(t) * stride_;
    const size_t nb = static_cast<size_t>(cols_ / 32);
    ActRow r;
    r.q = reinterpret_cast<const int8_t*>(p);
    r.d = reinterpret_cast<const float*>(p + cols_);
    r.s = r.d + nb;
    r.isum = reinterpret_cast<const int32_t*>(r.s + nb);
    r.bsum = reinterpret_cast<const int16_t*>(r.isum + nb);
    r.s1 = reinterpret_cast<const float*>(r.bsum + cols_ / 16);
    return r;
  }

  uint8_t* record(int64_t t) const { return base_ + static_cast<size_t>(t) * stride_; }
  int64_t cols() const { return cols_; }

 private:
  uint8_t* base_ = nullptr;
  int64_t cols_ = 0;
  size_t stride_ = 0;
};

TAPPA_ISA_BEGIN
// Quantizes one token's activations x[0..cols) into `record` (ActBuffer::record_bytes(cols) bytes).
// cols must be a multiple of 32 (B32) or 256 (K256).
void quantize_activation(ActKind kind, const float* x, int64_t cols, uint8_t* record);

// K256 as ggml's 4-row x86 quantizer (ggml_quantize_mat_q8_K_4x8, used for the tokens that its
// repacked Q4_K GEMM takes in groups of 4) computes it: identical codes and scale except when
// +amax and -amax both occur in a super-block, where the positive value decides the sign of the
// scale (the row quantizer takes whichever comes first).
void quantize_activation_k256_group(const float* x, int64_t cols, uint8_t* record);
TAPPA_ISA_END

}  // namespace tappa::cpu::detail
