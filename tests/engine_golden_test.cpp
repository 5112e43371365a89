// The engine against llama.cpp on the default model (golden files from scripts/gen_golden.sh):
// next-token argmax agreement over 256 positions per prompt, |Δlogit| on llama.cpp's top-40 tokens,
// and identical greedy 64-token continuations.
//
// Why the logits are not bit-identical: llama.cpp keeps the KV cache in fp16 and multiplies Q4_1
// weights with activations quantized to Q8_1, while tappa keeps fp32 K/V and quantizes activations
// to Q8_0 with exact block sums. Each of these perturbs a logit by a few hundredths; the bounds
// below (mean < 0.05, max < 0.5, for logits of magnitude ~10-30) are a few times what we measured
// and an order of magnitude below what a real bug (wrong RoPE pairing, a missing bias, a wrong
// norm epsilon) produces — those shift logits by whole units and flip most argmaxes.
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
  int agree = 0, total = 0;
  double max_diff = 0, sum_diff = 0;
  size_t n_diff = 0;
  for (const Golden& g : goldens) {
    const int n_pos = static_cast<int>(g.argmax.size());
    ASSERT_GE(n_pos, 256) << g.name;
    Engine engine(*model_, EngineOptions{2, n_pos + 8, 512});
    const auto logits = engine.eval(std::span(g.tokens.data(), n_pos), /*all_logits=*/true);
    const int V = model_->config().n_vocab;
    int agree_here = 0;
    double max_here = 0;
    for (int i = 0; i < n_pos; ++i) {
      std::span<const float> row = logits.subspan(static_cast<size_t>(i) * V, V);
      agree_here += argmax(row) == g.argmax[i];
      for (const auto& [id, ref] : g.top[i]) {
        const double d = std::fabs(row[id] - ref);
        max_here = std::max(max_here, d);
        sum_diff += d;
        ++n_diff;
      }
    }
    std::printf("[golden] %-12s positions %d  argmax agreement %.2f%%  max|dlogit| %.4f\n", g.name.c_str(), n_pos,
                100.0 * agree_here / n_pos, max_here);
    agree += agree_here;
    total += n_pos;
    max_diff = std::max(max_diff, max_here);
  }
  const double mean_diff = sum_diff / n_diff;
  std::printf("[golden] overall: argmax agreement %d/%d = %.2f%%, |dlogit| on llama.cpp's top-40: max %.4f mean %.4f\n",
              agree, total, 100.0 * agree / total, max_diff, mean_diff);
  RecordProperty("argmax_agreement", std::to_string(static_cast<double>(agree) / total));
  RecordProperty("max_abs_dlogit", std::to_string(max_diff));
  RecordProperty("mean_abs_dlogit", std::to_string(mean_diff));
  EXPECT_GE(static_cast<double>(agree) / total, 0.99);
  EXPECT_LT(mean_diff, 0.05);
  EXPECT_LT(max_diff, 0.5);
}

TEST_F(EngineGolden, GreedyContinuationsIdentical) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto goldens = load_goldens();
  ASSERT_GE(goldens.size(), 3u);
  for (const Golden& g : goldens) {
    Engine engine(*model_, EngineOptions{2, g.prefix_len + static_cast<int>(g.greedy.size()) + 8, 512});
    auto logits = engine.eval(std::span(g.tokens.data(), g.prefix_len));
    std::vector<int32_t> ours;
    for (size_t i = 0; i < g.greedy.size(); ++i) {
      const int32_t next = argmax(logits);
      ours.push_back(next);
      const int32_t one[1] = {next};
      logits = engine.eval(one);
    }
    size_t first_diff = 0;
    while (first_diff < ours.size() && ours[first_diff] == g.greedy[first_diff]) ++first_diff;
    EXPECT_EQ(ours, g.greedy) << g.name << ": continuations differ from token " << first_diff;
  }
}

// Processing a prompt in one batch, in several batches, or token by token must give the same
// logits up to fp32 reordering: the batch split changes only which rows share a matmul call.
TEST_F(EngineGolden, BatchSplitDoesNotChangeLogits) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto goldens = load_goldens();
  ASSERT_FALSE(goldens.empty());
  const std::vector<int32_t> toks(goldens[0].tokens.begin(), goldens[0].tokens.begin() + 40);
  const int V = model_->config().n_vocab;
  Engine whole(*model_, EngineOptions{2, 64, 512});
  const auto a = whole.eval(toks, true);
  const std::vector<float> all(a.begin(), a.end());
  Engine split(*model_, EngineOptions{2, 64, 7});  // batches of 7
  const auto b = split.eval(toks, true);
  Engine single(*model_, EngineOptions{1, 64, 512});
  std::vector<float> last;
  for (int32_t t : toks) {
    const int32_t one[1] = {t};
    auto l = single.eval(one);
    last.assign(l.begin(), l.end());
  }
  double max_ab = 0, max_ac = 0;
  for (size_t i = 0; i < all.size(); ++i) max_ab = std::max(max_ab, static_cast<double>(std::fabs(all[i] - b[i])));
  for (int v = 0; v < V; ++v)
    max_ac = std::max(max_ac, static_cast<double>(std::fabs(all[static_cast<size_t>(39) * V + v] - last[v])));
  // Same arithmetic per row whatever the batch: only summation order inside kernels may differ.
  EXPECT_LT(max_ab, 1e-3);
  EXPECT_LT(max_ac, 1e-3);
}

}  // namespace
}  // namespace tappa
