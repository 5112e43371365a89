// The KV cache of the CPU and reference backends: host memory, fp32, one growable pair of arrays per
// (layer, KV head). See include/tappa/kv_cache.h for the contract.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tappa/kv_cache.h"

namespace tappa {

class HostKvCache final : public KvCache {
 public:
  HostKvCache(int n_layer, int n_head_kv, int head_dim);

  int length(int layer, int head) const override { return slot(layer, head).length; }
  const float* keys(int layer, int head) const override { return slot(layer, head).k.data(); }
  const float* values(int layer, int head) const override { return slot(layer, head).v.data(); }
  float* mutable_keys(int layer, int head) { return slot(layer, head).k.data(); }
  float* mutable_values(int layer, int head) { return slot(layer, head).v.data(); }
  void read(int layer, int head, int first, int n, float* k, float* v) const override;

  using KvCache::reserve_extra;
  void reserve_extra(int layer, int extra) override;
  void append(int layer, int head, const float* k_src, const float* v_src, int n, int64_t stride) override;
  void append_from(int layer, int head, const KvCache& src, int src_layer, int src_head, int first, int n) override;
  void keep_rows(int layer, int head, std::span<const int> rows) override;
  void keep_first(int layer, int head, int n) override;
  void keep_last(int layer, int head, int n) override;
  void shrink_to_fit(int layer, int head) override;
  void shrink_to_fit() override;
  void clear() override;
  std::unique_ptr<KvCache> clone() const override;

  size_t bytes_held() const override;
  size_t bytes_used() const override;
  size_t row_bytes() const override { return static_cast<size_t>(head_dim_) * 2 * sizeof(float); }

 private:
  struct Slot {
    std::vector<float> k, v;  // capacity rows * head_dim; first `length` rows valid
    int length = 0;
    int capacity = 0;
  };
  Slot& slot(int l, int h) { return slots_[static_cast<size_t>(l) * n_head_kv_ + h]; }
  const Slot& slot(int l, int h) const { return slots_[static_cast<size_t>(l) * n_head_kv_ + h]; }

  std::vector<Slot> slots_;
  // keep_rows with rows out of ascending order gathers through this (grown once, then reused).
  std::vector<float> gather_;
};

}  // namespace tappa
