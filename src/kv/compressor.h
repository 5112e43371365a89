// KvCompressor: the KvPolicy that runs a KV-compression method (methods.h: scorer × allocator) inside
// the engine and really frees the memory of the evicted rows (KvCache::keep_rows).
//
// What happens during an eval call of ≥ 2 tokens (the prompt), layer by layer (the engine calls
// on_prefill_layer(l) once layer l holds the K/V of every prompt token):
//   1. score_layer(): token scores [H_kv][P] and the layer's preference (and the window q-sim of
//      every layer, for the record, whatever the method);
//   2. eviction, as early as the method allows, so the cache never holds more than the compressed
//      layers plus the current one:
//        uniform / pyramidkv budgets do not depend on scores → layer l is cut at once;
//        cake / tappa / tappa-head with cascading → cascade_shares(prefs[0..l]) and every seen
//          layer is re-evicted to its new share (nested top-k on the stored, gathered scores);
//        cake / tappa / tappa-head without cascading → all layers are cut in on_prefill_done;
//   3. on_prefill_done: final budgets (plan_budgets), last evictions, the record.
// Decoding (opts.decode_eviction): after each 1-token step, every (layer, KV head) holding more than
// b + W rows is cut back to b + W by the current query's pooled attention (CAKE's layer-wise rule).
// granularity=query-head: before the first compressed layer is scored the cache's lists are repeated
// to one per query head (KvCache::repeat_lists); everything above is then per query head (group 1).
//
// Positions: the cache stores keys after RoPE and the engine's n_past() is independent of cache
// lengths, so kept rows keep their original positions; positions() reports them (for tests and
// analysis).
//
// Budget: `tokens` = C, tokens per layer on average including the protected window W (the papers'
// unit), or `ratio` = fraction of the prompt removed (kvpress's unit: C = ⌊N·(1 − r)⌋). C ≥ N means
// nothing is evicted. Errors (tappa::Error, one line): C ≤ 0, r ∉ [0, 1), C < W when the prompt
// (or decode eviction) would need compressing.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kv/methods.h"
#include "tappa/kv_policy.h"
#include "tappa/kv.h"
#include "tappa/observer.h"

namespace tappa {
class Engine;
class Model;
class Sequence;
}

namespace tappa::kv {

struct CompressorOptions {
  std::string method = "fullkv";
  // Starts as the method's defaults (Method::defaults); see make_compressor_options.
  MethodOptions opts;
  std::optional<int> budget;     // C: tokens per layer on average, window included
  std::optional<double> ratio;   // kvpress compression ratio (exclusive with budget)
  // expected-attention: pre-RoPE prompt query rows used for the statistics (0: every prompt row,
  // as kvpress does; otherwise the last N rows).
  int ea_stat_rows = 0;
  // Layers the engine skips (Engine::set_skip_layers): they hold no cache and get no budget.
  std::vector<int> skip_layers;
  // Decode eviction in batches: a list may grow to b + W + K − 1 rows and is then cut back to b + W
  // (by that step's attention). K = 1 is CAKE's rule (one row per step); K > 1 trades a slightly
  // larger bound for K times fewer list compactions (each keep_rows copies the whole list).
  int decode_evict_every = 1;
};

// The knobs of a spec string (kv/spec.h), typed; every one optional: unset keeps the method's default.
struct CompressorFlags {
  std::string method = "fullkv";
  std::optional<int> budget;
  std::optional<double> ratio;
  std::optional<int> window;
  std::optional<std::string> alpha;      // "inf" or a number
  std::optional<double> gamma;
  std::optional<std::string> pool;       // none, avg5, max7, …
  std::optional<bool> cascading;
  std::optional<bool> decode_evict;
  std::optional<int> n_sink;
  bool streaming_keep_first = false;
  std::optional<int> h2o_rows;
  bool h2o_official_mask = false;
  std::optional<int> pyramid_beta;
  std::optional<std::string> tau;        // "t1,t2"
  std::optional<uint64_t> seed;
  std::optional<double> min_head_frac;
  bool snapkv_mean = false;
  std::optional<int> ea_stat_rows;
  std::optional<int> decode_evict_every;
  // expected-attention (ExpectedAttentionOptions): future positions averaged, covariance term,
  // value-norm factor, epsilon.
  std::optional<int> ea_n_future;
  std::optional<bool> ea_covariance;
  std::optional<bool> ea_vnorm;
  std::optional<double> ea_epsilon;
  std::optional<double> adakv_alpha;
  std::optional<Granularity> granularity;
  std::vector<std::pair<std::string, double>> extra;  // knobs of methods registered beyond the built-ins
};
// Method defaults + flags. Throws tappa::Error (one line) on an unknown method, both --budget and
// --ratio, a non-positive budget, a bad ratio, pooling or alpha.
CompressorOptions make_compressor_options(const CompressorFlags& flags);

// The record types are the public ones (include/tappa/kv.h).
using HeadRecord = KvHeadRecord;
using LayerRecord = KvLayerRecord;
using CompressionRecord = KvRecord;

class KvCompressor : public KvPolicy {
 public:
  KvCompressor(const Model& model, CompressorOptions options);
  ~KvCompressor() override;

  const Method& method() const { return *method_; }
  const MethodOptions& method_options() const { return opts_; }
  const CompressorOptions& options() const { return options_; }
  // The capacity C the budget gives for an n_prompt-token prompt.
  int capacity_for(int n_prompt) const;
  // Throws the error a prefill of n_prompt tokens would throw (call before Engine::eval to fail early).
  void check(int n_prompt) const;
  // Whether this policy does anything (fullkv: no).
  bool active() const { return !method_->is_none(); }

  // h2o: an observer that sums the attention rows the engine computes anyway for the last
  // h2o_rows prompt queries (Engine::set_observer), so scoring costs no second attention pass;
  // nullptr for other methods and with h2o_official_mask (the engine's rows are exact-causal). It
  // needs the prompt's length beforehand (expect_prompt). Without it (or when the rows did not all
  // arrive) h2o computes those rows itself (h2o_scores_streaming).
  Observer* observer();
  // The next multi-token eval call: n_tokens tokens starting at position pos0.
  void expect_prompt(int n_tokens, int64_t pos0 = 0);

  // Replay scorers (kvzip): after a prompt was prefilled into `seq` (this compressor attached), runs the
  // scorer's replay passes on forks of `seq` (so `seq`, its logits and its cache stay as they are), takes
  // every prompt key's maximum attention from those queries, and only then evicts — with the
  // allocator's budgets, as on_prefill_done does for every other scorer. Nothing to do (returns at
  // once) for other scorers or when the prompt needed no compression. Until it has run, the prompt's
  // cache is uncompressed; a decode step before it throws tappa::Error.
  void replay(Engine& engine, Sequence& seq);
  bool awaiting_replay() const { return awaiting_replay_; }

  const CompressionRecord& record() const { return record_; }
  // Original positions (relative to the first prompt token's position pos0 of the compressed eval)
  // of the rows a (layer, KV head) list holds, in cache order; empty before a compressed prefill.
  const std::vector<int>& positions(int layer, int head) const;
  // The scores the method gave the prefix rows a (layer, KV head) list still holds after the prefill's
  // eviction, in cache order: entry j belongs to positions()[j] (the window rows, after them, have
  // none); empty before a compressed prefill. For tests against references of the scorers.
  std::span<const float> kept_scores(int layer, int head) const;
  // Decode budget (prefix tokens) of a (layer, KV head): the list is kept at ≤ this + W.
  int decode_budget(int layer, int head) const;

  // KvPolicy
  int prefill_query_rows() const override;
  void on_prefill_begin(int n_tokens, int64_t pos0) override;
  void on_prefill_layer(const PrefillLayerView& view, KvCache& cache) override;
  void on_prefill_done(KvCache& cache) override;
  bool wants_decode_attention() const override;
  void on_decode_layer(int layer, const std::vector<const float*>& probs, KvCache& cache) override;

 private:
  struct LayerState {
    LayerScores scores;                     // as scored (n_prefix = original P)
    std::vector<std::vector<float>> kept_scores;  // per head: scores of the kept prefix rows, cache order
    std::vector<std::vector<int>> pos;      // per head: original positions of the rows held
    std::vector<int> decode_budget;         // per head
    std::vector<size_t> bytes_before;       // per head
    bool seen = false;
  };
  void begin_prefill(const PrefillLayerView& view, KvCache& cache);
  void repeat_to_query_heads(KvCache& cache);
  void evict_layer(int layer, const std::vector<int>& head_budgets, KvCache& cache);
  void finish_prefill(KvCache& cache, bool evict_every_layer);
  bool replay_scorer() const { return method_->scorer->needs_replay(); }
  bool is_h2o() const { return method_->scorer->name() == "h2o"; }  // the engine-row observer is H2O's

  const Model& model_;
  CompressorOptions options_;
  const Method* method_;
  MethodOptions opts_;
  int n_layer_, n_head_, n_head_kv_, head_dim_;
  // Lists per layer of the cache the current prefill compresses: n_head_kv_, or n_head_ once
  // query-head granularity repeated them (repeat_to_query_heads). Every per-head state is per list.
  int n_lists_;
  std::vector<char> skip_;
  int n_active_ = 0;
  // Sliding-window (local) layers of gemma3-style models: the engine caps them at their window while a
  // policy is attached, so they take no part in the method (skip_ is set for them) and the budget
  // they do not use goes to the global layers (capacity_for). See docs/KV_COMPRESSION.md.
  int n_local_ = 0;
  int local_rows_cap_ = 0;  // rows a local layer keeps between calls: window - 1

  // Per prefill call.
  bool in_prefill_ = false;
  bool begin_next_ = false; // on_prefill_begin seen: the next layer starts a new prefill
  bool compress_ = false;   // this prefill evicts
  int N_ = 0, C_ = 0, W_ = 0;
  BudgetContext ctx_;
  LayerBudgets planned_;    // uniform / pyramidkv: known up front; preference: final at done
  std::vector<int> seen_;   // active layers handed over so far (in order)
  std::vector<double> prefs_;
  std::vector<LayerState> layers_;
  std::vector<const float*> kptr_, vptr_;
  std::vector<float> decoded_k_, decoded_v_;  // fp32 rows of a cache stored in another format
  std::vector<int> keep_;
  bool planned_decode_ = false;

  std::vector<float> scratch_, probs_, attn_scratch_;
  std::vector<float> host_rows_;  // one layer's K and V copied out of a device cache
  std::vector<float> group_q_;    // one query group's window rows for a device cache's attention

  // h2o from the engine's attention rows.
  class RowSum;
  friend class RowSum;
  std::unique_ptr<RowSum> rowsum_;
  int64_t hint_pos0_ = 0;
  int hint_n_ = 0;             // 0: no hint
  int rowsum_rows_ = 0;        // query rows summed (the last ones of the hinted call)
  int64_t rowsum_stride_ = 0;  // floats per head in rowsum_acc_
  std::vector<float> rowsum_acc_;       // [H][stride]
  std::unique_ptr<std::mutex[]> rowsum_mu_;  // one per query head
  std::atomic<int> rowsum_layer_{-1};
  std::atomic<int64_t> rowsum_count_{0};
  std::atomic<int64_t> rowsum_ns_{0};
  // Replay scorers: the prompt was scored but not evicted yet (KvCompressor::replay).
  bool awaiting_replay_ = false;
  class ReplayMax;
  friend class ReplayMax;
  std::vector<float> replay_acc_;            // [n_layer][H][N_]: max attention per query head and key
  std::unique_ptr<std::mutex[]> replay_mu_;  // one per query head
  int replay_begin_ = 0, replay_end_ = 0;    // keys the running replay call scores
  std::atomic<int64_t> replay_rows_{0};      // attention rows received (checked against those expected)

  CompressionRecord record_;
  static const std::vector<int> kEmpty;
};

}  // namespace tappa::kv
