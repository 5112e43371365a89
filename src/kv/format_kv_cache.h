// A host KV cache in any storage format (tappa/kv_cache.h: KvCacheFormat): f16 / bf16 / q8_0 / q4_0
// rows (K and V each their own type), optionally Hadamard-rotated. The CPU and reference backends
// make it for every format but plain fp32 (which stays HostKvCache, the path bit-identical to
// llama.cpp's f32 cache).
//
// Layout: per (layer, KV head) two byte arrays, row-major, kv_row_bytes(type, head_dim) bytes per row;
// a q8_0 / q4_0 row is head_dim / 32 ggml blocks, so every row is self-contained and compaction
// (keep_rows, keep_last) moves whole rows, exactly as for fp32: evicting a token never touches the
// bytes of another. bytes_used() is therefore rows × (K row bytes + V row bytes), and after
// shrink_to_fit bytes_held() equals it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tappa/kv_cache.h"

namespace tappa {

class FormatKvCache final : public KvCache {
 public:
  FormatKvCache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format);

  int length(int layer, int head) const override { return slot(layer, head).length; }
  // Host fp32 rows only where that is what is stored (f32, not rotated); otherwise nullptr.
  const float* keys(int layer, int head) const override;
  const float* values(int layer, int head) const override;
  void read(int layer, int head, int first, int n, float* k, float* v) const override;

  using KvCache::reserve_extra;
  void reserve_extra(int layer, int extra) override;
  void append(int layer, int head, const float* k, const float* v, int n, int64_t stride) override;
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
  size_t row_bytes() const override { return k_row_ + v_row_; }

  KvCacheFormat format() const override { return format_; }
  void read_stored(int layer, int head, int first, int n, void* k, void* v) const override;
  void append_stored(int layer, int head, const void* k, const void* v, int n) override;

  // The attention kernels' view: row j of K at k_data(l, h) + j * k_row_bytes().
  const uint8_t* k_data(int layer, int head) const { return slot(layer, head).k.data(); }
  const uint8_t* v_data(int layer, int head) const { return slot(layer, head).v.data(); }
  size_t k_row_bytes() const { return k_row_; }
  size_t v_row_bytes() const { return v_row_; }
  int k_rot_block() const { return k_rot_; }  // 0: not rotated
  int v_rot_block() const { return v_rot_; }

 private:
  struct Slot {
    std::vector<uint8_t> k, v;  // capacity rows; the first `length` valid
    int length = 0;
    int capacity = 0;
  };
  Slot& slot(int l, int h) { return slots_[static_cast<size_t>(l) * n_head_kv_ + h]; }
  const Slot& slot(int l, int h) const { return slots_[static_cast<size_t>(l) * n_head_kv_ + h]; }

  KvCacheFormat format_;
  size_t k_row_, v_row_;
  int k_rot_, v_rot_;
  std::vector<Slot> slots_;
  std::vector<uint8_t> gather_;  // keep_rows out of ascending order (grown once, reused)
  std::vector<float> tmp_;       // one row, for the rotation before rounding
};

// The host cache of a format: HostKvCache for plain fp32, FormatKvCache for everything else.
std::unique_ptr<KvCache> make_host_kv_cache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format);

}  // namespace tappa
