// The engine against llama.cpp on the default model (golden files from scripts/gen_golden.sh, with
// llama.cpp's f32 K/V cache and flash attention off): next-token argmax over 256 positions per
// prompt, |Δlogit| on llama.cpp's top-40 tokens, and greedy 64-token continuations.
//
// Why the bounds are not "bit-identical": this model's logits move by ~0.1-0.2 under perturbations
// at the level of float rounding. Every matmul input is rounded to 8 bits per 32-value block, and a
// value that sits within one ulp of a rounding boundary flips one quantization step (~1% of the
// block maximum) when the summation order changes; 30 layers amplify the flips. llama.cpp disagrees
// with itself by as much when only its own settings change (f16 vs f32 K/V cache, flash attention on
// vs off): mean |Δ| 0.14-0.17, max up to 1.8, argmax agreement 94-97% on these prompts
// (docs/ORACLE.md). What does not move is every decision with a clear margin. So we require:
//   - the argmax agrees wherever llama.cpp's top-1/top-2 margin is >= 0.5 (every such position);
//   - overall argmax agreement >= 95% (llama.cpp's self-agreement range);
//   - mean |Δ| < 0.25 and max |Δ| < 2.5 on the top-40 (about 1.5x llama.cpp's self-disagreement);
//   - greedy continuations identical up to the first step where llama.cpp's margin is < 0.5.
// A real bug (wrong RoPE pairing or base, a missing bias or norm weight, a wrong GQA grouping, an
// off-by-one position) shifts logits by whole units and fails all four by far: the tiny-model tests
// (engine_tiny_test.cpp) check the arithmetic itself to 1e-6 where no 8-bit rounding is involved.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tappa/engine.h"
#include "test_util.h"

namespace tappa {
namespace {

struct Golden {
  std::string name;
  std::vector<int32_t> tokens;
  std::vector<int32_t> argmax;
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  int prefix_len = 0;
  std::vector<int32_t> greedy;
  std::vector<double> greedy_margin;  // llama.cpp's top-1 minus top-2 logit at each greedy step
};

std::vector<Golden> load_goldens() {
  std::vector<Golden> out;
  const std::string dir = test::source_dir() + "/tests/data/golden";
  if (!test::exists(dir)) return out;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& p : files) {
    std::ifstream in(p);
    const auto j = nlohmann::json::parse(in);
    Golden g;
    g.name = p.stem().string();
    g.tokens = j.at("tokens").get<std::vector<int32_t>>();
    for (const auto& pos : j.at("positions")) {
      g.argmax.push_back(pos.at("argmax").get<int32_t>());
      std::vector<std::pair<int32_t, float>> top;
      for (const auto& t : pos.at("top")) top.emplace_back(t.at(0).get<int32_t>(), t.at(1).get<float>());
      g.top.push_back(std::move(top));
    }
    g.prefix_len = j.at("greedy").at("prefix_len").get<int>();
    g.greedy = j.at("greedy").at("tokens").get<std::vector<int32_t>>();
    g.greedy_margin = j.at("greedy").at("margin").get<std::vector<double>>();
    out.push_back(std::move(g));
  }
  return out;
}

class EngineGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::exists(test::default_model())) return;
    model_ = Model::load(test::default_model()).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static Model* model_;
};
Model* EngineGolden::model_ = nullptr;

TEST_F(EngineGolden, LogitsAndArgmaxMatchLlamaCpp) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto goldens = load_goldens();
  ASSERT_GE(goldens.size(), 3u) << "expected >= 3 golden prompts in tests/data/golden";
  constexpr double kClearMargin = 0.5;
  int agree = 0, total = 0, clear = 0, clear_agree = 0;
  double max_diff = 0, sum_diff = 0;
  size_t n_diff = 0;
  for (const Golden& g : goldens) {
    const int n_pos = static_cast<int>(g.argmax.size());
    ASSERT_GE(n_pos, 256) << g.name;
    Engine engine(*model_, EngineOptions{2, n_pos + 8, 512});
    const auto logits = engine.eval(std::span(g.tokens.data(), n_pos), /*all_logits=*/true);
    const int V = model_->config().n_vocab;
    int agree_here = 0;
    double max_here = 0, early = 0, late = 0;
    for (int i = 0; i < n_pos; ++i) {
      std::span<const float> row = logits.subspan(static_cast<size_t>(i) * V, V);
      const bool same = argmax(row) == g.argmax[i];
      agree_here += same;
      if (g.top[i].size() >= 2 && g.top[i][0].second - g.top[i][1].second >= kClearMargin) {
        ++clear;
        clear_agree += same;
      }
      for (const auto& [id, ref] : g.top[i]) {
        const double d = std::fabs(row[id] - ref);
        max_here = std::max(max_here, d);
        sum_diff += d;
        ++n_diff;
        if (i < 8) early += d / (8 * g.top[i].size());
        if (i >= n_pos - 8) late += d / (8 * g.top[i].size());
      }
    }
    std::printf("[golden] %-12s mean|dlogit| positions 0-7: %.4f, last 8: %.4f\n", g.name.c_str(), early, late);
    std::printf("[golden] %-12s positions %d  argmax agreement %.2f%%  max|dlogit| %.4f\n", g.name.c_str(), n_pos,
                100.0 * agree_here / n_pos, max_here);
    agree += agree_here;
    total += n_pos;
    max_diff = std::max(max_diff, max_here);
  }
  const double mean_diff = sum_diff / n_diff;
  std::printf("[golden] overall: argmax agreement %d/%d = %.2f%%, at margin >= %.1f: %d/%d; |dlogit| on llama.cpp's "
              "top-40: max %.4f mean %.4f\n",
              agree, total, 100.0 * agree / total, kClearMargin, clear_agree, clear, max_diff, mean_diff);
  RecordProperty("argmax_agreement", std::to_string(static_cast<double>(agree) / total));
  RecordProperty("max_abs_dlogit", std::to_string(max_diff));
  RecordProperty("mean_abs_dlogit", std::to_string(mean_diff));
  EXPECT_EQ(clear_agree, clear) << "argmax differs where llama.cpp's decision is clear";
  EXPECT_GE(static_cast<double>(agree) / total, 0.95);
  EXPECT_LT(mean_diff, 0.25);
  EXPECT_LT(max_diff, 2.5);
}

TEST_F(EngineGolden, GreedyContinuationsIdenticalWhileDecisionsAreClear) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto goldens = load_goldens();
  ASSERT_GE(goldens.size(), 3u);
  int fully_identical = 0;
  for (const Golden& g : goldens) {
    Engine engine(*model_, EngineOptions{2, g.prefix_len + static_cast<int>(g.greedy.size()) + 8, 512});
    auto logits = engine.eval(std::span(g.tokens.data(), g.prefix_len));
    std::vector<int32_t> ours;
    for (size_t i = 0; i < g.greedy.size(); ++i) {
      const int32_t next = argmax(logits);
      ours.push_back(next);
      if (next != g.greedy[i]) break;  // diverged: later steps are conditioned on other text
      const int32_t one[1] = {next};
      logits = engine.eval(one);
    }
    size_t first_diff = 0;
    while (first_diff < ours.size() && first_diff < g.greedy.size() && ours[first_diff] == g.greedy[first_diff]) ++first_diff;
    size_t first_close = 0;  // first step where llama.cpp itself hesitates
    while (first_close < g.greedy_margin.size() && g.greedy_margin[first_close] >= 0.5) ++first_close;
    std::printf("[golden] %-12s greedy: identical for %zu of %zu tokens (llama.cpp's first margin < 0.5 at step %zu)\n",
                g.name.c_str(), first_diff, g.greedy.size(), first_close);
    fully_identical += first_diff == g.greedy.size();
    EXPECT_GE(first_diff, std::min(first_close, g.greedy.size())) << g.name << ": diverged at a clear step";
  }
  std::printf("[golden] greedy continuations identical over all 64 tokens: %d of %zu prompts\n", fully_identical,
              goldens.size());
}

}  // namespace
}  // namespace tappa
