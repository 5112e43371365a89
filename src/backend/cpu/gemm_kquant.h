// Q4_K / Q6_K matrix products in llama.cpp's CPU order (private to backend/cpu).
//
// On x86 with AVX2, llama.cpp's CPU backend computes these two weight types as follows (facts read
// from ggml's source at the pinned version, see docs/ORACLE.md "Gemma 3 270M"; no code taken):
//
// Q4_K (weights with a row count divisible by 8 are repacked; Gemma's all are). Each output
// y[t][r] is a float accumulation over the 256-element super-blocks b of row r, with d = fp16 scale,
// dmin = fp16 min scale of the block, da = token t's Q8_K scale, sc_j / m_j the 6-bit scale / min
// of sub-block j (32 elements), dot_j the integer dot product of sub-block j and bs_j the sum of
// the token's codes in sub-block j:
//   tokens in whole groups of 4 (the first m - m % 4 tokens of a call; "gemm order"):
//     for each pair p = 0..3 of sub-blocks (2p, 2p+1):
//       acc  = fma(float(sc_2p dot_2p + sc_2p+1 dot_2p+1), d*da,    acc)
//       accm = fma(float(m_2p bs_2p + m_2p+1 bs_2p+1),     dmin*da, accm)
//   the remaining m % 4 tokens ("gemv order"): one fma per super-block with the integer sums over
//   all eight sub-blocks;
//   y = acc - accm.
//   The 4-token groups quantize their activations with ggml's 4-row quantizer, whose only
//   difference from the row quantizer is the sign rule when +amax and -amax both occur
//   (quantize_activation_k256_group).
//
// Q6_K (not repacked on x86; every token goes through the AVX2 row dot product): eight int32
// lanes per output, lane l holding, for every 32-element chunk c of a super-block, the products of
// elements 4l..4l+3 of the chunk times the chunk's scale for that half (sc_2c for l < 4,
// sc_2c+1 otherwise), minus 32 (bsum_2l sc_2l + bsum_2l+1 sc_2l+1) (the 16-element code sums);
// per super-block lane_acc = fma(da*d, float(lane), lane_acc); y = ggml's 8-lane horizontal sum
// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
//
// With 8 or more tokens in the call, llama.cpp's "tiled" K-quant matmul takes Q6_K instead (Q4_K
// stays with the repacked kernels): per super-block the integer
//   s = sum over the 16 sub-blocks j of sc_j * (dot_j - 32 bsum_j)
// is turned into r = float(s) * d and accumulated as y = fma(r, da, y) (the product r*da and the
// add are contracted into one fma by ggml's build), starting from 0.
//
// All integer parts are exact, so only the float steps above have to be reproduced.
#pragma once
#include "backend/cpu/isa.h"
#include <cstddef>
#include <cstdint>

#include "backend/cpu/quantize_act.h"

namespace tappa::cpu::detail {
TAPPA_ISA_BEGIN

constexpr int kKqPanelRows = 16;

// Bytes of one repacked 16-row Q4_K panel of `cols` columns.
size_t q4k_panel_bytes(int64_t cols);

// Repacks Q4_K rows [0, nrows) (nrows <= 16; missing rows become zeros) starting at w into `panel`.
void q4k_repack_panel(const uint8_t* w, size_t row_stride, int nrows, int64_t cols, uint8_t* panel);

// Gemm order: y[t * ldy + r] for the 4 tokens a[0..4) and the panel's rows [0, nrows).
void q4k_panel_group4(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, float* y, int64_t ldy);

// Q6_K tiled order (8 or more tokens): 16-row panels as for Q4_K.
constexpr int64_t kQ6TiledMinTokens = 8;
size_t q6k_panel_bytes(int64_t cols);
void q6k_repack_panel(const uint8_t* w, size_t row_stride, int nrows, int64_t cols, uint8_t* panel);
// y[t * ldy + r] for the nt <= 4 tokens a[0..nt) and the panel's rows [0, nrows).
void q6k_panel_tokens(const uint8_t* panel, int nrows, int64_t cols, const ActRow* a, int nt, float* y, int64_t ldy);

// Gemv order, one row against one token (also the decode path): see vec_dot_q4_k.
// Q6_K, one row against nt <= 4 tokens: out[t] for a[t].
void q6k_row_tokens(const uint8_t* w, const ActRow* a, int nt, int64_t cols, float* out);

TAPPA_ISA_END
}  // namespace tappa::cpu::detail
