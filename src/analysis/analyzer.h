// `tappa analyze`: one forward pass over a text with the AttentionCapture observer, then the TAPPA
// measurements per head (q-similarity in several windows and RoPE stages, measured attention
// patterns, RoPE channel energies, the pattern the theorems predict), the correlation between
// q-similarity and measured predictability, and the report (report.json, report.html, maps/*.png).
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "analysis/qsim.h"
#include "tappa/model.h"

namespace tappa::analysis {

struct AnalyzeOptions {
  std::string input_name;      // shown in the report
  int max_tokens = 2048;       // the text is cut to its first max_tokens tokens
  int generate = 0;            // greedy tokens generated after the text, analysed like it
  QsimOptions qsim;            // mode etc.
  int last_window = 64;        // "last W" q-similarity window (the KV method uses 32)
  int sliding_window = 1024;   // sliding windows over the whole text (the pruning calibration's)
  int sliding_stride = 256;
  int rows = 64;               // attention rows measured per head (the last `rows` positions)
  int grid = 128;              // cells per side of the downsampled attention maps
  int gallery = 8;             // heads shown in the report's gallery
  std::optional<double> rope_base;                   // intervention: another RoPE base
  std::optional<std::pair<int, int>> channel_swap;   // intervention: channel m1 takes m2's frequency and vice versa
  int n_threads = 0;
  bool progress = true;
  bool time_plain_prefill = false;
  bool all_maps = false;  // write every head's map PNGs, not only the gallery's  // also time a prefill without observer, for the overhead figure
};

// Runs the analysis and writes out_dir/report.json, out_dir/report.html and out_dir/maps/*.png.
// Returns the report JSON. Throws tappa::Error on bad options or input.
nlohmann::json analyze(const Model& model, const std::string& text, const AnalyzeOptions& options,
                       const std::string& out_dir);

}  // namespace tappa::analysis
