// The forward pass with a KV cache. Prompt tokens go through in batches (matrix-matrix products);
// generation feeds one token at a time against the cache.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tappa/model.h"
#include "tappa/observer.h"

namespace tappa {

class KvCache;
class KvPolicy;

struct EngineOptions {
  int n_threads = 0;  // 0: all hardware threads
  int n_ctx = 0;      // 0: the model's training context
  int n_batch = 512;  // prompt tokens per forward batch
};

class Engine {
 public:
  Engine(const Model& model, const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs `tokens` at positions n_past() .. n_past()+n-1 and appends them to the cache. Returns the
  // logits of the last token ([n_vocab]) or, with all_logits, of every token ([n][n_vocab]). The
  // span stays valid until the next call. Throws tappa::Error if the context would overflow or a
  // token id is out of range.
  std::span<const float> eval(std::span<const int32_t> tokens, bool all_logits = false);

  int64_t n_past() const { return n_past_; }
  int n_ctx() const { return n_ctx_; }
  int n_threads() const;
  void reset();  // empties the cache
  // Forgets the cached positions >= n (0 <= n <= n_past()), so several continuations of one prefix
  // can be scored without recomputing the prefix (eval's log-likelihoods). Not with a KV policy.
  void truncate(int64_t n);

  const Model& model() const { return model_; }
  KvCache& kv_cache() { return *kv_; }
  const KvCache& kv_cache() const { return *kv_; }

  void set_observer(Observer* observer) { observer_ = observer; }
  // KV-cache compression (src/kv/policy.h); nullptr: the cache keeps everything.
  void set_kv_policy(KvPolicy* policy) { policy_ = policy; }
  // Layers in the list are skipped entirely (in-memory layer pruning).
  void set_skip_layers(std::vector<int> layers);
  // Replaces the RoPE angular frequency of every channel ([n_rot/2] values; empty restores the
  // model's own). Call before the first eval: cached keys keep the rotation they were stored with.
  void set_rope_frequencies(std::vector<float> inv_freq);

 private:
  struct Workspace;
  void forward(const int32_t* tokens, int n, bool all_logits, float* logits_out);

  const Model& model_;
  int n_ctx_;
  int n_batch_;
  int64_t n_past_ = 0;
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<Workspace> ws_;
  std::vector<float> logits_;
  std::vector<char> skip_;
  std::vector<float> rope_inv_freq_override_;
  Observer* observer_ = nullptr;
  KvPolicy* policy_ = nullptr;
  std::vector<const float*> decode_prob_ptrs_;
  std::vector<int> window_rows_;  // rows a local layer keeps under a KV policy (reused, no allocation per call)
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
