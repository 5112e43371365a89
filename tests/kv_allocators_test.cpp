// KV-compression budgets, selection, decode eviction and the method registry (src/kv/allocators.h,
// src/kv/methods.h) against PAPER.md's test vectors, hand-derived numbers and the numpy reference
// (tests/kv_reference.py → tests/data/kv/vectors.json).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kv/allocators.h"
#include "kv/methods.h"
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

std::vector<int> ints(const std::vector<int64_t>& v) { return std::vector<int>(v.begin(), v.end()); }

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

kv::BudgetContext ctx(int L, int N, int C, int W) {
  kv::BudgetContext c;
  c.n_layer = L;
  c.n_prompt = N;
  c.capacity = C;
  c.window = W;
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// adjust_budgets and the CAKE split
// ---------------------------------------------------------------------------------------------

TEST(KvAllocators, AdjustBudgetsPaperVectors) {
  // PAPER.md §3.2: L = 4, C = 128, W = 32, B_tot = 384.
  const std::vector<double> raw1 = {38.4, 76.8, 115.2, 153.6};
  EXPECT_EQ(ints(kv::adjust_budgets(raw1, 384, 268)), (std::vector<int>{39, 77, 115, 153}));
  const std::vector<double> raw2 = {19.2, 19.2, 38.4, 307.2};
  EXPECT_EQ(ints(kv::adjust_budgets(raw2, 384, 200)), (std::vector<int>{56, 55, 73, 200}));

  // The same through the preference split, in both arithmetics (cap = N − W).
  for (auto arith : {kv::SplitArith::f64, kv::SplitArith::f32}) {
    const std::vector<double> p1 = {0.1, 0.2, 0.3, 0.4}, p2 = {0.05, 0.05, 0.1, 0.8};
    EXPECT_EQ(kv::cake_shares(p1, ctx(4, 300, 128, 32), arith), (std::vector<int>{39, 77, 115, 153}));
    EXPECT_EQ(kv::cake_shares(p2, ctx(4, 232, 128, 32), arith), (std::vector<int>{56, 55, 73, 200}));
  }
}

TEST(KvAllocators, AdjustBudgetsMatchesReference) {
  for (const json& c : vectors()["cases"]["adjust_budgets"]) {
    const auto prefs = c["prefs"].get<std::vector<double>>();
    const int64_t total = c["total"], cap = c["cap"];
    const bool f32 = c["f32"];
    const auto want_raw = c["raw"].get<std::vector<double>>();
    const auto raw = kv::proportional_raw(prefs, total, f32 ? kv::SplitArith::f32 : kv::SplitArith::f64);
    ASSERT_EQ(raw.size(), want_raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (f32)
        EXPECT_EQ(raw[i], want_raw[i]) << i;  // float32 arithmetic reproduced bit for bit
      else
        EXPECT_NEAR(raw[i], want_raw[i], 1e-9 * want_raw[i]) << i;
    }
    EXPECT_EQ(ints(kv::adjust_budgets(raw, total, cap)), c["budgets"].get<std::vector<int>>());
  }
}

TEST(KvAllocators, AdjustBudgetsNegativeDiffAndEdgeCases) {
  // Raw sum above the total (callers never do this, but the rule must match): diff = −3 removed
  // from the layers above 1, one each from the first three.
  const std::vector<double> raw = {10, 1, 10, 10};
  EXPECT_EQ(ints(kv::adjust_budgets(raw, 28, 100)), (std::vector<int>{9, 1, 9, 9}));
  // Everything at the cap: excess has nowhere to go, the total is not reached.
  const std::vector<double> big = {500, 500};
  EXPECT_EQ(ints(kv::adjust_budgets(big, 1000, 100)), (std::vector<int>{100, 100}));
  // Zero preferences → equal split instead of a division by zero.
  const std::vector<double> zero = {0, 0, 0};
  EXPECT_EQ(kv::cake_shares(zero, ctx(3, 1000, 100, 10), kv::SplitArith::f64), (std::vector<int>{90, 90, 90}));
}

TEST(KvAllocators, CascadingSharesMatchReference) {
  for (const json& c : vectors()["cases"]["cascading"]) {
    const auto prefs = c["prefs"].get<std::vector<double>>();
    const auto bc = ctx(c["L"], c["N"], c["C"], c["W"]);
    for (size_t l = 0; l < prefs.size(); ++l) {
      const std::span<const double> seen(prefs.data(), l + 1);
      EXPECT_EQ(kv::cake_shares(seen, bc, kv::SplitArith::f64), c["f64"][l].get<std::vector<int>>()) << l;
      EXPECT_EQ(kv::cake_shares(seen, bc, kv::SplitArith::f32), c["f32"][l].get<std::vector<int>>()) << l;
    }
  }
}

TEST(KvAllocators, PreferenceBudgetsSkipRule) {
  const std::vector<double> p = {1, 2, 3};
  // N ≤ C + W: nothing evicted at prefill, decode budgets C − W.
  auto b = kv::preference_budgets(p, ctx(3, 160, 128, 32), kv::SplitArith::f64);
  EXPECT_FALSE(b.compress);
  EXPECT_EQ(b.prefill, (std::vector<int>{128, 128, 128}));
  EXPECT_EQ(b.decode, (std::vector<int>{96, 96, 96}));
  b = kv::preference_budgets(p, ctx(3, 161, 128, 32), kv::SplitArith::f64);
  EXPECT_TRUE(b.compress);
  EXPECT_EQ(std::accumulate(b.prefill.begin(), b.prefill.end(), 0), 288);
  EXPECT_EQ(b.prefill, b.decode);
  for (int v : b.prefill) EXPECT_LE(v, 129);
}

// ---------------------------------------------------------------------------------------------
// uniform and PyramidKV
// ---------------------------------------------------------------------------------------------

TEST(KvAllocators, UniformSkipRule) {
  auto b = kv::uniform_budgets(ctx(2, 127, 128, 32));
  EXPECT_FALSE(b.compress);
  EXPECT_EQ(b.prefill, (std::vector<int>{95, 95}));
  b = kv::uniform_budgets(ctx(2, 500, 128, 32));
  EXPECT_TRUE(b.compress);
  EXPECT_EQ(b.prefill, (std::vector<int>{96, 96}));
  EXPECT_THROW(kv::uniform_budgets(ctx(2, 500, 16, 32)), tappa::Error);  // C < W
}

TEST(KvAllocators, PyramidKvHandDerived) {
  // C = 128, W = 32, L = 30, N = 4096: C − W = 96, min = 96 // 20 = 4, max = 192 − 4 = 188
  // (< N − W = 4064, no reset), step = (188 − 4) // 29 = 6 → layer l keeps 188 − 6l: 188 … 14.
  auto b = kv::pyramidkv_budgets(ctx(30, 4096, 128, 32));
  ASSERT_TRUE(b.compress);
  for (int l = 0; l < 30; ++l) EXPECT_EQ(b.prefill[l], 188 - 6 * l) << l;
  EXPECT_EQ(std::accumulate(b.prefill.begin(), b.prefill.end(), 0), 3030);  // ≠ 30·96 = 2880 (floor of step)

  // N = 200 ≥ 2(C − W) = 192: max = 188 ≥ N − W = 168 → max = 168, min = 192 − 168 = 24,
  // step = 144 // 29 = 4 → 168 − 4l: 168 … 52.
  b = kv::pyramidkv_budgets(ctx(30, 200, 128, 32));
  for (int l = 0; l < 30; ++l) EXPECT_EQ(b.prefill[l], 168 - 4 * l) << l;
  // C ≤ N < 2(C − W): uniform C − W.
  b = kv::pyramidkv_budgets(ctx(30, 150, 128, 32));
  EXPECT_TRUE(b.compress);
  for (int v : b.prefill) EXPECT_EQ(v, 96);
  // N < C: no compression.
  b = kv::pyramidkv_budgets(ctx(30, 100, 128, 32));
  EXPECT_FALSE(b.compress);
  for (int v : b.prefill) EXPECT_EQ(v, 68);
  // One layer: uniform (the official code divides by zero).
  b = kv::pyramidkv_budgets(ctx(1, 4096, 128, 32));
  EXPECT_EQ(b.prefill, (std::vector<int>{96}));
}

TEST(KvAllocators, PyramidKvMatchesReference) {
  for (const json& c : vectors()["cases"]["pyramidkv"]) {
    const auto b = kv::pyramidkv_budgets(ctx(c["L"], c["N"], c["C"], c["W"]));
    if (c["budgets"].is_null()) {
      EXPECT_FALSE(b.compress);
    } else {
      EXPECT_TRUE(b.compress);
      EXPECT_EQ(b.prefill, c["budgets"].get<std::vector<int>>()) << c["C"] << " " << c["N"];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// preferences
// ---------------------------------------------------------------------------------------------

TEST(KvAllocators, CakeStatsAndPreferenceMatchReference) {
  for (const json& c : vectors()["cases"]["attention"]) {
    const int H = c["H"], N = c["N"], W = c["W"], P = c["P"], H_kv = c["H_kv"];
    const auto A = c["attention"].get<std::vector<float>>();
    const auto st = kv::cake_layer_stats(kv::AttentionView{A.data(), H, W, N}, P);
    const double ent = c["cake_entropy"], var = c["cake_variance"];
    EXPECT_NEAR(st.entropy, ent, 1e-5 * ent);
    EXPECT_NEAR(st.variance, var, 1e-4 * var);
    const double pref = c["cake_pref_tau_1.6_0.4"];
    EXPECT_NEAR(kv::cake_preference(st, kv::CakeTau{1.6, 0.4}), pref, 1e-3 * pref);
    // Per-group statistics add up to the layer's.
    const int G = H / H_kv;
    kv::CakeStats sum;
    for (int g = 0; g < H_kv; ++g)
      sum += kv::cake_layer_stats(kv::AttentionView{A.data() + static_cast<size_t>(g) * G * W * N, G, W, N}, P);
    EXPECT_NEAR(sum.entropy, st.entropy, 1e-9 * ent);
    EXPECT_NEAR(sum.variance, st.variance, 1e-9 * var);
  }
}

TEST(KvAllocators, CakeTauTable) {
  EXPECT_DOUBLE_EQ(kv::cake_tau("llama3.1-8b", 1024).tau1, 1.6);
  EXPECT_DOUBLE_EQ(kv::cake_tau("llama3.1-8b", 1024).tau2, 0.4);
  EXPECT_DOUBLE_EQ(kv::cake_tau("qwen2.5-7b-instruct", 128).tau1, 0.4);
  EXPECT_DOUBLE_EQ(kv::cake_tau("mistral-0.3-7b", 128).tau2, 0.8);
  EXPECT_DOUBLE_EQ(kv::cake_tau("llama3.1-8b", 512).tau1, 1.0);  // budget not in the table
  EXPECT_DOUBLE_EQ(kv::cake_tau("smollm2", 1024).tau2, 1.0);
  EXPECT_EQ(kv::cake_tau_key("Meta Llama 3.1 8B Instruct"), "llama3.1-8b");
  EXPECT_EQ(kv::cake_tau_key("Qwen2.5-7B-Instruct"), "qwen2.5-7b-instruct");
  EXPECT_EQ(kv::cake_tau_key("Llama-2-13b-chat-hf"), "llama2-13b-chat");
  EXPECT_EQ(kv::cake_tau_key("llama2-7b-chat"), "llama2-7b-chat");
  EXPECT_EQ(kv::cake_tau_key("Mistral-7B-Instruct-v0.3"), "mistral-0.3-7b");
  EXPECT_EQ(kv::cake_tau_key("Meta Llama 3 8B"), "");
  EXPECT_EQ(kv::cake_tau_key("SmolLM2 135M Instruct"), "");
}

TEST(KvAllocators, TappaPreference) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_DOUBLE_EQ(kv::tappa_preference(0.75, 123.0, inf), 0.25);
  EXPECT_DOUBLE_EQ(kv::tappa_preference(0.75, 2.0, 4.0), 3.0);
  EXPECT_EQ(kv::tappa_arith(inf), kv::SplitArith::f64);
  EXPECT_EQ(kv::tappa_arith(1.0), kv::SplitArith::f32);
}

TEST(KvAllocators, LayerQsimOfAlignedAndOrthogonalQueries) {
  // Head 0: identical rows (cos 1); head 1: orthonormal rows (cos 0) → layer 0.5; groups of 1.
  const int W = 4, d = 4;
  std::vector<float> q(2 * W * d, 0.0f);
  for (int a = 0; a < W; ++a) {
    q[a * d + 0] = 1.0f + a;          // head 0, all along e0
    q[(W + a) * d + a] = 2.0f;        // head 1, e_a
  }
  const auto v = kv::HeadsView::head_major(q.data(), 2, W, d);
  EXPECT_NEAR(kv::layer_qsim(v), 0.5, 1e-12);
  const auto g = kv::group_qsim(v, 2);
  EXPECT_NEAR(g[0], 1.0, 1e-12);
  EXPECT_NEAR(g[1], 0.0, 1e-12);
  EXPECT_NEAR(kv::group_qsim(v, 1)[0], 0.5, 1e-12);
}

TEST(KvAllocators, TappaGivesMoreBudgetToLowerQsimLayers) {
  // Four layers whose window queries are increasingly random: q = base + noise·σ_l.
  const int L = 4, H = 4, H_kv = 2, d = 16, N = 300, W = 32;
  const auto& m = kv::find_method("tappa");
  kv::MethodOptions o = m.defaults;
  std::vector<double> prefs, qsims;
  const auto base = random_floats(d, 11);
  const auto keys = random_floats(static_cast<size_t>(H_kv) * N * d, 12);
  for (int l = 0; l < L; ++l) {
    const float sigma = 0.05f + 0.6f * l;
    auto noise = random_floats(static_cast<size_t>(H) * W * d, 100 + l);
    std::vector<float> q(noise.size());
    for (size_t i = 0; i < q.size(); ++i) q[i] = base[i % d] + sigma * noise[i];
    kv::LayerInputs in;
    in.layer = l;
    in.queries = kv::HeadsView::head_major(q.data(), H, W, d);
    in.keys = kv::HeadsView::head_major(keys.data(), H_kv, N, d);
    kv::LayerScores s;
    kv::score_layer(m, o, in, s);
    EXPECT_EQ(s.scores.size(), static_cast<size_t>(H_kv) * (N - W));
    EXPECT_NEAR(s.preference, 1.0 - s.qsim, 1e-12);
    prefs.push_back(s.preference);
    qsims.push_back(s.qsim);
  }
  for (int l = 0; l + 1 < L; ++l) EXPECT_GT(qsims[l], qsims[l + 1]);
  const auto b = kv::plan_budgets(m, o, ctx(L, N, 96, W), prefs);
  ASSERT_TRUE(b.compress);
  for (int l = 0; l + 1 < L; ++l) EXPECT_LT(b.prefill[l], b.prefill[l + 1]) << l;
  EXPECT_EQ(std::accumulate(b.prefill.begin(), b.prefill.end(), 0), (96 - W) * L);
}

// ---------------------------------------------------------------------------------------------
// tappa-head
// ---------------------------------------------------------------------------------------------

TEST(KvAllocators, HeadBudgetsPreserveTotalAndBounds) {
  // Proportional: 0.1 : 0.3 : 0.6 of 3·100 = 300 → 30, 90, 180.
  const std::vector<double> p = {0.1, 0.3, 0.6};
  EXPECT_EQ(kv::head_budgets(p, 100, 1000, 0), (std::vector<int>{30, 90, 180}));
  // Floor at 20% of the layer budget: 20 min → (20+) and cap 150 → redistributed.
  auto b = kv::head_budgets(p, 100, 150, 20);
  EXPECT_EQ(std::accumulate(b.begin(), b.end(), 0), 300);
  for (int v : b) {
    EXPECT_GE(v, 20);
    EXPECT_LE(v, 150);
  }
  EXPECT_EQ(b[2], 150);
  EXPECT_LE(b[0], b[1]);
  // Zero preferences: equal split. Infeasible total: everything at the cap.
  const std::vector<double> z = {0, 0, 0, 0};
  EXPECT_EQ(kv::head_budgets(z, 10, 100, 0), (std::vector<int>{10, 10, 10, 10}));
  EXPECT_EQ(kv::head_budgets(p, 100, 50, 0), (std::vector<int>{50, 50, 50}));
  // Random stress: total preserved whenever feasible.
  std::mt19937 rng(3);
  for (int it = 0; it < 200; ++it) {
    const int n = 1 + rng() % 8;
    std::vector<double> pr(n);
    for (auto& x : pr) x = std::uniform_real_distribution<double>(0, 2)(rng);
    const int cap = 1 + rng() % 300, lb = rng() % 300, lo = rng() % 50;
    const auto hb = kv::head_budgets(pr, lb, cap, lo);
    const int64_t total = std::clamp<int64_t>(static_cast<int64_t>(lb) * n, static_cast<int64_t>(std::min(lo, cap)) * n,
                                              static_cast<int64_t>(cap) * n);
    EXPECT_EQ(std::accumulate(hb.begin(), hb.end(), int64_t{0}), total);
    for (int v : hb) {
      EXPECT_GE(v, std::min(lo, cap));
      EXPECT_LE(v, cap);
    }
  }
}

TEST(KvAllocators, TappaHeadMethodSplitsByGroupQsim) {
  // KV head 0's group has aligned queries, KV head 1's random ones → head 1 gets more.
  const int H = 4, H_kv = 2, d = 8, N = 200, W = 32;
  std::vector<float> q = random_floats(static_cast<size_t>(H) * W * d, 21);
  for (int h = 0; h < 2; ++h)
    for (int a = 0; a < W; ++a)
      for (int i = 0; i < d; ++i) q[(static_cast<size_t>(h) * W + a) * d + i] = 1.0f + 0.01f * q[(static_cast<size_t>(h) * W + a) * d + i];
  const auto keys = random_floats(static_cast<size_t>(H_kv) * N * d, 22);
  const auto& m = kv::find_method("tappa-head");
  kv::LayerInputs in;
  in.queries = kv::HeadsView::head_major(q.data(), H, W, d);
  in.keys = kv::HeadsView::head_major(keys.data(), H_kv, N, d);
  kv::LayerScores s;
  kv::score_layer(m, m.defaults, in, s);
  ASSERT_EQ(s.head_preference.size(), 2u);
  EXPECT_LT(s.head_preference[0], s.head_preference[1]);
  const auto hb = kv::layer_head_budgets(m, m.defaults, s, 60);
  EXPECT_EQ(hb[0] + hb[1], 120);
  EXPECT_LT(hb[0], hb[1]);
  EXPECT_GE(hb[0], 12);  // 20% floor
  // Other methods: the layer budget for every head.
  EXPECT_EQ(kv::layer_head_budgets(kv::find_method("tappa"), m.defaults, s, 60), (std::vector<int>{60, 60}));
}

// ---------------------------------------------------------------------------------------------
// selection
// ---------------------------------------------------------------------------------------------

TEST(KvAllocators, SelectKeepTopKPlusWindow) {
  const std::vector<float> s = {0.5f, 0.9f, 0.1f, 0.9f, 0.3f, 0.7f};
  std::vector<int> keep;
  kv::select_keep(s, 3, 2, keep);
  EXPECT_EQ(keep, (std::vector<int>{1, 3, 5, 6, 7}));
  kv::select_keep(s, 1, 2, keep);  // tie 1 vs 3 → lower index
  EXPECT_EQ(keep, (std::vector<int>{1, 6, 7}));
  kv::select_keep(s, 0, 2, keep);
  EXPECT_EQ(keep, (std::vector<int>{6, 7}));
  kv::select_keep(s, 10, 1, keep);
  EXPECT_EQ(keep, (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
  const std::vector<float> n = {std::nanf(""), 0.0f, -1.0f};
  kv::select_keep(n, 2, 0, keep);
  EXPECT_EQ(keep, (std::vector<int>{1, 2}));  // NaN ranks lowest
  const std::vector<float> eq(5, 1.0f);
  kv::select_keep(eq, 3, 0, keep);
  EXPECT_EQ(keep, (std::vector<int>{0, 1, 2}));
}

TEST(KvAllocators, SelectKeepLayerMatchesBruteForcePerKvHead) {
  std::mt19937 rng(9);
  for (int it = 0; it < 50; ++it) {
    const int H_kv = 1 + rng() % 4, P = 1 + rng() % 60, W = rng() % 5;
    std::vector<float> s(static_cast<size_t>(H_kv) * P);
    for (auto& x : s) x = static_cast<float>(rng() % 20);  // many ties
    std::vector<int> budgets(H_kv);
    for (auto& b : budgets) b = rng() % (P + 3);
    std::vector<std::vector<int>> keep;
    kv::select_keep_layer(s, H_kv, budgets, W, keep);
    ASSERT_EQ(keep.size(), static_cast<size_t>(H_kv));
    for (int h = 0; h < H_kv; ++h) {
      std::vector<int> idx(P);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return s[h * P + a] > s[h * P + b]; });
      std::vector<int> want(idx.begin(), idx.begin() + std::min(budgets[h], P));
      std::sort(want.begin(), want.end());
      for (int w = 0; w < W; ++w) want.push_back(P + w);
      EXPECT_EQ(keep[h], want) << it << " head " << h;
    }
    // The same budget for every head.
    std::vector<std::vector<int>> k2;
    kv::select_keep_layer(s, H_kv, budgets[0], W, k2);
    std::vector<int> same(H_kv, budgets[0]);
    kv::select_keep_layer(s, H_kv, same, W, keep);
    EXPECT_EQ(k2, keep);
  }
}

// ---------------------------------------------------------------------------------------------
// decode eviction
// ---------------------------------------------------------------------------------------------

TEST(KvAllocators, DecodeKeepMatchesReference) {
  for (const json& c : vectors()["cases"]["decode"]) {
    const int G = c["G"], n = c["n"], b = c["budget"], W = c["W"];
    const auto probs = c["probs"].get<std::vector<float>>();
    std::vector<int> keep;
    std::vector<float> scratch;
    ASSERT_TRUE(kv::decode_keep(probs.data(), G, n, n, b, W, keep, scratch));
    EXPECT_EQ(keep, c["keep"].get<std::vector<int>>());
    const auto want = c["scores"].get<std::vector<double>>();
    for (int j = 0; j < n - W; ++j) EXPECT_NEAR(scratch[(n - W) + j], want[j], 1e-6 * std::max(1.0, want[j]));
  }
}

TEST(KvAllocators, DecodeKeepEvictsOnlyAboveBudget) {
  std::vector<float> probs(2 * 10, 0.05f);
  std::vector<int> keep = {42};
  std::vector<float> scratch;
  EXPECT_FALSE(kv::decode_keep(probs.data(), 2, 10, 10, 6, 4, keep, scratch));  // n = b + W
  EXPECT_EQ(keep, (std::vector<int>{42}));
  // One over: exactly one prefix row goes. With uniform attention the zero padding of the pooling
  // makes the edge rows lowest; row 0 is lifted, so the newest prefix row (6) is the one evicted
  // (the official rule does the same: the token leaving the window competes with the kept ones).
  probs.assign(2 * 11, 0.1f);
  probs[0] = probs[11] = 0.3f;
  ASSERT_TRUE(kv::decode_keep(probs.data(), 2, 11, 11, 6, 4, keep, scratch));
  EXPECT_EQ(keep, (std::vector<int>{0, 1, 2, 3, 4, 5, 7, 8, 9, 10}));
  EXPECT_EQ(std::vector<int>(keep.end() - 4, keep.end()), (std::vector<int>{7, 8, 9, 10}));
}

// ---------------------------------------------------------------------------------------------
// budget units
// ---------------------------------------------------------------------------------------------

TEST(KvAllocators, RatioConversion) {
  EXPECT_EQ(kv::capacity_from_ratio(0.5, 1000), 500);
  EXPECT_EQ(kv::capacity_from_ratio(0.75, 1001), 250);  // int(1001·0.25) = 250
  EXPECT_EQ(kv::capacity_from_ratio(0.0, 77), 77);
  EXPECT_THROW(kv::capacity_from_ratio(1.0, 10), tappa::Error);
  EXPECT_THROW(kv::capacity_from_ratio(-0.1, 10), tappa::Error);
  EXPECT_DOUBLE_EQ(kv::ratio_from_capacity(250, 1000), 0.75);
  EXPECT_DOUBLE_EQ(kv::ratio_from_capacity(2000, 1000), 0.0);
}

// ---------------------------------------------------------------------------------------------
// method registry
// ---------------------------------------------------------------------------------------------

TEST(KvMethods, RegistryNamesAndDefaults) {
  EXPECT_EQ(kv::method_names(),
            "fullkv, streamingllm, h2o, snapkv, pyramidkv, cake, tappa, tappa-head, expected-attention, knorm, random");
  std::set<std::string_view> names;
  for (const auto& m : kv::all_methods()) {
    names.insert(m.name);
    EXPECT_FALSE(m.description.empty()) << m.name;
    EXPECT_EQ(&kv::find_method(m.name), &m);
    EXPECT_EQ(m.defaults.window, 32);
  }
  EXPECT_EQ(names.size(), kv::all_methods().size());
  for (const char* n : {"cake", "tappa", "tappa-head"}) {
    EXPECT_TRUE(kv::find_method(n).defaults.cascading) << n;
    EXPECT_TRUE(kv::find_method(n).defaults.decode_eviction) << n;
    EXPECT_EQ(kv::find_method(n).scorer->name(), "cake");
  }
  EXPECT_TRUE(std::isinf(kv::find_method("tappa").defaults.alpha));
  EXPECT_FALSE(kv::find_method("snapkv").defaults.cascading);
  EXPECT_EQ(kv::find_method("pyramidkv").allocator->name(), "pyramidkv");
  EXPECT_EQ(kv::find_method("snapkv").defaults.pool.kind, kv::Pooling::avg);
  EXPECT_EQ(kv::find_method("snapkv").defaults.pool.kernel, 5);
  EXPECT_DOUBLE_EQ(kv::find_method("cake").defaults.gamma, 200.0);
}

TEST(KvMethods, UnknownMethodListsValidNames) {
  try {
    kv::find_method("snap-kv");
    FAIL() << "no throw";
  } catch (const tappa::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("snap-kv"), std::string::npos);
    EXPECT_NE(msg.find(kv::method_names()), std::string::npos) << msg;
  }
  EXPECT_THROW(kv::find_method("TAPPA"), tappa::Error);
}

TEST(KvMethods, PoolingSpec) {
  EXPECT_EQ(kv::parse_pooling("max7").kind, kv::Pooling::max);
  EXPECT_EQ(kv::parse_pooling("max7").kernel, 7);
  EXPECT_EQ(kv::parse_pooling("avg:5").kernel, 5);
  EXPECT_EQ(kv::parse_pooling("none").kind, kv::Pooling::none);
  EXPECT_EQ(kv::pooling_name(kv::parse_pooling("avg5")), "avg5");
  for (const char* bad : {"avg4", "mean5", "max", "avg-3", "max0"}) EXPECT_THROW(kv::parse_pooling(bad), tappa::Error) << bad;
}

TEST(KvMethods, ResolveTau) {
  kv::MethodOptions o;
  kv::resolve_tau(o, "Qwen2.5 7B Instruct", 1024);
  ASSERT_TRUE(o.tau.has_value());
  EXPECT_DOUBLE_EQ(o.tau->tau1, 1.5);
  kv::MethodOptions set;
  set.tau = kv::CakeTau{3, 4};
  kv::resolve_tau(set, "Qwen2.5 7B Instruct", 1024);
  EXPECT_DOUBLE_EQ(set.tau->tau1, 3);
}

TEST(KvMethods, EveryMethodScoresALayer) {
  const int H = 4, H_kv = 2, d = 16, N = 600, W = 32, L = 3;
  const auto q = random_floats(static_cast<size_t>(N) * H * d, 31);  // token-major, whole prompt
  const auto k = random_floats(static_cast<size_t>(H_kv) * N * d, 32);
  const auto v = random_floats(static_cast<size_t>(H_kv) * N * d, 33);
  std::vector<float> inv(d / 2);
  for (int i = 0; i < d / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / d);
  for (const auto& m : kv::all_methods()) {
    kv::MethodOptions o = m.defaults;
    kv::resolve_tau(o, "test", 128);
    const auto needs = kv::layer_needs(m, o, N);
    EXPECT_EQ(needs.any, !m.is_none()) << m.name;
    kv::LayerInputs in;
    const int rows = std::max(needs.query_rows, 1);
    in.queries = kv::HeadsView::token_major(q.data(), N, H, d).last_rows(rows);
    in.keys = kv::HeadsView::head_major(k.data(), H_kv, N, d);
    in.values = kv::HeadsView::head_major(v.data(), H_kv, N, d);
    in.rope = kv::RopeSpec{inv, d, false};
    std::vector<double> prefs;
    for (int l = 0; l < L; ++l) {
      in.layer = l;
      kv::LayerScores s;
      kv::score_layer(m, o, in, s);
      if (m.is_none()) {
        EXPECT_TRUE(s.scores.empty());
      } else {
        ASSERT_EQ(s.scores.size(), static_cast<size_t>(H_kv) * (N - W)) << m.name;
        for (float x : s.scores) ASSERT_TRUE(std::isfinite(x)) << m.name;
      }
      prefs.push_back(s.preference);
    }
    const auto b = kv::plan_budgets(m, o, ctx(L, N, 128, W), prefs);
    ASSERT_EQ(b.prefill.size(), static_cast<size_t>(L)) << m.name;
    EXPECT_EQ(b.compress, !m.allocator->none()) << m.name;
    if (!m.allocator->none() && m.allocator->name() != "pyramidkv") {
      EXPECT_EQ(std::accumulate(b.prefill.begin(), b.prefill.end(), 0), 96 * L) << m.name;
    }
  }
  // h2o with accumulated attention instead of queries.
  std::vector<float> acc(static_cast<size_t>(H) * N, 1.0f);
  kv::LayerInputs in;
  in.keys = kv::HeadsView::head_major(k.data(), H_kv, N, d);
  in.h2o_accumulated = acc.data();
  in.h2o_stride = N;
  in.n_head = H;
  kv::LayerScores s;
  kv::score_layer(kv::find_method("h2o"), kv::find_method("h2o").defaults, in, s);
  EXPECT_FLOAT_EQ(s.scores[0], 1.0f);
  // Missing queries are reported.
  in.h2o_accumulated = nullptr;
  EXPECT_THROW(kv::score_layer(kv::find_method("h2o"), kv::find_method("h2o").defaults, in, s), tappa::Error);
  EXPECT_THROW(kv::score_layer(kv::find_method("snapkv"), kv::find_method("snapkv").defaults, in, s), tappa::Error);
}

TEST(KvMethods, ScoreLayerSnapKvEqualsDirectCall) {
  const int H = 4, H_kv = 2, d = 8, N = 100, W = 32, P = N - W;
  const auto q = random_floats(static_cast<size_t>(H) * W * d, 41);
  const auto k = random_floats(static_cast<size_t>(H_kv) * N * d, 42);
  const auto qv = kv::HeadsView::head_major(q.data(), H, W, d);
  const auto kvw = kv::HeadsView::head_major(k.data(), H_kv, N, d);
  std::vector<float> A(static_cast<size_t>(H) * W * N), want(static_cast<size_t>(H_kv) * P);
  kv::window_attention(qv, kvw, A);
  kv::snapkv_scores(kv::AttentionView{A.data(), H, W, N}, H_kv, P, {kv::Pooling::avg, 5}, want);
  kv::LayerInputs in;
  in.queries = qv;
  in.keys = kvw;
  kv::LayerScores s;
  kv::score_layer(kv::find_method("snapkv"), kv::find_method("snapkv").defaults, in, s);
  EXPECT_EQ(s.scores, want);
  // cake: CAKE statistics agree with the whole-layer computation.
  const auto& cake = kv::find_method("cake");
  kv::MethodOptions o = cake.defaults;
  o.tau = kv::CakeTau{1.6, 0.4};
  kv::score_layer(cake, o, in, s);
  const auto st = kv::cake_layer_stats(kv::AttentionView{A.data(), H, W, N}, P);
  EXPECT_NEAR(s.cake.entropy, st.entropy, 1e-9 * st.entropy);
  EXPECT_NEAR(s.preference, kv::cake_preference(st, kv::CakeTau{1.6, 0.4}), 1e-9 * s.preference);
}
