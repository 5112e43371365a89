// Budget allocators, selection and decode eviction: see allocators.h and docs/KV_COMPRESSION.md.
#include "kv/allocators.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>

#include "analysis/qsim.h"
#include "tappa/error.h"

namespace tappa::kv {

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error("kv: " + what); }

// Python's floor division for b > 0.
int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

LayerBudgets no_compression(const BudgetContext& ctx) {
  LayerBudgets b;
  b.compress = false;
  b.prefill.assign(ctx.n_layer, ctx.prefix());
  b.decode.assign(ctx.n_layer, ctx.capacity - ctx.window);
  return b;
}

LayerBudgets uniform_of(const BudgetContext& ctx) {
  LayerBudgets b;
  b.compress = true;
  const int keep = std::min(ctx.capacity - ctx.window, ctx.prefix());
  b.prefill.assign(ctx.n_layer, keep);
  b.decode.assign(ctx.n_layer, ctx.capacity - ctx.window);
  return b;
}

std::string normalise(std::string_view s) {
  std::string out;
  for (char c : s)
    if (std::isalnum(static_cast<unsigned char>(c))) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool has(const std::string& s, const char* sub) { return s.find(sub) != std::string::npos; }

}  // namespace

// ---------------------------------------------------------------------------------------------

int capacity_from_ratio(double ratio, int n_prompt) {
  if (!(ratio >= 0.0 && ratio < 1.0)) fail("compression ratio must be in [0, 1), got " + std::to_string(ratio));
  if (n_prompt < 0) fail("negative prompt length");
  return static_cast<int>(static_cast<double>(n_prompt) * (1.0 - ratio));
}

double ratio_from_capacity(int capacity, int n_prompt) {
  if (n_prompt <= 0) return 0.0;
  return 1.0 - static_cast<double>(std::clamp(capacity, 0, n_prompt)) / n_prompt;
}

void validate(const BudgetContext& ctx) {
  if (ctx.n_layer < 1) fail("budget: need at least one layer");
  if (ctx.n_prompt < 0) fail("budget: negative prompt length");
  if (ctx.window < 0) fail("budget: negative window");
  if (ctx.capacity < ctx.window)
    fail("budget: capacity " + std::to_string(ctx.capacity) + " is smaller than the window " +
         std::to_string(ctx.window) + " (the budget counts the window)");
}

LayerBudgets uniform_budgets(const BudgetContext& ctx) {
  validate(ctx);
  if (ctx.n_prompt < ctx.capacity) return no_compression(ctx);
  return uniform_of(ctx);
}

LayerBudgets pyramidkv_budgets(const BudgetContext& ctx, int beta) {
  validate(ctx);
  if (beta < 1) fail("pyramidkv: beta must be >= 1");
  const int64_t C = ctx.capacity, W = ctx.window, N = ctx.n_prompt, L = ctx.n_layer;
  if (N < C) return no_compression(ctx);
  if (N < 2 * (C - W) || L == 1) return uniform_of(ctx);
  int64_t min_num = floordiv(C - W, beta);
  int64_t max_num = 2 * (C - W) - min_num;
  if (max_num >= N - W) {
    max_num = N - W;
    min_num = 2 * (C - W) - max_num;
  }
  const int64_t steps = floordiv(max_num - min_num, L - 1);
  LayerBudgets b;
  b.compress = true;
  b.prefill.resize(L);
  for (int64_t l = 0; l < L; ++l)
    b.prefill[l] = static_cast<int>(std::clamp<int64_t>(max_num - l * steps, 0, ctx.prefix()));
  b.decode = b.prefill;
  return b;
}

std::vector<int64_t> adjust_budgets(std::span<const double> raw, int64_t total, int64_t cap) {
  const size_t L = raw.size();
  std::vector<int64_t> b(L);
  for (size_t i = 0; i < L; ++i) b[i] = std::isfinite(raw[i]) ? static_cast<int64_t>(std::trunc(raw[i])) : 0;

  int64_t total_excess = 0;
  for (auto& v : b) {
    total_excess += std::max<int64_t>(v - cap, 0);
    v = std::min(v, cap);
  }
  if (total_excess > 0) {
    std::vector<size_t> valid;
    for (size_t i = 0; i < L; ++i)
      if (b[i] < cap) valid.push_back(i);
    if (!valid.empty()) {
      const int64_t n = static_cast<int64_t>(valid.size());
      const int64_t per = total_excess / n, rem = total_excess % n;
      for (size_t i : valid) b[i] += per;
      for (int64_t r = 0; r < rem; ++r) b[valid[r]] += 1;
    }
  }
  const int64_t diff = total - std::accumulate(b.begin(), b.end(), int64_t{0});
  if (diff != 0) {
    std::vector<size_t> valid;
    for (size_t i = 0; i < L; ++i)
      if (diff > 0 ? b[i] < cap : b[i] > 1) valid.push_back(i);
    if (!valid.empty()) {
      const int64_t n = static_cast<int64_t>(valid.size());
      const int64_t mag = diff > 0 ? diff : -diff;
      const int64_t per = mag / n, rem = mag % n;
      const int64_t sign = diff > 0 ? 1 : -1;
      for (size_t i : valid) b[i] += sign * per;
      for (int64_t r = 0; r < rem; ++r) b[valid[r]] += sign;
    }
  }
  return b;
}

std::vector<double> proportional_raw(std::span<const double> prefs, int64_t total, SplitArith arith) {
  const size_t L = prefs.size();
  std::vector<double> raw(L);
  if (L == 0) return raw;
  if (arith == SplitArith::f32) {
    float sum = 0.0f;
    for (double p : prefs) sum += static_cast<float>(p);
    if (!(sum > 0.0f) || !std::isfinite(sum)) {
      for (auto& r : raw) r = static_cast<double>(static_cast<float>(total) / static_cast<float>(L));
      return raw;
    }
    const float t = static_cast<float>(total);
    for (size_t i = 0; i < L; ++i) {
      const float share = static_cast<float>(prefs[i]) / sum;
      raw[i] = static_cast<double>(share * t);
    }
  } else {
    double sum = 0.0;
    for (double p : prefs) sum += p;
    if (!(sum > 0.0) || !std::isfinite(sum)) {
      for (auto& r : raw) r = static_cast<double>(total) / static_cast<double>(L);
      return raw;
    }
    for (size_t i = 0; i < L; ++i) raw[i] = prefs[i] / sum * static_cast<double>(total);
  }
  return raw;
}

std::vector<int> cake_shares(std::span<const double> prefs, const BudgetContext& ctx, SplitArith arith) {
  validate(ctx);
  if (static_cast<int>(prefs.size()) > ctx.n_layer) fail("cake_shares: more preferences than layers");
  const int64_t total = static_cast<int64_t>(ctx.capacity - ctx.window) * ctx.n_layer;
  const int64_t cap = ctx.prefix();
  const auto raw = proportional_raw(prefs, total, arith);
  const auto adj = adjust_budgets(raw, total, cap);
  std::vector<int> out(adj.size());
  for (size_t i = 0; i < adj.size(); ++i) out[i] = static_cast<int>(std::clamp<int64_t>(adj[i], 0, cap));
  return out;
}

LayerBudgets preference_budgets(std::span<const double> prefs, const BudgetContext& ctx, SplitArith arith) {
  validate(ctx);
  if (static_cast<int>(prefs.size()) != ctx.n_layer)
    fail("preference_budgets: need one preference per layer (" + std::to_string(ctx.n_layer) + "), got " +
         std::to_string(prefs.size()));
  if (ctx.n_prompt <= ctx.capacity + ctx.window) return no_compression(ctx);
  LayerBudgets b;
  b.compress = true;
  b.prefill = cake_shares(prefs, ctx, arith);
  b.decode = b.prefill;
  return b;
}

// ---------------------------------------------------------------------------------------------

CakeStats cake_layer_stats(const AttentionView& a, int n_prefix) {
  if (n_prefix < 0 || n_prefix > a.n_keys) fail("cake_layer_stats: prefix longer than the keys");
  CakeStats st;
  const int R = a.n_rows, P = n_prefix;
  if (R < 1 || P == 0) return st;
  std::vector<double> mean(P), ss(P);
  for (int h = 0; h < a.n_head; ++h) {
    std::fill(mean.begin(), mean.end(), 0.0);
    std::fill(ss.begin(), ss.end(), 0.0);
    for (int r = 0; r < R; ++r) {
      const float* row = a.row(h, r);
      for (int j = 0; j < P; ++j) {
        const double v = row[j];
        st.entropy -= v * std::log(v + 1e-10);
        mean[j] += v;
      }
    }
    if (R > 1) {
      for (int j = 0; j < P; ++j) mean[j] /= R;
      for (int r = 0; r < R; ++r) {
        const float* row = a.row(h, r);
        for (int j = 0; j < P; ++j) {
          const double d = row[j] - mean[j];
          ss[j] += d * d;
        }
      }
      for (int j = 0; j < P; ++j) st.variance += ss[j] / (R - 1);
    }
  }
  return st;
}

double cake_preference(const CakeStats& stats, const CakeTau& tau) {
  return std::pow(stats.entropy, 1.0 / tau.tau1) * std::pow(stats.variance, 1.0 / tau.tau2);
}

CakeTau cake_tau(std::string_view model_key, int capacity) {
  struct Row {
    const char* key;
    CakeTau t1024, t128;
  };
  static constexpr Row kTable[] = {
      {"llama3.1-8b", {1.6, 0.4}, {1.6, 0.6}},
      {"qwen2.5-7b-instruct", {1.5, 0.6}, {0.4, 0.6}},
      {"llama2-7b-chat", {1.9, 1.8}, {0.9, 2.3}},
      {"llama2-13b-chat", {0.5, 0.4}, {1.8, 2.0}},
      {"mistral-0.3-7b", {0.8, 0.5}, {1.0, 0.8}},
  };
  for (const Row& r : kTable) {
    if (model_key != r.key) continue;
    if (capacity == 1024) return r.t1024;
    if (capacity == 128) return r.t128;
    break;
  }
  return CakeTau{};
}

std::string cake_tau_key(std::string_view model_name) {
  const std::string s = normalise(model_name);
  if (has(s, "llama31") && has(s, "8b")) return "llama3.1-8b";
  if (has(s, "qwen25") && has(s, "7b")) return "qwen2.5-7b-instruct";
  if (has(s, "llama2") && has(s, "13b")) return "llama2-13b-chat";
  if (has(s, "llama2") && has(s, "7b") && !has(s, "70b")) return "llama2-7b-chat";
  if (has(s, "mistral") && has(s, "7b") && (has(s, "v03") || has(s, "mistral03"))) return "mistral-0.3-7b";
  return "";
}

// ---------------------------------------------------------------------------------------------

double layer_qsim(const HeadsView& q_window) {
  if (q_window.n_heads == 0) return 0.0;
  double s = 0.0;
  for (int h = 0; h < q_window.n_heads; ++h) {
    analysis::HeadRows rows{q_window.head(h), q_window.n_rows, q_window.dim, q_window.row_stride};
    s += analysis::qsim_head(rows);
  }
  return s / q_window.n_heads;
}

std::vector<double> group_qsim(const HeadsView& q_window, int n_head_kv) {
  if (n_head_kv < 1 || q_window.n_heads % n_head_kv != 0)
    fail("group_qsim: query heads must be a multiple of KV heads");
  const int G = q_window.n_heads / n_head_kv;
  std::vector<double> out(n_head_kv, 0.0);
  for (int h = 0; h < q_window.n_heads; ++h) {
    analysis::HeadRows rows{q_window.head(h), q_window.n_rows, q_window.dim, q_window.row_stride};
    out[h / G] += analysis::qsim_head(rows) / G;
  }
  return out;
}

double tappa_preference(double qsim, double cake_pref, double alpha) {
  if (alpha == std::numeric_limits<double>::infinity()) return 1.0 - qsim;
  return cake_pref + alpha * (1.0 - qsim);
}

// ---------------------------------------------------------------------------------------------

std::vector<int> head_budgets(std::span<const double> head_prefs, int layer_budget, int cap, int min_per_head) {
  const int n = static_cast<int>(head_prefs.size());
  std::vector<int> b(n, 0);
  if (n == 0) return b;
  cap = std::max(cap, 0);
  const int64_t lo = std::clamp(min_per_head, 0, cap);
  const int64_t hi = cap;
  const int64_t total = std::clamp<int64_t>(static_cast<int64_t>(std::max(layer_budget, 0)) * n, lo * n, hi * n);

  double sum = 0.0;
  for (double p : head_prefs) sum += std::max(p, 0.0);
  std::vector<int64_t> v(n);
  for (int i = 0; i < n; ++i) {
    const double raw = sum > 0.0 && std::isfinite(sum) ? std::max(head_prefs[i], 0.0) / sum * static_cast<double>(total)
                                                       : static_cast<double>(total) / n;
    v[i] = std::clamp<int64_t>(static_cast<int64_t>(std::trunc(raw)), lo, hi);
  }
  // Redistribute until the total is met or every head sits at the bound in the needed direction.
  for (int guard = 0; guard <= n + 1; ++guard) {
    const int64_t diff = total - std::accumulate(v.begin(), v.end(), int64_t{0});
    if (diff == 0) break;
    std::vector<int> valid;
    for (int i = 0; i < n; ++i)
      if (diff > 0 ? v[i] < hi : v[i] > lo) valid.push_back(i);
    if (valid.empty()) break;
    const int64_t m = static_cast<int64_t>(valid.size());
    const int64_t mag = diff > 0 ? diff : -diff;
    const int64_t per = mag / m, rem = mag % m;
    for (int64_t r = 0; r < m; ++r) {
      const int i = valid[r];
      const int64_t step = per + (r < rem ? 1 : 0);
      v[i] = diff > 0 ? std::min(v[i] + step, hi) : std::max(v[i] - step, lo);
    }
  }
  for (int i = 0; i < n; ++i) b[i] = static_cast<int>(v[i]);
  return b;
}

// ---------------------------------------------------------------------------------------------

void select_keep(std::span<const float> scores, int budget, int n_window, std::vector<int>& keep) {
  const int P = static_cast<int>(scores.size());
  keep.clear();
  if (budget >= P) {
    for (int j = 0; j < P; ++j) keep.push_back(j);
  } else if (budget > 0) {
    keep.resize(P);
    std::iota(keep.begin(), keep.end(), 0);
    auto key = [&](int i) {
      const float v = scores[i];
      return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
    };
    auto better = [&](int a, int b) {
      const float ka = key(a), kb = key(b);
      if (ka != kb) return ka > kb;
      return a < b;
    };
    std::nth_element(keep.begin(), keep.begin() + budget, keep.end(), better);
    keep.resize(budget);
    std::sort(keep.begin(), keep.end());
  }
  for (int w = 0; w < n_window; ++w) keep.push_back(P + w);
}

void select_keep_layer(std::span<const float> scores, int n_head_kv, int budget, int n_window,
                       std::vector<std::vector<int>>& keep) {
  if (n_head_kv < 1 || scores.size() % n_head_kv != 0) fail("select_keep_layer: scores not [H_kv][P]");
  const size_t P = scores.size() / n_head_kv;
  keep.resize(n_head_kv);
  for (int kv = 0; kv < n_head_kv; ++kv) select_keep(scores.subspan(kv * P, P), budget, n_window, keep[kv]);
}

void select_keep_layer(std::span<const float> scores, int n_head_kv, std::span<const int> budgets, int n_window,
                       std::vector<std::vector<int>>& keep) {
  if (n_head_kv < 1 || scores.size() % n_head_kv != 0) fail("select_keep_layer: scores not [H_kv][P]");
  if (static_cast<int>(budgets.size()) != n_head_kv) fail("select_keep_layer: need one budget per KV head");
  const size_t P = scores.size() / n_head_kv;
  keep.resize(n_head_kv);
  for (int kv = 0; kv < n_head_kv; ++kv) select_keep(scores.subspan(kv * P, P), budgets[kv], n_window, keep[kv]);
}

// ---------------------------------------------------------------------------------------------

bool decode_keep(const float* probs, int n_group, std::ptrdiff_t stride, int n, int budget, int n_window,
                 std::vector<int>& keep, std::vector<float>& scratch, const PoolOptions& pool) {
  if (n_group < 1 || n_window < 0) fail("decode_keep: bad shape");
  budget = std::max(budget, 0);
  if (static_cast<int64_t>(n) <= static_cast<int64_t>(budget) + n_window) return false;
  const int P = n - n_window;
  scratch.resize(2 * static_cast<size_t>(P));
  float* pooled = scratch.data();
  float* mean = scratch.data() + P;
  std::fill(mean, mean + P, 0.0f);
  for (int g = 0; g < n_group; ++g) {
    pool1d(probs + g * stride, P, pool, pooled);
    for (int j = 0; j < P; ++j) mean[j] += pooled[j];
  }
  const float inv = 1.0f / static_cast<float>(n_group);
  for (int j = 0; j < P; ++j) mean[j] *= inv;
  select_keep(std::span<const float>(mean, P), budget, n_window, keep);
  return true;
}

}  // namespace tappa::kv
