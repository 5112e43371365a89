#include "evalkv/replay.h"

#include <algorithm>
#include <vector>

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

}  // namespace

Prefilled prefill_capture(Engine& engine, std::vector<int32_t> tokens, int query_rows, std::optional<KvCacheType> cache) {
  if (tokens.size() < 2) throw Error("prefill: the prompt needs at least 2 tokens");
  Prefilled p;
  p.tokens = std::move(tokens);
  p.cache = cache;
  const int n = static_cast<int>(p.tokens.size());
  CapturePolicy cap(query_rows > 0 ? std::min(query_rows, n) : n);
  auto seq = engine.new_sequence(SequenceOptions{0, cache});
  seq->set_policy(&cap);
  const std::span<const float> logits = engine.eval(*seq, p.tokens);
  p.last_logits.assign(logits.begin(), logits.end());
  p.layers = std::move(cap.layers);
  seq->set_policy(nullptr);
  p.state = seq->save();
  return p;
}

std::unique_ptr<Sequence> restore_prefill(Engine& engine, const Prefilled& p, kv::KvCompressor* comp) {
  auto seq = engine.new_sequence(SequenceOptions{0, p.cache});
  seq->restore(p.state);
  if (!comp) return seq;
  comp->check(static_cast<int>(p.tokens.size()));
  // The engine hands a policy layer l with every later layer still empty (a compressor checks the
  // lists' lengths): take the restored cache out and give it back layer by layer.
  const std::unique_ptr<KvCache> full = seq->cache().clone();
  KvCache& cache = seq->cache();
  cache.clear();
  const int n_layer = full->n_layer(), n_kv = full->n_head_kv();
  comp->on_prefill_begin(static_cast<int>(p.tokens.size()), 0);
  for (int l = 0; l < n_layer; ++l) {
    const int n = full->length(l, 0);
    if (n == 0) continue;  // a layer the engine skipped
    cache.reserve_extra(l, n);
    // Query-head granularity repeats the lists at the first compressed layer (KvCache::repeat_lists):
    // from then on each of the full cache's lists fills all of its copies.
    const int rep = cache.n_head_kv() / n_kv;
    for (int h = 0; h < cache.n_head_kv(); ++h)
      cache.append_from(l, h, *full, l, h / rep, 0, full->length(l, h / rep));  // rows as stored
    if (l < static_cast<int>(p.layers.size())) {
      const CapturedLayer& L = p.layers[l];
      PrefillLayerView v = L.view;
      v.q_post = L.q_post.data();
      v.q_pre = L.q_pre.data();
      comp->on_prefill_layer(v, cache);
    }
  }
  comp->on_prefill_done(cache);
  comp->replay(engine, *seq);  // replay scorers (kvzip) evict only now
  return seq;
}

std::string greedy_generate(Engine& engine, Sequence& seq, const Tokenizer& tok, std::span<const float> logits,
                            int max_new, bool stop_at_newline) {
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
    logits = engine.eval(seq, one);
  }
  return text;
}

}  // namespace tappa::evalkv
