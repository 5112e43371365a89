// Per-layer dispatch of a scorer × allocator pairing: see methods.h and docs/KV_COMPRESSION.md.
#include "kv/methods.h"

#include <algorithm>
#include <cmath>

#include "tappa/error.h"

namespace tappa::kv {

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error("kv: " + what); }

bool uses_window_attention(const Method& m, const MethodOptions& o) {
  return m.scorer->reads_window_attention() || m.allocator->uses_cake_stats(o);
}

}  // namespace

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
  if (m.scorer->none()) return n;
  n.any = true;
  n.keys = true;
  m.scorer->needs(o, n_prompt, n);
  if (m.allocator->uses_qsim() || uses_window_attention(m, o)) n.query_rows = std::max(n.query_rows, std::min(o.window, n_prompt));
  return n;
}

void score_layer(const Method& m, const MethodOptions& o, const LayerInputs& in, LayerScores& out) {
  out.preference = 0.0;
  out.qsim = 0.0;
  out.cake = CakeStats{};
  out.head_preference.clear();
  if (m.scorer->none()) {
    out.n_head_kv = 0;
    out.n_prefix = 0;
    out.scores.clear();
    return;
  }
  if (o.window < 0) fail("window must be >= 0");
  const HeadsView& K = in.keys;
  const int N = K.n_rows;
  const int H_kv = K.n_heads;
  if (H_kv < 1) fail(m.name + ": keys missing");
  const int P = std::max(N - o.window, 0);
  const int W = N - P;  // min(window, N)
  out.n_head_kv = H_kv;
  out.n_prefix = P;
  out.scores.assign(static_cast<size_t>(H_kv) * P, 0.0f);
  std::span<float> scores(out.scores);

  const bool need_attn = uses_window_attention(m, o) && P > 0;
  const bool need_qsim = m.allocator->uses_qsim();
  HeadsView qwin;
  if (need_attn || need_qsim) {
    if (in.queries.n_rows < W || in.queries.n_heads < 1)
      fail(m.name + ": needs the last " + std::to_string(W) + " post-RoPE query rows, got " +
           std::to_string(in.queries.n_rows));
    qwin = in.queries.last_rows(W);
  }

  // Window attention, one KV-head group at a time: token scores and CAKE statistics per group.
  if (need_attn) {
    const int H = qwin.n_heads;
    if (H % H_kv != 0) fail(m.name + ": query heads not a multiple of KV heads");
    const int G = H / H_kv;
    out.scratch.resize(static_cast<size_t>(G) * W * N);
    for (int kv = 0; kv < H_kv; ++kv) {
      if (!in.group_attention || !in.group_attention(qwin, kv, out.scratch)) window_attention_group(qwin, K, kv, out.scratch);
      const AttentionView a{out.scratch.data(), G, W, N};
      if (m.scorer->reads_window_attention())
        m.scorer->score_group(a, P, o, scores.subspan(static_cast<size_t>(kv) * P, P));
      if (m.allocator->uses_cake_stats(o)) out.cake += cake_layer_stats(a, P);
    }
  }
  if (!m.scorer->reads_window_attention()) m.scorer->score(in, o, P, scores);

  // Layer preference.
  if (need_qsim) {
    out.qsim = layer_qsim(qwin);
    if (m.allocator->per_head_qsim()) {
      out.head_preference = group_qsim(qwin, H_kv);
      for (double& v : out.head_preference) v = 1.0 - v;
    }
  }
  out.preference = m.allocator->preference(out, o);
}

// ---------------------------------------------------------------------------------------------

LayerBudgets plan_budgets(const Method& m, const MethodOptions& o, const BudgetContext& ctx,
                          std::span<const double> prefs) {
  BudgetContext c = ctx;
  c.window = o.window;
  return m.allocator->plan(o, c, prefs);
}

std::vector<int> cascade_shares(const Method& m, const MethodOptions& o, const BudgetContext& ctx,
                                std::span<const double> prefs_seen) {
  if (!m.allocator->preference_based())
    fail(m.name + ": cascading applies to preference allocators (cake, tappa, tappa-head) only");
  BudgetContext c = ctx;
  c.window = o.window;
  return cake_shares(prefs_seen, c, m.allocator->arith(o));
}

std::vector<int> layer_head_budgets(const Method& m, const MethodOptions& o, const LayerScores& s, int layer_budget) {
  return m.allocator->head_budgets(o, s, layer_budget);
}

}  // namespace tappa::kv
