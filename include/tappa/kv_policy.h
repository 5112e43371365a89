// The engine's hook for KV-cache compression. A policy sees, per layer, what a compression method
// needs (the last queries of a prefill, the current attention during decoding) and edits the
// cache in place (KvCache::keep_rows). The engine runs a multi-token eval layer by layer over all
// its tokens, so a policy that compresses layer l in on_prefill_layer bounds peak memory to the
// compressed layers plus one full layer (CAKE's "cascading" memory bound).
#pragma once
#include <cstdint>
#include <vector>

namespace tappa {

class KvCache;

struct PrefillLayerView {
  int layer = 0;
  int64_t pos0 = 0;    // position of the first token of this eval call
  int n_tokens = 0;    // tokens of this call (the prompt)
  int n_rows = 0;      // query rows below: the last n_rows tokens of the call
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  const float* q_post = nullptr;  // [n_rows][n_head*head_dim], after RoPE
  const float* q_pre = nullptr;   // same rows before RoPE (bias included)
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  // Query rows the policy needs at the end of a prefill (0: none).
  virtual int prefill_query_rows() const { return 0; }
  // Before the first layer of an eval call of ≥ 2 tokens (a prompt, or a chunk of one): n_tokens
  // tokens at positions pos0 .. pos0 + n_tokens - 1. Every on_prefill_layer of the call follows, in
  // layer order, then on_prefill_done.
  virtual void on_prefill_begin(int n_tokens, int64_t pos0) {}
  // After layer `layer` processed every token of an eval call of ≥ 2 tokens (its K/V are cached).
  virtual void on_prefill_layer(const PrefillLayerView& view, KvCache& cache) {}
  // After the last layer of such a call.
  virtual void on_prefill_done(KvCache& cache) {}
  // Decoding (1-token calls): whether to receive the step's attention, and the hook itself, called
  // after the layer's attention was computed on the cache as it was (new token included).
  // probs[h] holds query head h's attention over its KV head's cache rows, in cache order.
  virtual bool wants_decode_attention() const { return false; }
  virtual void on_decode_layer(int layer, const std::vector<const float*>& probs, KvCache& cache) {}
};

}  // namespace tappa
