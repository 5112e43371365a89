// Scaled dot-product attention of one query row against one KV head's cached rows. The engine calls
// it per (token, head); the summation order is this file's business (see attention.cpp), so the
// engine stays free of arithmetic details and other backends can provide the same entry point.
#pragma once
#include "backend/cpu/isa.h"
#include <cstdint>

namespace tappa::cpu {

struct AttentionRow {
  const float* q = nullptr;  // [head_dim], RoPE applied
  const float* K = nullptr;  // [n_rows][head_dim], row j = cached key j
  const float* V = nullptr;  // [n_rows][head_dim]
  int first = 0;             // first visible row (a sliding window starts later than 0)
  int n_vis = 0;             // rows [first, n_vis) are visible; n_vis includes the query's own row
  int head_dim = 0;
  float scale = 1.0f;        // applied to q·k before the softmax
  // True when the call evaluates a single token (decode). llama.cpp sums q·k in a different order
  // for one token than for a batch; following it keeps tappa's logits on llama.cpp's.
  bool single_token = false;
};

// probs receives the softmax weights at [first, n_vis) (entries before `first` are set to 0, so
// observers can read probs[0..n_vis)); out[head_dim] the weighted sum of V rows.
TAPPA_ISA_BEGIN
void attention_row(const AttentionRow& a, float* probs, float* out);

// Several query heads that share one KV head (GQA) and the same K, V, first, n_vis, head_dim and
// single_token (q and scale may differ): each key and value row is read once for the group, which
// divides the memory traffic of long-context decoding by the group size. Results are bit-identical
// to attention_row on each head.
void attention_rows(const AttentionRow* rows, int count, float* const* probs, float* const* outs);
TAPPA_ISA_END

}  // namespace tappa::cpu
