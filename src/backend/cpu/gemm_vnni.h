// Prompt-processing GEMM for quantized weights on AVX-512 VNNI (private to backend/cpu).
//
// Weights are repacked, 16 rows at a time, into a "panel": for each 32-element block, the per-row
// float scales followed by the 16 rows' codes as unsigned bytes, interleaved in groups of 4 elements
// (q[k][row][4], k = 0..7), so one vpdpbusd multiplies 4 elements of 16 rows by the same 4 activation
// bytes and leaves one 32-bit sum per row in each lane. Activations are quantized once per call and
// stored in groups of G tokens, interleaved the same way, so each activation dword is broadcast and
// reused across the 16 rows, and each weight vector is reused across the G tokens of a group.
//
// Per block, per row r and token t (exact integer arithmetic inside the block):
//   y += dA[r] * da[t] * (sum q*a + c0[t])             (c0 = -offset * sum a: Q4_0 8, Q8_0 128)
//   y += mn[r] * s[t]                                   (Q4_1, Q5_K: s = da * sum a)
// Q4_K and Q6_K do not come here: gemm_kquant.cpp computes them in llama.cpp's order.
#pragma once
#include "backend/cpu/isa.h"
#include <cstddef>
#include <cstdint>

#include "backend/cpu/quantize_act.h"
#include "tappa/tensor_type.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

constexpr int kPanelRows = 16;

// True when this build has the GEMM kernel and it handles type t.
bool gemm_supported(TensorType t);

// True when the GEMM computes type t in the one-token order (kernel_lanes: Q4_1, Q8_0), so each
// token's outputs are the bits a one-token call gives and it may serve MatmulOrder::PerToken
// (batched decoding). Whether it is the faster kernel there depends on the repack (matmul.cpp).
bool gemm_in_token_order(TensorType t);

// Bytes of one repacked 16-row panel of `cols` columns.
size_t gemm_panel_bytes(TensorType t, int64_t cols);

// Repacks rows [0, nrows) (nrows <= 16; missing rows become zeros) starting at w into `panel`.
void gemm_repack_panel(TensorType t, const uint8_t* w, size_t row_stride, int nrows, int64_t cols, uint8_t* panel);

// Bytes of the grouped activation buffer for m tokens, and the group size used.
int gemm_group_size(int64_t m);
size_t gemm_act_bytes(int64_t m, int64_t cols, int group);

// Quantizes token t of x (row x_t, fp32) into the grouped buffer. `record` is temporary space of
// ActBuffer::record_bytes(cols) bytes.
void gemm_quantize_token(TensorType t, const float* x_t, int64_t cols, int64_t token, int group, uint8_t* act,
                         uint8_t* record);

// y[t * ldy + r] for tokens [0, m) and the panel's rows [0, nrows).
void gemm_run_panel(TensorType t, const uint8_t* panel, int nrows, int64_t cols, const uint8_t* act, int64_t m,
                    int group, float* y, int64_t ldy);

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
