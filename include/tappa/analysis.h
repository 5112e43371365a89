// TAPPA's attention analysis through the public API: one forward pass over a text with an attention
// observer, then per head the q-similarity in every variant (last window and sliding windows, pre-
// and post-RoPE, lag 1; the key lag-1 similarity), the measured attention pattern and its label, the
// RoPE channel energies and the pattern the paper's theorems predict from them. The result is data
// in memory; the report (report.json, report.html, maps/*.png) is written by a separate call, so a
// program can analyse without touching the disk and the CLI can stop without leaving half a report.
//
//   tappa::AnalysisOptions o;
//   o.max_tokens = 1024;
//   tappa::AnalysisResult r = tappa::analyze_text(*model, text, o);
//   r.heads[l * n_head + h].qsim_pre_last   // a head's pre-RoPE q-similarity over the last window
//   tappa::write_analysis_report(r, "out/");
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tappa/control.h"
#include "tappa/model.h"

namespace tappa {

namespace analysis {
struct ReportMaps;  // the attention maps a report draws (src/analysis/analyzer.h)
}

struct AnalysisOptions {
  std::string input_name;      // shown in the report
  int max_tokens = 2048;       // the text is cut to its first max_tokens tokens
  int generate = 0;            // greedy tokens generated after the text, analysed like it
  std::string qsim_mode = "cosine";  // cosine dot euclidean l1 rbf pearson angular kl
  bool pearson_official_scaling = false;  // pearson: the official code's extra /D
  int last_window = 64;        // "last W" q-similarity window (the KV method uses 32)
  int sliding_window = 1024;   // sliding windows over the whole text (the pruning calibration's)
  int sliding_stride = 256;
  int rows = 64;               // attention rows measured per head (the last `rows` positions)
  int grid = 128;              // cells per side of the downsampled attention maps
  int gallery = 8;             // heads shown in the report's gallery
  std::optional<double> rope_base;                  // intervention: another RoPE base
  std::optional<std::pair<int, int>> channel_swap;  // intervention: channel m1 takes m2's frequency and vice versa
  int n_threads = 0;
  bool time_plain_prefill = false;  // also time a prefill without observer, for the overhead figure
  bool all_maps = false;            // the report draws every head's map PNGs, not only the gallery's
  // Called as each forward pass starts ("analyze", or with an intervention "analyze (baseline)" then
  // "analyze (intervention)"); RunControl's progress then counts that pass's tokens.
  std::function<void(const std::string& pass)> on_pass;
};

struct HeadAnalysis {
  int layer = 0, head = 0, kv_head = 0;
  int window = 0;  // sliding-window (local) layer: keys visible to a query; 0: global attention
  // q-similarity: over the last `last_window` queries and averaged over sliding windows, of the
  // queries before and after RoPE; lag 1 (consecutive pre-RoPE queries; keys for ksim).
  double qsim_post_last = 0, qsim_pre_last = 0, qsim_pre_sliding = 0, qsim_post_sliding = 0;
  double qsim_lag1 = 0, ksim_lag1 = 0;
  // The measured pattern (attention rows of the last positions; docs/ANALYSIS.md).
  double topk_stability = 0, topk_predictability = 0;
  double sink_mass = 0, sink4_mass = 0, reaccess_mass = 0, diag_mass = 0;
  int best_offset = 0;
  double best_offset_mass = 0;
  int period = 0;
  double period_strength = 0, period_excess = 0;
  std::string label;     // reaccess, sequential, periodic_sequential, seasonal, unpredictable, mixed
  std::string evidence;  // which rule gave the label, with its numbers
  // RoPE channels: energy per rotated channel, the dominant one, its wavelength 2π/θ.
  std::vector<double> channel_energy;
  int dominant_channel = -1;
  double dominance = 0, wavelength = 0, predicted_spacing = 0;
  std::string frequency_class;
  // The pattern the theorems predict from q/k similarity and the channels.
  std::string predicted_label, prediction_reason;
  bool prediction_confident = false, prediction_agrees = false;
};

struct LayerAnalysis {
  int layer = 0;
  int window = 0;  // 0: global attention
  // Means over the layer's query heads.
  double qsim_post_last = 0, qsim_pre_last = 0, qsim_pre_sliding = 0, qsim_post_sliding = 0;
  double qsim_lag1 = 0, ksim_lag1 = 0;
};

struct AnalysisResult {
  int64_t n_tokens = 0;              // analysed: the text's tokens plus the generated ones
  std::vector<HeadAnalysis> heads;   // layer-major: heads[layer * n_head + head]
  std::vector<LayerAnalysis> layers;
  // The report's JSON (report.json's content; write_analysis_report adds the maps' names and the
  // time spent drawing them).
  nlohmann::json report;
  std::shared_ptr<const analysis::ReportMaps> maps;
};

// Runs the analysis. Throws tappa::Error on bad options or input; Error(ErrorCode::cancelled) when
// control's token is cancelled (checked after every 512-token chunk of the forward pass).
AnalysisResult analyze_text(const Model& model, const std::string& text, const AnalysisOptions& options,
                            const RunControl& control = {});

// Writes out_dir/report.json, out_dir/report.html and out_dir/maps/*.png (each file whole: temporary
// file + rename). Returns the JSON written.
nlohmann::json write_analysis_report(const AnalysisResult& result, const std::string& out_dir);

}  // namespace tappa
