// KV-cache compression through the public API: a method named by a spec string, a budget, and the
// compressor that runs it as a sequence's KV policy. The same spec strings work in `tappa run`,
// `compress`, `bench`, `eval-kv`, the server's `kv_method` and the Python module.
//
//   METHOD[:key=value]…   METHOD = a preset (fullkv, streamingllm, h2o, snapkv, pyramidkv, cake, tappa,
//                         tappa-head, expected-attention, knorm, random, …) or SCORER+ALLOCATOR
//   examples: "tappa", "snapkv+tappa", "expected-attention+tappa:alpha=inf", "snapkv:pool=max7"
//
//   tappa::KvCompressor comp(*model, {"tappa", 256});     // budget: 256 tokens per layer on average
//   seq->set_policy(&comp);
//   engine.eval(*seq, prompt);                             // compressed during the prefill
//   comp.record().layers[l].budget                         // what each layer kept
//
// Or wired in one call (the compressor as the policy, H2O's row observer, KVzip's replay):
//   tappa::KvSequence s = tappa::prefill_kv(engine, prompt, {"h2o", 256});
//   s.compressor->record()                                 // s.sequence decodes on, evicting if the method does
// (tappa::generate / Generator, include/tappa/generate.h, do the same for a whole generation.)
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tappa/engine.h"
#include "tappa/kv_cache.h"
#include "tappa/kv_policy.h"
#include "tappa/model.h"
#include "tappa/observer.h"

namespace tappa {

namespace kv {
class KvCompressor;
}
namespace evalkv {
struct Prefilled;
}
class Engine;
class Sequence;

struct KvOptions {
  std::string method = "fullkv";  // a spec string (above)
  // The budget: tokens kept per layer on average, the protected window included (the papers' unit),
  // or a compression ratio: the fraction of the prompt removed (kvpress's unit). One of them for any
  // method but fullkv.
  std::optional<int> budget;
  std::optional<double> ratio;
  // Layers the engine skips (Engine::set_skip_layers): they hold no cache and get no budget.
  std::vector<int> skip_layers;
};

// What a spec resolves to, known without a model.
struct KvMethodSummary {
  std::string method;            // the preset or pairing name ("tappa", "snapkv+tappa", "fullkv")
  bool compresses = false;       // false for fullkv: no policy needed at all
  bool decode_eviction = false;  // it also evicts while decoding (the method's default or the spec's)
};
// Checks a spec and budget without a model (one clear error line, ErrorCode::bad_input).
KvMethodSummary validate_kv_options(const KvOptions& options);

// What a compression did, per layer and KV head (bytes are bytes really held).
struct KvHeadRecord {
  int budget = 0;          // tokens this head may keep (prefix budget + window)
  int kept = 0;            // tokens it holds after prefill compression
  double qsim = 0.0;       // q-similarity of its query group (last W post-RoPE queries)
  double preference = 0.0;
  size_t bytes_before = 0, bytes_after = 0;
};

struct KvLayerRecord {
  int layer = 0;
  bool active = true;      // false: skipped by the engine (pruned)
  int n_tokens = 0;        // rows per head before compression
  int budget = 0;          // tokens the layer may keep per head (b_l + W)
  int kept = 0;            // tokens kept, summed over KV heads
  double qsim = 0.0;       // window q-similarity (mean over query heads)
  double preference = 0.0; // p_l of preference allocators (cake, tappa), else 0
  int re_evictions = 0;    // cascading: times the layer was cut
  size_t bytes_before = 0, bytes_after = 0;
  std::vector<KvHeadRecord> heads;
};

struct KvRecord {
  std::string method, scorer, allocator;
  int n_prompt = 0;        // N of the last compressed prefill
  int capacity = 0;        // C (tokens per layer on average, window included)
  int window = 0;          // W
  double ratio = 0.0;      // kvpress ratio equivalent of C
  bool compressed = false; // false: budget >= prompt: nothing evicted
  bool cascading = false, decode_eviction = false;
  std::string skipped_reason;
  std::vector<KvLayerRecord> layers;
  size_t bytes_held_before = 0;   // what the uncompressed cache holds for this prompt
  size_t bytes_held_after = 0;    // after the prefill's compression
  size_t bytes_held_peak = 0;     // the prefill's peak cache memory
  size_t bytes_peak_layerwise = 0;
  size_t bytes_expected = 0;      // the budget's memory
  double t_score = 0.0, t_evict = 0.0, t_observe = 0.0;  // seconds in the compression
  bool h2o_from_engine_rows = false;
  // granularity=query-head compressed this prefill: the cache holds one list per query head (layers'
  // heads[] are per query head) and bytes_held_after counts all of them.
  bool query_head = false;
  double t_total() const { return t_score + t_evict + t_observe; }
  int64_t decode_steps = 0;       // decode steps seen by the decode-time evictor
  int64_t decode_evicted = 0;     // rows it evicted
  double t_decode = 0.0;
};

// The record as JSON (docs/KV_COMPRESSION.md, "The record"); heads: include the per-head lists.
std::string to_json(const KvRecord& record, bool heads = true);

// A KV method as a sequence's KV policy. Not shared between sequences: one per sequence.
class KvCompressor final : public KvPolicy {
 public:
  // Throws tappa::Error (bad_input) on an unknown method or key, a bad value or budget.
  KvCompressor(const Model& model, const KvOptions& options);
  ~KvCompressor() override;
  KvCompressor(const KvCompressor&) = delete;
  KvCompressor& operator=(const KvCompressor&) = delete;

  bool active() const;                    // false for fullkv (nothing to do)
  std::string method() const;             // the preset or pairing name
  int capacity_for(int n_prompt) const;   // C the budget gives for an n_prompt-token prompt
  void check(int n_prompt) const;         // throws what a prefill of n_prompt tokens would throw
  const KvRecord& record() const;         // refreshed after each prefill and decode step
  // Per-layer budgets of the last compressed prefill (tokens per KV head, window included).
  std::vector<int> layer_budgets() const;
  // H2O sums the attention rows the engine computes anyway when this observer is attached to the
  // sequence (nullptr for other methods); it must know the prompt's length beforehand.
  Observer* observer();
  void expect_prompt(int n_tokens, int64_t pos0 = 0);
  // Methods that score the prompt by replaying it (kvzip): after the prompt ran in `seq` with this
  // policy attached, runs the replay on copies of `seq` and evicts; a no-op for every other method.
  // Generator and PrefillSnapshot::restore call it; a caller driving Engine::eval itself must too.
  void replay(Engine& engine, Sequence& seq);

  // KvPolicy
  int prefill_query_rows() const override;
  void on_prefill_begin(int n_tokens, int64_t pos0) override;
  void on_prefill_layer(const PrefillLayerView& view, KvCache& cache) override;
  void on_prefill_done(KvCache& cache) override;
  bool wants_decode_attention() const override;
  void on_decode_layer(int layer, const std::vector<const float*>& probs, KvCache& cache) override;

  kv::KvCompressor& impl() { return *impl_; }
  const kv::KvCompressor& impl() const { return *impl_; }

 private:
  std::unique_ptr<kv::KvCompressor> impl_;
};

// C the budget gives a KV method for an n_prompt-token prompt on `model` (tokens per layer, window
// included), after the checks a prefill makes: throws what KvCompressor::check throws.
int kv_capacity(const Model& model, const KvOptions& options, int n_prompt);

// The wiring of a KV method around a prompt, for callers that run the prompt themselves (Generator
// does this): attach_kv before it, kv_prompt_done after it.
// attach_kv: the compressor becomes `seq`'s policy (and stays so, for decode eviction) and, for H2O,
// its attention-row observer for the next n_prompt-token call, so scoring reuses the rows the engine
// computes; throws what the prefill would (KvCompressor::check). Returns nullptr for fullkv (no policy
// at all), unless record_only: then a compressor that evicts nothing but records (per-layer q-sim,
// bytes held) is attached. The compressor must outlive its use by the sequence.
std::unique_ptr<KvCompressor> attach_kv(Engine& engine, Sequence& seq, const KvOptions& options, int n_prompt,
                                        bool record_only = false);
// After that prompt ran in `seq`: replay scorers (kvzip) replay it and evict; the observer attach_kv
// set is detached. compressor may be nullptr (nothing to do).
void kv_prompt_done(Engine& engine, Sequence& seq, KvCompressor* compressor);

// A sequence and the KV method that is its policy. Members are destroyed in reverse order, so the
// sequence goes before the compressor it points to.
struct KvSequence {
  std::unique_ptr<KvCompressor> compressor;  // nullptr: no KV method (fullkv)
  std::unique_ptr<Sequence> sequence;
};

// A new sequence of `engine` with `prompt` run under a KV method (attach_kv, Engine::eval,
// kv_prompt_done): compressed as `tappa run --kv` compresses, ready to decode (Engine::eval,
// Generator's prepared-sequence constructor), the compressor still its policy for decode eviction.
KvSequence prefill_kv(Engine& engine, std::span<const int32_t> prompt, const KvOptions& options);

// A prompt prefilled once and replayed into many sequences: each restored sequence starts in the state
// right after the prompt (its uncompressed cache), and a KvCompressor given to restore() compresses
// it exactly as a real prefill would (the same hooks in the same order, the captured query rows) — so
// many methods, or many sequences, get the same long context without recomputing it (eval-kv's grid,
// `tappa bench -d N --kv`).
class PrefillSnapshot {
 public:
  // Runs `tokens` from position 0 in a new sequence of `engine`, keeping the last `query_rows` query
  // rows of every layer (0: all; KvCompressor::prefill_query_rows() says how many a method reads).
  PrefillSnapshot(Engine& engine, std::vector<int32_t> tokens, int query_rows = 0);
  // Keeping the query rows the KV method of `kv` reads (KvCompressor::prefill_query_rows).
  PrefillSnapshot(Engine& engine, std::vector<int32_t> tokens, const KvOptions& kv);
  ~PrefillSnapshot();
  PrefillSnapshot(PrefillSnapshot&&) noexcept;
  PrefillSnapshot& operator=(PrefillSnapshot&&) noexcept;
  // A new sequence of `engine` after the prompt; compressed by `compressor` when given (which is not
  // attached to it: set_policy it for decode eviction).
  std::unique_ptr<Sequence> restore(Engine& engine, KvCompressor* compressor = nullptr) const;
  // Restored and compressed by a new compressor of `kv`, which stays the sequence's policy (decode
  // eviction); fullkv: restored uncompressed, no compressor.
  KvSequence restore(Engine& engine, const KvOptions& kv) const;

 private:
  std::unique_ptr<evalkv::Prefilled> impl_;
};

// The registry, for listings and --help.
struct KvMethodInfo {
  std::string name;
  std::string description;
};
std::vector<KvMethodInfo> kv_presets();
std::vector<KvMethodInfo> kv_scorers();
std::vector<KvMethodInfo> kv_allocators();
std::string kv_spec_keys();   // "alpha, window, …"
std::string kv_methods_help();  // the presets, the pairing rule and the budget units, for --help

}  // namespace tappa
