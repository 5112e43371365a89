// Log-likelihood of a continuation given a context, the way lm-evaluation-harness asks a causal LM:
// the context's trailing spaces move to the continuation; the model sees the context's own tokens
// followed by the tokens that the whole string has beyond the context's token count (lm-eval's
// _encode_pair). Only the continuation's positions go through the output head: the context runs
// with last-token logits, the continuation with all logits; choices that share a context reuse its
// cached keys and values (Engine::truncate) instead of recomputing it.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>
#include <memory>
#include <vector>

#include "tappa/engine.h"
#include "tappa/tokenizer.h"

namespace tappa::eval {

// log softmax(logits)[token], accumulated in double.
double log_prob(std::span<const float> logits, int32_t token);

struct EncodedPair {
  std::vector<int32_t> context;       // with BOS when the tokenizer adds one; never empty
  std::vector<int32_t> continuation;  // never empty
};
// Throws tappa::Error when the continuation has no tokens of its own.
EncodedPair encode_pair(const Tokenizer& tok, std::string_view context, std::string_view continuation);

struct ContinuationScore {
  double loglik = 0;   // Σ log P(continuation token | everything before it)
  int n_tokens = 0;
  bool greedy = true;  // every continuation token was the argmax
};

// Scores pairs on one engine, keeping the last context in the cache: a pair with the same context
// tokens as the previous one only runs its continuation. Throws tappa::Error if a pair does not fit
// the engine's context.
class ContinuationScorer {
 public:
  explicit ContinuationScorer(Engine& engine) : engine_(engine), seq_(engine.new_sequence()) {}
  ContinuationScore score(const EncodedPair& pair);
  void forget() { context_.clear(); }

 private:
  Engine& engine_;
  std::unique_ptr<Sequence> seq_;    // the scorer's own sequence
  std::vector<int32_t> context_;     // tokens cached at positions 0..context_.size()-1
  std::vector<float> context_logits_;  // logits after the last context token
};

// One pair from an empty cache.
inline ContinuationScore score_continuation(Engine& engine, const EncodedPair& pair) {
  return ContinuationScorer(engine).score(pair);
}

}  // namespace tappa::eval
