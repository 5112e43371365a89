// The observer behind run_calibration (include/tappa/prune.h): per-window Block Influence and
// q-similarity sums gathered from the engine's callbacks.
#pragma once
#include <cstdint>
#include <vector>

#include "tappa/model.h"
#include "tappa/observer.h"
#include "tappa/prune.h"

namespace tappa::prune {

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

}  // namespace tappa::prune
