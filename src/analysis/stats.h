// Small statistics for the analysis reports: correlations between per-head / per-layer quantities
// (e.g. q-similarity vs. measured top-k stability across heads), summaries and quantiles.
// Conventions follow numpy/scipy so numbers can be cross-checked there: sd with ddof = 1, linear
// quantile interpolation (numpy's default), average ranks for ties (scipy.stats.rankdata
// "average"), Spearman = Pearson of the ranks with the two-sided p-value of the t approximation
// (scipy.stats.spearmanr). Deterministic: the permutation test uses a fixed-seed std::mt19937_64
// (whose output sequence the C++ standard fixes) and its own shuffling, so p-values are identical
// on every platform.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace tappa::analysis {

// Arithmetic mean; NaN for an empty input.
double mean(std::span<const double> x);
// Standard deviation with ddof (1 = sample sd, as pandas / R; 0 = numpy's default). NaN if n ≤ ddof.
double stddev(std::span<const double> x, int ddof = 1);

// Quantile q ∈ [0, 1] by linear interpolation between order statistics (numpy "linear"): with the
// sorted values s, h = (n − 1)·q, result s[⌊h⌋] + (h − ⌊h⌋)(s[⌊h⌋+1] − s[⌊h⌋]). Throws tappa::Error
// for an empty input, q outside [0, 1] or non-finite values.
double quantile(std::span<const double> x, double q);
// Several quantiles with one sort.
std::vector<double> quantiles(std::span<const double> x, std::span<const double> qs);

struct Summary {
  int n = 0;
  double mean = 0, sd = 0, min = 0, q25 = 0, median = 0, q75 = 0, max = 0;
};
Summary summarize(std::span<const double> x);  // throws like quantile()

// Ranks 1..n, ties get the average of the ranks they span ([10, 20, 20, 30] → [1, 2.5, 2.5, 4]).
// Throws tappa::Error on non-finite values.
std::vector<double> average_ranks(std::span<const double> x);

// Pearson correlation coefficient; NaN when either input is constant or n < 2. Throws tappa::Error
// if the sizes differ.
double pearson(std::span<const double> x, std::span<const double> y);
// Spearman rank correlation (Pearson of the average ranks).
double spearman(std::span<const double> x, std::span<const double> y);

struct CorrelationTest {
  int n = 0;
  double r = 0;        // the coefficient
  double t = 0;        // r·sqrt((n − 2)/(1 − r²)), ±inf for |r| = 1
  double p_value = 1;  // two-sided, Student t with n − 2 degrees of freedom
};
// r with the t-approximation p-value (for Spearman this is what scipy.stats.spearmanr reports; it is
// approximate for small n — use the permutation test there). NaN r / t / p when r is NaN or n < 3.
CorrelationTest pearson_test(std::span<const double> x, std::span<const double> y);
CorrelationTest spearman_test(std::span<const double> x, std::span<const double> y);

// Two-sided permutation p-value of Spearman's r: the share of random re-pairings (y shuffled) with
// |r| ≥ |r_observed|, as (count + 1)/(n_permutations + 1) so it is never 0. Fixed seed → fixed result.
double spearman_permutation_p(std::span<const double> x, std::span<const double> y, int n_permutations = 9999,
                              uint64_t seed = 20260129);

// Two-sided tail of Student's t: P(|T| ≥ |t|) with df degrees of freedom (df > 0).
double student_t_two_sided_p(double t, double df);
// Regularised incomplete beta I_x(a, b), a, b > 0, x ∈ [0, 1] (continued fraction, ~1e-14).
double incomplete_beta(double a, double b, double x);

}  // namespace tappa::analysis
