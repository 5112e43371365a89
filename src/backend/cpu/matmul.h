// Matrix products with weights kept in their stored (usually quantized) format.
//
//   y[i, r] = sum_c W[r, c] * x[i, c]      for i < m (tokens), r < rows (outputs), c < cols
//
// W is a GGUF weight tensor: `rows` rows of `cols` elements each, row-major, in `type`. Activations
// x and outputs y are fp32 with leading dimensions ldx/ldy. For quantized weights the activations
// are first quantized to the matching 8-bit format (Q8_0 for Q4_0/Q4_1/Q8_0, Q8_K for K-quants),
// as llama.cpp does, and the dot products run on integers. The work is split over the pool's
// threads by output rows; nothing is allocated when scratch is already large enough.
#pragma once
#include "backend/cpu/isa.h"
#include <cstdint>
#include <vector>

#include "backend/cpu/thread_pool.h"
#include "quant/weight_view.h"
#include "tappa/tensor_type.h"

namespace tappa::cpu {

using WeightView = ::tappa::WeightView;

// Reusable, 64-byte-aligned scratch memory (quantized activations). Grows, never shrinks.
class Scratch {
 public:
  uint8_t* get(size_t bytes);

 private:
  std::vector<uint8_t> buf_;
};

// Summation order of a multi-token call. Batch: the fastest kernel for m tokens (GEMM order for
// prompts, as llama.cpp's prompt processing). PerToken: every token row computed exactly as a
// one-token call computes it (bit for bit), the weights still read once for all m tokens — batched
// decoding of several sequences, whose results must not depend on what else is in the batch.
enum class MatmulOrder { Batch, PerToken };

TAPPA_ISA_BEGIN
void matmul(const WeightView& w, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
            ThreadPool& pool, Scratch& scratch, MatmulOrder order = MatmulOrder::Batch);
TAPPA_ISA_END

// True if matmul can handle this weight type (the same for every variant).
bool matmul_supports(TensorType t);

}  // namespace tappa::cpu
