// A pruned GGUF (blocks removed and renumbered) must compute exactly what the original model
// computes with those layers skipped in memory.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "one_sequence.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/model.h"
#include "tappa/prune.h"
#include "test_util.h"

namespace {

using namespace tappa;

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& toks, const std::vector<int>& skip) {
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 256;
  test::OneSequence e(m, eo);
  e.set_skip_layers(skip);
  const auto l = e.eval(toks, /*all_logits=*/true);
  return {l.begin(), l.end()};
}

// Same weights, same kernels, same thread count, same order of operations: the two runs are
// expected to be bit-identical, so the tolerance is exactly zero.
void check_pruned_equals_skip(const std::string& src, const std::vector<int>& remove, const std::string& prompt) {
  const std::string out = test::binary_dir() + "/prune_test_" + std::filesystem::path(src).stem().string() + ".gguf";
  const GgufFile in = GgufFile::open(src);
  const prune::PruneSummary s = prune::write_pruned_gguf(in, remove, out);
  EXPECT_EQ(s.n_layer_after, s.n_layer_before - static_cast<int>(remove.size()));
  const auto full = Model::load(src);
  const auto pruned = Model::load(out);
  EXPECT_EQ(pruned->config().n_layer, s.n_layer_after);
  const auto* rec = pruned->file().find("tappa.pruned_layers");
  ASSERT_NE(rec, nullptr);
  ASSERT_EQ(rec->as_array().values.size(), remove.size());
  for (size_t i = 0; i < remove.size(); ++i) EXPECT_EQ(rec->as_array().values[i].as_i64(), remove[i]);
  // Blocks are dense 0..n_after-1 and nothing of a removed block survives.
  EXPECT_NE(pruned->file().find_tensor("blk." + std::to_string(s.n_layer_after - 1) + ".attn_q.weight"), nullptr);
  EXPECT_EQ(pruned->file().find_tensor("blk." + std::to_string(s.n_layer_after) + ".attn_q.weight"), nullptr);
  EXPECT_EQ(pruned->file().tensors().size() + s.n_tensors_removed, in.tensors().size());

  const std::vector<int32_t> toks = full->tokenizer().encode(prompt);
  ASSERT_GT(toks.size(), 3u);
  const auto a = logits_of(*full, toks, remove);
  const auto b = logits_of(*pruned, toks, {});
  const auto c = logits_of(*full, toks, {});
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0, max_diff_full = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::abs(a[i] - b[i])));
    max_diff_full = std::max(max_diff_full, static_cast<double>(std::abs(a[i] - c[i])));
  }
  EXPECT_EQ(max_diff, 0.0) << src;
  EXPECT_GT(max_diff_full, 1e-3) << "removing layers should change the logits (" << src << ")";
  std::filesystem::remove(out);
}

TEST(PruneGguf, TinyModelsMatchSkipLayers) {
  int ran = 0;
  for (const char* name : {"llama3_tiny", "qwen2_tiny", "smol_tiny"}) {
    const std::string p = test::binary_dir() + "/tiny/" + name + ".gguf";
    if (!test::exists(p)) continue;
    check_pruned_equals_skip(p, {0}, "hello world, this is a tiny test");
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "tiny models not found (ctest fixture make_tiny_models)";
}

TEST(PruneGguf, DefaultModelMatchesSkipLayers) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  check_pruned_equals_skip(test::default_model(), {3, 17, 18, 25}, "The capital of France is Paris, and the capital of");
}

// llama.cpp on the same pruned file (TAPPA beta 0.2's first four layers of the default model,
// {12, 13, 16, 19}): tests/data/prune/pruned_12_13_16_19.oracle.json was written by the oracle's
// dump_logits (f32 K/V, no flash attention, 64 positions of tests/data/prompts/prose_lighthouse.txt,
// top-10 logits, 16 greedy tokens after a 32-token prefix).
TEST(PruneGguf, PrunedFileMatchesLlamaCpp) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  std::ifstream in(test::source_dir() + "/tests/data/prune/pruned_12_13_16_19.oracle.json");
  const auto j = nlohmann::json::parse(in);
  const std::string out = test::binary_dir() + "/prune_test_oracle.gguf";
  prune::write_pruned_gguf(GgufFile::open(test::default_model()), {12, 13, 16, 19}, out);
  const auto m = Model::load(out);
  const auto tokens = j.at("tokens").get<std::vector<int32_t>>();
  const int n_pos = j.at("n_positions").get<int>();
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 256;
  test::OneSequence e(*m, eo);
  const auto logits = e.eval(std::span(tokens.data(), n_pos), true);
  const size_t V = m->config().n_vocab;
  double max_diff = 0;
  int clear = 0, clear_agree = 0;
  for (int i = 0; i < n_pos; ++i) {
    const auto& pos = j.at("positions").at(i);
    const auto row = logits.subspan(i * V, V);
    const auto& top = pos.at("top");
    for (const auto& t : top) max_diff = std::max(max_diff, std::fabs(row[t.at(0).get<int>()] - t.at(1).get<double>()));
    if (top.at(0).at(1).get<double>() - top.at(1).at(1).get<double>() >= 0.01) {
      ++clear;
      clear_agree += argmax(row) == pos.at("argmax").get<int32_t>();
    }
  }
  // Same bound as the unpruned model's golden test (engine_golden_test: 2e-3 on llama.cpp's top-k):
  // fp32 reduction order and 8-bit activation rounding differ between the two engines.
  EXPECT_LT(max_diff, 2e-3);
  // A logit error below 2e-3 cannot flip an argmax whose margin is 0.01 or more.
  EXPECT_EQ(clear_agree, clear);
  EXPECT_GT(clear, n_pos / 2);

  // Greedy continuation, teacher-forced with llama.cpp's tokens: every step whose margin is clear
  // must pick the same token.
  const int prefix = j.at("greedy").at("prefix_len").get<int>();
  const auto greedy = j.at("greedy").at("tokens").get<std::vector<int32_t>>();
  const auto margin = j.at("greedy").at("margin").get<std::vector<double>>();
  e.reset();
  auto l = e.eval(std::span(tokens.data(), prefix));
  int steps = 0;
  for (size_t g = 0; g < greedy.size(); ++g) {
    if (margin[g] >= 0.01) {
      EXPECT_EQ(argmax(l), greedy[g]) << "greedy step " << g;
      ++steps;
    }
    l = e.eval(std::span(&greedy[g], 1));
  }
  EXPECT_GE(steps, 10);
  std::filesystem::remove(out);
}

TEST(PruneGguf, RejectsBadLayerSets) {
  const std::string p = test::binary_dir() + "/tiny/llama3_tiny.gguf";
  if (!test::exists(p)) GTEST_SKIP() << "tiny model not found";
  const GgufFile in = GgufFile::open(p);
  const std::string out = test::binary_dir() + "/prune_test_bad.gguf";
  EXPECT_THROW(prune::write_pruned_gguf(in, {0, 1}, out), Error);  // every layer
  EXPECT_THROW(prune::write_pruned_gguf(in, {2}, out), Error);     // out of range
  EXPECT_FALSE(test::exists(out));
}

}  // namespace
