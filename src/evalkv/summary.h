// Turns eval-kv results (the cells) into the files a reader wants: a CSV of every cell, a markdown
// report with mean ± standard error per (task, mode, method, budget), and SVG plots (score versus
// budget per method; the per-layer budgets the allocators chose, side by side).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tappa/eval.h"

namespace tappa::evalkv {

// The CSV text of the cells (one row per cell; prediction text quoted).
std::string cells_csv(const nlohmann::json& results);

// mean and standard error of the mean (sample sd / √n; 0 when n < 2).
struct MeanSe {
  double mean = 0.0, se = 0.0;
  int n = 0;
};
MeanSe mean_se(const std::vector<double>& v);

}  // namespace tappa::evalkv
