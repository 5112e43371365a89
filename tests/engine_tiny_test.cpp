// The qwen2 and Llama 3 code paths on tiny random-weight GGUF files written by
// scripts/make_tiny_models.py, against that script's independent numpy forward pass (fp64).
//
// Tolerances: with fp32 weights tappa computes in fp32 throughout, so the only error is fp32
// rounding over a few hundred accumulations: relative to the largest logit it stays near 1e-6;
// we allow 1e-4. With Q8_0/F16 weights in the file, tappa (like llama.cpp) rounds the activations
// to 8 bits per 32-element block (relative step 1/127) or to fp16 (2^-11) before the dot products,
// while numpy multiplies exact activations with the same dequantized weights; the logits of a
// 2-layer model then move by about 1% of their scale, so we allow 3e-2 relative — still far below
// the error of any structural mistake (wrong RoPE layout or frequencies, missing bias, wrong GQA
// grouping), which changes logits by their own magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "one_sequence.h"
#include "tappa/engine.h"
#include "tappa/observer.h"
#include "test_util.h"

namespace tappa {
namespace {

std::string tiny_dir() { return test::binary_dir() + "/tiny"; }

void check_tiny(const std::string& name) {
  const std::string gguf = tiny_dir() + "/" + name + ".gguf";
  const std::string expected = tiny_dir() + "/" + name + ".expected.json";
  if (!test::exists(gguf) || !test::exists(expected))
    GTEST_SKIP() << gguf << " not found: the ctest fixture make_tiny_models writes it (needs .cache/venv from scripts/install_deps.sh)";
  std::ifstream in(expected);
  const auto j = nlohmann::json::parse(in);
  const auto tokens = j.at("tokens").get<std::vector<int32_t>>();
  const auto ref = j.at("logits").get<std::vector<std::vector<double>>>();
  const auto model = Model::load(gguf);
  bool all_f32 = true;
  for (const auto& t : model->file().tensors())
    if (t.shape.size() == 2 && t.type != TensorType::F32) all_f32 = false;

  // The CPU backend and the reference backend (plain loops, backend/reference) against numpy alike.
  for (const auto& [backend_name, threads] : {std::pair{"cpu", 1}, std::pair{"cpu", 2}, std::pair{"reference", 1}}) {
    test::OneSequence engine(*model, EngineOptions{threads, static_cast<int>(tokens.size()) + 4, 512, backend_name});
    const auto logits = engine.eval(tokens, true);
    const int V = model->config().n_vocab;
    ASSERT_EQ(ref.size(), tokens.size());
    double max_abs_ref = 0, max_diff = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      ASSERT_EQ(ref[i].size(), static_cast<size_t>(V));
      for (int v = 0; v < V; ++v) {
        max_abs_ref = std::max(max_abs_ref, std::fabs(ref[i][v]));
        max_diff = std::max(max_diff, std::fabs(logits[i * V + v] - ref[i][v]));
      }
    }
    const double rel = max_diff / max_abs_ref;
    std::printf("[tiny] %-14s %-9s threads %d  max|dlogit| %.3g  (relative %.3g, %s weights)\n", name.c_str(), backend_name,
                threads, max_diff, rel, all_f32 ? "fp32" : "quantized");
    EXPECT_LT(rel, all_f32 ? 1e-4 : 3e-2) << name;
  }
}

// Processing a prompt in one batch, in batches of 5, or token by token must give the same logits up
// to fp32 summation order. The fp32 tiny model is used because there no 8-bit activation rounding
// amplifies those last-bit differences (on the quantized default model they flip roundings).
TEST(EngineTiny, BatchSplitDoesNotChangeLogits) {
  const std::string gguf = tiny_dir() + "/llama3_tiny.gguf";
  if (!test::exists(gguf)) GTEST_SKIP() << gguf << " not found";
  const auto model = Model::load(gguf);
  std::vector<int32_t> toks;
  for (int i = 0; i < 20; ++i) toks.push_back((i * 37 + 11) % model->config().n_vocab);
  const int V = model->config().n_vocab;
  test::OneSequence whole(*model, EngineOptions{2, 32, 512});
  const auto a = whole.eval(toks, true);
  const std::vector<float> all(a.begin(), a.end());
  test::OneSequence split(*model, EngineOptions{2, 32, 5});
  const auto b = split.eval(toks, true);
  test::OneSequence single(*model, EngineOptions{1, 32, 512});
  double max_ab = 0, max_ac = 0, scale = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    max_ab = std::max(max_ab, static_cast<double>(std::fabs(all[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(all[i])));
  }
  for (size_t t = 0; t < toks.size(); ++t) {
    const int32_t one[1] = {toks[t]};
    const auto l = single.eval(one);
    for (int v = 0; v < V; ++v) max_ac = std::max(max_ac, static_cast<double>(std::fabs(all[t * V + v] - l[v])));
  }
  EXPECT_LT(max_ab / scale, 1e-5);
  EXPECT_LT(max_ac / scale, 1e-5);
}

// The engine's chunk workspace grows with the longest call so far, and the observers' buffers (block
// inputs, pre-RoPE q/k) only with calls that observe. An observed call, then a longer unobserved one,
// then an observed one as long: the last must see exactly what a fresh engine's observer sees (its
// buffers grown for it; they once stayed at the first call's size and the copy ran past them —
// KVzip's replays in eval-kv; AddressSanitizer reports it, and the values below may differ).
TEST(EngineTiny, ObserverBuffersGrowWithLaterCalls) {
  const std::string gguf = tiny_dir() + "/llama3_tiny.gguf";
  if (!test::exists(gguf)) GTEST_SKIP() << gguf << " not found";
  const auto model = Model::load(gguf);
  struct Blocks final : Observer {
    std::vector<float> in;  // layer 0's block input, every row
    void on_block(int layer, const float* x, const float*, int n, int e) override {
      if (layer == 0) in.assign(x, x + static_cast<size_t>(n) * e);
    }
  };
  const auto prompt = [&](int n, int salt) {
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back((i * 37 + salt) % model->config().n_vocab);
    return t;
  };
  const std::vector<int32_t> shortp = prompt(8, 3), longp = prompt(40, 5);
  Engine e(model, EngineOptions{1, 64, 512});
  Blocks first, last;
  auto a = e.new_sequence();
  a->set_observer(&first);
  e.eval(*a, shortp);
  auto b = e.new_sequence();
  e.eval(*b, longp);  // unobserved, longer: grows the chunk buffers only
  auto c = e.new_sequence();
  c->set_observer(&last);
  e.eval(*c, longp);
  Engine fresh(model, EngineOptions{1, 64, 512});
  Blocks ref;
  auto d = fresh.new_sequence();
  d->set_observer(&ref);
  fresh.eval(*d, longp);
  ASSERT_EQ(ref.in.size(), static_cast<size_t>(longp.size()) * model->config().n_embd);
  EXPECT_EQ(last.in, ref.in);
}

TEST(EngineTiny, Qwen2MatchesNumpyReference) { check_tiny("qwen2_tiny"); }
TEST(EngineTiny, Llama3MatchesNumpyReference) { check_tiny("llama3_tiny"); }
TEST(EngineTiny, SmolStyleQuantizedMatchesNumpyReference) { check_tiny("smol_tiny"); }

}  // namespace
}  // namespace tappa
