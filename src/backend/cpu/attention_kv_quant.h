// Attention over a KV cache stored in another format than fp32 (f16, bf16, q8_0, q4_0 rows, K and V
// each its own type, optionally Hadamard-rotated; kv/format_kv_cache.h), reading the stored rows
// directly: no dequantized copy of the cache is ever made. Rows are expanded 16 at a time into a
// per-thread tile in L1 (16 × head_dim floats) and used there by every query head of the GQA group,
// so each stored byte is read from memory once per group and decoded once.
//
// Arithmetic (the parity test's bounds rest on it, tests/backend_parity_test.cpp): the query stays
// fp32 (it is not rounded to the cache's type, unlike llama.cpp's flash-attention path, which rounds
// it to f16 or q8_0); each element is decoded exactly (x = d·q for q8_0 is one fp32 product of an
// fp16 scale and a small integer, exact); q·k is an fp32 sum of fp32 products; the softmax is ggml's
// exp with a double normaliser; p·V an fp32 sum over the keys in increasing order. A rotated K is
// scored as (H q)·(H k) = q·k, a rotated V summed as H Σ p_j (H v_j). The result of a row does not
// depend on the thread count or on the other rows of the call (batched decoding equals alone).
#pragma once
#include "backend/cpu/isa.h"
#include <cstddef>
#include <cstdint>

#include "tappa/kv_cache.h"

namespace tappa::cpu {

// One (layer, KV head) list as stored: row j of K at K + j * k_stride bytes, in k_type's layout.
struct KvList {
  const uint8_t* K = nullptr;
  const uint8_t* V = nullptr;
  size_t k_stride = 0, v_stride = 0;
  KvType k_type = KvType::f32, v_type = KvType::f32;
  int k_rot = 0, v_rot = 0;  // Hadamard block of the stored rows (0: not rotated)
};

TAPPA_ISA_BEGIN
// `count` query heads that share the list (a GQA group): q[h] (head_dim floats, RoPE applied) and
// scale[h]. Rows [first, n_vis) are visible. probs[h][0..n_vis) receives the softmax weights (0
// before first), outs[h][0..head_dim) the weighted sum of V.
void attention_rows_kv(const KvList& list, int first, int n_vis, int head_dim, const float* const* q, const float* scale,
                       int count, float* const* probs, float* const* outs);

// One chunk [j0, j1) of the keys, for splitting a long list over threads (flash-decoding): per head
// the chunk's largest score m[h], probs[h][j0..j1) = exp(s_j - m[h]) (not normalised), sum[h] = their
// sum (double) and acc[h][0..head_dim) = Σ_j exp(s_j - m[h]) · v_j (V rotation not undone).
// attention_merge_kv combines the chunks of one row. attention_rows_kv is one chunk, merged.
void attention_chunk_kv(const KvList& list, int j0, int j1, int head_dim, const float* const* q, const float* scale,
                        int count, float* const* probs, float* m, double* sum, float* const* acc);
// Chunk c of `chunks` covers keys [bounds[c], bounds[c+1]); m / sum are [chunk][count], acc[c * count
// + h] the chunk's accumulator of head h. Writes probs (normalised, 0 before bounds[0]) and outs.
void attention_merge_kv(const KvList& list, int head_dim, int count, int chunks, const int* bounds, const float* m,
                        const double* sum, float* const* acc, float* const* probs, float* const* outs);
TAPPA_ISA_END

// Keys per chunk when a single-token row is split over threads, and the visible length from which it
// is: fixed numbers, so the split — and with it every rounding — depends only on the row itself, never
// on the thread count or on the other rows of the call.
constexpr int kKvSplitChunk = 512;
constexpr int kKvSplitMin = 1024;
inline bool kv_row_splits(int n_rows, int first, int n_vis) { return n_rows == 1 && n_vis - first >= kKvSplitMin; }

}  // namespace tappa::cpu
