// Perplexity against an independent computation: every chunk run once with all logits, the second
// half's NLL summed by hand with llama-perplexity's indexing.
#include <gtest/gtest.h>

#include <cmath>

#include "one_sequence.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/eval.h"
#include "tappa/model.h"
#include "test_util.h"

namespace {

using namespace tappa;

TEST(EvalPpl, MatchesFullChunkComputation) {
  const std::string p = test::binary_dir() + "/tiny/llama3_tiny.gguf";
  if (!test::exists(p)) GTEST_SKIP() << "tiny model not found";
  const auto model = Model::load(p);
  std::string text;
  for (int i = 0; i < 12; ++i) text += "the quick brown fox " + std::to_string(i * 7) + " jumps over the lazy dog. ";
  const std::vector<int32_t> toks = model->tokenizer().encode(text);
  const int n_ctx = 32;
  const int n = eval::count_chunks(static_cast<int64_t>(toks.size()), n_ctx, 3);
  ASSERT_EQ(n, 3);
  EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = n_ctx;
  test::OneSequence e(*model, eo);
  const int32_t bos = 1;  // any valid id: checks that the first slot is replaced
  std::vector<eval::ChunkNll> chunks;
  for (int c = 0; c < n; ++c) chunks.push_back(eval::score_chunk(e.engine(), e.seq(), toks, c, n_ctx, bos));
  const eval::PplSummary s = eval::summarise(chunks);

  double nll = 0;
  int64_t count = 0;
  for (int c = 0; c < n; ++c) {
    std::vector<int32_t> chunk(toks.begin() + c * n_ctx, toks.begin() + (c + 1) * n_ctx);
    chunk[0] = bos;
    e.reset();
    const auto logits = e.eval(chunk, true);
    const size_t V = logits.size() / n_ctx;
    for (int j = n_ctx / 2; j < n_ctx - 1; ++j) {
      const float* row = logits.data() + j * V;
      double z = 0;
      for (size_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]));
      nll += std::log(z) - row[chunk[j + 1]];
      ++count;
    }
  }
  EXPECT_EQ(s.n_scored, count);
  EXPECT_EQ(count, 3 * (n_ctx - n_ctx / 2 - 1));
  // Same activations up to matmul batching; 1e-5 relative is far above fp32 reduction noise on
  // this fp32 tiny model and far below the effect of scoring a wrong position.
  EXPECT_NEAR(s.ppl, std::exp(nll / count), 1e-5 * s.ppl);
  EXPECT_GT(s.ppl_stderr, 0.0);
}

TEST(EvalPpl, ChunkCountRules) {
  EXPECT_EQ(eval::count_chunks(2048, 512, -1), 4);
  EXPECT_EQ(eval::count_chunks(2048, 512, 2), 2);
  EXPECT_THROW(eval::count_chunks(1000, 512, -1), Error);  // fewer than 2*n_ctx tokens
  EXPECT_THROW(eval::count_chunks(1000, 2, -1), Error);
}

}  // namespace
