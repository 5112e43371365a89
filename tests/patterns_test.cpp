// Attention-pattern measurements and labels on constructed attention maps (R = 32 rows of queries
// 480..511 over their 481..512 keys) and on tiny hand-computed examples.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "analysis/patterns.h"
#include "tappa/error.h"

namespace ta = tappa::analysis;
using ta::PatternLabel;

namespace {

// A head's rows: the pattern (any non-negative weights, normalised to 1 − noise) plus `noise` of
// the mass spread over all keys with random weights — real rows are never exactly sparse.
struct Map {
  std::vector<std::vector<float>> data;
  std::vector<ta::AttentionRow> rows;
};

Map make_map(const std::function<void(int64_t p, std::vector<double>& w)>& fill, double noise = 0.02,
             uint32_t seed = 1, int R = 32, int64_t p0 = 480) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Map m;
  m.data.resize(R);
  for (int r = 0; r < R; ++r) {
    const int64_t p = p0 + r;
    std::vector<double> w(static_cast<size_t>(p) + 1, 0.0), nz(w.size());
    fill(p, w);
    double sw = 0, sn = 0;
    for (size_t j = 0; j < w.size(); ++j) {
      sw += w[j];
      sn += (nz[j] = u(rng));
    }
    m.data[r].resize(w.size());
    for (size_t j = 0; j < w.size(); ++j)
      m.data[r][j] = static_cast<float>((sw > 0 ? (1 - noise) * w[j] / sw : 0) + noise * nz[j] / sn);
  }
  for (int r = 0; r < R; ++r) m.rows.push_back({p0 + r, m.data[r]});
  return m;
}

ta::Classification label_of(const Map& m, ta::PatternMetrics* out = nullptr) {
  ta::PatternMetrics pm = ta::measure_patterns(m.rows);
  ta::Classification c = ta::classify(pm);
  if (out) *out = pm;
  return c;
}

}  // namespace

TEST(PatternLabels, PureSinkIsReaccess) {
  ta::PatternMetrics pm;
  const auto c = label_of(make_map([](int64_t, std::vector<double>& w) { w[0] = 1; }), &pm);
  EXPECT_EQ(c.label, PatternLabel::reaccess) << c.reason;
  EXPECT_NEAR(pm.sink_mass, 0.98, 0.001);
  EXPECT_NEAR(pm.sink4_mass, 0.98, 0.001);
  EXPECT_NEAR(pm.reaccess_mass, 0.98, 0.001);
  EXPECT_EQ(pm.persistent_keys, std::vector<int64_t>{0});
  EXPECT_DOUBLE_EQ(pm.topk_stability, 1.0);  // the set is {0} every step
  EXPECT_DOUBLE_EQ(pm.topk_predictability, 1.0);
  EXPECT_LT(pm.local_mass, 0.01);
}

TEST(PatternLabels, SinkWithVerticalColumnsIsReaccess) {
  ta::PatternMetrics pm;
  const auto c = label_of(make_map([](int64_t, std::vector<double>& w) {
                            w[0] = 0.5;
                            w[37] = w[150] = w[300] = 0.5 / 3;
                          }),
                          &pm);
  EXPECT_EQ(c.label, PatternLabel::reaccess) << c.reason;
  EXPECT_EQ(pm.persistent_keys, (std::vector<int64_t>{0, 37, 150, 300}));
  EXPECT_NEAR(pm.reaccess_mass, 0.98, 0.002);
  EXPECT_NEAR(pm.sink_mass, 0.49, 0.001);
  // The columns are excluded from the offset profile, so their regular spacing is not a "period".
  EXPECT_LT(c.periodic_signal, 0.05);
}

TEST(PatternLabels, PreviousTokenDiagonalIsSequential) {
  ta::PatternMetrics pm;
  const auto c = label_of(make_map([](int64_t p, std::vector<double>& w) { w[p - 1] = 1; }), &pm);
  EXPECT_EQ(c.label, PatternLabel::sequential) << c.reason;
  EXPECT_EQ(pm.best_offset, 1);
  EXPECT_NEAR(pm.best_offset_mass, 0.98, 0.001);
  EXPECT_NEAR(pm.local_mass, 0.98, 0.001);
  EXPECT_DOUBLE_EQ(pm.topk_stability, 0.0);        // a new key every step ...
  EXPECT_DOUBLE_EQ(pm.topk_shift_stability, 1.0);  // ... at the same offset
  EXPECT_DOUBLE_EQ(pm.topk_predictability, 1.0);
  EXPECT_TRUE(pm.persistent_keys.empty());
  // The profile beyond δ = 1 is only noise: whatever period candidate it yields is weak and not used.
  EXPECT_LT(pm.period_strength, 0.2);
  EXPECT_EQ(c.period, 0);
  EXPECT_EQ(c.periodic_signal, 0.0);
}

TEST(PatternLabels, ParallelDiagonalsEvery8ArePeriodicSequential) {
  ta::PatternMetrics pm;
  const auto c = label_of(make_map([](int64_t p, std::vector<double>& w) {
                            double a = 1;
                            for (int64_t d = 8; d <= p; d += 8, a *= 0.7) w[p - d] = a;
                          }),
                          &pm);
  EXPECT_EQ(c.label, PatternLabel::periodic_sequential) << c.reason;
  EXPECT_EQ(pm.period, 8);
  EXPECT_EQ(c.period, 8);
  EXPECT_GT(pm.period_strength, 0.5);
  EXPECT_GE(pm.period_peaks, 3);
  EXPECT_NEAR(pm.period_mass, 0.98, 0.01);
  EXPECT_EQ(pm.best_offset, 8);
  EXPECT_LT(pm.sequential_off_period, 0.05);  // the first diagonal belongs to the lattice
  EXPECT_DOUBLE_EQ(pm.topk_shift_stability, 1.0);
}

TEST(PatternLabels, RevisitsEvery64AreSeasonal) {
  ta::PatternMetrics pm;
  const double spread[5] = {1, 2, 3, 2, 1};  // re-visits are not pin-sharp
  const auto c = label_of(make_map([&](int64_t p, std::vector<double>& w) {
                            double a = 1;
                            for (int64_t d = 64; d + 2 <= p; d += 64, a *= 0.9)
                              for (int s = -2; s <= 2; ++s) w[p - d + s] += a * spread[s + 2];
                          }),
                          &pm);
  EXPECT_EQ(c.label, PatternLabel::seasonal) << c.reason;
  EXPECT_NEAR(pm.period, 64, 1);
  EXPECT_GT(pm.period_strength, 0.5);
  EXPECT_GE(pm.period_peaks, 5);
  EXPECT_GT(pm.period_excess, 0.7);
  EXPECT_TRUE(pm.persistent_keys.empty());
  EXPECT_GT(pm.topk_predictability, 0.9);
}

TEST(PatternLabels, RandomSparseSpikesAreUnpredictable) {
  std::mt19937 rng(1234);
  std::exponential_distribution<double> ex(1.0);
  ta::PatternMetrics pm;
  const auto c = label_of(make_map([&](int64_t p, std::vector<double>& w) {
                            std::uniform_int_distribution<int64_t> key(0, p);
                            for (int i = 0; i < 8; ++i) w[key(rng)] += ex(rng);
                          }),
                          &pm);
  EXPECT_EQ(c.label, PatternLabel::unpredictable) << c.reason;
  EXPECT_LT(pm.topk_predictability, 0.2);
  EXPECT_LT(pm.topk_stability, 0.1);
  EXPECT_LT(c.reaccess_signal, 0.1);
  EXPECT_LT(c.sequential_signal, 0.1);
  EXPECT_LT(c.periodic_signal, 0.1);
}

// Documented rule: two strong signals (re-access ≥ 0.3 and sequential ≥ 0.3) -> mixed.
TEST(PatternLabels, SinkPlusDiagonalIsMixed) {
  ta::PatternMetrics pm;
  const auto c = label_of(make_map([](int64_t p, std::vector<double>& w) {
                            w[0] = 0.5;
                            w[p - 1] = 0.5;
                          }),
                          &pm);
  EXPECT_EQ(c.label, PatternLabel::mixed) << c.reason;
  EXPECT_NEAR(c.reaccess_signal, 0.49, 0.002);
  EXPECT_NEAR(c.sequential_signal, 0.49, 0.002);
  EXPECT_DOUBLE_EQ(pm.topk_predictability, 1.0);  // sink by key, diagonal by offset
  // A dominant sink with a faint diagonal stays re-access.
  const auto c2 = label_of(make_map([](int64_t p, std::vector<double>& w) {
    w[0] = 0.85;
    w[p - 1] = 0.15;
  }));
  EXPECT_EQ(c2.label, PatternLabel::reaccess) << c2.reason;
}

TEST(PatternLabels, SinkPlusPeriodicIsMixed) {
  const auto c = label_of(make_map([](int64_t p, std::vector<double>& w) {
    w[0] = 1.0;
    double a = 1;
    for (int64_t d = 8; d <= p; d += 8, a *= 0.7) w[p - d] = 0.3 * a;  // ≈ 1 in total
  }));
  EXPECT_EQ(c.label, PatternLabel::mixed) << c.reason;
  EXPECT_EQ(c.period, 8);
}

TEST(PatternLabels, WideLocalWindowIsSequential) {
  ta::PatternMetrics pm;
  const auto c = label_of(make_map([](int64_t p, std::vector<double>& w) {
                            for (int64_t d = 0; d < 16; ++d) w[p - d] = 1;
                          }),
                          &pm);
  EXPECT_EQ(c.label, PatternLabel::sequential) << c.reason;
  EXPECT_NEAR(pm.local_mass, 0.98 * 5 / 16, 0.002);
  EXPECT_EQ(c.period, 0);
}

TEST(PatternLabels, WeakButStableFallsBackToLargestSignal) {
  ta::PatternMetrics m;
  m.topk_predictability = 0.8;
  m.reaccess_mass = 0.1;
  m.local_mass = 0.2;
  m.best_offset_mass = 0.05;
  const auto c = ta::classify(m);
  EXPECT_EQ(c.label, PatternLabel::sequential) << c.reason;
  m.topk_predictability = 0.3;
  EXPECT_EQ(ta::classify(m).label, PatternLabel::unpredictable);
  // A long weak-strength period is not counted even if its lattice holds mass.
  m.period = 100;
  m.period_strength = 0.1;
  m.period_excess = 0.9;
  m.period_peaks = 4;
  EXPECT_EQ(ta::classify(m).label, PatternLabel::unpredictable);
  m.period_strength = 0.6;
  EXPECT_EQ(ta::classify(m).label, PatternLabel::seasonal);
  ta::Thresholds t;
  t.max_sequential_period = 128;
  EXPECT_EQ(ta::classify(m, t).label, PatternLabel::periodic_sequential);
}

// ---- building blocks, by hand ----

TEST(PatternMetricsHand, Jaccard) {
  const std::vector<int64_t> a = {1, 2, 3}, b = {2, 3, 4}, c = {7, 8}, e = {};
  EXPECT_DOUBLE_EQ(ta::jaccard(a, b), 0.5);  // {2,3} / {1,2,3,4}
  EXPECT_DOUBLE_EQ(ta::jaccard(a, a), 1.0);
  EXPECT_DOUBLE_EQ(ta::jaccard(a, c), 0.0);
  EXPECT_DOUBLE_EQ(ta::jaccard(e, e), 1.0);
  EXPECT_DOUBLE_EQ(ta::jaccard(a, e), 0.0);
  EXPECT_DOUBLE_EQ(ta::jaccard(std::vector<int64_t>{5}, std::vector<int64_t>{1, 5, 9}), 1.0 / 3.0);
}

TEST(PatternMetricsHand, TopKeys) {
  const std::vector<float> p = {0.125f, 0.375f, 0.f, 0.375f, 0.125f};
  EXPECT_EQ(ta::top_keys(p, 3, 1.0), (std::vector<int64_t>{0, 1, 3}));  // tie 0.125: lower key first
  EXPECT_EQ(ta::top_keys(p, 5, 1.0), (std::vector<int64_t>{0, 1, 3, 4}));  // zero-mass key 2 never
  EXPECT_EQ(ta::top_keys(p, 5, 0.75), (std::vector<int64_t>{1, 3}));       // stops at 75% of the mass
  EXPECT_EQ(ta::top_keys(p, 1, 1.0), (std::vector<int64_t>{1}));
  EXPECT_TRUE(ta::top_keys(std::vector<float>{0.f, 0.f}, 4, 1.0).empty());
}

TEST(PatternMetricsHand, DominantPeriod) {
  std::vector<double> s(120, 0.0);
  for (size_t i = 0; i < s.size(); i += 5) s[i] = 1.0;
  ta::PeriodEstimate e = ta::dominant_period(s, 2);
  EXPECT_EQ(e.period, 5);
  EXPECT_GT(e.strength, 0.8);
  std::vector<double> ramp(100);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = 100.0 - i;  // smooth, no period
  e = ta::dominant_period(ramp, 2);
  EXPECT_EQ(e.period, 0);
  EXPECT_EQ(ta::dominant_period(std::vector<double>(50, 0.3), 2).period, 0);  // flat
  std::vector<double> single(100, 0.0);
  single[10] = 1.0;  // one spike: no repetition
  EXPECT_EQ(ta::dominant_period(single, 2).period, 0);
}

// Three rows, k = 2, coverage 1, local band 1, one sink key; every number below is worked out in
// the comments.
TEST(PatternMetricsHand, TinyMap) {
  std::vector<float> r5(6, 0.f), r6(7, 0.f), r7(8, 0.f);
  r5[0] = 0.5f, r5[4] = 0.3f, r5[2] = 0.2f;  // top-2 {0, 4}; offsets {5, 1}
  r6[0] = 0.5f, r6[5] = 0.3f, r6[3] = 0.2f;  // top-2 {0, 5}; offsets {6, 1}
  r7[0] = 0.6f, r7[6] = 0.2f, r7[2] = 0.2f;  // top-2 {0, 2} (0.2 tie: key 2 < 6); offsets {7, 5}
  const std::vector<ta::AttentionRow> rows = {{5, r5}, {6, r6}, {7, r7}};
  ta::PatternParams prm;
  prm.top_k = 2;
  prm.topk_coverage = 1.0;
  prm.local_band = 1;
  prm.n_sink = 1;
  const ta::PatternMetrics m = ta::measure_patterns(rows, prm);
  EXPECT_NEAR(m.topk_stability, (1.0 / 3 + 1.0 / 3) / 2, 1e-12);  // {0,4}/{0,5}: 1/3; {0,5}/{0,2}: 1/3
  EXPECT_NEAR(m.topk_shift_stability, (1.0 / 3 + 0.0) / 2, 1e-12);  // {1,5}/{1,6}: 1/3; {1,6}/{5,7}: 0
  EXPECT_NEAR(m.topk_predictability, (1.0 + 0.5) / 2, 1e-12);  // key 5 = offset 1 seen; key 2 unseen
  EXPECT_EQ(m.persistent_keys, std::vector<int64_t>{0});       // keys 4, 5 are in the band (δ = 1)
  EXPECT_NEAR(m.sink_mass, (0.5 + 0.5 + 0.6) / 3, 1e-7);
  EXPECT_NEAR(m.sink4_mass, m.sink_mass, 1e-12);
  EXPECT_NEAR(m.reaccess_mass, m.sink_mass, 1e-7);
  EXPECT_NEAR(m.local_mass, (0.3 + 0.3 + 0.2) / 3, 1e-7);
  EXPECT_EQ(m.max_offset, 5);
  ASSERT_EQ(m.offset_profile.size(), 6u);
  const double want[6] = {0, 0.8 / 3, 0, 0.4 / 3, 0, 0.2 / 3};  // key 0 (sink) excluded at δ = 5
  for (int d = 0; d < 6; ++d) EXPECT_NEAR(m.offset_profile[d], want[d], 1e-7) << "delta " << d;
  EXPECT_EQ(m.best_offset, 1);
  EXPECT_EQ(m.period, 0);  // 4 offsets: too short for a period
  const ta::Classification c = ta::classify(m);
  EXPECT_EQ(c.label, PatternLabel::reaccess) << c.reason;  // 0.53 re-access, 0.27 sequential
}

TEST(PatternMetricsHand, InputErrors) {
  std::vector<float> a(4, 0.25f), b(5, 0.2f), bad(5, 0.2f);
  bad[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(ta::measure_patterns(std::vector<ta::AttentionRow>{{3, a}}), tappa::Error);          // R < 2
  EXPECT_THROW(ta::measure_patterns(std::vector<ta::AttentionRow>{{3, a}, {5, b}}), tappa::Error);  // 5 keys at p=5
  EXPECT_THROW(ta::measure_patterns(std::vector<ta::AttentionRow>{{4, b}, {3, a}}), tappa::Error);  // order
  EXPECT_THROW(ta::measure_patterns(std::vector<ta::AttentionRow>{{3, a}, {4, bad}}), tappa::Error);  // NaN
  EXPECT_NO_THROW(ta::measure_patterns(std::vector<ta::AttentionRow>{{3, a}, {4, b}}));
}
