// KV-compression methods as two separate, named pieces — a *scorer* (which tokens of a layer matter:
// SnapKV's window attention, H2O's accumulated attention, Expected Attention, KVzip's
// reconstruction, …) and an *allocator* (how many tokens each layer and KV head keeps: uniform,
// PyramidKV, CAKE, TAPPA's q-similarity, AdaKV's head-wise split, …) — and any scorer with any
// allocator (registry.cpp; a spec string "snapkv+tappa:alpha=inf" names a pairing, a preset name such
// as "tappa" a pairing with its paper's defaults). A new scorer or allocator is one file defining it
// and one line in registry.cpp's list (docs/KV_COMPRESSION.md, "Adding a method").
//
// The calls an engine integration makes (kv/compressor.cpp):
//   prefill, per layer l (after RoPE, once the layer's keys/values are in the cache):
//       score_layer(method, opts, inputs_l, scores_l)         → token scores + layer preference
//     cascading (opts.cascading, preference allocators): after each layer,
//       shares = cascade_shares(method, opts, ctx, prefs[0..l]) and re-evict layers 0..l to
//       shares[i] with select_keep (nested top-k on the stored, gathered scores)
//   after the last layer:
//       budgets = plan_budgets(method, opts, ctx, prefs)      → prefill / decode budget per layer
//       per KV head: select_keep(scores_l[kv], layer_head_budgets(...)[kv], W, keep)
//       then KvCache::keep_rows(l, kv, keep)
//   decode, per layer and KV head when opts.decode_eviction: after appending the new token,
//       decode_keep(probs of the group, ..., budgets.decode[l], W, keep, scratch) → keep_rows.
//
// See docs/KV_COMPRESSION.md for every method's formulas, defaults and deviations.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <functional>
#include <vector>

#include "kv/allocators.h"
#include "kv/scorers.h"

namespace tappa {
class Tokenizer;
}

namespace tappa::kv {

// Which cache entries a selection decides on: one keep-set per KV head (the cache stores KV heads,
// so that is where memory is saved), or one per query head as the official TAPPA harness does after
// repeat_kv — the cache then holds H lists per layer instead of H_kv (H/H_kv times the memory,
// counted, not hidden).
enum class Granularity { kv_head, query_head };

// Every knob of every method; each method reads only its own (see Method::defaults).
struct MethodOptions {
  int window = 32;                          // W: observation window = q-sim window = protected window
  PoolOptions pool{Pooling::avg, 5};        // snapkv / pyramidkv / cake / tappa token-score pooling
  bool snapkv_mean_rows = false;            // snapkv: mean (kvpress) instead of sum over the window rows
  double gamma = 200.0;                     // cake / tappa token score: mean + γ·var
  double alpha = std::numeric_limits<double>::infinity();  // tappa: ∞ → p = 1 − qsim
  bool cascading = false;                   // cake / tappa: re-allocate after every layer
  bool decode_eviction = false;             // CAKE layer-wise decode evictor
  int n_sink = 4;                           // streamingllm sinks
  bool streaming_keep_first = false;        // streamingllm: KVCache-Factory's "first C − W tokens"
  int h2o_rows = 512;                       // h2o prefill variant: last rows summed
  bool h2o_official_mask = false;           // h2o: only the W×W corner causally masked (official quirk)
  int pyramid_beta = 20;
  std::optional<CakeTau> tau;               // cake / finite-alpha tappa; unset → resolve_tau()
  ExpectedAttentionOptions ea;
  uint64_t seed = 0;                        // random
  double min_head_frac = 0.2;               // tappa-head: each KV head keeps ≥ this × layer budget
  double adakv_alpha = 0.2;                 // adakv: each KV head keeps ≥ alpha × layer budget (safeguard)
  Granularity granularity = Granularity::kv_head;
  // Room for methods added later (KVzip, TriAttention, …): knobs by name, read by the method that
  // owns them (registry: spec keys "name=value" that no built-in knob takes).
  std::vector<std::pair<std::string, double>> extra;
  double extra_or(std::string_view key, double fallback) const {
    for (const auto& [k, v] : extra)
      if (k == key) return v;
    return fallback;
  }
};

struct LayerNeeds;
struct LayerInputs;
struct LayerScores;

// One extra forward pass of a replay scorer (KVzip): `tokens` are run after the prompt on a copy of
// the sequence, and the attention its queries give to the prompt keys [key_begin, key_end) is kept
// (the maximum per query head and key, handed to Scorer::score as LayerInputs::replay_max).
struct ReplayCall {
  std::vector<int32_t> tokens;
  int key_begin = 0, key_end = 0;
};

// Ranks the cached tokens of one layer.
class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual std::string_view name() const = 0;
  virtual std::string_view description() const = 0;
  virtual bool none() const { return false; }  // fullkv: nothing scored, nothing evicted
  // What it needs from the engine for an n_prompt-token prompt (LayerNeeds::any is set by the caller).
  virtual void needs(const MethodOptions& o, int n_prompt, LayerNeeds& n) const {}
  // Scorers of the observation-window attention (SnapKV, CAKE): the window attention of each KV
  // group is computed once (shared with an allocator's statistics) and handed to score_group.
  virtual bool reads_window_attention() const { return false; }
  virtual void score_group(const AttentionView& a, int n_prefix, const MethodOptions& o, std::span<float> dst) const {}
  // Every other scorer: scores[H_kv][P] from the layer's inputs.
  virtual void score(const LayerInputs& in, const MethodOptions& o, int n_prefix, std::span<float> scores) const {}
  // Scores that come from passes of their own after the prefill (KVzip's context reconstruction): the
  // compressor then evicts nothing during the prefill and waits for KvCompressor::replay(engine, seq),
  // which runs replay_calls() on a fork of the sequence and scores from what their queries attended.
  virtual bool needs_replay() const { return false; }
  // The replay passes for a prompt of `context` tokens; tok is null for a model without a tokenizer.
  virtual std::vector<ReplayCall> replay_calls(std::span<const int32_t> context, const Tokenizer* tok,
                                               const MethodOptions& o) const {
    return {};
  }
  // Knob names it reads from MethodOptions::extra (for spec-string validation).
  virtual std::vector<std::string_view> extra_keys() const { return {}; }
  // Throws tappa::Error (one line) on a knob value it cannot use; called when a spec is parsed.
  virtual void validate(const MethodOptions& o) const {}
};

// Splits the budget over layers (and KV heads).
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual std::string_view name() const = 0;
  virtual std::string_view description() const = 0;
  virtual bool none() const { return false; }
  // Defaults it brings to any pairing (CAKE, TAPPA: cascading and decode-time eviction).
  virtual void defaults(MethodOptions& o) const {}
  // Preference allocators split by one score per layer (CAKE, TAPPA); they can cascade.
  virtual bool preference_based() const { return false; }
  virtual bool uses_qsim() const { return false; }
  virtual bool uses_cake_stats(const MethodOptions& o) const { return false; }
  virtual bool per_head_qsim() const { return false; }  // wants LayerScores::head_preference
  virtual double preference(const LayerScores& s, const MethodOptions& o) const { return 0.0; }
  virtual SplitArith arith(const MethodOptions& o) const { return SplitArith::f64; }
  // Final per-layer budgets; prefs: one per layer (preference allocators only).
  virtual LayerBudgets plan(const MethodOptions& o, const BudgetContext& ctx, std::span<const double> prefs) const = 0;
  // The layer's budget over its KV heads (default: the same for each; may read the layer's scores,
  // which the compressor then keeps: reads_scores).
  virtual std::vector<int> head_budgets(const MethodOptions& o, const LayerScores& s, int layer_budget) const;
  virtual bool reads_scores() const { return false; }
  virtual std::vector<std::string_view> extra_keys() const { return {}; }
  virtual void validate(const MethodOptions& o) const {}
};

// A pairing with its defaults: a preset ("tappa" = cake scorer + tappa allocator, cascading) or a
// spec's "scorer+allocator".
struct Method {
  std::string name;
  std::string description;  // one line, for --help
  const Scorer* scorer = nullptr;
  const Allocator* allocator = nullptr;
  MethodOptions defaults;
  bool is_none() const { return scorer->none(); }
};

// The presets, in --help order: fullkv, streamingllm, h2o, snapkv, pyramidkv, cake, tappa,
// tappa-head, expected-attention, knorm, random, then those registered later.
std::span<const Method> all_methods();
std::span<const Scorer* const> all_scorers();
std::span<const Allocator* const> all_allocators();
// A preset name, or "scorer+allocator" where scorer is a scorer's or a preset's name (the preset's
// scorer and knobs) and allocator an allocator's name. The result lives as long as the program.
// Throws tappa::Error listing the valid names otherwise.
const Method& find_method(std::string_view name);
const Scorer& find_scorer(std::string_view name);
const Allocator& find_allocator(std::string_view name);
// "fullkv, streamingllm, …" (for messages and --help).
std::string method_names(std::string_view sep = ", ");

// "none", "avg5" / "avg:5", "max7" / "max:7" → PoolOptions; throws tappa::Error otherwise.
PoolOptions parse_pooling(std::string_view spec);
std::string pooling_name(const PoolOptions& pool);  // "none", "avg5", "max7"

// Fills opts.tau from the official table (cake_tau(cake_tau_key(model_name), capacity)) unless it
// was set explicitly.
void resolve_tau(MethodOptions& opts, std::string_view model_name, int capacity);

// ---------------------------------------------------------------------------------------------
// Per-layer prefill
// ---------------------------------------------------------------------------------------------

// What the engine must hand over for one layer at prefill (N = prompt length).
struct LayerNeeds {
  bool any = false;             // false: nothing to score (fullkv)
  int query_rows = 0;           // last post-RoPE prompt query rows needed in LayerInputs::queries
  bool keys = false;            // post-RoPE keys of all N tokens
  bool values = false;          // values of all N tokens (expected-attention)
  bool pre_rope_queries = false;  // expected-attention: pre-RoPE queries for the statistics
                                  // (optional: without them the post-RoPE rows are de-rotated)
  bool accumulated_attention = false;  // h2o: optional, see LayerInputs::h2o_accumulated
};
LayerNeeds layer_needs(const Method& method, const MethodOptions& opts, int n_prompt);

struct LayerInputs {
  int layer = 0;
  // Post-RoPE queries of the last n_rows prompt positions (row r at position N − n_rows + r), all H
  // query heads; at least layer_needs().query_rows rows.
  HeadsView queries;
  HeadsView keys;    // post-RoPE keys, N rows per KV head (N = keys.n_rows)
  HeadsView values;  // N rows per KV head (expected-attention only)
  // expected-attention: queries for the statistics (pre-RoPE unless opts.ea.queries_post_rope),
  // row 0 at absolute position stat_pos0. Empty: `queries` are used (de-rotated exactly).
  HeadsView stat_queries;
  int64_t stat_pos0 = 0;
  // h2o (optional): attention received by key j summed over all causal prompt queries of query
  // head h, at h2o_accumulated[h*h2o_stride + j]. Null: the 512-row prefill variant is computed.
  const float* h2o_accumulated = nullptr;
  std::ptrdiff_t h2o_stride = 0;
  int n_head = 0;  // query heads; needed only when `queries` is empty (h2o from accumulated attention)
  // Replay scorers (kvzip): the largest attention key j received from the replay queries of query
  // head h, at replay_max[h*replay_stride + j]. Null during the prefill itself (scores are then
  // placeholders, replaced after KvCompressor::replay).
  const float* replay_max = nullptr;
  std::ptrdiff_t replay_stride = 0;
  // Optional: the window attention of one KV head's query group computed by the cache's own device
  // (KvCache::attention_rows), out [G][W][N] like window_attention_group; false: compute it here.
  // When set, snapkv / cake / tappa read no keys on the host (keys may then hold null pointers).
  std::function<bool(const HeadsView& qwin, int kv, std::span<float> out)> group_attention;
  RopeSpec rope;  // expected-attention
};

struct LayerScores {
  int n_head_kv = 0;
  int n_prefix = 0;                      // P = N − W (0: nothing to evict)
  std::vector<float> scores;             // [H_kv][P], higher = keep
  double preference = 0.0;               // p_l (cake, tappa, tappa-head), else 0
  double qsim = 0.0;                     // tappa, tappa-head: mean off-diagonal cosine of the window
  std::vector<double> head_preference;   // tappa-head: 1 − q-sim of each KV head's query group
  CakeStats cake;                        // cake, finite-alpha tappa
  std::vector<float> scratch;            // reused: one group's window attention (G·W·N floats)

  std::span<const float> head(int kv) const {
    return std::span<const float>(scores).subspan(static_cast<size_t>(kv) * n_prefix, n_prefix);
  }
};

// Computes the layer's token scores and preference (one pass; the window attention is computed one
// KV-head group at a time into out.scratch). Throws tappa::Error if an input the method needs is
// missing or mis-shaped.
void score_layer(const Method& method, const MethodOptions& opts, const LayerInputs& in, LayerScores& out);

// ---------------------------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------------------------

// Final per-layer budgets. prefs (one per layer, LayerScores::preference) are used by cake, tappa
// and tappa-head only (pass {} otherwise). fullkv: compress = false, unlimited decode budget.
LayerBudgets plan_budgets(const Method& method, const MethodOptions& opts, const BudgetContext& ctx,
                          std::span<const double> prefs);
// Cascading step (cake, tappa, tappa-head): shares of layers 0 … prefs_seen.size()−1.
std::vector<int> cascade_shares(const Method& method, const MethodOptions& opts, const BudgetContext& ctx,
                                std::span<const double> prefs_seen);
// tappa-head: the layer budget split over its KV heads (head_budgets with
// min_per_head = ⌊min_head_frac · layer_budget⌋, cap = P). Other methods: layer_budget for each head.
std::vector<int> layer_head_budgets(const Method& method, const MethodOptions& opts, const LayerScores& scores,
                                    int layer_budget);

}  // namespace tappa::kv
