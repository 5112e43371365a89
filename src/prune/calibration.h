// Offline calibration for layer pruning (PAPER.md §4.1–4.2): per-layer Block Influence (ShortGPT)
// and per-layer q-similarity of the pre-RoPE queries, averaged over sliding windows of the
// calibration texts exactly as the official scripts cut them (each text tokenised whole, windows of
// `window` tokens starting every `stride` tokens, the last ones shorter).
//
//   BI_l   = mean over tokens of 1 − cos(x_l, x_{l+1})   (angular: acos(cos)/π; a NaN cosine → 0.5)
//            where the last block's output is the final-norm-applied state, as Hugging Face's
//            output_hidden_states reports it;
//   qsim_l = mean over heads of the mean off-diagonal cosine between the window's pre-RoPE queries.
//
// Both are computed on the fly from the engine's observer callbacks: q-similarity with the identity
// mean_{a≠b} q̂_a·q̂_b = (‖Σ q̂‖² − Σ‖q̂‖²)/(T(T−1)), so nothing of size T×T or T×layers is stored.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "tappa/model.h"
#include "tappa/observer.h"

namespace tappa::prune {

struct WindowRef {
  int text = 0;        // index into the tokenised texts
  int64_t start = 0;   // first token of the window
  int length = 0;
};

// The official windowing: starts 0, stride, 2·stride, … < n, length min(window, n − start).
// Windows shorter than 2 tokens are dropped (q-similarity is undefined there; the official code
// would divide by zero). Throws tappa::Error if window < 2 or stride < 1.
std::vector<WindowRef> make_windows(std::span<const int64_t> text_lengths, int window, int stride);

// Per-window sums gathered by the observer; one instance per window.
class CalibrationObserver : public Observer {
 public:
  CalibrationObserver(const ModelConfig& config, bool angular);
  void begin_window();           // clears the per-window accumulators
  void on_qk(const LayerQk& qk) override;
  void on_block(int layer, const float* in, const float* out, int n_tokens, int n_embd) override;
  // Results of the finished window: per-layer BI (token mean) and q-sim (mean over heads).
  std::vector<double> window_bi() const;
  std::vector<double> window_qsim() const;

 private:
  int n_layer_, n_head_, head_dim_;
  bool angular_;
  std::vector<double> bi_sum_;          // [layer] Σ over tokens of the per-token BI
  std::vector<int64_t> bi_count_;       // [layer] tokens seen
  std::vector<double> qhat_sum_;        // [layer][head][dim] Σ q̂
  std::vector<double> qhat_sq_;         // [layer][head] Σ ‖q̂‖²
  std::vector<int64_t> q_count_;        // [layer] query rows seen
  std::vector<float> last_in_;          // the last block's input rows, waiting for the final norm
  int64_t last_in_rows_ = 0, final_rows_ = 0;
  void add_token_bi(int layer, const float* a, const float* b, int n_embd);
};

struct CalibrationOptions {
  int window = 1024;
  int stride = 256;
  bool angular = false;
  int max_windows = 0;  // 0: every window
  int n_threads = 0;
};

// Running state of a calibration; also what the checkpoint file holds.
struct CalibrationState {
  int n_layer = 0;
  int windows_done = 0;
  int64_t tokens_done = 0;
  std::vector<double> bi_sum, qsim_sum;  // Σ over finished windows
  std::vector<double> bi() const;        // averages over windows
  std::vector<double> qsim() const;
  // Adds one finished window (its per-layer BI and q-sim, its token count). Windows added in window
  // order give the very sums run_calibration forms (the same additions in the same order).
  void add_window(const std::vector<double>& window_bi, const std::vector<double>& window_qsim, int64_t tokens);
};

// One window's per-layer scores (what CalibrationState::add_window takes).
struct WindowScores {
  std::vector<double> bi, qsim;
};

// Runs the windows [state.windows_done, windows.size()) and adds them to `state`. `after_window` is
// called after each window (progress, checkpoints); return false from it to stop early.
void run_calibration(const Model& model, const std::vector<std::vector<int32_t>>& texts,
                     std::span<const WindowRef> windows, const CalibrationOptions& options, CalibrationState& state,
                     const std::function<bool(const CalibrationState&)>& after_window);

// The windows w with want(w), in window order, each scored alone (no sums): `on_window(w, scores)` is
// called after each; return false from it to stop. The per-window scores are the same bits
// run_calibration adds for that window (one code path: run_calibration is built on this), so a caller
// that computes the windows in pieces — the ranks of `mpirun tappa calibrate` — and adds them with
// add_window in window order reproduces a one-process run exactly.
void score_windows(const Model& model, const std::vector<std::vector<int32_t>>& texts,
                   std::span<const WindowRef> windows, const CalibrationOptions& options,
                   const std::function<bool(size_t)>& want,
                   const std::function<bool(size_t, const WindowScores&)>& on_window);

}  // namespace tappa::prune
