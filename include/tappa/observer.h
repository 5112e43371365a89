// Observers watch the forward pass: the only way analysis (q-similarity, patterns, block influence)
// sees queries, keys, attention and hidden states. The engine checks for an attached observer once
// per layer and otherwise pays nothing. Everything handed over is a view valid during the call only.
#pragma once
#include <cstdint>

namespace tappa {

// Queries and keys of one layer for a batch of consecutive positions, row-major
// [n_tokens][n_heads * head_dim] (heads contiguous within a row).
struct LayerQk {
  int layer = 0;
  int64_t pos0 = 0;  // position of the first token of the batch
  int n_tokens = 0;
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  const float* q_pre = nullptr;   // after projection (+ bias), before RoPE
  const float* k_pre = nullptr;
  const float* q_post = nullptr;  // after RoPE
  const float* k_post = nullptr;
};

class Observer {
 public:
  virtual ~Observer() = default;
  // Called once per layer per batch; return false to skip that layer's callbacks.
  virtual bool wants_layer(int layer) { return true; }
  virtual void on_qk(const LayerQk& qk) {}
  // Whether the attention row of (layer, head, query position) should be delivered.
  virtual bool wants_attention_row(int layer, int head, int64_t pos) { return false; }
  // probs[0..n): softmax attention of that query over the cached keys of its KV head, in cache order
  // (for an uncompressed cache, cache index == key position). May be called from several threads at
  // once, for different (head, pos).
  virtual void on_attention_row(int layer, int head, int64_t pos, const float* probs, int n) {}
  // Residual stream entering and leaving a block, [n_tokens][n_embd]; layer == n_layer gives the
  // final-norm output as `out` (with in = the last block's output), as Hugging Face reports it.
  virtual void on_block(int layer, const float* in, const float* out, int n_tokens, int n_embd) {}
};

}  // namespace tappa
