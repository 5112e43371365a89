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
// prepacked: the matrix's GEMM panels made by prepack() (or nullptr). Used only where matmul would
// otherwise repack them itself (PerToken calls of prepack_min_tokens() tokens or more, prepack_bytes
// > 0); the same bytes as the repack writes, so the results are identical with or without.
void matmul(const WeightView& w, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
            ThreadPool& pool, Scratch& scratch, MatmulOrder order = MatmulOrder::Batch,
            const uint8_t* prepacked = nullptr);

// Batched decoding (PerToken, >= prepack_min_tokens() sequences) runs Q4_1 matrices through the
// GEMM, which repacks each 16-row panel on every call: ~16 % of a 16-sequence step on the default
// model. A caller that decodes in batches can keep the panels instead: prepack_bytes(w) bytes
// (64-byte aligned; 0 where no panel would be made: types other than Q4_1 and Q8_0, or no GEMM in
// this ISA variant), filled once by prepack(). With kept panels Q8_0 takes the GEMM too (matmul.cpp).
// The panel form is twice the Q4_1 bytes (codes unpacked to bytes, f32 scales) and 1.06 times the
// Q8_0 bytes, so callers make it only for matrices that batched decoding actually uses.
int64_t prepack_min_tokens();
size_t prepack_bytes(const WeightView& w);
void prepack(const WeightView& w, uint8_t* out, ThreadPool& pool);
TAPPA_ISA_END

// True if matmul can handle this weight type (the same for every variant).
bool matmul_supports(TensorType t);

}  // namespace tappa::cpu
