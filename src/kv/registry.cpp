// The registry of scorers, allocators and presets. Adding a scorer or an allocator: a file that
// defines `const Scorer& <name>_scorer()` (or `const Allocator& <name>_allocator()`) and one line in
// the list below; any scorer then pairs with any allocator by spec ("<scorer>+<allocator>").
#include <deque>
#include <map>
#include <mutex>
#include <string>

#include "kv/methods.h"
#include "tappa/error.h"

// X(function prefix): one line per scorer / allocator, in --help order.
#define TAPPA_KV_SCORERS(X) \
  X(none)                   \
  X(streamingllm)           \
  X(h2o)                    \
  X(snapkv)                 \
  X(cake)                   \
  X(expected_attention)     \
  X(knorm)                  \
  X(kvzip)                  \
  X(triattention)           \
  X(random)

#define TAPPA_KV_ALLOCATORS(X) \
  X(none)                      \
  X(uniform)                   \
  X(pyramidkv)                 \
  X(cake)                      \
  X(tappa)                     \
  X(adakv)                     \
  X(tappa_head)

namespace tappa::kv {

#define TAPPA_DECLARE_SCORER(n) const Scorer& n##_scorer();
#define TAPPA_DECLARE_ALLOCATOR(n) const Allocator& n##_allocator();
TAPPA_KV_SCORERS(TAPPA_DECLARE_SCORER)
TAPPA_KV_ALLOCATORS(TAPPA_DECLARE_ALLOCATOR)

namespace {

const std::vector<const Scorer*>& scorers() {
  static const std::vector<const Scorer*> v = {
#define TAPPA_LIST_SCORER(n) &n##_scorer(),
      TAPPA_KV_SCORERS(TAPPA_LIST_SCORER)};
  return v;
}

const std::vector<const Allocator*>& allocators() {
  static const std::vector<const Allocator*> v = {
#define TAPPA_LIST_ALLOCATOR(n) &n##_allocator(),
      TAPPA_KV_ALLOCATORS(TAPPA_LIST_ALLOCATOR)};
  return v;
}

Method pair(std::string name, std::string description, const Scorer& s, const Allocator& a) {
  Method m{std::move(name), std::move(description), &s, &a, MethodOptions{}};
  a.defaults(m.defaults);
  return m;
}

// The papers' methods, each one pairing with its defaults.
const std::vector<Method>& presets() {
  static const std::vector<Method> v = [] {
    std::vector<Method> p;
    p.push_back(pair("fullkv", "no compression: every token stays in the cache (reference)", none_scorer(), none_allocator()));
    p.push_back(pair("streamingllm", "attention sinks (first 4 tokens) + the most recent tokens, same budget every layer",
                     streamingllm_scorer(), uniform_allocator()));
    p.push_back(pair("h2o", "heavy hitters: attention summed over the last 512 prompt queries, same budget every layer",
                     h2o_scorer(), uniform_allocator()));
    p.push_back(pair("snapkv", "attention of the last W queries, summed and avg-pooled (k=5), same budget every layer",
                     snapkv_scorer(), uniform_allocator()));
    p.push_back(pair("pyramidkv", "SnapKV scores with linearly decreasing layer budgets (beta = 20)", snapkv_scorer(),
                     pyramidkv_allocator()));
    p.push_back(pair("cake", "CAKE: mean + 200*variance scores, layer budgets from attention entropy x variance, cascading",
                     cake_scorer(), cake_allocator()));
    p.push_back(pair("tappa", "TAPPA: CAKE token scores, layer budgets proportional to 1 - q-similarity, cascading",
                     cake_scorer(), tappa_allocator()));
    p.push_back(pair("tappa-head", "TAPPA with per-KV-head budgets from each head group's 1 - q-similarity (beyond the paper)",
                     cake_scorer(), tappa_head_allocator()));
    p.push_back(pair("expected-attention", "kvpress Expected Attention: closed-form attention of future queries x |v|, same budget",
                     expected_attention_scorer(), uniform_allocator()));
    p.push_back(pair("knorm", "kvpress KnormPress: keep the keys with the lowest L2 norm, same budget every layer",
                     knorm_scorer(), uniform_allocator()));
    p.push_back(pair("random", "random scores (seeded), same budget every layer: the floor any method must beat",
                     random_scorer(), uniform_allocator()));
    return p;
  }();
  return v;
}

template <class T>
std::string names_of(const std::vector<const T*>& v) {
  std::string s;
  for (const T* x : v) s += (s.empty() ? "" : ", ") + std::string(x->name());
  return s;
}

}  // namespace

std::span<const Method> all_methods() { return presets(); }
std::span<const Scorer* const> all_scorers() { return scorers(); }
std::span<const Allocator* const> all_allocators() { return allocators(); }

const Scorer& find_scorer(std::string_view name) {
  for (const Scorer* s : scorers())
    if (s->name() == name) return *s;
  for (const Method& m : presets())  // a preset's name stands for its scorer
    if (m.name == name) return *m.scorer;
  throw Error("unknown KV scorer '" + std::string(name) + "' (scorers: " + names_of(scorers()) + ")");
}

const Allocator& find_allocator(std::string_view name) {
  for (const Allocator* a : allocators())
    if (a->name() == name) return *a;
  throw Error("unknown KV allocator '" + std::string(name) + "' (allocators: " + names_of(allocators()) + ")");
}

const Method& find_method(std::string_view name) {
  for (const Method& m : presets())
    if (m.name == name) return m;
  size_t plus = name.find('+');
  // A scorer registered without a preset of its own (kvzip, triattention) stands for scorer+uniform.
  std::string bare;
  if (plus == std::string_view::npos)
    for (const Scorer* s : scorers())
      if (s->name() == name && !s->none()) {
        bare = std::string(name) + "+uniform";
        plus = name.size();
      }
  if (plus == std::string_view::npos)
    throw Error("unknown KV compression method '" + std::string(name) + "' (presets: " + method_names() +
                "; or scorer+allocator, scorers: " + names_of(scorers()) + "; allocators: " + names_of(allocators()) + ")");
  // Pairings are made once and kept, so references to them stay valid (a deque never moves its elements).
  static std::mutex mu;
  static std::deque<Method> made;
  static std::map<std::string, const Method*, std::less<>> by_name;
  const std::lock_guard<std::mutex> lock(mu);
  if (auto it = by_name.find(name); it != by_name.end()) return *it->second;
  const std::string_view sname = name.substr(0, plus), aname = bare.empty() ? name.substr(plus + 1) : "uniform";
  const Scorer& s = find_scorer(sname);
  const Allocator& a = find_allocator(aname);
  if (s.none() != a.none())
    throw Error("KV method '" + std::string(name) + "': 'none' pairs only with 'none' (that is fullkv)");
  Method m = pair(std::string(name), std::string(s.description()) + "; " + std::string(a.description()), s, a);
  // A preset's knobs come with its name (e.g. its pooling); the allocator's defaults on top.
  for (const Method& p : presets())
    if (p.name == sname) {
      m.defaults = p.defaults;
      m.defaults.cascading = false;
      m.defaults.decode_eviction = false;
      a.defaults(m.defaults);
    }
  made.push_back(std::move(m));
  by_name.emplace(std::string(name), &made.back());
  return made.back();
}

std::string method_names(std::string_view sep) {
  std::string s;
  for (const Method& m : presets()) {
    if (!s.empty()) s += sep;
    s += m.name;
  }
  return s;
}

}  // namespace tappa::kv
