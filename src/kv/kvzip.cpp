// KVzip (Kim et al., arXiv 2505.23416; kvpress KVzipPress) as a scorer: query-agnostic, a prompt key
// matters as much as the model needs it to reproduce the prompt. After the prefill the model is asked
// to repeat its context ("Repeat the previous context exactly." + the assistant turn + the context
// again, in chunks); each key's score is the largest attention it receives from those replay queries,
// over the query heads of its KV group and over every query of the replay. Keys no replay reads
// score 0; the first n-sink keys score 1 (no attention can exceed it), as in kvpress.
//
// The replay itself is generic (KvCompressor::replay runs the calls below on forks of the sequence
// and collects the per-query-head maxima); this file only says which calls to make and how maxima
// become scores. Spec keys: kvzip-chunk (context tokens per replay call, kvpress 2048) and
// kvzip-overlap (tokens of the previous chunk quoted in the next call's request, kvpress 8).
// docs/KV_COMPRESSION.md ("KVzip") lists where this differs from kvpress.
#include <algorithm>
#include <cmath>
#include <string>

#include "kv/methods.h"
#include "tappa/error.h"
#include "tappa/tokenizer.h"

namespace tappa::kv {

namespace {

constexpr double kDefaultChunk = 2048;
constexpr double kDefaultOverlap = 8;

// The end of a user turn and the start of the assistant's, as the chat template writes them ("\n"
// without a template), so the replay reads as the model answering the request.
std::vector<int32_t> assistant_turn(const Tokenizer& tok) {
  if (tok.chat_template().empty()) return tok.encode("\n", false, false);
  const std::string marker = "\x01tappa-kvzip\x01";
  const std::string wrapped = tok.apply_chat_template({{"user", marker}}, true);
  const size_t at = wrapped.find(marker);
  if (at == std::string::npos) return tok.encode("\n", false, false);
  return tok.encode(wrapped.substr(at + marker.size()), false, true);
}

class KvzipScorer final : public Scorer {
 public:
  std::string_view name() const override { return "kvzip"; }
  std::string_view description() const override {
    return "KVzip: max attention each key gets while the model repeats the context (query-agnostic, one replay pass)";
  }
  bool needs_replay() const override { return true; }
  std::vector<std::string_view> extra_keys() const override { return {"kvzip-chunk", "kvzip-overlap"}; }

  void validate(const MethodOptions& o) const override {
    const double chunk = o.extra_or("kvzip-chunk", kDefaultChunk), overlap = o.extra_or("kvzip-overlap", kDefaultOverlap);
    if (!(chunk >= 1 && chunk <= 1 << 20) || chunk != std::floor(chunk))
      throw Error(ErrorCode::bad_input, "kvzip-chunk must be a whole number of tokens in [1, 1048576]");
    if (!(overlap >= 0 && overlap <= chunk) || overlap != std::floor(overlap))
      throw Error(ErrorCode::bad_input, "kvzip-overlap must be a whole number of tokens in [0, kvzip-chunk]");
  }

  std::vector<ReplayCall> replay_calls(std::span<const int32_t> context, const Tokenizer* tok,
                                       const MethodOptions& o) const override {
    const int n = static_cast<int>(context.size());
    const int chunk = static_cast<int>(o.extra_or("kvzip-chunk", kDefaultChunk));
    const int overlap = static_cast<int>(o.extra_or("kvzip-overlap", kDefaultOverlap));
    // A model without a tokenizer (random weights) replays the bare context.
    std::vector<int32_t> first, later, turn;
    if (tok) {
      first = tok->encode("\n\nRepeat the previous context exactly.", false, false);
      later = tok->encode("\n\nRepeat the part of the previous context exactly, starting with", false, false);
      turn = assistant_turn(*tok);
    }
    std::vector<ReplayCall> calls;
    for (int b = 0; b < n; b += chunk) {
      const int e = std::min(n, b + chunk);
      ReplayCall c;
      c.key_begin = b;
      c.key_end = e;
      c.tokens = b == 0 ? first : later;
      if (b > 0) c.tokens.insert(c.tokens.end(), context.begin() + std::max(0, b - overlap), context.begin() + b);
      c.tokens.insert(c.tokens.end(), turn.begin(), turn.end());
      c.tokens.insert(c.tokens.end(), context.begin() + b, context.begin() + e);
      calls.push_back(std::move(c));
    }
    return calls;
  }

  void score(const LayerInputs& in, const MethodOptions& o, int P, std::span<float> s) const override {
    if (!in.replay_max) return;  // during the prefill: placeholders until the replay has run
    const int H_kv = in.keys.n_heads, H = in.n_head;
    if (H_kv < 1 || H % H_kv != 0)
      throw Error(ErrorCode::internal, "kvzip: query heads (" + std::to_string(H) + ") not a multiple of KV heads");
    const int G = H / H_kv;
    for (int kv = 0; kv < H_kv; ++kv) {
      float* dst = s.data() + static_cast<std::ptrdiff_t>(kv) * P;
      std::fill(dst, dst + P, 0.0f);
      for (int g = 0; g < G; ++g) {
        const float* m = in.replay_max + static_cast<std::ptrdiff_t>(kv * G + g) * in.replay_stride;
        for (int j = 0; j < P; ++j) dst[j] = std::max(dst[j], m[j]);
      }
      for (int j = 0; j < std::min(o.n_sink, P); ++j) dst[j] = 1.0f;
    }
  }
};

}  // namespace

const Scorer& kvzip_scorer() {
  static const KvzipScorer s;
  return s;
}

}  // namespace tappa::kv
