// GCC 12 reports a false -Wmaybe-uninitialized inside _mm512_reduce_add_ps; silence it here only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "backend/cpu/attention.h"

#include <algorithm>

#include "backend/cpu/ops.h"
#include "backend/cpu/vec.h"

namespace tappa::cpu {

void attention_row(const AttentionRow& a, float* probs, float* out) {
  const int HD = a.head_dim;
  std::fill(probs, probs + a.first, 0.0f);
  for (int j = a.first; j < a.n_vis; ++j) probs[j] = dot_f32(a.q, a.K + static_cast<int64_t>(j) * HD, HD) * a.scale;
  softmax(probs + a.first, a.n_vis - a.first);
  std::fill(out, out + HD, 0.0f);
  for (int j = a.first; j < a.n_vis; ++j) axpy_f32(probs[j], a.V + static_cast<int64_t>(j) * HD, out, HD);
}

}  // namespace tappa::cpu
