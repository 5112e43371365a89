// The scorers and allocators the papers' baselines are made of (docs/KV_COMPRESSION.md has every
// formula): each is a thin class over the arithmetic of scorers.h / allocators.h. registry.cpp lists
// them and pairs them into presets.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kv/methods.h"
#include "tappa/error.h"

namespace tappa::kv {

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error("kv: " + what); }

// --- scorers ---------------------------------------------------------------------------------

class NoScorer final : public Scorer {
 public:
  std::string_view name() const override { return "none"; }
  std::string_view description() const override { return "no scores: nothing is evicted"; }
  bool none() const override { return true; }
};

class StreamingLlmScorer final : public Scorer {
 public:
  std::string_view name() const override { return "streamingllm"; }
  std::string_view description() const override { return "attention sinks (first n-sink tokens) + the most recent tokens"; }
  void score(const LayerInputs& in, const MethodOptions& o, int P, std::span<float> s) const override {
    streamingllm_scores(in.keys.n_heads, P, o.n_sink, s, o.streaming_keep_first);
  }
};

class H2oScorer final : public Scorer {
 public:
  std::string_view name() const override { return "h2o"; }
  std::string_view description() const override { return "heavy hitters: attention summed over the last 512 prompt queries"; }
  void needs(const MethodOptions& o, int n, LayerNeeds& need) const override {
    need.query_rows = std::min(std::max(o.h2o_rows, o.window), n);
    need.accumulated_attention = true;
  }
  void score(const LayerInputs& in, const MethodOptions& o, int P, std::span<float> s) const override {
    if (P == 0) return;
    const int N = in.keys.n_rows, W = N - P;
    if (in.h2o_accumulated) {
      const int Hq = in.queries.n_heads > 0 ? in.queries.n_heads : in.n_head;
      if (Hq < 1) fail("h2o: accumulated attention given without the number of query heads");
      h2o_scores_from_accumulated(in.h2o_accumulated, Hq, in.keys.n_heads, in.h2o_stride, P, s);
      return;
    }
    const int R = std::min(std::max(o.h2o_rows, W), N);
    if (in.queries.n_rows < R)
      fail("h2o: needs the last " + std::to_string(R) + " post-RoPE query rows (or accumulated attention), got " +
           std::to_string(in.queries.n_rows));
    h2o_scores_streaming(in.queries.last_rows(R), in.keys, P, s, o.h2o_official_mask ? W : -1);
  }
};

class SnapKvScorer final : public Scorer {
 public:
  std::string_view name() const override { return "snapkv"; }
  std::string_view description() const override { return "attention of the last W queries, summed and pooled"; }
  void needs(const MethodOptions& o, int n, LayerNeeds& need) const override { need.query_rows = std::min(o.window, n); }
  bool reads_window_attention() const override { return true; }
  void score_group(const AttentionView& a, int P, const MethodOptions& o, std::span<float> dst) const override {
    snapkv_scores(a, 1, P, o.pool, dst, o.snapkv_mean_rows);
  }
};

class CakeScorer final : public Scorer {
 public:
  std::string_view name() const override { return "cake"; }
  std::string_view description() const override { return "CAKE's indicator: window attention mean + gamma * variance, pooled"; }
  void needs(const MethodOptions& o, int n, LayerNeeds& need) const override { need.query_rows = std::min(o.window, n); }
  bool reads_window_attention() const override { return true; }
  void score_group(const AttentionView& a, int P, const MethodOptions& o, std::span<float> dst) const override {
    cake_scores(a, 1, P, o.gamma, o.pool, dst);
  }
};

class ExpectedAttentionScorer final : public Scorer {
 public:
  std::string_view name() const override { return "expected-attention"; }
  std::string_view description() const override { return "kvpress Expected Attention: closed-form attention of future queries x |v|"; }
  void needs(const MethodOptions& o, int n, LayerNeeds& need) const override {
    need.query_rows = std::min(o.window, n);
    need.values = o.ea.use_vnorm;
    need.pre_rope_queries = true;
  }
  void score(const LayerInputs& in, const MethodOptions& o, int P, std::span<float> s) const override {
    if (P == 0) return;
    ExpectedAttentionOptions ea = o.ea;
    const HeadsView* q = &in.stat_queries;
    if (in.stat_queries.empty()) {
      if (in.queries.empty()) fail("expected-attention: needs query rows");
      q = &in.queries;
      ea.queries_post_rope = true;
      ea.query_pos0 = in.keys.n_rows - in.queries.n_rows;
    } else {
      ea.query_pos0 = in.stat_pos0;
    }
    expected_attention_scores(*q, in.keys, in.values, in.rope, P, ea, s);
  }
};

class KnormScorer final : public Scorer {
 public:
  std::string_view name() const override { return "knorm"; }
  std::string_view description() const override { return "kvpress KnormPress: keep the keys with the lowest L2 norm"; }
  void score(const LayerInputs& in, const MethodOptions&, int P, std::span<float> s) const override {
    knorm_scores(in.keys, P, s);
  }
};

class RandomScorer final : public Scorer {
 public:
  std::string_view name() const override { return "random"; }
  std::string_view description() const override { return "random scores (seeded): the floor any method must beat"; }
  void score(const LayerInputs& in, const MethodOptions& o, int P, std::span<float> s) const override {
    random_scores(o.seed, in.layer, in.keys.n_heads, P, s);
  }
};

// --- allocators ------------------------------------------------------------------------------

class NoAllocator final : public Allocator {
 public:
  std::string_view name() const override { return "none"; }
  std::string_view description() const override { return "every token stays"; }
  bool none() const override { return true; }
  LayerBudgets plan(const MethodOptions&, const BudgetContext& c, std::span<const double>) const override {
    LayerBudgets b;
    b.compress = false;
    b.prefill.assign(std::max(c.n_layer, 0), c.prefix());
    b.decode.assign(std::max(c.n_layer, 0), kUnlimitedBudget);
    return b;
  }
};

class UniformAllocator final : public Allocator {
 public:
  std::string_view name() const override { return "uniform"; }
  std::string_view description() const override { return "the same budget for every layer and KV head"; }
  LayerBudgets plan(const MethodOptions&, const BudgetContext& c, std::span<const double>) const override {
    return uniform_budgets(c);
  }
};

class PyramidAllocator final : public Allocator {
 public:
  std::string_view name() const override { return "pyramidkv"; }
  std::string_view description() const override { return "PyramidKV: linearly decreasing layer budgets (beta = 20)"; }
  LayerBudgets plan(const MethodOptions& o, const BudgetContext& c, std::span<const double>) const override {
    return pyramidkv_budgets(c, o.pyramid_beta);
  }
};

// CAKE's and TAPPA's cascading preference split.
class PreferenceAllocator : public Allocator {
 public:
  void defaults(MethodOptions& o) const override {
    o.cascading = true;
    o.decode_eviction = true;
  }
  bool preference_based() const override { return true; }
  LayerBudgets plan(const MethodOptions& o, const BudgetContext& c, std::span<const double> prefs) const override {
    return preference_budgets(prefs, c, arith(o));
  }
};

class CakeAllocator final : public PreferenceAllocator {
 public:
  std::string_view name() const override { return "cake"; }
  std::string_view description() const override { return "CAKE: layer budgets from window-attention entropy x variance"; }
  bool uses_cake_stats(const MethodOptions&) const override { return true; }
  double preference(const LayerScores& s, const MethodOptions& o) const override {
    return cake_preference(s.cake, o.tau.value_or(CakeTau{}));
  }
  SplitArith arith(const MethodOptions&) const override { return SplitArith::f32; }
};

class TappaAllocator : public PreferenceAllocator {
 public:
  std::string_view name() const override { return "tappa"; }
  std::string_view description() const override {
    return "TAPPA: layer budgets proportional to 1 - q-similarity (alpha < inf: CAKE + alpha (1 - q-sim))";
  }
  bool uses_qsim() const override { return true; }
  bool uses_cake_stats(const MethodOptions& o) const override { return o.alpha != std::numeric_limits<double>::infinity(); }
  double preference(const LayerScores& s, const MethodOptions& o) const override {
    const double cake_pref = uses_cake_stats(o) ? cake_preference(s.cake, o.tau.value_or(CakeTau{})) : 0.0;
    return tappa_preference(s.qsim, cake_pref, o.alpha);
  }
  SplitArith arith(const MethodOptions& o) const override { return tappa_arith(o.alpha); }
};

class TappaHeadAllocator final : public TappaAllocator {
 public:
  std::string_view name() const override { return "tappa-head"; }
  std::string_view description() const override {
    return "TAPPA layer budgets, split over KV heads by each head group's 1 - q-similarity (beyond the paper)";
  }
  bool per_head_qsim() const override { return true; }
  std::vector<int> head_budgets(const MethodOptions& o, const LayerScores& s, int layer_budget) const override {
    if (s.head_preference.empty()) return Allocator::head_budgets(o, s, layer_budget);
    const int min_per_head = static_cast<int>(std::floor(o.min_head_frac * std::max(layer_budget, 0)));
    return kv::head_budgets(s.head_preference, layer_budget, s.n_prefix, min_per_head);
  }
};

}  // namespace

std::vector<int> Allocator::head_budgets(const MethodOptions&, const LayerScores& s, int layer_budget) const {
  return std::vector<int>(std::max(s.n_head_kv, 0), layer_budget);
}

// Registered in registry.cpp (one line each).
const Scorer& none_scorer() { static const NoScorer s; return s; }
const Scorer& streamingllm_scorer() { static const StreamingLlmScorer s; return s; }
const Scorer& h2o_scorer() { static const H2oScorer s; return s; }
const Scorer& snapkv_scorer() { static const SnapKvScorer s; return s; }
const Scorer& cake_scorer() { static const CakeScorer s; return s; }
const Scorer& expected_attention_scorer() { static const ExpectedAttentionScorer s; return s; }
const Scorer& knorm_scorer() { static const KnormScorer s; return s; }
const Scorer& random_scorer() { static const RandomScorer s; return s; }

const Allocator& none_allocator() { static const NoAllocator a; return a; }
const Allocator& uniform_allocator() { static const UniformAllocator a; return a; }
const Allocator& pyramidkv_allocator() { static const PyramidAllocator a; return a; }
const Allocator& cake_allocator() { static const CakeAllocator a; return a; }
const Allocator& tappa_allocator() { static const TappaAllocator a; return a; }
const Allocator& tappa_head_allocator() { static const TappaHeadAllocator a; return a; }

}  // namespace tappa::kv
