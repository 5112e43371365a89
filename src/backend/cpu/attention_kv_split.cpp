#include "backend/cpu/attention_kv_split.h"

#include <algorithm>
#include <atomic>

#include "backend/cpu/attention_kv_quant.h"
#include "kv/format_kv_cache.h"

namespace tappa::cpu {
TAPPA_ISA_BEGIN
namespace {

KvList list_of(const FormatKvCache& c, int layer, int kvh) {
  const KvCacheFormat f = c.format();
  return KvList{c.k_data(layer, kvh), c.v_data(layer, kvh), c.k_row_bytes(), c.v_row_bytes(),
                f.k, f.v, c.k_rot_block(), c.v_rot_block()};
}

}  // namespace

bool KvSplitAttention::plan(const backend::AttentionCall& c, std::span<const FormatKvCache* const> formatted) {
  rows_.clear();
  items_.clear();
  formatted_.assign(formatted.begin(), formatted.end());
  const int group = c.n_head / c.n_head_kv;
  size_t probs = 0, parts = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    if (!formatted[s] || c.seqs[s].n_rows != 1) continue;
    for (int h = 0; h < c.n_head_kv; ++h) {
      const int n_vis = c.seqs[s].cache->length(c.layer, h);
      const int first = c.window > 0 ? std::max(0, n_vis - c.window) : 0;
      if (!kv_row_splits(1, first, n_vis)) continue;
      Row r{static_cast<int>(s), h, first, n_vis, (n_vis - first + kKvSplitChunk - 1) / kKvSplitChunk, probs, parts};
      for (int k = 0; k < r.chunks; ++k) items_.push_back({static_cast<int>(rows_.size()), k});
      probs += static_cast<size_t>(group) * n_vis;
      parts += static_cast<size_t>(r.chunks) * group;
      rows_.push_back(r);
    }
  }
  if (rows_.empty()) return false;
  // Grown, never shrunk: a decode loop at a steady depth allocates nothing.
  if (probs_.size() < probs) probs_.resize(std::max(probs, probs_.size() + probs_.size() / 2));
  if (m_.size() < parts) m_.resize(parts), sum_.resize(parts);
  if (acc_.size() < parts * c.head_dim) acc_.resize(parts * c.head_dim);
  // Per row: its chunks' key boundaries (chunks + 1, stored after the previous rows' at offset
  // part / group + row index) and the accumulator of each (chunk, head).
  acc_ptrs_.resize(parts);
  for (size_t i = 0; i < parts; ++i) acc_ptrs_[i] = acc_.data() + i * c.head_dim;
  bounds_.clear();
  for (const Row& r : rows_)
    for (int k = 0; k <= r.chunks; ++k) bounds_.push_back(std::min(r.n_vis, r.first + k * kKvSplitChunk));
  return true;
}

void KvSplitAttention::run(ThreadPool& pool, const backend::AttentionCall& c, const backend::Mat& q, backend::Mat out) {
  const int group = c.n_head / c.n_head_kv, HD = c.head_dim;
  constexpr int kMax = 64;
  // Pass 1: every (row, chunk), handed out one at a time (chunks cost the same; rows differ).
  std::atomic<size_t> next{0};
  auto chunks = [&](int) {
    const float* qs[kMax];
    float scales[kMax];
    float* probs[kMax];
    float* acc[kMax];
    for (;;) {
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= items_.size()) break;
      const auto [ri, k] = items_[i];
      const Row& r = rows_[ri];
      const backend::AttentionSeq& sq = c.seqs[r.seq];
      const int j0 = r.first + k * kKvSplitChunk, j1 = std::min(r.n_vis, j0 + kKvSplitChunk);
      const size_t part = r.part + static_cast<size_t>(k) * group;
      for (int g = 0; g < group; ++g) {
        qs[g] = q.data + sq.row0 * q.ld + static_cast<int64_t>(r.kvh * group + g) * HD;
        scales[g] = c.scale;
        probs[g] = probs_.data() + r.probs + static_cast<size_t>(g) * r.n_vis;
        acc[g] = acc_.data() + (part + g) * HD;
      }
      attention_chunk_kv(list_of(*formatted_[r.seq], c.layer, r.kvh), j0, j1, HD, qs, scales, group, probs,
                         m_.data() + part, sum_.data() + part, acc);
    }
  };
  pool.run_each(chunks);
  // Pass 2: merge each row's chunks, write its outputs, hand its probabilities to the taps.
  std::atomic<size_t> next_row{0};
  auto merge = [&](int) {
    float* probs[kMax];
    float* outs[kMax];
    for (;;) {
      const size_t ri = next_row.fetch_add(1, std::memory_order_relaxed);
      if (ri >= rows_.size()) break;
      const Row& r = rows_[ri];
      const backend::AttentionSeq& sq = c.seqs[r.seq];
      for (int g = 0; g < group; ++g) {
        probs[g] = probs_.data() + r.probs + static_cast<size_t>(g) * r.n_vis;
        outs[g] = out.data + sq.row0 * out.ld + static_cast<int64_t>(r.kvh * group + g) * HD;
      }
      attention_merge_kv(list_of(*formatted_[r.seq], c.layer, r.kvh), HD, group, r.chunks, bounds_.data() + r.part / group + ri,
                         m_.data() + r.part, sum_.data() + r.part, acc_ptrs_.data() + r.part, probs, outs);
      if (c.taps)
        for (int g = 0; g < group; ++g) {
          const int h = r.kvh * group + g;
          if (c.taps->wants(sq.seq, h, 0)) c.taps->on_row(sq.seq, h, 0, probs[g], r.n_vis);
        }
    }
  };
  pool.run_each(merge);
}

TAPPA_ISA_END
}  // namespace tappa::cpu
