// The KV cache: for every (layer, KV head) its own list of cached keys and values, fp32, keys stored
// after RoPE. Each list has its own length so that compression can keep a different number of tokens
// per layer and per head; the engine's attention reads each list as it is. Memory grows on demand
// (geometrically, outside the per-token path) and can be released again (shrink), so bytes_held()
// is memory really held, not a mask over a full-size buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tappa {

class KvCache {
 public:
  KvCache(int n_layer, int n_head_kv, int head_dim);

  int n_layer() const { return n_layer_; }
  int n_head_kv() const { return n_head_kv_; }
  int head_dim() const { return head_dim_; }

  int length(int layer, int head) const { return slot(layer, head).length; }
  const float* keys(int layer, int head) const { return slot(layer, head).k.data(); }
  const float* values(int layer, int head) const { return slot(layer, head).v.data(); }
  float* keys(int layer, int head) { return slot(layer, head).k.data(); }
  float* values(int layer, int head) { return slot(layer, head).v.data(); }

  // Makes room for `extra` more tokens in every list (may allocate; call before a batch, not per token).
  void reserve_extra(int extra);
  // The same for the lists of one layer only: the engine reserves each layer just before it appends
  // to it, so a policy that compresses finished layers keeps the peak at compressed layers + one.
  void reserve_extra(int layer, int extra);
  // Appends n rows to one list; rows are head_dim floats, `stride` floats apart in src.
  void append(int layer, int head, const float* k_src, const float* v_src, int n, int64_t stride);
  // Keeps only the listed rows (ascending or not, no repeats) of one list, in the given order, compacted
  // in place: the capacity stays, so per-step decode eviction followed by the next step's reservation
  // allocates nothing. Call shrink_to_fit(layer, head) afterwards to give the freed rows back.
  void keep_rows(int layer, int head, const std::vector<int>& rows);
  // Returns unused capacity to the allocator (every list, or one).
  void shrink_to_fit();
  void shrink_to_fit(int layer, int head);
  void clear();

  size_t bytes_held() const;   // capacity actually allocated
  size_t bytes_used() const;   // length * head_dim * 2 * sizeof(float), summed

 private:
  struct Slot {
    std::vector<float> k, v;  // capacity rows * head_dim; first `length` rows valid
    int length = 0;
    int capacity = 0;
  };
  Slot& slot(int l, int h) { return slots_[static_cast<size_t>(l) * n_head_kv_ + h]; }
  const Slot& slot(int l, int h) const { return slots_[static_cast<size_t>(l) * n_head_kv_ + h]; }

  static void shrink(Slot& s, int head_dim);

  int n_layer_, n_head_kv_, head_dim_;
  std::vector<Slot> slots_;
  // keep_rows with rows out of ascending order gathers through this (grown once, then reused).
  std::vector<float> gather_;
};

}  // namespace tappa
