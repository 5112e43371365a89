// The eval-kv runner prefills a prompt once and replays the compression for every method on a
// sequence restored from the prompt's saved state (src/evalkv/replay.h). This checks that shortcut against the engine's own path
// (the compressor installed as the engine's KV policy during the prefill): same rows kept in every
// (layer, KV head), same logits for the tokens that follow.
#include <gtest/gtest.h>

#include <cmath>

#include "evalkv/replay.h"
#include "kv/compressor.h"
#include "one_sequence.h"
#include "tappa/engine.h"
#include "tappa/model.h"
#include "test_util.h"

namespace {

using namespace tappa;

std::vector<int32_t> test_prompt(const Tokenizer& tok, int n) {
  std::string text;
  for (int i = 0; text.size() < static_cast<size_t>(n) * 8; ++i)
    text += "Entry " + std::to_string((i * 7919) % 1000) + " lists the " + (i % 3 ? "river" : "market") +
            " town of " + std::to_string(i * 31 % 97) + ". ";
  auto t = tok.encode(text, true, false);
  t.resize(n);
  return t;
}

TEST(EvalKvReplay, MatchesTheEnginesOwnCompression) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = Model::load(test::default_model());
  const Tokenizer& tok = model->tokenizer();
  const auto prompt = test_prompt(tok, 300);
  const auto tail = tok.encode(" The answer to the question is", false, false);
  EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = 400;
  test::OneSequence real(*model, eo);
  Engine replay(*model, eo);
  const evalkv::Prefilled pre = evalkv::prefill_capture(replay, prompt);
  const ModelConfig& c = model->config();
  for (const char* method : {"snapkv", "streamingllm", "pyramidkv", "cake", "tappa", "tappa-head", "expected-attention",
                             "h2o"}) {
    SCOPED_TRACE(method);
    kv::CompressorFlags f;
    f.method = method;
    f.budget = 96;  // < 300 prompt tokens: every method evicts
    // h2o runs without the engine's attention-row observer on both paths (the replay has no engine
    // rows to sum), so both compute the same 512-row scores.
    kv::KvCompressor a(*model, kv::make_compressor_options(f)), b(*model, kv::make_compressor_options(f));
    real.reset();
    real.set_kv_policy(&a);
    real.eval(prompt);
    real.set_kv_policy(nullptr);
    const auto la = real.eval(tail);
    const std::vector<float> logits_a(la.begin(), la.end());

    const auto seq = evalkv::restore_prefill(replay, pre, &b);
    ASSERT_TRUE(b.record().compressed);
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head_kv; ++h) {
        ASSERT_EQ(a.positions(l, h), b.positions(l, h)) << "layer " << l << " head " << h;
        // The real engine has the tail appended already.
        ASSERT_EQ(real.kv_cache().length(l, h), seq->cache().length(l, h) + static_cast<int>(tail.size()));
      }
    const auto lb = replay.eval(*seq, tail);
    ASSERT_EQ(lb.size(), logits_a.size());
    // Same kept rows, same positions, same thread count: the attention sums run in the same order, so
    // the logits agree to the last bit; 1e-5 only guards against a future change of summation order.
    double max_diff = 0;
    for (size_t i = 0; i < lb.size(); ++i) max_diff = std::max(max_diff, std::fabs(double(lb[i]) - logits_a[i]));
    EXPECT_LE(max_diff, 1e-5);
  }
}

TEST(EvalKvReplay, RestoredFullCacheGivesTheFullRunsLogits) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = Model::load(test::default_model());
  const Tokenizer& tok = model->tokenizer();
  const auto prompt = test_prompt(tok, 200);
  const auto tail = tok.encode(" and then", false, false);
  EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = 300;
  test::OneSequence full(*model, eo);
  Engine replay(*model, eo);
  const auto l0 = full.eval(prompt);
  const std::vector<float> first(l0.begin(), l0.end());
  const auto l1 = full.eval(tail);
  const std::vector<float> ref(l1.begin(), l1.end());
  const evalkv::Prefilled pre = evalkv::prefill_capture(replay, prompt);
  EXPECT_EQ(pre.last_logits, first);
  const auto seq = evalkv::restore_prefill(replay, pre);
  EXPECT_EQ(seq->n_past(), static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(std::vector<int32_t>(seq->tokens().begin(), seq->tokens().end()), prompt);
  const auto l2 = replay.eval(*seq, tail);
  EXPECT_EQ(std::vector<float>(l2.begin(), l2.end()), ref);
}

}  // namespace
