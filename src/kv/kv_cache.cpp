#include "kv/kv_cache.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace tappa {

KvCache::KvCache(int n_layer, int n_head_kv, int head_dim)
    : n_layer_(n_layer), n_head_kv_(n_head_kv), head_dim_(head_dim),
      slots_(static_cast<size_t>(n_layer) * n_head_kv) {}

namespace {
// Grows a list's storage to hold `need` rows: by at least 1.5x so a long generation reallocates
// O(log n) times, and with reserve() first because resize() alone may double the capacity.
void grow(std::vector<float>& k, std::vector<float>& v, int& capacity, int need, int head_dim) {
  if (need <= capacity) return;
  const int cap = std::max(need, capacity + capacity / 2);
  k.reserve(static_cast<size_t>(cap) * head_dim);
  v.reserve(static_cast<size_t>(cap) * head_dim);
  k.resize(static_cast<size_t>(cap) * head_dim);
  v.resize(static_cast<size_t>(cap) * head_dim);
  capacity = cap;
}
}  // namespace

void KvCache::reserve_extra(int extra) {
  for (Slot& s : slots_) grow(s.k, s.v, s.capacity, s.length + extra, head_dim_);
}

void KvCache::reserve_extra(int layer, int extra) {
  for (int h = 0; h < n_head_kv_; ++h) {
    Slot& s = slot(layer, h);
    grow(s.k, s.v, s.capacity, s.length + extra, head_dim_);
  }
}

void KvCache::append(int layer, int head, const float* k_src, const float* v_src, int n, int64_t stride) {
  Slot& s = slot(layer, head);
  assert(s.length + n <= s.capacity);
  const size_t row = static_cast<size_t>(head_dim_) * sizeof(float);
  for (int i = 0; i < n; ++i) {
    std::memcpy(s.k.data() + static_cast<size_t>(s.length + i) * head_dim_, k_src + i * stride, row);
    std::memcpy(s.v.data() + static_cast<size_t>(s.length + i) * head_dim_, v_src + i * stride, row);
  }
  s.length += n;
}

void KvCache::keep_rows(int layer, int head, const std::vector<int>& rows) {
  Slot& s = slot(layer, head);
  std::vector<float> k(rows.size() * head_dim_), v(rows.size() * head_dim_);
  for (size_t i = 0; i < rows.size(); ++i) {
    assert(rows[i] >= 0 && rows[i] < s.length);
    std::memcpy(&k[i * head_dim_], &s.k[static_cast<size_t>(rows[i]) * head_dim_], head_dim_ * sizeof(float));
    std::memcpy(&v[i * head_dim_], &s.v[static_cast<size_t>(rows[i]) * head_dim_], head_dim_ * sizeof(float));
  }
  s.k = std::move(k);
  s.v = std::move(v);
  s.length = s.capacity = static_cast<int>(rows.size());
}

void KvCache::shrink_to_fit() {
  for (Slot& s : slots_) {
    s.k.resize(static_cast<size_t>(s.length) * head_dim_);
    s.v.resize(static_cast<size_t>(s.length) * head_dim_);
    s.k.shrink_to_fit();
    s.v.shrink_to_fit();
    s.capacity = s.length;
  }
}

void KvCache::clear() {
  for (Slot& s : slots_) s.length = 0;
}

size_t KvCache::bytes_held() const {
  size_t b = 0;
  for (const Slot& s : slots_) b += (s.k.capacity() + s.v.capacity()) * sizeof(float);
  return b;
}

size_t KvCache::bytes_used() const {
  size_t b = 0;
  for (const Slot& s : slots_) b += static_cast<size_t>(s.length) * head_dim_ * 2 * sizeof(float);
  return b;
}

}  // namespace tappa
