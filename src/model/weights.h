// Views of a model's weights inside the mapped GGUF file, per layer. Internal to the library: the
// engine reads them, nothing outside src/ should.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/weight_view.h"

namespace tappa {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [n_embd]
  WeightView wq, wk, wv, wo;    // wq: rows n_head*head_dim, cols n_embd
  const float* bq = nullptr;         // biases (qwen2), else nullptr
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* ffn_norm = nullptr;   // [n_embd]
  WeightView w_gate, w_up, w_down;
  // gemma3: RMSNorm weights of each Q/K head ([head_dim]) and of the attention / FFN outputs ([n_embd]).
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  const float* post_attn_norm = nullptr;
  const float* post_ffn_norm = nullptr;
};

struct ModelWeights {
  WeightView token_embd;  // rows n_vocab, cols n_embd
  const float* output_norm = nullptr;
  WeightView output;      // == token_embd when tied
  const float* rope_freqs = nullptr;  // [n_rot/2] frequency divisors, or nullptr
  std::vector<LayerWeights> layers;
  std::vector<std::vector<float>> owned;  // fp32 copies of small vectors not stored as F32
  // Matrices rewritten at load into a format the kernels take (Q5_0 -> Q8_0, exact; see quant.h).
  std::vector<std::vector<uint8_t>> owned_bytes;
};

}  // namespace tappa
