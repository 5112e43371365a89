// `tappa analyze` behind include/tappa/analysis.h: one forward pass over a text with the
// AttentionCapture observer, then the TAPPA measurements per head (q-similarity in several windows and
// RoPE stages, measured attention patterns, RoPE channel energies, the pattern the theorems predict),
// the correlation between q-similarity and measured predictability, and the report (report.json,
// report.html, maps/*.png). This header holds what the report needs beyond the public result.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "analysis/capture.h"
#include "tappa/analysis.h"

namespace tappa::analysis {

// The attention maps of an analysis, kept for the report's PNGs: the capture of the (intervention)
// pass and the heads whose maps are drawn (the gallery's, or every head with all_maps).
struct ReportMaps {
  std::unique_ptr<AttentionCapture> capture;
  std::vector<int> heads;  // layer-major indices
  double analysis_s = 0, pass_s = 0;  // the timings the report's total adds the drawing time to
};

// analyze_text + write_analysis_report (the tests' shorthand). Returns the report JSON.
nlohmann::json analyze(const Model& model, const std::string& text, const AnalysisOptions& options,
                       const std::string& out_dir);

}  // namespace tappa::analysis
