// Tests written against one token stream: an Engine with a single Sequence, and the calls of that
// sequence under short names. Test code only — the library's API is Engine + Sequence.
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "tappa/engine.h"

namespace tappa::test {

class OneSequence {
 public:
  OneSequence(const Model& model, const EngineOptions& options = {})
      : engine_(model, options), seq_(engine_.new_sequence()) {}

  std::span<const float> eval(std::span<const int32_t> tokens, bool all_logits = false) {
    return engine_.eval(*seq_, tokens, all_logits);
  }
  void reset() { seq_->reset(); }
  void truncate(int64_t n) { seq_->truncate(n); }
  int64_t n_past() const { return seq_->n_past(); }
  int n_ctx() const { return seq_->n_ctx(); }
  int n_threads() const { return engine_.n_threads(); }
  KvCache& kv_cache() { return seq_->cache(); }
  void set_observer(Observer* o) { seq_->set_observer(o); }
  void set_kv_policy(KvPolicy* p) { seq_->set_policy(p); }
  void set_skip_layers(std::vector<int> layers) { engine_.set_skip_layers(std::move(layers)); }
  void set_rope_frequencies(std::vector<float> f) { engine_.set_rope_frequencies(std::move(f)); }
  const Model& model() const { return engine_.model(); }
  Engine& engine() { return engine_; }
  Sequence& seq() { return *seq_; }

 private:
  Engine engine_;
  std::unique_ptr<Sequence> seq_;
};

}  // namespace tappa::test
