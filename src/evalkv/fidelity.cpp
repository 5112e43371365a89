#include "evalkv/fidelity.h"

#include <algorithm>
#include <cmath>

#include "tappa/error.h"

namespace tappa::evalkv {

void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  out.resize(logits.size());
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - lse;
}

void FidelityAccumulator::add(std::span<const float> full, std::span<const float> compressed, int32_t next_token) {
  if (full.size() != compressed.size() || full.empty())
    throw Error("fidelity: logit rows of different sizes (" + std::to_string(full.size()) + " vs " +
                std::to_string(compressed.size()) + ")");
  if (next_token < 0 || static_cast<size_t>(next_token) >= full.size())
    throw Error("fidelity: token id " + std::to_string(next_token) + " out of range");
  log_softmax(full, lp_full_);
  log_softmax(compressed, lp_comp_);
  double kl = 0.0;
  for (size_t i = 0; i < lp_full_.size(); ++i) kl += std::exp(lp_full_[i]) * (lp_full_[i] - lp_comp_[i]);
  kl_sum += std::max(0.0, kl);  // ≥ 0 mathematically; rounding can leave −1e-17
  const auto am = [](std::span<const float> v) { return std::max_element(v.begin(), v.end()) - v.begin(); };
  top1_same += am(full) == am(compressed) ? 1.0 : 0.0;
  nll_sum -= lp_comp_[next_token];
  nll_full_sum -= lp_full_[next_token];
  ++n;
}

int agreement_length(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int>(i);
}

}  // namespace tappa::evalkv
