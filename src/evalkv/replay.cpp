#include "evalkv/replay.h"

#include "tappa/error.h"
#include "tappa/model.h"

namespace tappa::evalkv {
namespace {

class CapturePolicy : public KvPolicy {
 public:
  explicit CapturePolicy(int rows) : rows_(rows) {}
  int prefill_query_rows() const override { return rows_; }
  void on_prefill_layer(const PrefillLayerView& v, KvCache&) override {
    if (static_cast<int>(layers.size()) <= v.layer) layers.resize(v.layer + 1);
    CapturedLayer& L = layers[v.layer];
    L.view = v;
    // The engine reuses its buffers for the next layer: copy.
    const size_t n = static_cast<size_t>(v.n_rows) * v.n_head * v.head_dim;
    L.q_post.assign(v.q_post, v.q_post + n);
    L.q_pre.assign(v.q_pre, v.q_pre + n);
  }
  std::vector<CapturedLayer> layers;

 private:
  int rows_;
};

std::vector<int> every_layer(const Engine& e) {
  std::vector<int> all(e.model().config().n_layer);
  for (size_t l = 0; l < all.size(); ++l) all[l] = static_cast<int>(l);
  return all;
}

}  // namespace

Prefilled prefill_capture(Engine& engine, std::vector<int32_t> tokens) {
  if (tokens.size() < 2) throw Error("prefill: the prompt needs at least 2 tokens");
  Prefilled p;
  p.tokens = std::move(tokens);
  CapturePolicy cap(static_cast<int>(p.tokens.size()));
  engine.set_observer(nullptr);
  engine.reset();
  engine.set_skip_layers({});
  engine.set_kv_policy(&cap);
  std::span<const float> logits;
  try {
    logits = engine.eval(p.tokens);
  } catch (...) {
    engine.set_kv_policy(nullptr);
    throw;
  }
  engine.set_kv_policy(nullptr);
  p.last_logits.assign(logits.begin(), logits.end());
  p.layers = std::move(cap.layers);
  p.cache = std::make_unique<KvCache>(engine.kv_cache());
  return p;
}

void restore_prefill(Engine& engine, const Prefilled& p, kv::KvCompressor* comp) {
  engine.set_kv_policy(nullptr);
  engine.set_observer(nullptr);
  engine.reset();
  engine.set_skip_layers(every_layer(engine));
  engine.eval(p.tokens);  // advances the positions; every list stays empty
  engine.set_skip_layers({});
  if (comp) comp->check(static_cast<int>(p.tokens.size()));
  KvCache& cache = engine.kv_cache();
  const KvCache& src = *p.cache;
  const int n_layer = src.n_layer(), n_kv = src.n_head_kv(), d = src.head_dim();
  // Layer by layer, as the engine appends them: a compressor sees the later layers still empty (it
  // checks that every list held the same number of rows before the call).
  for (int l = 0; l < n_layer; ++l) {
    const int n = src.length(l, 0);
    if (n == 0) continue;  // a layer the engine skipped
    cache.reserve_extra(l, n);
    for (int h = 0; h < n_kv; ++h) cache.append(l, h, src.keys(l, h), src.values(l, h), src.length(l, h), d);
    if (comp && l < static_cast<int>(p.layers.size())) {
      const CapturedLayer& L = p.layers[l];
      PrefillLayerView v = L.view;
      v.q_post = L.q_post.data();
      v.q_pre = L.q_pre.data();
      comp->on_prefill_layer(v, cache);
    }
  }
  if (comp) comp->on_prefill_done(cache);
}

std::string greedy_generate(Engine& engine, const Tokenizer& tok, std::span<const float> logits, int max_new,
                            bool stop_at_newline) {
  std::string text;
  for (int i = 0; i < max_new; ++i) {
    const int32_t next = argmax(logits);
    if (tok.is_eog(next)) break;
    text += tok.token_to_piece(next);
    if (stop_at_newline) {
      const size_t first = text.find_first_not_of(" \t\r\n");
      if (first != std::string::npos) {
        const size_t nl = text.find('\n', first);
        if (nl != std::string::npos) {
          text.resize(nl);
          break;
        }
      }
    }
    if (i + 1 == max_new) break;
    const int32_t one[1] = {next};
    logits = engine.eval(one);
  }
  return text;
}

}  // namespace tappa::evalkv
