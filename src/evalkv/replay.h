// Replaying one prefill for many KV-compression methods (see runner.h for why this is exact): the
// prompt is run once with a capturing policy and the sequence's state saved; each method then gets a
// sequence restored from that state, and a KvCompressor driven through the same hooks the engine
// calls during a prefill.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kv/compressor.h"
#include "tappa/engine.h"
#include "tappa/kv_policy.h"

namespace tappa::evalkv {

struct CapturedLayer {
  PrefillLayerView view;             // pointers are re-set from the copies below on replay
  std::vector<float> q_post, q_pre;  // [n_rows][n_head*head_dim]
};

struct Prefilled {
  std::vector<int32_t> tokens;
  std::vector<CapturedLayer> layers;
  std::vector<uint8_t> state;        // Sequence::save() right after the prompt (uncompressed cache)
  std::vector<float> last_logits;    // logits of the prompt's last token (independent of compression)
  std::optional<KvCacheType> cache;  // the K/V storage it ran with (unset: the engine's default)
};

// Runs `tokens` from position 0 in a new sequence and captures every layer's policy view with the last
// `query_rows` query rows (0: all of them — expected-attention reads every row, the others the last
// ones; KvCompressor::prefill_query_rows() says how many a method needs).
// `cache`: the sequence's K/V storage (the prompt's own attention already reads it); restore_prefill
// gives the restored sequences the same.
Prefilled prefill_capture(Engine& engine, std::vector<int32_t> tokens, int query_rows = 0,
                          std::optional<KvCacheType> cache = std::nullopt);

// A sequence in the state right after the prompt (Sequence::restore). With `comp`, the cache is
// handed to it as a prefill would: on_prefill_begin, then layer by layer (the later layers still
// empty) on_prefill_layer with the captured views, then on_prefill_done — so the compressor cannot
// tell the replay from a real prefill. The returned sequence has no policy or observer attached.
std::unique_ptr<Sequence> restore_prefill(Engine& engine, const Prefilled& p, kv::KvCompressor* comp = nullptr);

// Greedy decoding of `seq` from `logits` (the next token's distribution): up to max_new tokens,
// stopping at an end-of-generation token, or at the first newline after some non-blank text when
// stop_at_newline.
std::string greedy_generate(Engine& engine, Sequence& seq, const Tokenizer& tok, std::span<const float> logits,
                            int max_new, bool stop_at_newline);

}  // namespace tappa::evalkv
