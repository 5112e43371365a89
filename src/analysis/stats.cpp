// Statistics helpers: see stats.h.
#include "analysis/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "tappa/error.h"

namespace tappa::analysis {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_finite(std::span<const double> x, const char* what) {
  for (double v : x)
    if (!std::isfinite(v)) throw Error(std::string(what) + ": non-finite value in the input");
}

void check_same_size(std::span<const double> x, std::span<const double> y, const char* what) {
  if (x.size() != y.size())
    throw Error(std::string(what) + ": inputs differ in length (" + std::to_string(x.size()) + " vs " +
                std::to_string(y.size()) + ")");
}

double quantile_sorted(const std::vector<double>& s, double q) {
  const double h = (static_cast<double>(s.size()) - 1.0) * q;
  const size_t lo = static_cast<size_t>(std::floor(h));
  if (lo + 1 >= s.size()) return s.back();
  return s[lo] + (h - static_cast<double>(lo)) * (s[lo + 1] - s[lo]);
}

// Pearson on already-centred-able data, two passes (mean first) for accuracy.
double pearson_impl(std::span<const double> x, std::span<const double> y) {
  const size_t n = x.size();
  if (n < 2) return kNaN;
  const double mx = mean(x), my = mean(y);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (!(sxx > 0) || !(syy > 0)) return kNaN;
  // Clamp: rounding can push |r| a hair above 1 for perfectly (anti)correlated data.
  return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

CorrelationTest test_from_r(double r, int n) {
  CorrelationTest c;
  c.n = n;
  c.r = r;
  if (std::isnan(r) || n < 3) {
    c.t = c.p_value = kNaN;
    return c;
  }
  const double df = n - 2;
  if (std::fabs(r) >= 1.0) {
    c.t = std::copysign(std::numeric_limits<double>::infinity(), r);
    c.p_value = 0.0;
    return c;
  }
  c.t = r * std::sqrt(df / ((1.0 - r) * (1.0 + r)));
  c.p_value = student_t_two_sided_p(c.t, df);
  return c;
}

// Continued fraction of the incomplete beta (modified Lentz), valid for x < (a+1)/(a+b+2).
double beta_cf(double a, double b, double x) {
  constexpr double tiny = 1e-300, eps = 1e-16;
  const double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1, d = 1 - qab * x / qap;
  if (std::fabs(d) < tiny) d = tiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 500; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1) < eps) break;
  }
  return h;
}

// Uniform integer in [0, n) from a 64-bit generator by rejection (no modulo bias, and unlike
// std::uniform_int_distribution the algorithm is fixed here, so results do not depend on the
// standard library).
uint64_t bounded(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;  // 2^64 mod n
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

}  // namespace

double mean(std::span<const double> x) {
  if (x.empty()) return kNaN;
  double s = 0;
  for (double v : x) s += v;
  return s / static_cast<double>(x.size());
}

double stddev(std::span<const double> x, int ddof) {
  if (static_cast<long long>(x.size()) <= ddof) return kNaN;
  const double m = mean(x);
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return std::sqrt(s / static_cast<double>(static_cast<long long>(x.size()) - ddof));
}

double quantile(std::span<const double> x, double q) {
  const double qs[1] = {q};
  return quantiles(x, qs)[0];
}

std::vector<double> quantiles(std::span<const double> x, std::span<const double> qs) {
  if (x.empty()) throw Error("quantile: empty input");
  check_finite(x, "quantile");
  for (double q : qs)
    if (!(q >= 0 && q <= 1)) throw Error("quantile: q must be in [0, 1] (got " + std::to_string(q) + ")");
  std::vector<double> s(x.begin(), x.end());
  std::sort(s.begin(), s.end());
  std::vector<double> out;
  out.reserve(qs.size());
  for (double q : qs) out.push_back(quantile_sorted(s, q));
  return out;
}

Summary summarize(std::span<const double> x) {
  const double qs[5] = {0.0, 0.25, 0.5, 0.75, 1.0};
  const std::vector<double> v = quantiles(x, qs);
  Summary s;
  s.n = static_cast<int>(x.size());
  s.mean = mean(x);
  s.sd = stddev(x, 1);
  s.min = v[0];
  s.q25 = v[1];
  s.median = v[2];
  s.q75 = v[3];
  s.max = v[4];
  return s;
}

std::vector<double> average_ranks(std::span<const double> x) {
  check_finite(x, "ranks");
  const size_t n = x.size();
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && x[idx[j + 1]] == x[idx[i]]) ++j;
    const double avg = 0.5 * static_cast<double>(i + j) + 1.0;  // ranks i+1 .. j+1
    for (size_t k = i; k <= j; ++k) r[idx[k]] = avg;
    i = j + 1;
  }
  return r;
}

double pearson(std::span<const double> x, std::span<const double> y) {
  check_same_size(x, y, "pearson");
  return pearson_impl(x, y);
}

double spearman(std::span<const double> x, std::span<const double> y) {
  check_same_size(x, y, "spearman");
  const std::vector<double> rx = average_ranks(x), ry = average_ranks(y);
  return pearson_impl(rx, ry);
}

CorrelationTest pearson_test(std::span<const double> x, std::span<const double> y) {
  return test_from_r(pearson(x, y), static_cast<int>(x.size()));
}

CorrelationTest spearman_test(std::span<const double> x, std::span<const double> y) {
  return test_from_r(spearman(x, y), static_cast<int>(x.size()));
}

double spearman_permutation_p(std::span<const double> x, std::span<const double> y, int n_permutations,
                              uint64_t seed) {
  check_same_size(x, y, "spearman permutation test");
  if (n_permutations < 1) throw Error("spearman permutation test: need at least one permutation");
  const std::vector<double> rx = average_ranks(x);
  std::vector<double> ry = average_ranks(y);
  const double r0 = pearson_impl(rx, ry);
  if (std::isnan(r0)) return kNaN;
  // A permuted |r| equal to the observed one up to rounding counts as "as extreme".
  const double bar = std::fabs(r0) - 1e-12;
  std::mt19937_64 rng(seed);
  int count = 0;
  for (int p = 0; p < n_permutations; ++p) {
    for (size_t i = ry.size(); i > 1; --i) std::swap(ry[i - 1], ry[bounded(rng, i)]);  // Fisher–Yates
    if (std::fabs(pearson_impl(rx, ry)) >= bar) ++count;
  }
  return (count + 1.0) / (n_permutations + 1.0);
}

double incomplete_beta(double a, double b, double x) {
  if (!(a > 0) || !(b > 0) || !(x >= 0 && x <= 1)) return kNaN;
  if (x == 0) return 0.0;
  if (x == 1) return 1.0;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) +
                                b * std::log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * beta_cf(a, b, x) / a;
  return 1.0 - front * beta_cf(b, a, 1 - x) / b;
}

double student_t_two_sided_p(double t, double df) {
  if (std::isnan(t) || !(df > 0)) return kNaN;
  if (std::isinf(t)) return 0.0;
  // P(|T| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2)
  return incomplete_beta(df / 2, 0.5, df / (df + t * t));
}

}  // namespace tappa::analysis
