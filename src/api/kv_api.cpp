// The public KV-compression API (include/tappa/kv.h) over the method registry and compressor of
// src/kv: spec strings in, records out.
#include "tappa/kv.h"

#include <nlohmann/json.hpp>

#include "evalkv/replay.h"
#include "kv/compressor.h"
#include "kv/methods.h"
#include "kv/spec.h"
#include "tappa/error.h"

namespace tappa {

namespace {

kv::CompressorOptions options_of(const KvOptions& o) {
  kv::CompressorOptions c = kv::make_spec_options(o.method, o.budget, o.ratio);
  c.skip_layers = o.skip_layers;
  return c;
}

}  // namespace

KvMethodSummary validate_kv_options(const KvOptions& o) {
  const kv::CompressorOptions c = options_of(o);
  const kv::Method& m = kv::find_method(c.method);
  return {c.method, !m.is_none(), c.opts.decode_eviction};
}

nlohmann::json record_to_json(const KvRecord& r, bool heads) {
  nlohmann::json j;
  j["method"] = r.method;
  j["scorer"] = r.scorer;
  j["allocator"] = r.allocator;
  j["n_prompt"] = r.n_prompt;
  j["capacity"] = r.capacity;
  j["window"] = r.window;
  j["ratio"] = r.ratio;
  j["compressed"] = r.compressed;
  j["cascading"] = r.cascading;
  j["decode_eviction"] = r.decode_eviction;
  if (!r.skipped_reason.empty()) j["skipped_reason"] = r.skipped_reason;
  j["bytes_held_before"] = r.bytes_held_before;
  j["bytes_held_after"] = r.bytes_held_after;
  j["bytes_held_peak"] = r.bytes_held_peak;
  j["bytes_peak_layerwise"] = r.bytes_peak_layerwise;
  j["bytes_expected"] = r.bytes_expected;
  j["t_score_s"] = r.t_score;
  j["t_evict_s"] = r.t_evict;
  j["t_observe_s"] = r.t_observe;
  j["h2o_from_engine_rows"] = r.h2o_from_engine_rows;
  j["query_head"] = r.query_head;
  j["decode_steps"] = r.decode_steps;
  j["decode_evicted"] = r.decode_evicted;
  j["t_decode_evict_s"] = r.t_decode;
  auto& layers = j["layers"] = nlohmann::json::array();
  for (const KvLayerRecord& l : r.layers) {
    nlohmann::json jl{{"layer", l.layer},           {"active", l.active},       {"n_tokens", l.n_tokens},
                      {"budget", l.budget},         {"kept", l.kept},           {"qsim", l.qsim},
                      {"preference", l.preference}, {"re_evictions", l.re_evictions},
                      {"bytes_before", l.bytes_before}, {"bytes_after", l.bytes_after}};
    if (heads) {
      auto& jh = jl["heads"] = nlohmann::json::array();
      for (size_t h = 0; h < l.heads.size(); ++h) {
        const KvHeadRecord& hr = l.heads[h];
        jh.push_back({{"kv_head", h},
                      {"budget", hr.budget},
                      {"kept", hr.kept},
                      {"qsim", hr.qsim},
                      {"preference", hr.preference},
                      {"bytes_before", hr.bytes_before},
                      {"bytes_after", hr.bytes_after}});
      }
    }
    layers.push_back(std::move(jl));
  }
  return j;
}


std::string to_json(const KvRecord& record, bool heads) { return record_to_json(record, heads).dump(); }

KvCompressor::KvCompressor(const Model& model, const KvOptions& options)
    : impl_(std::make_unique<kv::KvCompressor>(model, options_of(options))) {}
KvCompressor::~KvCompressor() = default;

bool KvCompressor::active() const { return impl_->active(); }
std::string KvCompressor::method() const { return impl_->method().name; }
int KvCompressor::capacity_for(int n_prompt) const { return impl_->capacity_for(n_prompt); }
void KvCompressor::check(int n_prompt) const { impl_->check(n_prompt); }
const KvRecord& KvCompressor::record() const { return impl_->record(); }
std::vector<int> KvCompressor::layer_budgets() const {
  std::vector<int> b;
  for (const KvLayerRecord& l : impl_->record().layers) b.push_back(l.budget);
  return b;
}
Observer* KvCompressor::observer() { return impl_->observer(); }
void KvCompressor::expect_prompt(int n_tokens, int64_t pos0) { impl_->expect_prompt(n_tokens, pos0); }
void KvCompressor::replay(Engine& engine, Sequence& seq) { impl_->replay(engine, seq); }
int KvCompressor::prefill_query_rows() const { return impl_->prefill_query_rows(); }
void KvCompressor::on_prefill_begin(int n_tokens, int64_t pos0) { impl_->on_prefill_begin(n_tokens, pos0); }
void KvCompressor::on_prefill_layer(const PrefillLayerView& view, KvCache& cache) { impl_->on_prefill_layer(view, cache); }
void KvCompressor::on_prefill_done(KvCache& cache) { impl_->on_prefill_done(cache); }
bool KvCompressor::wants_decode_attention() const { return impl_->wants_decode_attention(); }
void KvCompressor::on_decode_layer(int layer, const std::vector<const float*>& probs, KvCache& cache) {
  impl_->on_decode_layer(layer, probs, cache);
}

int kv_capacity(const Model& model, const KvOptions& options, int n_prompt) {
  const KvCompressor probe(model, options);
  probe.check(n_prompt);
  return probe.capacity_for(n_prompt);
}

std::unique_ptr<KvCompressor> attach_kv(Engine& engine, Sequence& seq, const KvOptions& options, int n_prompt,
                                        bool record_only) {
  auto comp = std::make_unique<KvCompressor>(engine.model(), options);
  if (!comp->active() && !record_only) return nullptr;  // fullkv: no policy at all
  comp->check(n_prompt);
  seq.set_policy(comp.get());
  if (Observer* ob = comp->observer()) {  // h2o sums the attention rows the engine computes anyway
    seq.set_observer(ob);
    comp->expect_prompt(n_prompt, seq.n_past());
  }
  return comp;
}

void kv_prompt_done(Engine& engine, Sequence& seq, KvCompressor* compressor) {
  if (!compressor) return;
  compressor->replay(engine, seq);  // replay scorers (kvzip) score and evict after the prompt
  if (seq.observer() && seq.observer() == compressor->observer()) seq.set_observer(nullptr);
}

KvSequence prefill_kv(Engine& engine, std::span<const int32_t> prompt, const KvOptions& options) {
  KvSequence s;
  s.sequence = engine.new_sequence();
  s.compressor = attach_kv(engine, *s.sequence, options, static_cast<int>(prompt.size()));
  if (!prompt.empty()) engine.eval(*s.sequence, prompt);
  kv_prompt_done(engine, *s.sequence, s.compressor.get());
  return s;
}

PrefillSnapshot::PrefillSnapshot(Engine& engine, std::vector<int32_t> tokens, int query_rows)
    : impl_(std::make_unique<evalkv::Prefilled>(evalkv::prefill_capture(engine, std::move(tokens), query_rows))) {}
PrefillSnapshot::PrefillSnapshot(Engine& engine, std::vector<int32_t> tokens, const KvOptions& kv)
    : PrefillSnapshot(engine, std::move(tokens), KvCompressor(engine.model(), kv).prefill_query_rows()) {}
PrefillSnapshot::~PrefillSnapshot() = default;
PrefillSnapshot::PrefillSnapshot(PrefillSnapshot&&) noexcept = default;
PrefillSnapshot& PrefillSnapshot::operator=(PrefillSnapshot&&) noexcept = default;

std::unique_ptr<Sequence> PrefillSnapshot::restore(Engine& engine, KvCompressor* compressor) const {
  return evalkv::restore_prefill(engine, *impl_, compressor ? &compressor->impl() : nullptr);
}

KvSequence PrefillSnapshot::restore(Engine& engine, const KvOptions& kv) const {
  KvSequence s;
  s.compressor = std::make_unique<KvCompressor>(engine.model(), kv);
  if (!s.compressor->active()) s.compressor.reset();
  s.sequence = restore(engine, s.compressor.get());
  s.sequence->set_policy(s.compressor.get());  // decode eviction, if the method has one
  return s;
}

std::vector<KvMethodInfo> kv_presets() {
  std::vector<KvMethodInfo> v;
  for (const kv::Method& m : kv::all_methods()) v.push_back({m.name, m.description});
  return v;
}
std::vector<KvMethodInfo> kv_scorers() {
  std::vector<KvMethodInfo> v;
  for (const kv::Scorer* s : kv::all_scorers())
    if (!s->none()) v.push_back({std::string(s->name()), std::string(s->description())});
  return v;
}
std::vector<KvMethodInfo> kv_allocators() {
  std::vector<KvMethodInfo> v;
  for (const kv::Allocator* a : kv::all_allocators())
    if (!a->none()) v.push_back({std::string(a->name()), std::string(a->description())});
  return v;
}
std::string kv_spec_keys() { return kv::spec_keys(); }

std::string kv_methods_help() {
  const auto pad = [](std::string s, size_t w) {
    s.resize(std::max(s.size(), w), ' ');
    return s;
  };
  std::string s = "KV-cache compression methods (presets):\n";
  for (const KvMethodInfo& m : kv_presets()) s += "  " + pad(m.name, 19) + " " + m.description + "\n";
  s += "Any scorer pairs with any allocator: SCORER+ALLOCATOR, e.g. snapkv+tappa, expected-attention+tappa.\n  scorers:";
  for (const KvMethodInfo& m : kv_scorers()) s += " " + m.name;
  s += "\n  allocators:";
  for (const KvMethodInfo& m : kv_allocators()) s += " " + m.name;
  s += "\nKnobs: METHOD:key=value:... (keys: " + kv_spec_keys() + ").\n";
  s += "Budget: --budget C = tokens kept per layer on average, the window W included (the papers' unit);\n"
       "--ratio R = fraction of the prompt removed (kvpress's unit). C >= prompt length evicts nothing.\n";
  return s;
}

}  // namespace tappa
