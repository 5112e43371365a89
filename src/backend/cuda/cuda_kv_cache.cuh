// The CUDA backend's KV cache: per (layer, KV head) one list of fp16 keys and values in device
// memory ([capacity][head_dim] keys, then as many values, in one stream-ordered allocation), with the
// lengths and capacities on the host. Growth, compaction and shrinking allocate a new block and copy
// on the device (no host round trip, no wait); keys() / values() are nullptr (not host memory) and
// read() copies rows out as fp32. bytes_held() counts the capacities: the memory really held.
#pragma once
#include <memory>
#include <vector>

#include "backend/cuda/common.cuh"
#include "tappa/kv_cache.h"

namespace tappa::cuda {

class CudaKvCache final : public KvCache {
 public:
  CudaKvCache(std::shared_ptr<Context> ctx, int n_layer, int n_head_kv, int head_dim);
  ~CudaKvCache() override;

  struct List {
    kv_t* k = nullptr;  // block start: keys; values at k + capacity * head_dim
    int length = 0;
    int capacity = 0;
    kv_t* v(int head_dim) const { return k + static_cast<int64_t>(capacity) * head_dim; }
  };
  const List& list(int layer, int head) const { return lists_[static_cast<size_t>(layer) * n_head_kv_ + head]; }
  // The device appended n rows at the end of the list (kv_append's kernel wrote them).
  void advance(int layer, int head, int n) { at(layer, head).length += n; }
  // Ensures room for `extra` more rows in one list: a single row (decoding) grows the list by an
  // eighth (at least 256 rows) so that growth is rare; more rows (a prompt chunk, a caller's
  // reservation) exactly.
  void reserve_list(int layer, int head, int extra);

  int length(int layer, int head) const override { return list(layer, head).length; }
  const float* keys(int, int) const override { return nullptr; }
  const float* values(int, int) const override { return nullptr; }
  void read(int layer, int head, int first, int n, float* k, float* v) const override;
  using KvCache::reserve_extra;
  void reserve_extra(int layer, int extra) override;
  void append(int layer, int head, const float* k, const float* v, int n, int64_t stride) override;
  void append_from(int layer, int head, const KvCache& src, int src_layer, int src_head, int first, int n) override;
  void keep_rows(int layer, int head, std::span<const int> rows) override;
  void keep_first(int layer, int head, int n) override;
  void keep_last(int layer, int head, int n) override;
  using KvCache::shrink_to_fit;
  void shrink_to_fit(int layer, int head) override;
  void clear() override;
  std::unique_ptr<KvCache> clone() const override;
  size_t bytes_held() const override;
  size_t bytes_used() const override;
  size_t row_bytes() const override { return static_cast<size_t>(head_dim_) * 2 * sizeof(kv_t); }
  bool attention_rows(int layer, int head, const float* q, int n_group, int n_rows, float scale,
                      float* probs) const override;

 private:
  List& at(int layer, int head) { return lists_[static_cast<size_t>(layer) * n_head_kv_ + head]; }
  // Moves the list to a new block of `capacity` rows, keeping rows [first, first + n) at the front.
  void reallocate(List& l, int capacity, int first, int n);

  std::shared_ptr<Context> ctx_;
  std::vector<List> lists_;
  mutable std::vector<uint16_t> staging_;
  Scratch index_;  // keep_rows' row list on the device
  mutable Scratch q_, probs_, tables_;  // attention_rows
  mutable std::vector<float> host_q_;
};

}  // namespace tappa::cuda
