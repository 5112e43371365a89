#include "tappa/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "tappa/error.h"

namespace tappa::prune {

std::vector<double> min_max_normalise(std::span<const double> x) {
  if (x.empty()) throw Error("min-max normalisation of an empty score list");
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i])) throw Error("score of layer " + std::to_string(i) + " is not a finite number");
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  const double min = *lo, range = *hi - *lo;
  std::vector<double> out(x.size(), 0.0);
  if (range == 0.0) return out;
  for (size_t i = 0; i < x.size(); ++i) out[i] = (x[i] - min) / range;
  return out;
}

std::vector<double> tappa_scores(std::span<const double> bi, std::span<const double> qsim, double beta) {
  if (bi.size() != qsim.size())
    throw Error("BI has " + std::to_string(bi.size()) + " layers but q-similarity has " + std::to_string(qsim.size()));
  if (!std::isfinite(beta)) throw Error("beta must be a finite number");
  const std::vector<double> b = min_max_normalise(bi), q = min_max_normalise(qsim);
  std::vector<double> out(b.size());
  // Same operation order as the official code, so near-ties break the same way.
  for (size_t i = 0; i < b.size(); ++i) out[i] = b[i] + beta * (1.0 - q[i]);
  return out;
}

std::vector<int> ascending_order(std::span<const double> scores) {
  std::vector<int> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return scores[a] < scores[b]; });
  return idx;
}

std::vector<int> descending_order(std::span<const double> scores) {
  std::vector<int> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return scores[a] > scores[b]; });
  return idx;
}

std::vector<int> first_n_sorted(std::span<const int> order, int n) {
  if (n < 0 || n > static_cast<int>(order.size()))
    throw Error("cannot take " + std::to_string(n) + " layers from an order of " + std::to_string(order.size()));
  std::vector<int> out(order.begin(), order.begin() + n);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace tappa::prune
