#include "kv/format_kv_cache.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "kv/host_kv_cache.h"
#include "kv/kv_format.h"
#include "tappa/error.h"

namespace tappa {

FormatKvCache::FormatKvCache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format)
    : KvCache(n_layer, n_head_kv, head_dim),
      format_(format),
      k_row_(kv_row_bytes(format.k, head_dim)),
      v_row_(kv_row_bytes(format.v, head_dim)),
      k_rot_(format.rotate_k ? kv::kv_rot_block_k(head_dim) : 0),
      v_rot_(format.rotate_v ? kv::kKvRotBlockV : 0),
      slots_(static_cast<size_t>(n_layer) * n_head_kv),
      tmp_(static_cast<size_t>(head_dim)) {
  if (!kv_type_fits(format.k, head_dim) || !kv_type_fits(format.v, head_dim))
    throw Error("KV cache format " + kv_format_name(format) + " does not fit head size " + std::to_string(head_dim));
  if ((format.rotate_k || format.rotate_v) && head_dim % 64 != 0)
    throw Error("KV rotation needs a head size that is a multiple of 64 (got " + std::to_string(head_dim) + ")");
}

const float* FormatKvCache::keys(int layer, int head) const {
  return format_.k == KvType::f32 && k_rot_ == 0 ? reinterpret_cast<const float*>(slot(layer, head).k.data()) : nullptr;
}

const float* FormatKvCache::values(int layer, int head) const {
  return format_.v == KvType::f32 && v_rot_ == 0 ? reinterpret_cast<const float*>(slot(layer, head).v.data()) : nullptr;
}

namespace {
// As HostKvCache's grow: by at least 1.5x, reserve() first so resize() does not double again.
void grow(std::vector<uint8_t>& k, std::vector<uint8_t>& v, int& capacity, int need, size_t k_row, size_t v_row) {
  if (need <= capacity) return;
  const int cap = std::max(need, capacity + capacity / 2);
  k.reserve(static_cast<size_t>(cap) * k_row);
  v.reserve(static_cast<size_t>(cap) * v_row);
  k.resize(static_cast<size_t>(cap) * k_row);
  v.resize(static_cast<size_t>(cap) * v_row);
  capacity = cap;
}
}  // namespace

void FormatKvCache::reserve_extra(int layer, int extra) {
  for (int h = 0; h < n_head_kv_; ++h) {
    Slot& s = slot(layer, h);
    grow(s.k, s.v, s.capacity, s.length + extra, k_row_, v_row_);
  }
}

void FormatKvCache::append(int layer, int head, const float* k_src, const float* v_src, int n, int64_t stride) {
  Slot& s = slot(layer, head);
  assert(s.length + n <= s.capacity);
  for (int i = 0; i < n; ++i) {
    const size_t r = static_cast<size_t>(s.length + i);
    kv::encode_row(format_.k, k_rot_, k_src + i * stride, s.k.data() + r * k_row_, head_dim_, tmp_.data());
    kv::encode_row(format_.v, v_rot_, v_src + i * stride, s.v.data() + r * v_row_, head_dim_, tmp_.data());
  }
  s.length += n;
}

void FormatKvCache::append_stored(int layer, int head, const void* k, const void* v, int n) {
  Slot& s = slot(layer, head);
  grow(s.k, s.v, s.capacity, s.length + n, k_row_, v_row_);
  std::memcpy(s.k.data() + static_cast<size_t>(s.length) * k_row_, k, static_cast<size_t>(n) * k_row_);
  std::memcpy(s.v.data() + static_cast<size_t>(s.length) * v_row_, v, static_cast<size_t>(n) * v_row_);
  s.length += n;
}

void FormatKvCache::read(int layer, int head, int first, int n, float* k, float* v) const {
  const Slot& s = slot(layer, head);
  assert(first >= 0 && n >= 0 && first + n <= s.length);
  const size_t d = static_cast<size_t>(head_dim_);
  for (int i = 0; i < n; ++i) {
    const size_t r = static_cast<size_t>(first + i);
    if (k) kv::decode_row(format_.k, k_rot_, s.k.data() + r * k_row_, k + i * d, head_dim_);
    if (v) kv::decode_row(format_.v, v_rot_, s.v.data() + r * v_row_, v + i * d, head_dim_);
  }
}

void FormatKvCache::read_stored(int layer, int head, int first, int n, void* k, void* v) const {
  const Slot& s = slot(layer, head);
  assert(first >= 0 && n >= 0 && first + n <= s.length);
  if (k) std::memcpy(k, s.k.data() + static_cast<size_t>(first) * k_row_, static_cast<size_t>(n) * k_row_);
  if (v) std::memcpy(v, s.v.data() + static_cast<size_t>(first) * v_row_, static_cast<size_t>(n) * v_row_);
}

// Whole rows move, whatever the format: a block never spans two rows (head_dim is a multiple of 32).
void FormatKvCache::keep_rows(int layer, int head, std::span<const int> rows) {
  Slot& s = slot(layer, head);
  const size_t n = rows.size();
  assert(n <= static_cast<size_t>(s.length));
  bool ascending = true;
  for (size_t i = 0; i < n; ++i) {
    assert(rows[i] >= 0 && rows[i] < s.length);
    if (i > 0 && rows[i] <= rows[i - 1]) ascending = false;
  }
  for (auto [buf, rb] : {std::pair{&s.k, k_row_}, std::pair{&s.v, v_row_}}) {
    uint8_t* p = buf->data();
    if (ascending) {
      // rows[i] >= i: a forward copy compacts in place (see HostKvCache::keep_rows).
      for (size_t i = 0; i < n; ++i) {
        const size_t src = static_cast<size_t>(rows[i]);
        if (src != i) std::memmove(p + i * rb, p + src * rb, rb);
      }
    } else {
      if (gather_.size() < n * rb) gather_.resize(n * rb);
      for (size_t i = 0; i < n; ++i) std::memcpy(gather_.data() + i * rb, p + static_cast<size_t>(rows[i]) * rb, rb);
      std::memcpy(p, gather_.data(), n * rb);
    }
  }
  s.length = static_cast<int>(n);
}

void FormatKvCache::keep_first(int layer, int head, int n) {
  Slot& s = slot(layer, head);
  assert(n >= 0);
  if (n < s.length) s.length = n;
}

void FormatKvCache::keep_last(int layer, int head, int n) {
  Slot& s = slot(layer, head);
  assert(n >= 0);
  if (n >= s.length) return;
  const size_t first = static_cast<size_t>(s.length - n);
  std::memmove(s.k.data(), s.k.data() + first * k_row_, static_cast<size_t>(n) * k_row_);
  std::memmove(s.v.data(), s.v.data() + first * v_row_, static_cast<size_t>(n) * v_row_);
  s.length = n;
}

void FormatKvCache::shrink_to_fit(int layer, int head) {
  Slot& s = slot(layer, head);
  if (s.capacity != s.length || s.k.capacity() != s.k.size()) {
    std::vector<uint8_t> k(s.k.begin(), s.k.begin() + static_cast<ptrdiff_t>(s.length * k_row_));
    std::vector<uint8_t> v(s.v.begin(), s.v.begin() + static_cast<ptrdiff_t>(s.length * v_row_));
    s.k = std::move(k);
    s.v = std::move(v);
    s.capacity = s.length;
  }
}

void FormatKvCache::shrink_to_fit() {
  KvCache::shrink_to_fit();
  gather_ = std::vector<uint8_t>();
}

void FormatKvCache::clear() {
  for (Slot& s : slots_) s.length = 0;
}

void FormatKvCache::repeat_lists(int factor) {
  if (factor < 1) throw Error("repeat_lists: factor must be at least 1", ErrorCode::internal);
  if (factor == 1) return;
  slots_ = repeat_slots(slots_, n_layer_, n_head_kv_, factor, k_row_, v_row_);
  n_head_kv_ *= factor;
}

std::unique_ptr<KvCache> FormatKvCache::clone() const {
  auto c = std::make_unique<FormatKvCache>(n_layer_, n_head_kv_, head_dim_, format_);
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    Slot& d = c->slots_[i];
    d.k.assign(s.k.begin(), s.k.begin() + static_cast<ptrdiff_t>(s.length * k_row_));
    d.v.assign(s.v.begin(), s.v.begin() + static_cast<ptrdiff_t>(s.length * v_row_));
    d.length = d.capacity = s.length;
  }
  return c;
}

size_t FormatKvCache::bytes_held() const {
  size_t b = 0;
  for (const Slot& s : slots_) b += s.k.capacity() + s.v.capacity();
  return b + gather_.capacity();
}

size_t FormatKvCache::bytes_used() const {
  size_t b = 0;
  for (const Slot& s : slots_) b += static_cast<size_t>(s.length) * (k_row_ + v_row_);
  return b;
}

std::unique_ptr<KvCache> make_host_kv_cache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format) {
  if (format.is_f32()) return std::make_unique<HostKvCache>(n_layer, n_head_kv, head_dim);
  return std::make_unique<FormatKvCache>(n_layer, n_head_kv, head_dim, format);
}

}  // namespace tappa
