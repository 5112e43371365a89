// Prompt-processing GEMM for float weights (F32, F16, BF16) on AVX-512 (private to backend/cpu).
//
// 48 weight rows are converted once to fp32 and stored k-major ("panel": panel[k * 48 + r]), so one
// k step of the kernel is three aligned vector loads of 48 rows; each token's activation x[t][k] is
// broadcast and multiplied into 48 row sums. A 48-row x 8-token register tile then needs 11 loads
// per 24 FMAs, no F16 conversion in the inner loop and no horizontal reduction at the end (each
// accumulator already holds 16 finished outputs of one token). Measured in `tappa bench`, F16 model,
// pp512, 1 thread, interleaved with llama-bench on a loaded machine: 217 tok/s with the 4 x 6
// row-dot tile, 330-344 with these panels, llama.cpp 282-309 (docs/PERFORMANCE.md has the quiet
// comparison). The row-dot tile (gemm_float_tile) stays as the fallback without AVX-512.
#pragma once
#include "backend/cpu/isa.h"
#include <cstddef>
#include <cstdint>

#include "tappa/tensor_type.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

constexpr int kFloatPanelRows = 48;

// True when this build has the panel kernel.
bool gemm_float_panel_supported();

// Bytes of one panel of `cols` columns (64-byte aligned storage expected).
size_t gemm_float_panel_bytes(int64_t cols);

// Converts rows [0, nrows) (nrows <= kFloatPanelRows, `row_stride` bytes apart) of a float weight matrix into the
// panel; rows nrows..31 are zero.
void gemm_float_repack(TensorType type, const uint8_t* w, size_t row_stride, int nrows, int64_t cols, float* panel);

// y[t * ldy + r] = sum_k panel[k][r] * x[t * ldx + k] for t in [0, m), r in [0, nrows).
void gemm_float_run(const float* panel, int nrows, int64_t cols, const float* x, int64_t ldx, int64_t m, float* y,
                    int64_t ldy);

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
