// Engine and Sequence: checks at the API boundary, sequence bookkeeping (tokens, positions), and the
// hand-over to the forward pass (forward.cpp), which runs on the backend the engine was made with.
#include "tappa/engine.h"

#include <algorithm>
#include <string>

#include "backend/backend.h"
#include "engine/forward.h"
#include "engine/sequence_impl.h"
#include "model/weights.h"
#include "tappa/error.h"

namespace tappa {

// --- Sequence ------------------------------------------------------------------------------------

Sequence::Sequence(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Sequence::~Sequence() = default;

int64_t Sequence::n_past() const { return impl_->n_past; }
int Sequence::n_ctx() const { return impl_->n_ctx; }
std::span<const int32_t> Sequence::tokens() const { return impl_->tokens; }
KvCache& Sequence::cache() { return *impl_->cache; }
const KvCache& Sequence::cache() const { return *impl_->cache; }
std::span<const float> Sequence::logits() const { return impl_->logits; }
void Sequence::set_policy(KvPolicy* policy) { impl_->policy = policy; }
KvPolicy* Sequence::policy() const { return impl_->policy; }
void Sequence::set_observer(Observer* observer) { impl_->observer = observer; }
Observer* Sequence::observer() const { return impl_->observer; }

void Sequence::reset() {
  impl_->cache->clear();
  impl_->n_past = 0;
  impl_->tokens.clear();
}

void Sequence::truncate(int64_t n) {
  Impl& s = *impl_;
  if (n < 0 || n > s.n_past) throw Error("truncate: position " + std::to_string(n) + " is outside the sequence (0.." +
                                         std::to_string(s.n_past) + ")");
  const KvCache& c = *s.cache;
  for (int l = 0; l < c.n_layer(); ++l)
    for (int h = 0; h < c.n_head_kv(); ++h) {
      const int len = c.length(l, h);
      // Skipped (pruned) layers hold no rows; any other length means rows were evicted or windowed.
      if (len != 0 && len != s.n_past)
        throw Error("truncate: the KV cache is compressed (layer " + std::to_string(l) + " holds " + std::to_string(len) +
                    " of " + std::to_string(s.n_past) + " rows); positions cannot be cut from it");
    }
  for (int l = 0; l < c.n_layer(); ++l)
    for (int h = 0; h < c.n_head_kv(); ++h) s.cache->keep_first(l, h, static_cast<int>(n));
  s.n_past = n;
  s.tokens.resize(static_cast<size_t>(n));
}

std::unique_ptr<Sequence> Sequence::fork() const {
  auto impl = std::make_unique<Impl>();
  impl->engine = impl_->engine;
  impl->cache = impl_->cache->clone();
  impl->n_ctx = impl_->n_ctx;
  impl->n_past = impl_->n_past;
  impl->tokens = impl_->tokens;
  impl->logits = impl_->logits;
  return std::unique_ptr<Sequence>(new Sequence(std::move(impl)));
}

// --- Engine --------------------------------------------------------------------------------------

Engine::Engine(std::shared_ptr<const Model> model, const EngineOptions& options)
    : owned_(std::move(model)), model_(owned_.get()) {
  if (!model_) throw Error("Engine: no model");
  init(options);
}

Engine::Engine(const Model& model, const EngineOptions& options) : model_(&model) { init(options); }

void Engine::init(const EngineOptions& options) {
  const ModelConfig& c = model_->config();
  n_ctx_ = options.n_ctx > 0 ? options.n_ctx : c.n_ctx_train;
  if (n_ctx_ <= 0) throw Error("context size must be positive");
  n_batch_ = std::max(1, options.n_batch);
  cache_type_ = options.cache;
  cache_format_ = resolve_kv_format(cache_type_, c.head_dim);
  if (c.n_group() > 64)
    throw Error("unsupported attention: " + std::to_string(c.n_group()) + " query heads per KV head (at most 64)");
  backend_ = backend::make_backend(options.backend, options.n_threads);
  prepare_backend();
  forward_ = std::make_unique<Forward>(*model_, *backend_, n_batch_);
  skip_.assign(c.n_layer, 0);
}

Engine::~Engine() = default;

// Every weight the forward pass reads, handed to the backend once (a GPU copies them to its memory).
void Engine::prepare_backend() {
  const ModelConfig& c = model_->config();
  const ModelWeights& w = model_->weights();
  std::vector<WeightView> mats{w.token_embd, w.output};
  std::vector<backend::VectorView> vecs{{w.output_norm, c.n_embd}};
  if (w.rope_freqs) vecs.push_back({w.rope_freqs, c.n_rot / 2});
  for (const LayerWeights& L : w.layers) {
    for (const WeightView* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) mats.push_back(*m);
    const int64_t E = c.n_embd, QD = int64_t{c.n_head} * c.head_dim, KD = int64_t{c.n_head_kv} * c.head_dim;
    for (const backend::VectorView& v : {backend::VectorView{L.attn_norm, E}, backend::VectorView{L.ffn_norm, E},
                                         backend::VectorView{L.bq, QD}, backend::VectorView{L.bk, KD},
                                         backend::VectorView{L.bv, KD}, backend::VectorView{L.q_norm, c.head_dim},
                                         backend::VectorView{L.k_norm, c.head_dim}, backend::VectorView{L.post_attn_norm, E},
                                         backend::VectorView{L.post_ffn_norm, E}})
      if (v.data) vecs.push_back(v);
  }
  backend_->prepare_weights(mats, vecs);
}

int Engine::n_threads() const { return backend_->n_threads(); }
std::string Engine::backend_name() const { return backend_->name(); }

std::unique_ptr<Sequence> Engine::new_sequence(int n_ctx) { return new_sequence(SequenceOptions{n_ctx, std::nullopt}); }

std::unique_ptr<Sequence> Engine::new_sequence(const SequenceOptions& o) {
  if (o.n_ctx < 0) throw Error("new_sequence: negative context size");
  const ModelConfig& c = model_->config();
  const KvCacheFormat format = o.cache ? resolve_kv_format(*o.cache, c.head_dim) : cache_format_;
  auto impl = std::make_unique<Sequence::Impl>();
  impl->engine = this;
  impl->cache = backend_->new_cache(c.n_layer, c.n_head_kv, c.head_dim, format);
  impl->n_ctx = o.n_ctx > 0 ? o.n_ctx : n_ctx_;
  return std::unique_ptr<Sequence>(new Sequence(std::move(impl)));
}

void Engine::set_skip_layers(std::vector<int> layers) {
  const int n_layer = model_->config().n_layer;
  std::vector<char> skip(n_layer, 0);
  for (int l : layers) {
    if (l < 0 || l >= n_layer)
      throw Error("layer " + std::to_string(l) + " does not exist (the model has " + std::to_string(n_layer) + " layers)");
    skip[l] = 1;
  }
  skip_ = std::move(skip);
}

void Engine::set_rope_frequencies(std::vector<float> inv_freq) {
  if (!inv_freq.empty() && static_cast<int>(inv_freq.size()) != model_->config().n_rot / 2)
    throw Error("set_rope_frequencies: expected " + std::to_string(model_->config().n_rot / 2) + " frequencies, got " +
                std::to_string(inv_freq.size()));
  rope_inv_freq_override_ = std::move(inv_freq);
}

void Engine::decode(std::span<const Step> steps, const RunControl& control) {
  const ModelConfig& c = model_->config();
  if (steps.empty()) throw Error("decode: no sequences");
  // A handful of sequences per call: a linear scan stays cheaper than a hash set below ~64.
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& st = steps[i];
    if (st.seq == nullptr) throw Error("decode: step " + std::to_string(i) + " has no sequence");
    const Sequence::Impl& s = st.seq->impl();
    if (s.engine != this) throw Error("decode: step " + std::to_string(i) + " is a sequence of another engine");
    for (size_t j = 0; j < i; ++j)
      if (steps[j].seq == st.seq) throw Error("decode: a sequence appears twice in one call (steps " + std::to_string(j) +
                                              " and " + std::to_string(i) + ")");
    const int64_t n = static_cast<int64_t>(st.tokens.size());
    if (n == 0) throw Error("decode: step " + std::to_string(i) + " has no tokens");
    if (s.n_past + n > s.n_ctx)
      throw Error(ErrorCode::context_overflow, "context overflow: " + std::to_string(s.n_past) + " cached + " +
                                                   std::to_string(n) + " new tokens exceed the context of " +
                                                   std::to_string(s.n_ctx) + " tokens (raise -c/--ctx-size)");
    for (int32_t t : st.tokens)
      if (t < 0 || t >= c.n_vocab)
        throw Error("token id " + std::to_string(t) + " is out of range [0, " + std::to_string(c.n_vocab) + ")");
  }
  forward_->run(steps, skip_, rope_inv_freq_override_.empty() ? nullptr : rope_inv_freq_override_.data(), control);
  for (const Step& st : steps) {
    Sequence::Impl& s = st.seq->impl();
    s.tokens.insert(s.tokens.end(), st.tokens.begin(), st.tokens.end());
    s.n_past += static_cast<int64_t>(st.tokens.size());
  }
}

std::span<const float> Engine::eval(Sequence& seq, std::span<const int32_t> tokens, bool all_logits,
                                    const RunControl& control) {
  const Step step{&seq, tokens, all_logits};
  decode(std::span<const Step>(&step, 1), control);
  return seq.logits();
}

}  // namespace tappa
