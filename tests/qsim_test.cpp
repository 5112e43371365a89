// q-similarity against the independent numpy reference (tests/qsim_reference.py), plus the fast
// cosine path, lags, windows and mode parsing.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "analysis/qsim.h"
#include "tappa/error.h"
#include "test_util.h"

namespace ta = tappa::analysis;
using nlohmann::json;

namespace {

// Agreement with the reference: 1e-6 relative, with an absolute floor of 1e-9 for values near 0.
// Both sides start from the same fp32 inputs and accumulate in double (numpy in float64), so they
// normally agree to ~1e-13; they differ only in summation order, in the cosine identity
// (‖Σq̂‖² − trace instead of the matrix sum, which cancels when the mean is ~0) and in libm's
// exp/log/acos (measured: ≤ 1e-11 relative everywhere except pairs of identical rows in angular
// mode, where acos(1 − ε) ≈ √(2ε) turns a 1e-16 rounding of the cosine into ~1e-10). 1e-6 relative is still far below what fp32 inputs can resolve (~6e-8 per value,
// accumulated over D products), so anything passing it is "the same number" for every purpose,
// while a formula slip (a missing /D, the wrong eps, an off-by-one in the pair count) fails by
// orders of magnitude. The floor covers entries that are exactly 0 in exact arithmetic (T ≤ 1,
// underflowed rbf kernels, means of ±cosines) where a relative test is meaningless.
bool close(double got, double want) { return std::fabs(got - want) <= std::max(1e-6 * std::fabs(want), 1e-9); }

#define EXPECT_CLOSE(got, want, what) \
  EXPECT_TRUE(close((got), (want))) << what << ": got " << (got) << " want " << (want)

json load_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

// Checks every case of a vector file; returns the number of values compared.
int check_vectors(const json& doc) {
  int n = 0;
  for (const json& c : doc.at("cases")) {
    const std::string name = c.at("name");
    const int T = c.at("n_rows"), H = c.at("n_heads"), D = c.at("head_dim");
    const std::vector<float> data = c.at("data").get<std::vector<float>>();
    EXPECT_EQ(data.size(), static_cast<size_t>(T) * H * D) << name;
    for (const json& r : c.at("results")) {
      ta::QsimOptions opt;
      opt.mode = ta::parse_mode(r.at("mode").get<std::string>());
      opt.rbf_sigma = r.at("rbf_sigma");
      opt.pearson_official_scaling = r.at("pearson_official_scaling");
      const std::string what = name + "/" + std::string(ta::mode_name(opt.mode)) +
                               (opt.pearson_official_scaling ? "/official" : "") + "/sigma=" +
                               std::to_string(opt.rbf_sigma);
      const auto want = r.at("per_head").get<std::vector<double>>();
      for (bool fast : {true, false}) {
        opt.cosine_fast_path = fast;
        const ta::LayerQsim got = ta::qsim_layer(data.data(), T, H, D, opt);
        EXPECT_EQ(got.per_head.size(), want.size()) << what;
        if (got.per_head.size() != want.size()) return n;
        for (size_t h = 0; h < want.size(); ++h) EXPECT_CLOSE(got.per_head[h], want[h], what << " head " << h);
        EXPECT_CLOSE(got.mean, r.at("mean").get<double>(), what << " mean");
        n += static_cast<int>(want.size()) + 1;
      }
      const ta::LayerQsim lag1 = ta::qsim_lag_layer(data.data(), T, H, D, 1, opt);
      const auto want1 = r.at("lag1_per_head").get<std::vector<double>>();
      for (size_t h = 0; h < want1.size(); ++h) EXPECT_CLOSE(lag1.per_head[h], want1[h], what << " lag1 head " << h);
      EXPECT_CLOSE(lag1.mean, r.at("lag1_mean").get<double>(), what << " lag1 mean");
      const auto want3 = r.at("lag3_per_head").get<std::vector<double>>();
      for (int h = 0; h < H; ++h)
        EXPECT_CLOSE(ta::qsim_lag_head(ta::head_rows(data.data(), T, H, D, h), 3, opt), want3[h],
                     what << " lag3 head " << h);
      n += 2 * H + 1;
    }
    for (const json& w : c.at("windows")) {
      ta::WindowSpec spec{w.at("window").get<int>(), w.at("stride").get<int>(), w.at("keep_partial").get<bool>()};
      ta::QsimOptions opt;
      opt.mode = ta::parse_mode(w.at("mode").get<std::string>());
      const auto got = ta::qsim_windows_layer(data.data(), T, H, D, spec, opt);
      const json& vals = w.at("values");
      EXPECT_EQ(got.size(), vals.size()) << name << " windows " << spec.window << "/" << spec.stride;
      if (got.size() != vals.size()) return n;
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].start, vals[i][0].get<int>());
        EXPECT_EQ(got[i].length, vals[i][1].get<int>());
        EXPECT_CLOSE(got[i].value, vals[i][2].get<double>(), name << " window " << i);
        ++n;
      }
    }
  }
  return n;
}

std::vector<float> random_buf(int T, int H, int D, uint32_t seed, float offset = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(T) * H * D);
  for (size_t i = 0; i < v.size(); ++i) v[i] = nd(rng) + offset * static_cast<float>(i % D == 0);
  return v;
}

}  // namespace

TEST(QsimReference, CommittedVectors) {
  const std::string path = tappa::test::source_dir() + "/tests/data/qsim/vectors.json";
  ASSERT_TRUE(tappa::test::exists(path)) << path << " missing (regenerate: python3 tests/qsim_reference.py " << path << ")";
  const int n = check_vectors(load_json(path));
  EXPECT_GT(n, 500);
}

// Vectors freshly written by the reference script into the build tree (by a test fixture or by
// hand: python3 tests/qsim_reference.py <build>/qsim_vectors.json).
TEST(QsimReference, FreshVectors) {
  const std::string path = tappa::test::binary_dir() + "/qsim_vectors.json";
  if (!tappa::test::exists(path))
    GTEST_SKIP() << path << " not found: run python3 tests/qsim_reference.py " << path
                 << " (the committed copy is checked by QsimReference.CommittedVectors)";
  EXPECT_GT(check_vectors(load_json(path)), 500);
}

TEST(QsimFastPath, MatchesPairwiseOnLongWindow) {
  // 1024 queries of a clustered head (a shared component -> cosine well above 0) and a plain one.
  for (float offset : {0.f, 4.f}) {
    const int T = 1024, H = 1, D = 64;
    const std::vector<float> buf = random_buf(T, H, D, 7, offset);
    const ta::HeadRows rows = ta::head_rows(buf.data(), T, H, D, 0);
    ta::QsimOptions fast, slow;
    slow.cosine_fast_path = false;
    const double a = ta::qsim_head(rows, fast), b = ta::qsim_head(rows, slow);
    EXPECT_NEAR(a, b, 1e-12) << "offset " << offset;
  }
}

TEST(QsimFastPath, ZeroRowsUseTheTraceNotT) {
  // Two unit vectors and one zero vector: pairs (a,b) = 1, others 0 -> mean over 6 ordered pairs = 2/6.
  const std::vector<float> buf = {1, 0, 0, 0, 1, 0};  // rows: (1,0), (0,0), (1,0)
  const ta::HeadRows rows{buf.data(), 3, 2, 2};
  ta::QsimOptions fast, slow;
  slow.cosine_fast_path = false;
  EXPECT_NEAR(ta::qsim_head(rows, fast), 1.0 / 3.0, 1e-15);
  EXPECT_NEAR(ta::qsim_head(rows, slow), 1.0 / 3.0, 1e-15);
}

TEST(QsimHand, SmallExamples) {
  // Rows (1,0), (0,1), (1,0): ordered pairs cos = {0,1,0,0,1,0}... mean = 2/6.
  const std::vector<float> buf = {1, 0, 0, 1, 1, 0};
  const ta::HeadRows rows{buf.data(), 3, 2, 2};
  EXPECT_NEAR(ta::qsim_head(rows), 1.0 / 3.0, 1e-15);
  EXPECT_NEAR(ta::qsim_lag_head(rows, 1), 0.0, 1e-15);  // consecutive pairs are orthogonal
  EXPECT_NEAR(ta::qsim_lag_head(rows, 2), 1.0, 1e-15);  // rows 0 and 2 are equal
  ta::QsimOptions o;
  o.mode = ta::QsimMode::euclidean;  // distances sqrt2, 0, sqrt2 -> mean (2 sqrt2)/3
  EXPECT_NEAR(ta::qsim_head(rows, o), 2.0 * std::sqrt(2.0) / 3.0, 1e-15);
  o.mode = ta::QsimMode::l1;  // 2, 0, 2
  EXPECT_NEAR(ta::qsim_head(rows, o), 4.0 / 3.0, 1e-15);
  o.mode = ta::QsimMode::angular;  // 1/2, 0, 1/2
  EXPECT_NEAR(ta::qsim_head(rows, o), 1.0 / 3.0, 1e-15);
  o.mode = ta::QsimMode::dot;
  EXPECT_NEAR(ta::qsim_head(rows, o), 1.0 / 3.0, 1e-15);
  o.mode = ta::QsimMode::rbf;  // exp(-2/2) twice, exp(0) once
  EXPECT_NEAR(ta::qsim_head(rows, o), (2.0 * std::exp(-1.0) + 1.0) / 3.0, 1e-15);
  o.mode = ta::QsimMode::pearson;  // centred: (.5,-.5), (-.5,.5), (.5,-.5) -> r = -1, 1, -1
  EXPECT_NEAR(ta::qsim_head(rows, o), -1.0 / 3.0, 1e-15);
  o.pearson_official_scaling = true;  // ... divided by D = 2
  EXPECT_NEAR(ta::qsim_head(rows, o), -1.0 / 6.0, 1e-15);
}

TEST(QsimHand, TrivialWindowsAreZero) {
  const std::vector<float> buf = {3, 4, 5};
  for (ta::QsimMode m : ta::kAllQsimModes) {
    ta::QsimOptions o;
    o.mode = m;
    EXPECT_EQ(ta::qsim_head(ta::HeadRows{buf.data(), 1, 3, 3}, o), 0.0) << ta::mode_name(m);
    EXPECT_EQ(ta::qsim_head(ta::HeadRows{buf.data(), 0, 3, 3}, o), 0.0) << ta::mode_name(m);
    EXPECT_EQ(ta::qsim_lag_head(ta::HeadRows{buf.data(), 1, 3, 3}, 1, o), 0.0) << ta::mode_name(m);
  }
}

TEST(QsimHand, IdenticalRows) {
  std::vector<float> buf;
  for (int t = 0; t < 5; ++t) buf.insert(buf.end(), {0.5f, -1.f, 2.f, 0.25f});
  const ta::HeadRows rows{buf.data(), 5, 4, 4};
  ta::QsimOptions o;
  EXPECT_NEAR(ta::qsim_head(rows, o), 1.0, 1e-12);
  o.mode = ta::QsimMode::euclidean;
  EXPECT_EQ(ta::qsim_head(rows, o), 0.0);
  o.mode = ta::QsimMode::kl;
  EXPECT_EQ(ta::qsim_head(rows, o), 0.0);
  o.mode = ta::QsimMode::rbf;
  EXPECT_EQ(ta::qsim_head(rows, o), 1.0);
}

TEST(QsimLayer, HeadStrideAndMean) {
  // [T=3][H=2][D=2]: head 0 = rows of QsimHand.SmallExamples (1/3), head 1 = identical rows (1).
  const std::vector<float> buf = {1, 0, 2, 2, 0, 1, 3, 3, 1, 0, 1, 1};
  const ta::LayerQsim q = ta::qsim_layer(buf.data(), 3, 2, 2);
  ASSERT_EQ(q.per_head.size(), 2u);
  EXPECT_NEAR(q.per_head[0], 1.0 / 3.0, 1e-15);
  EXPECT_NEAR(q.per_head[1], 1.0, 1e-15);
  EXPECT_NEAR(q.mean, 2.0 / 3.0, 1e-15);
  const ta::LayerQsim l = ta::qsim_lag_layer(buf.data(), 3, 2, 2, 1);
  EXPECT_NEAR(l.per_head[0], 0.0, 1e-15);
  EXPECT_NEAR(l.mean, 0.5, 1e-15);
}

TEST(QsimWindows, FullAndPartial) {
  const int T = 10, H = 3, D = 8;
  const std::vector<float> buf = random_buf(T, H, D, 11);
  ta::WindowSpec full{4, 3, false};
  const auto w = ta::qsim_windows_layer(buf.data(), T, H, D, full);
  ASSERT_EQ(w.size(), 3u);  // starts 0, 3, 6 (6 + 4 = 10)
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(w[i].start, 3 * static_cast<int>(i));
    EXPECT_EQ(w[i].length, 4);
    const ta::LayerQsim ref = ta::qsim_layer(buf.data() + static_cast<size_t>(w[i].start) * H * D, 4, H, D);
    EXPECT_NEAR(w[i].value, ref.mean, 1e-15);
  }
  ta::WindowSpec partial{4, 3, true};
  const auto p = ta::qsim_windows_layer(buf.data(), T, H, D, partial);
  ASSERT_EQ(p.size(), 4u);  // + start 9, length 1 -> 0 (the official code would divide by zero)
  EXPECT_EQ(p[3].start, 9);
  EXPECT_EQ(p[3].length, 1);
  EXPECT_EQ(p[3].value, 0.0);
  EXPECT_NEAR(ta::mean_over_windows(p), (p[0].value + p[1].value + p[2].value) / 4.0, 1e-15);

  // One head: the same numbers as the per-head function on slices.
  const ta::HeadRows h1 = ta::head_rows(buf.data(), T, H, D, 1);
  const auto wh = ta::qsim_windows_head(h1, ta::WindowSpec{5, 5, false});
  ASSERT_EQ(wh.size(), 2u);
  EXPECT_NEAR(wh[1].value, ta::qsim_head(h1.slice(5, 5)), 1e-15);

  EXPECT_TRUE(ta::qsim_windows_layer(buf.data(), T, H, D, ta::WindowSpec{11, 1, false}).empty());
  EXPECT_THROW(ta::qsim_windows_layer(buf.data(), T, H, D, ta::WindowSpec{0, 1, false}), tappa::Error);
  EXPECT_THROW(ta::qsim_windows_layer(buf.data(), T, H, D, ta::WindowSpec{4, 0, false}), tappa::Error);
  EXPECT_EQ(ta::mean_over_windows({}), 0.0);
}

TEST(QsimModes, ParseAndPrint) {
  for (ta::QsimMode m : ta::kAllQsimModes) EXPECT_EQ(ta::parse_mode(ta::mode_name(m)), m);
  EXPECT_EQ(ta::parse_mode("cosine"), ta::QsimMode::cosine);
  EXPECT_EQ(ta::parse_mode("kl"), ta::QsimMode::kl);
  try {
    ta::parse_mode("cos");
    FAIL() << "no throw";
  } catch (const tappa::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'cos'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cosine"), std::string::npos) << msg;
    EXPECT_NE(msg.find("angular"), std::string::npos) << msg;
  }
  EXPECT_THROW(ta::parse_mode("Cosine"), tappa::Error);
  EXPECT_THROW(ta::parse_mode(""), tappa::Error);
  EXPECT_TRUE(ta::is_similarity(ta::QsimMode::cosine));
  EXPECT_TRUE(ta::is_similarity(ta::QsimMode::dot));
  EXPECT_TRUE(ta::is_similarity(ta::QsimMode::rbf));
  EXPECT_TRUE(ta::is_similarity(ta::QsimMode::pearson));
  EXPECT_FALSE(ta::is_similarity(ta::QsimMode::euclidean));
  EXPECT_FALSE(ta::is_similarity(ta::QsimMode::l1));
  EXPECT_FALSE(ta::is_similarity(ta::QsimMode::angular));
  EXPECT_FALSE(ta::is_similarity(ta::QsimMode::kl));
}

TEST(QsimShape, ErrorsAndGqa) {
  const std::vector<float> buf(24, 1.f);
  EXPECT_THROW(ta::head_rows(buf.data(), 3, 2, 4, 2), tappa::Error);
  EXPECT_THROW(ta::head_rows(buf.data(), 3, 2, 0, 0), tappa::Error);
  EXPECT_THROW(ta::qsim_lag_head(ta::head_rows(buf.data(), 3, 2, 4, 0), 0), tappa::Error);
  const ta::HeadRows r = ta::head_rows(buf.data(), 3, 2, 4, 1);
  EXPECT_EQ(r.data, buf.data() + 4);
  EXPECT_EQ(r.stride, 8);
  EXPECT_EQ(r.row(2), buf.data() + 20);
  EXPECT_EQ(ta::kv_head_of(0, 32, 8), 0);
  EXPECT_EQ(ta::kv_head_of(3, 32, 8), 0);
  EXPECT_EQ(ta::kv_head_of(4, 32, 8), 1);
  EXPECT_EQ(ta::kv_head_of(31, 32, 8), 7);
  EXPECT_EQ(ta::kv_head_of(5, 9, 9), 5);
  EXPECT_THROW(ta::kv_head_of(0, 10, 4), tappa::Error);
  EXPECT_THROW(ta::kv_head_of(10, 10, 5), tappa::Error);
}
