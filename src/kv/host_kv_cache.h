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
  void repeat_lists(int factor) override;
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

// KvCache::repeat_lists for a cache of per-(layer, list) slots stored layer-major: slot (l, h) becomes
// slots (l, h*factor .. h*factor + factor - 1), each an exact-size copy of its rows (k_row / v_row:
// elements per K / V row). Shared by HostKvCache and FormatKvCache, whose slots differ only in their
// element type.
template <class Slot>
std::vector<Slot> repeat_slots(const std::vector<Slot>& slots, int n_layer, int n_lists, int factor, size_t k_row,
                               size_t v_row) {
  std::vector<Slot> out(slots.size() * static_cast<size_t>(factor));
  for (size_t i = 0; i < static_cast<size_t>(n_layer) * n_lists; ++i) {
    const Slot& s = slots[i];
    for (int g = 0; g < factor; ++g) {
      Slot& d = out[i * factor + g];
      d.k.assign(s.k.begin(), s.k.begin() + static_cast<std::ptrdiff_t>(s.length * k_row));
      d.v.assign(s.v.begin(), s.v.begin() + static_cast<std::ptrdiff_t>(s.length * v_row));
      d.length = d.capacity = s.length;
    }
  }
  return out;
}

}  // namespace tappa
