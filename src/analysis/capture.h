// The observer behind `tappa analyze`: records, per layer, the pre-RoPE queries and keys of every
// token (post-RoPE ones are recomputed from them when needed, so memory is linear in the text
// length), the full attention rows of the last `rows` query positions per head (for the pattern
// measurements), and a downsampled grid of every head's whole attention map (for the pictures).
// It never holds a T×T matrix: the grid is grid×grid cells, each the mean attention of the
// (query, key) pairs that fall into it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "tappa/model.h"
#include "tappa/observer.h"

namespace tappa::analysis {

struct CaptureOptions {
  int64_t n_tokens = 0;  // total tokens that will be run (prompt + generated): fixes the grid scale
  int rows = 64;         // full attention rows kept for the last `rows` positions
  int grid = 128;        // cells per side of the downsampled attention map
  int zoom = 128;        // side of the full-resolution crop at the end of the text (last zoom×zoom)
};

class AttentionCapture : public Observer {
 public:
  AttentionCapture(const ModelConfig& config, const CaptureOptions& options);

  bool wants_layer(int layer) override { return layer < n_layer_; }
  void on_qk(const LayerQk& qk) override;
  bool wants_attention_row(int layer, int head, int64_t pos) override { return true; }
  void on_attention_row(int layer, int head, int64_t pos, const float* probs, int n) override;
  void on_block(int layer, const float* in, const float* out, int n_tokens, int n_embd) override;

  // Called once per layer as soon as all of its kept rows have arrived (during the forward pass of
  // the last batch). The callback measures what it needs from rows(); right after it returns the
  // rows of that layer are freed, so at most one layer's rows are held at a time.
  void set_layer_done(std::function<void(int layer)> fn) { layer_done_ = std::move(fn); }

  int64_t n_tokens() const { return n_seen_; }
  // [n_tokens][n_head * head_dim] / [n_tokens][n_head_kv * head_dim]
  const std::vector<float>& q_pre(int layer) const { return q_pre_[layer]; }
  const std::vector<float>& k_pre(int layer) const { return k_pre_[layer]; }

  // Rows of the last `rows` positions: first_row_pos() .. n_tokens-1; row r has first_row_pos()+r+1 entries.
  int64_t first_row_pos() const { return first_row_pos_; }
  const std::vector<std::vector<float>>& rows(int layer, int head) const { return head_state(layer, head).rows; }
  // The downsampled map, grid×grid, mean attention per cell (cells above the diagonal are 0).
  std::vector<float> grid(int layer, int head) const;
  // Full-resolution crop of the last zoom queries × last zoom keys ([zoom][zoom], row-major);
  // available once the layer is done.
  const std::vector<float>& zoom_map(int layer, int head) const { return head_state(layer, head).zoom; }
  int grid_size() const { return options_.grid; }
  int zoom_size() const { return std::min(zoom_, options_.rows); }

 private:
  struct HeadState {
    std::mutex mu;                    // rows of one head may arrive from several threads
    std::vector<double> sum;          // grid*grid
    std::vector<int32_t> count;       // grid*grid
    std::vector<std::vector<float>> rows;
    std::vector<float> zoom;
  };
  void make_zoom(HeadState& hs) const;
  HeadState& head_state(int l, int h) { return *heads_[static_cast<size_t>(l) * n_head_ + h]; }
  const HeadState& head_state(int l, int h) const { return *heads_[static_cast<size_t>(l) * n_head_ + h]; }

  CaptureOptions options_;
  int n_layer_, n_head_, n_head_kv_, head_dim_;
  int zoom_;
  int64_t first_row_pos_;
  int64_t n_seen_ = 0;
  std::vector<int64_t> layer_seen_;  // per layer: positions whose q/k have been delivered
  std::vector<std::vector<float>> q_pre_, k_pre_;
  std::vector<std::unique_ptr<HeadState>> heads_;
  std::function<void(int)> layer_done_;
};

}  // namespace tappa::analysis
