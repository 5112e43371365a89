// Statistics helpers against hand-computed values (and scipy's documented spearmanr example).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "analysis/stats.h"
#include "tappa/error.h"

namespace ta = tappa::analysis;
using V = std::vector<double>;

TEST(Stats, MeanAndSd) {
  const V x = {2, 4, 4, 4, 5, 5, 7, 9};  // mean 5, Σ(x − 5)² = 32
  EXPECT_DOUBLE_EQ(ta::mean(x), 5.0);
  EXPECT_DOUBLE_EQ(ta::stddev(x, 0), 2.0);
  EXPECT_DOUBLE_EQ(ta::stddev(x), std::sqrt(32.0 / 7.0));
  EXPECT_TRUE(std::isnan(ta::mean(V{})));
  EXPECT_TRUE(std::isnan(ta::stddev(V{1.0})));
}

TEST(Stats, Quantiles) {
  const V x = {4, 1, 3, 2};  // sorted 1 2 3 4; h = 3q
  EXPECT_DOUBLE_EQ(ta::quantile(x, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(ta::quantile(x, 0.25), 1.75);
  EXPECT_DOUBLE_EQ(ta::quantile(x, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(ta::quantile(x, 0.9), 3.7);
  EXPECT_DOUBLE_EQ(ta::quantile(x, 1.0), 4.0);
  EXPECT_DOUBLE_EQ(ta::quantile(V{7}, 0.3), 7.0);
  const V qs = {0.1, 0.5};
  EXPECT_EQ(ta::quantiles(V{10, 0, 5}, qs), (V{1.0, 5.0}));
  EXPECT_THROW(ta::quantile(V{}, 0.5), tappa::Error);
  EXPECT_THROW(ta::quantile(x, 1.5), tappa::Error);
  EXPECT_THROW(ta::quantile(V{1, NAN}, 0.5), tappa::Error);
  const ta::Summary s = ta::summarize(V{1, 2, 3, 4, 5});
  EXPECT_EQ(s.n, 5);
  EXPECT_DOUBLE_EQ(s.mean, 3);
  EXPECT_DOUBLE_EQ(s.sd, std::sqrt(2.5));
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.q25, 2);
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.q75, 4);
  EXPECT_DOUBLE_EQ(s.max, 5);
}

TEST(Stats, AverageRanks) {
  EXPECT_EQ(ta::average_ranks(V{10, 20, 20, 30}), (V{1, 2.5, 2.5, 4}));
  EXPECT_EQ(ta::average_ranks(V{3, 1, 3, 3}), (V{3, 1, 3, 3}));  // three tied for ranks 2..4
  EXPECT_EQ(ta::average_ranks(V{0.5, -1, 2}), (V{2, 1, 3}));
  EXPECT_EQ(ta::average_ranks(V{5, 5}), (V{1.5, 1.5}));
  EXPECT_TRUE(ta::average_ranks(V{}).empty());
}

TEST(Stats, Pearson) {
  // dx = (−2,−1,0,1,2), dy = (−2,0,1,0,1): Σdxdy = 6, Σdx² = 10, Σdy² = 6 → 6/√60.
  EXPECT_NEAR(ta::pearson(V{1, 2, 3, 4, 5}, V{2, 4, 5, 4, 5}), 6 / std::sqrt(60.0), 1e-15);
  EXPECT_DOUBLE_EQ(ta::pearson(V{1, 2, 3}, V{-2, -4, -6}), -1.0);
  EXPECT_TRUE(std::isnan(ta::pearson(V{1, 2, 3}, V{4, 4, 4})));  // constant input
  EXPECT_THROW(ta::pearson(V{1, 2}, V{1, 2, 3}), tappa::Error);
}

TEST(Stats, SpearmanWithTiesMatchesScipyExample) {
  // scipy.stats.spearmanr([1,2,3,4,5], [5,6,7,8,7]) → statistic 0.8207826816681233,
  // pvalue 0.08858700531354381 (scipy docs). By hand: ranks of y = (1, 2, 3.5, 5, 3.5),
  // Σ dx·dy = 8, Σdx² = 10, Σdy² = 9.5 → r = 8/√95.
  const V x = {1, 2, 3, 4, 5}, y = {5, 6, 7, 8, 7};
  EXPECT_NEAR(ta::spearman(x, y), 8 / std::sqrt(95.0), 1e-15);
  const ta::CorrelationTest c = ta::spearman_test(x, y);
  EXPECT_EQ(c.n, 5);
  EXPECT_NEAR(c.r, 0.8207826816681233, 1e-15);
  EXPECT_NEAR(c.p_value, 0.08858700531354381, 1e-12);
  // Independent check of the p-value with the closed-form t CDF for 3 degrees of freedom:
  // P(|T| ≥ t) = 1 − (2/π)(atan(t/√3) + (t/√3)/(1 + t²/3)).
  const double u = c.t / std::sqrt(3.0);
  EXPECT_NEAR(c.p_value, 1 - 2 / std::numbers::pi * (std::atan(u) + u / (1 + u * u)), 1e-13);
  EXPECT_NEAR(c.t, c.r * std::sqrt(3 / (1 - c.r * c.r)), 1e-12);
}

TEST(Stats, SpearmanMonotoneAndDegenerate) {
  const ta::CorrelationTest c = ta::spearman_test(V{1, 2, 3, 4}, V{1, 10, 100, 1000});
  EXPECT_DOUBLE_EQ(c.r, 1.0);
  EXPECT_EQ(c.p_value, 0.0);
  EXPECT_TRUE(std::isinf(c.t));
  EXPECT_DOUBLE_EQ(ta::spearman(V{1, 2, 3, 4}, V{9, 7, 5, 1}), -1.0);
  EXPECT_TRUE(std::isnan(ta::spearman_test(V{1, 2}, V{2, 1}).p_value));  // n < 3
  EXPECT_TRUE(std::isnan(ta::spearman(V{1, 2, 3}, V{1, 1, 1})));
  EXPECT_THROW(ta::spearman(V{1, NAN, 3}, V{1, 2, 3}), tappa::Error);
}

TEST(Stats, StudentTClosedForms) {
  for (double t : {0.0, 0.5, 1.0, 2.5, 10.0, -3.0}) {
    const double a = std::fabs(t);
    EXPECT_NEAR(ta::student_t_two_sided_p(t, 1), 1 - 2 / std::numbers::pi * std::atan(a), 1e-13) << t;  // Cauchy
    EXPECT_NEAR(ta::student_t_two_sided_p(t, 2), 1 - a / std::sqrt(2 + t * t), 1e-13) << t;
  }
  EXPECT_NEAR(ta::student_t_two_sided_p(1.959963984540054, 1e7), 0.05, 1e-6);  // → normal
}

TEST(Stats, IncompleteBeta) {
  for (double x : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    EXPECT_NEAR(ta::incomplete_beta(1, 1, x), x, 1e-14);
    EXPECT_NEAR(ta::incomplete_beta(3, 1, x), x * x * x, 1e-14);
    EXPECT_NEAR(ta::incomplete_beta(1, 4, x), 1 - std::pow(1 - x, 4), 1e-14);
  }
  EXPECT_NEAR(ta::incomplete_beta(2.5, 2.5, 0.5), 0.5, 1e-14);
  EXPECT_TRUE(std::isnan(ta::incomplete_beta(0, 1, 0.5)));
}

TEST(Stats, PermutationPValue) {
  const V x = {1, 2, 3, 4, 5}, y = {5, 6, 7, 8, 7};
  // Exact: enumerate all 120 re-pairings of y's ranks.
  const V rx = ta::average_ranks(x);
  V ry = ta::average_ranks(y);
  const double r0 = std::fabs(ta::pearson(rx, ry));
  std::sort(ry.begin(), ry.end());
  int extreme = 0, total = 0;
  do {
    ++total;
    extreme += std::fabs(ta::pearson(rx, ry)) >= r0 - 1e-12;
  } while (std::next_permutation(ry.begin(), ry.end()));
  const double exact = static_cast<double>(extreme) / total;  // over distinct arrangements
  const double p = ta::spearman_permutation_p(x, y);
  EXPECT_NEAR(p, exact, 0.01) << "exact " << exact;
  EXPECT_EQ(p, ta::spearman_permutation_p(x, y));  // fixed seed: identical
  EXPECT_NE(p, ta::spearman_permutation_p(x, y, 9999, 1));  // another seed: another sample
  // Perfect order among 6 values: 2 of 720 arrangements reach |r| = 1.
  const double pp = ta::spearman_permutation_p(V{1, 2, 3, 4, 5, 6}, V{2, 3, 5, 7, 11, 13}, 19999);
  EXPECT_NEAR(pp, 2.0 / 720, 0.0015);
  EXPECT_GT(pp, 0.0);
  EXPECT_THROW(ta::spearman_permutation_p(x, V{1, 2}), tappa::Error);
}
