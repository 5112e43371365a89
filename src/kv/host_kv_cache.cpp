#include "kv/host_kv_cache.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "tappa/error.h"

namespace tappa {

HostKvCache::HostKvCache(int n_layer, int n_head_kv, int head_dim)
    : KvCache(n_layer, n_head_kv, head_dim), slots_(static_cast<size_t>(n_layer) * n_head_kv) {}

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

void HostKvCache::reserve_extra(int layer, int extra) {
  for (int h = 0; h < n_head_kv_; ++h) {
    Slot& s = slot(layer, h);
    grow(s.k, s.v, s.capacity, s.length + extra, head_dim_);
  }
}

void HostKvCache::append(int layer, int head, const float* k_src, const float* v_src, int n, int64_t stride) {
  Slot& s = slot(layer, head);
  assert(s.length + n <= s.capacity);
  const size_t row = static_cast<size_t>(head_dim_) * sizeof(float);
  for (int i = 0; i < n; ++i) {
    std::memcpy(s.k.data() + static_cast<size_t>(s.length + i) * head_dim_, k_src + i * stride, row);
    std::memcpy(s.v.data() + static_cast<size_t>(s.length + i) * head_dim_, v_src + i * stride, row);
  }
  s.length += n;
}

void HostKvCache::append_from(int layer, int head, const KvCache& src, int src_layer, int src_head, int first, int n) {
  const float* k = src.keys(src_layer, src_head);
  const float* v = src.values(src_layer, src_head);
  if (!k || !v) return KvCache::append_from(layer, head, src, src_layer, src_head, first, n);
  const size_t off = static_cast<size_t>(first) * head_dim_;
  append(layer, head, k + off, v + off, n, head_dim_);
}

void HostKvCache::keep_rows(int layer, int head, std::span<const int> rows) {
  Slot& s = slot(layer, head);
  const size_t d = static_cast<size_t>(head_dim_);
  const size_t n = rows.size();
  assert(n <= static_cast<size_t>(s.length));
  bool ascending = true;
  for (size_t i = 0; i < n; ++i) {
    assert(rows[i] >= 0 && rows[i] < s.length);
    if (i > 0 && rows[i] <= rows[i - 1]) ascending = false;
  }
  if (ascending) {
    // Strictly ascending rows satisfy rows[i] >= i, so row i's destination never lies on a source row
    // still to be read: a forward copy compacts in place. memmove because rows[i] == i is common.
    for (size_t i = 0; i < n; ++i) {
      const size_t src = static_cast<size_t>(rows[i]);
      if (src == i) continue;
      std::memmove(s.k.data() + i * d, s.k.data() + src * d, d * sizeof(float));
      std::memmove(s.v.data() + i * d, s.v.data() + src * d, d * sizeof(float));
    }
  } else {
    // Any other order: gather keys, then values, through one reused buffer.
    if (gather_.size() < n * d) gather_.resize(n * d);
    for (std::vector<float>* buf : {&s.k, &s.v}) {
      for (size_t i = 0; i < n; ++i)
        std::memcpy(gather_.data() + i * d, buf->data() + static_cast<size_t>(rows[i]) * d, d * sizeof(float));
      std::memcpy(buf->data(), gather_.data(), n * d * sizeof(float));
    }
  }
  s.length = static_cast<int>(n);
}

void HostKvCache::keep_first(int layer, int head, int n) {
  Slot& s = slot(layer, head);
  assert(n >= 0);
  if (n < s.length) s.length = n;
}

void HostKvCache::keep_last(int layer, int head, int n) {
  Slot& s = slot(layer, head);
  assert(n >= 0);
  if (n >= s.length) return;
  const size_t d = static_cast<size_t>(head_dim_), first = static_cast<size_t>(s.length - n);
  std::memmove(s.k.data(), s.k.data() + first * d, static_cast<size_t>(n) * d * sizeof(float));
  std::memmove(s.v.data(), s.v.data() + first * d, static_cast<size_t>(n) * d * sizeof(float));
  s.length = n;
}

void HostKvCache::read(int layer, int head, int first, int n, float* k, float* v) const {
  const Slot& s = slot(layer, head);
  assert(first >= 0 && n >= 0 && first + n <= s.length);
  const size_t d = static_cast<size_t>(head_dim_);
  if (k) std::memcpy(k, s.k.data() + first * d, static_cast<size_t>(n) * d * sizeof(float));
  if (v) std::memcpy(v, s.v.data() + first * d, static_cast<size_t>(n) * d * sizeof(float));
}

void HostKvCache::shrink_to_fit(int layer, int head) {
  Slot& s = slot(layer, head);
  if (s.capacity != s.length || s.k.capacity() != s.k.size()) {
    // A fresh exact-size copy: shrink_to_fit() on a vector is only a request the library may ignore.
    const ptrdiff_t n = static_cast<ptrdiff_t>(s.length) * head_dim_;
    std::vector<float> k(s.k.begin(), s.k.begin() + n);
    std::vector<float> v(s.v.begin(), s.v.begin() + n);
    s.k = std::move(k);
    s.v = std::move(v);
    s.capacity = s.length;
  }
}

void HostKvCache::shrink_to_fit() {
  KvCache::shrink_to_fit();
  gather_ = std::vector<float>();
}

void HostKvCache::clear() {
  for (Slot& s : slots_) s.length = 0;
}

void HostKvCache::repeat_lists(int factor) {
  if (factor < 1) throw Error("repeat_lists: factor must be at least 1", ErrorCode::internal);
  if (factor == 1) return;
  slots_ = repeat_slots(slots_, n_layer_, n_head_kv_, factor, static_cast<size_t>(head_dim_), static_cast<size_t>(head_dim_));
  n_head_kv_ *= factor;
}

std::unique_ptr<KvCache> HostKvCache::clone() const {
  auto c = std::make_unique<HostKvCache>(n_layer_, n_head_kv_, head_dim_);
  for (int l = 0; l < n_layer_; ++l) {
    c->reserve_extra(l, 0);
    for (int h = 0; h < n_head_kv_; ++h) {
      const Slot& s = slot(l, h);
      Slot& d = c->slot(l, h);
      d.k.assign(s.k.begin(), s.k.begin() + static_cast<ptrdiff_t>(s.length) * head_dim_);
      d.v.assign(s.v.begin(), s.v.begin() + static_cast<ptrdiff_t>(s.length) * head_dim_);
      d.length = d.capacity = s.length;
    }
  }
  return c;
}

size_t HostKvCache::bytes_held() const {
  size_t b = 0;
  for (const Slot& s : slots_) b += (s.k.capacity() + s.v.capacity()) * sizeof(float);
  return b + gather_.capacity() * sizeof(float);
}

size_t HostKvCache::bytes_used() const {
  size_t b = 0;
  for (const Slot& s : slots_) b += static_cast<size_t>(s.length) * head_dim_ * 2 * sizeof(float);
  return b;
}

}  // namespace tappa
