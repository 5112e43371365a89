// Replaying one prefill for many KV-compression methods (see runner.h for why this is exact): the
// prompt is run once with a capturing policy; each method then gets an engine restored to the state
// right after that prompt and a KvCompressor driven through the same hooks the engine calls.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kv/compressor.h"
#include "kv/kv_cache.h"
#include "kv/policy.h"
#include "tappa/engine.h"

namespace tappa::evalkv {

struct CapturedLayer {
  PrefillLayerView view;             // pointers are re-set from the copies below on replay
  std::vector<float> q_post, q_pre;  // [n_rows][n_head*head_dim]
};

struct Prefilled {
  std::vector<int32_t> tokens;
  std::vector<CapturedLayer> layers;
  std::unique_ptr<KvCache> cache;    // the uncompressed cache after the prompt
  std::vector<float> last_logits;    // logits of the prompt's last token (independent of compression)
};

// Runs `tokens` (from position 0, after engine.reset()) and captures every layer's policy view with
// all query rows (expected-attention reads every row; the others read the last ones).
Prefilled prefill_capture(Engine& engine, std::vector<int32_t> tokens);

// Puts the engine in the state right after the prompt: positions advanced by an eval with every
// layer skipped (nothing computed or cached), then the captured cache put back layer by layer, as the
// engine fills it, with `comp` (if any) called after each layer and at the end exactly as the engine
// calls its policy — so the compressor cannot tell the replay from a real prefill. No policy or
// observer stays installed.
void restore_prefill(Engine& engine, const Prefilled& p, kv::KvCompressor* comp = nullptr);

// Greedy decoding from `logits` (the next token's distribution): up to max_new tokens, stopping at an
// end-of-generation token, or at the first newline after some non-blank text when stop_at_newline.
std::string greedy_generate(Engine& engine, const Tokenizer& tok, std::span<const float> logits, int max_new,
                            bool stop_at_newline);

}  // namespace tappa::evalkv
