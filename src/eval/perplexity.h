// Perplexity the way llama.cpp's llama-perplexity computes it (its default mode): the text is
// tokenised whole (with BOS when the model adds one), cut into non-overlapping chunks of n_ctx
// tokens, the first token of each chunk is replaced by BOS (when the model uses one), every chunk is
// evaluated from an empty cache, and only the second half is scored — token j+1 from the logits at
// position j for j = n_ctx/2 … n_ctx−2 — so every scored token has at least n_ctx/2 tokens of context.
// PPL = exp(mean NLL); the ± is llama-perplexity's: PPL · sqrt(var(NLL)/(N−1)).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "tappa/engine.h"

namespace tappa::eval {

struct ChunkNll {
  double nll_sum = 0;   // Σ −log p over the chunk's scored tokens
  double nll2_sum = 0;  // Σ (−log p)²
  int64_t count = 0;
};

struct PplSummary {
  double ppl = 0, ppl_stderr = 0;
  double mean_nll = 0;
  int64_t n_scored = 0;
  int n_chunks = 0;
};

// How many whole chunks the tokens give, capped by max_chunks (< 0: no cap). Throws tappa::Error
// when n_ctx < 4 or there are fewer than 2·n_ctx tokens (llama-perplexity's own requirement).
int count_chunks(int64_t n_tokens, int n_ctx, int max_chunks);

// Scores chunk `index` (tokens [index·n_ctx, (index+1)·n_ctx)). `bos` < 0: keep the first token.
ChunkNll score_chunk(Engine& engine, Sequence& seq, std::span<const int32_t> tokens, int index, int n_ctx, int32_t bos);

PplSummary summarise(std::span<const ChunkNll> chunks);

}  // namespace tappa::eval
