// Method registry and per-layer dispatch: see methods.h and docs/KV_COMPRESSION.md.
#include "kv/methods.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "tappa/error.h"

namespace tappa::kv {

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error("kv: " + what); }

MethodOptions defaults_with(auto&& edit) {
  MethodOptions o;
  edit(o);
  return o;
}

const std::array<Method, 11>& registry() {
  static const std::array<Method, 11> kMethods = {{
      {"fullkv", "no compression: every token stays in the cache (reference)", ScorerKind::none,
       AllocatorKind::none, MethodOptions{}},
      {"streamingllm", "attention sinks (first 4 tokens) + the most recent tokens, same budget every layer",
       ScorerKind::streamingllm, AllocatorKind::uniform, MethodOptions{}},
      {"h2o", "heavy hitters: attention summed over the last 512 prompt queries, same budget every layer",
       ScorerKind::h2o, AllocatorKind::uniform, MethodOptions{}},
      {"snapkv", "attention of the last W queries, summed and avg-pooled (k=5), same budget every layer",
       ScorerKind::snapkv, AllocatorKind::uniform, MethodOptions{}},
      {"pyramidkv", "SnapKV scores with linearly decreasing layer budgets (beta = 20)", ScorerKind::snapkv,
       AllocatorKind::pyramidkv, MethodOptions{}},
      {"cake", "CAKE: mean + 200*variance scores, layer budgets from attention entropy x variance, cascading",
       ScorerKind::cake, AllocatorKind::cake, defaults_with([](MethodOptions& o) {
         o.cascading = true;
         o.decode_eviction = true;
       })},
      {"tappa", "TAPPA: CAKE token scores, layer budgets proportional to 1 - q-similarity, cascading",
       ScorerKind::cake, AllocatorKind::tappa, defaults_with([](MethodOptions& o) {
         o.cascading = true;
         o.decode_eviction = true;
       })},
      {"tappa-head", "TAPPA with per-KV-head budgets from each head group's 1 - q-similarity (beyond the paper)",
       ScorerKind::cake, AllocatorKind::tappa_head, defaults_with([](MethodOptions& o) {
         o.cascading = true;
         o.decode_eviction = true;
       })},
      {"expected-attention", "kvpress Expected Attention: closed-form attention of future queries x |v|, same budget",
       ScorerKind::expected_attention, AllocatorKind::uniform, MethodOptions{}},
      {"knorm", "kvpress KnormPress: keep the keys with the lowest L2 norm, same budget every layer",
       ScorerKind::knorm, AllocatorKind::uniform, MethodOptions{}},
      {"random", "random scores (seeded), same budget every layer: the floor any method must beat",
       ScorerKind::random, AllocatorKind::uniform, MethodOptions{}},
  }};
  return kMethods;
}

bool uses_cake_stats(const Method& m, const MethodOptions& o) {
  if (m.allocator == AllocatorKind::cake) return true;
  return (m.allocator == AllocatorKind::tappa || m.allocator == AllocatorKind::tappa_head) &&
         o.alpha != std::numeric_limits<double>::infinity();
}

bool uses_window_attention(const Method& m, const MethodOptions& o) {
  return m.scorer == ScorerKind::snapkv || m.scorer == ScorerKind::cake || uses_cake_stats(m, o);
}

bool uses_qsim(const Method& m) {
  return m.allocator == AllocatorKind::tappa || m.allocator == AllocatorKind::tappa_head;
}

SplitArith arith_of(const Method& m, const MethodOptions& o) {
  return m.allocator == AllocatorKind::cake ? SplitArith::f32 : tappa_arith(o.alpha);
}

bool preference_allocator(const Method& m) {
  return m.allocator == AllocatorKind::cake || m.allocator == AllocatorKind::tappa ||
         m.allocator == AllocatorKind::tappa_head;
}

}  // namespace

std::string_view scorer_name(ScorerKind kind) {
  switch (kind) {
    case ScorerKind::none: return "none";
    case ScorerKind::streamingllm: return "streamingllm";
    case ScorerKind::h2o: return "h2o";
    case ScorerKind::snapkv: return "snapkv";
    case ScorerKind::cake: return "cake";
    case ScorerKind::expected_attention: return "expected-attention";
    case ScorerKind::knorm: return "knorm";
    case ScorerKind::random: return "random";
  }
  return "?";
}

std::string_view allocator_name(AllocatorKind kind) {
  switch (kind) {
    case AllocatorKind::none: return "none";
    case AllocatorKind::uniform: return "uniform";
    case AllocatorKind::pyramidkv: return "pyramidkv";
    case AllocatorKind::cake: return "cake";
    case AllocatorKind::tappa: return "tappa";
    case AllocatorKind::tappa_head: return "tappa-head";
  }
  return "?";
}

std::span<const Method> all_methods() { return registry(); }

const Method& find_method(std::string_view name) {
  for (const Method& m : registry())
    if (m.name == name) return m;
  throw Error("unknown KV compression method '" + std::string(name) + "' (valid: " + method_names() + ")");
}

std::string method_names(std::string_view sep) {
  std::string s;
  for (const Method& m : registry()) {
    if (!s.empty()) s += sep;
    s += m.name;
  }
  return s;
}

PoolOptions parse_pooling(std::string_view spec) {
  if (spec == "none") return PoolOptions{Pooling::none, 1};
  Pooling kind;
  if (spec.starts_with("avg"))
    kind = Pooling::avg;
  else if (spec.starts_with("max"))
    kind = Pooling::max;
  else
    throw Error("bad pooling '" + std::string(spec) + "' (valid: none, avg<k>, max<k>, e.g. avg5, max7)");
  std::string_view rest = spec.substr(3);
  if (rest.starts_with(":")) rest.remove_prefix(1);
  int k = 0;
  bool ok = !rest.empty() && rest.size() <= 3;
  for (char c : rest) {
    if (c < '0' || c > '9') ok = false;
    k = k * 10 + (c - '0');
  }
  if (!ok || k < 1 || k % 2 == 0)
    throw Error("bad pooling '" + std::string(spec) + "': the kernel must be an odd positive number");
  return PoolOptions{kind, k};
}

std::string pooling_name(const PoolOptions& pool) {
  switch (pool.kind) {
    case Pooling::none: return "none";
    case Pooling::avg: return "avg" + std::to_string(pool.kernel);
    case Pooling::max: return "max" + std::to_string(pool.kernel);
  }
  return "?";
}

void resolve_tau(MethodOptions& opts, std::string_view model_name, int capacity) {
  if (!opts.tau) opts.tau = cake_tau(cake_tau_key(model_name), capacity);
}

// ---------------------------------------------------------------------------------------------

LayerNeeds layer_needs(const Method& m, const MethodOptions& o, int n_prompt) {
  LayerNeeds n;
  if (m.scorer == ScorerKind::none) return n;
  n.any = true;
  const int W = std::min(o.window, n_prompt);
  switch (m.scorer) {
    case ScorerKind::h2o:
      n.query_rows = std::min(std::max(o.h2o_rows, o.window), n_prompt);
      n.keys = true;
      n.accumulated_attention = true;
      break;
    case ScorerKind::snapkv:
    case ScorerKind::cake:
      n.query_rows = W;
      n.keys = true;
      break;
    case ScorerKind::expected_attention:
      n.query_rows = W;
      n.keys = true;
      n.values = o.ea.use_vnorm;
      n.pre_rope_queries = true;
      break;
    case ScorerKind::knorm:
      n.keys = true;
      break;
    default:
      break;
  }
  if (uses_qsim(m) || uses_window_attention(m, o)) {
    n.query_rows = std::max(n.query_rows, W);
    n.keys = true;
  }
  return n;
}

void score_layer(const Method& m, const MethodOptions& o, const LayerInputs& in, LayerScores& out) {
  out.preference = 0.0;
  out.qsim = 0.0;
  out.cake = CakeStats{};
  out.head_preference.clear();
  if (m.scorer == ScorerKind::none) {
    out.n_head_kv = 0;
    out.n_prefix = 0;
    out.scores.clear();
    return;
  }
  if (o.window < 0) fail("window must be >= 0");
  const HeadsView& K = in.keys;
  const int N = K.n_rows;
  const int H_kv = K.n_heads;
  if (H_kv < 1) fail(std::string(m.name) + ": keys missing");
  const int P = std::max(N - o.window, 0);
  const int W = N - P;  // min(window, N)
  out.n_head_kv = H_kv;
  out.n_prefix = P;
  out.scores.assign(static_cast<size_t>(H_kv) * P, 0.0f);
  std::span<float> scores(out.scores);

  const bool need_attn = uses_window_attention(m, o) && P > 0;
  const bool need_qsim = uses_qsim(m);
  HeadsView qwin;
  if (need_attn || need_qsim || m.scorer == ScorerKind::expected_attention) {
    if (in.queries.n_rows < W || in.queries.n_heads < 1)
      fail(std::string(m.name) + ": needs the last " + std::to_string(W) + " post-RoPE query rows, got " +
           std::to_string(in.queries.n_rows));
    qwin = in.queries.last_rows(W);
  }
  const int H = qwin.n_heads;

  // Window attention, one KV-head group at a time: token scores and CAKE statistics per group.
  if (need_attn) {
    if (H % H_kv != 0) fail(std::string(m.name) + ": query heads not a multiple of KV heads");
    const int G = H / H_kv;
    out.scratch.resize(static_cast<size_t>(G) * W * N);
    for (int kv = 0; kv < H_kv; ++kv) {
      if (!in.group_attention || !in.group_attention(qwin, kv, out.scratch)) window_attention_group(qwin, K, kv, out.scratch);
      const AttentionView a{out.scratch.data(), G, W, N};
      std::span<float> dst = scores.subspan(static_cast<size_t>(kv) * P, P);
      if (m.scorer == ScorerKind::snapkv) snapkv_scores(a, 1, P, o.pool, dst, o.snapkv_mean_rows);
      if (m.scorer == ScorerKind::cake) cake_scores(a, 1, P, o.gamma, o.pool, dst);
      if (uses_cake_stats(m, o)) out.cake += cake_layer_stats(a, P);
    }
  }

  switch (m.scorer) {
    case ScorerKind::h2o:
      if (P == 0) break;
      if (in.h2o_accumulated) {
        const int Hq = in.queries.n_heads > 0 ? in.queries.n_heads : in.n_head;
        if (Hq < 1) fail("h2o: accumulated attention given without the number of query heads");
        h2o_scores_from_accumulated(in.h2o_accumulated, Hq, H_kv, in.h2o_stride, P, scores);
      } else {
        const int R = std::min(std::max(o.h2o_rows, W), N);
        if (in.queries.n_rows < R)
          fail("h2o: needs the last " + std::to_string(R) + " post-RoPE query rows (or accumulated attention), got " +
               std::to_string(in.queries.n_rows));
        h2o_scores_streaming(in.queries.last_rows(R), K, P, scores, o.h2o_official_mask ? W : -1);
      }
      break;
    case ScorerKind::streamingllm:
      streamingllm_scores(H_kv, P, o.n_sink, scores, o.streaming_keep_first);
      break;
    case ScorerKind::knorm:
      knorm_scores(K, P, scores);
      break;
    case ScorerKind::random:
      random_scores(o.seed, in.layer, H_kv, P, scores);
      break;
    case ScorerKind::expected_attention: {
      if (P == 0) break;
      ExpectedAttentionOptions ea = o.ea;
      const HeadsView* q = &in.stat_queries;
      if (in.stat_queries.empty()) {
        q = &in.queries;
        ea.queries_post_rope = true;
        ea.query_pos0 = N - in.queries.n_rows;
      } else {
        ea.query_pos0 = in.stat_pos0;
      }
      expected_attention_scores(*q, K, in.values, in.rope, P, ea, scores);
      break;
    }
    default:
      break;
  }

  // Layer preference.
  if (need_qsim) {
    out.qsim = layer_qsim(qwin);
    if (m.allocator == AllocatorKind::tappa_head) {
      out.head_preference = group_qsim(qwin, H_kv);
      for (double& v : out.head_preference) v = 1.0 - v;
    }
  }
  const CakeTau tau = o.tau.value_or(CakeTau{});
  if (m.allocator == AllocatorKind::cake) {
    out.preference = cake_preference(out.cake, tau);
  } else if (need_qsim) {
    const double cake_pref = uses_cake_stats(m, o) ? cake_preference(out.cake, tau) : 0.0;
    out.preference = tappa_preference(out.qsim, cake_pref, o.alpha);
  }
}

// ---------------------------------------------------------------------------------------------

LayerBudgets plan_budgets(const Method& m, const MethodOptions& o, const BudgetContext& ctx,
                          std::span<const double> prefs) {
  BudgetContext c = ctx;
  c.window = o.window;
  switch (m.allocator) {
    case AllocatorKind::none: {
      LayerBudgets b;
      b.compress = false;
      b.prefill.assign(std::max(c.n_layer, 0), c.prefix());
      b.decode.assign(std::max(c.n_layer, 0), kUnlimitedBudget);
      return b;
    }
    case AllocatorKind::uniform: return uniform_budgets(c);
    case AllocatorKind::pyramidkv: return pyramidkv_budgets(c, o.pyramid_beta);
    default: return preference_budgets(prefs, c, arith_of(m, o));
  }
}

std::vector<int> cascade_shares(const Method& m, const MethodOptions& o, const BudgetContext& ctx,
                                std::span<const double> prefs_seen) {
  if (!preference_allocator(m)) fail(std::string(m.name) + ": cascading applies to cake / tappa / tappa-head only");
  BudgetContext c = ctx;
  c.window = o.window;
  return cake_shares(prefs_seen, c, arith_of(m, o));
}

std::vector<int> layer_head_budgets(const Method& m, const MethodOptions& o, const LayerScores& s, int layer_budget) {
  if (m.allocator != AllocatorKind::tappa_head || s.head_preference.empty())
    return std::vector<int>(std::max(s.n_head_kv, 0), layer_budget);
  const int min_per_head = static_cast<int>(std::floor(o.min_head_frac * std::max(layer_budget, 0)));
  return head_budgets(s.head_preference, layer_budget, s.n_prefix, min_per_head);
}

}  // namespace tappa::kv
