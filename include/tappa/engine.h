// Running a model: an Engine holds the weights (through the Model), a backend (CPU, reference, …) and
// its workspaces; a Sequence holds one token stream — its tokens and positions, its own KV cache, its
// KV policy and observer. One engine runs any number of sequences, and advances several in one pass
// (decode): each weight matrix is read once for all of them, and each sequence attends over its own
// (possibly compressed, ragged) cache.
//
//   auto engine = tappa::Engine(model);               // model: std::shared_ptr<const Model>
//   auto seq = engine.new_sequence();
//   engine.eval(*seq, prompt_tokens);                  // prefill
//   int32_t next = tappa::argmax(seq->logits());
//   std::vector<tappa::Engine::Step> steps = {{a.get(), tok_a}, {b.get(), tok_b}};
//   engine.decode(steps);                              // a and b advance by one token each
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tappa/control.h"
#include "tappa/kv_cache.h"
#include "tappa/kv_policy.h"
#include "tappa/model.h"
#include "tappa/observer.h"

namespace tappa {

namespace backend {
class Backend;
}

struct EngineOptions {
  int n_threads = 0;              // 0: all hardware threads
  int n_ctx = 0;                  // context of new sequences; 0: the model's training context
  int n_batch = 512;              // prompt tokens per forward chunk
  std::string backend = "cpu";    // "cpu" or "reference" (plain scalar loops, for tests)
  // KV-cache storage of new sequences (llama.cpp's -ctk / -ctv); SequenceOptions can override it.
  KvCacheType cache{};
};

// A sequence's own settings (Engine::new_sequence); unset fields take the engine's.
struct SequenceOptions {
  int n_ctx = 0;                      // 0: the engine's
  std::optional<KvCacheType> cache{}; // K/V storage; unset: EngineOptions::cache
};

class Engine;

// One token stream. Made by Engine::new_sequence; used with the engine that made it.
class Sequence {
 public:
  ~Sequence();
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  int64_t n_past() const;                 // position of the next token (tokens consumed so far)
  int n_ctx() const;                      // most tokens it may hold
  std::span<const int32_t> tokens() const;  // every token consumed, in order
  KvCache& cache();
  const KvCache& cache() const;
  // Logits of the last call that advanced this sequence: [n_vocab] for its last token, or
  // [n][n_vocab] when it asked for all. Valid until the sequence is advanced again.
  std::span<const float> logits() const;

  // KV-cache compression (tappa/kv_policy.h) and analysis hooks (tappa/observer.h); nullptr: none.
  // Not owned; they must outlive their use.
  void set_policy(KvPolicy* policy);
  KvPolicy* policy() const;
  void set_observer(Observer* observer);
  Observer* observer() const;

  // Empties the cache; the next token is at position 0.
  void reset();
  // Forgets positions >= n (0 <= n <= n_past()), so several continuations of one prefix can be scored
  // without recomputing it. Only for an uncompressed cache (every list holds n_past() rows).
  void truncate(int64_t n);
  // A new sequence of the same engine with a copy of this one's tokens and cache (no policy or
  // observer): a shared prompt prefix continued two ways.
  std::unique_ptr<Sequence> fork() const;
  // The sequence's state (tokens, positions, every list of the cache) as bytes, and back. restore()
  // replaces this sequence's state; the bytes must come from a sequence of the same model shape.
  // Throws tappa::Error(bad_input) on bytes that are not such a state.
  std::vector<uint8_t> save() const;
  void restore(std::span<const uint8_t> state);

  struct Impl;
  Impl& impl() { return *impl_; }
  const Impl& impl() const { return *impl_; }

 private:
  friend class Engine;
  explicit Sequence(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Engine {
 public:
  // Keeps the model alive for as long as the engine lives.
  explicit Engine(std::shared_ptr<const Model> model, const EngineOptions& options = {});
  // The caller keeps `model` alive while the engine exists.
  explicit Engine(const Model& model, const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A new, empty sequence; n_ctx 0: the engine's default.
  std::unique_ptr<Sequence> new_sequence(int n_ctx = 0);
  // A new, empty sequence with its own context size and K/V storage format. Throws tappa::Error when
  // the format does not fit the model (a block type needs head_dim % 32 == 0, rotation % 64 == 0).
  std::unique_ptr<Sequence> new_sequence(const SequenceOptions& options);
  // The format new sequences get by default (EngineOptions::cache resolved for this model).
  KvCacheFormat cache_format() const { return cache_format_; }

  // One sequence's tokens in a forward pass; all_logits: logits of every token, not only the last.
  struct Step {
    Sequence* seq = nullptr;
    std::span<const int32_t> tokens;
    bool all_logits = false;
  };
  // Advances every step's sequence by its tokens in one pass: one-token steps (decodes) are computed
  // together, each weight matrix read once for all of them and every row exactly as it would be alone;
  // longer steps (prompt chunks) ride in the same pass. A sequence may appear once. Throws
  // tappa::Error: bad_input (no tokens, a token id out of range, a sequence twice or of another
  // engine), context_overflow, cancelled (control.cancel set: the sequences are left as before the
  // call, or reset where a policy had already compressed them).
  void decode(std::span<const Step> steps, const RunControl& control = {});
  // One sequence: decode({{&seq, tokens, all_logits}}); returns seq.logits().
  std::span<const float> eval(Sequence& seq, std::span<const int32_t> tokens, bool all_logits = false,
                              const RunControl& control = {});

  const Model& model() const { return *model_; }
  int n_ctx() const { return n_ctx_; }
  int n_batch() const { return n_batch_; }
  int n_threads() const;
  std::string backend_name() const;

  // Model variants for every sequence of this engine:
  // layers in the list are skipped entirely (in-memory layer pruning);
  void set_skip_layers(std::vector<int> layers);
  const std::vector<char>& skip_layers() const { return skip_; }
  // the RoPE angular frequency of every channel is replaced ([n_rot/2] values; empty restores the
  // model's own). Cached keys keep the rotation they were stored with.
  void set_rope_frequencies(std::vector<float> inv_freq);

  struct Forward;

 private:
  void init(const EngineOptions& options);
  void prepare_backend();

  std::shared_ptr<const Model> owned_;
  const Model* model_;
  int n_ctx_ = 0;
  int n_batch_ = 512;
  KvCacheType cache_type_;
  KvCacheFormat cache_format_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<Forward> forward_;
  std::vector<char> skip_;
  std::vector<float> rope_inv_freq_override_;
};

// Sampling of the next token from logits.
struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy (argmax)
  int top_k = 40;            // <= 0: no top-k cut
  float top_p = 0.95f;       // >= 1: no nucleus cut
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  uint64_t state_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace tappa
