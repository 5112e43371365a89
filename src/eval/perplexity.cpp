#include "tappa/eval.h"

#include <cmath>
#include <string>

#include "eval/loglik.h"
#include "tappa/error.h"

namespace tappa::eval {

int count_chunks(int64_t n_tokens, int n_ctx, int max_chunks) {
  if (n_ctx < 4) throw Error("perplexity context must be at least 4 tokens");
  if (n_tokens < 2 * static_cast<int64_t>(n_ctx))
    throw Error("the text has " + std::to_string(n_tokens) + " tokens; perplexity needs at least 2*n_ctx = " +
                std::to_string(2 * n_ctx) + " (use a longer text or a smaller -c)");
  const int64_t whole = n_tokens / n_ctx;
  return static_cast<int>(max_chunks < 0 ? whole : std::min<int64_t>(whole, max_chunks));
}

ChunkNll score_chunk(Engine& engine, Sequence& seq, std::span<const int32_t> tokens, int index, int n_ctx, int32_t bos) {
  const size_t start = static_cast<size_t>(index) * n_ctx;
  if (start + n_ctx > tokens.size()) throw Error("perplexity chunk " + std::to_string(index) + " is past the text");
  std::vector<int32_t> chunk(tokens.begin() + start, tokens.begin() + start + n_ctx);
  if (bos >= 0) chunk[0] = bos;
  const int first = n_ctx / 2;
  ChunkNll r;
  const auto add = [&](std::span<const float> row, int32_t target) {
    const double nll = -log_prob(row, target);
    r.nll_sum += nll;
    r.nll2_sum += nll * nll;
    ++r.count;
  };
  seq.reset();
  // Positions 0..first need no logits except the last (it predicts token first+1).
  std::span<const float> logits = engine.eval(seq, std::span<const int32_t>(chunk.data(), first + 1));
  add(logits, chunk[first + 1]);
  const int rest = n_ctx - first - 2;  // positions first+1 .. n_ctx-2
  if (rest > 0) {
    logits = engine.eval(seq, std::span<const int32_t>(chunk.data() + first + 1, rest), /*all_logits=*/true);
    const size_t V = logits.size() / rest;
    for (int i = 0; i < rest; ++i) add(logits.subspan(i * V, V), chunk[first + 2 + i]);
  }
  return r;
}

PplSummary summarise(std::span<const ChunkNll> chunks) {
  PplSummary s;
  double nll = 0, nll2 = 0;
  for (const ChunkNll& c : chunks) {
    nll += c.nll_sum;
    nll2 += c.nll2_sum;
    s.n_scored += c.count;
  }
  s.n_chunks = static_cast<int>(chunks.size());
  if (s.n_scored == 0) return s;
  nll /= s.n_scored;
  nll2 /= s.n_scored;
  s.mean_nll = nll;
  s.ppl = std::exp(nll);
  const double var = nll2 - nll * nll;
  s.ppl_stderr = (var > 0 && s.n_scored > 1) ? std::sqrt(var / (s.n_scored - 1)) * s.ppl : 0.0;
  return s;
}

}  // namespace tappa::eval
