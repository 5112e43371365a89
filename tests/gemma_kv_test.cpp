// KV compression on a model with sliding-window layers (Gemma 3 270M, window 512): while a KV policy
// is attached, local layers keep only the last window - 1 rows (what the next query can see), which
// must not change any logit; the budget they do not use goes to the global layers.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kv/compressor.h"
#include "kv/host_kv_cache.h"
#include "one_sequence.h"
#include "tappa/engine.h"
#include "test_util.h"

namespace tappa {
namespace {

std::string gemma_path() {
  if (const char* env = std::getenv("TAPPA_GEMMA_MODEL"); env && *env) return env;
  return test::source_dir() + "/models/gemma-3-270m-q4_k_m.gguf";
}

kv::CompressorOptions options(const std::string& method, int budget) {
  kv::CompressorFlags f;
  f.method = method;
  f.budget = budget;
  return kv::make_compressor_options(f);
}

TEST(GemmaKv, LocalLayersHoldAtMostTheirWindowWithoutChangingLogits) {
  if (!test::exists(gemma_path())) GTEST_SKIP() << "model " << gemma_path() << " not found: run scripts/fetch_model.sh --gemma";
  auto model = Model::load(gemma_path());
  const ModelConfig& c = model->config();
  const int window = c.n_swa, n_prompt = window + 64, n_decode = 4;
  std::vector<int32_t> prompt(n_prompt);
  for (int i = 0; i < n_prompt; ++i) prompt[i] = 1000 + (i * 7919) % 20000;  // any in-vocabulary ids

  auto run = [&](KvPolicy* policy, std::vector<std::vector<float>>& out, const KvCache** cache_after) {
    test::OneSequence e(*model, EngineOptions{2, n_prompt + n_decode + 8, 512});
    if (policy) e.set_kv_policy(policy);
    auto lg = e.eval(prompt);
    out.emplace_back(lg.begin(), lg.end());
    for (int s = 0; s < n_decode; ++s) {
      const int32_t next[1] = {argmax(lg)};
      lg = e.eval(next);
      out.emplace_back(lg.begin(), lg.end());
      for (int l = 0; l < c.n_layer && policy; ++l)
        if (c.is_local(l)) {
          EXPECT_LE(e.kv_cache().length(l, 0), window) << "layer " << l << " after step " << s;
        }
    }
    if (cache_after) {
      for (int l = 0; l < c.n_layer; ++l) {
        const int len = e.kv_cache().length(l, 0);
        if (policy && c.is_local(l)) {
          EXPECT_EQ(len, window - 1) << "local layer " << l;
        }
        if (!c.is_local(l)) {
          EXPECT_EQ(len, n_prompt + n_decode) << "global layer " << l << " (budget covers it)";
        }
      }
    }
  };
  std::vector<std::vector<float>> full, capped;
  run(nullptr, full, nullptr);
  // A budget that covers every token: the method evicts nothing, so only the window cap acts.
  kv::KvCompressor comp(*model, options("snapkv", 4 * n_prompt));
  const KvCache* dummy = nullptr;
  run(&comp, capped, &dummy);
  ASSERT_EQ(full.size(), capped.size());
  for (size_t i = 0; i < full.size(); ++i)
    EXPECT_EQ(std::memcmp(full[i].data(), capped[i].data(), sizeof(float) * full[i].size()), 0)
        << "dropping rows outside the window changed the logits at step " << i;
}

TEST(GemmaKv, BudgetUnusedByLocalLayersGoesToGlobalLayers) {
  if (!test::exists(gemma_path())) GTEST_SKIP() << "model " << gemma_path() << " not found: run scripts/fetch_model.sh --gemma";
  auto model = Model::load(gemma_path());
  const ModelConfig& c = model->config();
  const int window = c.n_swa, n_prompt = 2 * window, budget = window + 8;
  std::vector<int32_t> prompt(n_prompt);
  for (int i = 0; i < n_prompt; ++i) prompt[i] = 1000 + (i * 104729) % 30000;
  kv::KvCompressor comp(*model, options("snapkv", budget));
  test::OneSequence e(*model, EngineOptions{2, n_prompt + 8, 512});
  e.set_kv_policy(&comp);
  e.eval(prompt);
  int n_local = 0, n_global = 0;
  int64_t total = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    const int len = e.kv_cache().length(l, 0);
    total += len;
    if (c.is_local(l)) {
      ++n_local;
      EXPECT_EQ(len, window - 1) << "local layer " << l;
    } else {
      ++n_global;
    }
  }
  // Average budget x layers, of which the local layers take (window - 1) each; the global layers
  // share the rest (snapkv allocates uniformly: each gets the same), more than the plain budget.
  const int64_t expected_global = (static_cast<int64_t>(budget) * c.n_layer - static_cast<int64_t>(n_local) * (window - 1)) / n_global;
  for (int l = 0; l < c.n_layer; ++l)
    if (!c.is_local(l)) {
      EXPECT_EQ(e.kv_cache().length(l, 0), expected_global) << "global layer " << l;
    }
  EXPECT_GT(expected_global, budget);
  EXPECT_LE(total, static_cast<int64_t>(budget) * c.n_layer);
}

}  // namespace
}  // namespace tappa
