#include "prune/calibration.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "report/svg.h"
#include "tappa/engine.h"
#include "tappa/error.h"

namespace tappa::prune {

std::vector<WindowRef> make_windows(std::span<const int64_t> text_lengths, int window, int stride) {
  if (window < 2) throw Error("calibration window must be at least 2 tokens");
  if (stride < 1) throw Error("calibration stride must be at least 1 token");
  std::vector<WindowRef> out;
  for (size_t t = 0; t < text_lengths.size(); ++t)
    for (int64_t s = 0; s < text_lengths[t]; s += stride) {
      const int len = static_cast<int>(std::min<int64_t>(window, text_lengths[t] - s));
      if (len >= 2) out.push_back({static_cast<int>(t), s, len});
    }
  return out;
}

CalibrationObserver::CalibrationObserver(const ModelConfig& c, bool angular)
    : n_layer_(c.n_layer), n_head_(c.n_head), head_dim_(c.head_dim), angular_(angular) {
  bi_sum_.assign(n_layer_, 0.0);
  bi_count_.assign(n_layer_, 0);
  qhat_sum_.assign(static_cast<size_t>(n_layer_) * n_head_ * head_dim_, 0.0);
  qhat_sq_.assign(static_cast<size_t>(n_layer_) * n_head_, 0.0);
  q_count_.assign(n_layer_, 0);
}

void CalibrationObserver::begin_window() {
  std::fill(bi_sum_.begin(), bi_sum_.end(), 0.0);
  std::fill(bi_count_.begin(), bi_count_.end(), 0);
  std::fill(qhat_sum_.begin(), qhat_sum_.end(), 0.0);
  std::fill(qhat_sq_.begin(), qhat_sq_.end(), 0.0);
  std::fill(q_count_.begin(), q_count_.end(), 0);
  last_in_.clear();
  last_in_rows_ = final_rows_ = 0;
}

void CalibrationObserver::on_qk(const LayerQk& qk) {
  const int l = qk.layer, H = qk.n_head, D = qk.head_dim;
  for (int t = 0; t < qk.n_tokens; ++t) {
    const float* row = qk.q_pre + static_cast<size_t>(t) * H * D;
    for (int h = 0; h < H; ++h) {
      const float* v = row + h * D;
      double sq = 0;
      for (int d = 0; d < D; ++d) sq += static_cast<double>(v[d]) * v[d];
      // Same clamp as the official cosine: q / max(‖q‖, 1e-8).
      const double inv = 1.0 / std::max(std::sqrt(sq), 1e-8);
      double* acc = qhat_sum_.data() + (static_cast<size_t>(l) * n_head_ + h) * head_dim_;
      for (int d = 0; d < D; ++d) acc[d] += v[d] * inv;
      qhat_sq_[static_cast<size_t>(l) * n_head_ + h] += sq * inv * inv;
    }
  }
  q_count_[l] += qk.n_tokens;
}

void CalibrationObserver::add_token_bi(int layer, const float* a, const float* b, int E) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < E; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  double cos = ab / (std::sqrt(aa) * std::sqrt(bb));
  if (std::isnan(cos)) cos = 0.5;  // ShortGPT: nan_to_num(nan=0.5) on the cosine
  cos = std::clamp(cos, -1.0, 1.0);
  bi_sum_[layer] += angular_ ? std::acos(cos) / std::numbers::pi : 1.0 - cos;
  ++bi_count_[layer];
}

void CalibrationObserver::on_block(int layer, const float* in, const float* out, int n, int E) {
  if (layer < n_layer_ - 1) {
    for (int t = 0; t < n; ++t) add_token_bi(layer, in + static_cast<size_t>(t) * E, out + static_cast<size_t>(t) * E, E);
  } else if (layer == n_layer_ - 1) {
    // Hugging Face's last hidden state is the final-norm output: wait for it (layer == n_layer).
    last_in_.insert(last_in_.end(), in, in + static_cast<size_t>(n) * E);
    last_in_rows_ += n;
  } else {
    for (int t = 0; t < n; ++t, ++final_rows_) {
      if (final_rows_ >= last_in_rows_) throw Error("calibration: final-norm rows without last-block rows");
      add_token_bi(n_layer_ - 1, last_in_.data() + static_cast<size_t>(final_rows_) * E, out + static_cast<size_t>(t) * E, E);
    }
  }
}

std::vector<double> CalibrationObserver::window_bi() const {
  std::vector<double> out(n_layer_, 0.0);
  for (int l = 0; l < n_layer_; ++l) out[l] = bi_count_[l] ? bi_sum_[l] / static_cast<double>(bi_count_[l]) : 0.0;
  return out;
}

std::vector<double> CalibrationObserver::window_qsim() const {
  std::vector<double> out(n_layer_, 0.0);
  for (int l = 0; l < n_layer_; ++l) {
    const double T = static_cast<double>(q_count_[l]);
    if (T <= 1) continue;
    double mean = 0;
    for (int h = 0; h < n_head_; ++h) {
      const double* s = qhat_sum_.data() + (static_cast<size_t>(l) * n_head_ + h) * head_dim_;
      double norm2 = 0;
      for (int d = 0; d < head_dim_; ++d) norm2 += s[d] * s[d];
      mean += (norm2 - qhat_sq_[static_cast<size_t>(l) * n_head_ + h]) / (T * (T - 1));
    }
    out[l] = mean / n_head_;
  }
  return out;
}

std::vector<double> CalibrationState::bi() const {
  std::vector<double> out(bi_sum.size(), 0.0);
  for (size_t l = 0; l < out.size() && windows_done > 0; ++l) out[l] = bi_sum[l] / windows_done;
  return out;
}

std::vector<double> CalibrationState::qsim() const {
  std::vector<double> out(qsim_sum.size(), 0.0);
  for (size_t l = 0; l < out.size() && windows_done > 0; ++l) out[l] = qsim_sum[l] / windows_done;
  return out;
}

void CalibrationState::add_window(const std::vector<double>& window_bi, const std::vector<double>& window_qsim,
                                  int64_t tokens) {
  if (window_bi.size() != static_cast<size_t>(n_layer) || window_qsim.size() != static_cast<size_t>(n_layer) ||
      bi_sum.size() != static_cast<size_t>(n_layer) || qsim_sum.size() != static_cast<size_t>(n_layer))
    throw Error("calibration: a window's scores do not have one value per layer");
  for (int l = 0; l < n_layer; ++l) {
    bi_sum[l] += window_bi[l];
    qsim_sum[l] += window_qsim[l];
  }
  ++windows_done;
  tokens_done += tokens;
}

void score_windows(const Model& model, const std::vector<std::vector<int32_t>>& texts,
                   std::span<const WindowRef> windows, const CalibrationOptions& options,
                   const std::function<bool(size_t)>& want,
                   const std::function<bool(size_t, const WindowScores&)>& on_window) {
  const ModelConfig& c = model.config();
  EngineOptions eo;
  eo.n_threads = options.n_threads;
  eo.n_ctx = options.window;
  Engine engine(model, eo);
  CalibrationObserver obs(c, options.angular);
  auto seq = engine.new_sequence();
  seq->set_observer(&obs);
  for (size_t w = 0; w < windows.size(); ++w) {
    if (want && !want(w)) continue;
    const WindowRef& win = windows[w];
    const std::vector<int32_t>& toks = texts.at(win.text);
    obs.begin_window();
    seq->reset();
    engine.eval(*seq, std::span<const int32_t>(toks.data() + win.start, win.length));
    const WindowScores scores{obs.window_bi(), obs.window_qsim()};
    if (on_window && !on_window(w, scores)) break;
  }
}

void run_calibration(const Model& model, const std::vector<std::vector<int32_t>>& texts,
                     std::span<const WindowRef> windows, const CalibrationOptions& options, CalibrationState& state,
                     const std::function<bool(const CalibrationState&)>& after_window) {
  const ModelConfig& c = model.config();
  if (state.n_layer == 0) {
    state.n_layer = c.n_layer;
    state.bi_sum.assign(c.n_layer, 0.0);
    state.qsim_sum.assign(c.n_layer, 0.0);
  }
  if (state.n_layer != c.n_layer) throw Error("calibration checkpoint is for a model with a different layer count");
  const size_t first = static_cast<size_t>(state.windows_done);
  if (first >= windows.size()) return;
  score_windows(
      model, texts, windows, options, [&](size_t w) { return w >= first; },
      [&](size_t w, const WindowScores& s) {
        state.add_window(s.bi, s.qsim, windows[w].length);
        return !after_window || after_window(state);
      });
}

std::string calibration_chart_svg(std::span<const double> bi, std::span<const double> qsim, bool angular,
                                  const std::string& title, const std::string& annotation) {
  std::vector<report::svg::Series> series(2);
  series[0].name = angular ? "Block Influence (angular)" : "Block Influence (1 - cos)";
  series[1].name = "q-similarity (pre-RoPE)";
  for (size_t l = 0; l < bi.size(); ++l) {
    series[0].x.push_back(static_cast<double>(l));
    series[0].y.push_back(bi[l]);
  }
  for (size_t l = 0; l < qsim.size(); ++l) {
    series[1].x.push_back(static_cast<double>(l));
    series[1].y.push_back(qsim[l]);
  }
  report::svg::ChartOptions co;
  co.width = 720;
  co.title = title;
  co.annotation = annotation;
  co.x_label = "layer";
  co.y_label = "score";
  co.x_integer = true;
  co.y_min = 0.0;
  return report::svg::line_chart(series, co);
}

}  // namespace tappa::prune
