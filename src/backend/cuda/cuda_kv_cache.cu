#include "backend/cuda/cuda_kv_cache.cuh"

#include <algorithm>
#include <cassert>

#include "backend/cuda/kernels.cuh"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa::cuda {

CudaKvCache::CudaKvCache(std::shared_ptr<Context> ctx, int n_layer, int n_head_kv, int head_dim)
    : KvCache(n_layer, n_head_kv, head_dim), ctx_(std::move(ctx)), lists_(static_cast<size_t>(n_layer) * n_head_kv) {}

CudaKvCache::~CudaKvCache() {
  ctx_->before_cache_access();
  for (List& l : lists_)
    if (l.k) ctx_->free(l.k);
  for (Scratch* s : {&index_, &q_, &probs_, &tables_}) s->release(*ctx_);
}

bool CudaKvCache::attention_rows(int layer, int head, const float* q, int n_group, int n_rows, float scale,
                                 float* probs) const {
  const List& l = list(layer, head);
  const int D = head_dim_, len = l.length;
  if (n_rows > len || n_rows <= 0 || D % 32 != 0 || D > 256) return false;
  ctx_->before_cache_access();
  // The kernel reads queries token-major ([row][group member][D]): transpose on the way.
  host_q_.resize(static_cast<size_t>(n_group) * n_rows * D);
  for (int g = 0; g < n_group; ++g)
    for (int a = 0; a < n_rows; ++a)
      std::copy_n(q + (static_cast<size_t>(g) * n_rows + a) * D, D, host_q_.data() + (static_cast<size_t>(a) * n_group + g) * D);
  float* dq = q_.get<float>(*ctx_, host_q_.size());
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(dq, host_q_.data(), host_q_.size() * sizeof(float), cudaMemcpyHostToDevice, ctx_->stream));
  const AttnList L{l.k, l.v(D), len, n_rows, 0, 0};
  std::vector<ProbTriple> triples;
  triples.reserve(static_cast<size_t>(n_group) * n_rows);
  for (int g = 0; g < n_group; ++g)
    for (int a = 0; a < n_rows; ++a) triples.push_back({0, a, g});
  const size_t n = triples.size() * static_cast<size_t>(len);
  float* dp = probs_.get<float>(*ctx_, n);
  const AttnShape sh{n_group, D, scale, 0};
  attention_probs(&L, triples.data(), static_cast<int>(triples.size()), sh, dq, static_cast<int64_t>(n_group) * D, dp, len,
                  *ctx_, tables_);
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(probs, dp, n * sizeof(float), cudaMemcpyDeviceToHost, ctx_->stream));
  ctx_->sync();
  return true;
}

void CudaKvCache::reallocate(List& l, int capacity, int first, int n) {
  ctx_->before_cache_access();
  const int64_t D = head_dim_;
  kv_t* block = capacity > 0 ? static_cast<kv_t*>(ctx_->alloc(static_cast<size_t>(capacity) * D * 2 * sizeof(kv_t))) : nullptr;
  if (n > 0) {
    const size_t bytes = static_cast<size_t>(n) * D * sizeof(kv_t);
    TAPPA_CUDA_CHECK(cudaMemcpyAsync(block, l.k + first * D, bytes, cudaMemcpyDeviceToDevice, ctx_->stream));
    TAPPA_CUDA_CHECK(cudaMemcpyAsync(block + capacity * D, l.v(head_dim_) + first * D, bytes, cudaMemcpyDeviceToDevice,
                                     ctx_->stream));
  }
  if (l.k) ctx_->free(l.k);
  l.k = block;
  l.capacity = capacity;
  l.length = n;
}

void CudaKvCache::reserve_list(int layer, int head, int extra) {
  List& l = at(layer, head);
  const int need = l.length + extra;
  if (need <= l.capacity) return;
  const int cap = extra == 1 && l.capacity > 0 ? std::max(need, l.capacity + std::max(256, l.capacity / 8)) : need;
  reallocate(l, cap, 0, l.length);
}

void CudaKvCache::reserve_extra(int layer, int extra) {
  for (int h = 0; h < n_head_kv_; ++h) reserve_list(layer, h, extra);
}

void CudaKvCache::append(int layer, int head, const float* k, const float* v, int n, int64_t stride) {
  if (n <= 0) return;
  ctx_->before_cache_access();
  reserve_list(layer, head, n);
  List& l = at(layer, head);
  const int64_t D = head_dim_;
  staging_.resize(static_cast<size_t>(n) * D * 2);
  for (int i = 0; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) {
      staging_[i * D + d] = quant::fp32_to_fp16(k[i * stride + d]);
      staging_[(n + i) * D + d] = quant::fp32_to_fp16(v[i * stride + d]);
    }
  const size_t bytes = static_cast<size_t>(n) * D * sizeof(kv_t);
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(l.k + l.length * D, staging_.data(), bytes, cudaMemcpyHostToDevice, ctx_->stream));
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(l.v(head_dim_) + l.length * D, staging_.data() + n * D, bytes, cudaMemcpyHostToDevice,
                                   ctx_->stream));
  // Pageable source: the copies above have taken the bytes before returning; nothing to wait for.
  l.length += n;
}

void CudaKvCache::append_from(int layer, int head, const KvCache& src, int src_layer, int src_head, int first, int n) {
  const auto* s = dynamic_cast<const CudaKvCache*>(&src);
  if (!s || s->head_dim_ != head_dim_) return KvCache::append_from(layer, head, src, src_layer, src_head, first, n);
  if (n <= 0) return;
  ctx_->before_cache_access();
  assert(first >= 0 && first + n <= s->length(src_layer, src_head));
  reserve_list(layer, head, n);
  List& l = at(layer, head);
  const List& f = s->list(src_layer, src_head);
  const int64_t D = head_dim_;
  const size_t bytes = static_cast<size_t>(n) * D * sizeof(kv_t);
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(l.k + l.length * D, f.k + first * D, bytes, cudaMemcpyDeviceToDevice, ctx_->stream));
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(l.v(head_dim_) + l.length * D, f.v(head_dim_) + first * D, bytes,
                                   cudaMemcpyDeviceToDevice, ctx_->stream));
  l.length += n;
}

void CudaKvCache::read(int layer, int head, int first, int n, float* k, float* v) const {
  const List& l = list(layer, head);
  assert(first >= 0 && n >= 0 && first + n <= l.length);
  if (n == 0) return;
  ctx_->before_cache_access();
  const int64_t D = head_dim_;
  staging_.resize(static_cast<size_t>(n) * D * 2);
  const size_t bytes = static_cast<size_t>(n) * D * sizeof(kv_t);
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(staging_.data(), l.k + first * D, bytes, cudaMemcpyDeviceToHost, ctx_->stream));
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(staging_.data() + n * D, l.v(head_dim_) + first * D, bytes, cudaMemcpyDeviceToHost,
                                   ctx_->stream));
  ctx_->sync();
  for (int64_t i = 0; i < n * D; ++i) {
    if (k) k[i] = quant::fp16_to_fp32(staging_[i]);
    if (v) v[i] = quant::fp16_to_fp32(staging_[n * D + i]);
  }
}

void CudaKvCache::keep_rows(int layer, int head, std::span<const int> rows) {
  List& l = at(layer, head);
  const int n = static_cast<int>(rows.size());
  assert(n <= l.length);
  bool prefix = true;
  for (int i = 0; i < n && prefix; ++i) prefix = rows[i] == i;
  if (prefix) {
    l.length = n;
    return;
  }
  ctx_->before_cache_access();
  const int64_t D = head_dim_;
  int32_t* idx = index_.get<int32_t>(*ctx_, static_cast<size_t>(n));
  static_assert(sizeof(int) == sizeof(int32_t));
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(idx, rows.data(), static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   ctx_->stream));
  // Gather into a fresh block of the same capacity (rows may come in any order; in place would race).
  kv_t* block = static_cast<kv_t*>(ctx_->alloc(static_cast<size_t>(l.capacity) * D * 2 * sizeof(kv_t)));
  gather_rows(l.k, block, idx, n, head_dim_, ctx_->stream);
  gather_rows(l.v(head_dim_), block + l.capacity * D, idx, n, head_dim_, ctx_->stream);
  ctx_->free(l.k);
  l.k = block;
  l.length = n;
}

void CudaKvCache::keep_first(int layer, int head, int n) {
  List& l = at(layer, head);
  if (n < l.length) l.length = std::max(n, 0);
}

void CudaKvCache::keep_last(int layer, int head, int n) {
  List& l = at(layer, head);
  if (n >= l.length) return;
  reallocate(l, l.capacity, l.length - n, n);
}

void CudaKvCache::shrink_to_fit(int layer, int head) {
  List& l = at(layer, head);
  if (l.capacity != l.length) reallocate(l, l.length, 0, l.length);
}

void CudaKvCache::clear() {
  for (List& l : lists_) l.length = 0;
}

std::unique_ptr<KvCache> CudaKvCache::clone() const {
  auto c = std::make_unique<CudaKvCache>(ctx_, n_layer_, n_head_kv_, head_dim_);
  for (int ly = 0; ly < n_layer_; ++ly)
    for (int h = 0; h < n_head_kv_; ++h) c->append_from(ly, h, *this, ly, h, 0, length(ly, h));
  return c;
}

size_t CudaKvCache::bytes_held() const {
  size_t b = 0;
  for (const List& l : lists_) b += static_cast<size_t>(l.capacity) * row_bytes();
  return b;
}

size_t CudaKvCache::bytes_used() const {
  size_t b = 0;
  for (const List& l : lists_) b += static_cast<size_t>(l.length) * row_bytes();
  return b;
}

}  // namespace tappa::cuda
