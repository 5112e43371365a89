// Prune orders from per-layer scores (PAPER.md §4.3): ShortGPT ranks layers by ascending Block
// Influence; TAPPA ranks by BI' = BI_norm + β·(1 − qsim_norm) (min–max normalised over layers), so a
// layer whose queries are self-similar looks less influential and is pruned earlier. Ties keep the
// lower layer index first (a stable sort), which is what Python's sorted() does in the official code.
#pragma once
#include <span>
#include <vector>

namespace tappa::prune {

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

}  // namespace tappa::prune
