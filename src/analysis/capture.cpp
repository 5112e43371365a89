#include "analysis/capture.h"

#include <algorithm>
#include <cstring>

#include "tappa/error.h"

namespace tappa::analysis {

AttentionCapture::AttentionCapture(const ModelConfig& c, const CaptureOptions& o)
    : options_(o), n_layer_(c.n_layer), n_head_(c.n_head), n_head_kv_(c.n_head_kv), head_dim_(c.head_dim) {
  if (o.n_tokens <= 0) throw Error("analysis: no tokens to analyse");
  options_.rows = static_cast<int>(std::clamp<int64_t>(o.rows, 1, o.n_tokens));
  options_.grid = static_cast<int>(std::clamp<int64_t>(o.grid, 1, o.n_tokens));
  zoom_ = static_cast<int>(std::clamp<int64_t>(o.zoom, 1, o.n_tokens));
  first_row_pos_ = o.n_tokens - options_.rows;
  q_pre_.resize(n_layer_);
  layer_seen_.assign(n_layer_, 0);
  k_pre_.resize(n_layer_);
  for (int l = 0; l < n_layer_; ++l) {
    q_pre_[l].reserve(static_cast<size_t>(o.n_tokens) * n_head_ * head_dim_);
    k_pre_[l].reserve(static_cast<size_t>(o.n_tokens) * n_head_kv_ * head_dim_);
  }
  const size_t cells = static_cast<size_t>(options_.grid) * options_.grid;
  for (int i = 0; i < n_layer_ * n_head_; ++i) {
    auto hs = std::make_unique<HeadState>();
    hs->sum.assign(cells, 0.0);
    hs->count.assign(cells, 0);
    hs->rows.resize(options_.rows);
    heads_.push_back(std::move(hs));
  }
}

void AttentionCapture::on_qk(const LayerQk& qk) {
  const size_t qn = static_cast<size_t>(qk.n_tokens) * qk.n_head * qk.head_dim;
  const size_t kn = static_cast<size_t>(qk.n_tokens) * qk.n_head_kv * qk.head_dim;
  q_pre_[qk.layer].insert(q_pre_[qk.layer].end(), qk.q_pre, qk.q_pre + qn);
  k_pre_[qk.layer].insert(k_pre_[qk.layer].end(), qk.k_pre, qk.k_pre + kn);
  layer_seen_[qk.layer] = qk.pos0 + qk.n_tokens;
  n_seen_ = std::max(n_seen_, layer_seen_[qk.layer]);
}

void AttentionCapture::on_attention_row(int layer, int head, int64_t pos, const float* probs, int n) {
  if (pos >= options_.n_tokens) return;  // more tokens than announced: ignore rather than overflow
  HeadState& hs = head_state(layer, head);
  const int G = options_.grid;
  const int64_t T = options_.n_tokens;
  const int gr = static_cast<int>(pos * G / T);
  // Bin the row into its grid row first (no lock), then add under the head's lock.
  thread_local std::vector<double> local;
  local.assign(G, 0.0);
  thread_local std::vector<int32_t> local_n;
  local_n.assign(G, 0);
  for (int j = 0; j < n; ++j) {
    const int gc = static_cast<int>(static_cast<int64_t>(j) * G / T);
    local[gc] += probs[j];
    local_n[gc] += 1;
  }
  std::lock_guard<std::mutex> lock(hs.mu);
  double* sum = hs.sum.data() + static_cast<size_t>(gr) * G;
  int32_t* cnt = hs.count.data() + static_cast<size_t>(gr) * G;
  for (int c = 0; c < G; ++c) {
    sum[c] += local[c];
    cnt[c] += local_n[c];
  }
  if (pos >= first_row_pos_) hs.rows[pos - first_row_pos_].assign(probs, probs + n);
}

std::vector<float> AttentionCapture::grid(int layer, int head) const {
  const HeadState& hs = head_state(layer, head);
  std::vector<float> g(hs.sum.size(), 0.0f);
  for (size_t i = 0; i < g.size(); ++i)
    if (hs.count[i] > 0) g[i] = static_cast<float>(hs.sum[i] / hs.count[i]);
  return g;
}

void AttentionCapture::make_zoom(HeadState& hs) const {
  const int Z = zoom_size();
  hs.zoom.assign(static_cast<size_t>(Z) * Z, 0.0f);
  const int64_t key0 = options_.n_tokens - Z;  // crop keys [key0, n_tokens)
  for (int r = 0; r < Z; ++r) {
    const auto& row = hs.rows[options_.rows - Z + r];
    for (int c = 0; c < Z; ++c) {
      const int64_t key = key0 + c;
      if (key < static_cast<int64_t>(row.size())) hs.zoom[static_cast<size_t>(r) * Z + c] = row[key];
    }
  }
}

void AttentionCapture::on_block(int layer, const float* in, const float* out, int n_tokens, int n_embd) {
  if (layer >= n_layer_) return;
  // The layer is done once its last kept row has arrived (its on_qk reached the last position).
  if (layer_seen_[layer] < options_.n_tokens) return;
  for (int h = 0; h < n_head_; ++h) make_zoom(head_state(layer, h));
  if (layer_done_) layer_done_(layer);
  for (int h = 0; h < n_head_; ++h) {
    auto& rows = head_state(layer, h).rows;
    for (auto& r : rows) std::vector<float>().swap(r);
  }
}

}  // namespace tappa::analysis
