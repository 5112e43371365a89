// Row codecs of the KV-cache storage formats (tappa/kv_cache.h: KvType, KvCacheFormat): one row of
// head_dim values to and from its stored bytes, with the optional Walsh-Hadamard rotation. The
// block layouts are ggml's (quant/blocks.h: BlockQ8_0, BlockQ4_0), so a q8_0 row is the bytes
// llama.cpp's q8_0 cache holds for it. The rounding is quant::quantize_row's (round to nearest).
// The attention kernels (backend/cpu/attention_kv_quant.cpp) read these layouts directly.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tappa/kv_cache.h"
#include "tappa/tensor_type.h"

namespace tappa::kv {

TensorType kv_tensor_type(KvType t);

// Rotation blocks: K one block of the largest power of two dividing head_dim (head_dim itself for
// 64 / 128 / 256), V blocks of 64 — the sizes llama.cpp uses (llama-kv-cache.cpp, build_input_k_rot /
// build_input_v_rot; a smaller V block "seems beneficial" there).
int kv_rot_block_k(int head_dim);
constexpr int kKvRotBlockV = 64;

// x[0..n) <- H_b x for every block of b (a power of two) consecutive values, H_b the orthonormal
// Sylvester-Hadamard matrix (entries ±1/sqrt(b)). H_b is symmetric and its own inverse, so the same
// call undoes it. In place; fast transform (b log b additions), then one scaling.
void hadamard_blocks(float* x, int n, int b);

// Stores src[0..head_dim) as type t (rotated first when rot_block > 0; tmp: head_dim floats of
// scratch, used only then) into dst (kv_row_bytes(t, head_dim) bytes).
void encode_row(KvType t, int rot_block, const float* src, uint8_t* dst, int head_dim, float* tmp);
// The inverse: dst[0..head_dim) = the stored values, rotation undone.
void decode_row(KvType t, int rot_block, const uint8_t* src, float* dst, int head_dim);

}  // namespace tappa::kv
