// AdaKV (Feng et al., NeurIPS'25; kvpress AdaKVPress) as an allocator that wraps any scorer: every layer
// gets the same budget b (as uniform), but inside a layer the H_kv·b prefix rows go to whichever KV
// heads hold the highest scores — one top-k over all the layer's heads instead of b per head — so a
// head with a few sharp keys gives rows to a head with spread-out attention. Safeguard (kvpress
// alpha_safeguard): each head first keeps its own top ⌊α·b⌋ (spec key adakv-alpha, default 0.2).
// Scores of different heads are compared as they come from the scorer (kvpress does the same), so the
// pairing makes sense for scorers whose scores share a scale across heads (attention-based ones).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kv/methods.h"

namespace tappa::kv {

namespace {

class AdaKvAllocator final : public Allocator {
 public:
  std::string_view name() const override { return "adakv"; }
  std::string_view description() const override {
    return "AdaKV: uniform layer budgets, split over KV heads by one top-k over all their scores (safeguard adakv-alpha)";
  }
  bool reads_scores() const override { return true; }
  LayerBudgets plan(const MethodOptions&, const BudgetContext& c, std::span<const double>) const override {
    return uniform_budgets(c);
  }

  std::vector<int> head_budgets(const MethodOptions& o, const LayerScores& s, int layer_budget) const override {
    const int H_kv = s.n_head_kv, P = s.n_prefix;
    const int b = std::min(layer_budget, P);
    if (H_kv <= 1 || b <= 0 || s.scores.size() != static_cast<size_t>(H_kv) * P) return Allocator::head_budgets(o, s, layer_budget);
    const int safe = static_cast<int>(std::floor(o.adakv_alpha * b));
    // Each head's rows by descending score (NaN last, ties: lower row first).
    auto key = [](float v) { return std::isnan(v) ? -INFINITY : v; };
    std::vector<int> order(P);
    // Candidates beyond every head's safeguard: (score, head, rank in head).
    struct Cand {
      float v;
      int head, rank;
    };
    std::vector<Cand> rest;
    rest.reserve(static_cast<size_t>(H_kv) * (P - safe));
    for (int h = 0; h < H_kv; ++h) {
      const float* sc = s.scores.data() + static_cast<size_t>(h) * P;
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return key(sc[x]) > key(sc[y]); });
      for (int r = safe; r < P; ++r) rest.push_back({key(sc[order[r]]), h, r});
    }
    const size_t want = static_cast<size_t>(H_kv) * (b - safe);
    std::vector<int> out(H_kv, safe);
    if (want >= rest.size()) return std::vector<int>(H_kv, P);
    std::nth_element(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(want), rest.end(), [](const Cand& x, const Cand& y) {
      if (x.v != y.v) return x.v > y.v;
      return x.head != y.head ? x.head < y.head : x.rank < y.rank;
    });
    for (size_t i = 0; i < want; ++i) ++out[rest[i].head];
    return out;
  }
};

}  // namespace

const Allocator& adakv_allocator() {
  static const AdaKvAllocator a;
  return a;
}

}  // namespace tappa::kv
