// KV-compression scorers (src/kv/scorers.h) against the independent numpy reference
// (tests/kv_reference.py → tests/data/kv/vectors.json), a naive in-test window attention, and
// hand-derived values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kv/scorers.h"
#include "tappa/error.h"
#include "test_util.h"

namespace kv = tappa::kv;
using nlohmann::json;

namespace {

const json& vectors() {
  static const json doc = [] {
    std::ifstream f(tappa::test::source_dir() + "/tests/data/kv/vectors.json");
    if (!f) throw std::runtime_error("tests/data/kv/vectors.json not found");
    return json::parse(f);
  }();
  return doc;
}

std::vector<float> floats(const json& j) { return j.get<std::vector<float>>(); }
std::vector<double> doubles(const json& j) { return j.get<std::vector<double>>(); }

// fp32 arithmetic against a float64 reference: relative 1e-4 with an absolute floor. Attention
// probabilities carry ~1e-7 relative error; the scorers sum ≤ a few dozen of them, and CAKE's
// γ·Var (γ = 200) magnifies absolute errors ~200×, still far below 1e-4 of the values it ranks.
bool close(double got, double want, double rel = 1e-4, double abs = 1e-6) {
  return std::fabs(got - want) <= std::max(rel * std::fabs(want), abs);
}

void expect_all_close(std::span<const float> got, const std::vector<double>& want, const std::string& what,
                      double rel = 1e-4, double abs = 1e-6) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!close(got[i], want[i], rel, abs) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i];
}

// Naive window attention in double straight from the definition (mask: corner M).
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k, int H, int H_kv, int R,
                                    int N, int d, int M) {
  std::vector<double> out(static_cast<size_t>(H) * R * N);
  const int G = H / H_kv;
  for (int h = 0; h < H; ++h)
    for (int a = 0; a < R; ++a) {
      std::vector<double> l(N);
      double mx = -1e300;
      for (int j = 0; j < N; ++j) {
        bool masked = a >= R - M && j >= N - M && (j - (N - M)) > (a - (R - M));
        if (masked) {
          l[j] = -INFINITY;
          continue;
        }
        double s = 0;
        for (int i = 0; i < d; ++i)
          s += static_cast<double>(q[(static_cast<size_t>(h) * R + a) * d + i]) *
               k[(static_cast<size_t>(h / G) * N + j) * d + i];
        l[j] = s / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, l[j]);
      }
      double z = 0;
      for (int j = 0; j < N; ++j) z += std::isinf(l[j]) ? 0.0 : std::exp(l[j] - mx);
      for (int j = 0; j < N; ++j)
        out[(static_cast<size_t>(h) * R + a) * N + j] = std::isinf(l[j]) ? 0.0 : std::exp(l[j] - mx) / z;
    }
  return out;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST(KvScorers, WindowAttentionMatchesReference) {
  for (const json& c : vectors()["cases"]["attention"]) {
    const int H = c["H"], H_kv = c["H_kv"], d = c["d"], N = c["N"], W = c["W"];
    const auto q = floats(c["q"]), k = floats(c["k"]);
    std::vector<float> A(static_cast<size_t>(H) * W * N);
    kv::window_attention(kv::HeadsView::head_major(q.data(), H, W, d), kv::HeadsView::head_major(k.data(), H_kv, N, d), A);
    expect_all_close(A, doubles(c["attention"]), "attention N=" + std::to_string(N), 1e-5, 1e-7);
  }
}

TEST(KvScorers, WindowAttentionMatchesNaiveInAllLayouts) {
  const int H = 8, H_kv = 2, d = 32, N = 70, R = 16;
  const auto q = random_floats(static_cast<size_t>(H) * R * d, 1, 0.8f);  // head-major [H][R][d]
  const auto k = random_floats(static_cast<size_t>(H_kv) * N * d, 2, 0.8f);
  for (int M : {-1, 5, 0}) {
    const auto want = naive_attention(q, k, H, H_kv, R, N, d, M < 0 ? R : M);
    std::vector<float> A(static_cast<size_t>(H) * R * N);
    kv::window_attention(kv::HeadsView::head_major(q.data(), H, R, d), kv::HeadsView::head_major(k.data(), H_kv, N, d),
                         A, M);
    expect_all_close(A, want, "head-major M=" + std::to_string(M), 1e-5, 1e-7);

    // Token-major queries (observer layout, with extra leading rows) and per-head key pointers.
    const int T = R + 3;
    std::vector<float> qt(static_cast<size_t>(T) * H * d, 99.0f);
    for (int h = 0; h < H; ++h)
      for (int a = 0; a < R; ++a)
        for (int i = 0; i < d; ++i)
          qt[(static_cast<size_t>(3 + a) * H + h) * d + i] = q[(static_cast<size_t>(h) * R + a) * d + i];
    std::vector<const float*> kp(H_kv);
    for (int h = 0; h < H_kv; ++h) kp[h] = k.data() + static_cast<size_t>(h) * N * d;
    const auto qv = kv::HeadsView::token_major(qt.data(), T, H, d).last_rows(R);
    const auto kvw = kv::HeadsView::per_head(kp.data(), H_kv, N, d);
    std::vector<float> B(A.size());
    kv::window_attention(qv, kvw, B, M);
    for (size_t i = 0; i < A.size(); ++i) ASSERT_EQ(A[i], B[i]) << i;

    // One group at a time gives the same rows.
    const int G = H / H_kv;
    std::vector<float> g(static_cast<size_t>(G) * R * N);
    for (int kvh = 0; kvh < H_kv; ++kvh) {
      kv::window_attention_group(qv, kvw, kvh, g, M);
      for (size_t i = 0; i < g.size(); ++i) ASSERT_EQ(g[i], A[static_cast<size_t>(kvh) * G * R * N + i]);
    }
  }
}

TEST(KvScorers, WindowAttentionRejectsBadShapes) {
  std::vector<float> q(2 * 4 * 8), k(3 * 10 * 8), out(2 * 4 * 10);
  EXPECT_THROW(kv::window_attention(kv::HeadsView::head_major(q.data(), 2, 4, 8), kv::HeadsView::head_major(k.data(), 3, 10, 8), out),
               tappa::Error);  // 2 % 3
  std::vector<float> k2(1 * 10 * 8), small(5);
  EXPECT_THROW(kv::window_attention(kv::HeadsView::head_major(q.data(), 2, 4, 8), kv::HeadsView::head_major(k2.data(), 1, 10, 8), small),
               tappa::Error);
  EXPECT_THROW(kv::window_attention(kv::HeadsView::head_major(q.data(), 2, 4, 8), kv::HeadsView::head_major(k2.data(), 1, 10, 8), out, 5),
               tappa::Error);  // corner > rows
}

TEST(KvScorers, PoolingByHand) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  std::vector<float> y(6);
  kv::pool1d(x.data(), 6, {kv::Pooling::avg, 5}, y.data());
  // Zero padding counted: (0+0+1+2+3)/5, (0+1+2+3+4)/5, 3, 4, (3+4+5+6+0)/5, (4+5+6+0+0)/5
  const std::vector<double> want_avg = {1.2, 2.0, 3.0, 4.0, 3.6, 3.0};
  expect_all_close(y, want_avg, "avg5", 1e-7, 1e-7);
  const std::vector<float> z = {5, 1, 0, 0, 0, 0, 0, 0, 0, 7};
  std::vector<float> m(10);
  kv::pool1d(z.data(), 10, {kv::Pooling::max, 7}, m.data());
  const std::vector<double> want_max = {5, 5, 5, 5, 1, 0, 7, 7, 7, 7};
  expect_all_close(m, want_max, "max7", 0, 0);
  EXPECT_THROW(kv::pool1d(x.data(), 6, {kv::Pooling::avg, 4}, y.data()), tappa::Error);
}

TEST(KvScorers, SnapKvAndCakeScoresMatchReference) {
  for (const json& c : vectors()["cases"]["attention"]) {
    const int H = c["H"], H_kv = c["H_kv"], N = c["N"], W = c["W"], P = c["P"];
    const auto A = floats(c["attention"]);  // the reference attention, so only the scorer is tested
    const kv::AttentionView a{A.data(), H, W, N};
    std::vector<float> s(static_cast<size_t>(H_kv) * P);
    const std::string tag = " N=" + std::to_string(N);
    kv::snapkv_scores(a, H_kv, P, {kv::Pooling::avg, 5}, s);
    expect_all_close(s, doubles(c["snapkv_avg5_sum"]), "snapkv avg5" + tag);
    kv::snapkv_scores(a, H_kv, P, {kv::Pooling::max, 7}, s);
    expect_all_close(s, doubles(c["snapkv_max7_sum"]), "snapkv max7" + tag);
    kv::snapkv_scores(a, H_kv, P, {kv::Pooling::avg, 5}, s, /*mean_rows=*/true);
    expect_all_close(s, doubles(c["snapkv_avg5_mean"]), "snapkv mean" + tag);
    kv::snapkv_scores(a, H_kv, P, {kv::Pooling::none, 1}, s);
    expect_all_close(s, doubles(c["snapkv_none_sum"]), "snapkv none" + tag);
    kv::cake_scores(a, H_kv, P, 200.0, {kv::Pooling::avg, 5}, s);
    expect_all_close(s, doubles(c["cake_g200_avg5"]), "cake" + tag);
    kv::cake_scores(a, H_kv, P, 0.0, {kv::Pooling::none, 1}, s);
    expect_all_close(s, doubles(c["cake_g0_none"]), "cake mean only" + tag);

    // One KV-head group at a time gives the same rows.
    const int G = H / H_kv;
    std::vector<float> one(P);
    for (int kvh = 0; kvh < H_kv; ++kvh) {
      const kv::AttentionView ga{A.data() + static_cast<size_t>(kvh) * G * W * N, G, W, N};
      kv::cake_scores(ga, 1, P, 200.0, {kv::Pooling::avg, 5}, one);
      kv::cake_scores(a, H_kv, P, 200.0, {kv::Pooling::avg, 5}, s);
      for (int j = 0; j < P; ++j) EXPECT_EQ(one[j], s[static_cast<size_t>(kvh) * P + j]);
    }
  }
}

TEST(KvScorers, CakeTokenScoreByHand) {
  // One head, 3 window rows, 2 prefix keys + 1 window key, no pooling, γ = 2:
  // key 0 gets (0.2, 0.4, 0.6): mean 0.4, unbiased var 0.04 → 0.48; key 1 gets (0.5, 0.5, 0.5) → 0.5.
  const std::vector<float> A = {0.2f, 0.5f, 0.3f, 0.4f, 0.5f, 0.1f, 0.6f, 0.5f, -0.1f};
  std::vector<float> s(2);
  kv::cake_scores(kv::AttentionView{A.data(), 1, 3, 3}, 1, 2, 2.0, {kv::Pooling::none, 1}, s);
  EXPECT_NEAR(s[0], 0.48, 1e-6);
  EXPECT_NEAR(s[1], 0.5, 1e-6);
}

TEST(KvScorers, H2oMatchesReferenceMaterialisedAndStreaming) {
  for (const json& c : vectors()["cases"]["h2o"]) {
    const int H = c["H"], H_kv = c["H_kv"], d = c["d"], N = c["N"], R = c["R"], W = c["W"];
    const int P = N - W;
    const auto q = floats(c["q"]), k = floats(c["k"]);
    const auto qv = kv::HeadsView::head_major(q.data(), H, R, d);
    const auto kvw = kv::HeadsView::head_major(k.data(), H_kv, N, d);
    for (bool quirk : {true, false}) {
      const std::string tag = std::string(quirk ? "quirk" : "causal") + " N=" + std::to_string(N);
      const int M = quirk ? W : -1;
      std::vector<float> A(static_cast<size_t>(H) * R * N);
      kv::window_attention(qv, kvw, A, M);
      expect_all_close(A, doubles(c[quirk ? "attention_quirk" : "attention_causal"]), "h2o attention " + tag, 1e-5, 1e-7);
      std::vector<float> s(static_cast<size_t>(H_kv) * P), t(s.size());
      kv::h2o_scores(kv::AttentionView{A.data(), H, R, N}, H_kv, P, s);
      expect_all_close(s, doubles(c[quirk ? "h2o_quirk" : "h2o_causal"]), "h2o " + tag);
      kv::h2o_scores_streaming(qv, kvw, P, t, M);
      expect_all_close(t, doubles(c[quirk ? "h2o_quirk" : "h2o_causal"]), "h2o streaming " + tag);
    }
  }
}

TEST(KvScorers, H2oFromAccumulatedIsGroupMean) {
  // 4 query heads, 2 KV heads, 3 prefix keys; stride 5 (2 trailing keys not scored).
  const std::vector<float> acc = {1, 2, 3, 9, 9, 3, 2, 1, 9, 9, 0, 0, 4, 9, 9, 2, 2, 0, 9, 9};
  std::vector<float> s(6);
  kv::h2o_scores_from_accumulated(acc.data(), 4, 2, 5, 3, s);
  const std::vector<double> want = {2, 2, 2, 1, 1, 2};
  expect_all_close(s, want, "h2o acc", 0, 1e-7);
}

TEST(KvScorers, StreamingLlmKeepsSinksThenRecent) {
  std::vector<float> s(2 * 10);
  kv::streamingllm_scores(2, 10, 4, s);
  // Top 6 of each head: sinks 0..3, then the two most recent prefix tokens 8, 9.
  for (int kvh = 0; kvh < 2; ++kvh) {
    std::vector<int> idx(10);
    for (int j = 0; j < 10; ++j) idx[j] = j;
    std::sort(idx.begin(), idx.end(), [&](int a, int b) { return s[kvh * 10 + a] > s[kvh * 10 + b]; });
    std::vector<int> top(idx.begin(), idx.begin() + 6);
    std::sort(top.begin(), top.end());
    EXPECT_EQ(top, (std::vector<int>{0, 1, 2, 3, 8, 9}));
  }
  kv::streamingllm_scores(2, 10, 4, s, /*keep_first=*/true);
  for (int j = 0; j + 1 < 10; ++j) EXPECT_GT(s[j], s[j + 1]);  // first tokens first
}

TEST(KvScorers, KnormMatchesReference) {
  const json& c = vectors()["cases"]["knorm"];
  const auto k = floats(c["k"]);
  const int H_kv = c["H_kv"], N = c["N"], d = c["d"], P = c["P"];
  std::vector<float> s(static_cast<size_t>(H_kv) * P);
  kv::knorm_scores(kv::HeadsView::head_major(k.data(), H_kv, N, d), P, s);
  expect_all_close(s, doubles(c["scores"]), "knorm", 1e-6, 1e-7);
}

TEST(KvScorers, RandomIsSeededAndOrderIndependent) {
  std::vector<float> a(3 * 50), b(3 * 50), c(3 * 50), one(50);
  kv::random_scores(7, 2, 3, 50, a);
  kv::random_scores(7, 2, 3, 50, b);
  kv::random_scores(8, 2, 3, 50, c);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (float v : a) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LT(v, 1.0f);
  }
  // Another layer differs; a KV head's scores do not depend on how many heads are asked for.
  kv::random_scores(7, 3, 3, 50, c);
  EXPECT_NE(a, c);
  std::vector<float> two(2 * 50);
  kv::random_scores(7, 2, 2, 50, two);
  EXPECT_TRUE(std::equal(two.begin(), two.end(), a.begin()));
}

TEST(KvScorers, ExpectedAttentionMatchesKvpressReference) {
  for (const json& c : vectors()["cases"]["expected_attention"]) {
    const int H = c["H"], H_kv = c["H_kv"], d = c["d"], N = c["N"], P = c["P"];
    const auto q_pre = floats(c["q_pre"]), q_post = floats(c["q_post"]);
    const auto keys = floats(c["keys"]), values = floats(c["values"]);
    const auto inv_freq = floats(c["inv_freq"]);
    kv::RopeSpec rope{inv_freq, c["n_rot"].get<int>(), c["neox"].get<bool>()};
    kv::ExpectedAttentionOptions opt;
    opt.n_future = c["n_future"];
    opt.n_sink = c["n_sink"];
    opt.epsilon = c["epsilon"];
    opt.use_covariance = c["use_covariance"];
    const auto kvw = kv::HeadsView::head_major(keys.data(), H_kv, N, d);
    const auto vv = kv::HeadsView::head_major(values.data(), H_kv, N, d);
    const std::string tag = std::string(rope.neox ? "neox" : "norm") + " n_rot=" + std::to_string(rope.n_rot);
    std::vector<float> s(static_cast<size_t>(H_kv) * P);
    kv::expected_attention_scores(kv::HeadsView::head_major(q_pre.data(), H, N, d), kvw, vv, rope, P, opt, s);
    expect_all_close(s, doubles(c["scores"]), "EA pre-RoPE " + tag, 2e-4, 1e-6);
    // Post-RoPE rows are de-rotated exactly (up to fp32 rounding of the rotated inputs).
    opt.queries_post_rope = true;
    kv::expected_attention_scores(kv::HeadsView::head_major(q_post.data(), H, N, d), kvw, vv, rope, P, opt, s);
    expect_all_close(s, doubles(c["scores"]), "EA post-RoPE " + tag, 1e-3, 1e-5);
  }
}

TEST(KvScorers, ExpectedAttentionSinksScoreMax) {
  const int H = 2, H_kv = 1, d = 4, N = 10, P = 8;
  const auto q = random_floats(H * N * d, 5), k = random_floats(N * d, 6), v = random_floats(N * d, 7);
  const std::vector<float> inv = {1.0f, 0.01f};
  kv::ExpectedAttentionOptions opt;
  opt.n_sink = 3;
  std::vector<float> s(P);
  kv::expected_attention_scores(kv::HeadsView::head_major(q.data(), H, N, d), kv::HeadsView::head_major(k.data(), 1, N, d),
                                kv::HeadsView::head_major(v.data(), 1, N, d), kv::RopeSpec{inv, 4, false}, P, opt, s);
  const float mx = *std::max_element(s.begin(), s.end());
  for (int j = 0; j < 3; ++j) EXPECT_EQ(s[j], mx);
  (void)H_kv;
}

TEST(KvScorers, AverageRotationByHand) {
  // θ = π/2 over positions 0..3: cos = 1, 0, −1, 0 → 0; sin = 0, 1, 0, −1 → 0. Over 0..1: (0.5, 0.5).
  const std::vector<float> inv = {static_cast<float>(M_PI / 2)};
  double cs[2];
  kv::average_rotation(kv::RopeSpec{inv, 2, false}, 0, 4, cs);
  EXPECT_NEAR(cs[0], 0.0, 1e-7);
  EXPECT_NEAR(cs[1], 0.0, 1e-7);
  kv::average_rotation(kv::RopeSpec{inv, 2, false}, 0, 2, cs);
  EXPECT_NEAR(cs[0], 0.5, 1e-7);
  EXPECT_NEAR(cs[1], 0.5, 1e-7);
}

TEST(KvScorers, EmptyPrefixIsFine) {
  std::vector<float> A(2 * 4 * 4, 0.25f), none;
  kv::snapkv_scores(kv::AttentionView{A.data(), 2, 4, 4}, 1, 0, {kv::Pooling::avg, 5}, none);
  kv::cake_scores(kv::AttentionView{A.data(), 2, 4, 4}, 1, 0, 200.0, {kv::Pooling::avg, 5}, none);
  kv::streamingllm_scores(1, 0, 4, none);
  SUCCEED();
}
