// Budget allocators of KV-cache compression (how many prefix tokens each layer / KV head keeps),
// the top-k selection that turns scores + budget into kept cache rows, and CAKE's decode-time
// eviction rule. Pure arithmetic on plain arrays; see docs/KV_COMPRESSION.md for the formulas.
//
// Budget unit (the papers'): C = max_capacity_prompt = tokens per layer on average, *including*
// the protected window W. A layer's budget b_l below is the number of *prefix* tokens (out of
// P = N − W) it keeps; it always keeps the last W tokens too, so it holds b_l + W tokens.
#pragma once
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kv/scorers.h"

namespace tappa::kv {

// ---------------------------------------------------------------------------------------------
// Budget unit conversion
// ---------------------------------------------------------------------------------------------

// kvpress unit → ours: a compression ratio r (fraction of the N prompt tokens removed, 0 ≤ r < 1)
// keeps ⌊(1 − r)·N⌋ tokens per layer on average (kvpress: int(N·(1 − r))). Our C includes the
// window, kvpress has none: the result is used as C directly. Throws tappa::Error for r ∉ [0, 1).
int capacity_from_ratio(double ratio, int n_prompt);
// Ours → kvpress: 1 − min(C, N)/N (0 for N = 0).
double ratio_from_capacity(int capacity, int n_prompt);

// ---------------------------------------------------------------------------------------------
// Per-layer budgets
// ---------------------------------------------------------------------------------------------

// A budget that never binds (fullkv's decode budget); safe to add W to.
inline constexpr int kUnlimitedBudget = std::numeric_limits<int>::max() / 2;

struct BudgetContext {
  int n_layer = 0;   // L
  int n_prompt = 0;  // N
  int capacity = 0;  // C (tokens per layer on average, including the window)
  int window = 32;   // W
  int prefix() const { return n_prompt > window ? n_prompt - window : 0; }  // P = N − W
};

struct LayerBudgets {
  // False when the method's skip rule leaves the prompt uncompressed (prefill[l] == P then).
  bool compress = false;
  // Per layer: prefix tokens kept after prefill, in [0, P]. P = nothing evicted.
  std::vector<int> prefill;
  // Per layer: b_l of the decode-time evictor (CAKE rule: a layer holding more than b_l + W
  // tokens is cut back to b_l + W). For CAKE/TAPPA it equals prefill when compressing and C − W
  // otherwise (the official code registers C − W as the provisional budget). Methods without
  // decode eviction ignore it.
  std::vector<int> decode;
};

// Throws tappa::Error unless L ≥ 1, N ≥ 0, W ≥ 0 and C ≥ W.
void validate(const BudgetContext& ctx);

// Uniform (SnapKV, H2O, StreamingLLM, and our kvpress-style scorers): every layer keeps C − W
// prefix tokens. Official skip rule: compress only if N ≥ C (N = C evicts nothing anyway).
LayerBudgets uniform_budgets(const BudgetContext& ctx);

// PyramidKV (PAPER.md §3.5, KVCache-Factory PyramidKVCluster), integer arithmetic as in Python:
// min = (C−W) // β, max = 2(C−W) − min; if max ≥ N−W: max = N−W, min = 2(C−W) − max;
// step = (max − min) // (L − 1); layer l keeps max − l·step. Fallbacks: N < C → no compression;
// C ≤ N < 2(C−W) → uniform C − W. L = 1 → uniform C − W (the official code divides by zero).
// Note the total is not preserved exactly (floor of step): Σ ≥ L·(C−W).
LayerBudgets pyramidkv_budgets(const BudgetContext& ctx, int beta = 20);

// CAKE's adjust_budgets (cake/utils.py, PAPER.md §3.2), bit-exact: truncate `raw` toward zero;
// clamp to cap, collecting the excess; spread the excess evenly (integer division) over the
// layers below cap, remainder +1 to the first of them; then spread total − Σ over the layers below
// cap (if positive) or remove it from the layers above 1 (if negative), same remainder rule. No
// cap re-check after the last step (callers clamp). cap = N − W in CAKE.
std::vector<int64_t> adjust_budgets(std::span<const double> raw, int64_t total, int64_t cap);

// Arithmetic of the proportional split p_l / Σp · total. The official CAKE preferences are numpy
// float32 scalars, so CAKE (and finite-alpha TAPPA) divide in float32; alpha = ∞ TAPPA's
// preferences (1 − qsim) are Python floats (float64). The difference only shows when a raw budget
// lands within float32 rounding of an integer.
enum class SplitArith { f64, f32 };

// raw_l = p_l / Σp · total in the chosen arithmetic (Σ in index order, as Python's sum()).
// Σp ≤ 0 or not finite → equal split (the official code would divide by zero).
std::vector<double> proportional_raw(std::span<const double> prefs, int64_t total, SplitArith arith);

// CAKE/TAPPA shares of the layers seen so far: adjust_budgets(proportional_raw(prefs, B_tot), B_tot,
// P), then each clamped to [0, P]; B_tot = (C − W)·L always (also in cascading mode, where only
// layers 0 … l have a preference yet). prefs.size() ≤ L.
//   Cascading: call after every layer l with prefs[0 … l] and re-evict every seen layer to its new
//   share (nested top-k: keep the stored scores gathered with K/V; if a share grew by rounding the
//   layer simply keeps what it has).
//   Non-cascading: call once with all L preferences.
std::vector<int> cake_shares(std::span<const double> prefs, const BudgetContext& ctx, SplitArith arith);

// Final budgets of CAKE/TAPPA from all L preferences. Skip rule N ≤ C + W: no prefill eviction,
// decode budgets C − W. Otherwise prefill = decode = cake_shares(prefs).
LayerBudgets preference_budgets(std::span<const double> prefs, const BudgetContext& ctx, SplitArith arith);

// ---------------------------------------------------------------------------------------------
// Layer preference scores
// ---------------------------------------------------------------------------------------------

// CAKE's statistics of one layer's window attention over the prefix keys j < P (rows: the W window
// queries): entropy H = −Σ_{h,a,j} A log(A + 1e−10) and variance V = Σ_{h,j} Var_a A (unbiased;
// 0 for one row). Both are sums, so per-group results can be added (operator+=).
struct CakeStats {
  double entropy = 0.0;
  double variance = 0.0;
  CakeStats& operator+=(const CakeStats& o) {
    entropy += o.entropy;
    variance += o.variance;
    return *this;
  }
};
CakeStats cake_layer_stats(const AttentionView& a, int n_prefix);

struct CakeTau {
  double tau1 = 1.0;
  double tau2 = 1.0;
};
// p_l = H^(1/τ1) · V^(1/τ2).
double cake_preference(const CakeStats& stats, const CakeTau& tau);

// τ table of the official code (KVCache/config/model2tau_cake.json, PAPER.md §3.4), keyed by the
// official model key and the budget C; only C = 128 and 1024 exist, anything else → (1, 1).
// Keys: "llama3.1-8b", "qwen2.5-7b-instruct", "llama2-7b-chat", "llama2-13b-chat", "mistral-0.3-7b".
CakeTau cake_tau(std::string_view model_key, int capacity);
// Best-effort map from a model's name (GGUF general.name, a file name, or an official key) to an
// official key: case-insensitive, ignoring spaces / '-' / '_' / '.'; "" when nothing matches
// (cake_tau then gives (1, 1)).
std::string cake_tau_key(std::string_view model_name);

// q-similarity of a layer from its last W post-RoPE queries (all H heads): mean over heads of the
// mean off-diagonal cosine (official compute_q_sim_torch, via analysis/qsim.h). 0 if W ≤ 1.
double layer_qsim(const HeadsView& q_window);
// Per KV head: mean of the per-head q-similarities over each KV head's G query heads → [H_kv].
std::vector<double> group_qsim(const HeadsView& q_window, int n_head_kv);

// TAPPA's preference: alpha = ∞ → 1 − qsim; otherwise cake_pref + alpha·(1 − qsim).
double tappa_preference(double qsim, double cake_pref, double alpha);
// Which split arithmetic matches the official code for that preference (see SplitArith).
inline SplitArith tappa_arith(double alpha) {
  return alpha == std::numeric_limits<double>::infinity() ? SplitArith::f64 : SplitArith::f32;
}

// ---------------------------------------------------------------------------------------------
// tappa-head: per-KV-head budgets inside a layer (beyond the paper)
// ---------------------------------------------------------------------------------------------

// Splits H_kv · layer_budget prefix tokens over the KV heads proportionally to head_prefs
// (1 − group q-similarity), each head clamped to [min_per_head, cap] (cap = P), redistributing
// what clamping frees or takes like adjust_budgets (even integer split, remainder to the first
// heads, repeated until the total is met or every head is at a bound). The total is preserved
// whenever H_kv·min_per_head ≤ total ≤ H_kv·cap. Σ prefs ≤ 0 → equal split.
std::vector<int> head_budgets(std::span<const double> head_prefs, int layer_budget, int cap, int min_per_head);

// ---------------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------------

// Cache rows to keep for one KV head: the `budget` highest of scores[0 … P) (P = scores.size();
// ties → lower index; NaN ranks lowest), then the window rows P … P + n_window − 1, all ascending.
// budget ≥ P keeps every prefix row, budget ≤ 0 none. `keep` is overwritten (its capacity is
// reused: no allocation once it has grown).
// Ascending = cache order. The official code keeps topk's order (by score) instead; attention is a
// sum over cached keys with RoPE already baked into each key, so the order of kept rows changes
// nothing — sorting only makes the result deterministic and lets nested (cascading) evictions keep
// positional order.
void select_keep(std::span<const float> scores, int budget, int n_window, std::vector<int>& keep);

// Whole layer: scores [H_kv][P] → keep[kv] with the same budget for every KV head, or one budget
// per KV head (tappa-head). keep is resized to H_kv.
void select_keep_layer(std::span<const float> scores, int n_head_kv, int budget, int n_window,
                       std::vector<std::vector<int>>& keep);
void select_keep_layer(std::span<const float> scores, int n_head_kv, std::span<const int> budgets, int n_window,
                       std::vector<std::vector<int>>& keep);

// ---------------------------------------------------------------------------------------------
// Decode-time eviction (CAKE layer-wise, PAPER.md §3.3)
// ---------------------------------------------------------------------------------------------

// One KV head after the new token was appended (cache length n): `probs` holds the current query's
// attention over the n cached rows for the G query heads of this KV head (row g at
// probs + g*stride). If n ≤ budget + n_window nothing is evicted: returns false, keep untouched.
// Otherwise: the rows 0 … n − W − 1 are pooled per query head (default avg k=5 p=2), averaged over
// the group, the `budget` highest are kept plus the last W rows; returns true with `keep`
// (ascending) filled. `scratch` is reused between calls.
bool decode_keep(const float* probs, int n_group, std::ptrdiff_t stride, int n, int budget, int n_window,
                 std::vector<int>& keep, std::vector<float>& scratch,
                 const PoolOptions& pool = PoolOptions{Pooling::avg, 5});

}  // namespace tappa::kv
