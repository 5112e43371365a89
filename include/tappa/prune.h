// Layer pruning through the public API (PAPER.md §4): calibrate per-layer scores over texts, turn
// them into prune orders, and write the pruned model as a GGUF file llama.cpp loads. These are the
// pieces `tappa calibrate`, `prune-order` and `prune` are made of, and what a program that prunes
// its own models calls:
//
//   auto windows = tappa::prune::make_windows(lengths, 1024, 256);
//   tappa::prune::CalibrationState st;
//   tappa::prune::run_calibration(*model, texts, windows, {}, st, [](auto&) { return true; });
//   auto order = tappa::prune::tappa_order(st.bi(), st.qsim(), 0.2);
//   tappa::prune::write_pruned_gguf(model->file(), tappa::prune::first_n_sorted(order, 2), "out.gguf");
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tappa/gguf.h"
#include "tappa/model.h"

namespace tappa::prune {

// ---- Calibration: per-layer Block Influence and q-similarity
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

struct WindowRef {
  int text = 0;        // index into the tokenised texts
  int64_t start = 0;   // first token of the window
  int length = 0;
};

// The official windowing: starts 0, stride, 2·stride, … < n, length min(window, n − start).
// Windows shorter than 2 tokens are dropped (q-similarity is undefined there; the official code
// would divide by zero). Throws tappa::Error if window < 2 or stride < 1.
std::vector<WindowRef> make_windows(std::span<const int64_t> text_lengths, int window, int stride);

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

// The SVG line chart of `tappa calibrate --plot`: BI and q-similarity per layer, one series each.
std::string calibration_chart_svg(std::span<const double> bi, std::span<const double> qsim, bool angular,
                                  const std::string& title, const std::string& annotation);

// ---- Prune orders
// Prune orders from per-layer scores (PAPER.md §4.3): ShortGPT ranks layers by ascending Block
// Influence; TAPPA ranks by BI' = BI_norm + β·(1 − qsim_norm) (min–max normalised over layers), so a
// layer whose queries are self-similar looks less influential and is pruned earlier. Ties keep the
// lower layer index first (a stable sort), which is what Python's sorted() does in the official code.

// (x − min)/(max − min) per element; all zeros when the values are constant (the official rule).
// Throws tappa::Error on an empty input or a non-finite value.
std::vector<double> min_max_normalise(std::span<const double> x);

// BI'_l = BI_norm,l + beta·(1 − qsim_norm,l). Throws tappa::Error if the lengths differ.
std::vector<double> tappa_scores(std::span<const double> bi, std::span<const double> qsim, double beta);

// Layer indices sorted by ascending score, ties by index.
std::vector<int> ascending_order(std::span<const double> scores);

// Layer indices sorted by descending score, ties by index (q-similarity files list the most
// self-similar — the most prunable — layers first).
std::vector<int> descending_order(std::span<const double> scores);

inline std::vector<int> shortgpt_order(std::span<const double> bi) { return ascending_order(bi); }
inline std::vector<int> tappa_order(std::span<const double> bi, std::span<const double> qsim, double beta) {
  const std::vector<double> s = tappa_scores(bi, qsim, beta);
  return ascending_order(s);
}

// The first n entries of an order, sorted ascending (the set of removed layers). Throws when n is
// outside [0, order.size()].
std::vector<int> first_n_sorted(std::span<const int> order, int n);

// ---- Layer lists and score files
// Lists of layer indices as users write them ("3,5,7-9") and as files hold them (prune orders and
// raw-score JSON). Pure parsing: every malformed input is one tappa::Error naming the problem.

// "3,5,7-9" → {3,5,7,8,9}, sorted and de-duplicated; "" → {}. Spaces are allowed around items.
// Throws on anything else (negative numbers, reversed ranges, junk), or an index ≥ n_layer when
// n_layer > 0.
std::vector<int> parse_layer_list(std::string_view text, int n_layer = 0);

// "3,5,7,8,9" (compact ranges are not produced, so the output is easy to paste back).
std::string format_layer_list(const std::vector<int>& layers);

// A prune order from a file's text: a JSON object with "order" (tappa prune-order) or
// "prune_order" (the official raw-score files), or a plain list "21 24 23" / "21,24,23". The order
// must be a permutation prefix: distinct non-negative indices. Throws with `what` in the message; also
// for a q-similarity score file (score_type "q_similarity", or "qsim" as tappa wrote it before): its
// prune_order only sorts the q-sims (the official layout), it is not an order to prune by.
std::vector<int> parse_order_text(std::string_view text, std::string_view what = "order");

// The official raw-score file layout (Prune/compute_bi.py, compute_q_similarity.py):
// {"score_type": "BI" | "q_similarity", "scores": [...], "prune_order": the layers by ascending score,
// ties by the lower index}. The caller adds the settings.
enum class RawScoreType { bi, q_similarity };
nlohmann::json raw_score_json(RawScoreType type, const std::vector<double>& scores);

// Per-layer scores from a file's text: a JSON object with "scores" (the official raw-score format),
// or tappa's combined calibration file with `key` ("bi" or "qsim") holding such an object.
std::vector<double> parse_scores_text(std::string_view text, std::string_view key, std::string_view what = "scores");

// ---- The pruned GGUF
// Writing a pruned model: the same GGUF with some transformer blocks deleted. The remaining blocks
// are renumbered densely (blk.7 becomes blk.6 after removing one earlier block) — the GGUF analogue of
// the official code's layer-list deletion with layer_idx renumbering — `<arch>.block_count` is
// lowered, every per-layer metadata array (`<arch>.*` arrays with one entry per block, e.g. per-layer
// head counts) loses the removed entries, and `tappa.pruned_layers` records the original indices.
// Tensor bytes are copied unchanged, so the pruned file computes exactly what the original computes
// with those layers skipped.

struct PruneSummary {
  int n_layer_before = 0;
  int n_layer_after = 0;
  int n_tensors_removed = 0;
  std::vector<std::string> arrays_filtered;  // per-layer metadata keys that were shortened
};

// Writes `out_path` (atomically). Throws tappa::Error when an index is out of range, all layers
// would go, or the file has no `<arch>.block_count`.
PruneSummary write_pruned_gguf(const GgufFile& in, const std::vector<int>& remove_layers, const std::string& out_path);

}  // namespace tappa::prune
